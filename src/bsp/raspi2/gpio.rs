//! GPIO: the function select and pull control the UART and SD card pins need.

use super::mmio::Mmio;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
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
        (0x08 => _fsel2_3),
        (0x10 => gpfsel4: ReadWrite<u32>),
        (0x14 => gpfsel5: ReadWrite<u32>),
        (0x18 => _rest),
        (0x94 => gppud: ReadWrite<u32>),
        (0x98 => gppudclk0: ReadWrite<u32, GPPUDCLK0::Register>),
        (0x9c => gppudclk1: ReadWrite<u32>),
        (0xa0 => @END),
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

/// Puts GPIO48-53 (SD card CLK, CMD, DAT0-3) in ALT3, the EMMC controller, with pull-ups on CMD
/// and DAT0-3 and none on CLK, as the Pi firmware leaves them. (QEMU moves the card to its other
/// SD host when these pins are in ALT0.)
pub fn route_emmc(gpio: &Mmio<GpioRegs>) {
    const ALT3: u32 = 0b111;
    // GPFSEL4 holds pins 40-49 (3 bits each), GPFSEL5 pins 50-59.
    let mut f4 = gpio.gpfsel4.get();
    for pin in 48..50 {
        let shift = (pin - 40) * 3;
        f4 = (f4 & !(0b111 << shift)) | (ALT3 << shift);
    }
    gpio.gpfsel4.set(f4);
    let mut f5 = gpio.gpfsel5.get();
    for pin in 50..54 {
        let shift = (pin - 50) * 3;
        f5 = (f5 & !(0b111 << shift)) | (ALT3 << shift);
    }
    gpio.gpfsel5.set(f5);
    // Pull-up (2) on 49-53, then none (0) on 48; GPPUDCLK1 bit n is pin 32 + n.
    for (pud, pins) in [(2u32, 0b11_1110u32 << 16), (0, 1 << 16)] {
        gpio.gppud.set(pud);
        spin_cycles(150);
        gpio.gppudclk1.set(pins);
        spin_cycles(150);
        gpio.gppudclk1.set(0);
    }
    gpio.gppud.set(0);
}
