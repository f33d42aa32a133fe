//! Forks `arg` children (0: 8; at most 32); child `i` sleeps a little (the last one shortest,
//! so they end in reverse order) and exits with `i`. The parent waits for each in turn and checks
//! the codes, then that a reaped child and itself are not waitable. Exit codes: 0 all right,
//! 1 fork failed, 2 a wrong exit code, 3 wait failed, 4 a reaped child was waitable again,
//! 5 waiting for itself did not fail with ECHILD.
#![no_std]
#![no_main]

use ulib::{exit, fork, getpid, println, sleep, wait, Errno, WaitStatus};

ulib::entry!(main);

const MAX: usize = 32;

fn main(arg: u32) -> i32 {
    let pid = getpid();
    let n = if arg == 0 { 8 } else { (arg as usize).min(MAX) };
    let mut children = [0u32; MAX];
    for (i, slot) in children.iter_mut().enumerate().take(n) {
        match fork() {
            Ok(0) => {
                sleep(5 * (n - i) as u32);
                exit(i as i32);
            }
            Ok(child) => *slot = child,
            Err(e) => {
                println!("[pid {pid}] forktest: FAIL: fork {i}: {e}");
                return 1;
            }
        }
    }
    for (i, &child) in children.iter().enumerate().take(n) {
        match wait(child) {
            Ok(WaitStatus::Exited(code)) if usize::from(code) == i => {}
            Ok(code) => {
                println!("[pid {pid}] forktest: FAIL: child {child} ended {code:?}, not exit {i}");
                return 2;
            }
            Err(e) => {
                println!("[pid {pid}] forktest: FAIL: wait({child}): {e}");
                return 3;
            }
        }
    }
    if wait(children[0]) != Err(Errno::ECHILD) {
        println!("[pid {pid}] forktest: FAIL: a reaped child could be waited for again");
        return 4;
    }
    if wait(pid) != Err(Errno::ECHILD) {
        println!("[pid {pid}] forktest: FAIL: wait(own pid) did not fail with ECHILD");
        return 5;
    }
    println!("[pid {pid}] forktest: {n} children forked, waited for, exit codes right");
    0
}
