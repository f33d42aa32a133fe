//! Does one forbidden thing, chosen by `arg`; the kernel is expected to kill it. Exits 0 if it
//! survives, 64 for an unknown `arg`.
//!
//! 1 read kernel memory, 2 read an unmapped address, 3 write its own text, 4 recurse into the
//! stack guard page, 5 read through a null pointer, 6 an undefined instruction, 7 jump into its
//! (never executable) data, 8 an undefined instruction in the VFP encoding space (the kernel
//! first gives it the FP unit, then the instruction traps again and is undefined), 9 a
//! breakpoint instruction.
#![no_std]
#![no_main]

use core::arch::asm;
use core::cell::UnsafeCell;
use core::hint::black_box;
use ulib::{getpid, println};

ulib::entry!(main);

const KERNEL_ADDR: u32 = 0x8000_8000;
const UNMAPPED_ADDR: u32 = 0x4000_0000;

/// `bx lr`, in the data segment (RW, XN).
#[repr(C, align(4))]
struct DataCode(UnsafeCell<[u32; 1]>);
// SAFETY: never written; it is a cell only so that it lands in .data instead of .rodata.
unsafe impl Sync for DataCode {}
static DATA_CODE: DataCode = DataCode(UnsafeCell::new([0xe12f_ff1e]));

/// A load through `addr`, in assembly so that the compiler neither assumes anything about the
/// address nor removes the access.
fn load(addr: u32) -> u32 {
    let v: u32;
    // SAFETY: the access is meant to fault; the kernel kills the program, so nothing observes
    // an inconsistent state. If it does not fault it reads a word, which has no other effect.
    unsafe { asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack)) };
    v
}

/// A store to `addr` (the same reasoning as [`load`]).
fn store(addr: u32, v: u32) {
    // SAFETY: the store is meant to fault (the kernel kills the program). If it landed, it would
    // change the first word of `main`, which never runs again.
    unsafe { asm!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) v, options(nostack)) };
}

#[inline(never)]
fn recurse(depth: u32) -> u32 {
    let mut frame = [0u8; 512];
    frame[depth as usize % 512] = depth as u8;
    let frame = black_box(&mut frame);
    if black_box(depth) == u32::MAX {
        return u32::from(frame[0]);
    }
    recurse(depth + 1).wrapping_add(u32::from(frame[1]))
}

fn main(arg: u32) -> i32 {
    let pid = getpid();
    let what = match arg {
        1 => "read kernel memory at 0x80008000",
        2 => "read the unmapped address 0x40000000",
        3 => "write its own text",
        4 => "recurse into the stack guard page",
        5 => "read through a null pointer",
        6 => "execute an undefined instruction",
        7 => "jump into its data (XN)",
        8 => "execute an undefined VFP-space instruction",
        9 => "execute a breakpoint instruction",
        _ => {
            println!("[pid {pid}] fault: unknown case {arg} (1-9)");
            return 64;
        }
    };
    println!("[pid {pid}] fault {arg}: about to {what}");
    let seen = match arg {
        1 => load(KERNEL_ADDR),
        2 => load(UNMAPPED_ADDR),
        3 => {
            let text = main as fn(u32) -> i32 as usize as u32;
            store(text, 0xe7f0_00f0);
            0
        }
        4 => recurse(0),
        5 => load(black_box(0)),
        6 => {
            // SAFETY: an undefined instruction: the kernel kills the program.
            unsafe { asm!("udf #0", options(nomem, nostack)) };
            0
        }
        8 => {
            // MCR p10, 1, r0, c0, c0, 0: coprocessor 10 (VFP), but no VFP instruction has
            // this encoding (a register transfer with A = 001 is UNDEFINED, ARM ARM A7.8).
            // SAFETY: an undefined instruction: the kernel kills the program.
            unsafe { asm!(".inst 0xee200a10", options(nomem, nostack)) };
            0
        }
        9 => {
            // SAFETY: a breakpoint with no debugger: the kernel kills the program.
            unsafe { asm!("bkpt #0", options(nomem, nostack)) };
            0
        }
        _ => {
            let target = DATA_CODE.0.get() as u32;
            // SAFETY: the target is `bx lr`; if the kernel let it run, it would return straight
            // here, having changed only lr (declared clobbered).
            unsafe { asm!("blx {t}", t = in(reg) target, out("lr") _, options(nostack)) };
            0
        }
    };
    println!("[pid {pid}] fault {arg}: survived ({seen:#x}); the kernel should have killed it");
    0
}
