//! The kernel console on UART0: `print!`/`println!`, a path for panics that never waits for the
//! lock, and input.
//!
//! Input goes through a queue ([`RX_QUEUE_BYTES`] bytes): the UART's receive interrupt moves the
//! bytes from its 16-byte FIFO into the queue ([`drain_rx`], called by `crate::irq`), and
//! [`read_byte`] takes them from there. When the queue is empty, `read_byte` drains the FIFO itself,
//! so input works the same before interrupts are set up, with IRQs masked, or for bytes below
//! the FIFO's interrupt level. Bytes that arrive while the queue is full are dropped and counted
//! ([`rx_dropped`]).

use crate::arch::arm::irq::IrqSafeMutex;
use crate::bsp::raspi2::mmio::Mmio;
use crate::bsp::raspi2::uart::{Pl011, Pl011Regs};
use crate::mm::VirtAddr;
use crate::ring::ByteRing;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};

static CONSOLE: IrqSafeMutex<Option<Pl011>> = IrqSafeMutex::new(None);
/// The console's register base, readable without the lock (for panics and the receive side).
static BASE: AtomicU32 = AtomicU32::new(0);

/// Size of the receive queue: about 90 ms of input at 115200 baud.
pub const RX_QUEUE_BYTES: usize = 1024;
/// Received bytes not yet read.
static RX_QUEUE: ByteRing<RX_QUEUE_BYTES> = ByteRing::new();
/// Held while moving bytes from the UART into [`RX_QUEUE`]: the queue takes one producer at a time,
/// and the FIFO's data register pops on read. IRQs are masked while it is held, so the interrupt
/// handler and a reader draining on the same core never interleave.
static RX_PRODUCER: IrqSafeMutex<()> = IrqSafeMutex::new(());
/// Most bytes one [`drain_rx`] takes, so a sender that keeps the FIFO full cannot hold the CPU
/// in the handler (the interrupt stays asserted and comes back).
const DRAIN_MAX: usize = 64;

/// Standard console baud rate.
pub const BAUD: u32 = 115_200;

/// Starts the console on the PL011 whose registers are mapped at `base`.
///
/// # Safety
/// `base` must map UART0's registers with device attributes from now on (until [`rebase`]).
pub unsafe fn init(base: VirtAddr, uart_clock_hz: u32) {
    // SAFETY: forwarded to the caller.
    let mut uart = Pl011::new(unsafe { Mmio::<Pl011Regs>::new(base) });
    uart.init(uart_clock_hz, BAUD);
    *CONSOLE.lock() = Some(uart);
    BASE.store(base.as_u32(), Ordering::Release);
}

/// Moves the console to another mapping of UART0's registers (the MMIO window).
///
/// # Safety
/// As for [`init`].
pub unsafe fn rebase(base: VirtAddr) {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        // SAFETY: forwarded to the caller.
        uart.rebase(unsafe { Mmio::new(base) });
        BASE.store(base.as_u32(), Ordering::Release);
    }
}

/// UART0 through [`BASE`], without the console lock: the receive side only reads the status and
/// data registers (under [`RX_PRODUCER`]) and never races the transmit side's registers.
fn rx_uart() -> Option<Pl011> {
    let base = BASE.load(Ordering::Acquire);
    // SAFETY: BASE is only ever set to the live mapping of UART0's registers.
    (base != 0).then(|| Pl011::new(unsafe { Mmio::new(VirtAddr::new(base)) }))
}

/// Lets the UART interrupt when input arrives (RX FIFO level and receive timeout). The interrupt
/// must then be routed to a handler that calls [`drain_rx`] (`crate::irq::init` does both).
pub fn enable_rx_interrupts() {
    if let Some(u) = CONSOLE.lock().as_ref() {
        u.enable_rx_interrupts();
    }
}

/// Masks the UART's receive interrupts.
pub fn disable_rx_interrupts() {
    if let Some(u) = CONSOLE.lock().as_ref() {
        u.disable_rx_interrupts();
    }
}

/// Whether the UART's receive interrupts are enabled.
pub fn rx_interrupts_enabled() -> bool {
    CONSOLE
        .lock()
        .as_ref()
        .is_some_and(|u| u.rx_interrupts_enabled())
}

/// Moves what the UART's receive FIFO holds into the receive queue (at most 64 bytes) and returns
/// how many bytes it took. The UART's receive interrupts deassert once the FIFO is empty. Called
/// by the UART interrupt handler; safe anywhere.
pub fn drain_rx() -> usize {
    let Some(uart) = rx_uart() else { return 0 };
    let _producer = RX_PRODUCER.lock();
    let mut n = 0;
    while n < DRAIN_MAX {
        let Some(b) = uart.try_get() else { break };
        // A full queue drops the byte (counted); the FIFO must be emptied either way.
        RX_QUEUE.push(b);
        n += 1;
    }
    n
}

/// The next received byte, if any: from the receive queue, or, when it is empty, straight from
/// the UART's FIFO (so input works without interrupts too). Never waits.
pub fn read_byte() -> Option<u8> {
    RX_QUEUE.pop().or_else(|| {
        drain_rx();
        RX_QUEUE.pop()
    })
}

/// Whether [`read_byte`] has a byte to return now.
pub fn rx_pending() -> bool {
    !RX_QUEUE.is_empty() || rx_uart().is_some_and(|u| u.rx_ready())
}

/// Bytes lost so far because they arrived while the receive queue was full.
pub fn rx_dropped() -> usize {
    RX_QUEUE.dropped()
}

/// A received byte, if any (the same as [`read_byte`]).
pub fn try_get() -> Option<u8> {
    read_byte()
}

/// Waits until the UART has sent everything.
pub fn flush() {
    if let Some(u) = CONSOLE.lock().as_ref() {
        u.flush();
    }
}

/// Writes raw bytes (a user process's `write`), turning `\n` into `\r\n`.
pub fn write_bytes(bytes: &[u8]) {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        for &b in bytes {
            if b == b'\n' {
                uart.put(b'\r');
            }
            uart.put(b);
        }
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        let _ = uart.write_fmt(args);
    }
}

/// Writes for a panic: takes the lock if it can, and otherwise (the panic happened while printing)
/// writes through the same registers anyway rather than deadlock.
pub fn panic_print(args: fmt::Arguments) {
    if let Some(mut g) = CONSOLE.try_lock() {
        if let Some(uart) = g.as_mut() {
            let _ = uart.write_fmt(args);
            uart.flush();
        }
        return;
    }
    // The lock is held by the code that panicked on this core, which will never run again:
    // write through the same registers without it rather than deadlock.
    let base = BASE.load(Ordering::Acquire);
    if base != 0 {
        // SAFETY: BASE is only ever set to the live mapping of UART0's registers.
        let mut uart = Pl011::new(unsafe { Mmio::new(VirtAddr::new(base)) });
        let _ = uart.write_fmt(args);
        uart.flush();
    }
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::console::_print(format_args!($($arg)*)));
}

/// Prints to the console, with a newline.
#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::console::_print(format_args!("{}\n", format_args!($($arg)*))));
}
