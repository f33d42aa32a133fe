//! Checks that only show on several cores. `arg` = mode | `k` << 8 | `tag` << 16:
//!
//! - mode 1: `k` processes share one page (`shm` key from `tag`) and each adds 1 to a counter
//!   in it [`ADDS`] times with LDREX/STREX (`AtomicU32::fetch_add`), then waits for the others:
//!   the counter must be exactly `k` x [`ADDS`]. Lost updates would show cores that did not
//!   see each other's exclusive stores.
//! - mode 2: rounds of map, write, yield, unmap, yield, map again, and a fork every few rounds,
//!   with yields in between so that the process moves between cores. A page mapped afresh must
//!   read zero (a stale translation of the unmapped frame would show the old pattern), and a
//!   page the parent writes after `fork` must keep the old value in the child (a stale
//!   writable translation would let the parent write the shared frame).
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};
use ulib::{exit, fork, getpid, mmap, munmap, println, prot, shm, wait, yield_now, WaitStatus};

ulib::entry!(main);

const PAGE: usize = 4096;
const RW: u32 = prot::READ | prot::WRITE;
/// Increments per process in mode 1.
const ADDS: u32 = 100_000;
/// Rounds of mode 2.
const ROUNDS: u32 = 150;

fn main(arg: u32) -> i32 {
    let pid = getpid();
    let k = (arg >> 8) & 0xff;
    let tag = arg >> 16;
    match arg & 0xff {
        1 => counter(pid, k, tag),
        2 => remap(pid),
        _ => 64,
    }
}

fn counter(pid: u32, k: u32, tag: u32) -> i32 {
    let Ok(page) = shm(0x534d_0000 | tag, PAGE) else {
        println!("[pid {pid}] smp 1: shm failed");
        return 1;
    };
    // SAFETY: the page is mapped read-write and 4-aligned; the words are only used atomically.
    let (count, done) = unsafe {
        (
            &*(page as *const AtomicU32),
            &*(page.add(4) as *const AtomicU32),
        )
    };
    for i in 0..ADDS {
        count.fetch_add(1, Ordering::Relaxed);
        if i % 10_000 == 0 {
            // Let the scheduler move it now and then.
            yield_now();
        }
    }
    done.fetch_add(1, Ordering::Release);
    while done.load(Ordering::Acquire) < k {
        yield_now();
    }
    let total = count.load(Ordering::Relaxed);
    if total != k * ADDS {
        println!("[pid {pid}] smp 1: counter {total}, expected {k} x {ADDS}: updates lost");
        return 1;
    }
    println!("[pid {pid}] smp 1: counter {total} = {k} x {ADDS}");
    0
}

fn remap(pid: u32) -> i32 {
    let va = 0x3000_0000usize;
    let cow = match mmap(0x3100_0000, PAGE, RW) {
        Ok(p) => p as *mut u32,
        Err(e) => {
            println!("[pid {pid}] smp 2: mmap: {e:?}");
            return 1;
        }
    };
    for round in 0..ROUNDS {
        let p = match mmap(va, PAGE, RW) {
            Ok(p) => p as *mut u32,
            Err(e) => {
                println!("[pid {pid}] smp 2: mmap: {e:?}");
                return 1;
            }
        };
        // SAFETY: `p` is a fresh read-write page; the volatile accesses are the test.
        let (first, last) = unsafe { (read_volatile(p), read_volatile(p.add(1023))) };
        if first != 0 || last != 0 {
            println!(
                "[pid {pid}] smp 2: round {round}: a fresh page reads {first:#x}/{last:#x}: stale"
            );
            return 2;
        }
        let mark = 0x5a00_0000 | pid << 12 | round;
        // SAFETY: as above.
        unsafe {
            write_volatile(p, mark);
            write_volatile(p.add(1023), mark);
        }
        yield_now();
        // SAFETY: as above.
        let back = unsafe { read_volatile(p) };
        if back != mark {
            println!("[pid {pid}] smp 2: round {round}: wrote {mark:#x}, read {back:#x}");
            return 3;
        }
        // SAFETY: `p` is the page mapped above, no longer used.
        if let Err(e) = unsafe { munmap(p as *mut u8, PAGE) } {
            println!("[pid {pid}] smp 2: munmap: {e:?}");
            return 1;
        }
        yield_now();
        if round % 10 == 0 && !fork_keeps_copy(pid, cow, round) {
            return 4;
        }
    }
    println!("[pid {pid}] smp 2: {ROUNDS} rounds of remap and fork: no stale translation");
    0
}

/// Writes `round` to the private page `cow`, forks, writes again in the parent after moving
/// around: the child must still read `round`.
fn fork_keeps_copy(pid: u32, cow: *mut u32, round: u32) -> bool {
    // SAFETY: `cow` is a private read-write page of this process.
    unsafe { write_volatile(cow, round) };
    match fork() {
        Ok(0) => {
            for _ in 0..6 {
                yield_now();
                // SAFETY: the child's copy-on-write view of the page.
                let seen = unsafe { read_volatile(cow) };
                if seen != round {
                    println!("[pid {}] smp 2: child sees {seen}, not {round}", getpid());
                    exit(5);
                }
            }
            exit(0);
        }
        Ok(child) => {
            yield_now();
            // SAFETY: as above; a write after fork takes the parent's own copy.
            unsafe { write_volatile(cow, round + 1000) };
            yield_now();
            let status = wait(child);
            // SAFETY: as above.
            let mine = unsafe { read_volatile(cow) };
            if status != Ok(WaitStatus::Exited(0)) || mine != round + 1000 {
                println!("[pid {pid}] smp 2: fork in round {round}: child {status:?}, parent reads {mine}");
                return false;
            }
            true
        }
        Err(e) => {
            println!("[pid {pid}] smp 2: fork: {e:?}");
            false
        }
    }
}
