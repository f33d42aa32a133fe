//! VFP and Advanced SIMD registers are per process. Run several copies with different
//! arguments at once: each must find all 32 D registers zero and FPSCR at its default at its
//! first use (from Thumb code, so the kernel's Thumb decoding is exercised too), keep all 32 D
//! registers and FPSCR (filled with values derived from its argument) over many yields, and
//! compute right (double-precision VFP and NEON integer and single-precision vector work,
//! yielding as it goes). Last, a child forked with its registers filled must find them in its
//! own unit state, and the parent must keep its own (skipped when `arg` has bit 8, [`NO_FORK`],
//! set: then this is the only process of the program and uses the unit from one process only).
//!
//! The user programs are built for `armv7a-none-eabi` (soft-float: the compiler emits no VFP
//! instruction), so the floating-point work is written in assembly.
//!
//! Exit codes: 0 all right; 1 the registers were not clean at the first use; 2 FPSCR did not
//! take the value written; 3 a D register changed across yields; 4 FPSCR changed across yields;
//! 5 the double-precision sum is wrong; 6 a square root was wrong; 7 the NEON integer lanes
//! are wrong; 8 the NEON single-precision lanes are wrong; 9 the forked child did not start with
//! the parent's D registers and FPSCR; 10 fork or wait failed; 11 the parent's registers changed
//! across the fork.
#![no_std]
#![no_main]

use core::arch::asm;
use ulib::{exit, getpid, nr, println, wait, WaitStatus};

ulib::entry!(main);

/// Yields while the registers must hold, per round.
const HOLD_YIELDS: u32 = 40;
/// Iterations of the arithmetic loop per round (it yields every 16).
const WORK_STEPS: u32 = 400;
const ROUNDS: u32 = 3;

/// In `arg`: do not fork at the end.
const NO_FORK: u32 = 0x100;

/// FPSCR bits the test sets and checks: N Z C V QC, DN FZ RMode, IDC, IXC UFC OFC DZC IOC.
const FPSCR_CHECKED: u32 = 0xfbc0_009f;

/// All 32 D registers and FPSCR at this point, read by Thumb code. Being the program's first
/// VFP instruction, it traps, and the kernel gives the program a fresh register file.
#[instruction_set(arm::t32)]
#[inline(never)]
fn first_look(d: &mut [u64; 32]) -> u32 {
    let fpscr: u32;
    // SAFETY: stores the 32 D registers into `d` (256 bytes) and reads FPSCR; nothing else.
    unsafe {
        asm!(
            ".fpu neon-vfpv4",
            "vstmia {p}!, {{d0-d15}}",
            "vstmia {p}, {{d16-d31}}",
            "vmrs {s}, fpscr",
            p = inout(reg) d.as_mut_ptr() => _,
            s = out(reg) fpscr,
            options(nostack),
        )
    };
    fpscr
}

/// Loads `src` into D0-D31 and `fpscr` into FPSCR, yields `yields` times without touching
/// them, stores D0-D31 into `out`. Returns FPSCR as read right after the write and at the end.
fn hold(src: &[u64; 32], fpscr: u32, out: &mut [u64; 32], yields: u32) -> (u32, u32) {
    let before: u32;
    let after: u32;
    // SAFETY: reads `src` and writes `out` (256 bytes each); `svc #0` with r7 = YIELD changes
    // only r0-r3, r12 and the flags, declared below. The D registers and FPSCR are not used by
    // the (soft-float) compiled code around it.
    unsafe {
        asm!(
            ".fpu neon-vfpv4",
            "vldmia {s}, {{d0-d15}}",
            "add {t}, {s}, #128",
            "vldmia {t}, {{d16-d31}}",
            "vmsr fpscr, {f}",
            "vmrs {f}, fpscr",
            "2:",
            "svc #0",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vstmia {o}, {{d0-d15}}",
            "add {t}, {o}, #128",
            "vstmia {t}, {{d16-d31}}",
            "vmrs {t}, fpscr",
            s = in(reg) src.as_ptr(),
            o = in(reg) out.as_mut_ptr(),
            t = out(reg) after,
            f = inout(reg) fpscr => before,
            n = inout(reg) yields.max(1) => _,
            in("r7") nr::YIELD,
            out("r0") _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            out("r12") _,
            options(nostack),
        )
    };
    (before, after)
}

/// Loads `src` into D0-D31 and `fpscr` into FPSCR, forks (the registers live across the
/// `svc`), then, in parent and child alike, stores D0-D31 into `out`. Returns the raw result of
/// `fork` and FPSCR as read after it.
fn fork_holding(src: &[u64; 32], fpscr: u32, out: &mut [u64; 32]) -> (i32, u32) {
    let r: i32;
    let after: u32;
    // SAFETY: reads `src` and writes `out` (256 bytes each) in both processes (the child has a
    // copy-on-write copy of this stack); `svc #0` with r7 = FORK changes only r0-r3, r12 and the
    // flags, declared below.
    unsafe {
        asm!(
            ".fpu neon-vfpv4",
            "vldmia {s}, {{d0-d15}}",
            "add {t}, {s}, #128",
            "vldmia {t}, {{d16-d31}}",
            "vmsr fpscr, {f}",
            "svc #0",
            "vstmia {o}, {{d0-d15}}",
            "add {t}, {o}, #128",
            "vstmia {t}, {{d16-d31}}",
            "vmrs {t}, fpscr",
            s = in(reg) src.as_ptr(),
            o = in(reg) out.as_mut_ptr(),
            t = out(reg) after,
            f = in(reg) fpscr,
            in("r7") nr::FORK,
            out("r0") r,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            out("r12") _,
            options(nostack),
        )
    };
    (r, after)
}

/// Forks with the registers filled: the child must start with them, the parent keep them.
fn check_fork(arg: u32, pid: u32) -> i32 {
    let src = pattern(arg, ROUNDS);
    let want = fpscr_for(arg, ROUNDS);
    let mut out = [0u64; 32];
    let (r, fpscr) = fork_holding(&src, want, &mut out);
    let same = out == src && fpscr & FPSCR_CHECKED == want;
    if r == 0 {
        exit(if same { 0 } else { 9 });
    }
    if r < 0 {
        return 10;
    }
    if !same {
        println!("[pid {pid}] fpu: FAIL: registers changed across fork");
        return 11;
    }
    match wait(r as u32) {
        Ok(WaitStatus::Exited(0)) => 0,
        Ok(WaitStatus::Exited(9)) => {
            println!("[pid {pid}] fpu: FAIL: the child did not get the parent's registers");
            9
        }
        _ => 10,
    }
}

/// What [`work`] computed.
struct Work {
    /// The double-precision sum of `i * arg` for i in 1..=steps.
    sum: u64,
    /// How many square roots of `i * i` were not `i`.
    bad_roots: u32,
    /// Four NEON lanes, each the sum of `arg` `steps` times.
    ints: [u32; 4],
    /// Four NEON single-precision lanes, each the sum of `0.5 * 0.5` `steps` times.
    floats: [u32; 4],
}

/// Arithmetic on the FP unit, `steps` iterations, yielding every 16.
fn work(arg: u32, steps: u32) -> Work {
    let mut lanes = [0u32; 8];
    let (lo, hi): (u32, u32);
    let bad: u32;
    // SAFETY: uses only the FP registers, the listed core registers and `lanes` (32 bytes);
    // `svc #0` with r7 = YIELD changes only r0-r3, r12 and the flags, declared below.
    unsafe {
        asm!(
            ".fpu neon-vfpv4",
            "vmov s0, {a}",
            "vcvt.f64.u32 d17, s0",       // d17 = arg
            "vmov.f64 d19, #1.0",         // d19 = 1.0
            "vmov.f64 d18, d19",          // d18 = i = 1.0
            "vmov.i32 d16, #0",           // d16 = sum = +0.0
            "vdup.32 q4, {a}",            // q4 = arg in each lane
            "vmov.i32 q5, #0",            // q5 = integer lane sums
            "vmov.i32 q6, #0",            // q6 = float lane sums (+0.0)
            "vmov.f32 q7, #0.5",          // q7 = 0.5 in each lane
            "mov {k}, #0",
            "2:",
            "vmla.f64 d16, d18, d17",     // sum += i * arg
            "vmul.f64 d20, d18, d18",
            "vsqrt.f64 d21, d20",         // sqrt(i * i) == i
            "vcmp.f64 d21, d18",
            "vmrs APSR_nzcv, fpscr",
            "addne {k}, {k}, #1",
            "vadd.i32 q5, q5, q4",
            "vmla.f32 q6, q7, q7",        // += 0.25
            "vadd.f64 d18, d18, d19",
            "tst {n}, #15",
            "bne 3f",
            "svc #0",
            "3:",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vst1.32 {{d10-d13}}, [{p}]",
            "vmov r0, r1, d16",
            a = in(reg) arg,
            n = inout(reg) steps.max(1) => _,
            k = out(reg) bad,
            p = in(reg) lanes.as_mut_ptr(),
            in("r7") nr::YIELD,
            lateout("r0") lo,
            lateout("r1") hi,
            out("r2") _,
            out("r3") _,
            out("r12") _,
            options(nostack),
        )
    };
    Work {
        sum: u64::from(hi) << 32 | u64::from(lo),
        bad_roots: bad,
        ints: [lanes[0], lanes[1], lanes[2], lanes[3]],
        floats: [lanes[4], lanes[5], lanes[6], lanes[7]],
    }
}

/// The D register values of this program: distinct per argument, per register and per round.
fn pattern(arg: u32, round: u32) -> [u64; 32] {
    let mut d = [0u64; 32];
    for (i, v) in d.iter_mut().enumerate() {
        let i = i as u64;
        *v = u64::from(arg) << 56
            | u64::from(round) << 48
            | i << 40
            | (0x00c3_a55a_0f1e ^ (i * 0x0101_0101_0101)) & 0xff_ffff_ffff;
    }
    d
}

/// The FPSCR value of this program in a round: flags, rounding mode, flush-to-zero, default NaN
/// and the cumulative exception bits all depend on the argument.
fn fpscr_for(arg: u32, round: u32) -> u32 {
    let x = arg.wrapping_mul(7).wrapping_add(round);
    ((x & 0xf) << 28 | (x & 1) << 27 | (x & 0xf) << 22 | (x & 2) << 6 | (x.rotate_right(3) & 0x1f))
        & FPSCR_CHECKED
}

fn main(arg: u32) -> i32 {
    let pid = getpid();
    let mut d = [u64::MAX; 32];
    let fpscr = first_look(&mut d);
    if d != [0; 32] || fpscr != 0 {
        println!("[pid {pid}] fpu: FAIL: first use saw FPSCR {fpscr:#x}, D {d:x?}");
        return 1;
    }
    for round in 0..ROUNDS {
        let src = pattern(arg, round);
        let want = fpscr_for(arg, round);
        let mut out = [0u64; 32];
        let (before, after) = hold(&src, want, &mut out, HOLD_YIELDS);
        if before & FPSCR_CHECKED != want {
            println!("[pid {pid}] fpu: FAIL: FPSCR {before:#x} after writing {want:#x}");
            return 2;
        }
        if let Some(i) = (0..32).find(|&i| out[i] != src[i]) {
            println!(
                "[pid {pid}] fpu: FAIL: d{i} = {:#x} after yields, was {:#x}",
                out[i], src[i]
            );
            return 3;
        }
        if after != before {
            println!("[pid {pid}] fpu: FAIL: FPSCR {after:#x} after yields, was {before:#x}");
            return 4;
        }
        // Default FPSCR for the arithmetic: round to nearest, no flush-to-zero.
        let mut scratch = [0u64; 32];
        hold(&[0; 32], 0, &mut scratch, 1);
        let steps = WORK_STEPS + arg;
        let w = work(arg, steps);
        let n = u64::from(steps);
        let sum = (u64::from(arg) * n * (n + 1) / 2) as f64;
        if w.sum != sum.to_bits() {
            println!(
                "[pid {pid}] fpu: FAIL: sum {:#x}, want {:#x}",
                w.sum,
                sum.to_bits()
            );
            return 5;
        }
        if w.bad_roots != 0 {
            println!("[pid {pid}] fpu: FAIL: {} square roots wrong", w.bad_roots);
            return 6;
        }
        if w.ints != [arg * steps; 4] {
            println!("[pid {pid}] fpu: FAIL: integer lanes {:?}", w.ints);
            return 7;
        }
        let quarter_sum = (steps as f32 * 0.25).to_bits();
        if w.floats != [quarter_sum; 4] {
            println!("[pid {pid}] fpu: FAIL: float lanes {:x?}", w.floats);
            return 8;
        }
    }
    let forked = arg & NO_FORK == 0;
    if forked {
        let code = check_fork(arg, pid);
        if code != 0 {
            return code;
        }
    }
    println!(
        "[pid {pid}] fpu {arg}: registers and results right over {ROUNDS} rounds{}",
        if forked { " and a fork" } else { "" }
    );
    0
}
