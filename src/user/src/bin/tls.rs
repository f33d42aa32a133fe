//! The user thread ID registers are per process: TPIDRURW starts at 0, keeps what this program
//! writes across many yields (while another copy writes its own value), and is inherited by a
//! forked child; TPIDRURO holds the pid.
//!
//! Exit codes: 0 all right; 1 TPIDRURW did not start at 0; 2 TPIDRURO is not the pid; 3
//! TPIDRURW changed across a yield; 4 TPIDRURO changed across a yield; 5 fork failed; 6 wait
//! failed; 21-24 the child failed with 1 (it did not inherit TPIDRURW), 2 (its TPIDRURO is not
//! its pid), 3 (its own value did not stick) or 4 (any other way); 7 the child's write reached
//! the parent.
#![no_std]
#![no_main]

use core::arch::asm;
use ulib::{exit, fork, getpid, println, wait, yield_now, WaitStatus};

ulib::entry!(main);

const YIELDS: u32 = 200;

fn tpidrurw() -> u32 {
    let v: u32;
    // SAFETY: reading TPIDRURW is allowed in User mode and has no side effects.
    unsafe { asm!("mrc p15, 0, {}, c13, c0, 2", out(reg) v, options(nomem, nostack)) };
    v
}

fn set_tpidrurw(v: u32) {
    // SAFETY: TPIDRURW is User-writable storage for this process; nothing else depends on it.
    unsafe { asm!("mcr p15, 0, {}, c13, c0, 2", in(reg) v, options(nomem, nostack)) };
}

fn tpidruro() -> u32 {
    let v: u32;
    // SAFETY: reading TPIDRURO is allowed in User mode and has no side effects.
    unsafe { asm!("mrc p15, 0, {}, c13, c0, 3", out(reg) v, options(nomem, nostack)) };
    v
}

/// Yields `n` times; after each, TPIDRURW must still be `mine` and TPIDRURO `pid`.
fn hold(mine: u32, pid: u32, n: u32) -> Result<(), i32> {
    for i in 0..n {
        yield_now();
        let (rw, ro) = (tpidrurw(), tpidruro());
        if rw != mine {
            println!("[pid {pid}] tls: FAIL: TPIDRURW {rw:#x} after yield {i}, wrote {mine:#x}");
            return Err(3);
        }
        if ro != pid {
            println!("[pid {pid}] tls: FAIL: TPIDRURO {ro:#x} after yield {i}");
            return Err(4);
        }
    }
    Ok(())
}

fn child(inherited: u32) -> ! {
    let pid = getpid();
    if tpidrurw() != inherited {
        println!("[pid {pid}] tls child: FAIL: TPIDRURW {:#x}", tpidrurw());
        exit(1);
    }
    if tpidruro() != pid {
        println!("[pid {pid}] tls child: FAIL: TPIDRURO {:#x}", tpidruro());
        exit(2);
    }
    let mine = !inherited;
    set_tpidrurw(mine);
    exit(match hold(mine, pid, YIELDS / 4) {
        Ok(()) => 0,
        Err(_) => 3,
    })
}

fn main(arg: u32) -> i32 {
    let pid = getpid();
    let (rw, ro) = (tpidrurw(), tpidruro());
    if rw != 0 {
        println!("[pid {pid}] tls: FAIL: TPIDRURW is {rw:#x} at start");
        return 1;
    }
    if ro != pid {
        println!("[pid {pid}] tls: FAIL: TPIDRURO is {ro:#x}, pid {pid}");
        return 2;
    }
    let mine = 0x7150_0000 | arg << 8 | pid;
    set_tpidrurw(mine);
    if let Err(code) = hold(mine, pid, YIELDS) {
        return code;
    }
    let Ok(c) = fork() else {
        return 5;
    };
    if c == 0 {
        child(mine);
    }
    if let Err(code) = hold(mine, pid, YIELDS / 4) {
        return if code == 3 { 7 } else { code };
    }
    match wait(c) {
        Ok(WaitStatus::Exited(0)) => {}
        Ok(WaitStatus::Exited(code @ 1..=3)) => return 20 + i32::from(code),
        Ok(_) => return 24,
        Err(_) => return 6,
    }
    println!("[pid {pid}] tls: TPIDRURW {mine:#x} held over {YIELDS} yields and a fork");
    0
}
