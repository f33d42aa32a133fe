//! Per-process CPU state beyond the saved registers: the user thread ID registers and the
//! VFP/NEON register file (switched lazily) belong to one process each, and a process that
//! never uses the FP unit never costs a save or a load.

use super::{spawn, Entry};
use crate::arch::arm::fpu;
use crate::proc::{self, ExitStatus, KillReason, Pid};
use crate::vm;
use alloc::vec::Vec;

pub const ENTRIES: &[Entry] = &[
    Entry::Test(
        "cpu_state::cp10_cp11_are_open_and_the_unit_is_off_in_the_kernel",
        unit_set_up,
    ),
    Entry::Test(
        "cpu_state::vfp_and_neon_encodings_are_recognised",
        encodings,
    ),
    Entry::Test("cpu_state::thread_id_registers_are_per_process", thread_ids),
    Entry::Test("cpu_state::fp_registers_are_per_process", fp_registers),
    Entry::Test(
        "cpu_state::fp_unit_is_switched_only_for_processes_that_use_it",
        fp_lazy,
    ),
    Entry::Test(
        "cpu_state::undefined_vfp_space_instruction_kills_only_the_offender",
        fp_undefined,
    ),
];

/// Runs `programs` at once next to a `hello` bystander; each must exit 0, and every frame must
/// come back.
fn run_together(programs: &[(&str, u32)]) {
    let free = vm::free_frames();
    let bystander = spawn("hello", 0);
    let pids: Vec<Pid> = programs.iter().map(|&(n, a)| spawn(n, a)).collect();
    for (&(name, arg), pid) in programs.iter().zip(pids) {
        assert_eq!(proc::wait(pid), ExitStatus::Exited(0), "{name} {arg}");
    }
    assert_eq!(proc::wait(bystander), ExitStatus::Exited(0), "bystander");
    assert_eq!(vm::free_frames(), free, "frames lost");
}

fn unit_set_up() {
    assert!(
        fpu::access_granted(),
        "CPACR: cp10/cp11 full access, NEON and D16-D31 on"
    );
    assert!(
        !fpu::enabled(),
        "FPEXC.EN is clear while the kernel task runs"
    );
    assert_eq!(proc::fp_owner(), None);
}

fn encodings() {
    // (instruction, Thumb state, VFP/NEON?)
    let cases: &[(u32, bool, bool)] = &[
        (0xec8e_0b20, false, true),  // vstmia lr, {d0-d15}
        (0xeef1_1a10, false, true),  // vmrs r1, fpscr
        (0xeef7_3b00, false, true),  // vmov.f64 d19, #1.0
        (0xeef1_5be4, false, true),  // vsqrt.f64 d21, d20
        (0xf22a_a848, false, true),  // vadd.i32 q5, q5, q4
        (0xf404_a28f, false, true),  // vst1.32 {d10-d13}, [r4]
        (0xeea8_8b10, false, true),  // vdup.32 q4, r8
        (0xee20_0a10, false, true),  // mcr p10, 1, ...: VFP space (then undefined)
        (0xee1d_0f50, false, false), // mrc p15, 0, r0, c13, c0, 2 (TPIDRURW)
        (0xe7f0_00f0, false, false), // udf
        (0xef00_0000, false, false), // svc #0
        (0xfe00_0a10, false, false), // mcr2 p10: not VFP
        (0xec40_0b10, false, true),  // vmov d0, r0, r0 (MCRR, op1 = 000100)
        (0xec00_0b10, false, false), // op1 = 000000: UNDEFINED, not a VFP instruction
        (0xeca0_0b20, true, true),   // vstmia r0!, {d0-d15}
        (0xee32_1b03, true, true),   // vadd.f64 d1, d2, d3
        (0xef04_2d56, true, true),   // vmla.f32 q1, q2, q3
        (0xf900_0a0f, true, true),   // vst1 (Thumb)
        (0xee1d_0f50, true, false),  // mrc p15 (Thumb)
        (0x0000_4770, true, false),  // bx lr (16-bit)
        (0xf000_f800, true, false),  // bl
    ];
    for &(insn, thumb, fp) in cases {
        assert_eq!(
            fpu::is_fp_instruction(insn, thumb),
            fp,
            "{insn:#010x} (thumb: {thumb})"
        );
    }
    assert!(fpu::is_thumb32_first_half(0xee32));
    assert!(!fpu::is_thumb32_first_half(0x4770));
}

fn thread_ids() {
    // Each writes its own TPIDRURW and checks it (and TPIDRURO = its pid) across 200 yields
    // while the other does the same, then forks and checks the child inherits it.
    run_together(&[("tls", 1), ("tls", 2)]);
}

fn fp_registers() {
    let before = proc::fp_stats();
    // Each also forks with its registers filled; the child must start with them. Six on four
    // cores: they share cores, so the units change hands and processes move between cores
    // with their registers.
    run_together(&[
        ("fpu", 1),
        ("fpu", 2),
        ("fpu", 3),
        ("fpu", 4),
        ("fpu", 5),
        ("fpu", 6),
    ]);
    let after = proc::fp_stats();
    println!("(fp: {before:?} -> {after:?})");
    assert!(
        after.loads >= before.loads + 6,
        "each one loaded at least once"
    );
    assert!(
        after.saves > before.saves,
        "the unit changed hands with registers saved"
    );
    assert_eq!(proc::fp_owner(), None, "no owner once they have ended");
    assert!(!fpu::enabled());
}

fn fp_lazy() {
    let migrations = || proc::with_table(|t| t.cores.iter().map(|c| c.migrations).sum::<u64>());
    let (before, moved) = (proc::fp_stats(), migrations());
    // Only one process uses the unit (0x100: `fpu` does not fork): it traps at its first use,
    // and after that only when it arrives on a core whose unit does not hold its registers; on
    // the same core its registers stay in the unit while the others run there.
    run_together(&[("fpu", 0x104), ("tls", 3), ("tls", 4)]);
    let (after, moved) = (proc::fp_stats(), migrations() - moved);
    println!("(fp: {before:?} -> {after:?}, {moved} migrations) ");
    let traps = after.traps - before.traps;
    assert!(traps >= 1, "{before:?} -> {after:?}");
    assert!(
        u64::from(traps) <= 1 + moved,
        "a trap without a change of core: {before:?} -> {after:?}, {moved} migrations"
    );
    assert_eq!(after.loads - before.loads, traps, "one load per trap");
}

fn fp_undefined() {
    let free = vm::free_frames();
    let bystander = spawn("fpu", 5);
    let status = proc::wait(spawn("fault", 8));
    assert!(
        matches!(status, ExitStatus::Killed(KillReason::Undefined { .. })),
        "fault 8: {status}"
    );
    assert_eq!(proc::wait(bystander), ExitStatus::Exited(0));
    assert_eq!(vm::free_frames(), free, "frames lost");
    assert_eq!(proc::fp_owner(), None);
}
