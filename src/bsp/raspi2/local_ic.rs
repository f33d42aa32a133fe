//! The BCM2836 ARM-local interrupt controller ("QA7", ARM-local peripherals rev 3.4, at physical
//! 0x4000_0000): per-core routing of the generic timers, the core mailboxes and the GPU's
//! interrupt line to each core's IRQ or FIQ input.
//!
//! There is no GIC on the BCM2836. Each core's IRQ input is the OR of the sources enabled for it
//! here:
//!
//! | bit in the core's IRQ source register | source | enabled by |
//! |---|---|---|
//! | 0-3 | the core's CNTPS, CNTPNS, CNTHP, CNTV timer outputs | core timer interrupt control, same bit |
//! | 4-7 | the core's mailboxes 0-3 (any bit set) | core mailbox interrupt control, bits 0-3 |
//! | 8 | the GPU interrupt controller's output (BCM2835 "ARM" IC) | GPU routing: one core |
//! | 9, 10, 11 | PMU, AXI counters, local timer | not used |
//!
//! Each core has four 32-bit mailboxes: a write to "write-set" ORs bits in, a write to
//! "read/write-clear" clears the bits written, a read of it returns the value. A mailbox with any
//! bit set interrupts its core if enabled, so a core writing its own mailbox raises a software
//! interrupt on itself: the kernel uses mailbox 0 as a "reschedule now" IPI. Mailbox 3 is the
//! firmware's (and the boot stub's) spin-table release for cores 1-3 and is not touched here.
//!
//! QEMU's raspi2b models the same registers (`bcm2836_control`) and wires each CPU's virtual
//! timer output to the CNTV input of its core; its source register shows only enabled sources.

use super::mmio::Mmio;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs, LocalRegisterCopy};

/// Cores in the cluster.
pub const CORES: usize = 4;
/// Mailboxes per core.
pub const MAILBOXES: usize = 4;

register_bitfields! {
    u32,
    /// GPU interrupt routing (0x0C): which core gets the GPU IRQ and the GPU FIQ.
    pub GPU_ROUTING [
        IRQ_CORE OFFSET(0) NUMBITS(2) [],
        FIQ_CORE OFFSET(2) NUMBITS(2) []
    ],
    /// Core n timers interrupt control (0x40 + 4n): IRQ enables in bits 0-3, FIQ in 4-7.
    pub TIMER_INT [
        CNTPS_IRQ OFFSET(0) NUMBITS(1) [],
        CNTPNS_IRQ OFFSET(1) NUMBITS(1) [],
        CNTHP_IRQ OFFSET(2) NUMBITS(1) [],
        CNTV_IRQ OFFSET(3) NUMBITS(1) [],
        FIQ OFFSET(4) NUMBITS(4) []
    ],
    /// Core n mailboxes interrupt control (0x50 + 4n): IRQ enables in bits 0-3, FIQ in 4-7.
    pub MAILBOX_INT [
        IRQ OFFSET(0) NUMBITS(4) [],
        FIQ OFFSET(4) NUMBITS(4) []
    ],
    /// Core n IRQ source (0x60 + 4n), read only.
    pub IRQ_SOURCE [
        CNTPS OFFSET(0) NUMBITS(1) [],
        CNTPNS OFFSET(1) NUMBITS(1) [],
        CNTHP OFFSET(2) NUMBITS(1) [],
        CNTV OFFSET(3) NUMBITS(1) [],
        MAILBOX OFFSET(4) NUMBITS(4) [],
        GPU OFFSET(8) NUMBITS(1) [],
        PMU OFFSET(9) NUMBITS(1) [],
        AXI OFFSET(10) NUMBITS(1) [],
        LOCAL_TIMER OFFSET(11) NUMBITS(1) []
    ],
    /// Local timer control and status (0x34).
    pub LOCAL_TIMER [
        RELOAD OFFSET(0) NUMBITS(28) [],
        ENABLE OFFSET(28) NUMBITS(1) [],
        INT_ENABLE OFFSET(29) NUMBITS(1) [],
        INT_FLAG OFFSET(31) NUMBITS(1) []
    ]
}

register_structs! {
    pub LocalIcRegs {
        (0x00 => _control),
        (0x0c => gpu_routing: ReadWrite<u32, GPU_ROUTING::Register>),
        (0x10 => pmu_routing_set: WriteOnly<u32>),
        (0x14 => pmu_routing_clear: WriteOnly<u32>),
        (0x18 => _timers),
        (0x34 => local_timer: ReadWrite<u32, LOCAL_TIMER::Register>),
        (0x38 => local_timer_clear: WriteOnly<u32>),
        (0x3c => _reserved),
        (0x40 => timer_int: [ReadWrite<u32, TIMER_INT::Register>; CORES]),
        (0x50 => mailbox_int: [ReadWrite<u32, MAILBOX_INT::Register>; CORES]),
        (0x60 => irq_source: [ReadOnly<u32, IRQ_SOURCE::Register>; CORES]),
        (0x70 => _fiq_source),
        // Index: core * MAILBOXES + mailbox.
        (0x80 => mailbox_set: [WriteOnly<u32>; CORES * MAILBOXES]),
        (0xc0 => mailbox_clear: [ReadWrite<u32>; CORES * MAILBOXES]),
        (0x100 => @END),
    }
}

/// What a core's IRQ source register said: the sources asserting that core's IRQ now.
#[derive(Clone, Copy)]
pub struct IrqSources(LocalRegisterCopy<u32, IRQ_SOURCE::Register>);

impl IrqSources {
    /// The virtual timer (CNTV) of the core.
    pub fn cntv(&self) -> bool {
        self.0.is_set(IRQ_SOURCE::CNTV)
    }

    /// Mailbox `mbox` (0-3) of the core holds a nonzero value.
    pub fn mailbox(&self, mbox: usize) -> bool {
        mbox < MAILBOXES && self.0.read(IRQ_SOURCE::MAILBOX) & (1 << mbox) != 0
    }

    /// The GPU interrupt controller has an enabled interrupt pending (routed to this core).
    pub fn gpu(&self) -> bool {
        self.0.is_set(IRQ_SOURCE::GPU)
    }

    /// The raw register value.
    pub fn raw(&self) -> u32 {
        self.0.get()
    }

    /// Bits other than CNTV, mailbox `mbox` and GPU: sources the kernel never enables.
    pub fn others(&self, mbox: usize) -> u32 {
        let known = IRQ_SOURCE::CNTV::SET.value
            | 1 << (IRQ_SOURCE::MAILBOX.shift + mbox)
            | IRQ_SOURCE::GPU::SET.value;
        self.0.get() & !known
    }
}

impl core::fmt::Debug for IrqSources {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "IrqSources({:#x})", self.0.get())
    }
}

/// The ARM-local interrupt controller at a mapped base.
pub struct LocalIc {
    regs: Mmio<LocalIcRegs>,
}

impl LocalIc {
    /// Wraps the registers (no hardware access).
    pub const fn new(regs: Mmio<LocalIcRegs>) -> Self {
        Self { regs }
    }

    /// Turns off every source the kernel does not use, for every core: timer and mailbox
    /// interrupts (except mailbox 3, which parked cores poll without interrupts), PMU routing
    /// and the local timer. Whatever the firmware (or a chain-loader) left enabled cannot then
    /// raise an interrupt nobody handles.
    pub fn quiesce(&self) {
        let r = &self.regs;
        for core in 0..CORES {
            r.timer_int[core].set(0);
            r.mailbox_int[core].set(0);
        }
        r.pmu_routing_clear.set(0xff);
        r.local_timer.set(0);
        r.local_timer_clear.set(LOCAL_TIMER::INT_FLAG::SET.value);
    }

    /// Routes the GPU interrupt controller's IRQ output to `core`.
    pub fn route_gpu_irq_to(&self, core: usize) {
        assert!(core < CORES);
        self.regs
            .gpu_routing
            .modify(GPU_ROUTING::IRQ_CORE.val(core as u32));
    }

    /// The core the GPU IRQ goes to.
    pub fn gpu_irq_core(&self) -> usize {
        self.regs.gpu_routing.read(GPU_ROUTING::IRQ_CORE) as usize
    }

    /// Lets `core`'s virtual timer (CNTV) interrupt `core` (nCNTVIRQ IRQ enable).
    pub fn enable_cntv_irq(&self, core: usize) {
        self.regs.timer_int[core].modify(TIMER_INT::CNTV_IRQ::SET);
    }

    /// Stops `core`'s virtual timer from interrupting it.
    pub fn disable_cntv_irq(&self, core: usize) {
        self.regs.timer_int[core].modify(TIMER_INT::CNTV_IRQ::CLEAR);
    }

    /// Whether `core`'s virtual timer may interrupt it.
    pub fn cntv_irq_enabled(&self, core: usize) -> bool {
        self.regs.timer_int[core].is_set(TIMER_INT::CNTV_IRQ)
    }

    /// Lets a nonzero mailbox `mbox` of `core` raise `core`'s IRQ.
    pub fn enable_mailbox_irq(&self, core: usize, mbox: usize) {
        assert!(mbox < MAILBOXES);
        let irq = self.regs.mailbox_int[core].read(MAILBOX_INT::IRQ) | 1 << mbox;
        self.regs.mailbox_int[core].modify(MAILBOX_INT::IRQ.val(irq));
    }

    /// Whether mailbox `mbox` of `core` may raise `core`'s IRQ.
    pub fn mailbox_irq_enabled(&self, core: usize, mbox: usize) -> bool {
        mbox < MAILBOXES && self.regs.mailbox_int[core].read(MAILBOX_INT::IRQ) & (1 << mbox) != 0
    }

    /// The sources asserting `core`'s IRQ now.
    pub fn irq_sources(&self, core: usize) -> IrqSources {
        IrqSources(self.regs.irq_source[core].extract())
    }

    /// Sets `bits` in mailbox `mbox` of `core` (write-set: other bits are kept). With that
    /// mailbox's interrupt enabled, this interrupts `core`.
    pub fn mailbox_set(&self, core: usize, mbox: usize, bits: u32) {
        self.regs.mailbox_set[core * MAILBOXES + mbox].set(bits);
    }

    /// The value of mailbox `mbox` of `core`.
    pub fn mailbox_read(&self, core: usize, mbox: usize) -> u32 {
        self.regs.mailbox_clear[core * MAILBOXES + mbox].get()
    }

    /// Clears `bits` in mailbox `mbox` of `core` (write-1-to-clear).
    pub fn mailbox_clear(&self, core: usize, mbox: usize, bits: u32) {
        self.regs.mailbox_clear[core * MAILBOXES + mbox].set(bits);
    }
}
