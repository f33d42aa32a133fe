//! Processes: programs in their own user address spaces, scheduled round-robin on all four
//! cores from one run queue (see `sched`).
//!
//! # Model
//!
//! Like seL4 or xv6's per-CPU scheduler loop, the kernel has **one stack per core** (each core's
//! SVC stack) and never blocks inside a system call. Every exception pushes a [`TrapFrame`] on
//! the stack of the core that takes it; switching process means saving the frame into the
//! outgoing [`Process`] and writing the incoming one's registers into the frame, so the
//! exception return (`RFE`) resumes the other program. Each core also has a context of its own:
//! on core 0 the kernel's own thread of control (`kernel_main`: the shell, or the on-target
//! tests), the **kernel task**, which runs with IRQs masked and waits only in [`idle_wait`];
//! on cores 1-3 an idle loop. Either is switched out only from its wait, where a timer or IPI
//! interrupt may switch the core to a process; the scheduler switches back to the kernel task
//! when it has something to do (console input, a process exited, a card request) or nothing
//! else can run on core 0.
//!
//! Because a core's own context is only ever switched out from its wait, its stack pointer is
//! the same whenever a process runs there, and every exception from User mode on that core lands
//! its frame at the same place.
//!
//! # Locks
//!
//! [`TABLE`] (process table, with the copy-on-write owner counts) comes first; the whole order is
//! in docs/processes.md ("Locks and their order"). None is held while user memory is read or
//! written (a fault there re-enters the process layer).

mod cpu_state;
pub mod fault;
pub mod files;
mod loader;
mod slots;
pub mod swap;
pub mod syscall;
pub mod uaccess;

use crate::abi::status;
use crate::arch::arm::direct_map::DirectMap;
use crate::arch::arm::exception::{self, ExceptionKind, TrapFrame};
use crate::arch::arm::irq::IrqSafeMutex;
use crate::arch::arm::mmu::CpuTlb;
use crate::arch::arm::{core_id, smp::CORES};
use crate::mm::asid::{Asid, ContextId};
use crate::mm::frame::{FrameAllocator, PmmError};
use crate::mm::kmem::KmemBudget;
use crate::mm::uvm::{FrameRefs, SharedObject, UserVm};
use crate::mm::Frame;
use crate::vm;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Weak;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use slots::Slots;

pub use cpu_state::{fp_owner, fp_stats, FpStats};
pub use loader::{new_space, SpawnError};

/// A process id. 0 is the kernel task.
pub type Pid = u32;

/// The kernel task's pid (parent of the processes the shell or the tests start).
pub const KERNEL_PID: Pid = 0;

/// A user address space as the kernel builds it: tables through the direct map, CP15
/// maintenance.
pub type UserSpace = UserVm<DirectMap, CpuTlb>;

/// Scheduler tick: the round-robin time slice.
pub const TICK_MS: u32 = 10;

/// At most this many processes exist at once (live or waiting to be reaped).
pub const MAX_PROCESSES: usize = 64;

/// `Process::core` of a process that has not run yet.
pub const NO_CORE: u8 = u8::MAX;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit(code)`: the low 8 bits of `code` (`abi::status::exited`).
    Exited(u8),
    /// The kernel killed it.
    Killed(KillReason),
}

impl ExitStatus {
    /// The status of a process that called `exit(code)`.
    pub fn exited(code: i32) -> Self {
        Self::Exited(status::exited(code) as u8)
    }

    /// The value `wait` returns: the exit code (0..=255), or 256 + a reason number for a kill
    /// (`abi::status`), so a parent can always tell them apart (docs/syscalls.md).
    pub fn code(self) -> u32 {
        match self {
            Self::Exited(c) => u32::from(c),
            Self::Killed(r) => status::killed(r.number()),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(c) => write!(f, "exited with code {c}"),
            Self::Killed(r) => write!(f, "killed: {r}"),
        }
    }
}

/// Why the kernel killed a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// A memory access the process may not make.
    Fault(fault::UserFault),
    /// An undefined instruction at `pc`.
    Undefined { pc: u32 },
    /// A breakpoint instruction (`bkpt`) at `pc`; there is no debugger to take it.
    Breakpoint { pc: u32 },
    /// `kill` from the console.
    Killed,
    /// RAM and swap were both exhausted and it held the most pages (see `swap::oom_kill`).
    OutOfMemory,
}

impl KillReason {
    /// Its number in `wait`'s status (`abi::status`).
    pub fn number(self) -> u32 {
        match self {
            Self::Fault(f) if f.is_bus_error() => status::BUS_ERROR,
            Self::Fault(_) => status::SEGV,
            Self::Undefined { .. } => status::UNDEFINED,
            Self::Breakpoint { .. } => status::BREAKPOINT,
            Self::Killed | Self::OutOfMemory => status::KILL,
        }
    }
}

impl fmt::Display for KillReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fault(u) => write!(f, "{u}"),
            Self::Undefined { pc } => write!(f, "undefined instruction at pc={pc:#010x}"),
            Self::Breakpoint { pc } => write!(f, "breakpoint (bkpt) at pc={pc:#010x}"),
            Self::Killed => f.write_str("by request"),
            Self::OutOfMemory => {
                f.write_str("out of memory: RAM and swap exhausted, and it held the most pages")
            }
        }
    }
}

/// Scheduling state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// In the ready queue.
    Ready,
    /// On the CPU.
    Running,
    /// Until the counter reaches this value.
    Sleeping { until: u64 },
    /// In `wait` for this child.
    Waiting { child: Pid },
    /// Waiting for the kernel task to read or write the card for it (`files::Request`).
    IoWait,
    /// Ended, resources returned, waiting for its parent to collect the status.
    Zombie(ExitStatus),
}

impl State {
    /// A short name for `ps`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Running => "running",
            Self::Sleeping { .. } => "sleeping",
            Self::Waiting { .. } => "waiting",
            Self::IoWait => "card I/O",
            Self::Zombie(_) => "zombie",
        }
    }
}

/// A process's name for `ps` and reports: the program's file name, cut to 15 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ProcName {
    bytes: [u8; 15],
    len: u8,
}

impl ProcName {
    /// `name`, cut at a character boundary to fit.
    pub fn new(name: &str) -> Self {
        let mut len = name.len().min(15);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0; 15];
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self {
            bytes,
            len: len as u8,
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // The bytes are a prefix of a str cut at a character boundary.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?")
    }
}

impl fmt::Display for ProcName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for ProcName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// One process.
pub struct Process {
    pub pid: Pid,
    pub parent: Pid,
    pub name: ProcName,
    pub state: State,
    /// User registers while it is not on the CPU.
    ctx: TrapFrame,
    /// Thread ID and FP registers while it is not on the CPU (or does not own the FP unit).
    cpu: cpu_state::CpuState,
    /// Its address space (`None` once it has ended).
    vm: Option<UserSpace>,
    /// Its ASID context (generation and ASID) in the allocator.
    context: ContextId,
    /// The ASID it last ran with.
    pub asid: Option<Asid>,
    /// Scheduler ticks it was running at.
    pub ticks: u64,
    /// The core it runs on, or last ran on ([`NO_CORE`] before it first runs).
    pub core: u8,
    /// At the head of the run queue, it was passed over once for a process that last ran on
    /// the core choosing (`sched::take_ready`): the next choice takes it.
    passed_over: bool,
    /// Killed while it ran on another core: it ends with this status at that core's next
    /// scheduling decision (the kill's IPI forces one), never while it runs there.
    kill: Option<ExitStatus>,
}

impl Process {
    /// Its address space, unless it has ended.
    pub fn vm(&self) -> Option<&UserSpace> {
        self.vm.as_ref()
    }

    fn is_alive(&self) -> bool {
        !matches!(self.state, State::Zombie(_))
    }
}

/// An ended process whose parent is the kernel task: what the shell and the tests look at.
#[derive(Debug, Clone, Copy)]
pub struct ExitRecord {
    pub pid: Pid,
    pub name: ProcName,
    pub status: ExitStatus,
}

/// What one core's scheduler has done since it started (`uptime`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Timer ticks taken.
    pub ticks: u64,
    /// Ticks that found a process running.
    pub busy_ticks: u64,
    /// Ticks that found the core waiting for work (core 0: the kernel task in its idle wait).
    pub idle_ticks: u64,
    /// Context switches between two different contexts.
    pub switches: u64,
    /// Processes switched in here that last ran on another core.
    pub migrations: u64,
}

/// The process table.
pub struct Table {
    procs: Slots,
    /// The one run queue all cores take from (see `sched` for why one).
    ready: VecDeque<Pid>,
    /// Per core, the process on it, or `None` when the core runs its own context: the kernel
    /// task on core 0, the idle loop on cores 1-3.
    on_cpu: [Option<Pid>; CORES],
    /// Per core, its own context's registers while a process runs there.
    home_ctx: [Option<TrapFrame>; CORES],
    next_pid: Pid,
    /// Processes of the kernel task that ended, newest last (bounded).
    exits: VecDeque<ExitRecord>,
    /// Per core, what its scheduler has done.
    pub cores: [CoreStats; CORES],
    /// Owner counts of the frames shared copy on write between address spaces.
    pub refs: FrameRefs,
}

const EXIT_LOG: usize = 64;

/// The process table. IRQ handlers and system calls run with IRQs masked; the kernel task
/// takes it with IRQs masked too.
pub static TABLE: IrqSafeMutex<Table> = IrqSafeMutex::new(Table {
    procs: Slots::new(),
    ready: VecDeque::new(),
    on_cpu: [None; CORES],
    home_ctx: [None; CORES],
    next_pid: 1,
    exits: VecDeque::new(),
    cores: [CoreStats {
        ticks: 0,
        busy_ticks: 0,
        idle_ticks: 0,
        switches: 0,
        migrations: 0,
    }; CORES],
    refs: FrameRefs::new(),
});

/// The copy-on-write owner counts, behind the process table's lock (every change of them is a
/// change of some process's memory, made with the table locked anyway: one lock, not two, on
/// the fault path). For code that does not hold the table.
pub fn frame_refs() -> FrameRefsGuard {
    FrameRefsGuard(TABLE.lock())
}

/// The process table locked, seen as its [`FrameRefs`].
pub struct FrameRefsGuard(crate::arch::arm::irq::IrqSafeGuard<'static, Table>);

impl core::ops::Deref for FrameRefsGuard {
    type Target = FrameRefs;
    fn deref(&self) -> &FrameRefs {
        &self.0.refs
    }
}

impl core::ops::DerefMut for FrameRefsGuard {
    fn deref_mut(&mut self) -> &mut FrameRefs {
        &mut self.0.refs
    }
}

/// Named shared-memory objects (`shm` system call). Only weak references: an object lives as
/// long as some address space maps it.
pub static SHARED: IrqSafeMutex<BTreeMap<u32, Weak<SharedObject>>> =
    IrqSafeMutex::new(BTreeMap::new());

/// Per core, the pid of the process on it (kept by the switch; 0: none): what `getpid` answers
/// without taking the table's lock.
static CURRENT_PID: [AtomicU32; CORES] = [const { AtomicU32::new(KERNEL_PID) }; CORES];

/// The pid of the process on this core (0: the core runs its own context).
fn current_pid() -> Pid {
    CURRENT_PID[core_id() as usize].load(Ordering::Relaxed)
}

/// The kernel task has something to do: switch back to it at the next opportunity.
static KERNEL_WAKE: AtomicBool = AtomicBool::new(false);

/// Kernel heap that user requests may take at once (region arrays, shared objects' page tables):
/// past it they fail with `ENOMEM`. Its limit is set by [`init`] from the size of RAM, and the
/// frames to grow the heap by that much are kept out of user reach ([`reserve_frames`]).
pub static KMEM: KmemBudget = KmemBudget::new(0);

/// Frames user memory may not take: the base reserve for the kernel's own heap use plus twice
/// the user budget (a buddy heap wastes at most as much as it hands out), set by [`init`].
static RESERVE_FRAMES: AtomicU32 = AtomicU32::new(BASE_RESERVE_FRAMES);

/// Frames kept for the heap's own needs, outside any user budget.
pub const BASE_RESERVE_FRAMES: u32 = 256;

/// The kernel-memory budget for user requests given `ram` bytes of RAM: 1/256 of it, between
/// 512 KiB and 8 MiB (3.75 MiB of a Pi 2's 960 MiB).
pub fn kmem_limit_for(ram: u32) -> u32 {
    (ram / 256).clamp(512 * 1024, 8 << 20)
}

/// Sets the frames user memory never takes from the budgets: the base reserve, and twice (a
/// buddy heap wastes at most as much as it hands out) the user budget and the budget of pages
/// away in swap.
pub(crate) fn update_reserve() {
    let away = crate::mm::nonresident::AWAY_BUDGET.limit();
    let budgets = KMEM.limit().div_ceil(crate::mm::PAGE_SIZE)
        + if away == u32::MAX {
            0
        } else {
            away.div_ceil(crate::mm::PAGE_SIZE)
        };
    RESERVE_FRAMES.store(BASE_RESERVE_FRAMES + 2 * budgets, Ordering::Relaxed);
}

/// Frames user memory never takes: they keep the kernel heap able to grow by what the budget
/// allows and its own needs.
pub fn reserve_frames() -> u32 {
    RESERVE_FRAMES.load(Ordering::Relaxed)
}

/// The PMM as a [`FrameAllocator`] that takes the PMM lock for each call, so that address-space
/// code may allocate from the heap between frames (the heap grows through the PMM).
pub struct KernelFrames;

impl FrameAllocator for KernelFrames {
    fn alloc_frame(&mut self) -> Result<Frame, PmmError> {
        // Process-layer code runs with IRQs masked (system calls, faults, the kernel task).
        // This core's frame cache, refilled from the PMM above the kernel's reserve.
        match vm::alloc_cached_frame(reserve_frames()) {
            Ok(f) => Ok(f),
            // The PMM is down to the reserve: the zero pool's frames are free memory too.
            Err(e) => vm::take_zeroed_frame().ok_or(e),
        }
    }

    #[inline(always)]
    fn alloc_for_zero(&mut self) -> Result<(Frame, bool), PmmError> {
        match vm::take_zeroed_frame() {
            Some(f) => Ok((f, true)),
            None => self.alloc_frame().map(|f| (f, false)),
        }
    }

    fn alloc_contiguous(
        &mut self,
        count: u32,
        align_frames: u32,
        below: Option<crate::mm::PhysAddr>,
    ) -> Result<Frame, PmmError> {
        vm::with_pmm(|p| {
            if p.free_frames() <= reserve_frames().saturating_add(count) {
                return Err(PmmError::OutOfMemory);
            }
            p.alloc_contiguous(count, align_frames, below)
        })
    }

    fn free_frame(&mut self, frame: Frame) -> Result<(), PmmError> {
        vm::free_cached_frame(frame)
    }

    fn free_contiguous(&mut self, first: Frame, count: u32) -> Result<(), PmmError> {
        vm::with_pmm(|p| p.free_contiguous(first, count))
    }
}

/// Sizes what processes may take of the kernel's memory from the size of RAM: the budget, the
/// frame reserve, the owner-count table. Needed before the first user space is made; [`init`]
/// does it, and it may be called earlier (once is enough; later calls change nothing).
pub fn init_memory() {
    static DONE: spin::Once<()> = spin::Once::new();
    DONE.call_once(|| {
        let total = vm::with_pmm(|p| p.total_frames());
        // The budget follows the RAM in use: `mem=` from the card's cmdline.txt leaves the
        // frames above it reserved, not gone.
        let in_use = crate::init::card_ram_limit()
            .map_or(total, |bytes| bytes / crate::mm::PAGE_SIZE)
            .min(total);
        let limit = kmem_limit_for(in_use.saturating_mul(crate::mm::PAGE_SIZE));
        KMEM.set_limit(limit);
        if !swap::enabled() {
            // No swap, no clock: no page is ever away.
            crate::mm::nonresident::AWAY_BUDGET.set_limit(0);
        }
        update_reserve();
        // Owner counts for every frame of RAM, allocated once: sharing never grows the heap.
        let mut refs = FrameRefs::with_frames(total);
        // The zero page: what reads of untouched private memory map, read-only.
        let zero = vm::with_pmm(|p| p.alloc_frame()).expect("a frame for the zero page");
        // SAFETY: the direct map is live; the frame was just allocated and is the kernel's.
        crate::mm::phys::PhysMem::zero_frame(&mut unsafe { DirectMap::new() }, zero);
        refs.set_zero_frame(zero);
        // The swap slots, if the card's swap partition was found before this.
        {
            let mut t = TABLE.lock();
            refs.swap = core::mem::take(&mut t.refs.swap);
            t.refs = refs;
        }
        // Every process record's slot, allocated once too.
        TABLE.lock().procs.allocate();
    });
}

/// Installs the process layer's exception and interrupt handlers and starts the scheduler tick.
pub fn init() {
    init_memory();
    exception::set_user_handler(user_exception);
    exception::set_user_abort_handler(fault::user_abort);
    exception::set_svc_handler(syscall::dispatch);
    exception::set_uaccess_resolver(fault::resolve_uaccess);
    sched::start();
}

mod sched;
pub use sched::{idle_wait, kernel_sleep_ms};

/// Called for every exception taken from User mode.
fn user_exception(frame: &mut TrapFrame, kind: ExceptionKind) {
    match kind {
        ExceptionKind::Svc => syscall::dispatch(frame), // (normally straight from the vector)
        ExceptionKind::DataAbort | ExceptionKind::PrefetchAbort => {
            unreachable!("aborts go to their own handler")
        }
        ExceptionKind::Undefined => {
            // A VFP/NEON instruction while the FP unit holds another process's registers.
            if cpu_state::undefined(frame) {
                return;
            }
            let pc = frame
                .pc
                .wrapping_sub(if frame.cpsr & (1 << 5) != 0 { 2 } else { 4 });
            kill_current(frame, KillReason::Undefined { pc });
        }
        ExceptionKind::Irq | ExceptionKind::Fiq => {
            unreachable!("interrupts are dispatched before the user handler")
        }
    }
}

/// Starts the embedded program `name` with `arg` in r0, as a child of the kernel task.
pub fn spawn(name: &str, arg: u32) -> Result<Pid, SpawnError> {
    loader::spawn(name, arg, KERNEL_PID)
}

/// Starts the program in the card file `path` with `arg` in r0, as a child of the kernel task.
/// The card is read with the polling driver, on this CPU, before anything else runs here.
pub fn spawn_path(path: &str, arg: u32) -> Result<Pid, SpawnError> {
    loader::spawn_file(path, arg, KERNEL_PID)
}

/// Starts `what` as the shell's `run` and the `spawn` system call understand it, as a child of
/// `parent`: a path (with a `/`) is a file on the card; a bare name is an embedded program, or
/// else the file of that name in `/bin` on the card.
pub fn spawn_program(what: &str, arg: u32, parent: Pid) -> Result<Pid, SpawnError> {
    if what.contains('/') {
        return loader::spawn_file(what, arg, parent);
    }
    match loader::spawn(what, arg, parent) {
        Err(SpawnError::NoSuchProgram) => {
            loader::spawn_file(&alloc::format!("/bin/{what}"), arg, parent)
        }
        r => r,
    }
}

/// Kills process `pid` (from the kernel task). Returns `false` if there is no such live process.
pub fn kill(pid: Pid) -> bool {
    let mut t = TABLE.lock();
    if !t.procs.get(&pid).is_some_and(Process::is_alive) {
        return false;
    }
    t.terminate(pid, ExitStatus::Killed(KillReason::Killed));
    true
}

/// Ends the current process with `status` and switches to the next one.
pub(crate) fn kill_current(frame: &mut TrapFrame, reason: KillReason) {
    let mut t = TABLE.lock();
    let pid = t.current().expect("a user exception has a current process");
    t.terminate(pid, ExitStatus::Killed(reason));
    sched::reschedule(&mut t, frame);
}

impl Table {
    /// The current process's address space and the copy-on-write owner counts, borrowed
    /// together (what a fault or `munmap` of the current process needs).
    fn current_vm(&mut self) -> Option<(&mut UserSpace, &mut FrameRefs)> {
        let pid = self.current()?;
        let vm = self.procs.get_mut(&pid)?.vm.as_mut()?;
        Some((vm, &mut self.refs))
    }

    /// A fresh pid, or `None` if the table is full.
    fn alloc_pid(&mut self) -> Option<Pid> {
        if self.procs.len() >= MAX_PROCESSES {
            return None;
        }
        // A free slot is at most MAX_PROCESSES pids away.
        loop {
            let pid = self.next_pid;
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            if self.procs.slot_free(pid) {
                return Some(pid);
            }
        }
    }

    /// Ends process `pid`: gives back its address space (frames, tables, ASID), hands its
    /// children to the kernel task, and leaves a zombie for its parent (or an exit record, if
    /// the parent is the kernel task). The caller reschedules if it was the current process.
    ///
    /// A process running on another core is not touched there (its tables are live in that
    /// core's TTBR0): it is marked, and that core is interrupted to end it itself (`sched`).
    fn terminate(&mut self, pid: Pid, status: ExitStatus) {
        let me = core_id() as usize;
        let elsewhere = self.core_running(pid).filter(|&c| c != me);
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if !p.is_alive() {
            return;
        }
        if let Some(core) = elsewhere {
            p.kill.get_or_insert(status);
            sched::kick(core);
            return;
        }
        // A kill that came first wins over the exit that raced with it.
        let status = p.kill.take().unwrap_or(status);
        if let ExitStatus::Killed(r) = status {
            println!("[kernel] pid {pid} ({}) killed: {r}", p.name);
        }
        p.state = State::Zombie(status);
        cpu_state::exited(pid);
        self.ready.retain(|&q| q != pid);
        if self.on_cpu[me] == Some(pid) {
            // Its tables must not stay live in TTBR0 while they are freed.
            vm::leave_user();
        }
        let space = p.vm.take();
        let parent = p.parent;
        // The frames (destroy also invalidates the TLB entries of its ASID), then the ASID.
        if let Some(space) = space {
            if let Err(e) = space.destroy(&mut KernelFrames, &mut self.refs) {
                println!("[kernel] pid {pid}: address space teardown: {e:?}");
            }
        }
        if let Some(p) = self.procs.get_mut(&pid) {
            if let Err(e) = vm::ASIDS.lock().release(&mut p.context) {
                println!("[kernel] pid {pid}: ASID release refused: {e}");
            }
        }
        // Orphans go to the kernel task; zombies among them are collected now.
        let orphans: alloc::vec::Vec<Pid> = self
            .procs
            .values()
            .filter(|c| c.parent == pid)
            .map(|c| c.pid)
            .collect();
        for c in orphans {
            if let Some(child) = self.procs.get_mut(&c) {
                child.parent = KERNEL_PID;
                if let State::Zombie(s) = child.state {
                    self.reap(c, s);
                }
            }
        }
        // Tell the parent.
        if parent == KERNEL_PID {
            self.reap(pid, status);
            if !matches!(status, ExitStatus::Killed(_)) {
                println!("[kernel] pid {pid} {status}");
            }
            sched::wake_kernel();
        } else if let Some(pp) = self.procs.get_mut(&parent) {
            if pp.state == (State::Waiting { child: pid }) {
                pp.ctx.r[0] = status.code();
                self.make_ready(parent);
                self.procs.remove(&pid);
            }
        }
    }

    /// Puts `pid` in the run queue, and wakes an idle core to take it.
    fn make_ready(&mut self, pid: Pid) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.state = State::Ready;
            self.ready.push_back(pid);
            sched::kick_idle(self, Some(pid));
        }
    }

    /// The core `pid` is running on, if it is on one.
    fn core_running(&self, pid: Pid) -> Option<usize> {
        self.on_cpu.iter().position(|&c| c == Some(pid))
    }

    /// Removes zombie `pid` of the kernel task, keeping its record.
    fn reap(&mut self, pid: Pid, status: ExitStatus) {
        if let Some(p) = self.procs.remove(&pid) {
            if self.exits.len() == EXIT_LOG {
                self.exits.pop_front();
            }
            self.exits.push_back(ExitRecord {
                pid,
                name: p.name,
                status,
            });
        }
    }

    /// The processes, by pid.
    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        self.procs.values()
    }

    /// Process `pid`.
    pub fn get(&self, pid: Pid) -> Option<&Process> {
        self.procs.get(&pid)
    }

    /// The process on this core, if any (`None`: the core runs its own context).
    pub fn current(&self) -> Option<Pid> {
        self.on_cpu[core_id() as usize]
    }

    /// The process on `core`, if any.
    pub fn running_on(&self, core: usize) -> Option<Pid> {
        self.on_cpu.get(core).copied().flatten()
    }

    /// Live processes (not zombies).
    pub fn live(&self) -> usize {
        self.procs.values().filter(|p| p.is_alive()).count()
    }

    /// Recent ends of the kernel task's processes.
    pub fn exits(&self) -> impl Iterator<Item = &ExitRecord> {
        self.exits.iter()
    }
}

/// The exit status of kernel-task child `pid` if it has ended (looks at the exit records).
pub fn exit_status(pid: Pid) -> Option<ExitStatus> {
    TABLE
        .lock()
        .exits
        .iter()
        .rev()
        .find(|r| r.pid == pid)
        .map(|r| r.status)
}

/// Waits (in the kernel task) until kernel-task child `pid` has ended, and returns how.
pub fn wait(pid: Pid) -> ExitStatus {
    loop {
        if let Some(s) = exit_status(pid) {
            return s;
        }
        idle_wait();
    }
}

/// Runs `f` with the process table.
pub fn with_table<R>(f: impl FnOnce(&Table) -> R) -> R {
    f(&TABLE.lock())
}

/// Frames shared copy-on-write right now.
pub fn shared_frames() -> u32 {
    TABLE.lock().refs.shared_frames()
}
