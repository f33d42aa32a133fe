//! Does nothing and exits 0: the smallest process, for tests that create many.
#![no_std]
#![no_main]

ulib::entry!(main);

fn main(_arg: u32) -> i32 {
    0
}
