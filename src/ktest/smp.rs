//! Cores 1-3 after bring-up: online where the boot path starts them, each in SVC with the
//! kernel's translation regime, its own stacks, its vectors and timer access as core 0 has them.
//! The registers are the cores' own: each answers a request with a snapshot (`smp::snapshot`).

use super::Entry;
use crate::arch::arm::boot::{self, image_layout, mode};
use crate::arch::arm::{self, exception, mmu, smp::CORES};
use crate::init::BootInfo;
use crate::mm::fault::FaultKind;
use crate::mm::layout;
use crate::smp::{self, CoreState};

pub const ENTRIES: &[Entry] = &[
    Entry::Step("smp::start_secondaries", start),
    Entry::Test(
        "smp::every_started_core_came_online",
        every_started_core_came_online,
    ),
    Entry::Test(
        "smp::secondaries_run_in_svc_with_the_kernel_regime",
        secondaries_run_in_svc_with_the_kernel_regime,
    ),
    Entry::Test(
        "smp::each_core_has_its_own_stacks",
        each_core_has_its_own_stacks,
    ),
    Entry::Test(
        "smp::secondary_guard_pages_are_unmapped",
        secondary_guard_pages_are_unmapped,
    ),
    Entry::Test(
        "smp::secondaries_answer_again_and_stay_idle",
        secondaries_answer_again_and_stay_idle,
    ),
];

/// How the kernel was entered on core 0: HYP only in the board run.
static BOARD: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn start(info: &BootInfo) {
    BOARD.store(
        info.args.entry_cpsr & 0x1f == mode::HYP,
        core::sync::atomic::Ordering::Relaxed,
    );
    let states = smp::start_secondaries();
    smp::print(&states);
}

fn every_started_core_came_online() {
    let board = BOARD.load(core::sync::atomic::Ordering::Relaxed);
    // The boot wait is 1 s of CNTVCT; a QEMU vCPU on a loaded host can be later than that.
    // A core that was reported silent but answers now is late, not missing.
    if smp::online().count() > 0 {
        smp::wait_online(smp::REQUEST_TIMEOUT_MS);
    }
    let mut up = 0;
    for core in 1..CORES {
        match smp::state(core) {
            CoreState::Online { mpidr, entry_mode } => {
                up += 1;
                assert_eq!(
                    mpidr & 3,
                    core as u32,
                    "core {core} reports MPIDR {mpidr:#x}"
                );
                // The board's firmware (stand-in) leaves them in non-secure HYP; QEMU starts
                // them in Secure SVC.
                let want = if board { mode::HYP } else { mode::SVC };
                assert_eq!(
                    entry_mode,
                    want,
                    "core {core} entered in {}",
                    mode::name(entry_mode)
                );
            }
            s => assert!(!board, "core {core} on the board path: {s:?}"),
        }
    }
    print!("({up} of 3) ");
    // The firmware stand-in and QEMU's -kernel start all three (tests/qemu-run.sh checks the
    // boot log of the ELF run for it). QEMU's -bios path has no boot code for them: they run
    // from address 0 through whatever RAM holds, and may or may not reach `_start`.
    assert!(!board || up == 3, "{up} of 3 cores came up");
}

fn secondaries_run_in_svc_with_the_kernel_regime() {
    let l1 = layout::KERNEL_L1_PHYS.as_u32() | boot::TTBR_WALK_ATTRS;
    for core in smp::online() {
        let s = smp::snapshot(core).unwrap_or_else(|| panic!("core {core} did not answer"));
        assert_eq!(s.mpidr & 3, core as u32);
        assert_eq!(s.cpsr & 0x1f, mode::SVC, "core {core}: CPSR {:#x}", s.cpsr);
        assert_ne!(s.cpsr & (1 << 7), 0, "core {core}: IRQs must stay masked");
        assert_ne!(s.cpsr & (1 << 6), 0, "core {core}: FIQs must stay masked");
        assert_eq!(
            s.cpsr & (1 << 8),
            0,
            "core {core}: asynchronous aborts masked"
        );
        for (bit, what) in [
            (0, "MMU"),
            (2, "D-cache"),
            (11, "branch prediction"),
            (12, "I-cache"),
            (13, "high vectors (V)"),
        ] {
            assert_ne!(s.sctlr & (1 << bit), 0, "core {core}: {what} off");
        }
        assert_eq!(
            s.sctlr & (1 << 28 | 1 << 29 | 1 << 30),
            0,
            "core {core}: TRE/AFE/TE"
        );
        assert_eq!(s.dacr, mmu::DACR_KERNEL, "core {core}: DACR {:#x}", s.dacr);
        assert_eq!(s.cntkctl, boot::CNTKCTL_AT_BOOT, "core {core}: CNTKCTL");
        assert_eq!(
            s.ttbcr,
            layout::TTBCR_N | mmu::TTBCR_PD0,
            "core {core}: TTBCR (N = 1, TTBR0 walks off)"
        );
        assert_eq!(s.ttbr1, l1, "core {core}: TTBR1");
        assert_eq!(s.ttbr0, l1, "core {core}: TTBR0");
        assert_eq!(s.contextidr, 0, "core {core}: ASID 0");
        assert_eq!(
            s.vbar,
            exception::vector_table().as_ptr() as u32,
            "core {core}: VBAR"
        );
        // cp10/cp11 opened as on core 0.
        assert_eq!(
            s.cpacr & (0xf << 20),
            aarch32_cpu::register::Cpacr::read().0 & (0xf << 20),
            "core {core}: CPACR"
        );
    }
}

fn each_core_has_its_own_stacks() {
    let img = image_layout();
    let mut seen = [0u32; CORES];
    seen[0] = arm::sp();
    for core in smp::online() {
        let s = smp::snapshot(core).expect("online core answers");
        let [svc, irq, abt, und] = boot::core_stack_tops(core);
        let bottom = svc - boot::SVC_STACK_SIZE;
        assert!(
            (bottom..svc).contains(&s.sp),
            "core {core}: SP {:#x} outside its SVC stack {bottom:#x}..{svc:#x}",
            s.sp
        );
        assert!((img.core_stacks.0..img.core_stacks.1).contains(&s.sp));
        assert_eq!(
            (s.sp_irq, s.sp_abt, s.sp_und),
            (irq, abt, und),
            "core {core}"
        );
        assert!(
            img.is_stack_guard(bottom - 4),
            "core {core}: no guard below its stack"
        );
        seen[core] = s.sp;
    }
    for a in 0..CORES {
        for b in a + 1..CORES {
            if seen[a] != 0 && seen[b] != 0 {
                assert!(
                    seen[a].abs_diff(seen[b]) >= boot::SVC_STACK_SIZE,
                    "cores {a} and {b} share a stack"
                );
            }
        }
    }
}

fn secondary_guard_pages_are_unmapped() {
    for core in 1..CORES {
        let guard = boot::core_stack_tops(core)[0] - boot::SVC_STACK_SIZE - crate::mm::PAGE_SIZE;
        let st = exception::try_read(guard).expect_err("a guard page must fault");
        assert_eq!(
            st.kind,
            FaultKind::Translation,
            "core {core}: guard page {guard:#x}"
        );
        assert!(exception::try_read(guard + crate::mm::PAGE_SIZE).is_ok());
    }
}

fn secondaries_answer_again_and_stay_idle() {
    for core in smp::online() {
        for _ in 0..3 {
            let s = smp::snapshot(core).expect("online core answers each request");
            assert_eq!(s.mpidr & 3, core as u32);
        }
    }
}
