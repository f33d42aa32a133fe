//! Round-robin scheduling on core 0: the tick, the switch, and the kernel task's idle wait.

use super::{State, Table, KERNEL_IDLE, KERNEL_WAKE, TABLE, TICK_MS};
use crate::arch::arm::exception::TrapFrame;
use crate::arch::arm::{irq, timer};
use crate::irq as board_irq;
use crate::mm::zero_pool::ZERO_POOL_FRAMES;
use crate::vm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

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
/// never): the deadline of a device wait it sleeps in.
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
    timer::set_deadline_after(slice);
    timer::enable();
    STARTED.store(true, Ordering::Release);
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
    match TABLE.try_lock() {
        Some(t) if t.current.is_none() => {}
        _ => return false,
    }
    KERNEL_WAKE_AT.store(deadline.unwrap_or(0), Ordering::Relaxed);
    let nested = IN_DEVICE_WAIT.swap(true, Ordering::Relaxed);
    idle_wait();
    IN_DEVICE_WAIT.store(nested, Ordering::Relaxed);
    KERNEL_WAKE_AT.store(0, Ordering::Relaxed);
    true
}

fn on_tick(frame: &mut TrapFrame) {
    timer::set_deadline_after(SLICE_TICKS.load(Ordering::Relaxed));
    let now = timer::now();
    let wake_at = KERNEL_WAKE_AT.load(Ordering::Relaxed);
    if wake_at != 0 && now >= wake_at {
        wake_kernel();
    }
    let mut t = TABLE.lock();
    t.ticks += 1;
    if let Some(pid) = t.current {
        if let Some(p) = t.procs.get_mut(&pid) {
            p.ticks += 1;
        }
    }
    let Table { procs, ready, .. } = &mut *t;
    for p in procs.values_mut() {
        if let State::Sleeping { until } = p.state {
            if until <= now {
                p.state = State::Ready;
                ready.push_back(p.pid);
            }
        }
    }
    reschedule(&mut t, frame);
}

fn on_ipi(frame: &mut TrapFrame) {
    // The IPI only starts processes the idle kernel task has made ready; a process that runs
    // already keeps its time slice (a tick in the same interrupt entry may just have chosen it).
    let mut t = TABLE.lock();
    if t.current.is_none() {
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
/// ended): it gets the CPU at the next decision.
pub(super) fn wake_kernel() {
    KERNEL_WAKE.store(true, Ordering::Relaxed);
}

/// Picks what runs next and switches to it by rewriting `frame`.
///
/// Called on a tick, a yield, or when the current process cannot go on (it sleeps, waits or
/// ended): a running process goes to the back of the ready queue if another is ready.
pub(super) fn reschedule(t: &mut Table, frame: &mut TrapFrame) {
    match t.current {
        None => {
            // The kernel task was interrupted. It is switched out only from its idle wait
            // (anywhere else it may hold a lock that is not IRQ-safe, or be half-way through
            // something), and only when it has nothing to do.
            if frame.from_user() || !KERNEL_IDLE.load(Ordering::Relaxed) {
                return;
            }
            if KERNEL_WAKE.load(Ordering::Relaxed) {
                return;
            }
            if let Some(next) = t.ready.pop_front() {
                switch(t, frame, Some(next));
            }
        }
        Some(pid) => {
            let running = t.procs.get(&pid).is_some_and(|p| p.state == State::Running);
            if KERNEL_WAKE.load(Ordering::Relaxed) && t.kernel_ctx.is_some() {
                return switch(t, frame, None);
            }
            match t.ready.pop_front() {
                Some(next) => switch(t, frame, Some(next)),
                None if running => {}
                None => switch(t, frame, None),
            }
        }
    }
}

/// Saves the context in `frame` to whoever ran, loads `next`'s (a process, or the kernel task
/// for `None`) and switches the address space. A process is entered with its ASID through
/// `vm::enter_user` (ARM ARM ASID/TTBR0 sequence; the TLB is flushed only on rollover).
fn switch(t: &mut Table, frame: &mut TrapFrame, next: Option<super::Pid>) {
    match t.current {
        Some(pid) => {
            if let Some(p) = t.procs.get_mut(&pid) {
                if p.is_alive() {
                    p.ctx.copy_from(frame);
                    super::cpu_state::switch_out(p);
                    if p.state == State::Running {
                        p.state = State::Ready;
                        t.ready.push_back(pid);
                    }
                }
            }
        }
        None => t.kernel_ctx = Some(*frame),
    }
    match next {
        Some(pid) => {
            let p = t.procs.get_mut(&pid).expect("ready processes exist");
            p.state = State::Running;
            frame.copy_from(&p.ctx);
            super::cpu_state::switch_in(p);
            let space = p.vm.as_mut().expect("a live process has its address space");
            let asid = vm::enter_user(space.l1_phys(), &mut p.context)
                .expect("CPU 0 is known to the ASID allocator");
            if p.asid != Some(asid) {
                // A new space, or a rollover took its old ASID: tag its maintenance with this.
                space.set_asid(asid);
                p.asid = Some(asid);
            }
        }
        None => {
            *frame = t
                .kernel_ctx
                .take()
                .expect("the kernel task was switched out");
            vm::leave_user();
            super::cpu_state::switch_to_kernel();
            // KERNEL_WAKE stays set until the kernel task waits again (`idle_wait` clears
            // it): an interrupt taken before it leaves the idle wait must not switch it out.
        }
    }
    t.current = next;
    // The pid `getpid` reads without the table's lock (0: the kernel task). One core today; on
    // several it becomes per-core.
    super::CURRENT_PID.store(next.unwrap_or(super::KERNEL_PID), Ordering::Relaxed);
    t.switches += 1;
}

/// The kernel task's only wait: lets processes run (or the CPU sleep) until an interrupt has
/// been handled and the scheduler hands the CPU back. Callers loop around it, re-checking what
/// they wait for. IRQs are masked before and after, as everywhere in the kernel task.
pub fn idle_wait() {
    irq::disable();
    // The processes' card requests first (not when this wait is the card driver's own, inside
    // the service).
    super::files::service();
    if !TABLE.lock().ready.is_empty() {
        // Runnable processes: switch to them now rather than at the next tick.
        board_irq::raise_self_ipi();
    }
    KERNEL_WAKE.store(false, Ordering::Relaxed);
    // Nothing else to do on this core: zero a few frames ahead for demand-zero faults, never
    // from the frames the kernel keeps (the reserve) nor from a pool's worth above them, so
    // that what the pool holds never eats into the reserve.
    vm::refill_zero_pool(
        IDLE_ZERO_BATCH,
        super::reserve_frames() + ZERO_POOL_FRAMES as u32,
    );
    KERNEL_IDLE.store(true, Ordering::Relaxed);
    // With IRQs masked, WFI still wakes on a pending interrupt; it is taken right after the
    // unmask, so no wake-up is lost between the check above and the wait.
    aarch32_cpu::asm::wfi();
    irq::enable();
    irq::disable();
    KERNEL_IDLE.store(false, Ordering::Relaxed);
}

/// Frames the idle loop zeroes into the pool per wait (about 1,700 instructions with IRQs
/// masked).
const IDLE_ZERO_BATCH: usize = 8;

/// Sleeps the kernel task for `ms` milliseconds, letting processes run.
pub fn kernel_sleep_ms(ms: u32) {
    let until = timer::now() + u64::from(ms) * u64::from(ticks_per_ms());
    while timer::now() < until {
        idle_wait();
    }
}
