//! Exception vectors, the saved context, and fault reports.
//!
//! Every exception enters through the same path: adjust LR to the return address, `SRSDB` the
//! return address and SPSR onto the SVC stack, switch to SVC, push r0-r12, the user-mode SP and
//! LR, the interrupted SVC-mode LR and the interrupted DACR. The result is one [`TrapFrame`] on
//! the SVC stack, which the Rust handler may inspect and change (a fixup redirects `pc`), and
//! `RFEIA` returns through.
//!
//! User memory is closed to the kernel (a software PAN): every entry sets DACR so that the user
//! domain has no access, and the return puts back the DACR of the code it returns to, which for
//! User mode is always the one with the user domain open. Only the copy routines of
//! `proc::uaccess` open it inside the kernel; a fault they take is handled with it closed and
//! returns into them with it open again. Entries also unmask asynchronous aborts, so that one
//! is taken (and reported) in the kernel when the kernel caused it, not at the next return to
//! some innocent process.
//!
//! The vector table holds only `ldr pc, [pc, #24]` loads of absolute handler addresses, so the same
//! 64 bytes work at VBAR (boot) and copied to the high vector page at 0xFFFF_0000 (SCTLR.V = 1).
//!
//! Kernel code that may fault on purpose (probing an address, copying from user memory) lists the
//! faulting instruction in the `.extable` section with a fixup address; the abort handler resumes
//! there with the fault status in r0 instead of panicking.

use super::boot::mode;
use crate::mm::fault::{FaultKind, FaultStatus};
use crate::mm::layout::USER_END;
use aarch32_cpu::register::{Dfar, Dfsr, Ifar, Ifsr};
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

/// The context saved on the SVC stack by every exception entry.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TrapFrame {
    /// DACR of the interrupted code (the user domain open only in User mode and in the copy
    /// routines).
    pub dacr: u32,
    /// r0-r12 of the interrupted code.
    pub r: [u32; 13],
    /// User/System-mode SP (banked; meaningful when a user process was interrupted).
    pub sp_usr: u32,
    /// User/System-mode LR.
    pub lr_usr: u32,
    /// SVC-mode LR of the interrupted code (the kernel's own LR when it was interrupted).
    pub lr_svc: u32,
    /// Where execution resumes (the faulting instruction for aborts).
    pub pc: u32,
    /// SPSR: the interrupted CPSR.
    pub cpsr: u32,
}

impl TrapFrame {
    /// Copies `src` into `self` with load/store-multiple: the switch moves two frames per
    /// context switch, and a generic `memcpy` of 76 bytes costs about a hundred instructions.
    #[inline]
    pub fn copy_from(&mut self, src: &TrapFrame) {
        // SAFETY: both point to whole, distinct TrapFrames (`&mut` and `&` cannot alias);
        // `trap_frame_copy` copies exactly their 19 words and follows the AAPCS.
        unsafe { trap_frame_copy(self, src) }
    }

    /// Mode the exception was taken from.
    pub fn from_mode(&self) -> u32 {
        self.cpsr & 0x1f
    }

    /// Whether the interrupted code ran in User mode.
    pub fn from_user(&self) -> bool {
        self.from_mode() == mode::USR
    }
}

/// The exception that entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ExceptionKind {
    Undefined = 1,
    Svc = 2,
    PrefetchAbort = 3,
    DataAbort = 4,
    Irq = 6,
    Fiq = 7,
}

core::arch::global_asm!(
    r#"
    .section .text.vectors, "ax"
    .arm
    .arch_extension virt            // MRS/MSR of banked registers (SP_svc)
    .balign 32
    .globl exception_vectors
exception_vectors:
    ldr     pc, [pc, #24]           // reset
    ldr     pc, [pc, #24]           // undefined instruction
    ldr     pc, [pc, #24]           // supervisor call
    ldr     pc, [pc, #24]           // prefetch abort
    ldr     pc, [pc, #24]           // data abort
    ldr     pc, [pc, #24]           // (hypervisor trap, unused)
    ldr     pc, [pc, #24]           // IRQ
    ldr     pc, [pc, #24]           // FIQ
    .word   exc_reset
    .word   exc_undefined
    .word   exc_svc
    .word   exc_prefetch_abort
    .word   exc_data_abort
    .word   exc_reset
    .word   exc_irq
    .word   exc_fiq
    .globl exception_vectors_end
exception_vectors_end:

    // \adjust: LR minus the return address (ARM ARM B1.8.3, table B1-7, ARM state): SVC and UND
    // return to the next instruction (0), prefetch abort and IRQ/FIQ to LR-4, data abort
    // re-executes the faulting instruction at LR-8.
    // \check_stack: aborts first look at SP_svc. If it is at the bottom of the kernel stack (or
    // in the guard page below it), the abort is most likely the kernel stack overflowing, and
    // pushing the frame there would fault again from Abort mode, forever, losing LR_abt and
    // SPSR_abt. The report is then made from the top of the stack instead (the overflowed frames
    // are abandoned: the kernel panics).
    // \unmask: clear CPSR.A once the frame is saved. The abort entries leave it to the Rust
    // handler, which first reads DFSR/DFAR (or IFSR/IFAR): an asynchronous abort taken before
    // that would overwrite them.
    .macro EXC_ENTRY name, kind, adjust, check_stack, unmask, handler
\name:
    .if \adjust
    sub     lr, lr, #\adjust
    .endif
    .if \check_stack
    stmdb   sp!, {{r0, r1}}         // on this mode's own stack
    mrs     r0, spsr
    tst     r0, #0xf                // from User mode (0x10): SP_svc is at the top of the stack
    beq     1f
    mrs     r0, sp_svc
    ldr     r1, =__stack_guard_start
    cmp     r0, r1
    blo     1f                      // not the boot kernel stack
    ldr     r1, =__svc_stack_bottom + 256
    cmp     r0, r1
    bhs     1f
    ldr     r0, =__svc_stack_top
    msr     sp_svc, r0
    ldr     r0, =STACK_RESCUED      // tell the handler: this frame is not where SP was, so
    mov     r1, #1                  // it must never be resumed (a fixup would return with SP
    str     r1, [r0]                // at the top of the stack, over live frames)
1:  ldmia   sp!, {{r0, r1}}
    .endif
    srsdb   sp!, #{svc}             // push return address and SPSR to the SVC stack
    cps     #{svc}
    sub     sp, sp, #68
    stmib   sp, {{r0-r12}}          // r0 at sp + 4: the frame starts with the DACR
    add     r0, sp, #56
    stmia   r0, {{sp, lr}}^         // user-mode SP and LR (no writeback with ^)
    str     lr, [sp, #64]           // SVC-mode LR of the interrupted code
    mrc     p15, 0, r0, c3, c0, 0   // DACR of the interrupted code
    str     r0, [sp]
    mov     r0, #{dacr_kernel}      // user memory closed while the kernel runs; the ISB makes
    mcr     p15, 0, r0, c3, c0, 0   // it so for every later access (ARM ARM B3.15.4)
    isb
    .if \unmask
    cpsie   a                       // asynchronous aborts are taken in the kernel
    .endif
    mov     r0, sp
    mov     r1, #\kind
    mov     r4, sp
    bic     sp, sp, #7              // AAPCS: 8-byte aligned stack at the call
    bl      \handler
    mov     sp, r4
    b       exception_return
    .endm

    // System calls and aborts go straight to their own dispatchers (`svc_dispatch`,
    // `abort_dispatch`): the most frequent entries skip the general one.
    EXC_ENTRY exc_undefined, 1, 0, 0, 1, exception_dispatch
    EXC_ENTRY exc_svc, 2, 0, 0, 1, svc_dispatch
    EXC_ENTRY exc_prefetch_abort, 3, 4, 1, 0, abort_dispatch
    EXC_ENTRY exc_data_abort, 4, 8, 1, 0, abort_dispatch
    EXC_ENTRY exc_irq, 6, 4, 0, 1, exception_dispatch
    EXC_ENTRY exc_fiq, 7, 4, 0, 1, exception_dispatch

    .globl exception_return
exception_return:
    // The DACR of the code returned to: a process always gets its memory open (its frame may
    // be new); kernel code gets back what it had. No ISB: until the RFE, a context
    // synchronization event (ARM ARM B3.15.4, exception return), only the kernel stack is
    // touched, which either value allows.
    ldr     r0, [sp, #72]           // the SPSR to return with
    and     r0, r0, #0x1f
    cmp     r0, #{usr}
    ldrne   r0, [sp]
    moveq   r0, #{dacr_user}
    mcr     p15, 0, r0, c3, c0, 0
    ldr     lr, [sp, #64]
    add     r0, sp, #56
    ldmia   r0, {{sp, lr}}^
    nop                             // no banked-register access right after LDM ^
    ldmib   sp, {{r0-r12}}
    add     sp, sp, #68
    clrex                           // no exclusive reservation survives (ARM ARM A3.4.4)
    rfeia   sp!                     // pops pc and cpsr

exc_reset:
    wfe
    b       exc_reset

    // trap_frame_copy(r0 = destination frame, r1 = source frame): 19 words, 8 + 8 + 3.
    .globl trap_frame_copy
trap_frame_copy:
    push    {{r4-r9}}
    ldmia   r1!, {{r2-r9}}
    stmia   r0!, {{r2-r9}}
    ldmia   r1!, {{r2-r9}}
    stmia   r0!, {{r2-r9}}
    ldmia   r1, {{r2-r4}}
    stmia   r0, {{r2-r4}}
    pop     {{r4-r9}}
    bx      lr

    // Probes: one instruction that may fault, listed in .extable with its fixup. They return 0 on
    // success, or the fault status register value (never 0 for a real fault) on a fault.
    .text
    .globl probe_read_u32
probe_read_u32:                     // (addr, out) -> status
1:  ldr     r2, [r0]
    str     r2, [r1]
    mov     r0, #0
    bx      lr
    .globl probe_write_u32
probe_write_u32:                    // (addr, value) -> status
2:  str     r1, [r0]
    mov     r0, #0
    bx      lr
    .globl probe_exec
probe_exec:                         // (addr) -> status: branches to addr, expects `bx lr`
    push    {{r4, lr}}
    blx     r0
3:  mov     r0, #0
    pop     {{r4, pc}}
probe_fixup:                        // r0 = fault status, set by the abort handler
    bx      lr
probe_exec_fixup:
    pop     {{r4, pc}}

    .section .extable, "a"
    .balign 4
    .word   1b, probe_fixup, 0      // data abort at this pc
    .word   2b, probe_fixup, 0
    .word   3b, probe_exec_fixup, 1 // prefetch abort whose SVC LR is this return address
"#,
    svc = const mode::SVC,
    usr = const mode::USR,
    dacr_kernel = const super::mmu::DACR_KERNEL,
    dacr_user = const super::mmu::DACR_USER,
);

// The layout the entry code, `exception_return` and `trap_frame_copy` rely on.
const _: () = assert!(core::mem::size_of::<TrapFrame>() == 19 * 4);

extern "C" {
    fn trap_frame_copy(dst: *mut TrapFrame, src: *const TrapFrame);
    static exception_vectors: u8;
    static exception_vectors_end: u8;
    static __extable_start: ExtableEntry;
    static __extable_end_exclusive: ExtableEntry;
    fn probe_read_u32(addr: u32, out: *mut u32) -> u32;
    fn probe_write_u32(addr: u32, value: u32) -> u32;
    fn probe_exec(addr: u32) -> u32;
}

/// The vector table as bytes (to copy it to the high vector page).
pub fn vector_table() -> &'static [u8] {
    // SAFETY: both symbols delimit the 64-byte table in .text, which is never written.
    unsafe {
        let start = core::ptr::addr_of!(exception_vectors);
        let end = core::ptr::addr_of!(exception_vectors_end);
        core::slice::from_raw_parts(start, end as usize - start as usize)
    }
}

/// One exception-table entry: an instruction allowed to fault and where to resume.
#[repr(C)]
struct ExtableEntry {
    insn: u32,
    fixup: u32,
    /// 0: data abort matched on `pc`; 1: prefetch abort matched on the SVC LR (a call site);
    /// 2: data abort of a user-memory copy, matched on `pc` (resolved first, see
    /// [`set_uaccess_resolver`]).
    kind: u32,
}

fn extable() -> &'static [ExtableEntry] {
    // SAFETY: link.ld keeps every .extable input section, word aligned, between the two symbols;
    // entries are three words each and read-only.
    unsafe {
        let start = core::ptr::addr_of!(__extable_start);
        let end = core::ptr::addr_of!(__extable_end_exclusive);
        let n = (end as usize - start as usize) / core::mem::size_of::<ExtableEntry>();
        core::slice::from_raw_parts(start, n)
    }
}

/// Resumes `frame` at `fixup` (ARM code) with `status` in r0.
fn resume_at_fixup(frame: &mut TrapFrame, fixup: u32, status: u32) {
    frame.r[0] = status;
    frame.pc = fixup;
    // The fixups are ARM code: leave Thumb state and any IT block the fault happened in.
    frame.cpsr &= !(PSR_T | PSR_IT);
}

const PSR_T: u32 = 1 << 5;
const PSR_IT: u32 = 0x0600_fc00;

fn find_fixup(key: u32, kind: u32) -> Option<u32> {
    extable()
        .iter()
        .find(|e| e.insn == key && e.kind == kind)
        .map(|e| e.fixup)
}

/// Reads a word at `addr`, returning the decoded fault instead of taking the kernel down.
pub fn try_read(addr: u32) -> Result<u32, FaultStatus> {
    let mut v = 0;
    // SAFETY: probe_read_u32 is a leaf that loads from `addr`; a fault there is caught through
    // the extable and reported, and `out` points to a live local.
    let st = unsafe { probe_read_u32(addr, &mut v) };
    if st == 0 {
        Ok(v)
    } else {
        Err(FaultStatus::from_dfsr(st))
    }
}

/// Writes a word at `addr`, returning the decoded fault instead of taking the kernel down.
///
/// # Safety
/// If the write succeeds it changes memory at `addr`: the caller owns what is there.
pub unsafe fn try_write(addr: u32, value: u32) -> Result<(), FaultStatus> {
    // SAFETY: forwarded to the caller; a fault is caught through the extable.
    let st = unsafe { probe_write_u32(addr, value) };
    if st == 0 {
        Ok(())
    } else {
        Err(FaultStatus::from_dfsr(st))
    }
}

/// Branches to `addr`, which should hold `bx lr` if it is executable at all; returns the decoded
/// prefetch abort if instruction fetch there faults.
///
/// # Safety
/// If `addr` is executable, whatever is there runs.
pub unsafe fn try_exec(addr: u32) -> Result<(), FaultStatus> {
    // SAFETY: forwarded to the caller; a prefetch abort is caught through the extable.
    let st = unsafe { probe_exec(addr) };
    if st == 0 {
        Ok(())
    } else {
        Err(FaultStatus::from_ifsr(st))
    }
}

/// A fault as reported: what (decoded status) and where (address, PC, mode).
#[derive(Debug, Clone, Copy)]
pub struct AbortReport {
    pub instruction: bool,
    pub status: FaultStatus,
    pub address: u32,
    pub pc: u32,
    pub mode: u32,
}

impl fmt::Display for AbortReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, reg) = if self.instruction {
            ("prefetch abort", "IFAR")
        } else {
            ("data abort", "DFAR")
        };
        write!(
            f,
            "{what}: {} at {reg}={:#010x}, pc={:#010x}, mode={}",
            self.status,
            self.address,
            self.pc,
            mode::name(self.mode)
        )
    }
}

/// Hook for exceptions from User mode (processes) other than system calls and aborts; `None`
/// until the process layer installs one.
pub type UserHandler = fn(&mut TrapFrame, ExceptionKind);
static USER_HANDLER: spin::Once<UserHandler> = spin::Once::new();
/// Hook for IRQs.
pub type IrqHandler = fn(&mut TrapFrame);
static IRQ_HANDLER: spin::Once<IrqHandler> = spin::Once::new();

/// Hook for faults of the kernel's user-memory copy routines (extable kind 2): given the
/// address, whether it was a write and the DFSR value, it resolves the fault (demand-zero or
/// copy-on-write page) and returns `true`, or returns `false` and the copy fails.
pub type UaccessResolver = fn(u32, bool, u32) -> bool;
static UACCESS_RESOLVER: spin::Once<UaccessResolver> = spin::Once::new();

/// Installs the resolver for faults of the user-memory copy routines.
pub fn set_uaccess_resolver(r: UaccessResolver) {
    UACCESS_RESOLVER.call_once(|| r);
}

/// Hook for system calls from User mode; `None` until the process layer installs one.
pub type SvcHandler = fn(&mut TrapFrame);
static SVC_HANDLER: spin::Once<SvcHandler> = spin::Once::new();

/// Installs the handler for system calls (SVC from User mode).
pub fn set_svc_handler(h: SvcHandler) {
    SVC_HANDLER.call_once(|| h);
}

/// The SVC vector's entry: a system call from User mode goes to its handler at once; anything
/// else (an SVC from the kernel, or before the process layer started) the general way.
#[no_mangle]
extern "C" fn svc_dispatch(frame: &mut TrapFrame, kind: u32) {
    if frame.from_user() {
        if let Some(h) = SVC_HANDLER.get() {
            return h(frame);
        }
    }
    exception_dispatch(frame, kind)
}

/// Hook for aborts from User mode, with their report (read before asynchronous aborts were
/// unmasked); `None` until the process layer installs one.
pub type UserAbortHandler = fn(&mut TrapFrame, &AbortReport);
static USER_ABORT_HANDLER: spin::Once<UserAbortHandler> = spin::Once::new();

/// Installs the handler for aborts taken from User mode.
pub fn set_user_abort_handler(h: UserAbortHandler) {
    USER_ABORT_HANDLER.call_once(|| h);
}

/// The abort vectors' entry (`kind` 3 prefetch, 4 data): the fault registers first, then
/// asynchronous aborts unmasked (an asynchronous abort would overwrite them); a frame made on
/// the rescued stack is never resumed; an abort from User mode goes to its handler at once.
#[no_mangle]
extern "C" fn abort_dispatch(frame: &mut TrapFrame, kind: u32) {
    let (kind, report) = if kind == ExceptionKind::DataAbort as u32 {
        (ExceptionKind::DataAbort, data_abort_report(frame))
    } else {
        (ExceptionKind::PrefetchAbort, prefetch_abort_report(frame))
    };
    super::irq::unmask_async_aborts();
    if frame.from_user() {
        // (The entry never rescues the stack for an abort from User mode: SP_svc is at its top.)
        if let Some(h) = USER_ABORT_HANDLER.get() {
            return h(frame, &report);
        }
    }
    if STACK_RESCUED.load(Ordering::Relaxed) != 0 {
        STACK_RESCUED.store(0, Ordering::Relaxed);
        panic!("kernel stack overflow (abort with SP at the stack's end): {report}\n{frame}");
    }
    kernel_exception(frame, kind, Some(report));
}

/// Installs the handler for exceptions taken from User mode.
pub fn set_user_handler(h: UserHandler) {
    USER_HANDLER.call_once(|| h);
}

/// Installs the IRQ handler.
pub fn set_irq_handler(h: IrqHandler) {
    IRQ_HANDLER.call_once(|| h);
}

/// Set by the abort entry when it rebuilt the stack at its top because SP_svc was at its end
/// (an overflow): the frame must not be resumed.
#[no_mangle]
static STACK_RESCUED: AtomicU32 = AtomicU32::new(0);

/// Called by every vector with the saved context.
#[no_mangle]
extern "C" fn exception_dispatch(frame: &mut TrapFrame, kind: u32) {
    let kind = match kind {
        1 => ExceptionKind::Undefined,
        2 => ExceptionKind::Svc,
        3 => ExceptionKind::PrefetchAbort,
        4 => ExceptionKind::DataAbort,
        6 => ExceptionKind::Irq,
        _ => ExceptionKind::Fiq,
    };
    if kind == ExceptionKind::Irq {
        if let Some(h) = IRQ_HANDLER.get() {
            return h(frame);
        }
        panic!("IRQ with no handler installed");
    }
    if frame.from_user() {
        if let Some(h) = USER_HANDLER.get() {
            return h(frame, kind);
        }
    }
    kernel_exception(frame, kind, None);
}

/// An exception the kernel took itself (or one from User mode before the process layer
/// started): a fixup resumes it, anything else panics with its report.
fn kernel_exception(frame: &mut TrapFrame, kind: ExceptionKind, report: Option<AbortReport>) {
    match kind {
        ExceptionKind::DataAbort => {
            let report = report.expect("aborts come with their report");
            if report.status.is_async() {
                // Taken at an instruction boundary: `pc` is no access of its own, so no fixup
                // may claim it (ARM ARM B3.13.3: DFAR is UNKNOWN).
                panic!(
                    "kernel asynchronous abort (DFAR and pc do not point at the access): \
                     {report}\n{frame}"
                );
            }
            if let Some(fixup) = find_fixup(frame.pc, 2) {
                // A user-memory copy: resolve the page and run the access again, or fail it
                // with user memory closed (the copy routine does not get to close it).
                let resolved = UACCESS_RESOLVER
                    .get()
                    .is_some_and(|r| r(report.address, report.status.write, report.status.raw));
                if !resolved {
                    resume_at_fixup(frame, fixup, report.status.raw);
                    frame.dacr = super::mmu::DACR_KERNEL;
                }
                return;
            }
            if let Some(fixup) = find_fixup(frame.pc, 0) {
                return resume_at_fixup(frame, fixup, report.status.raw);
            }
            if in_stack_guard(report.address) {
                panic!("kernel stack overflow: {report}\n{frame}");
            }
            if report.status.kind == FaultKind::Domain && report.address < USER_END.as_u32() {
                panic!(
                    "kernel touched user memory outside the copy routines (user domain \
                     closed): {report}\n{frame}"
                );
            }
            panic!("kernel {report}\n{frame}");
        }
        ExceptionKind::PrefetchAbort => {
            let report = report.expect("aborts come with their report");
            if let Some(fixup) = find_fixup(frame.lr_svc, 1) {
                return resume_at_fixup(frame, fixup, report.status.raw);
            }
            panic!("kernel {report}\n{frame}");
        }
        ExceptionKind::Undefined => {
            let thumb = frame.cpsr & (1 << 5) != 0;
            let at = frame.pc.wrapping_sub(if thumb { 2 } else { 4 });
            panic!("undefined instruction at {at:#010x}\n{frame}");
        }
        ExceptionKind::Svc => {
            let thumb = frame.cpsr & PSR_T != 0;
            let at = frame.pc.wrapping_sub(if thumb { 2 } else { 4 });
            panic!("SVC from kernel mode at {at:#010x}\n{frame}")
        }
        ExceptionKind::Fiq | ExceptionKind::Irq => panic!("unexpected {kind:?}\n{frame}"),
    }
}

fn in_stack_guard(addr: u32) -> bool {
    super::boot::image_layout().is_stack_guard(addr)
}

/// Decodes DFSR/DFAR for a data abort that just entered with `frame`.
pub fn data_abort_report(frame: &TrapFrame) -> AbortReport {
    AbortReport {
        instruction: false,
        status: FaultStatus::from_dfsr(Dfsr::read().raw_value()),
        address: Dfar::read().0,
        pc: frame.pc,
        mode: frame.from_mode(),
    }
}

/// Decodes IFSR/IFAR for a prefetch abort that just entered with `frame`.
pub fn prefetch_abort_report(frame: &TrapFrame) -> AbortReport {
    AbortReport {
        instruction: true,
        status: FaultStatus::from_ifsr(Ifsr::read().raw_value()),
        address: Ifar::read().0,
        pc: frame.pc,
        mode: frame.from_mode(),
    }
}

impl fmt::Display for TrapFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.r.iter().enumerate() {
            write!(
                f,
                "r{i:<2}={r:#010x}{}",
                if i % 4 == 3 { "\n" } else { " " }
            )?;
        }
        write!(
            f,
            "\nsp_usr={:#010x} lr_usr={:#010x} lr_svc={:#010x} pc={:#010x} cpsr={:#010x} ({}) \
             dacr={:#x}",
            self.sp_usr,
            self.lr_usr,
            self.lr_svc,
            self.pc,
            self.cpsr,
            mode::name(self.cpsr),
            self.dacr
        )
    }
}
