//! Shared memory between two processes through the object named 0x5117.
//!
//! `arg` 1, the writer: writes a 64-byte pattern and then the ready flag, waits for the reader's
//! ack. `arg` 2, the reader: waits for the ready flag, checks the pattern, sets the ack. Either
//! may start first. Exit codes: 0 all right, 1 shm failed, 2 timed out (about 5 s), 3 the
//! pattern did not match, 64 unknown `arg`.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};
use ulib::{getpid, println, shm, sleep};

ulib::entry!(main);

const KEY: u32 = 0x5117;
const LEN: usize = 4096;
/// Offsets in the object: the two flags, then the pattern.
const READY: usize = 0;
const ACK: usize = 4;
const PATTERN: usize = 64;
const PATTERN_LEN: usize = 64;
/// Polls every 10 ms, for about 5 s.
const POLL_MS: u32 = 10;
const POLLS: u32 = 500;

fn pattern(i: usize) -> u8 {
    (i as u8).wrapping_mul(37) ^ 0xa5
}

fn flag(base: *mut u8, off: usize) -> &'static AtomicU32 {
    // SAFETY: base..base + LEN is the shared mapping, page aligned and never unmapped while the
    // program runs; `off` is a word-aligned offset below LEN. Both processes use it only through
    // atomics.
    unsafe { &*base.add(off).cast::<AtomicU32>() }
}

fn poll(f: &AtomicU32) -> bool {
    for _ in 0..POLLS {
        if f.load(Ordering::Acquire) == 1 {
            return true;
        }
        sleep(POLL_MS);
    }
    false
}

fn main(arg: u32) -> i32 {
    let pid = getpid();
    let role = match arg {
        1 => "writer",
        2 => "reader",
        _ => {
            println!("[pid {pid}] shm: arg 1 (writer) or 2 (reader), not {arg}");
            return 64;
        }
    };
    let base = match shm(KEY, LEN) {
        Ok(p) => p,
        Err(e) => {
            println!("[pid {pid}] shm {role}: FAIL: shm({KEY:#x}, {LEN}): {e}");
            return 1;
        }
    };
    println!(
        "[pid {pid}] shm {role}: object {KEY:#x} mapped at {:#x}",
        base as usize
    );
    if arg == 1 {
        for i in 0..PATTERN_LEN {
            // SAFETY: PATTERN + i < LEN, inside the mapping.
            unsafe { write_volatile(base.add(PATTERN + i), pattern(i)) };
        }
        flag(base, READY).store(1, Ordering::Release);
        if !poll(flag(base, ACK)) {
            println!("[pid {pid}] shm writer: FAIL: no ack from a reader");
            return 2;
        }
        println!("[pid {pid}] shm writer: the reader acknowledged");
    } else {
        if !poll(flag(base, READY)) {
            println!("[pid {pid}] shm reader: FAIL: the writer never became ready");
            return 2;
        }
        for i in 0..PATTERN_LEN {
            // SAFETY: PATTERN + i < LEN, inside the mapping.
            let b = unsafe { read_volatile(base.add(PATTERN + i)) };
            if b != pattern(i) {
                println!(
                    "[pid {pid}] shm reader: FAIL: byte {i} is {b:#x}, not {:#x}",
                    pattern(i)
                );
                return 3;
            }
        }
        flag(base, ACK).store(1, Ordering::Release);
        println!("[pid {pid}] shm reader: pattern ok, ack sent");
    }
    0
}
