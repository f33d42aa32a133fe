//! A Raspberry Pi 2 (BCM2836, Cortex-A7) kernel built around its virtual-memory subsystem.
//!
//! `mm` is portable and tested on the host; everything that touches the hardware (`arch`, `bsp`,
//! `vm`, the console) builds only for the target.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod mm;
