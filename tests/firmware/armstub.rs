//! The firmware stand-in of the board-entry test run (`armstub.S`), as a crate of its own so that
//! rustc's assembler builds it: `make` links it at 0 with `armstub.ld` and copies out the raw
//! binary that QEMU's generic loader puts at address 0.

#![no_std]
#![no_main]

core::arch::global_asm!(include_str!("armstub.S"));

/// Required by `no_std`; nothing here can panic (the crate is only assembly).
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
