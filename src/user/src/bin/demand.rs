//! Demand paging: a 64 MiB anonymous mapping costs no frames until it is touched, reads zero
//! when first touched, and keeps what is written. Exit codes: 0 all right, 1 mmap failed,
//! 2 the mapping was populated eagerly, 3 a fresh page did not read zero, 4 a pattern did not
//! read back, 5 munmap failed, 6 touching did not make pages resident, 7 munmap did not release
//! them, 8 sysinfo failed, 9 reads of untouched memory took frames (the zero page). With arg 1 it keeps the touched pages and sleeps until killed.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use ulib::{getpid, info, mmap, munmap, println, prot, sysinfo};

ulib::entry!(main);

const LEN: usize = 64 << 20;
const STEP: usize = 1 << 20;
const TOUCHED: usize = LEN / STEP;

fn pattern(i: usize) -> u32 {
    0xd0d0_0000 | i as u32
}

/// The word touched in the `i`-th MiB: a different offset in each page.
fn word(base: *mut u8, i: usize) -> *mut u32 {
    base.wrapping_add(i * STEP + 4 * i).cast()
}

fn figures() -> Option<(u32, u32)> {
    Some((
        sysinfo(info::FREE_FRAMES).ok()?,
        sysinfo(info::RESIDENT_PAGES).ok()?,
    ))
}

fn main(arg: u32) -> i32 {
    let pid = getpid();
    let Some((free0, res0)) = figures() else {
        return 8;
    };
    let base = match mmap(0, LEN, prot::READ | prot::WRITE) {
        Ok(p) => p,
        Err(e) => {
            println!("[pid {pid}] demand: mmap of 64 MiB failed: {e}");
            return 1;
        }
    };
    let Some((free1, res1)) = figures() else {
        return 8;
    };
    println!(
        "[pid {pid}] demand: 64 MiB at {:#x}; free frames {free0} before mmap, {free1} after",
        base as usize
    );
    // 16384 pages populated eagerly would show; page tables and other processes stay far below.
    if free0.saturating_sub(free1) >= 4096 || res1.saturating_sub(res0) >= 1024 {
        println!("[pid {pid}] demand: FAIL: the mapping was populated at mmap time");
        return 2;
    }

    for i in 0..TOUCHED {
        // SAFETY: word(base, i) is inside the 64 MiB mapping, word aligned, and only this
        // program uses it.
        let v = unsafe { read_volatile(word(base, i)) };
        if v != 0 {
            println!("[pid {pid}] demand: FAIL: fresh page {i} reads {v:#x}, not 0");
            return 3;
        }
        // SAFETY: as above.
        unsafe { write_volatile(word(base, i), pattern(i)) };
    }
    for i in 0..TOUCHED {
        // SAFETY: as above.
        let v = unsafe { read_volatile(word(base, i)) };
        if v != pattern(i) {
            println!(
                "[pid {pid}] demand: FAIL: page {i} reads {v:#x}, wrote {:#x}",
                pattern(i)
            );
            return 4;
        }
    }
    let Some((free2, res2)) = figures() else {
        return 8;
    };
    // Reads of untouched memory map the shared zero page: no frame per page (only the page
    // tables of the fresh range, 16 at most for 64 MiB).
    let ro = match mmap(0, LEN, prot::READ) {
        Ok(p) => p,
        Err(e) => {
            println!("[pid {pid}] demand: mmap of 64 MiB read-only failed: {e}");
            return 1;
        }
    };
    let Some((free3, _)) = figures() else {
        return 8;
    };
    for i in 0..TOUCHED {
        // SAFETY: word(ro, i) is inside the read-only mapping, word aligned.
        let v = unsafe { read_volatile(word(ro, i)) };
        if v != 0 {
            println!("[pid {pid}] demand: FAIL: untouched page {i} reads {v:#x}, not 0");
            return 3;
        }
    }
    let Some((free4, _)) = figures() else {
        return 8;
    };
    println!("[pid {pid}] demand: read {TOUCHED} untouched pages: free frames {free3} -> {free4}");
    // (Plus a few frames the kernel may hold at that moment for others on other cores: the
    // idle loop zeroing one for its pool, say.)
    if free3.saturating_sub(free4) > 16 + 4 {
        println!("[pid {pid}] demand: FAIL: reads of untouched pages took frames (zero page)");
        return 9;
    }
    // SAFETY: nothing uses the read-only mapping after this.
    if unsafe { munmap(ro, LEN) }.is_err() {
        return 5;
    }
    println!(
        "[pid {pid}] demand: touched {TOUCHED} pages: free frames {free2}, resident pages {res1} -> {res2}"
    );
    if res2.saturating_sub(res1) < TOUCHED as u32 {
        println!("[pid {pid}] demand: FAIL: fewer than {TOUCHED} pages became resident");
        return 6;
    }

    if arg == 1 {
        // Keep the touched pages until the kernel kills us (the kill test counts the frames).
        println!("[pid {pid}] demand: holding {TOUCHED} pages until killed");
        loop {
            ulib::sleep(1000);
        }
    }
    // SAFETY: nothing uses the mapping after this.
    if let Err(e) = unsafe { munmap(base, LEN) } {
        println!("[pid {pid}] demand: FAIL: munmap: {e}");
        return 5;
    }
    let Some((free3, res3)) = figures() else {
        return 8;
    };
    println!("[pid {pid}] demand: after munmap: free frames {free3}, resident pages {res3}");
    if res2.saturating_sub(res3) < TOUCHED as u32 {
        println!("[pid {pid}] demand: FAIL: munmap left the pages resident");
        return 7;
    }
    println!("[pid {pid}] demand: ok");
    0
}
