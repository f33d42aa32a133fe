//! Keeps a pattern in 16 pages of its own memory and checks it every few milliseconds, until
//! killed: the ASID rollover test runs it while hundreds of other address spaces come and go.
//! Prints its ASID whenever it changes. Exit codes: 1 mmap failed, 2 the pattern changed.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use ulib::{asid, getpid, mmap, println, prot, sleep};

ulib::entry!(main);

const PAGES: usize = 16;
const PAGE: usize = 4096;

fn value(seed: u32, page: usize, word: usize) -> u32 {
    seed.wrapping_mul(0x9e37_79b9) ^ (page as u32) << 16 ^ word as u32
}

fn main(arg: u32) -> i32 {
    let pid = getpid();
    let seed = pid ^ arg << 24;
    let Ok(base) = mmap(0, PAGES * PAGE, prot::READ | prot::WRITE) else {
        return 1;
    };
    let words = base.cast::<u32>();
    for page in 0..PAGES {
        for w in (0..PAGE / 4).step_by(64) {
            // SAFETY: inside the mapping just made, word aligned, used only here.
            unsafe { write_volatile(words.add(page * PAGE / 4 + w), value(seed, page, w)) };
        }
    }
    let mut last_asid = asid();
    println!("[pid {pid} asid {last_asid}] pattern: 16 pages written");
    loop {
        sleep(5);
        for page in 0..PAGES {
            for w in (0..PAGE / 4).step_by(64) {
                // SAFETY: as above.
                let v = unsafe { read_volatile(words.add(page * PAGE / 4 + w)) };
                if v != value(seed, page, w) {
                    println!("[pid {pid}] pattern: FAIL: page {page} word {w} reads {v:#x}");
                    return 2;
                }
            }
        }
        let a = asid();
        if a != last_asid {
            println!("[pid {pid}] pattern: ASID {last_asid} -> {a}, pattern intact");
            last_asid = a;
        }
    }
}
