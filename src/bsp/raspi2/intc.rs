//! The BCM2835 "ARM" interrupt controller (BCM2835 ARM Peripherals, ch. 7), which gathers the 64
//! GPU peripheral interrupts and the 8 ARM-side "basic" ones into one IRQ line. On the BCM2836
//! that line enters the ARM-local controller as its GPU source ([`super::local_ic`]), which
//! routes it to one core.
//!
//! Physical 0x3F00_B200 (bus 0x7E00_B200); the registers share their 4 KiB page with the
//! VideoCore mailbox at 0x3F00_B880. Enables are set by writing 1s to "enable" and cleared by
//! writing 1s to "disable"; "enable" reads back the current enables (QEMU reads "disable" as
//! their complement). Only the PL011 (GPU IRQ 57) is used.

use super::mmio::Mmio;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_structs! {
    pub IntcRegs {
        (0x00 => basic_pending: ReadOnly<u32>),
        /// GPU IRQs 0-31 and 32-63 pending.
        (0x04 => pending: [ReadOnly<u32>; 2]),
        (0x0c => fiq_control: ReadWrite<u32>),
        /// Write 1s to enable GPU IRQs 0-31 / 32-63; reads back the enables.
        (0x10 => enable: [ReadWrite<u32>; 2]),
        (0x18 => enable_basic: ReadWrite<u32>),
        /// Write 1s to disable GPU IRQs 0-31 / 32-63 (never read here).
        (0x1c => disable: [ReadWrite<u32>; 2]),
        (0x24 => disable_basic: ReadWrite<u32>),
        (0x28 => @END),
    }
}

/// A GPU peripheral interrupt number, 0-63.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuIrq(u8);

impl GpuIrq {
    /// PL011 UART0 ("uart_int", bit 25 of the second bank).
    pub const UART0: GpuIrq = GpuIrq(57);
    /// The EMMC (Arasan SDHCI) controller, the SD card slot.
    pub const EMMC: GpuIrq = GpuIrq(62);

    /// The interrupt `n`, if it exists.
    pub const fn new(n: u8) -> Option<Self> {
        if n < 64 {
            Some(Self(n))
        } else {
            None
        }
    }

    /// Its number.
    pub const fn number(self) -> u8 {
        self.0
    }

    /// The register bank (0: IRQs 0-31, 1: 32-63) and the bit in it.
    const fn bank_bit(self) -> (usize, u32) {
        ((self.0 / 32) as usize, 1 << (self.0 % 32))
    }
}

/// The interrupt controller at a mapped base.
pub struct Intc {
    regs: Mmio<IntcRegs>,
}

impl Intc {
    /// Wraps the registers (no hardware access).
    pub const fn new(regs: Mmio<IntcRegs>) -> Self {
        Self { regs }
    }

    /// Disables every GPU and basic interrupt and the FIQ, whatever the firmware left enabled.
    pub fn disable_all(&self) {
        let r = &self.regs;
        r.fiq_control.set(0);
        r.disable[0].set(u32::MAX);
        r.disable[1].set(u32::MAX);
        r.disable_basic.set(u32::MAX);
    }

    /// Lets `irq` reach the IRQ line.
    pub fn enable(&self, irq: GpuIrq) {
        let (bank, bit) = irq.bank_bit();
        self.regs.enable[bank].set(bit);
    }

    /// Stops `irq` from reaching the IRQ line.
    pub fn disable(&self, irq: GpuIrq) {
        let (bank, bit) = irq.bank_bit();
        self.regs.disable[bank].set(bit);
    }

    /// Whether `irq` is enabled.
    pub fn is_enabled(&self, irq: GpuIrq) -> bool {
        let (bank, bit) = irq.bank_bit();
        self.regs.enable[bank].get() & bit != 0
    }

    /// Whether `irq` is pending and enabled. Pending bits are masked with the enables here, so
    /// the answer does not depend on whether the pending registers show disabled interrupts too
    /// (the manual does not say; QEMU shows enabled ones only).
    pub fn is_pending(&self, irq: GpuIrq) -> bool {
        let (bank, bit) = irq.bank_bit();
        self.regs.pending[bank].get() & self.regs.enable[bank].get() & bit != 0
    }

    /// Enabled and pending GPU IRQs 32-63 ("IRQ pending 2", bit n = IRQ 32 + n).
    pub fn pending2(&self) -> u32 {
        self.regs.pending[1].get() & self.regs.enable[1].get()
    }

    /// Enabled and pending interrupts, as (GPU IRQs 0-63, basic). Nonzero while the
    /// controller's output is asserted.
    pub fn pending_enabled(&self) -> (u64, u32) {
        let r = &self.regs;
        let lo = r.pending[0].get() & r.enable[0].get();
        let hi = r.pending[1].get() & r.enable[1].get();
        // Basic bits 0-7 are the ARM-side interrupts; 8-20 summarise or repeat GPU ones.
        let basic = r.basic_pending.get() & r.enable_basic.get() & 0xff;
        (u64::from(hi) << 32 | u64::from(lo), basic)
    }
}
