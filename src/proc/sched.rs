//! Round-robin scheduling on every core: the ticks, the run queue, the switch, the idle loops,
//! and the kernel task's idle wait.
//!
//! # One run queue
//!
//! All cores take from one queue in the process table, under the table's lock, which every
//! scheduling decision holds anyway (it also guards the processes' states and address spaces).
//! With four cores and one lock already on the path, per-core queues would add balancing and
//! stealing to keep cores busy and gain nothing the lock does not cost already; one queue
//! balances by construction (an idle core takes the next process) and migrates a process to
//! whichever core is free (the Cortex-A7's shared L2 keeps the cost of that low). The price is
//! lost L1 affinity and the lock's contention, which `make bench` measures.
//!
//! # Who runs where
//!
//! Each core has its own context besides the processes: core 0 the kernel task (the shell, the
//! tests, the card I/O), cores 1-3 an idle loop ([`secondary_loop`]). Like the kernel task, an
//! idle loop is switched out only from its wait, so each core's exceptions from User mode land
//! at one place on that core's SVC stack. A core's tick comes from its own virtual timer; a
//! core is woken (or told to decide again) by an IPI in its ARM-local mailbox 0 ([`kick`]).
//!
//! A process runs on one core at a time (one thread per process), so its address space is live
//! in one core's TTBR0 only; other cores may change it (the clock unmaps pages, `kill` ends it)
//! with inner-shareable TLB maintenance, and never free its tables while it runs: a process
//! killed from another core is ended by its own core (`Table::terminate`).

use super::{State, Table, KERNEL_WAKE, TABLE, TICK_MS};
use crate::arch::arm::exception::TrapFrame;
use crate::arch::arm::smp::CORES;
use crate::arch::arm::{core_id, irq, timer};
use crate::irq as board_irq;
use crate::mm::zero_pool::ZERO_POOL_FRAMES;
use crate::vm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Per core: its own context (core 0: the kernel task; cores 1-3: the idle loop) waits in its
/// WFI and may be switched out.
static IDLE: [AtomicBool; CORES] = [const { AtomicBool::new(false) }; CORES];

/// Per core: it takes part in scheduling (its tick runs and it takes processes).
static SCHEDULING: [AtomicBool; CORES] = [const { AtomicBool::new(false) }; CORES];

fn this_core() -> usize {
    core_id() as usize
}

/// Timer ticks per time slice (from CNTFRQ).
static SLICE_TICKS: AtomicU32 = AtomicU32::new(0);

/// The scheduler runs (the tick is on): the kernel task may sleep in [`idle_wait`].
static STARTED: AtomicBool = AtomicBool::new(false);

/// The kernel task sleeps inside a device driver's wait (which holds the driver's lock): the
/// idle wait must not start other I/O then.
static IN_DEVICE_WAIT: AtomicBool = AtomicBool::new(false);

/// Whether the kernel task is asleep inside a device driver's wait.
pub fn in_device_wait() -> bool {
    IN_DEVICE_WAIT.load(Ordering::Relaxed)
}

/// When the kernel task must be woken even if nothing else wakes it (generic-timer ticks; 0:
/// never): the deadline of a device wait or a [`kernel_sleep_ms`] it sleeps in. Core 0's tick
/// looks at it, so a process on core 0 gives the kernel task back within a tick of it.
static KERNEL_WAKE_AT: AtomicU64 = AtomicU64::new(0);

/// Counter ticks per millisecond (from CNTFRQ).
pub fn ticks_per_ms() -> u32 {
    SLICE_TICKS.load(Ordering::Relaxed) / TICK_MS
}

/// Starts the periodic scheduler tick on the virtual timer and takes the timer and IPI
/// interrupts.
pub(super) fn start() {
    let hz = timer::frequency().expect("CNTFRQ holds the timer frequency");
    let slice = hz / 1000 * TICK_MS;
    SLICE_TICKS.store(slice, Ordering::Relaxed);
    board_irq::set_handler(board_irq::IrqSource::Timer, on_tick);
    board_irq::set_handler(board_irq::IrqSource::Ipi, on_ipi);
    board_irq::set_handler(board_irq::IrqSource::Uart, on_uart);
    board_irq::set_handler(board_irq::IrqSource::Card, on_card);
    crate::bsp::raspi2::emmc::set_waiter(io_wait);
    start_tick();
    STARTED.store(true, Ordering::Release);
    // Cores 1-3 join: each starts its own tick and takes processes from the queue.
    crate::smp::start_scheduling(secondary_loop);
}

/// Starts this core's tick on its virtual timer.
fn start_tick() {
    timer::set_deadline_after(SLICE_TICKS.load(Ordering::Relaxed));
    timer::enable();
    SCHEDULING[this_core()].store(true, Ordering::Release);
}

/// Cores 1-3 once the scheduler runs (called by `smp` on each, IRQs masked): the tick on, then
/// the idle loop, which processes interrupt.
fn secondary_loop(core: usize) -> ! {
    debug_assert_eq!(core, this_core());
    board_irq::enable_this_core();
    start_tick();
    loop {
        // Requests from core 0 for this core's registers (tests) are answered here.
        crate::smp::answer_requests(core);
        if wait_for_work(core) {
            aarch32_cpu::asm::wfi();
        }
        irq::enable();
        irq::disable();
        IDLE[core].store(false, Ordering::Relaxed);
    }
}

/// Whether core 0 runs the kernel task and it holds no process table (it must not sleep
/// holding it: the processes that would run need it).
fn kernel_holds_no_table() -> bool {
    super::current_pid() == super::KERNEL_PID && !TABLE.held_here()
}

/// The card controller did what the kernel task waits for: switch back to it.
fn on_card(frame: &mut TrapFrame) {
    wake_kernel();
    let mut t = TABLE.lock();
    reschedule(&mut t, frame);
}

/// The card driver's [`Waiter`](crate::bsp::raspi2::emmc::Waiter): the kernel task, holding no
/// process-layer lock, sleeps in [`idle_wait`] (processes run) until an interrupt or
/// `deadline`; any other caller (a process's system call or fault, code holding the process
/// table, boot before the scheduler) is told to poll.
fn io_wait(deadline: Option<u64>) -> bool {
    if !STARTED.load(Ordering::Acquire) {
        return false;
    }
    if core_id() != 0 || !kernel_holds_no_table() {
        return false;
    }
    let outer = KERNEL_WAKE_AT.swap(deadline.unwrap_or(0), Ordering::Relaxed);
    let nested = IN_DEVICE_WAIT.swap(true, Ordering::Relaxed);
    idle_wait();
    IN_DEVICE_WAIT.store(nested, Ordering::Relaxed);
    KERNEL_WAKE_AT.store(outer, Ordering::Relaxed);
    // This wait may have taken a wake-up meant for the wait it is nested in (a process that
    // ended meanwhile, a card request): that one re-checks before it sleeps.
    KERNEL_WAKE.store(true, Ordering::Relaxed);
    true
}

fn on_tick(frame: &mut TrapFrame) {
    timer::set_deadline_after(SLICE_TICKS.load(Ordering::Relaxed));
    let now = timer::now();
    let core = this_core();
    if core == 0 {
        let wake_at = KERNEL_WAKE_AT.load(Ordering::Relaxed);
        if wake_at != 0 && now >= wake_at {
            wake_kernel();
        }
    }
    let mut t = TABLE.lock();
    let running = t.on_cpu[core];
    let stats = &mut t.cores[core];
    stats.ticks += 1;
    match running {
        Some(_) => stats.busy_ticks += 1,
        None if IDLE[core].load(Ordering::Relaxed) => stats.idle_ticks += 1,
        None => {}
    }
    if let Some(p) = running.and_then(|pid| t.procs.get_mut(&pid)) {
        p.ticks += 1;
    }
    let mut woken = [0; super::MAX_PROCESSES];
    let mut n = 0;
    for p in t.procs.values() {
        if let State::Sleeping { until } = p.state {
            if until <= now {
                woken[n] = p.pid;
                n += 1;
            }
        }
    }
    for &pid in &woken[..n] {
        t.make_ready(pid);
    }
    reschedule(&mut t, frame);
}

fn on_ipi(frame: &mut TrapFrame) {
    let core = this_core();
    if core != 0 {
        crate::smp::answer_requests(core);
    }
    // An IPI asks this core to decide again: an idle core to take a process from the queue,
    // core 0 to switch back to the kernel task it woke, any core to end its process that was
    // killed from elsewhere. A process that runs for none of these reasons keeps its time
    // slice (a tick in the same interrupt entry may just have chosen it).
    let mut t = TABLE.lock();
    let decide = match t.on_cpu[core] {
        None => true,
        Some(pid) => {
            (core == 0 && KERNEL_WAKE.load(Ordering::Relaxed))
                || t.procs.get(&pid).is_some_and(|p| p.kill.is_some())
        }
    };
    if decide {
        reschedule(&mut t, frame);
    }
}

fn on_uart(frame: &mut TrapFrame) {
    // The board layer has already moved the bytes into the console's receive ring.
    if crate::console::rx_pending() {
        wake_kernel();
        let mut t = TABLE.lock();
        reschedule(&mut t, frame);
    }
}

/// Tells the scheduler that the kernel task has something to do (console input, a process
/// ended, a card request): it gets core 0 at the next decision, which an IPI forces when this
/// is another core.
pub(super) fn wake_kernel() {
    KERNEL_WAKE.store(true, Ordering::Relaxed);
    if this_core() != 0 {
        kick(0);
    }
}

/// Asks `core` to make a scheduling decision now (ARM-local mailbox 0 IPI).
pub(super) fn kick(core: usize) {
    board_irq::send_ipi(core);
}

/// Whether `core` waits for work: it schedules, runs its own context, which waits in its idle
/// loop, and (core 0) the kernel task has nothing to do.
fn waits_for_work(t: &Table, core: usize) -> bool {
    t.on_cpu[core].is_none()
        && SCHEDULING[core].load(Ordering::Acquire)
        && IDLE[core].load(Ordering::Relaxed)
        && !(core == 0 && KERNEL_WAKE.load(Ordering::Relaxed))
}

/// Cores other than this one that wait for work.
fn idle_cores(t: &Table) -> usize {
    let me = this_core();
    (0..CORES)
        .filter(|&c| c != me && waits_for_work(t, c))
        .count()
}

/// Wakes idle cores for the processes waiting in the run queue: one core per waiting process,
/// never this one (it decides by itself when it returns to its scheduler), and first the core
/// `readied` last ran on, whose caches and FP unit may still hold its state.
pub(super) fn kick_idle(t: &Table, readied: Option<super::Pid>) {
    let me = this_core();
    let home = readied
        .and_then(|pid| t.procs.get(&pid))
        .map(|p| usize::from(p.core))
        .filter(|&c| c < CORES);
    let mut waiting = t.ready.len();
    let mut kicked = [false; CORES];
    for core in home.into_iter().chain(0..CORES) {
        if waiting == 0 {
            break;
        }
        if core != me && !kicked[core] && waits_for_work(t, core) {
            kick(core);
            kicked[core] = true;
            waiting -= 1;
        }
    }
}

/// Takes the next process for `core` from the run queue: the first that last ran on this core
/// (its caches and FP unit may still hold its state) or has never run, else the first. The
/// preference is bounded: a head passed over once is taken next time, so no process waits
/// behind others that keep their cores.
fn take_ready(t: &mut Table, core: usize) -> Option<super::Pid> {
    let head = *t.ready.front()?;
    let head_passed = t.procs.get(&head).is_some_and(|p| p.passed_over);
    let at = if head_passed {
        0
    } else {
        t.ready
            .iter()
            .position(|pid| {
                t.procs
                    .get(pid)
                    .is_some_and(|p| p.core == super::NO_CORE || usize::from(p.core) == core)
            })
            .unwrap_or(0)
    };
    if let Some(p) = t.procs.get_mut(&head) {
        p.passed_over = at != 0;
    }
    t.ready.remove(at)
}

/// Picks what runs next on this core and switches to it by rewriting `frame`.
///
/// Called on a tick, an IPI, a yield, or when the current process cannot go on (it sleeps,
/// waits or ended): a running process goes to the back of the ready queue if another is ready.
/// A process killed from another core ends here first.
pub(super) fn reschedule(t: &mut Table, frame: &mut TrapFrame) {
    let core = this_core();
    // Whether the process on this core goes on running (one look at its record).
    let mut running = false;
    if let Some(pid) = t.on_cpu[core] {
        if let Some(p) = t.procs.get_mut(&pid) {
            // (Looked at before it is taken: the common case writes nothing.)
            if p.kill.is_some() {
                let status = p.kill.take().expect("just seen");
                t.terminate(pid, status);
            } else {
                running = p.state == State::Running;
            }
        }
    }
    match t.on_cpu[core] {
        None => {
            // The core's own context was interrupted. It is switched out only from its idle
            // wait (anywhere else it may hold a lock that is not IRQ-safe, or be half-way
            // through something), and only when it has nothing to do.
            if frame.from_user() || !IDLE[core].load(Ordering::Relaxed) {
                return;
            }
            if core == 0 && KERNEL_WAKE.load(Ordering::Relaxed) {
                return;
            }
            if let Some(next) = take_ready(t, core) {
                switch(t, frame, Some(next));
            }
        }
        Some(_) => {
            if core == 0 && KERNEL_WAKE.load(Ordering::Relaxed) && t.home_ctx[0].is_some() {
                return switch(t, frame, None);
            }
            if running && (t.ready.is_empty() || t.ready.len() <= idle_cores(t)) {
                // Nothing waits (a yield or a tick with nothing else to run), or the idle cores
                // were kicked for what waits: they take it, and this process keeps running.
                return;
            }
            match take_ready(t, core) {
                Some(next) => switch(t, frame, Some(next)),
                None if running => {}
                None => switch(t, frame, None),
            }
        }
    }
}

/// Saves the context in `frame` to whoever ran on this core, loads `next`'s (a process, or the
/// core's own context for `None`) and switches the address space. A process is entered with
/// its ASID through `vm::enter_user` (ARM ARM ASID/TTBR0 sequence; this core's TLB is flushed
/// only on rollover); the core's own context runs with TTBR0 walks off, so no core keeps
/// walking the tables of a process that left it (they may be freed once it ends).
fn switch(t: &mut Table, frame: &mut TrapFrame, next: Option<super::Pid>) {
    let core = this_core();
    match t.on_cpu[core] {
        Some(pid) => {
            if let Some(p) = t.procs.get_mut(&pid) {
                if p.is_alive() {
                    // Invariant: a process's saved registers are always its own, from User
                    // mode (a kernel frame saved here would resume on another core's stack).
                    assert!(
                        frame.from_user(),
                        "core {core} saves a kernel frame (pc {:#x}) into pid {pid}",
                        frame.pc
                    );
                    p.ctx.copy_from(frame);
                    super::cpu_state::switch_out(p);
                    if p.state == State::Running {
                        p.state = State::Ready;
                        t.ready.push_back(pid);
                        // Another core may be idle: it takes the process at once.
                        kick_idle(t, None);
                    }
                }
            }
        }
        None => t.home_ctx[core] = Some(*frame),
    }
    match next {
        Some(pid) => {
            // Invariant: one core at a time runs a process.
            assert!(
                t.on_cpu
                    .iter()
                    .enumerate()
                    .all(|(c, &on)| c == core || on != Some(pid)),
                "pid {pid} is already on a core: {:?}",
                t.on_cpu
            );
            let p = t.procs.get_mut(&pid).expect("ready processes exist");
            p.state = State::Running;
            if p.core != super::NO_CORE && usize::from(p.core) != core {
                t.cores[core].migrations += 1;
            }
            let p = t.procs.get_mut(&pid).expect("ready processes exist");
            p.core = core as u8;
            frame.copy_from(&p.ctx);
            super::cpu_state::switch_in(p);
            let space = p.vm.as_mut().expect("a live process has its address space");
            let asid = vm::enter_user(space.l1_phys(), &mut p.context)
                .expect("every core is known to the ASID allocator");
            if p.asid != Some(asid) {
                // A new space, or a rollover took its old ASID: tag its maintenance with this.
                space.set_asid(asid);
                p.asid = Some(asid);
            }
        }
        None => {
            *frame = t.home_ctx[core]
                .take()
                .expect("the core's own context was switched out");
            // Invariant: a core's own context is kernel code, switched out from its wait.
            assert!(
                !frame.from_user(),
                "core {core}'s own context is a user frame"
            );
            vm::leave_user();
            super::cpu_state::switch_to_kernel();
            // KERNEL_WAKE stays set until the kernel task's idle wait ends (`idle_wait` clears
            // it): an interrupt taken before then must not switch it out again.
        }
    }
    t.on_cpu[core] = next;
    // The pid `getpid` reads without the table's lock (0: the core's own context).
    super::CURRENT_PID[core].store(next.unwrap_or(super::KERNEL_PID), Ordering::Relaxed);
    t.cores[core].switches += 1;
}

/// The kernel task's only wait: lets processes run (or the CPU sleep) until an interrupt has
/// been handled and the scheduler hands the CPU back. Callers loop around it, re-checking what
/// they wait for. IRQs are masked before and after, as everywhere in the kernel task.
pub fn idle_wait() {
    irq::disable();
    // The processes' card requests first (not when this wait is the card driver's own, inside
    // the service).
    debug_assert_eq!(this_core(), 0, "the kernel task is core 0's");
    super::files::service();
    // Nothing else to do on this core: zero a few frames ahead for demand-zero faults, never
    // from the frames the kernel keeps (the reserve) nor from a pool's worth above them, so
    // that what the pool holds never eats into the reserve.
    vm::refill_zero_pool(
        IDLE_ZERO_BATCH,
        super::reserve_frames() + ZERO_POOL_FRAMES as u32,
    );
    // A wake-up that came since the caller looked (another core's process ended, a card
    // request) is still set: then no sleep, the caller looks again.
    if wait_for_work(0) {
        aarch32_cpu::asm::wfi();
    }
    irq::enable();
    irq::disable();
    IDLE[0].store(false, Ordering::Relaxed);
    // Cleared only here, after the wait: the caller looks at what it waits for after this, so
    // a wake-up set from now on is for a later wait, which then does not sleep.
    KERNEL_WAKE.store(false, Ordering::Relaxed);
}

/// Marks this core's own context idle (switchable) and, if processes are ready, makes sure an
/// interrupt ends the WFI that follows. IRQs masked. The mark comes first: a core that makes a
/// process ready after the check below takes the table after this core released it, so it sees
/// the mark and sends an IPI (`kick_idle`); with IRQs masked, WFI still wakes on that pending
/// interrupt, which is taken right after the unmask, so no wake-up is lost.
///
/// Returns whether the core may sleep: not core 0 when the kernel task has been woken.
fn wait_for_work(core: usize) -> bool {
    IDLE[core].store(true, Ordering::Relaxed);
    if core == 0 && KERNEL_WAKE.load(Ordering::Relaxed) {
        return false;
    }
    if !TABLE.lock().ready.is_empty() {
        // Runnable processes: switch to them now rather than at the next tick.
        board_irq::raise_self_ipi();
    }
    true
}

/// Frames the idle loop zeroes into the pool per wait (about 1,700 instructions with IRQs
/// masked).
const IDLE_ZERO_BATCH: usize = 8;

/// Sleeps the kernel task for `ms` milliseconds, letting processes run; it gets core 0 back
/// at the first tick after the time is up.
pub fn kernel_sleep_ms(ms: u32) {
    let until = timer::now() + u64::from(ms) * u64::from(ticks_per_ms());
    while timer::now() < until {
        KERNEL_WAKE_AT.store(until, Ordering::Relaxed);
        idle_wait();
    }
    KERNEL_WAKE_AT.store(0, Ordering::Relaxed);
}
