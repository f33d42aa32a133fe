//! The VFP/Advanced SIMD unit (VFPv4-D32 and NEON on the Cortex-A7) and the user thread ID
//! registers: access control, the enable bit, saving and loading the register file, and which
//! instruction encodings belong to the unit.
//!
//! The kernel itself is soft-float (`armv7a-none-eabi`): the compiler never emits a VFP or NEON
//! instruction for it, and the kernel must never touch D0-D31 or FPSCR except through
//! [`save`] and [`load`] below, which move a process's registers between the unit and its
//! process record. The unit is enabled (FPEXC.EN) only while the process whose registers it holds
//! runs; anyone else's first VFP/NEON instruction traps as an Undefined Instruction.
//!
//! Each core has its own unit and FPEXC: the enable bit (and its mirror here) is per core, and
//! so is the owner the process layer keeps.

use aarch32_cpu::register::{Cpacr, Tpidruro, Tpidrurw};

/// CPACR.cp10 and CPACR.cp11 (bits 23:20): full access from PL0 and PL1 (ARM ARM B4.1.40).
const CPACR_CP10_CP11_FULL: u32 = 0xf << 20;
/// CPACR.ASEDIS: Advanced SIMD disabled. Left clear: NEON is usable.
const CPACR_ASEDIS: u32 = 1 << 31;
/// CPACR.D32DIS: D16-D31 disabled. Left clear: all 32 D registers are usable.
const CPACR_D32DIS: u32 = 1 << 30;

/// FPEXC.EN: the unit executes VFP/NEON instructions (when clear, every one except the
/// privileged VMRS/VMSR of FPEXC/FPSID/MVFR is UNDEFINED).
const FPEXC_EN: u32 = 1 << 30;

/// FPSCR of a process that has never used the unit: round to nearest, no flush-to-zero, no
/// default NaN, no cumulative flags (the IEEE 754 defaults; also what Linux starts with).
pub const FPSCR_INITIAL: u32 = 0;

/// The register file of the unit: D0-D31 and FPSCR.
#[repr(C, align(8))]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FpRegs {
    /// D0-D31 (Q0-Q15 are pairs of them, S0-S31 halves of D0-D15).
    pub d: [u64; 32],
    /// FPSCR.
    pub fpscr: u32,
}

impl FpRegs {
    /// The state of a first use: every register zero, FPSCR at its default.
    pub const INITIAL: Self = Self {
        d: [0; 32],
        fpscr: FPSCR_INITIAL,
    };
}

/// Grants PL0 and PL1 access to cp10/cp11 (VFP and Advanced SIMD, D16-D31 included) and turns
/// the unit off (FPEXC.EN = 0), so that the first VFP/NEON instruction of any process traps.
/// Called once at boot, on each core that will run processes.
pub fn init() -> bool {
    let granted = init_this_core();
    AVAILABLE.store(granted, core::sync::atomic::Ordering::Relaxed);
    granted
}

/// The per-core half of [`init`] (each secondary core runs it): CPACR as [`init`] sets it and
/// FPEXC.EN cleared, with this core's [`set_enabled`] mirror. Returns whether access is granted.
pub fn init_this_core() -> bool {
    let cpacr = (Cpacr::read().0 | CPACR_CP10_CP11_FULL) & !(CPACR_ASEDIS | CPACR_D32DIS);
    // SAFETY: CPACR only controls access to the coprocessors; the ISB makes the new access
    // rights visible to the FPEXC write below (ARM ARM B4.1.40: a CPACR change is guaranteed
    // to be visible only after a context synchronization operation).
    unsafe { Cpacr::write(Cpacr(cpacr)) };
    aarch32_cpu::asm::isb();
    // In Non-secure state the cp10/cp11 fields are RAZ/WI unless the secure firmware granted
    // them in NSACR: then even FPEXC is out of reach (UNDEFINED), and so is the unit.
    let granted = access_granted();
    if granted {
        write_fpexc(0);
    }
    ENABLED[super::core_id() as usize].store(false, core::sync::atomic::Ordering::Relaxed);
    granted
}

static AVAILABLE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// FPEXC.EN of each core as last written by [`set_enabled`] on that core (the unit starts off:
/// [`init_this_core`] writes it so). Each core reads and writes only its own entry.
static ENABLED: [core::sync::atomic::AtomicBool; super::smp::CORES] =
    [const { core::sync::atomic::AtomicBool::new(true) }; super::smp::CORES];

/// Whether [`init`] found the unit usable (its access granted). When it is not, user programs
/// get no FP unit: their VFP/NEON instructions are undefined instructions.
pub fn available() -> bool {
    AVAILABLE.load(core::sync::atomic::Ordering::Relaxed)
}

/// Whether cp10/cp11 access is granted as [`init`] sets it.
pub fn access_granted() -> bool {
    let c = Cpacr::read().0;
    c & CPACR_CP10_CP11_FULL == CPACR_CP10_CP11_FULL && c & (CPACR_ASEDIS | CPACR_D32DIS) == 0
}

/// FPEXC.
pub fn fpexc() -> u32 {
    let v: u32;
    // SAFETY: reading FPEXC at PL1 has no side effects; cp10 access is granted by `init`.
    unsafe {
        core::arch::asm!(
            ".fpu neon-vfpv4",
            "vmrs {v}, fpexc",
            v = out(reg) v,
            options(nomem, nostack, preserves_flags)
        )
    };
    v
}

/// FPSID: the unit's implementer, architecture and part number.
pub fn fpsid() -> u32 {
    let v: u32;
    // SAFETY: reading FPSID at PL1 has no side effects; cp10 access is granted by `init`.
    unsafe {
        core::arch::asm!(
            ".fpu neon-vfpv4",
            "vmrs {v}, fpsid",
            v = out(reg) v,
            options(nomem, nostack, preserves_flags)
        )
    };
    v
}

/// Whether FPEXC.EN is set.
pub fn enabled() -> bool {
    fpexc() & FPEXC_EN != 0
}

/// Sets or clears FPEXC.EN (and clears FPEXC.EX and the other state bits, which the Cortex-A7
/// never sets: it has no trapped floating-point exceptions).
pub fn set_enabled(on: bool) {
    // The switch calls this every time: FPEXC (and its ISB) is written only on a change, as
    // this core's mirror tells.
    if !available()
        || ENABLED[super::core_id() as usize].swap(on, core::sync::atomic::Ordering::Relaxed) == on
    {
        return;
    }
    let v = if on { FPEXC_EN } else { 0 };
    // SAFETY: FPEXC only enables the unit for the instructions that follow; the ISB makes the
    // change visible to them. The kernel itself never executes a VFP/NEON instruction other
    // than in `save`/`load`, which callers run with the unit enabled.
    unsafe {
        core::arch::asm!(
            ".fpu neon-vfpv4",
            "vmsr fpexc, {v}",
            "isb",
            v = in(reg) v,
            options(nomem, nostack, preserves_flags)
        )
    };
}

/// Writes FPEXC (cp10 access must be granted) and synchronizes.
fn write_fpexc(v: u32) {
    // SAFETY: as in `set_enabled`: FPEXC only enables or disables the unit for the instructions
    // that follow, the ISB makes the change visible to them; access was checked by the caller.
    unsafe {
        core::arch::asm!(
            ".fpu neon-vfpv4",
            "vmsr fpexc, {v}",
            "isb",
            v = in(reg) v,
            options(nomem, nostack, preserves_flags)
        )
    };
}

/// Copies D0-D31 and FPSCR from the unit into `regs`.
///
/// # Safety
/// FPEXC.EN must be set (otherwise this traps in the kernel), and the unit must hold the
/// registers of the process `regs` belongs to.
pub unsafe fn save(regs: &mut FpRegs) {
    let p = regs.d.as_mut_ptr();
    let fpscr: u32;
    // SAFETY: `p` points to 32 writable, 8-byte aligned doublewords; the caller enabled the
    // unit. Only `regs` is written.
    unsafe {
        core::arch::asm!(
            ".fpu neon-vfpv4",
            "vstmia {p}!, {{d0-d15}}",
            "vstmia {p}, {{d16-d31}}",
            "vmrs {s}, fpscr",
            p = inout(reg) p => _,
            s = out(reg) fpscr,
            options(nostack, preserves_flags)
        )
    };
    regs.fpscr = fpscr;
}

/// Loads D0-D31 and FPSCR from `regs` into the unit.
///
/// # Safety
/// FPEXC.EN must be set, and whatever the unit held must already be saved (or belong to a
/// process that no longer exists): it is overwritten.
pub unsafe fn load(regs: &FpRegs) {
    let p = regs.d.as_ptr();
    // SAFETY: `p` points to 32 readable, 8-byte aligned doublewords; the caller enabled the
    // unit and saved what it held. Only the FP registers change, which the soft-float kernel
    // does not use.
    unsafe {
        core::arch::asm!(
            ".fpu neon-vfpv4",
            "vldmia {p}!, {{d0-d15}}",
            "vldmia {p}, {{d16-d31}}",
            "vmsr fpscr, {s}",
            p = inout(reg) p => _,
            s = in(reg) regs.fpscr,
            options(nostack, preserves_flags, readonly)
        )
    };
}

/// Whether `insn` (an ARM instruction, or a 32-bit Thumb instruction as first halfword << 16 |
/// second halfword) is a VFP or Advanced SIMD instruction, i.e. one that traps while the unit is
/// off. The encodings (ARM ARM A5.6, A5.7.1, A6.3.18, A7.1 and A7.7):
///
/// | state | class | encoding |
/// |---|---|---|
/// | ARM | Advanced SIMD data processing | `1111 001x xxxx ...` |
/// | ARM | Advanced SIMD element/structure load/store | `1111 0100 xxx0 ...` |
/// | ARM | VFP (coprocessor 10/11: LDC/STC, MCRR/MRRC, CDP, MCR/MRC) | cond != `1111`, bits 27:26 = `11`, not SVC (bits 27:24 = `1111`), not the UNDEFINED op1 (bits 25:20) = `00000x`, bits 11:9 = `101` |
/// | Thumb | Advanced SIMD data processing | `111x 1111 ...` |
/// | Thumb | Advanced SIMD element/structure load/store | `1111 1001 xxx0 ...` |
/// | Thumb | VFP (coprocessor 10/11) | `1110 11xx ...` (op1 not `00000x`), bits 11:9 of the second halfword = `101` |
pub fn is_fp_instruction(insn: u32, thumb: bool) -> bool {
    let coproc_10_11 = insn & 0x0000_0e00 == 0x0000_0a00;
    if thumb {
        let simd_dp = insn & 0xef00_0000 == 0xef00_0000;
        let simd_ls = insn & 0xff10_0000 == 0xf900_0000;
        let vfp = insn & 0xfc00_0000 == 0xec00_0000 && insn & 0x03e0_0000 != 0 && coproc_10_11;
        simd_dp || simd_ls || vfp
    } else {
        let cond = insn >> 28;
        let simd_dp = insn & 0xfe00_0000 == 0xf200_0000;
        let simd_ls = insn & 0xff10_0000 == 0xf400_0000;
        let vfp = cond != 0xf
            && insn & 0x0c00_0000 == 0x0c00_0000
            && insn & 0x0f00_0000 != 0x0f00_0000
            && insn & 0x03e0_0000 != 0
            && coproc_10_11;
        simd_dp || simd_ls || vfp
    }
}

/// Whether a Thumb halfword is the first half of a 32-bit instruction (bits 15:11 are
/// `11101`, `11110` or `11111`; ARM ARM A6.1).
pub fn is_thumb32_first_half(hw: u16) -> bool {
    hw >> 11 >= 0b11101
}

/// TPIDRURW: the thread ID register User mode reads and writes.
pub fn user_rw_thread_id() -> u32 {
    Tpidrurw::read().0
}

/// Sets TPIDRURW (what the next process to run finds there) and TPIDRURO (User read-only).
pub fn set_user_thread_ids(rw: u32, ro: u32) {
    // SAFETY: both registers are plain software thread ID storage; no hardware behaviour
    // depends on them.
    unsafe {
        Tpidrurw::write(Tpidrurw(rw));
        Tpidruro::write(Tpidruro(ro));
    }
}
