//! Data/instruction cache maintenance by virtual address (ARM ARM B2.2.6, B4.2.1).

use super::barrier::{dsb, isb};
#[cfg(not(feature = "cache-audit"))]
use super::cp15::DcCmvau;
use super::cp15::{Ctr, IciAlluIs};
use crate::mm::VirtAddr;
use aarch32_cpu::register::Dcimvac;
#[cfg(not(feature = "cache-audit"))]
use aarch32_cpu::register::{Dccimvac, Dccmvac};

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
    for_each_line(start, len, dcache_line(), dccmvac);
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
    for_each_line(start, len, dcache_line(), dccimvac);
    dsb();
}

/// Makes freshly written instructions at `[start, start+len)` executable: clean the D-cache to
/// the Point of Unification, DSB, invalidate the I-cache and the branch predictor, DSB,
/// ISB (ARM ARM B2.2.9 "Ordering of cache and branch predictor maintenance operations").
pub fn sync_instructions(start: VirtAddr, len: u32) {
    clean_lines_to_pou(start, len);
    invalidate_icache_and_predictor();
}

/// The first half of [`sync_instructions`], for code written in several places: writes the
/// lines of `[start, start+len)` back to the Point of Unification. Ends with DSB.
pub fn clean_to_pou(start: VirtAddr, len: u32) {
    #[cfg(feature = "plant-stale-icache")]
    if plant::skip_clean() {
        return;
    }
    clean_lines_to_pou(start, len);
}

/// The second half of [`sync_instructions`], once after any number of [`clean_to_pou`]:
/// invalidates the whole I-cache and the branch predictor, DSB, ISB.
pub fn invalidate_instructions() {
    #[cfg(feature = "plant-stale-icache")]
    if plant::skip_invalidate() {
        return;
    }
    invalidate_icache_and_predictor();
}

fn clean_lines_to_pou(start: VirtAddr, len: u32) {
    dsb();
    for_each_line(start, len, dcache_line(), dccmvau);
    dsb();
}

fn invalidate_icache_and_predictor() {
    // SAFETY: invalidating the I-cache only drops cached instructions. The whole cache, not by
    // line: ICIALLU also covers aliases of a VIPT I-cache.
    unsafe { IciAlluIs::write(0) };
    super::tlb::invalidate_branch_predictor();
    dsb();
    isb();
}

// The cleans by line. In test kernels (feature `cache-audit`, part of `ktest`) each one is
// preceded by a load of the same address, the pair 8-byte aligned so that it never straddles a
// page: tests/icache-check, a QEMU plugin that reports instructions the board could fetch stale,
// cannot read the MCR's operand register (QEMU 7.2's plugin API has no register access), but
// sees the load's address and counts it as the clean of that line. Every caller cleans lines of
// memory it can read (the direct map, the kernel image), so the load cannot fault.
#[cfg(feature = "cache-audit")]
macro_rules! probed_clean {
    ($crm:literal, $a:expr) => {
        // SAFETY: the load only reads the line being cleaned, which every caller can read (see
        // above); the clean only writes the line back, which cannot change what memory holds as
        // seen by this CPU.
        unsafe {
            core::arch::asm!(
                ".balign 8",
                "ldr {t}, [{a}]",
                concat!("mcr p15, 0, {a}, c7, ", $crm, ", 1"),
                a = in(reg) $a,
                t = out(reg) _,
                options(nostack, preserves_flags),
            )
        }
    };
}

/// DCCMVAU: clean the line at `a` to the Point of Unification.
#[inline(always)]
fn dccmvau(a: u32) {
    #[cfg(feature = "cache-audit")]
    probed_clean!("c11", a);
    #[cfg(not(feature = "cache-audit"))]
    {
        // SAFETY: cleaning to PoU only writes data back.
        unsafe { DcCmvau::write(a) }
    }
}

/// DCCMVAC: clean the line at `a` to the Point of Coherency.
#[inline(always)]
fn dccmvac(a: u32) {
    #[cfg(feature = "cache-audit")]
    probed_clean!("c10", a);
    #[cfg(not(feature = "cache-audit"))]
    {
        // SAFETY: DCCMVAC only writes back a cache line; it cannot change what memory holds as
        // seen by this CPU. Any VA is allowed (an unmapped one is ignored or faults cleanly).
        unsafe { Dccmvac::write(Dccmvac::new(a)) }
    }
}

/// DCCIMVAC: clean and invalidate the line at `a` to the Point of Coherency.
#[inline(always)]
fn dccimvac(a: u32) {
    #[cfg(feature = "cache-audit")]
    probed_clean!("c14", a);
    #[cfg(not(feature = "cache-audit"))]
    {
        // SAFETY: clean+invalidate preserves memory contents as this CPU sees them.
        unsafe { Dccimvac::write(Dccimvac::new(a)) }
    }
}

/// A deliberate bug for the test kernel `make test` builds with `plant-stale-icache`, which
/// tests/icache-check must report: the text of the first program loaded is not cleaned to PoU,
/// and the I-cache is not invalidated after the text of any later program. Programs make their
/// text executable through [`clean_to_pou`] and one [`invalidate_instructions`] each;
/// [`sync_instructions`] (the vector page) is left alone.
#[cfg(feature = "plant-stale-icache")]
mod plant {
    use core::sync::atomic::{AtomicU32, Ordering};

    /// Programs whose text has been made executable (calls of `invalidate_instructions`).
    static LOADS: AtomicU32 = AtomicU32::new(0);

    pub fn skip_clean() -> bool {
        LOADS.load(Ordering::Relaxed) == 0
    }

    pub fn skip_invalidate() -> bool {
        let n = LOADS.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            crate::println!("plant-stale-icache: the first program's text was not cleaned");
        } else {
            crate::println!(
                "plant-stale-icache: no I-cache invalidation after program {}",
                n + 1
            );
        }
        n > 0
    }
}
