//! Greets, then ticks five times 50 ms apart.
#![no_std]
#![no_main]

use ulib::{asid, getpid, println, sleep};

ulib::entry!(main);

fn main(_arg: u32) -> i32 {
    let (pid, asid) = (getpid(), asid());
    println!("hello from pid {pid} (asid {asid})");
    for i in 1..=5 {
        println!("[pid {pid} asid {asid}] tick {i}");
        if i < 5 {
            sleep(50);
        }
    }
    0
}
