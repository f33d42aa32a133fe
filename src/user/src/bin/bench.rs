//! The virtual-memory paths as a program sees them, in PMCCNTR ticks (instructions under
//! `qemu -icount shift=0`, cycles on a Pi), printed as `cost <case> <median>` lines (and
//! `min <case> <minimum>`), in the order of the comparison with Linux in docs/benchmarks.md.
//! Needs a kernel that grants User mode the cycle counter (bench builds); elsewhere the first
//! counter read kills it.
//!
//! Method: the counter is read with `isb; mrc` on both sides of one operation; the cost of an
//! empty pair of reads (its minimum over many, which is also its median under `-icount`) is
//! subtracted; every case is repeated and the median and minimum kept. A calibration loop of
//! exactly 2000 instructions must read 2000.
//!
//! `arg` is the kernel's own cost of zeroing a 4 KiB frame (measured by the bench kernel around
//! its zero routine, which User mode cannot call), printed in its place in the table.
#![no_std]
#![no_main]

use core::hint::black_box;
use core::ptr::{read_volatile, write_volatile};
use ulib::{
    cycles, exit, fork, getpid, info, map, map_file, mmap, munmap, println, prot, shm, sleep,
    spawn, sysinfo, wait, yield_now,
};

ulib::entry!(main);

const PAGE: usize = 4096;
const RW: u32 = prot::READ | prot::WRITE;
/// Samples per cheap case, and per fork case.
const SAMPLES: usize = 201;
const FORK_SAMPLES: usize = 21;

/// The cost of an empty measurement: two counter reads back to back.
fn overhead() -> u32 {
    let mut best = u32::MAX;
    for _ in 0..64 {
        let t0 = cycles();
        let t1 = cycles();
        best = best.min(t1.wrapping_sub(t0));
    }
    best
}

/// Ticks of `f` alone.
#[inline(always)]
fn time(over: u32, f: impl FnOnce()) -> u32 {
    let t0 = cycles();
    f();
    let t1 = cycles();
    t1.wrapping_sub(t0).saturating_sub(over)
}

/// Median and minimum of `samples` (sorted in place).
fn stats(samples: &mut [u32]) -> (u32, u32) {
    samples.sort_unstable();
    (samples[samples.len() / 2], samples[0])
}

fn report(case: &str, samples: &mut [u32]) {
    let (median, min) = stats(samples);
    println!("cost {case} {median}");
    println!("min {case} {min}");
}

fn main(zero_fill: u32) -> i32 {
    let over = overhead();
    let calib = time(over, || {
        // SAFETY: a register-only countdown loop of 1000 SUBS + BNE.
        unsafe {
            core::arch::asm!("1: subs {n}, {n}, #1", "bne 1b", n = inout(reg) 1000u32 => _,
                options(nomem, nostack))
        }
    });
    println!("cost user_calibration_2000_instructions {calib}");

    let mut s = [0u32; SAMPLES];
    for x in s.iter_mut() {
        *x = time(over, || {
            black_box(getpid());
        });
    }
    report("user_getpid", &mut s);

    for x in s.iter_mut() {
        *x = time(over, yield_now);
    }
    report("user_yield", &mut s);

    match pingpong(over) {
        Some(mut p) => report("user_yield_pingpong", &mut p),
        None => return 1,
    }

    let Ok(area) = mmap(0, SAMPLES * PAGE, RW) else {
        println!("bench: mmap failed");
        return 1;
    };
    for (i, x) in s.iter_mut().enumerate() {
        // SAFETY: page i of the fresh mapping, first touch.
        *x = time(over, || unsafe {
            write_volatile(area.add(i * PAGE).cast::<u32>(), 1)
        });
    }
    report("user_demand_zero_fault", &mut s);
    // SAFETY: nothing uses the mapping after this.
    let _ = unsafe { munmap(area, SAMPLES * PAGE) };

    println!("cost zero_fill_4k {zero_fill}");
    println!("min zero_fill_4k {zero_fill}");

    match forks(over) {
        Some((mut fork_only, mut fork_exit_wait)) => {
            report("user_fork_1mib", &mut fork_only);
            report("user_fork_exit_wait", &mut fork_exit_wait);
        }
        None => return 1,
    }

    for x in s.iter_mut() {
        *x = time(over, || {
            if let Ok(p) = mmap(0, PAGE, RW) {
                // SAFETY: the page was just mapped and is not used.
                let _ = unsafe { munmap(p, PAGE) };
            }
        });
    }
    report("user_mmap_munmap_4k", &mut s);
    for x in s.iter_mut() {
        *x = time(over, || {
            if let Ok(p) = mmap(0, PAGE, RW) {
                // SAFETY: the page was just mapped read-write; nothing uses it after munmap.
                unsafe {
                    write_volatile(p, 1);
                    let _ = munmap(p, PAGE);
                }
            }
        });
    }
    report("user_mmap_touch_munmap_4k", &mut s);

    // Demand-zero with a warm pool: while this program sleeps the idle kernel zeroes frames
    // ahead (up to 64), so each of these faults maps a ready frame, with no zero fill.
    sleep(300);
    let mut w = [0u32; 31];
    let Ok(area) = mmap(0, w.len() * PAGE, RW) else {
        println!("bench: mmap failed");
        return 1;
    };
    for (i, x) in w.iter_mut().enumerate() {
        // SAFETY: page i of the fresh mapping, first touch.
        *x = time(over, || unsafe {
            write_volatile(area.add(i * PAGE).cast::<u32>(), 1)
        });
    }
    report("user_demand_zero_fault_warm", &mut w);
    // SAFETY: nothing uses the mapping after this.
    let _ = unsafe { munmap(area, w.len() * PAGE) };

    // A read of untouched memory: the shared zero page mapped read-only, no frame taken.
    let Ok(area) = mmap(0, SAMPLES * PAGE, prot::READ) else {
        println!("bench: mmap failed");
        return 1;
    };
    for (i, x) in s.iter_mut().enumerate() {
        // SAFETY: page i of the fresh read-only mapping, first touch.
        *x = time(over, || unsafe {
            black_box(read_volatile(area.add(i * PAGE).cast::<u32>()));
        });
    }
    report("user_zero_page_read_fault", &mut s);
    // SAFETY: nothing uses the mapping after this.
    let _ = unsafe { munmap(area, SAMPLES * PAGE) };
    file_cases(over)
}

/// The page cache: a fault on a page of a mapped file read from the card (miss), the same
/// fault when the page is cached (hit), and starting `/bin/true` from the card, spawn to exit,
/// once it is cached. Skipped (with a line saying so) without a card.
fn file_cases(over: u32) -> i32 {
    const FILE: &str = "/data/words.bin";
    const PAGES: usize = 16;
    let Ok(m) = map_file(FILE, PAGES * PAGE, 0, map::READ) else {
        println!("bench: no {FILE} (no card?): page-cache cases skipped");
        return 0;
    };
    let misses = sysinfo(info::CACHE_MISSES).unwrap_or(0);
    let mut miss = [0u32; PAGES];
    for (i, x) in miss.iter_mut().enumerate() {
        // SAFETY: page i of the mapping, first touch.
        *x = time(over, || unsafe {
            black_box(read_volatile(m.add(i * PAGE)));
        });
    }
    let read = sysinfo(info::CACHE_MISSES).unwrap_or(0) - misses;
    if read as usize != PAGES {
        println!("bench: only {read} of {PAGES} pages were read from the card (cached before)");
    }
    report("user_cache_miss_fault", &mut miss);
    // SAFETY: nothing uses the mapping after this.
    let _ = unsafe { munmap(m, PAGES * PAGE) };
    let Ok(m) = map_file(FILE, PAGES * PAGE, 0, map::READ) else {
        return 1;
    };
    let mut hit = [0u32; PAGES];
    for (i, x) in hit.iter_mut().enumerate() {
        // SAFETY: page i of the new mapping, first touch; the page is cached.
        *x = time(over, || unsafe {
            black_box(read_volatile(m.add(i * PAGE)));
        });
    }
    report("user_cache_hit_fault", &mut hit);
    // SAFETY: nothing uses the mapping after this.
    let _ = unsafe { munmap(m, PAGES * PAGE) };

    let run_true = || match spawn("/bin/true", 0) {
        Ok(pid) => wait(pid).is_ok(),
        Err(_) => false,
    };
    if !run_true() {
        println!("bench: /bin/true did not run");
        return 1;
    }
    let mut sp = [0u32; 21];
    for x in sp.iter_mut() {
        *x = time(over, || {
            black_box(run_true());
        });
    }
    report("user_spawn_true_from_card", &mut sp);
    0
}

/// Two processes yielding to each other: the parent times `yield` while a child does nothing
/// but yield back, so each sample is two switches; the cost per yield is half. The child stops
/// when the parent raises a flag in shared memory.
fn pingpong(over: u32) -> Option<[u32; SAMPLES]> {
    let Ok(flag) = shm(0xbe7c_0001, PAGE) else {
        println!("bench: shm failed");
        return None;
    };
    let flag = flag.cast::<u32>();
    match fork() {
        Ok(0) => {
            // SAFETY: the shared page stays mapped; the parent writes it once.
            while unsafe { read_volatile(flag) } == 0 {
                yield_now();
            }
            exit(0)
        }
        Ok(child) => {
            // Let the child reach its loop first.
            yield_now();
            let mut s = [0u32; SAMPLES];
            for x in s.iter_mut() {
                *x = time(over, yield_now) / 2;
            }
            // SAFETY: as above.
            unsafe { write_volatile(flag, 1) };
            let _ = wait(child);
            Some(s)
        }
        Err(_) => {
            println!("bench: fork failed");
            None
        }
    }
}

/// `fork` with 1 MiB of touched private memory: the call alone (until the parent resumes; the
/// child then exits and is collected, untimed), and fork + the child's exit + `wait`.
fn forks(over: u32) -> Option<([u32; FORK_SAMPLES], [u32; FORK_SAMPLES])> {
    const MIB: usize = 1 << 20;
    let Ok(m) = mmap(0, MIB, RW) else {
        println!("bench: mmap failed");
        return None;
    };
    for i in 0..MIB / PAGE {
        // SAFETY: inside the fresh 1 MiB mapping.
        unsafe { write_volatile(m.add(i * PAGE), i as u8) };
    }
    let mut only = [0u32; FORK_SAMPLES];
    let mut whole = [0u32; FORK_SAMPLES];
    for x in only.iter_mut() {
        let t0 = cycles();
        let pid = fork();
        let t1 = cycles();
        match pid {
            Ok(0) => exit(0),
            Ok(child) => {
                *x = t1.wrapping_sub(t0).saturating_sub(over);
                let _ = wait(child);
            }
            Err(_) => return None,
        }
        // Write the pages again so the next fork finds them private and writable.
        touch_all(m, MIB);
    }
    for x in whole.iter_mut() {
        let t0 = cycles();
        match fork() {
            Ok(0) => exit(0),
            Ok(child) => {
                let _ = wait(child);
                *x = cycles().wrapping_sub(t0).saturating_sub(over);
            }
            Err(_) => return None,
        }
        touch_all(m, MIB);
    }
    // SAFETY: nothing uses the mapping after this.
    let _ = unsafe { munmap(m, MIB) };
    Some((only, whole))
}

fn touch_all(m: *mut u8, len: usize) {
    for i in 0..len / PAGE {
        // SAFETY: inside the caller's mapping.
        unsafe { write_volatile(m.add(i * PAGE), i as u8) };
    }
}
