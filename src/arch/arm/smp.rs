//! What a secondary core needs to start: the parameters the boot stub's `secondary_entry` reads
//! with the MMU off, the trampoline table it turns the MMU on with, and the Rust function it
//! enters (`crate::smp::secondary_main`).
//!
//! ```text
//!   core 0 (crate::smp)                      core n (boot/start.S, then crate::smp)
//!   prepare(): stack tops, trampoline  ──>   mailbox 3 holds secondary_entry's PA: leave HYP,
//!   cleaned to PoC                           reset state, ACTLR.SMP, local invalidation,
//!   mailbox 3 of core n := entry PA, SEV     TTBR0 = trampoline, TTBR1 = kernel L1, MMU on,
//!                                            jump high, TTBR0 walks off, local TLBIALL,
//!                                            own stacks, VBAR, secondary_main(n, entry CPSR)
//! ```

use super::boot::{core_stack_tops, TTBR_WALK_ATTRS};
use super::cache;
use crate::mm::desc::{MapFlags, SectionDesc};
use crate::mm::{layout, PhysAddr, VirtAddr};
use core::sync::atomic::{AtomicU32, Ordering};

/// Cores in the cluster.
pub const CORES: usize = 4;

/// Read by the boot stub: for core n, its SVC, IRQ, ABT and UND stack tops at offset 16 * n,
/// then the trampoline TTBR0 value.
#[repr(C)]
pub struct BootParams {
    stacks: [[AtomicU32; 4]; CORES],
    trampoline_ttbr0: AtomicU32,
}

/// Offset of the trampoline TTBR0 in [`BootParams`] (an operand of the boot stub).
pub const TRAMPOLINE_TTBR0_OFFSET: u32 = 64;
const _: () = assert!(core::mem::offset_of!(BootParams, trampoline_ttbr0) == 64);
const _: () = assert!(core::mem::offset_of!(BootParams, stacks) == 0);

/// The parameters, by the name the boot stub uses.
#[no_mangle]
pub static SMP_BOOT_PARAMS: BootParams = BootParams {
    stacks: [const { [const { AtomicU32::new(0) }; 4] }; CORES],
    trampoline_ttbr0: AtomicU32::new(0),
};

/// A TTBR0 table for TTBCR.N = 1 (2048 entries, 8 KiB, 8 KiB aligned: ARM ARM B4.1.154) that
/// maps only the MiB holding `secondary_entry`, identity: see the comment at `secondary_entry`
/// in boot/start.S for why a table of its own rather than an entry in the live kernel table.
#[repr(C, align(8192))]
struct TrampolineTable([AtomicU32; layout::USER_L1_ENTRIES]);

static SMP_TRAMPOLINE_L1: TrampolineTable =
    TrampolineTable([const { AtomicU32::new(0) }; layout::USER_L1_ENTRIES]);

extern "C" {
    fn secondary_entry();
}

/// Physical address of the boot stub's `secondary_entry`: what a core's mailbox 3 receives.
pub fn entry_pa() -> PhysAddr {
    layout::virt_to_phys(VirtAddr::new(secondary_entry as *const () as u32))
        .expect("the boot stub is in the kernel image")
}

/// Fills in the parameters of cores 1-3 and the trampoline table, and cleans both to the point
/// of coherency: a core reads them with its MMU and caches off (non-cacheable), so they must
/// be in memory, not only in core 0's D-cache (ARM ARM B2.2.6). Called by core 0 before it
/// releases any core; idempotent.
pub fn prepare() {
    let entry = entry_pa();
    let slot = (entry.as_u32() >> 20) as usize;
    assert!(
        slot < layout::USER_L1_ENTRIES,
        "secondary_entry below 2 GiB"
    );
    let section = SectionDesc::new(
        PhysAddr::new(entry.as_u32() & !0xf_ffff),
        MapFlags::KERNEL_TEXT,
    );
    SMP_TRAMPOLINE_L1.0[slot].store(section.raw(), Ordering::Relaxed);
    for core in 1..CORES {
        for (word, top) in SMP_BOOT_PARAMS.stacks[core]
            .iter()
            .zip(core_stack_tops(core))
        {
            word.store(top, Ordering::Relaxed);
        }
    }
    let table = VirtAddr::new(core::ptr::addr_of!(SMP_TRAMPOLINE_L1) as u32);
    let table_pa = layout::virt_to_phys(table).expect("the table is in the image");
    SMP_BOOT_PARAMS
        .trampoline_ttbr0
        .store(table_pa.as_u32() | TTBR_WALK_ATTRS, Ordering::Relaxed);
    let params = VirtAddr::new(core::ptr::addr_of!(SMP_BOOT_PARAMS) as u32);
    cache::clean_to_poc(params, core::mem::size_of::<BootParams>() as u32);
    cache::clean_to_poc(table, core::mem::size_of::<TrampolineTable>() as u32);
}

/// Entered by the boot stub on a secondary core: SVC, its own stacks, MMU and caches on, IRQs,
/// FIQs and asynchronous aborts masked.
#[no_mangle]
extern "C" fn secondary_main_entry(core: u32, entry_cpsr: u32) -> ! {
    crate::smp::secondary_main(core as usize, entry_cpsr)
}
