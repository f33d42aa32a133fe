//! ARM semihosting, used only by test and benchmark builds to end QEMU with an exit code.
//!
//! The kernel proper never executes it: on a board without a debugger the `SVC 0x123456` would
//! land in the kernel's own SVC vector.

/// SYS_EXIT_EXTENDED: ends the session with a reason and a sub-code.
const SYS_EXIT_EXTENDED: u32 = 0x20;
/// ADP_Stopped_ApplicationExit: with SYS_EXIT_EXTENDED the sub-code is the exit status.
const ADP_STOPPED_APPLICATION_EXIT: u32 = 0x2_0026;

/// Ends QEMU (run with `-semihosting`) with `code` as its exit status.
pub fn exit(code: u32) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, code];
    // SAFETY: the semihosting call reads the two-word block, which lives until the call returns;
    // QEMU intercepts SVC 0x123456 in ARM state at PL1 and never returns from SYS_EXIT_EXTENDED.
    unsafe {
        core::arch::asm!(
            "svc 0x123456",
            inout("r0") SYS_EXIT_EXTENDED => _,
            in("r1") block.as_ptr(),
            options(nostack)
        );
    }
    loop {
        aarch32_cpu::asm::wfe();
    }
}
