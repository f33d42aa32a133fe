//! Data/instruction cache maintenance by virtual address (ARM ARM B2.2.6, B4.2.1).

use super::barrier::{dsb, isb};
use super::cp15::{Ctr, DcCmvau, IciAlluIs};
use crate::mm::VirtAddr;
use aarch32_cpu::register::{Dccimvac, Dccmvac, Dcimvac};

/// Smallest D-cache line in bytes (CTR.DminLine is log2 of words).
pub fn dcache_line() -> u32 {
    4 << ((Ctr::read() >> 16) & 0xf)
}

fn for_each_line(start: VirtAddr, len: u32, line: u32, mut op: impl FnMut(u32)) {
    let mut a = start.as_u32() & !(line - 1);
    let end = start.as_u32().saturating_add(len);
    while a < end {
        op(a);
        a = match a.checked_add(line) {
            Some(n) => n,
            None => break,
        };
    }
}

/// Writes dirty lines of `[start, start+len)` back to the Point of Coherency, so that an observer
/// that does not snoop the caches (the VideoCore, a DMA engine) sees them. Ends with DSB.
pub fn clean_to_poc(start: VirtAddr, len: u32) {
    dsb();
    for_each_line(start, len, dcache_line(), |a| {
        // SAFETY: DCCMVAC only writes back a cache line; it cannot change what memory holds as
        // seen by this CPU. Any VA is allowed (an unmapped one is ignored or faults cleanly).
        unsafe { Dccmvac::write(Dccmvac::new(a)) }
    });
    dsb();
}

/// Discards the lines of `[start, start+len)` so that the next read fetches what another
/// observer wrote to memory. The range should cover whole lines: a partial line shares its fate.
pub fn invalidate_to_poc(start: VirtAddr, len: u32) {
    dsb();
    for_each_line(start, len, dcache_line(), |a| {
        // SAFETY: callers own whole lines of the range (documented above); discarding them is
        // what is asked.
        unsafe { Dcimvac::write(Dcimvac::new(a)) }
    });
    dsb();
}

/// Clean and invalidate to PoC.
pub fn clean_invalidate_to_poc(start: VirtAddr, len: u32) {
    dsb();
    for_each_line(start, len, dcache_line(), |a| {
        // SAFETY: clean+invalidate preserves memory contents as this CPU sees them.
        unsafe { Dccimvac::write(Dccimvac::new(a)) }
    });
    dsb();
}

/// Makes freshly written instructions at `[start, start+len)` executable: clean the D-cache to
/// the Point of Unification, DSB, invalidate the I-cache and the branch predictor, DSB,
/// ISB (ARM ARM B2.2.9 "Ordering of cache and branch predictor maintenance operations").
pub fn sync_instructions(start: VirtAddr, len: u32) {
    clean_to_pou(start, len);
    invalidate_instructions();
}

/// The first half of [`sync_instructions`], for code written in several places: writes the
/// lines of `[start, start+len)` back to the Point of Unification. Ends with DSB.
pub fn clean_to_pou(start: VirtAddr, len: u32) {
    dsb();
    for_each_line(start, len, dcache_line(), |a| {
        // SAFETY: cleaning to PoU only writes data back.
        unsafe { DcCmvau::write(a) }
    });
    dsb();
}

/// The second half of [`sync_instructions`], once after any number of [`clean_to_pou`]:
/// invalidates the whole I-cache and the branch predictor, DSB, ISB.
pub fn invalidate_instructions() {
    // SAFETY: invalidating the I-cache only drops cached instructions. The whole cache, not by
    // line: ICIALLU also covers aliases of a VIPT I-cache.
    unsafe { IciAlluIs::write(0) };
    super::tlb::invalidate_branch_predictor();
    dsb();
    isb();
}
