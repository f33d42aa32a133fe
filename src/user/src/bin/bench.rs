//! Costs seen from user space, in PMCCNTR ticks (instructions under `qemu -icount shift=0`),
//! printed as `cost <case> <n>` lines. Needs a kernel that grants user access to the cycle
//! counter (bench builds); elsewhere the first counter read kills it.
#![no_std]
#![no_main]

use core::hint::black_box;
use core::ptr::write_volatile;
use ulib::{cycles, getpid, mmap, munmap, println, prot, yield_now};

ulib::entry!(main);

const CALLS: u32 = 1000;
const PAGES: usize = 64;
const MAP_LEN: usize = 256 * 1024;

/// Ticks for `n` rounds of `f`, less `n` rounds of an empty loop, per round.
fn per_call(n: u32, mut f: impl FnMut(u32)) -> u32 {
    let t0 = cycles();
    for i in 0..n {
        black_box(i);
    }
    let t1 = cycles();
    for i in 0..n {
        f(black_box(i));
    }
    let t2 = cycles();
    t2.wrapping_sub(t1).saturating_sub(t1.wrapping_sub(t0)) / n
}

fn main(_arg: u32) -> i32 {
    let getpid_cost = per_call(CALLS, |_| {
        black_box(getpid());
    });
    println!("cost syscall_getpid {getpid_cost}");

    let base = match mmap(0, MAP_LEN, prot::READ | prot::WRITE) {
        Ok(p) => p,
        Err(e) => {
            println!("bench: mmap failed: {e}");
            return 1;
        }
    };
    let fault_cost = per_call(PAGES as u32, |i| {
        // SAFETY: page i of the fresh 256 KiB mapping (64 pages), word aligned; first touch.
        unsafe { write_volatile(base.add(i as usize * 4096).cast::<u32>(), i) };
    });
    println!("cost demand_zero_fault_total {fault_cost}");
    // SAFETY: nothing uses the mapping after this.
    if let Err(e) = unsafe { munmap(base, MAP_LEN) } {
        println!("bench: munmap failed: {e}");
        return 1;
    }

    let yield_cost = per_call(CALLS, |_| yield_now());
    println!("cost yield_roundtrip {yield_cost}");
    0
}
