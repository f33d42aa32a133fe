//! Driving the MMU: the CP15 implementation of the `mm` TLB trait, TTBR0/ASID switching, and the
//! one operation the portable code cannot do, replacing live L1 entries that map the code doing
//! the replacing.

use super::barrier::{dsb, isb};
use super::boot::TTBR_WALK_ATTRS;
use super::cp15::{Contextidr, Dacr, IdMmfr3, Ttbcr, Ttbr0};
use super::{cache, tlb};
use crate::mm::desc::{KERNEL_DOMAIN, USER_DOMAIN};
use crate::mm::layout;
use crate::mm::tlb::{Asid, Tlb, TlbTag};
use crate::mm::{PhysAddr, VirtAddr};
use core::sync::atomic::{AtomicBool, Ordering};

/// TTBCR.PD0: no table walks through TTBR0 (an access below 2 GiB faults without a walk).
pub const TTBCR_PD0: u32 = 1 << 4;

static COHERENT_WALKS: AtomicBool = AtomicBool::new(false);

/// Reads ID_MMFR3.CohWalk once: 1 means table walks snoop the L1 D-cache (Cortex-A7 does), so
/// publishing a descriptor needs only a DSB; 0 means each written line must be cleaned to PoC.
pub fn probe_walk_coherency() -> bool {
    let coherent = (IdMmfr3::read() >> 20) & 0xf == 1;
    COHERENT_WALKS.store(coherent, Ordering::Relaxed);
    coherent
}

/// TLB maintenance with CP15 (inner-shareable forms). Zero-sized: every call inlines.
///
/// Every invalidation is broadcast to the inner-shareable domain, which every core joined by
/// setting ACTLR.SMP before its MMU came on (boot stub), and `sync`'s DSB waits until each core
/// has done it. The address-space code needs no record of which core cached what: a user entry
/// may sit on any core that ran the space since its ASID was assigned, a kernel entry on any
/// core at all (`mm::vas` says so at each use). The only local TLB operations are the rollover's
/// per-core flush (`vm::enter_user`) and the boot stub's, each done by a core on itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuTlb;

impl Tlb for CpuTlb {
    #[inline]
    fn publish(&mut self, first: PhysAddr, bytes: u32) {
        if !COHERENT_WALKS.load(Ordering::Relaxed) {
            if let Some(va) = layout::phys_to_virt(first) {
                // Ends with a DSB.
                cache::clean_to_poc(va, bytes);
                return;
            }
        }
        // ARM ARM B3.10.1: the DSB makes the descriptor store visible to the walker before
        // any following TLB maintenance or access that may walk.
        dsb();
    }

    /// TLBIMVAAIS for a global (kernel) entry, which any core may hold; TLBIMVAIS for a user
    /// entry, which any core that ran the space may hold.
    #[inline]
    fn invalidate_page(&mut self, va: VirtAddr, tag: TlbTag) {
        match tag {
            TlbTag::Global => tlb::invalidate_page_all_asids(va),
            TlbTag::Asid(a) => tlb::invalidate_page(va, a.get()),
        }
    }

    /// TLBIASIDIS: every core that ran the space under this ASID.
    #[inline]
    fn invalidate_asid(&mut self, asid: Asid) {
        tlb::invalidate_asid(asid.get());
    }

    /// TLBIALLIS: kernel entries cleared from the shared TTBR1 half, on every core.
    #[inline]
    fn invalidate_all(&mut self) {
        tlb::invalidate_all();
    }

    /// BPIALLIS (branch targets are virtual: every core), DSB (waits for the broadcast
    /// invalidations to complete on every core), ISB.
    #[inline]
    fn sync(&mut self) {
        tlb::complete();
    }
}

/// DACR while the kernel runs: the kernel domain is a client (AP bits checked), the user domain
/// has no access, so that an ordinary kernel load or store to user memory takes a domain fault
/// (ARM ARM B3.12.3). Only the user-memory copy routines open the user domain, and every
/// exception taken from User mode closes it (a software PAN: `exception.rs`, `proc/uaccess.rs`).
pub const DACR_KERNEL: u32 = DACR_CLIENT << (2 * KERNEL_DOMAIN);
/// DACR while a process runs, and inside the copy routines: both domains clients.
pub const DACR_USER: u32 = DACR_KERNEL | DACR_CLIENT << (2 * USER_DOMAIN);
const DACR_CLIENT: u32 = 0b01;

/// Sets DACR to `value` and synchronizes (a CP15 write takes effect for later instructions
/// only after a context synchronization event, ARM ARM B3.15.4 / B5.1).
pub fn set_dacr(value: u32) {
    // The write is `nomem` to the compiler: keep the memory accesses before it before it.
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    // SAFETY: only the kernel and user domains are used; the caller picks one of the two values
    // above, both of which keep the kernel domain a client.
    unsafe { Dacr::write(value) };
    isb();
}

/// The current DACR.
pub fn dacr() -> u32 {
    Dacr::read()
}

/// Runs `f` with the user domain open (DACR_USER), as the copy routines do; for tests that
/// must reach user memory from the kernel on purpose.
pub fn with_user_access<R>(f: impl FnOnce() -> R) -> R {
    set_dacr(DACR_USER);
    let r = f();
    set_dacr(DACR_KERNEL);
    r
}

/// Points TTBR0 at a user table and makes `asid` current, by the sequence of ARM ARM B3.10.4
/// ("Synchronization of changes of ASID and TTBR"): TTBR0 walks off (TTBCR.PD0 = 1), the
/// reserved ASID 0, the new TTBR0, the new ASID, walks on again, with an ISB after each step. So
/// no walk or fetch can combine the new table with the old ASID or the old table with the new
/// one, and, with walks off while ASID 0 is current, no user entry is ever cached under ASID 0
/// (nothing would invalidate it: the kernel runs with ASID 0 and TTBR0 off between processes,
/// and a TLB hit is used even when walks are off).
pub fn switch_user(l1: PhysAddr, asid: Asid) {
    // SAFETY: TTBCR/CONTEXTIDR/TTBR0 writes follow the ARM ARM sequence above; `l1` is an 8 KiB
    // aligned user table with only non-global, PXN entries, so the kernel half is untouched.
    unsafe {
        Ttbcr::write(layout::TTBCR_N | TTBCR_PD0);
        isb();
        Contextidr::write(0);
        isb();
        Ttbr0::write(l1.as_u32() | TTBR_WALK_ATTRS);
        isb();
        Contextidr::write(u32::from(asid.get()));
        isb();
        Ttbcr::write(layout::TTBCR_N);
    }
    isb();
}

/// Leaves no user space current: TTBR0 walks off (TTBCR.PD0 = 1) and the reserved ASID 0.
pub fn switch_kernel_only() {
    // SAFETY: disabling TTBR0 walks and selecting ASID 0 only removes user translations; TLB
    // entries of the old ASID stay tagged with it and cannot match ASID 0.
    unsafe {
        Ttbcr::write(layout::TTBCR_N | TTBCR_PD0);
        isb();
        Contextidr::write(0);
    }
    isb();
}

/// The current ASID (CONTEXTIDR\[7:0\]).
pub fn current_asid() -> u8 {
    (Contextidr::read() & 0xff) as u8
}

/// Translates `va` as a privileged read would (ATS1CPR), or `None` if that faults.
pub fn translate_privileged_read(va: VirtAddr) -> Option<PhysAddr> {
    // SAFETY: ATS1CPR only asks the MMU and writes the result to PAR; the ISB makes PAR valid.
    unsafe { super::cp15::Ats1Cpr::write(va.as_u32()) };
    isb();
    let par = super::cp15::Par::read();
    if par & 1 != 0 {
        None
    } else if par & (1 << 1) != 0 {
        // Supersection result.
        Some(PhysAddr::new(
            (par & 0xff00_0000) | (va.as_u32() & 0x00ff_ffff),
        ))
    } else {
        Some(PhysAddr::new((par & !0xfff) | va.page_offset()))
    }
}

core::arch::global_asm!(
    r#"
    .text
    .arm
    .balign 4
    // mmu_bbm_replace_l1(entries_pa, values_pa, count): replaces `count` consecutive live L1
    // entries at physical `entries_pa` with the words at physical `values_pa`, break-before-make
    // (ARM ARM B3.10.1): all to fault, DSB, invalidate TLBs and walk caches, DSB, ISB; then the
    // new values, DSB, invalidate again, DSB, ISB.
    //
    // It must run from the identity map (it is called at its physical address) when the entries
    // map the kernel's own code: between the two halves nothing at those addresses translates.
    // So it touches no stack and no high address, and interrupts must be masked.
    .globl mmu_bbm_replace_l1
mmu_bbm_replace_l1:
    mov     r3, #0
    mov     r12, #0
1:  str     r3, [r0, r12, lsl #2]
    add     r12, r12, #1
    cmp     r12, r2
    blo     1b
    dsb
    mcr     p15, 0, r3, c8, c3, 0       // TLBIALLIS (global entries: any core; at boot only
    mcr     p15, 0, r3, c7, c1, 6       // BPIALLIS   core 0 runs, and then it costs the same)
    dsb
    isb
    mov     r12, #0
2:  ldr     r3, [r1, r12, lsl #2]
    str     r3, [r0, r12, lsl #2]
    add     r12, r12, #1
    cmp     r12, r2
    blo     2b
    dsb
    mov     r3, #0
    mcr     p15, 0, r3, c8, c3, 0       // TLBIALLIS
    mcr     p15, 0, r3, c7, c1, 6       // BPIALLIS
    dsb
    isb
    bx      lr
"#
);

extern "C" {
    fn mmu_bbm_replace_l1(entries_pa: u32, values_pa: u32, count: u32);
}

/// Replaces the live L1 entries `first_slot..first_slot + values.len()` of the kernel table
/// break-before-make, running the replacement from the identity map so that it may change the
/// mapping of the kernel itself.
///
/// # Safety
/// The identity map of the kernel image must still be present (TTBR0 = the boot table), IRQs
/// and FIQs masked, and the new entries must map the kernel image and stack exactly as before
/// (same physical addresses), only with finer granularity or other permissions.
pub unsafe fn replace_kernel_l1_entries(first_slot: usize, values: &[u32]) {
    let entries_pa = layout::KERNEL_L1_PHYS.as_u32() + 4 * first_slot as u32;
    let values_pa = layout::virt_to_phys(VirtAddr::new(values.as_ptr() as u32))
        .expect("values live in the kernel image or on its stack");
    let code_pa = layout::virt_to_phys(VirtAddr::new(mmu_bbm_replace_l1 as *const () as u32))
        .expect("the kernel text is in the direct map");
    // SAFETY: the routine is position independent and is entered at its physical address, which
    // the identity map translates; it only uses registers and the two physical buffers (both in
    // the identity-mapped image). The caller guarantees the rest (see above).
    unsafe {
        let at_pa: extern "C" fn(u32, u32, u32) = core::mem::transmute(code_pa.as_usize());
        at_pa(entries_pa, values_pa.as_u32(), values.len() as u32);
    }
}
