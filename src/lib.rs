//! A Raspberry Pi 2 (BCM2836, Cortex-A7) kernel built around its virtual-memory subsystem.
//!
//! `mm` and `ring` are portable and tested on the host; everything that touches the hardware
//! (`arch`, `bsp`, the console, `irq`, `vm`, the on-target tests) builds only for the target.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod abi;
pub mod block;
pub mod cmdline;
pub mod elf;
pub mod fs;
pub mod mm;
pub mod ring;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod bsp;
#[cfg(target_os = "none")]
#[macro_use]
pub mod console;
#[cfg(target_os = "none")]
pub mod init;
#[cfg(target_os = "none")]
pub mod irq;
#[cfg(all(target_os = "none", feature = "kbench"))]
pub mod kbench;
#[cfg(all(target_os = "none", feature = "ktest"))]
pub mod ktest;
#[cfg(target_os = "none")]
pub mod proc;
#[cfg(target_os = "none")]
pub mod programs;
#[cfg(target_os = "none")]
pub mod shell;
#[cfg(target_os = "none")]
pub mod smp;
#[cfg(target_os = "none")]
pub mod vm;

// The kernel heap on the target, std's allocator on the host (`mm::uvm` needs it on both).
extern crate alloc;

#[cfg(target_os = "none")]
pub use init::kernel_init;
