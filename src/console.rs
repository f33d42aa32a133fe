//! The kernel console on UART0: `print!`/`println!`, and a path for panics that never waits for
//! the lock.

use crate::arch::arm::irq::IrqSafeMutex;
use crate::bsp::raspi2::mmio::Mmio;
use crate::bsp::raspi2::uart::{Pl011, Pl011Regs};
use crate::mm::VirtAddr;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};

static CONSOLE: IrqSafeMutex<Option<Pl011>> = IrqSafeMutex::new(None);
/// The console's register base, readable without the lock (for panics).
static BASE: AtomicU32 = AtomicU32::new(0);

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

/// A received byte, if any.
pub fn try_get() -> Option<u8> {
    CONSOLE.lock().as_ref().and_then(|u| u.try_get())
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
