//! The interleaving demo: prints a numbered line every 200 ms, `arg` times (0: forever).
#![no_std]
#![no_main]

use ulib::{asid, getpid, println, sleep};

ulib::entry!(main);

fn main(arg: u32) -> i32 {
    let (pid, asid) = (getpid(), asid());
    let mut n: u32 = 0;
    loop {
        // One println is one write call: lines of concurrent demos never mix.
        println!("[pid {pid} asid {asid}] {n}");
        n = n.wrapping_add(1);
        if arg != 0 && n == arg {
            return 0;
        }
        sleep(200);
    }
}
