//! What a program may do with the generic timer: the boot stub's CNTKCTL lets PL0 read the
//! virtual counter (CNTVCT) and CNTFRQ, and nothing else. Reads both, checks the counter moves
//! forward, then has one child read the physical counter (CNTPCT) and another read the virtual
//! timer's control register (CNTV_CTL): each must be killed for an undefined instruction.
//! Exit codes: 0 all as expected, 1 CNTFRQ reads 0, 2 CNTVCT went backwards, 3 fork failed,
//! 4 a child was not killed for an undefined instruction, 5 wait failed.
#![no_std]
#![no_main]

use core::arch::asm;
use ulib::{exit, fork, getpid, println, status, wait, WaitStatus};

ulib::entry!(main);

fn cntvct() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading CNTVCT has no side effect; CNTKCTL.PL0VCTEN allows it at PL0.
    unsafe {
        asm!("isb", "mrrc p15, 1, {lo}, {hi}, c14", lo = out(reg) lo, hi = out(reg) hi, options(nostack))
    };
    u64::from(hi) << 32 | u64::from(lo)
}

fn cntfrq() -> u32 {
    let v: u32;
    // SAFETY: as for CNTVCT (PL0VCTEN also allows CNTFRQ).
    unsafe { asm!("mrc p15, 0, {v}, c14, c0, 0", v = out(reg) v, options(nomem, nostack)) };
    v
}

/// Runs `f` in a child and returns how the child ended.
fn in_child(f: fn()) -> Result<WaitStatus, i32> {
    match fork() {
        Ok(0) => {
            f();
            exit(0)
        }
        Ok(child) => wait(child).map_err(|_| 5),
        Err(_) => Err(3),
    }
}

fn read_cntpct() {
    // SAFETY: meant to be refused (CNTKCTL.PL0PCTEN = 0): the kernel kills the process.
    unsafe {
        asm!("mrrc p15, 0, {lo}, {hi}, c14", lo = out(reg) _, hi = out(reg) _, options(nostack))
    };
}

fn read_cntv_ctl() {
    // SAFETY: meant to be refused (CNTKCTL.PL0VTEN = 0): the kernel kills the process.
    unsafe { asm!("mrc p15, 0, {v}, c14, c3, 1", v = out(reg) _, options(nomem, nostack)) };
}

fn main(_arg: u32) -> i32 {
    let pid = getpid();
    if cntfrq() == 0 {
        println!("[pid {pid}] timers: FAIL: CNTFRQ reads 0");
        return 1;
    }
    let (a, b) = (cntvct(), cntvct());
    if b < a {
        println!("[pid {pid}] timers: FAIL: CNTVCT went backwards ({a:#x}, then {b:#x})");
        return 2;
    }
    for (what, f) in [("CNTPCT", read_cntpct as fn()), ("CNTV_CTL", read_cntv_ctl)] {
        match in_child(f) {
            Ok(WaitStatus::Killed(status::UNDEFINED)) => {}
            Ok(code) => {
                println!("[pid {pid}] timers: FAIL: a child reading {what} ended {code:?}");
                return 4;
            }
            Err(code) => {
                println!("[pid {pid}] timers: FAIL: fork or wait for {what}");
                return code;
            }
        }
    }
    println!("[pid {pid}] timers: CNTVCT and CNTFRQ readable, CNTPCT and CNTV_CTL refused");
    0
}
