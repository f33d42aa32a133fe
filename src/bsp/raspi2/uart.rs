//! PL011 UART0 (ARM PrimeCell UART TRM, BCM2835 ARM Peripherals ch. 13): 8N1, FIFOs on. Sending
//! is polled; receiving may interrupt (RX FIFO level and receive timeout), with the bytes taken by
//! whoever handles the interrupt (the console).

use super::mmio::Mmio;
use core::fmt;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
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
    ],
    /// Interrupt bits, the same in IMSC (mask set/clear: 1 = enabled), RIS, MIS and ICR.
    INT [
        /// Overrun, break, parity and framing errors.
        OEIM OFFSET(10) NUMBITS(1) [],
        BEIM OFFSET(9) NUMBITS(1) [],
        PEIM OFFSET(8) NUMBITS(1) [],
        FEIM OFFSET(7) NUMBITS(1) [],
        /// Receive timeout: the RX FIFO holds data and nothing arrived for 32 bit periods.
        RTIM OFFSET(6) NUMBITS(1) [],
        TXIM OFFSET(5) NUMBITS(1) [],
        /// Receive: the RX FIFO reached its trigger level (IFLS).
        RXIM OFFSET(4) NUMBITS(1) []
    ],
    IFLS [
        /// RX FIFO trigger level: 0 = 1/8 full (2 of 16 bytes) ... 4 = 7/8.
        RXIFLSEL OFFSET(3) NUMBITS(3) [],
        TXIFLSEL OFFSET(0) NUMBITS(3) []
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
        (0x34 => ifls: ReadWrite<u32, IFLS::Register>),
        (0x38 => imsc: ReadWrite<u32, INT::Register>),
        (0x3c => _ris),
        (0x40 => mis: ReadOnly<u32, INT::Register>),
        (0x44 => icr: WriteOnly<u32, INT::Register>),
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

    /// Whether a received byte is waiting in the FIFO.
    pub fn rx_ready(&self) -> bool {
        !self.regs.fr.is_set(FR::RXFE)
    }

    /// Lets the receiver interrupt: when the RX FIFO reaches 1/8 full (2 bytes), or holds
    /// anything and the line has been idle for 32 bit periods (receive timeout). Both stay
    /// asserted until the FIFO is read empty (or below the level), so the handler must drain it.
    pub fn enable_rx_interrupts(&self) {
        let r = &self.regs;
        r.ifls.modify(IFLS::RXIFLSEL.val(0));
        r.icr.write(INT::RXIM::SET + INT::RTIM::SET);
        r.imsc.modify(INT::RXIM::SET + INT::RTIM::SET);
    }

    /// Masks the receive interrupts again.
    pub fn disable_rx_interrupts(&self) {
        self.regs.imsc.modify(INT::RXIM::CLEAR + INT::RTIM::CLEAR);
    }

    /// Whether the receive interrupts are enabled.
    pub fn rx_interrupts_enabled(&self) -> bool {
        self.regs.imsc.matches_all(INT::RXIM::SET + INT::RTIM::SET)
    }

    /// Whether a receive interrupt is asserted (masked status).
    pub fn rx_interrupt_pending(&self) -> bool {
        self.regs.mis.matches_any(&[INT::RXIM::SET, INT::RTIM::SET])
    }

    /// Clears the receive interrupts (they re-assert at once if the FIFO still holds data).
    pub fn clear_rx_interrupts(&self) {
        self.regs.icr.write(INT::RXIM::SET + INT::RTIM::SET);
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
