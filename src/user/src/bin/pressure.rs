//! Memory pressure: more pages than RAM holds, every byte checked. `arg` is a page count in its
//! low 16 bits and a mode in bits 16..20:
//!
//! - 0, private: writes a pattern (derived from the pid and the page) into `pages` pages of
//!   anonymous memory, then reads every page back, yielding now and then so that other
//!   processes run.
//! - 1, a forked pair: writes `pages` pages, forks; the child checks the parent's pattern and
//!   rewrites every other page with its own; the parent, after the child ended, checks that its
//!   pages still hold its own pattern (copy on write under pressure: each side keeps its data).
//! - 2, a file mapping under pressure: maps `/data/words.bin` privately, checks it, then fills
//!   `pages` pages of anonymous memory and checks the file mapping again, three times.
//!
//! - 3, a shared memory object under pressure: writes `pages` pages of a `shm` object, fills as
//!   many pages of anonymous memory (which pushes the object's pages out), checks the object,
//!   then a forked child rewrites every other page of it and the parent sees the child's pages
//!   and its own.
//!
//! - 4, a shared file mapping under pressure: writes a pattern into `/data/shared.bin` (2 pages)
//!   through a shared mapping, fills `pages` pages of anonymous memory (the file's pages are
//!   unmapped, written back and dropped from the cache), checks the mapping and a new mapping of
//!   the file, and puts the file back to zeroes.
//!
//! Exit codes: 0 all right, 1 a page read back wrong, 2 mmap or fork failed, 64 bad `arg`.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use ulib::{fork, getpid, map, map_file, mmap, println, prot, shm, wait, yield_now, WaitStatus};

ulib::entry!(main);

const PAGE: usize = 4096;
const WORDS: usize = PAGE / 4;

fn value(seed: u32, page: usize, word: usize) -> u32 {
    seed.wrapping_mul(0x9e37_79b9) ^ ((page as u32) << 10 | word as u32)
}

/// Words of a page that are written and checked: the first, one in the middle, the last.
const PROBES: [usize; 3] = [0, WORDS / 2 + 3, WORDS - 1];

fn fill(base: *mut u8, pages: usize, seed: u32, step: usize) {
    for p in (0..pages).step_by(step) {
        for &w in &PROBES {
            // SAFETY: page p of the caller's mapping of `pages` pages; w < WORDS.
            unsafe { write_volatile(base.add(p * PAGE).cast::<u32>().add(w), value(seed, p, w)) };
        }
        if p % 64 == 0 {
            yield_now();
        }
    }
}

/// The first page (of every `step`-th from `first`) that does not hold `seed`'s pattern.
fn check(base: *mut u8, pages: usize, seed: u32, first: usize, step: usize) -> Option<usize> {
    for p in (first..pages).step_by(step) {
        for &w in &PROBES {
            // SAFETY: as in `fill`.
            let v = unsafe { read_volatile(base.add(p * PAGE).cast::<u32>().add(w)) };
            if v != value(seed, p, w) {
                return Some(p);
            }
        }
        if p % 64 == 0 {
            yield_now();
        }
    }
    None
}

fn private(pages: usize) -> i32 {
    let pid = getpid();
    let Ok(base) = mmap(0, pages * PAGE, prot::READ | prot::WRITE) else {
        println!("[pid {pid}] pressure: FAIL: mmap of {pages} pages");
        return 2;
    };
    fill(base, pages, pid, 1);
    if let Some(p) = check(base, pages, pid, 0, 1) {
        println!("[pid {pid}] pressure: FAIL: page {p} read back wrong");
        return 1;
    }
    println!("[pid {pid}] pressure: ok, {pages} pages written and read back");
    0
}

fn forked(pages: usize) -> i32 {
    let pid = getpid();
    let Ok(base) = mmap(0, pages * PAGE, prot::READ | prot::WRITE) else {
        return 2;
    };
    fill(base, pages, pid, 1);
    let child = match fork() {
        Ok(0) => {
            let me = getpid();
            if check(base, pages, pid, 0, 1).is_some() {
                ulib::exit(1);
            }
            fill(base, pages, me, 2);
            if check(base, pages, me, 0, 2).is_some() || check(base, pages, pid, 1, 2).is_some() {
                ulib::exit(1);
            }
            ulib::exit(0)
        }
        Ok(c) => c,
        Err(_) => return 2,
    };
    let st = wait(child);
    if st != Ok(WaitStatus::Exited(0)) {
        println!("[pid {pid}] pressure: FAIL: the child ended with {st:?}");
        return 1;
    }
    if let Some(p) = check(base, pages, pid, 0, 1) {
        println!("[pid {pid}] pressure: FAIL: page {p} changed after the child wrote its copy");
        return 1;
    }
    println!("[pid {pid}] pressure: ok, a forked pair kept their own {pages} pages each");
    0
}

fn file(pages: usize) -> i32 {
    let pid = getpid();
    let Ok(f) = map_file("/data/words.bin", 16 * PAGE, 0, map::READ) else {
        println!("[pid {pid}] pressure: FAIL: map_file");
        return 2;
    };
    let words_ok = || {
        (0..16 * WORDS).step_by(97).all(|k| {
            // SAFETY: word k of the 16-page file mapping.
            unsafe { read_volatile(f.cast::<u32>().add(k)) == k as u32 }
        })
    };
    for round in 0..3u32 {
        if !words_ok() {
            println!("[pid {pid}] pressure: FAIL: the file mapping read wrong (round {round})");
            return 1;
        }
        let Ok(base) = mmap(0, pages * PAGE, prot::READ | prot::WRITE) else {
            return 2;
        };
        fill(base, pages, pid ^ round, 1);
        if let Some(p) = check(base, pages, pid ^ round, 0, 1) {
            println!("[pid {pid}] pressure: FAIL: page {p} read back wrong");
            return 1;
        }
        // SAFETY: nothing uses the anonymous mapping after this.
        let _ = unsafe { ulib::munmap(base, pages * PAGE) };
    }
    if !words_ok() {
        println!("[pid {pid}] pressure: FAIL: the file mapping read wrong at the end");
        return 1;
    }
    println!(
        "[pid {pid}] pressure: ok, a file mapping read right through 3 rounds of {pages} pages"
    );
    0
}

fn shared(pages: usize) -> i32 {
    let pid = getpid();
    let Ok(obj) = shm(0x5a5a, pages * PAGE) else {
        println!("[pid {pid}] pressure: FAIL: shm of {pages} pages");
        return 2;
    };
    fill(obj, pages, 42, 1);
    let Ok(anon) = mmap(0, pages * PAGE, prot::READ | prot::WRITE) else {
        return 2;
    };
    fill(anon, pages, pid, 1);
    if let Some(p) = check(obj, pages, 42, 0, 1) {
        println!("[pid {pid}] pressure: FAIL: shared page {p} read back wrong");
        return 1;
    }
    let child = match fork() {
        Ok(0) => {
            fill(obj, pages, 43, 2);
            ulib::exit(0)
        }
        Ok(c) => c,
        Err(_) => return 2,
    };
    if wait(child) != Ok(WaitStatus::Exited(0)) {
        return 1;
    }
    if let Some(p) = check(obj, pages, 43, 0, 2).or(check(obj, pages, 42, 1, 2)) {
        println!(
            "[pid {pid}] pressure: FAIL: shared page {p} is not what the child or the parent wrote"
        );
        return 1;
    }
    if check(anon, pages, pid, 0, 1).is_some() {
        println!("[pid {pid}] pressure: FAIL: an anonymous page read back wrong");
        return 1;
    }
    println!("[pid {pid}] pressure: ok, a shared object of {pages} pages kept through pressure and a fork");
    0
}

fn shared_file(pages: usize) -> i32 {
    let pid = getpid();
    let flags = map::READ | map::WRITE | map::SHARED;
    let Ok(f) = map_file("/data/shared.bin", 2 * PAGE, 0, flags) else {
        println!("[pid {pid}] pressure: FAIL: map_file shared");
        return 2;
    };
    fill(f, 2, 44, 1);
    let Ok(anon) = mmap(0, pages * PAGE, prot::READ | prot::WRITE) else {
        return 2;
    };
    fill(anon, pages, pid, 1);
    let fresh =
        map_file("/data/shared.bin", 2 * PAGE, 0, map::READ).unwrap_or(core::ptr::null_mut());
    if fresh.is_null() || check(f, 2, 44, 0, 1).is_some() || check(fresh, 2, 44, 0, 1).is_some() {
        println!(
            "[pid {pid}] pressure: FAIL: the shared file mapping lost its writes under pressure"
        );
        return 1;
    }
    for k in 0..2 * WORDS {
        // SAFETY: word k of the 2-page shared mapping.
        unsafe { write_volatile(f.cast::<u32>().add(k), 0) };
    }
    println!("[pid {pid}] pressure: ok, a shared file mapping kept its writes through {pages} pages of pressure");
    0
}

fn main(arg: u32) -> i32 {
    let pages = (arg & 0xffff) as usize;
    match arg >> 16 {
        0 if pages > 0 => private(pages),
        1 if pages > 0 => forked(pages),
        2 if pages > 0 => file(pages),
        3 if pages > 0 => shared(pages),
        4 if pages > 0 => shared_file(pages),
        _ => {
            println!("pressure: arg is pages | mode << 16 (mode 0 to 4), not {arg:#x}");
            64
        }
    }
}
