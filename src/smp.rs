//! Cores 1-3: released at boot through their ARM-local mailbox 3 (the spin table), each reports
//! itself online and then idles in WFI with IRQs masked until the scheduler starts; from then
//! on each runs the scheduler's loop for its core ([`start_scheduling`]) and takes processes.
//!
//! A secondary core wakes from WFI when its IRQ line is asserted, even with CPSR.I set (ARM ARM
//! B1.8.13, WFI wake-up events), so core 0 wakes it by setting its ARM-local mailbox 0
//! ([`IPI_MAILBOX`], enabled for that core's IRQ by the core itself): before the scheduler the
//! interrupt is never taken, the core clears the mailbox and looks for work: a request to report
//! its own registers ([`snapshot`], which the tests use), or the scheduler to join.

use crate::arch::arm::{self, barrier, boot::mode, smp::CORES, timer};
use crate::bsp::raspi2::local_ic::LocalIc;
use crate::bsp::raspi2::mmio::Mmio;
use crate::irq::IPI_MAILBOX;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

/// The mailbox of the spin table: a core waits for its entry address there.
const RELEASE_MAILBOX: usize = 3;
/// How long core 0 waits at boot for a released core to report itself online (a core answers
/// in microseconds; the margin is for QEMU on a loaded host, where a vCPU may not run for tens
/// of milliseconds, and the test runs require all three).
pub const ANSWER_TIMEOUT_MS: u64 = 1000;
/// How long [`snapshot`] waits for an answer (generous: under QEMU on a loaded host a vCPU may
/// not run for tens of milliseconds).
pub const REQUEST_TIMEOUT_MS: u64 = 2000;

fn deadline_after(ms: u64) -> u64 {
    let hz = timer::frequency().map_or(19_200_000, u64::from);
    timer::now() + hz * ms / 1000
}

/// Waits up to `ms` for every released core to be online; returns how many are.
pub fn wait_online(ms: u64) -> usize {
    let deadline = deadline_after(ms);
    while online().count() < CORES - 1 && timer::now() < deadline {
        core::hint::spin_loop();
    }
    online().count()
}

/// The registers a core reports about itself (see [`snapshot`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub cpsr: u32,
    pub sctlr: u32,
    pub dacr: u32,
    pub cntkctl: u32,
    pub ttbcr: u32,
    pub ttbr0: u32,
    pub ttbr1: u32,
    pub contextidr: u32,
    pub vbar: u32,
    pub mpidr: u32,
    pub cpacr: u32,
    pub sp: u32,
    pub sp_irq: u32,
    pub sp_abt: u32,
    pub sp_und: u32,
}

const SNAPSHOT_WORDS: usize = 15;

impl Snapshot {
    fn words(&self) -> [u32; SNAPSHOT_WORDS] {
        [
            self.cpsr,
            self.sctlr,
            self.dacr,
            self.cntkctl,
            self.ttbcr,
            self.ttbr0,
            self.ttbr1,
            self.contextidr,
            self.vbar,
            self.mpidr,
            self.cpacr,
            self.sp,
            self.sp_irq,
            self.sp_abt,
            self.sp_und,
        ]
    }

    fn from_words(w: [u32; SNAPSHOT_WORDS]) -> Self {
        Self {
            cpsr: w[0],
            sctlr: w[1],
            dacr: w[2],
            cntkctl: w[3],
            ttbcr: w[4],
            ttbr0: w[5],
            ttbr1: w[6],
            contextidr: w[7],
            vbar: w[8],
            mpidr: w[9],
            cpacr: w[10],
            sp: w[11],
            sp_irq: w[12],
            sp_abt: w[13],
            sp_und: w[14],
        }
    }

    /// The registers of the core that runs this.
    fn take() -> Self {
        let (sp_irq, sp_abt, sp_und): (u32, u32, u32);
        // SAFETY: MRS (banked register) only reads the other modes' SPs (Virtualization
        // Extensions, ARM ARM B9.3); permitted from SVC, no side effects.
        unsafe {
            core::arch::asm!(
                ".arch_extension virt",
                "mrs {0}, sp_irq",
                "mrs {1}, sp_abt",
                "mrs {2}, sp_und",
                out(reg) sp_irq,
                out(reg) sp_abt,
                out(reg) sp_und,
                options(nomem, nostack, preserves_flags)
            )
        };
        use crate::arch::arm::cp15;
        use aarch32_cpu::register as r;
        Self {
            cpsr: arm::cpsr(),
            sctlr: r::Sctlr::read().raw_value(),
            dacr: crate::arch::arm::mmu::dacr(),
            cntkctl: r::Cntkctl::read().raw_value(),
            ttbcr: cp15::Ttbcr::read(),
            ttbr0: cp15::Ttbr0::read(),
            ttbr1: cp15::Ttbr1::read(),
            contextidr: cp15::Contextidr::read(),
            vbar: cp15::Vbar::read(),
            mpidr: r::Mpidr::read().0,
            cpacr: r::Cpacr::read().0,
            sp: arm::sp(),
            sp_irq,
            sp_abt,
            sp_und,
        }
    }
}

/// What core 0 knows of one core. (A): atomic, written by the core itself except `request`.
struct CoreRecord {
    /// The core has entered `secondary_main`.
    online: AtomicBool,
    /// Released (its mailbox 3 written) by `start_secondaries`.
    released: AtomicBool,
    /// MPIDR as the core read it.
    mpidr: AtomicU32,
    /// CPSR when the core entered `secondary_entry`.
    entry_cpsr: AtomicU32,
    /// Requests: core 0 increments `request`, the core answers with `done` = `request`.
    request: AtomicU32,
    done: AtomicU32,
    /// The function a request asks the core to run ([`start_on`]; 0: a [`snapshot`]), and what
    /// it returned.
    call: AtomicUsize,
    result: AtomicU32,
    snapshot: [AtomicU32; SNAPSHOT_WORDS],
}

static RECORDS: [CoreRecord; CORES] = [const {
    CoreRecord {
        online: AtomicBool::new(false),
        released: AtomicBool::new(false),
        mpidr: AtomicU32::new(0),
        entry_cpsr: AtomicU32::new(0),
        request: AtomicU32::new(0),
        done: AtomicU32::new(0),
        call: AtomicUsize::new(0),
        result: AtomicU32::new(0),
        snapshot: [const { AtomicU32::new(0) }; SNAPSHOT_WORDS],
    }
}; CORES];

/// The state of one secondary core after [`start_secondaries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreState {
    /// Online: its MPIDR and the mode it was entered in (CPSR.M at `secondary_entry`).
    Online { mpidr: u32, entry_mode: u32 },
    /// Released but silent within [`ANSWER_TIMEOUT_MS`]: not started by whoever booted us
    /// (or stuck); the kernel runs without it.
    NoAnswer,
    /// Not released ([`start_secondaries`] has not run).
    Parked,
}

/// The state of `core` (1-3).
pub fn state(core: usize) -> CoreState {
    let r = &RECORDS[core];
    if r.online.load(Ordering::Acquire) {
        CoreState::Online {
            mpidr: r.mpidr.load(Ordering::Relaxed),
            entry_mode: r.entry_cpsr.load(Ordering::Relaxed) & 0x1f,
        }
    } else if r.released.load(Ordering::Relaxed) {
        CoreState::NoAnswer
    } else {
        CoreState::Parked
    }
}

/// The secondary cores that are online.
pub fn online() -> impl Iterator<Item = usize> {
    (1..CORES).filter(|&c| RECORDS[c].online.load(Ordering::Acquire))
}

fn local_ic() -> LocalIc {
    let devices = crate::vm::devices().expect("the MMIO window is up (vm2_start)");
    // SAFETY: vm2_start mapped the ARM-local page at `local` (Device, XN) for good; each core
    // touches only its own mailbox registers, and core 0 only the others' set registers.
    LocalIc::new(unsafe { Mmio::new(devices.local) })
}

/// Releases cores 1-3 (on core 0, after `vm2_start` and `irq::init`, IRQs masked): writes the
/// physical address of the boot stub's `secondary_entry` into each core's mailbox 3, SEV, then
/// waits up to [`ANSWER_TIMEOUT_MS`] (by CNTVCT) for each to report itself online. A core that
/// does not answer is reported by [`print`] and left alone. Runs once; later calls return the
/// states found.
pub fn start_secondaries() -> [CoreState; CORES] {
    assert_eq!(arm::core_id(), 0, "core 0 releases the others");
    if !RECORDS[1..]
        .iter()
        .any(|r| r.released.load(Ordering::Relaxed))
    {
        crate::arch::arm::smp::prepare();
        let entry = crate::arch::arm::smp::entry_pa().as_u32();
        let local = local_ic();
        for (core, rec) in RECORDS.iter().enumerate().skip(1) {
            rec.released.store(true, Ordering::Relaxed);
            // The spin loops read mailbox 3 and take any nonzero value as the entry: it is
            // zero at reset and cleared by the core that took it.
            local.mailbox_set(core, RELEASE_MAILBOX, entry);
        }
        // The mailbox writes complete before the event (a parked core may re-check and sleep
        // again before they land otherwise), then wake the WFE loops (ARM ARM B1.8.13).
        barrier::dsb();
        aarch32_cpu::asm::sev();
        wait_online(ANSWER_TIMEOUT_MS);
    }
    let mut states = [CoreState::Parked; CORES];
    for (core, s) in states.iter_mut().enumerate().skip(1) {
        *s = state(core);
    }
    states
}

/// The boot log lines of the bring-up.
pub fn print(states: &[CoreState; CORES]) {
    let up = states
        .iter()
        .filter(|s| matches!(s, CoreState::Online { .. }))
        .count();
    println!(
        "secondary cores: {up} of {} online (mailbox 3 release), idle in WFI until the scheduler \
         starts, then scheduling on every online core",
        CORES - 1
    );
    for (core, s) in states.iter().enumerate().skip(1) {
        match *s {
            CoreState::Online { mpidr, entry_mode } => {
                let tops = crate::arch::arm::boot::core_stack_tops(core);
                println!(
                    "  core {core}       : online, entered in {}, now SVC (MPIDR {mpidr:#010x}), \
                     SVC stack {:#010x}..{:#010x}",
                    mode::name(entry_mode),
                    tops[0] - crate::arch::arm::boot::SVC_STACK_SIZE,
                    tops[0]
                )
            }
            CoreState::NoAnswer => println!(
                "  core {core}       : no answer within {ANSWER_TIMEOUT_MS} ms (not started by \
                 the boot loader?): the kernel runs without it"
            ),
            CoreState::Parked => println!("  core {core}       : parked"),
        }
    }
}

/// What each secondary core runs once the scheduler has started (IRQs masked, on its own
/// stack); set once by [`start_scheduling`].
static SCHEDULER: spin::Once<fn(usize) -> !> = spin::Once::new();

/// Has every online secondary core (and any that comes online later) run `loop_fn(core)`: the
/// scheduler's loop for that core. Called once, by the scheduler on core 0 as it starts.
pub fn start_scheduling(loop_fn: fn(usize) -> !) {
    SCHEDULER.call_once(|| loop_fn);
    for core in online() {
        crate::irq::send_ipi(core);
    }
}

/// Answers a pending request for `core` (a secondary core, on itself): a [`snapshot`], or a
/// function to run ([`start_on`]).
pub fn answer_requests(core: usize) {
    let r = &RECORDS[core];
    let want = r.request.load(Ordering::Acquire);
    if r.done.load(Ordering::Relaxed) != want {
        match r.call.load(Ordering::Relaxed) {
            0 => {
                for (a, v) in r.snapshot.iter().zip(Snapshot::take().words()) {
                    a.store(v, Ordering::Relaxed);
                }
            }
            f => {
                // SAFETY: only `start_on` stores a nonzero value, a `fn() -> u32` cast to usize
                // (a code address survives the round trip on this target).
                let f = unsafe { core::mem::transmute::<usize, fn() -> u32>(f) };
                r.result.store(f(), Ordering::Relaxed);
            }
        }
        r.done.store(want, Ordering::Release);
    }
}

/// Files a request with online secondary `core` and wakes it; returns the request's number,
/// or `None` if the core is not online or still busy with an earlier request.
fn request(core: usize, call: usize) -> Option<u32> {
    let r = RECORDS.get(core)?;
    if core == 0
        || !r.online.load(Ordering::Acquire)
        || r.done.load(Ordering::Acquire) != r.request.load(Ordering::Relaxed)
    {
        return None;
    }
    r.call.store(call, Ordering::Relaxed);
    let want = r.request.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
    // The request is visible before the mailbox write that wakes the core (Normal memory store
    // before a Device store: DSB, ARM ARM A3.8.3).
    barrier::dsb();
    local_ic().mailbox_set(core, IPI_MAILBOX, 1);
    Some(want)
}

/// Waits (up to [`REQUEST_TIMEOUT_MS`]) for request `want` of `core` to be answered.
fn answered(core: usize, want: u32) -> bool {
    let r = &RECORDS[core];
    let deadline = deadline_after(REQUEST_TIMEOUT_MS);
    while r.done.load(Ordering::Acquire) != want {
        if timer::now() >= deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// Has online secondary `core` run `f` (before the scheduler starts: benchmarks and tests that
/// need code on several cores at once). Returns at once; [`result_of`] waits for the answer.
pub fn start_on(core: usize, f: fn() -> u32) -> bool {
    request(core, f as usize).is_some()
}

/// What the function [`start_on`] gave `core` returned, once it has (`None` after
/// [`REQUEST_TIMEOUT_MS`]).
pub fn result_of(core: usize) -> Option<u32> {
    let r = RECORDS.get(core)?;
    answered(core, r.request.load(Ordering::Acquire)).then(|| r.result.load(Ordering::Relaxed))
}

/// Asks online secondary `core` for its registers: sets the request, wakes the core through
/// its mailbox 0 and waits (up to [`REQUEST_TIMEOUT_MS`]) for the answer. `None` if the core is
/// not online or does not answer.
pub fn snapshot(core: usize) -> Option<Snapshot> {
    let want = request(core, 0)?;
    if !answered(core, want) {
        return None;
    }
    let r = &RECORDS[core];
    let mut w = [0u32; SNAPSHOT_WORDS];
    for (v, a) in w.iter_mut().zip(&r.snapshot) {
        *v = a.load(Ordering::Relaxed);
    }
    Some(Snapshot::from_words(w))
}

/// A secondary core in Rust (from `secondary_main_entry`): SVC, its own stacks, MMU and caches
/// on, A/I/F masked. Finishes the core's set-up as core 0 has it, reports itself online, then
/// idles.
pub fn secondary_main(core: usize, entry_cpsr: u32) -> ! {
    assert!((1..CORES).contains(&core), "secondary_main on core {core}");
    // CPACR/FPEXC as core 0 (cp10/cp11 open, the unit off until a process uses it).
    arm::fpu::init_this_core();
    // Vectors in place (high vector page): an asynchronous abort is reported where it happens.
    arm::irq::unmask_async_aborts();
    let local = local_ic();
    local.mailbox_clear(core, IPI_MAILBOX, u32::MAX);
    // Only to wake WFI: CPSR.I stays set, the interrupt is never taken.
    local.enable_mailbox_irq(core, IPI_MAILBOX);
    let r = &RECORDS[core];
    r.mpidr
        .store(aarch32_cpu::register::Mpidr::read().0, Ordering::Relaxed);
    r.entry_cpsr.store(entry_cpsr, Ordering::Relaxed);
    r.online.store(true, Ordering::Release);
    loop {
        answer_requests(core);
        if let Some(scheduler) = SCHEDULER.get() {
            scheduler(core);
        }
        aarch32_cpu::asm::wfi();
        let pending = local.mailbox_read(core, IPI_MAILBOX);
        local.mailbox_clear(core, IPI_MAILBOX, pending);
    }
}
