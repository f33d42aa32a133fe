//! The cycle counter, PMCCNTR, for cost measurements. On a Pi it counts CPU cycles; under
//! `qemu -icount shift=0` every instruction takes one virtual nanosecond and QEMU's counter runs
//! at 1 GHz, so it counts instructions, deterministically.

use super::barrier::isb;
use super::cp15::{Pmccntr, Pmcntenset, Pmcr};

/// Enables and resets the cycle counter (no divider).
pub fn enable() {
    // SAFETY: PMCR.E | PMCR.C (reset) with D = 0, then enable counter 31; only the PMU changes.
    unsafe {
        Pmcr::write((Pmcr::read() | 1 | 1 << 2) & !(1 << 3));
        Pmcntenset::write(1 << 31);
    }
    isb();
}

/// The cycle counter now. The ISB keeps earlier instructions from being counted after it.
#[inline(always)]
pub fn now() -> u32 {
    isb();
    Pmccntr::read()
}

/// Cost of running `f` once, in counter ticks, without the measurement's own overhead.
#[inline(never)]
pub fn measure(f: impl FnOnce()) -> u32 {
    let empty = {
        let a = now();
        let b = now();
        b.wrapping_sub(a)
    };
    let a = now();
    f();
    let b = now();
    b.wrapping_sub(a).saturating_sub(empty)
}
