//! Per-process CPU state that is not in the [`TrapFrame`]: the user thread ID registers and the
//! VFP/Advanced SIMD registers.
//!
//! - **TPIDRURW** (user read/write) is saved from the CPU when a process is switched out and
//!   written back when it is switched in. A new program starts with 0; a forked child starts
//!   with its parent's value.
//! - **TPIDRURO** (user read-only) holds the running process's pid, written at every switch in:
//!   a program can learn its pid without a system call.
//! - **D0-D31 and FPSCR** are loaded lazily and saved when their process leaves the core. Each
//!   core's unit holds the registers of at most one process, its *owner* on that core
//!   ([`FP_OWNER`]), and is enabled (FPEXC.EN) only while the owner runs there. Any other
//!   process's first VFP/NEON instruction traps as an Undefined Instruction; [`undefined`] then
//!   loads the trapping process's registers (zeros and the default FPSCR at a first use), makes
//!   it the owner and re-executes the instruction. A process that never uses the unit never
//!   costs a save or a load.
//! - A process may run on another core next (one run queue, see `sched`), where only its record
//!   can reach it: so when an owner is switched out its registers are saved into its record at
//!   once (eagerly), and it stays the owner of that core's unit. Back on the same core with no
//!   other owner in between, it runs with the unit enabled and nothing loaded; on another core
//!   its first VFP instruction loads the saved copy, and the claim on the old core is dropped
//!   (a process is the owner on one core at most), so the old core can never enable its stale
//!   copy. When the owner ends, its claims go; stale registers stay in a unit with FPEXC.EN
//!   clear until the next owner's load overwrites all of them, so no process sees another's.
//!
//! The kernel is soft-float and never uses the FP registers itself (see [`fpu`]).
//!
//! Everything here runs with the process table locked (IRQs masked), on the core whose unit and
//! thread registers are meant: [`FP_OWNER`] changes only under the lock.

use super::{Pid, Process, Table, TABLE};
use crate::arch::arm::exception::TrapFrame;
use crate::arch::arm::fpu::{self, FpRegs};
use crate::arch::arm::{core_id, smp::CORES};
use core::sync::atomic::{AtomicU32, Ordering};

/// The CPU state of one process kept in its record (inline: bounded by the process table).
#[derive(Clone, Copy)]
pub struct CpuState {
    /// TPIDRURW while the process is not on the CPU.
    tpidrurw: u32,
    /// Its VFP/NEON registers while the unit does not hold them; `None` until its first use.
    fp: Option<FpRegs>,
}

impl CpuState {
    /// The state of a new program: TPIDRURW 0, the FP unit never used.
    pub const fn new() -> Self {
        Self {
            tpidrurw: 0,
            fp: None,
        }
    }
}

impl Default for CpuState {
    fn default() -> Self {
        Self::new()
    }
}

/// Per core, the process whose registers its FP unit holds (0: none; pid 0 is the kernel task,
/// which never uses the unit). Changed only with the process table locked.
static FP_OWNER: [AtomicU32; CORES] = [const { AtomicU32::new(0) }; CORES];

fn this_core() -> usize {
    core_id() as usize
}

/// How the lazy switch has worked so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FpStats {
    /// VFP/NEON instructions that trapped because the unit held someone else's registers (or
    /// none) and were re-executed.
    pub traps: u32,
    /// Register files saved into their owner's record as it left a core.
    pub saves: u32,
    /// Register files loaded into the unit (a first use counts too).
    pub loads: u32,
}

static TRAPS: AtomicU32 = AtomicU32::new(0);
static SAVES: AtomicU32 = AtomicU32::new(0);
static LOADS: AtomicU32 = AtomicU32::new(0);

/// The lazy-switch counters since boot.
pub fn fp_stats() -> FpStats {
    FpStats {
        traps: TRAPS.load(Ordering::Relaxed),
        saves: SAVES.load(Ordering::Relaxed),
        loads: LOADS.load(Ordering::Relaxed),
    }
}

/// The process whose registers this core's FP unit holds, if any.
pub fn fp_owner() -> Option<Pid> {
    fp_owner_on(this_core())
}

/// The process whose registers `core`'s FP unit holds, if any.
pub fn fp_owner_on(core: usize) -> Option<Pid> {
    match FP_OWNER[core].load(Ordering::Relaxed) {
        0 => None,
        pid => Some(pid),
    }
}

/// `p` is being switched out of this core: keep what only the CPU holds. If it owns this core's
/// unit, its registers are saved now, since it may run on another core next.
pub(super) fn switch_out(p: &mut Process) {
    p.cpu.tpidrurw = fpu::user_rw_thread_id();
    if fp_owner() == Some(p.pid) {
        let regs = p.cpu.fp.get_or_insert(FpRegs::INITIAL);
        // SAFETY: `p` owns this core's unit and ran until now, so FPEXC.EN is set and the unit
        // holds its registers; saving only reads them.
        unsafe { fpu::save(regs) };
        SAVES.fetch_add(1, Ordering::Relaxed);
    }
}

/// `p` is being switched in on this core: its thread ID registers, and the FP unit enabled only
/// if it holds `p`'s registers (it is `p`'s claim: see the module text).
pub(super) fn switch_in(p: &Process) {
    fpu::set_user_thread_ids(p.cpu.tpidrurw, p.pid);
    fpu::set_enabled(fp_owner() == Some(p.pid));
}

/// The kernel task is being switched in: nothing of the last process stays readable, and the
/// unit is off (the kernel never uses it).
pub(super) fn switch_to_kernel() {
    fpu::set_user_thread_ids(0, 0);
    fpu::set_enabled(false);
}

/// The CPU state a child forked from the running process `parent` starts with: the parent's
/// TPIDRURW (as Linux does) and a copy of its FP registers (code compiled for hard float may
/// keep values in the callee-saved D8-D15 across the `fork` call).
pub(super) fn fork(parent: &mut Process) -> CpuState {
    let mut child = CpuState {
        tpidrurw: fpu::user_rw_thread_id(),
        fp: parent.cpu.fp,
    };
    if fp_owner() == Some(parent.pid) {
        // The unit holds the parent's live registers and is enabled while it runs.
        let mut regs = FpRegs::INITIAL;
        // SAFETY: the parent owns the unit and is the running process, so FPEXC.EN is set and
        // the unit holds its registers; saving only reads them.
        unsafe { fpu::save(&mut regs) };
        child.fp = Some(regs);
    }
    child
}

/// Process `pid` has ended: a unit that held its registers now holds no one's (this core's is
/// turned off; another core's is off already, as `pid` does not run there).
pub(super) fn exited(pid: Pid) {
    drop_claims(pid);
    if fp_owner().is_none() {
        fpu::set_enabled(false);
    }
}

/// Clears every core's claim that its unit holds `pid`'s registers.
fn drop_claims(pid: Pid) {
    for owner in &FP_OWNER {
        let _ = owner.compare_exchange(pid, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The current process hit an Undefined Instruction at the instruction before `frame.pc`. If it
/// is a VFP/NEON instruction and the unit does not hold this process's registers, switches the
/// unit to it and sets `frame` to re-execute the instruction; returns `true` then. Returns
/// `false` for a genuinely undefined instruction: not a VFP/NEON encoding, or one that trapped
/// while the process already owned the enabled unit (the caller kills the process). If the
/// instruction's page must first come back from the card, files that request and returns
/// `true`: the process waits, and the instruction traps again.
///
/// Must be called without the process table locked (the instruction is read from user memory).
pub(super) fn undefined(frame: &mut TrapFrame) -> bool {
    if !fpu::available() {
        return false;
    }
    let thumb = frame.cpsr & PSR_T != 0;
    // LR_und (our `pc`) is the instruction's address + 4 in ARM state, + 2 in Thumb state, for
    // 16- and 32-bit Thumb instructions alike (ARM ARM B1.9.7).
    let at = frame.pc.wrapping_sub(if thumb { 2 } else { 4 });
    let Some(insn) = fetch(at, thumb) else {
        if let Some(req) = super::files::take_deferred() {
            // The text page went (reclaim on another core) between the trap and the read, and
            // must come back from the card: the instruction runs again once it has, and traps
            // again if it is one for the unit.
            frame.pc = at;
            let mut t = TABLE.lock();
            let pid = t
                .current()
                .expect("an undefined instruction has a current process");
            super::files::submit(&mut t, pid, req);
            super::sched::reschedule(&mut t, frame);
            return true;
        }
        return false;
    };
    if !fpu::is_fp_instruction(insn, thumb) {
        return false;
    }
    let mut t = TABLE.lock();
    let Some(pid) = t.current() else {
        return false;
    };
    if fp_owner() == Some(pid) {
        // The unit is on and holds this process's registers: the instruction is undefined.
        return false;
    }
    take_unit(&mut t, pid);
    // Re-execute the instruction (with the same IT state: the SPSR holds the one it had).
    frame.pc = at;
    true
}

/// Makes `pid` the owner of this core's unit: loads its registers and enables the unit. The
/// previous owner's registers were saved when it left this core (it is not running here).
fn take_unit(t: &mut Table, pid: Pid) {
    TRAPS.fetch_add(1, Ordering::Relaxed);
    fpu::set_enabled(true);
    // A claim on another core's unit is stale from now on: that core must not enable it.
    drop_claims(pid);
    let p = t.procs.get_mut(&pid).expect("the current process exists");
    let regs = p.cpu.fp.get_or_insert(FpRegs::INITIAL);
    // SAFETY: the unit is enabled, and what it held is saved in its owner's record (or
    // belonged to no live process).
    unsafe { fpu::load(regs) };
    LOADS.fetch_add(1, Ordering::Relaxed);
    FP_OWNER[this_core()].store(pid, Ordering::Relaxed);
}

const PSR_T: u32 = 1 << 5;

/// Reads the instruction at `at` from the current process's memory: an ARM word, or a Thumb
/// instruction (first halfword << 16 | second for a 32-bit one; a 16-bit one is never VFP/NEON).
fn fetch(at: u32, thumb: bool) -> Option<u32> {
    if !thumb {
        let mut w = [0u8; 4];
        super::uaccess::copy_from_user(&mut w, at).ok()?;
        return Some(u32::from_le_bytes(w));
    }
    let mut h = [0u8; 2];
    super::uaccess::copy_from_user(&mut h, at).ok()?;
    let first = u16::from_le_bytes(h);
    if !fpu::is_thumb32_first_half(first) {
        return Some(u32::from(first));
    }
    super::uaccess::copy_from_user(&mut h, at.wrapping_add(2)).ok()?;
    Some(u32::from(first) << 16 | u32::from(u16::from_le_bytes(h)))
}
