//! Computes without ever giving up the CPU, so only preemption lets anything else run.
//! `arg` = 0: forever; otherwise stops after `arg` million iterations and exits 0.
#![no_std]
#![no_main]

use core::hint::black_box;
use ulib::{getpid, println};

ulib::entry!(main);

fn main(arg: u32) -> i32 {
    let pid = getpid();
    let limit = u64::from(arg) * 1_000_000;
    if limit == 0 {
        println!("[pid {pid}] spin: computing forever, never yielding");
    } else {
        println!("[pid {pid}] spin: computing {limit} iterations, never yielding");
    }
    let mut x: u32 = pid;
    let mut i: u64 = 0;
    loop {
        // A linear congruential step; black_box keeps the loop from being folded away.
        x = black_box(x)
            .wrapping_mul(1_103_515_245)
            .wrapping_add(12_345);
        i += 1;
        if i == limit {
            break;
        }
    }
    println!("[pid {pid}] spin: done after {i} iterations (x = {x:#010x})");
    0
}
