//! Checked copies between the kernel and user memory.
//!
//! The kernel touches user memory only here. Everywhere else the user domain is closed in DACR
//! (see `arch::arm::mmu::DACR_KERNEL`), so a stray kernel access to user memory faults; the
//! routines below open it for the copy and close it again. A copy first checks the whole range against the
//! current process's regions (inside 0..2 GiB, no wrap-around, access allowed), then copies with
//! the *unprivileged* load/store instructions LDRBT/STRBT, so the MMU applies User-mode
//! permissions even though the kernel runs at PL1: a user pointer into the kernel half faults
//! instead of reading kernel memory. Each such instruction is listed in `.extable` as a user
//! access: when it faults, the abort handler first tries to resolve the fault for the current
//! process (a demand-zero page not yet touched, a copy-on-write page written) and re-runs it;
//! only an unresolvable fault resumes at the fixup, which returns the fault status, and the
//! copy fails with [`Efault`].
//!
//! Callers must not hold the process table's lock: resolving a fault takes it.

use super::TABLE;
use crate::mm::layout::USER_END;
use crate::mm::VirtAddr;

/// A user address range the current process may not access that way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Efault;

core::arch::global_asm!(
    r#"
    .text
    .arm
    // (dst kernel, src user, len) -> 0, or the fault status
    .globl uaccess_copy_in
uaccess_copy_in:
    mov     r12, #{dacr_user}       // open user memory (the ISB: for the accesses below)
    mcr     p15, 0, r12, c3, c0, 0
    isb
    cmp     r2, #0
    beq     2f
1:  ldrbt   r3, [r1], #1
    strb    r3, [r0], #1
    subs    r2, r2, #1
    bne     1b
2:  mov     r12, #{dacr_kernel}     // and close it again
    mcr     p15, 0, r12, c3, c0, 0
    isb
    mov     r0, #0
    bx      lr

    // (dst user, src kernel, len) -> 0, or the fault status
    .globl uaccess_copy_out
uaccess_copy_out:
    mov     r12, #{dacr_user}
    mcr     p15, 0, r12, c3, c0, 0
    isb
    cmp     r2, #0
    beq     4f
3:  ldrb    r3, [r1], #1
5:  strbt   r3, [r0], #1
    subs    r2, r2, #1
    bne     3b
4:  mov     r12, #{dacr_kernel}
    mcr     p15, 0, r12, c3, c0, 0
    isb
    mov     r0, #0
    bx      lr

uaccess_fixup:                      // r0 = fault status, user memory closed: both set by the
    bx      lr                      // abort handler

    .section .extable, "a"
    .balign 4
    .word   1b, uaccess_fixup, 2    // user access: resolve, else fix up
    .word   5b, uaccess_fixup, 2
"#,
    dacr_user = const crate::arch::arm::mmu::DACR_USER,
    dacr_kernel = const crate::arch::arm::mmu::DACR_KERNEL,
);

extern "C" {
    fn uaccess_copy_in(dst: *mut u8, src: u32, len: usize) -> u32;
    fn uaccess_copy_out(dst: u32, src: *const u8, len: usize) -> u32;
}

/// Checks that `[va, va+len)` lies in the current process's regions with the access allowed.
fn check(va: u32, len: usize, write: bool) -> Result<(), Efault> {
    let len = u32::try_from(len).map_err(|_| Efault)?;
    let end = va.checked_add(len).ok_or(Efault)?;
    if end > USER_END.as_u32() {
        return Err(Efault);
    }
    if len == 0 {
        return Ok(());
    }
    let t = TABLE.lock();
    let ok = t
        .current()
        .and_then(|pid| t.procs.get(&pid))
        .and_then(|p| p.vm.as_ref())
        .is_some_and(|vm| vm.check_range(VirtAddr::new(va), len, write));
    if ok {
        Ok(())
    } else {
        Err(Efault)
    }
}

/// Copies `dst.len()` bytes from user address `src` of the current process into `dst`.
pub fn copy_from_user(dst: &mut [u8], src: u32) -> Result<(), Efault> {
    check(src, dst.len(), false)?;
    // SAFETY: `dst` is a live kernel buffer of `dst.len()` bytes; the source is read with
    // unprivileged loads whose faults are caught through the extable.
    match unsafe { uaccess_copy_in(dst.as_mut_ptr(), src, dst.len()) } {
        0 => Ok(()),
        _ => Err(Efault),
    }
}

/// Copies `src` to user address `dst` of the current process.
pub fn copy_to_user(dst: u32, src: &[u8]) -> Result<(), Efault> {
    check(dst, src.len(), true)?;
    // SAFETY: `src` is a live kernel buffer; the destination is written with unprivileged
    // stores whose faults are caught through the extable, and it is user memory the check
    // above found writable in the current process.
    match unsafe { uaccess_copy_out(dst, src.as_ptr(), src.len()) } {
        0 => Ok(()),
        _ => Err(Efault),
    }
}
