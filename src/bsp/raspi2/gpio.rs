//! GPIO: the function select and pull control the UART pins need.

use super::mmio::Mmio;
use tock_registers::interfaces::{ReadWriteable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::ReadWrite;

register_bitfields! {
    u32,
    GPFSEL1 [
        /// Pin 15: 0b100 = ALT0 (UART0 RXD).
        FSEL15 OFFSET(15) NUMBITS(3) [Input = 0, Output = 1, Alt0 = 4],
        /// Pin 14: 0b100 = ALT0 (UART0 TXD).
        FSEL14 OFFSET(12) NUMBITS(3) [Input = 0, Output = 1, Alt0 = 4]
    ],
    GPPUDCLK0 [
        PUDCLK15 OFFSET(15) NUMBITS(1) [],
        PUDCLK14 OFFSET(14) NUMBITS(1) []
    ]
}

register_structs! {
    pub GpioRegs {
        (0x00 => _fsel0),
        (0x04 => gpfsel1: ReadWrite<u32, GPFSEL1::Register>),
        (0x08 => _rest),
        (0x94 => gppud: ReadWrite<u32>),
        (0x98 => gppudclk0: ReadWrite<u32, GPPUDCLK0::Register>),
        (0x9c => @END),
    }
}

fn spin_cycles(n: u32) {
    for _ in 0..n {
        aarch32_cpu::asm::nop();
    }
}

/// Puts GPIO14/15 in ALT0 (PL011 TXD0/RXD0) with pulls disabled, as BCM2835 ARM Peripherals
/// §6.1 describes (GPPUD then a clocked GPPUDCLK0 write, 150 cycles each).
pub fn route_uart0(gpio: &Mmio<GpioRegs>) {
    gpio.gpfsel1
        .modify(GPFSEL1::FSEL14::Alt0 + GPFSEL1::FSEL15::Alt0);
    gpio.gppud.set(0);
    spin_cycles(150);
    gpio.gppudclk0
        .write(GPPUDCLK0::PUDCLK14::SET + GPPUDCLK0::PUDCLK15::SET);
    spin_cycles(150);
    gpio.gppudclk0.set(0);
}
