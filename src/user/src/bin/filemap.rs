//! Files of the card mapped into memory (`map_file`, `msync`), one case per `arg`:
//!
//! - 1, private: `/data/words.bin` (word `k` holds `k`, 16 pages and 100 bytes) mapped private:
//!   only the pages touched come in; a write copies the page and never reaches the file; the
//!   tail of the last page reads zero.
//! - 2, shared: a child maps `/data/shared.bin` shared, writes and `msync`s; the parent, which
//!   mapped it too, sees the write, and so does a new mapping.
//! - 3, past the end: a child touching a mapped page wholly past the end of the file is killed
//!   with a bus error; a child writing to a read-only mapping with a protection fault.
//! - 4, bad requests: a missing file, a directory, bad flags, an unaligned offset.
//! - 10 / 11, persistence: write a pattern into `/data/persist.bin` through a shared mapping and
//!   `msync` (10); check that it is there, after a restart of the machine (11).
//!
//! Exit codes: 0 all right, 1 a check failed, 64 unknown `arg`.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use ulib::{
    fork, getpid, info, map, map_file, msync, println, status, syscall, sysinfo, wait, Errno,
    WaitStatus,
};

ulib::entry!(main);

const WORDS: &str = "/data/words.bin";
const WORDS_LEN: usize = 16 * 4096 + 100;
const SHARED: &str = "/data/shared.bin";
const PERSIST: &str = "/data/persist.bin";
const PERSIST_LEN: usize = 8192;

fn word(base: *mut u8, index: usize) -> u32 {
    // SAFETY: callers pass an index inside the mapping at `base`, which stays mapped.
    unsafe { read_volatile(base.cast::<u32>().add(index)) }
}

fn set_word(base: *mut u8, index: usize, value: u32) {
    // SAFETY: as in `word`, for a writable mapping.
    unsafe { write_volatile(base.cast::<u32>().add(index), value) }
}

fn resident() -> u32 {
    sysinfo(info::RESIDENT_PAGES).unwrap_or(0)
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            println!("[pid {}] filemap: FAIL: {}", getpid(), format_args!($($fmt)*));
            return 1;
        }
    };
}

fn private() -> i32 {
    let m = match map_file(WORDS, 0, 0, map::READ | map::WRITE) {
        Ok(m) => m,
        Err(e) => {
            println!("filemap: FAIL: map_file({WORDS}): {e}");
            return 1;
        }
    };
    let misses = sysinfo(info::CACHE_MISSES).unwrap_or(0);
    let before = resident();
    let (w0, w9) = (word(m, 0), word(m, 9 * 1024 + 3));
    let touched = resident() - before;
    let read = sysinfo(info::CACHE_MISSES).unwrap_or(0) - misses;
    check!(w0 == 0, "word 0 is {w0:#x}");
    check!(w9 == 9 * 1024 + 3, "word 9*1024+3 is {w9:#x}");
    check!(touched == 2, "{touched} pages resident after touching 2");
    check!(
        read <= 2,
        "{read} pages read from the card after touching 2"
    );
    // The tail of the last page: past the end of the file, zero.
    let last = WORDS_LEN / 4;
    check!(
        word(m, last - 1) == (last - 1) as u32,
        "the last word of the file"
    );
    check!(
        word(m, last) == 0 && word(m, 16 * 1024 + 1023) == 0,
        "the tail is not zero"
    );
    // A private write copies.
    set_word(m, 5, 0xdead_beef);
    check!(word(m, 5) == 0xdead_beef, "a private write was lost");
    check!(word(m, 6) == 6, "a private copy lost the rest of its page");
    let again = match map_file(WORDS, 4096, 0, map::READ) {
        Ok(a) => a,
        Err(e) => {
            println!("filemap: FAIL: second map_file: {e}");
            return 1;
        }
    };
    check!(
        word(again, 5) == 5,
        "a private write reached the file's pages"
    );
    println!("filemap private: ok ({touched} pages resident, {read} read from the card)");
    0
}

fn shared() -> i32 {
    let m = match map_file(SHARED, 8192, 0, map::READ | map::WRITE | map::SHARED) {
        Ok(m) => m,
        Err(e) => {
            println!("filemap: FAIL: map_file({SHARED}): {e}");
            return 1;
        }
    };
    let marker = 0x5a5a_0000 | getpid();
    let child = match fork() {
        Ok(0) => {
            // The child: its own mapping of the same file, written and synced.
            let c = match map_file(SHARED, 8192, 0, map::READ | map::WRITE | map::SHARED) {
                Ok(c) => c,
                Err(_) => ulib::exit(2),
            };
            set_word(c, 1024 + 5, marker);
            // (The count may be 0: the kernel's flusher, on another core, may have written the
            // page back first once msync made it read-only.)
            match msync(c, 8192) {
                Ok(n) if n <= 2 => ulib::exit(0),
                _ => ulib::exit(3),
            }
        }
        Ok(pid) => pid,
        Err(e) => {
            println!("filemap: FAIL: fork: {e}");
            return 1;
        }
    };
    let st = wait(child);
    check!(
        st == Ok(WaitStatus::Exited(0)),
        "the writing child ended with {st:?}"
    );
    check!(
        word(m, 1024 + 5) == marker,
        "the parent does not see the child's write"
    );
    let fresh = map_file(SHARED, 0, 0, map::READ).unwrap_or(core::ptr::null_mut());
    check!(
        !fresh.is_null() && word(fresh, 1024 + 5) == marker,
        "a new mapping does not see it"
    );
    // Put the file back as it was, through the parent's mapping.
    set_word(m, 1024 + 5, 0);
    let n = msync(m, 8192);
    check!(
        matches!(n, Ok(0) | Ok(1)),
        "msync wrote {n:?} pages, not 1 (or 0: the flusher was first)"
    );
    check!(msync(m, 8192) == Ok(0), "a second msync wrote again");
    println!("filemap shared: ok");
    0
}

/// Runs `f` in a child and returns how it ended.
fn in_child(f: fn()) -> Result<WaitStatus, Errno> {
    match fork()? {
        0 => {
            f();
            ulib::exit(0)
        }
        pid => wait(pid),
    }
}

fn past_end() -> i32 {
    let st = in_child(|| {
        // 20 pages of a file of 17: page 18 lies wholly past the end.
        if let Ok(m) = map_file(WORDS, 20 * 4096, 0, map::READ) {
            let _ = word(m, 18 * 1024);
        }
    });
    check!(
        st == Ok(WaitStatus::Killed(status::BUS_ERROR)),
        "past the end: {st:?}, not a bus error"
    );
    let st = in_child(|| {
        if let Ok(m) = map_file(WORDS, 4096, 0, map::READ) {
            set_word(m, 0, 1);
        }
    });
    check!(
        st == Ok(WaitStatus::Killed(status::SEGV)),
        "a write to a read-only file mapping: {st:?}"
    );
    println!("filemap past-end: ok");
    0
}

fn bad_requests() -> i32 {
    let r = map_file("/data/nosuch.bin", 0, 0, map::READ);
    check!(r == Err(Errno::ENOENT), "a missing file: {r:?}");
    let r = map_file("/bin", 0, 0, map::READ);
    check!(r == Err(Errno::EACCES), "a directory: {r:?}");
    let r = map_file(WORDS, 0, 0, map::SHARED);
    check!(r == Err(Errno::EINVAL), "no access: {r:?}");
    // An offset that is not page aligned, past ulib's own check.
    // SAFETY: the kernel only reads the path; the call is refused before anything is mapped.
    let raw = unsafe {
        syscall(
            ulib::nr::MAP_FILE,
            [
                WORDS.as_ptr() as u32,
                WORDS.len() as u32,
                0,
                0x800 | map::READ,
            ],
        )
    };
    check!(
        ulib::check(raw) == Err(Errno::EINVAL),
        "an unaligned offset: {raw}"
    );
    let r = map_file(WORDS, 0, 64 * 4096, map::READ);
    check!(
        r == Err(Errno::EINVAL),
        "len 0 with the offset past the end: {r:?}"
    );
    println!("filemap bad-requests: ok");
    0
}

fn persist_value(i: usize) -> u32 {
    (i as u32).wrapping_mul(0x9e37_79b9) ^ 0x0050_4552
}

fn persist(write: bool) -> i32 {
    let flags = if write {
        map::READ | map::WRITE | map::SHARED
    } else {
        map::READ
    };
    let m = match map_file(PERSIST, PERSIST_LEN, 0, flags) {
        Ok(m) => m,
        Err(e) => {
            println!("filemap: FAIL: map_file({PERSIST}): {e}");
            return 1;
        }
    };
    let words = PERSIST_LEN / 4;
    if write {
        for i in 0..words {
            set_word(m, i, persist_value(i));
        }
        let n = msync(m, PERSIST_LEN);
        check!(n == Ok(2), "msync wrote {n:?} pages, not 2");
        println!("filemap persist: written and synced");
    } else {
        for i in 0..words {
            check!(
                word(m, i) == persist_value(i),
                "word {i} is {:#x} after the restart",
                word(m, i)
            );
        }
        println!("filemap persist: all {words} words read back after the restart");
    }
    0
}

fn main(arg: u32) -> i32 {
    match arg {
        1 => private(),
        2 => shared(),
        3 => past_end(),
        4 => bad_requests(),
        10 => persist(true),
        11 => persist(false),
        _ => {
            println!("filemap: arg 1..4, 10 or 11, not {arg}");
            64
        }
    }
}
