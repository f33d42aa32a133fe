//! Copy-on-write fork: parent and child each see only their own writes to a 16-page array.
//!
//! Exit codes: 0 all right; 1 fork failed; 2 wait failed; 3 the parent's pattern changed
//! before it rewrote it; 4 the parent's second pattern did not survive; 11/12 the child failed
//! with 1 (it did not see the parent's data after fork) or 2 (its own writes did not stick);
//! 13 the child ended any other way; 5 fork did not share the array's frames; 6 the parent's
//! writes did not unshare them.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::ptr::{read_volatile, write_volatile};
use ulib::{exit, fork, getpid, info, println, sleep, sysinfo, wait, WaitStatus};

ulib::entry!(main);

const PAGES: usize = 16;
const WORDS: usize = PAGES * 4096 / 4;

#[repr(C, align(4096))]
struct Pages(UnsafeCell<[u32; WORDS]>);
// SAFETY: a process is one thread; only `fill` and `holds` touch the array, through raw pointers.
unsafe impl Sync for Pages {}
static ARRAY: Pages = Pages(UnsafeCell::new([0; WORDS]));

const PARENT: u32 = 0x5a00_0000;
const PARENT_AGAIN: u32 = 0x9600_0000;
const CHILD: u32 = 0xc300_0000;

fn fill(tag: u32) {
    let a = ARRAY.0.get().cast::<u32>();
    for i in 0..WORDS {
        // SAFETY: i < WORDS; the single thread of this process is the only user.
        unsafe { write_volatile(a.add(i), tag | i as u32) };
    }
}

fn holds(tag: u32) -> bool {
    let a = ARRAY.0.get().cast::<u32>();
    // SAFETY: as in `fill`.
    (0..WORDS).all(|i| unsafe { read_volatile(a.add(i)) } == tag | i as u32)
}

fn shared() -> i64 {
    sysinfo(info::COW_SHARED_FRAMES).map_or(-1, i64::from)
}

fn child() -> ! {
    // Write nothing to the array for a while, so the parent can count the sharing.
    sleep(100);
    let pid = getpid();
    println!(
        "[pid {pid}] cow child: frames shared copy-on-write after fork: {}",
        shared()
    );
    if !holds(PARENT) {
        println!("[pid {pid}] cow child: FAIL: the parent's data is not there after fork");
        exit(1);
    }
    fill(CHILD);
    sleep(20); // let the parent write its copy meanwhile
    if !holds(CHILD) {
        println!("[pid {pid}] cow child: FAIL: its own writes did not stick");
        exit(2);
    }
    println!(
        "[pid {pid}] cow child: sees only its own writes; shared now {}",
        shared()
    );
    exit(0)
}

fn main(_arg: u32) -> i32 {
    let pid = getpid();
    fill(PARENT);
    let before = shared();
    println!(
        "[pid {pid}] cow: {PAGES} pages written; frames shared copy-on-write before fork: {before}"
    );
    let child_pid = match fork() {
        Ok(0) => child(),
        Ok(child_pid) => child_pid,
        Err(e) => {
            println!("[pid {pid}] cow: FAIL: fork: {e}");
            return 1;
        }
    };
    let after_fork = shared();
    println!("[pid {pid}] cow: forked pid {child_pid}; shared after fork: {after_fork}");
    if after_fork < before + PAGES as i64 {
        println!("[pid {pid}] cow: FAIL: fork did not share the {PAGES} array pages");
        return 5;
    }
    if !holds(PARENT) {
        println!("[pid {pid}] cow: FAIL: the parent's data changed after fork");
        return 3;
    }
    fill(PARENT_AGAIN);
    let after_write = shared();
    println!("[pid {pid}] cow: the parent wrote its {PAGES} pages; shared now: {after_write}");
    if after_fork - after_write < PAGES as i64 {
        println!("[pid {pid}] cow: FAIL: writing did not give the parent its own copies");
        return 6;
    }
    let code = match wait(child_pid) {
        Ok(WaitStatus::Exited(code)) => i32::from(code),
        Ok(WaitStatus::Killed(reason)) => {
            println!("[pid {pid}] cow: FAIL: the child was killed (reason {reason})");
            return 2;
        }
        Err(e) => {
            println!("[pid {pid}] cow: FAIL: wait({child_pid}): {e}");
            return 2;
        }
    };
    if code != 0 {
        println!("[pid {pid}] cow: FAIL: the child exited with {code}");
        return if code == 1 || code == 2 {
            10 + code
        } else {
            13
        };
    }
    if !holds(PARENT_AGAIN) {
        println!("[pid {pid}] cow: FAIL: the parent's writes did not survive the child's");
        return 4;
    }
    println!(
        "[pid {pid}] cow: ok; shared after the child exited: {}",
        shared()
    );
    0
}
