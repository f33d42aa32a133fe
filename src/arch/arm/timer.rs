//! The ARM generic timer's virtual timer (CNTV), the kernel's tick and deadline source (ARM ARM
//! B8, "The Generic Timer").
//!
//! The system counter counts up at CNTFRQ Hz; the virtual count CNTVCT is the physical count
//! minus CNTVOFF. The virtual timer's condition is met when CNTVCT >= CNTV_CVAL; writing
//! CNTV_TVAL sets CVAL = CNTVCT + TVAL (TVAL is a signed 32-bit value). With CNTV_CTL.ENABLE set
//! and IMASK clear, the met condition asserts the core's nCNTVIRQ output, level-sensitive, until
//! the deadline moves into the future or the timer is disabled.
//!
//! Board and QEMU:
//! - On the Pi 2 the firmware starts core 0 in non-secure HYP with CNTFRQ = 19.2 MHz (the
//!   crystal). The boot stub leaves HYP for SVC with CNTHCTL.PL1PCEN | PL1PCTEN set (PL1 may use
//!   the physical counter and timer) and CNTVOFF = 0, so CNTVCT reads the same as CNTPCT and the
//!   virtual timer counts at CNTFRQ. It also stops the CNTV and CNTP timers the firmware may
//!   have left running, and sets CNTKCTL so that PL0 may read CNTVCT and CNTFRQ and nothing
//!   else (no physical counter, no timer registers, no event stream). The virtual timer needs
//!   no HYP permission at PL1, which is why the kernel uses it and not the physical one.
//! - QEMU's `-kernel`/`-bios` start in Secure SVC, with CNTVOFF = 0 and its own CNTFRQ value
//!   (62.5 MHz in QEMU 7.2, one tick per 16 ns of its virtual clock); the board-entry test run
//!   (`tests/firmware/armstub.S`) enters in non-secure HYP as on the Pi, with that same CNTFRQ
//!   and CNTVOFF deliberately non-zero. Its raspi2b wires each CPU's virtual timer
//!   output to the ARM-local interrupt controller's CNTVIRQ input of that core, as the BCM2836
//!   does. The counter follows QEMU's virtual clock, which under `-icount` advances with the
//!   instruction count (and keeps advancing while the CPU waits in WFI), so deadlines still
//!   expire there.
//!
//! Whether the timer reaches the IRQ line is decided by the ARM-local interrupt controller
//! (`bsp::raspi2::local_ic`), and what runs then by `crate::irq`.

use super::barrier::isb;
use aarch32_cpu::register::{CntVct, Cntfrq, CntvCtl, CntvCval, CntvTval};
use core::fmt;

/// What the timer cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerError {
    /// CNTFRQ reads 0: whoever ran at the highest privilege level before the kernel did not
    /// program it, and the kernel (at PL1) cannot.
    FrequencyUnset,
}

impl fmt::Display for TimerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FrequencyUnset => {
                f.write_str("CNTFRQ is 0 (the counter frequency was never set)")
            }
        }
    }
}

/// The longest relative deadline [`set_deadline_after`] accepts: CNTV_TVAL is signed, so a
/// larger value would be a deadline in the past (about 112 s at 19.2 MHz).
pub const MAX_DEADLINE_TICKS: u32 = i32::MAX as u32;

/// CNTV_CTL.ENABLE (bit 1 is IMASK, bit 2 ISTATUS).
const CTL_ENABLE: u32 = 1 << 0;

/// The counter frequency in Hz (CNTFRQ), or an error if nobody set it.
pub fn frequency() -> Result<u32, TimerError> {
    match Cntfrq::read().0 {
        0 => Err(TimerError::FrequencyUnset),
        hz => Ok(hz),
    }
}

/// The virtual count now (CNTVCT). The ARM ARM (B8, the Generic Timer) allows reads of the
/// counter to happen speculatively and out of order with other instructions; the ISB before
/// makes it read after everything earlier in program order, so a measured interval covers the
/// code it brackets.
#[inline]
pub fn now() -> u64 {
    isb();
    CntVct::read().0
}

/// Sets the deadline `ticks` counter ticks from now (CNTV_TVAL), at most
/// [`MAX_DEADLINE_TICKS`] (larger values are clamped). Does not enable the timer; re-arming a
/// running timer this way also withdraws its interrupt if the new deadline is in the future.
#[inline]
pub fn set_deadline_after(ticks: u32) {
    CntvTval::write(CntvTval(ticks.min(MAX_DEADLINE_TICKS)));
    isb();
}

/// Sets the deadline at the absolute virtual count `count` (CNTV_CVAL).
#[inline]
pub fn set_deadline_at(count: u64) {
    CntvCval::write(CntvCval(count));
    isb();
}

/// The current deadline (CNTV_CVAL), as an absolute virtual count.
pub fn deadline() -> u64 {
    CntvCval::read().0
}

/// Starts the timer with its interrupt unmasked (CNTV_CTL.ENABLE = 1, IMASK = 0): once the
/// deadline passes it asserts nCNTVIRQ until re-armed or disabled. The ISB makes the write take
/// effect before the next instruction (a CP15 write needs a context synchronisation event).
#[inline]
pub fn enable() {
    CntvCtl::write(CntvCtl::new_with_raw_value(CTL_ENABLE));
    isb();
}

/// Stops the timer; its interrupt output is deasserted.
#[inline]
pub fn disable() {
    CntvCtl::write(CntvCtl::new_with_raw_value(0));
    isb();
}

/// Whether the timer is enabled.
pub fn is_enabled() -> bool {
    CntvCtl::read().enable()
}

/// Whether the timer is enabled and its deadline has passed (CNTV_CTL.ISTATUS; UNKNOWN while
/// disabled, so it is only reported for an enabled timer).
pub fn is_pending() -> bool {
    let ctl = CntvCtl::read();
    ctl.enable() && ctl.istatus()
}

/// Counter ticks in `ms` milliseconds at `hz` (rounded up: a deadline is never early).
pub const fn ms_to_ticks(ms: u32, hz: u32) -> u64 {
    (ms as u64 * hz as u64).div_ceil(1000)
}

/// Counter ticks in `us` microseconds at `hz` (rounded up).
pub const fn us_to_ticks(us: u32, hz: u32) -> u64 {
    (us as u64 * hz as u64).div_ceil(1_000_000)
}

/// Whole milliseconds in `ticks` counter ticks at `hz` (rounded down). `hz` must not be 0.
pub const fn ticks_to_ms(ticks: u64, hz: u32) -> u64 {
    scale_down(ticks, hz, 1000)
}

/// Whole microseconds in `ticks` counter ticks at `hz` (rounded down). `hz` must not be 0.
pub const fn ticks_to_us(ticks: u64, hz: u32) -> u64 {
    scale_down(ticks, hz, 1_000_000)
}

/// `ticks * per_second / hz` without overflowing for any count a 64-bit counter reaches.
const fn scale_down(ticks: u64, hz: u32, per_second: u64) -> u64 {
    let hz = hz as u64;
    (ticks / hz) * per_second + (ticks % hz) * per_second / hz
}
