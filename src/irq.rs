//! Interrupts: the routing set up at boot, the top-level IRQ handler, and one handler slot per
//! source for the layers above (the scheduler, tests).
//!
//! The board's interrupts (UART, card) go to core 0; each core takes its own timer and its own
//! IPI mailbox once it schedules processes ([`enable_this_core`]). The sources:
//!
//! | [`IrqSource`] | what | path to the IRQ line | what happens without a handler |
//! |---|---|---|---|
//! | `Uart` | PL011 UART0 received input | UART RX/RX-timeout -> BCM2835 IC (GPU IRQ 57) -> ARM-local IC GPU source, routed to core 0 | the bytes go to the console's receive queue (always, handler or not) |
//! | `Timer` | this core's virtual timer's deadline passed | CNTV -> ARM-local IC, the core's nCNTVIRQ enable | the timer is disabled |
//! | `Ipi` | a core wrote this core's mailbox 0 ([`send_ipi`], [`raise_self_ipi`]) | ARM-local IC, the core's mailbox 0 IRQ enable | the mailbox is cleared |
//!
//! The board-vs-QEMU facts about the timer are in [`crate::arch::arm::timer`]; about the
//! controllers in [`crate::bsp::raspi2::local_ic`] and [`crate::bsp::raspi2::intc`].
//!
//! # Handlers
//!
//! [`set_handler`] stores a plain `fn(&mut TrapFrame)` per source in an atomic: it may be called
//! at any time, from anywhere, any number of times, and the latest call wins (the on-target tests
//! install their own handlers, then the scheduler installs its own); [`remove_handler`] restores
//! the default behaviour. A handler:
//! - runs in SVC mode with IRQs masked, on the SVC stack below the interrupted context's
//!   [`TrapFrame`], which it may rewrite: the exception return resumes whatever the frame then
//!   holds (this is how the scheduler switches processes on a tick);
//! - must not wait, and must not take a lock that other code holds with IRQs enabled (use
//!   `IrqSafeMutex` for anything shared with a handler);
//! - for `Timer`: must re-arm the deadline into the future or disable the timer, or the level
//!   interrupt enters again at once;
//! - for `Ipi`: finds the mailbox already cleared, so a new [`raise_self_ipi`] during or after it
//!   is a new interrupt, never a lost one.
//!
//! When several sources are pending at one entry, their handlers run in the order Uart, Timer,
//! Ipi, all with the same frame: if the timer handler switched the frame to another process, the
//! IPI handler sees (and acts on) that process, which is the one that will run.

use crate::arch::arm::exception::{self, TrapFrame};
use crate::arch::arm::{self, barrier, timer};
use crate::bsp::raspi2::intc::{GpuIrq, Intc};
use crate::bsp::raspi2::local_ic::LocalIc;
use crate::bsp::raspi2::mmio::Mmio;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// A source of interrupts the kernel handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqSource {
    /// The generic timer's virtual timer (CNTV) on core 0.
    Timer,
    /// Core 0's mailbox 0: a software interrupt ("reschedule now").
    Ipi,
    /// UART0 receive (after the bytes went to the console's receive queue).
    Uart,
    /// The SD card controller finished what a driver wait asked for (after its signal was
    /// withdrawn, see `emmc::on_interrupt`).
    Card,
}

impl IrqSource {
    /// Every source.
    pub const ALL: [IrqSource; 4] = [
        IrqSource::Timer,
        IrqSource::Ipi,
        IrqSource::Uart,
        IrqSource::Card,
    ];

    const fn index(self) -> usize {
        match self {
            IrqSource::Timer => 0,
            IrqSource::Ipi => 1,
            IrqSource::Uart => 2,
            IrqSource::Card => 3,
        }
    }
}

/// A per-source interrupt handler.
pub type Handler = fn(&mut TrapFrame);

/// The core that takes every interrupt.
pub const IRQ_CORE: usize = 0;
/// The ARM-local mailbox used as the software interrupt.
pub const IPI_MAILBOX: usize = 0;

struct Controllers {
    local: LocalIc,
    intc: Intc,
}

static CONTROLLERS: spin::Once<Controllers> = spin::Once::new();

/// Handler per source (a `Handler` cast to a pointer; null: the default).
static HANDLERS: [AtomicPtr<()>; 4] = [const { AtomicPtr::new(core::ptr::null_mut()) }; 4];
/// Interrupts taken per source.
static COUNTS: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
/// IRQ entries that found no source asserted (the line dropped before the handler looked).
static SPURIOUS: AtomicU32 = AtomicU32::new(0);

fn controllers() -> &'static Controllers {
    CONTROLLERS.get().expect("irq::init has run")
}

/// Sets up interrupts on core 0; called once after `vm2_start` (it needs the MMIO window), with
/// IRQs masked, which it leaves masked:
/// - every source of both controllers off (whatever the firmware left), the timer stopped
///   (not started: the scheduler arms it), mailbox 0 cleared;
/// - the ARM-local controller passes core 0's virtual timer and mailbox 0 to core 0's IRQ, and
///   routes the GPU interrupt controller's output there;
/// - the GPU interrupt controller passes the UART's and the card controller's interrupts, and the UART interrupts on
///   received input;
/// - the top-level handler is installed in the exception vectors.
pub fn init() {
    assert_eq!(arm::core_id() as usize, IRQ_CORE, "interrupts go to core 0");
    let devices = crate::vm::devices().expect("irq::init runs after vm2_start");
    let c = CONTROLLERS.call_once(|| Controllers {
        // SAFETY: vm2_start mapped the ARM-local page at `local` (Device, XN) for good.
        local: LocalIc::new(unsafe { Mmio::new(devices.local) }),
        // SAFETY: as above, the interrupt controller's registers at `intc`.
        intc: Intc::new(unsafe { Mmio::new(devices.intc) }),
    });
    let was_enabled = arm::irq::disable();
    timer::disable();
    c.local.quiesce();
    c.intc.disable_all();
    c.local.mailbox_clear(IRQ_CORE, IPI_MAILBOX, u32::MAX);
    c.local.enable_cntv_irq(IRQ_CORE);
    c.local.enable_mailbox_irq(IRQ_CORE, IPI_MAILBOX);
    c.local.route_gpu_irq_to(IRQ_CORE);
    c.intc.enable(GpuIrq::UART0);
    // The card controller signals nothing until a driver wait asks (IRPT_EN); then it may.
    c.intc.enable(GpuIrq::EMMC);
    crate::console::enable_rx_interrupts();
    exception::set_irq_handler(handle_irq);
    arm::irq::restore(was_enabled);
}

/// Installs `h` as the handler of `src`, replacing the previous one. Takes effect from the next
/// interrupt of that source.
pub fn set_handler(src: IrqSource, h: Handler) {
    HANDLERS[src.index()].store(h as *mut (), Ordering::Release);
}

/// Goes back to the default behaviour for `src` (see the table in the module documentation).
pub fn remove_handler(src: IrqSource) {
    HANDLERS[src.index()].store(core::ptr::null_mut(), Ordering::Release);
}

/// The handler installed for `src`, if any.
pub fn handler(src: IrqSource) -> Option<Handler> {
    let p = HANDLERS[src.index()].load(Ordering::Acquire);
    if p.is_null() {
        None
    } else {
        // SAFETY: the only non-null values stored are `Handler`s cast by `set_handler`; a fn
        // pointer survives the round trip through a data pointer on this target (both 32 bits).
        Some(unsafe { core::mem::transmute::<*mut (), Handler>(p) })
    }
}

/// Interrupts taken from `src` since boot (handled or defaulted).
pub fn count(src: IrqSource) -> u32 {
    COUNTS[src.index()].load(Ordering::Relaxed)
}

/// IRQ entries that found no source asserted.
pub fn spurious_count() -> u32 {
    SPURIOUS.load(Ordering::Relaxed)
}

/// Interrupts `core` through its ARM-local mailbox 0 (an IPI; this core too, see
/// [`raise_self_ipi`]). What the IPI asks for is in Normal memory, written before: the DSB
/// makes it visible before the mailbox write, a Device store that Normal stores are not
/// otherwise ordered with (ARM ARM A3.8.3).
pub fn send_ipi(core: usize) {
    barrier::dsb();
    controllers().local.mailbox_set(core, IPI_MAILBOX, 1);
}

/// Takes this core's own interrupts (a secondary core joining the scheduler): its virtual
/// timer and its IPI mailbox. The board's interrupts stay with core 0.
pub fn enable_this_core() {
    let c = controllers();
    let core = arm::core_id() as usize;
    c.local.enable_cntv_irq(core);
    c.local.enable_mailbox_irq(core, IPI_MAILBOX);
}

/// Raises the software interrupt on this core (sets a bit in its mailbox 0). It is taken as soon
/// as IRQs are unmasked, once however often it was raised before then. Panics before [`init`].
pub fn raise_self_ipi() {
    controllers()
        .local
        .mailbox_set(arm::core_id() as usize, IPI_MAILBOX, 1);
}

/// Whether this core's software interrupt is raised and not yet taken. Panics before [`init`].
pub fn self_ipi_pending() -> bool {
    controllers()
        .local
        .mailbox_read(arm::core_id() as usize, IPI_MAILBOX)
        != 0
}

/// Runs the handler of `src`, if any; returns whether there was one.
fn run(src: IrqSource, frame: &mut TrapFrame) -> bool {
    COUNTS[src.index()].fetch_add(1, Ordering::Relaxed);
    match handler(src) {
        Some(h) => {
            h(frame);
            true
        }
        None => false,
    }
}

/// The top-level IRQ handler, called by the exception vectors with the interrupted context.
fn handle_irq(frame: &mut TrapFrame) {
    let c = controllers();
    let core = arm::core_id() as usize;
    let sources = c.local.irq_sources(core);
    if sources.raw() == 0 {
        SPURIOUS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if sources.gpu() {
        let (gpu, basic) = c.intc.pending_enabled();
        let uart = 1u64 << GpuIrq::UART0.number();
        let card = 1u64 << GpuIrq::EMMC.number();
        if gpu & uart != 0 {
            // First the bytes (this also withdraws the UART's interrupt), then the handler.
            crate::console::drain_rx();
            run(IrqSource::Uart, frame);
        }
        if gpu & card != 0 {
            // First the signal withdrawn (the status stays latched for the driver), then the
            // handler (which wakes whoever waits for the card).
            crate::bsp::raspi2::emmc::on_interrupt();
            run(IrqSource::Card, frame);
        }
        if gpu & !(uart | card) != 0 || basic != 0 {
            panic!("IRQ from a GPU interrupt the kernel never enables: pending {gpu:#018x}, basic {basic:#x}");
        }
    }
    if sources.cntv() && !run(IrqSource::Timer, frame) {
        timer::disable();
    }
    if sources.mailbox(IPI_MAILBOX) {
        c.local.mailbox_clear(core, IPI_MAILBOX, u32::MAX);
        run(IrqSource::Ipi, frame);
    }
    if sources.others(IPI_MAILBOX) != 0 {
        panic!("IRQ from a source the kernel never enables: core {core} IRQ source {sources:?}");
    }
    // The device writes that withdraw interrupts (mailbox clear) complete before the exception
    // return unmasks IRQs, so the same interrupt is not taken again.
    barrier::dsb();
}
