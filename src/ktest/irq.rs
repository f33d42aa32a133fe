//! Interrupts on the target: the generic timer's frequency and deadlines, timer interrupts one
//! shot and periodic, the self-IPI, handler replacement and frame rewriting, the UART's receive
//! path set up, and everything put back afterwards.
//!
//! Waiting is done as the kernel's idle loop will do it: IRQs masked, check, WFI (which wakes on
//! a pending IRQ even while IRQs are masked), unmask to take it, mask, check again; so an
//! interrupt that comes between the check and the WFI is not slept through. Each wait gives up
//! after a bound measured on the counter. An interrupt that never reaches the core at all
//! leaves WFI asleep: the timeout around the QEMU run ends that, with this test's name last in
//! the log.

use super::Entry;
use crate::arch::arm::boot::mode;
use crate::arch::arm::exception::TrapFrame;
use crate::arch::arm::{self, barrier, timer};
use crate::init::BootInfo;
use crate::irq::{self, IrqSource};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub const ENTRIES: &[Entry] = &[
    Entry::Step("irq::init", start),
    Entry::Test("irq::cntfrq_is_set", cntfrq_is_set),
    Entry::Test(
        "irq::tick_conversions_round_deadlines_up_and_durations_down",
        tick_conversions,
    ),
    Entry::Test(
        "irq::routing_sends_timer_ipi_and_uart_to_core_0",
        routing_is_set_up,
    ),
    Entry::Test(
        "irq::a_timer_irq_arrives_once_after_a_1_ms_deadline",
        one_shot_timer,
    ),
    Entry::Test(
        "irq::without_a_handler_a_timer_irq_disables_the_timer",
        timer_default_handler,
    ),
    Entry::Test(
        "irq::a_handler_that_rearms_gets_10_periodic_ticks",
        periodic_ticks,
    ),
    Entry::Test(
        "irq::a_self_ipi_raised_twice_arrives_once_and_is_cleared",
        self_ipi,
    ),
    Entry::Test(
        "irq::a_later_handler_replaces_an_earlier_one",
        handler_replacement,
    ),
    Entry::Test(
        "irq::a_handler_that_rewrites_the_frame_changes_what_resumes",
        frame_rewrite,
    ),
    Entry::Test(
        "irq::uart_input_is_read_through_the_queue_without_blocking",
        uart_input,
    ),
    Entry::Test(
        "irq::tests_leave_irqs_masked_the_timer_off_and_default_handlers",
        all_put_back,
    ),
];

fn start(_info: &BootInfo) {
    irq::init();
}

fn hz() -> u32 {
    timer::frequency().expect("CNTFRQ")
}

/// IRQs masked, timer stopped, default handlers: the state every test starts from and leaves
/// (also after a test that failed half-way).
fn reset() {
    arm::irq::disable();
    timer::disable();
    for src in IrqSource::ALL {
        irq::remove_handler(src);
    }
}

/// Waits, in the idle-loop manner described above, until `done()` or `limit` ticks have
/// passed; returns whether `done()` became true. Leaves IRQs masked.
fn wait_for(done: impl Fn() -> bool, limit: u64) -> bool {
    let start = timer::now();
    loop {
        arm::irq::disable();
        if done() {
            return true;
        }
        if timer::now() - start >= limit {
            return false;
        }
        aarch32_cpu::asm::wfi();
        arm::irq::enable();
        // The unmask takes effect for the next instruction; a pending IRQ is taken here.
        barrier::isb();
    }
}

/// Spins `ticks` counter ticks with IRQs unmasked (to see interrupts that should not come),
/// then masks them.
fn spin_unmasked(ticks: u64) {
    let start = timer::now();
    arm::irq::enable();
    while timer::now() - start < ticks {
        core::hint::spin_loop();
    }
    arm::irq::disable();
}

fn cntfrq_is_set() {
    let hz = hz();
    print!("(CNTFRQ {hz} Hz) ");
    // A counter that moves: 100 us of spinning advances it.
    let a = timer::now();
    let b = loop {
        let b = timer::now();
        if b - a >= timer::us_to_ticks(100, hz) {
            break b;
        }
    };
    assert!(b > a);
}

fn tick_conversions() {
    const PI_HZ: u32 = 19_200_000;
    assert_eq!(timer::ms_to_ticks(1, PI_HZ), 19_200);
    assert_eq!(timer::us_to_ticks(1, PI_HZ), 20, "19.2 ticks round up");
    assert_eq!(timer::ticks_to_us(19, PI_HZ), 0, "19 ticks are < 1 us");
    assert_eq!(timer::ticks_to_ms(19_200_000, PI_HZ), 1000);
    assert_eq!(timer::ms_to_ticks(1, 62_500_000), 62_500);
    // No overflow for a counter that has run for years.
    let years = 10 * 365 * 24 * 3600 * u64::from(PI_HZ);
    assert_eq!(
        timer::ticks_to_us(years, PI_HZ),
        10 * 365 * 24 * 3600 * 1_000_000
    );
    assert_eq!(
        timer::ms_to_ticks(u32::MAX, PI_HZ),
        u64::from(u32::MAX) * 19_200
    );
}

fn routing_is_set_up() {
    use crate::bsp::raspi2::intc::{GpuIrq, Intc};
    use crate::bsp::raspi2::local_ic::LocalIc;
    use crate::bsp::raspi2::mmio::Mmio;
    let d = crate::vm::devices().unwrap();
    // SAFETY: the same mappings irq::init uses; these views only read.
    let (local, intc) = unsafe {
        (
            LocalIc::new(Mmio::new(d.local)),
            Intc::new(Mmio::new(d.intc)),
        )
    };
    assert_eq!(local.gpu_irq_core(), irq::IRQ_CORE);
    assert!(local.cntv_irq_enabled(irq::IRQ_CORE));
    assert!(local.mailbox_irq_enabled(irq::IRQ_CORE, irq::IPI_MAILBOX));
    assert!(intc.is_enabled(GpuIrq::UART0));
    assert!(intc.is_enabled(GpuIrq::EMMC));
    assert!(crate::console::rx_interrupts_enabled());
    assert!(!timer::is_enabled(), "irq::init leaves the timer stopped");
    assert_ne!(arm::cpsr() & (1 << 7), 0, "irq::init leaves IRQs masked");
}

static CALLS: AtomicU32 = AtomicU32::new(0);
static FIRED_AT: AtomicU64 = AtomicU64::new(0);
static PERIOD: AtomicU32 = AtomicU32::new(0);

fn one_shot_tick(_: &mut TrapFrame) {
    FIRED_AT.store(timer::now(), Ordering::SeqCst);
    CALLS.fetch_add(1, Ordering::SeqCst);
    timer::disable();
}

fn one_shot_timer() {
    reset();
    CALLS.store(0, Ordering::SeqCst);
    let hz = hz();
    let counted = irq::count(IrqSource::Timer);
    irq::set_handler(IrqSource::Timer, one_shot_tick);
    let ticks = timer::ms_to_ticks(1, hz) as u32;
    let start = timer::now();
    timer::set_deadline_after(ticks);
    timer::enable();
    let arrived = wait_for(
        || CALLS.load(Ordering::SeqCst) > 0,
        timer::ms_to_ticks(1000, hz),
    );
    spin_unmasked(timer::ms_to_ticks(2, hz));
    let deadline = timer::deadline();
    reset();
    assert!(arrived, "no timer IRQ within 1 s of a 1 ms deadline");
    assert_eq!(CALLS.load(Ordering::SeqCst), 1, "one deadline, one call");
    assert_eq!(irq::count(IrqSource::Timer), counted + 1);
    let fired = FIRED_AT.load(Ordering::SeqCst);
    assert!(fired >= deadline, "the handler ran before the deadline");
    let elapsed = fired - start;
    assert!(elapsed >= u64::from(ticks), "fired after {elapsed} ticks");
    print!("(after {} us) ", timer::ticks_to_us(elapsed, hz));
}

fn timer_default_handler() {
    reset();
    let hz = hz();
    let counted = irq::count(IrqSource::Timer);
    timer::set_deadline_after(timer::us_to_ticks(100, hz) as u32);
    timer::enable();
    let stopped = wait_for(|| !timer::is_enabled(), timer::ms_to_ticks(1000, hz));
    reset();
    assert!(stopped, "the default handler did not stop the timer");
    assert_eq!(irq::count(IrqSource::Timer), counted + 1);
}

fn periodic_tick(_: &mut TrapFrame) {
    let n = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    FIRED_AT.store(timer::now(), Ordering::SeqCst);
    if n < 10 {
        timer::set_deadline_after(PERIOD.load(Ordering::SeqCst));
    } else {
        timer::disable();
    }
}

fn periodic_ticks() {
    reset();
    CALLS.store(0, Ordering::SeqCst);
    let hz = hz();
    let period = timer::ms_to_ticks(1, hz) as u32;
    PERIOD.store(period, Ordering::SeqCst);
    irq::set_handler(IrqSource::Timer, periodic_tick);
    let start = timer::now();
    timer::set_deadline_after(period);
    timer::enable();
    let arrived = wait_for(
        || CALLS.load(Ordering::SeqCst) >= 10,
        timer::ms_to_ticks(1000, hz),
    );
    spin_unmasked(3 * u64::from(period));
    reset();
    let calls = CALLS.load(Ordering::SeqCst);
    assert!(arrived, "{calls} ticks within 1 s");
    assert_eq!(calls, 10, "the handler stopped the timer after 10");
    let elapsed = FIRED_AT.load(Ordering::SeqCst) - start;
    assert!(
        elapsed >= 10 * u64::from(period),
        "10 periods took {elapsed} ticks"
    );
    print!("(10 ticks in {} us) ", timer::ticks_to_us(elapsed, hz));
}

fn count_call(_: &mut TrapFrame) {
    CALLS.fetch_add(1, Ordering::SeqCst);
}

fn self_ipi() {
    reset();
    CALLS.store(0, Ordering::SeqCst);
    let hz = hz();
    let counted = irq::count(IrqSource::Ipi);
    irq::set_handler(IrqSource::Ipi, count_call);
    irq::raise_self_ipi();
    irq::raise_self_ipi();
    assert!(irq::self_ipi_pending(), "raised while IRQs are masked");
    let arrived = wait_for(
        || CALLS.load(Ordering::SeqCst) > 0,
        timer::ms_to_ticks(1000, hz),
    );
    // An IPI the handler failed to clear would come back at once, again and again.
    spin_unmasked(timer::ms_to_ticks(2, hz));
    let pending = irq::self_ipi_pending();
    reset();
    assert!(arrived, "no IPI within 1 s");
    assert_eq!(CALLS.load(Ordering::SeqCst), 1, "one IPI, one call");
    assert_eq!(irq::count(IrqSource::Ipi), counted + 1);
    assert!(!pending, "the mailbox was not cleared");
}

static FIRST_CALLS: AtomicU32 = AtomicU32::new(0);

fn first_handler(_: &mut TrapFrame) {
    FIRST_CALLS.fetch_add(1, Ordering::SeqCst);
}

fn handler_replacement() {
    reset();
    CALLS.store(0, Ordering::SeqCst);
    FIRST_CALLS.store(0, Ordering::SeqCst);
    irq::set_handler(IrqSource::Ipi, first_handler);
    irq::set_handler(IrqSource::Ipi, count_call);
    irq::raise_self_ipi();
    let arrived = wait_for(
        || CALLS.load(Ordering::SeqCst) > 0,
        timer::ms_to_ticks(1000, hz()),
    );
    reset();
    assert!(arrived, "no IPI within 1 s");
    assert_eq!(
        FIRST_CALLS.load(Ordering::SeqCst),
        0,
        "the replaced handler ran"
    );
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
    assert!(irq::handler(IrqSource::Ipi).is_none());
}

const REWRITTEN_R0: u32 = 0x5ca1_ab1e;
static SEEN_CPSR: AtomicU32 = AtomicU32::new(0);

fn rewrite_r0(frame: &mut TrapFrame) {
    SEEN_CPSR.store(frame.cpsr, Ordering::SeqCst);
    frame.r[0] = REWRITTEN_R0;
}

fn frame_rewrite() {
    reset();
    irq::set_handler(IrqSource::Ipi, rewrite_r0);
    irq::raise_self_ipi();
    let r0: u32;
    let left: u32;
    // SAFETY: register-only code. The IPI is pending before IRQs are unmasked, so it is taken
    // between the CPSIE and the CPSID, where only r0 and the loop counter are live; the handler
    // changes r0 in the saved frame, which the loop sees after the exception returns. The
    // counter bounds the loop if it never does.
    unsafe {
        core::arch::asm!(
            "cpsie i",
            "1:",
            "cmp r0, #0",
            "bne 2f",
            "subs {n}, {n}, #1",
            "bne 1b",
            "2:",
            "cpsid i",
            inout("r0") 0u32 => r0,
            n = inout(reg) 50_000_000u32 => left,
            // Not `nomem`: the handler writes memory while this runs, so the asm block is also
            // a compiler barrier for the statics read after it.
            options(nostack)
        );
    }
    reset();
    assert_eq!(
        r0, REWRITTEN_R0,
        "the interrupted code did not see the new r0"
    );
    assert!(left > 0);
    let cpsr = SEEN_CPSR.load(Ordering::SeqCst);
    assert_eq!(cpsr & 0x1f, mode::SVC, "interrupted in SVC");
    assert_eq!(cpsr & (1 << 7), 0, "the frame holds the unmasked CPSR");
}

fn uart_input() {
    reset();
    // The test run has no input (QEMU's serial reads an empty stdin): nothing to read, and
    // asking does not wait or take an interrupt.
    let counted = irq::count(IrqSource::Uart);
    assert!(!crate::console::rx_pending());
    assert_eq!(crate::console::read_byte(), None);
    spin_unmasked(timer::ms_to_ticks(1, hz()));
    assert_eq!(irq::count(IrqSource::Uart), counted);
    assert_eq!(crate::console::rx_dropped(), 0);
}

fn all_put_back() {
    assert_ne!(arm::cpsr() & (1 << 7), 0, "IRQs masked");
    assert!(!timer::is_enabled(), "timer stopped");
    assert!(!irq::self_ipi_pending());
    for src in IrqSource::ALL {
        assert!(
            irq::handler(src).is_none(),
            "{src:?} handler left installed"
        );
    }
    print!("({} spurious IRQ entries) ", irq::spurious_count());
}
