//! Barriers. Thin names over `aarch32-cpu`'s, which are also compiler fences.

pub use aarch32_cpu::asm::{dmb, dsb, isb};
