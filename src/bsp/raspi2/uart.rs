//! PL011 UART0 (ARM PrimeCell UART TRM, BCM2835 ARM Peripherals ch. 13): 8N1, FIFOs on, polled.

use super::mmio::Mmio;
use core::fmt;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_bitfields! {
    u32,
    FR [
        TXFE OFFSET(7) NUMBITS(1) [],
        TXFF OFFSET(5) NUMBITS(1) [],
        RXFE OFFSET(4) NUMBITS(1) [],
        BUSY OFFSET(3) NUMBITS(1) []
    ],
    LCRH [
        WLEN OFFSET(5) NUMBITS(2) [FiveBit = 0, SixBit = 1, SevenBit = 2, EightBit = 3],
        FEN OFFSET(4) NUMBITS(1) []
    ],
    CR [
        RXE OFFSET(9) NUMBITS(1) [],
        TXE OFFSET(8) NUMBITS(1) [],
        UARTEN OFFSET(0) NUMBITS(1) []
    ]
}

register_structs! {
    pub Pl011Regs {
        (0x00 => dr: ReadWrite<u32>),
        (0x04 => _rsrecr),
        (0x18 => fr: ReadOnly<u32, FR::Register>),
        (0x1c => _ilpr),
        (0x24 => ibrd: WriteOnly<u32>),
        (0x28 => fbrd: WriteOnly<u32>),
        (0x2c => lcrh: WriteOnly<u32, LCRH::Register>),
        (0x30 => cr: WriteOnly<u32, CR::Register>),
        (0x34 => _ifls),
        (0x38 => imsc: WriteOnly<u32>),
        (0x3c => _ris_mis),
        (0x44 => icr: WriteOnly<u32>),
        (0x48 => @END),
    }
}

/// Baud rate divisor for the PL011: `clock / (16 * baud)` as a 16.6 fixed-point number, rounded
/// (PL011 TRM 3.3.6). Returns (IBRD, FBRD).
pub const fn baud_divisor(clock_hz: u32, baud: u32) -> (u32, u32) {
    // 64 * clock / (16 * baud) = 4 * clock / baud, rounded to nearest.
    let div64 = ((4 * clock_hz as u64) + (baud as u64 / 2)) / baud as u64;
    ((div64 >> 6) as u32, (div64 & 0x3f) as u32)
}

/// A PL011 at a mapped base.
pub struct Pl011 {
    regs: Mmio<Pl011Regs>,
}

impl Pl011 {
    /// Wraps the registers (no hardware access).
    pub const fn new(regs: Mmio<Pl011Regs>) -> Self {
        Self { regs }
    }

    /// Lets what the firmware queued drain, disables, flushes the FIFOs, programs the baud rate and
    /// 8N1 with FIFOs, masks its interrupts, enables (PL011 TRM 3.3.8, UARTCR programming steps).
    pub fn init(&mut self, clock_hz: u32, baud: u32) {
        let r = &self.regs;
        // BUSY stays set while the TX FIFO holds data, even with the UART disabled: drain first
        // (bounded, in case the UART was never enabled and cannot drain).
        for _ in 0..1_000_000 {
            if r.fr.is_set(FR::TXFE) && !r.fr.is_set(FR::BUSY) {
                break;
            }
        }
        r.cr.set(0);
        r.lcrh.set(0); // FEN = 0 flushes the FIFOs
        r.icr.set(0x7ff);
        let (ibrd, fbrd) = baud_divisor(clock_hz, baud);
        r.ibrd.set(ibrd);
        r.fbrd.set(fbrd);
        // LCRH must be written after IBRD/FBRD to latch them (PL011 TRM 3.3.7).
        r.lcrh.write(LCRH::WLEN::EightBit + LCRH::FEN::SET);
        r.imsc.set(0);
        r.cr.write(CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
    }

    /// Sends one byte, waiting for room in the FIFO.
    pub fn put(&self, b: u8) {
        while self.regs.fr.is_set(FR::TXFF) {}
        self.regs.dr.set(u32::from(b));
    }

    /// A received byte, if one is waiting.
    pub fn try_get(&self) -> Option<u8> {
        if self.regs.fr.is_set(FR::RXFE) {
            None
        } else {
            Some((self.regs.dr.get() & 0xff) as u8)
        }
    }

    /// Waits until everything written has left the transmitter.
    pub fn flush(&self) {
        while !self.regs.fr.is_set(FR::TXFE) || self.regs.fr.is_set(FR::BUSY) {}
    }

    /// Moves the driver to another mapping of the same registers.
    pub fn rebase(&mut self, regs: Mmio<Pl011Regs>) {
        self.regs = regs;
    }
}

impl fmt::Write for Pl011 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::baud_divisor;

    #[test]
    fn divisor_for_115200_from_48_mhz_is_26_3() {
        assert_eq!(baud_divisor(48_000_000, 115_200), (26, 3));
        assert_eq!(baud_divisor(3_000_000, 115_200), (1, 40));
    }
}
