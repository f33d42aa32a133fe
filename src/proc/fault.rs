//! Faults of user processes: demand-zero and copy-on-write pages are resolved, anything else
//! kills the process with a report (pid, what, address, PC) and the others go on.

use super::files::Request;
use super::{kill_current, KernelFrames, KillReason, TABLE};
use crate::abi::errno;
use crate::arch::arm::exception::{AbortReport, TrapFrame};
use crate::mm::fault::{FaultKind, FaultStatus};
use crate::mm::file_object::FileObject;
use crate::mm::layout::USER_END;
use crate::mm::swap_slots::Slot;
use crate::mm::uvm::{Access, FaultError};
use crate::mm::VirtAddr;
use alloc::sync::Arc;
use core::fmt;

/// What a user process did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserFaultKind {
    /// An address in the kernel's half (2..4 GiB).
    KernelMemory,
    /// An address no region of the process covers (page 0 included).
    Unmapped,
    /// The guard page below the stack: the stack overflowed.
    StackOverflow,
    /// The region forbids the access: a write to text or read-only data, or executing data.
    Protection,
    /// No frame was left to resolve a demand-zero or copy-on-write fault.
    OutOfMemory,
    /// A page of a file mapping wholly past the end of the file.
    PastEndOfFile,
    /// The page of a file mapping could not be read from the card.
    FileRead,
    /// The page could not be read back from swap.
    SwapRead,
    /// Anything else the MMU reported (alignment, external abort...).
    Other(FaultKind),
}

/// A fatal fault of a user process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserFault {
    pub kind: UserFaultKind,
    pub access: Access,
    pub address: u32,
    pub pc: u32,
    pub status: FaultStatus,
}

impl fmt::Display for UserFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            UserFaultKind::KernelMemory => "access to kernel memory",
            UserFaultKind::Unmapped => "access to an unmapped address",
            UserFaultKind::StackOverflow => "stack overflow into the guard page",
            UserFaultKind::Protection => "access forbidden by the mapping",
            UserFaultKind::OutOfMemory => "out of memory resolving a fault",
            UserFaultKind::PastEndOfFile => "bus error (past the end of the mapped file)",
            UserFaultKind::FileRead => "bus error (the mapped file could not be read)",
            UserFaultKind::SwapRead => "bus error (the page could not be read back from swap)",
            UserFaultKind::Other(_) if self.is_bus_error() => "bus error",
            UserFaultKind::Other(_) => "memory fault",
        };
        if self.status.is_async() {
            // DFAR and the PC do not belong to the access that failed.
            return write!(
                f,
                "{what}: {} reported at pc={:#010x}",
                self.status, self.pc
            );
        }
        let access = match self.access {
            Access::Read => "read",
            Access::Write => "write",
            Access::Execute => "execute",
        };
        write!(
            f,
            "{what}: {access} at {:#010x}, pc={:#010x} ({})",
            self.address, self.pc, self.status
        )
    }
}

impl UserFault {
    /// The memory system, not the MMU, refused the access (an external abort or a parity
    /// error): reported as a bus error.
    pub fn is_bus_error(&self) -> bool {
        matches!(
            self.kind,
            UserFaultKind::PastEndOfFile | UserFaultKind::FileRead | UserFaultKind::SwapRead
        ) || self.status.is_external()
    }
}

fn access_of(report: &AbortReport) -> Access {
    if report.instruction {
        Access::Execute
    } else if report.status.write {
        Access::Write
    } else {
        Access::Read
    }
}

/// Resolves `address` for the current process (demand-zero page, copy-on-write, shared page),
/// or says why it cannot be.
fn resolve(address: u32, access: Access, status: FaultStatus) -> Result<(), Unresolved> {
    if address >= USER_END.as_u32() {
        return Err(Unresolved::Kill(UserFaultKind::KernelMemory));
    }
    if !matches!(status.kind, FaultKind::Translation | FaultKind::Permission) {
        return Err(Unresolved::Kill(UserFaultKind::Other(status.kind)));
    }
    // Exception handlers run with IRQs masked.
    let mut t = TABLE.lock_masked();
    let (space, refs) = t
        .current_vm()
        .ok_or(Unresolved::Kill(UserFaultKind::Unmapped))?;
    let va = VirtAddr::new(address);
    let translation = status.kind == FaultKind::Translation;
    let mut resolved = if translation {
        space.handle_translation_fault(va, access, &mut KernelFrames, refs)
    } else {
        space.handle_fault(va, access, &mut KernelFrames, refs)
    };
    if let Err(FaultError::OutOfMemory) = resolved {
        resolved = retry_after_shrinking(space, refs, va, access);
    }
    let kind = match resolved {
        Ok(_) => return Ok(()),
        Err(FaultError::NotCached) => {
            return match space.file_page_at(va) {
                Some((file, index)) => Err(Unresolved::Read(file, index)),
                None => Err(Unresolved::Kill(UserFaultKind::Unmapped)),
            };
        }
        Err(FaultError::SwappedOut) => {
            return match space.swapped_at(va) {
                Some(slot) => Err(Unresolved::SwapIn(va, slot)),
                None => Err(Unresolved::Kill(UserFaultKind::Unmapped)),
            };
        }
        // No frame even after the page cache gave its unused pages back: with swap, the
        // kernel task reclaims (or, with RAM and swap both exhausted, ends the biggest
        // process) and the access is made again.
        Err(FaultError::OutOfMemory) if super::swap::enabled() => return Err(Unresolved::Reclaim),
        Err(FaultError::NoRegion) => UserFaultKind::Unmapped,
        Err(FaultError::Guard) => UserFaultKind::StackOverflow,
        Err(FaultError::Protection) => UserFaultKind::Protection,
        Err(FaultError::OutOfMemory) => UserFaultKind::OutOfMemory,
        Err(FaultError::BeyondEnd) => UserFaultKind::PastEndOfFile,
        Err(FaultError::Io) => UserFaultKind::FileRead,
        Err(FaultError::Map(e)) => panic!("user fault at {address:#010x}: tables refused: {e}"),
    };
    Err(Unresolved::Kill(kind))
}

/// Out of frames: cached file pages that no process maps are free memory too. Gives some back
/// and resolves the fault again (as a fault on a mapped page: the first attempt changed
/// nothing).
#[cold]
#[inline(never)]
fn retry_after_shrinking(
    space: &mut super::UserSpace,
    refs: &mut crate::mm::FrameRefs,
    va: VirtAddr,
    access: Access,
) -> Result<crate::mm::uvm::Resolved, FaultError> {
    if super::files::shrink_with(refs, 64) == 0 {
        return Err(FaultError::OutOfMemory);
    }
    space.handle_fault(va, access, &mut KernelFrames, refs)
}

/// Why a fault was not resolved.
enum Unresolved {
    /// The process dies for it.
    Kill(UserFaultKind),
    /// Page `index` of `file` must be read from the card first.
    Read(Arc<FileObject>, u32),
    /// The page at this address is in this swap slot.
    SwapIn(VirtAddr, Slot),
    /// No frame: memory must be reclaimed first.
    Reclaim,
}

impl Unresolved {
    /// The card request that resolves it (`None` for a kill); `fault` is the report a failed
    /// read kills the process with (`None` for a user copy, which then fails with `errno`).
    fn request(self, fault: Option<UserFault>, errno: i32) -> Option<Request> {
        match self {
            Self::Kill(_) => None,
            Self::Read(file, index) => Some(Request::Page {
                file,
                index,
                fault,
                errno,
            }),
            Self::SwapIn(va, slot) => Some(Request::SwapIn {
                va,
                slot,
                fault,
                errno,
            }),
            Self::Reclaim => Some(Request::Reclaim),
        }
    }
}

/// A data or prefetch abort taken from User mode.
pub(super) fn user_abort(frame: &mut TrapFrame, report: &AbortReport) {
    if report.instruction && report.status.kind == FaultKind::DebugEvent {
        // `bkpt`: with no debugger attached, a breakpoint instruction is a prefetch abort
        // with a debug-event status (ARM ARM C3.3.1), not a memory fault.
        return kill_current(frame, KillReason::Breakpoint { pc: report.pc });
    }
    let access = access_of(report);
    let fault = |kind| UserFault {
        kind,
        access,
        address: report.address,
        pc: report.pc,
        status: report.status,
    };
    match resolve(report.address, access, report.status) {
        Ok(()) => {} // the instruction runs again
        Err(Unresolved::Kill(kind)) => kill_current(frame, KillReason::Fault(fault(kind))),
        Err(wait) => {
            // The process sleeps until the kernel task has read the page (or made room); then
            // the instruction runs again (or the process dies if the card fails).
            let req = wait
                .request(Some(fault(UserFaultKind::FileRead)), errno::EIO)
                .expect("not a kill");
            let mut t = TABLE.lock();
            let pid = t.current().expect("a user abort has a current process");
            super::files::submit(&mut t, pid, req);
            super::sched::reschedule(&mut t, frame);
        }
    }
}

/// Called by the abort handler when a kernel copy routine ([`uaccess`](super::uaccess)) faults
/// on user memory: resolves demand-zero and copy-on-write pages so the copy can go on. Returns
/// `false` when the address is not valid for the access (the copy then fails with EFAULT).
pub(super) fn resolve_uaccess(address: u32, write: bool, status: u32) -> bool {
    // A copy made with the table locked would spin below, silently, with IRQs masked.
    assert!(
        !TABLE.held_here(),
        "a user-memory copy faulted while the process table was locked"
    );
    let access = if write { Access::Write } else { Access::Read };
    match resolve(address, access, FaultStatus::from_dfsr(status)) {
        Ok(()) => true,
        Err(Unresolved::Kill(_)) => false,
        Err(wait) => {
            // The copy fails; the system call sees the deferred request and restarts once the
            // kernel task has done it (EFAULT if the card fails).
            if let Some(req) = wait.request(None, errno::EFAULT) {
                super::files::defer(req);
            }
            false
        }
    }
}
