//! TLB and branch-predictor maintenance (ARM ARM B3.10 "TLB maintenance requirements").
//!
//! The inner-shareable forms are used throughout: with ACTLR.SMP set they reach every core of
//! the cluster, and on one core they cost the same as the local forms. Two local invalidations
//! exist on purpose, each a core clearing its own TLB: the boot stub's (each core before its MMU
//! is on, and a secondary again after it leaves its trampoline table: entries only that core
//! could have cached), and the per-core flush after an ASID rollover (`vm::enter_user`: each core
//! is told to flush once before its next ASID use, so a broadcast would only repeat it).
//!
//! The required sequence after changing a valid descriptor is: the store, DSB (the walker can
//! see it: table walks are coherent with the L1 D-cache on Cortex-A7, ID_MMFR3.CohWalk), TLB
//! invalidate, BPIALL, DSB (the invalidation is complete), ISB (later fetches use it).

use super::barrier::{dsb, isb};
use super::cp15::{BpiAllIs, TlbiAllIs, TlbiAsidIs, TlbiMvaIs, TlbiMvaaIs};
use crate::mm::VirtAddr;

/// Invalidates every TLB entry on every core of the inner-shareable domain. Caller adds DSB+ISB.
#[inline]
pub fn invalidate_all() {
    // SAFETY: TLB invalidation only drops cached translations; the operand is ignored.
    unsafe { TlbiAllIs::write(0) }
}

/// Invalidates the non-global entry for `va` tagged `asid` (and any walk-cache entry for `va`).
#[inline]
pub fn invalidate_page(va: VirtAddr, asid: u8) {
    // SAFETY: as above; the operand is VA[31:12] | ASID as TLBIMVAIS defines it.
    unsafe { TlbiMvaIs::write((va.as_u32() & !0xfff) | u32::from(asid)) }
}

/// Invalidates every entry for `va` whatever its ASID, global ones included.
#[inline]
pub fn invalidate_page_all_asids(va: VirtAddr) {
    // SAFETY: as above; the operand is VA[31:12] (TLBIMVAAIS, Multiprocessing Extensions).
    unsafe { TlbiMvaaIs::write(va.as_u32() & !0xfff) }
}

/// Invalidates every non-global entry tagged `asid`.
#[inline]
pub fn invalidate_asid(asid: u8) {
    // SAFETY: as above; the operand is the ASID.
    unsafe { TlbiAsidIs::write(u32::from(asid)) }
}

/// Invalidates the branch predictor (required after TLB maintenance, ARM ARM B2.2.7).
#[inline]
pub fn invalidate_branch_predictor() {
    // SAFETY: only drops branch predictions.
    unsafe { BpiAllIs::write(0) }
}

/// The closing half of every TLB maintenance sequence: BPIALL, DSB, ISB.
#[inline]
pub fn complete() {
    invalidate_branch_predictor();
    dsb();
    isb();
}

/// Full flush of every core: DSB, TLBIALLIS, BPIALLIS, DSB, ISB. Used when the identity map
/// goes (global entries any core may hold); an ASID rollover flushes core by core instead.
pub fn flush_all() {
    dsb();
    invalidate_all();
    complete();
}
