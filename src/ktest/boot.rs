//! What the boot stub promises: higher half, MMU and caches on, the boot map as designed.

use super::Entry;
use crate::arch::arm::boot::mode;
use crate::arch::arm::{self, cp15};
use crate::mm::layout;

pub const ENTRIES: &[Entry] = &[
    Entry::Test("boot::runs_in_the_higher_half", runs_in_the_higher_half),
    Entry::Test(
        "boot::mmu_caches_and_prediction_are_on",
        mmu_caches_and_prediction_are_on,
    ),
    Entry::Test(
        "boot::translation_regime_is_split_at_2_gib",
        translation_regime_is_split_at_2_gib,
    ),
    Entry::Test(
        "boot::boot_map_matches_the_memory_map",
        boot_map_matches_the_memory_map,
    ),
    Entry::Test(
        "boot::faults_are_caught_by_probes",
        faults_are_caught_by_probes,
    ),
    Entry::Test(
        "boot::runs_in_svc_whatever_the_entry_mode",
        runs_in_svc_whatever_the_entry_mode,
    ),
    Entry::Test(
        "boot::mpidr_and_midr_are_the_real_ones",
        mpidr_and_midr_are_the_real_ones,
    ),
    Entry::Test(
        "boot::virtual_counter_equals_the_physical_one",
        virtual_counter_equals_the_physical_one,
    ),
    Entry::Test(
        "boot::pl0_may_only_read_the_virtual_counter",
        pl0_may_only_read_the_virtual_counter,
    ),
];

fn runs_in_the_higher_half() {
    let pc = arm::pc();
    let sp = arm::sp();
    assert!(
        pc >= layout::KERNEL_OFFSET,
        "pc {pc:#x} is not in the higher half"
    );
    assert!(
        sp >= layout::KERNEL_OFFSET,
        "sp {sp:#x} is not in the higher half"
    );
    let img = arm::boot::image_layout();
    assert!((img.text.0..img.text.1).contains(&pc));
    assert!((img.stacks.0..img.stacks.1).contains(&sp));
}

fn mmu_caches_and_prediction_are_on() {
    let sctlr = aarch32_cpu::register::Sctlr::read().raw_value();
    assert!(sctlr & 1 != 0, "MMU off");
    assert!(sctlr & (1 << 2) != 0, "D-cache off");
    assert!(sctlr & (1 << 12) != 0, "I-cache off");
    assert!(sctlr & (1 << 11) != 0, "branch prediction off");
    assert!(
        sctlr & (1 << 28) == 0 && sctlr & (1 << 29) == 0,
        "TEX remap / AFE on"
    );
    // ACTLR.SMP must be set on the board; QEMU models ACTLR as RAZ/WI, so it reads 0 there.
    let actlr = aarch32_cpu::register::Actlr::read().0;
    assert!(
        actlr == 0 || actlr & (1 << 6) != 0,
        "ACTLR.SMP clear: {actlr:#x}"
    );
}

fn translation_regime_is_split_at_2_gib() {
    assert_eq!(cp15::Ttbcr::read() & 0x7, layout::TTBCR_N);
    let ttbr1 = cp15::Ttbr1::read();
    assert_eq!(
        ttbr1 & !0x3fff,
        layout::KERNEL_L1_PHYS.as_u32(),
        "TTBR1 must hold the physical table address"
    );
    assert_eq!(
        ttbr1 & 0x7f,
        arm::boot::TTBR_WALK_ATTRS,
        "walks must be cacheable"
    );
    assert_eq!(
        aarch32_cpu::register::Dacr::read().raw_value(),
        0x5555_5555,
        "all domains client"
    );
}

fn boot_map_matches_the_memory_map() {
    // Read the live L1 table through the high map.
    let l1 = (layout::KERNEL_OFFSET + layout::KERNEL_L1_PHYS.as_u32()) as *const u32;
    let entry = |i: usize| {
        // SAFETY: the L1 table is 16 KiB at 0x8000_4000, mapped by the boot map; i < 4096.
        unsafe { l1.add(i).read_volatile() }
    };
    let img = arm::boot::image_layout();
    let mib = (img.end - layout::KERNEL_OFFSET).div_ceil(1 << 20);
    for i in 0..mib as usize {
        let high = entry(0x800 + i);
        assert_eq!(high & 0x3, 0b10, "high entry {i} is not a section");
        assert_eq!(high >> 20, i as u32, "high entry {i} maps the wrong MiB");
        // Normal, inner/outer WBWA (TEX=001 C=1 B=1), shareable, privileged RW, global.
        assert_eq!(high & 0xfffff, 0x1_140e, "high entry {i} attributes");
    }
    // Nothing else in the kernel half but the boot remap.
    for i in (0x800 + mib as usize)..4096 {
        assert_eq!(entry(i), 0, "unexpected kernel-half entry {i:#x}");
    }
    // The same bytes through both maps (the image is where the memory map says).
    let probe = img.rodata.0;
    // SAFETY: both addresses are mapped by the boot map: the high one is .rodata, the identity
    // one is the same physical page.
    let (a, b) = unsafe {
        (
            (probe as *const u32).read_volatile(),
            ((probe - layout::KERNEL_OFFSET) as *const u32).read_volatile(),
        )
    };
    assert_eq!(a, b);
}

fn faults_are_caught_by_probes() {
    // Just below the kernel half and far from the boot map: no section there.
    let status = arm::exception::try_read(0x7000_0000).expect_err("0x7000_0000 must not be mapped");
    assert_eq!(status.kind, crate::mm::fault::FaultKind::Translation);
    assert!(arm::exception::try_read(arm::boot::image_layout().rodata.0).is_ok());
}

fn runs_in_svc_whatever_the_entry_mode() {
    assert_eq!(
        arm::cpsr() & 0x1f,
        mode::SVC,
        "the boot stub must leave the kernel in SVC"
    );
}

/// Entered in HYP, PL1 reads MPIDR and MIDR from VMPIDR and VPIDR, which the board-entry test's
/// firmware stand-in leaves wrong on purpose: the boot stub must have copied the real values.
fn mpidr_and_midr_are_the_real_ones() {
    let mpidr = aarch32_cpu::register::Mpidr::read().0;
    assert_eq!(
        mpidr & 0xff,
        0,
        "the tests run on core 0, MPIDR says {mpidr:#010x}"
    );
    assert!(
        mpidr & (1 << 31) != 0,
        "MPIDR bit 31 (Multiprocessing Extensions format) clear: {mpidr:#010x}"
    );
    let midr = aarch32_cpu::register::Midr::read().raw_value();
    assert_eq!(
        midr >> 24,
        0x41,
        "MIDR implementer is not ARM: {midr:#010x}"
    );
    assert_eq!(
        (midr >> 16) & 0xf,
        0xf,
        "MIDR architecture field is not CPUID-scheme: {midr:#010x}"
    );
}

/// CNTVOFF = 0: the virtual count reads as the physical one, so a read of CNTVCT lies between
/// two reads of CNTPCT around it (exact whatever the host's delays; the ISBs keep the reads in
/// order, ARM ARM B8.1). Entered in HYP the boot stub sets CNTVOFF (the firmware stand-in leaves
/// it non-zero) and lets PL1 read CNTPCT (CNTHCTL.PL1PCTEN).
fn virtual_counter_equals_the_physical_one() {
    let phys = || {
        arm::barrier::isb();
        aarch32_cpu::register::CntPct::read().0
    };
    let before = phys();
    let virt = arm::timer::now();
    let after = phys();
    assert!(
        (before..=after).contains(&virt),
        "CNTVCT {virt:#x} is not between CNTPCT reads {before:#x} and {after:#x}: CNTVOFF is not 0"
    );
}

fn pl0_may_only_read_the_virtual_counter() {
    assert_eq!(
        aarch32_cpu::register::Cntkctl::read().raw_value(),
        arm::boot::CNTKCTL_AT_BOOT,
        "CNTKCTL: PL0 may read CNTVCT/CNTFRQ (PL0VCTEN) and nothing else"
    );
}
