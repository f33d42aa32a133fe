//! The page cache of the card's files (`mm::page_cache`) as the kernel keeps it, and the card
//! I/O that processes ask for.
//!
//! # Who touches the card
//!
//! Only the kernel task. A process that needs the card (a fault on a file page that is not
//! cached, `spawn` or `map_file` of a file not yet opened, `msync`, `sync`) files a [`Request`]
//! and sleeps (`State::IoWait`); its fault or system call is restartable: the faulting
//! instruction or the `svc` runs again when the request is done, and then finds what it needs in
//! the cache. The kernel task serves requests in its idle wait ([`service`]); while the card
//! works it sleeps in the driver's interrupt wait, and the processes run. Calls whose request
//! finishes them (`msync`, `sync`, and any failure) get their result written into their saved
//! registers and resume after the `svc`. So no process ever waits for the card with the CPU, and
//! no lock a process needs is held while the card works (the driver's own lock is taken only by
//! the kernel task).
//!
//! Dirty pages of shared file mappings that no mapping writes to any more (after `munmap` or
//! exit) are written back by the kernel task too ([`service`] flushes them).
//!
//! Lock order: the process table (which holds the frame owner counts), then [`PAGE_CACHE`], then
//! a file object's own lock; none of them is held across card I/O.

use super::{sched, swap, ExitStatus, KernelFrames, KillReason, Pid, State, KMEM, TABLE};
use crate::abi::errno;
use crate::arch::arm::direct_map::DirectMap;
use crate::arch::arm::exception::TrapFrame;
use crate::arch::arm::irq::IrqSafeMutex;
use crate::arch::arm::smp::CORES;
use crate::bsp::raspi2::emmc::EMMC;
use crate::fs::page_source::FatPageSource;
use crate::fs::{self, FsError};
use crate::mm::file_object::{CacheStats, FileError, FileObject, IoError};
use crate::mm::frame::FrameAllocator;
use crate::mm::page_cache::{canonical_path, PageCache};
use crate::mm::swap_slots::Slot;
use crate::mm::uvm::FileRange;
use crate::mm::FrameRefs;
use crate::mm::VirtAddr;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

/// What the page cache has done since boot.
pub static CACHE_STATS: CacheStats = CacheStats::new();

/// The cached files.
pub static PAGE_CACHE: IrqSafeMutex<PageCache> = IrqSafeMutex::new(PageCache::new(&CACHE_STATS));

fn direct_map() -> DirectMap {
    // SAFETY: the direct map is live once processes exist, and the cache only hands it frames
    // it owns.
    unsafe { DirectMap::new() }
}

/// Whether the caller is the kernel task (the only context that may use the card): core 0
/// with no process on it.
pub fn in_kernel_task() -> bool {
    crate::arch::arm::core_id() == 0 && super::current_pid() == super::KERNEL_PID
}

/// A piece of card I/O a process waits for.
pub enum Request {
    /// Read page `index` of `file` into the cache. `fault`: a user fault's report, whose
    /// process is killed with a bus error if the read fails; `None`: a system call, which then
    /// fails with `errno`.
    Page {
        file: Arc<FileObject>,
        index: u32,
        fault: Option<super::fault::UserFault>,
        errno: i32,
    },
    /// Find the file at `path` and put its object in the cache.
    Open { path: String },
    /// Write back the dirty pages of these files' page ranges (`msync`): the call returns the
    /// pages written.
    WriteBack(Vec<FileRange>),
    /// Write back every dirty page (`sync`): the call returns the pages written.
    SyncAll,
    /// Read the page at `va` of the process back from swap `slot` (as for `Page`: `fault` kills
    /// the process if the card fails, otherwise the call fails with `errno`).
    SwapIn {
        va: VirtAddr,
        slot: Slot,
        fault: Option<super::fault::UserFault>,
        errno: i32,
    },
    /// Make room: reclaim, and if nothing can be reclaimed, end the biggest process.
    Reclaim,
}

/// Per core, what the system call or fault running there found it needs from the card, filed
/// by [`defer`] and turned into a request by the system-call or fault layer.
static DEFERRED: [IrqSafeMutex<Option<Request>>; CORES] =
    [const { IrqSafeMutex::new(None) }; CORES];

/// This core's deferred request.
fn deferred() -> &'static IrqSafeMutex<Option<Request>> {
    &DEFERRED[crate::arch::arm::core_id() as usize]
}

/// The requests, in the order they were filed (at most one per process).
static QUEUE: IrqSafeMutex<VecDeque<(Pid, Request)>> = IrqSafeMutex::new(VecDeque::new());

/// The kernel task is serving requests (the driver's waits call the idle wait again).
static SERVING: AtomicBool = AtomicBool::new(false);

/// Notes that the current system call (or user copy) needs `req` done before it can go on; the
/// system call then returns [`DEFERRED_ERRNO`].
pub fn defer(req: Request) {
    *deferred().lock() = Some(req);
}

/// Whether the running call has a deferred request (a user copy faulted on a file page).
pub fn deferred_pending() -> bool {
    deferred().lock().is_some()
}

/// The request [`defer`] filed for the running call, if any.
pub fn take_deferred() -> Option<Request> {
    deferred().lock().take()
}

/// What a system call returns when it deferred (never seen by user space: the call is
/// restarted).
pub const DEFERRED_ERRNO: i32 = i32::MIN;

/// Files `req` for process `pid` (the current one, in the table `t`), which sleeps until the
/// kernel task has done it, and wakes the kernel task.
pub(super) fn submit(t: &mut super::Table, pid: Pid, req: Request) {
    if let Some(p) = t.procs.get_mut(&pid) {
        p.state = State::IoWait;
    }
    QUEUE.lock().push_back((pid, req));
    sched::wake_kernel();
}

/// Rewinds the saved context of a system call to its `svc` (2 bytes in Thumb state, 4 in ARM),
/// so that it runs again.
pub(super) fn rewind_svc(frame: &mut TrapFrame) {
    frame.pc = frame.pc.wrapping_sub(svc_size(frame.cpsr));
}

/// Bytes of an `svc` in the state `cpsr` says: 2 in Thumb state (CPSR.T), 4 in ARM.
fn svc_size(cpsr: u32) -> u32 {
    if cpsr & (1 << 5) != 0 {
        2
    } else {
        4
    }
}

/// How a request ended for its process.
enum Outcome {
    /// The fault or call runs again and finds what it needs.
    Retry,
    /// The call is over: its result.
    Done(Result<u32, i32>),
    /// The fault could not be resolved: the process dies.
    Kill(super::fault::UserFault),
}

/// The kernel task: serves the processes' card requests, then writes back the dirty pages no
/// mapping writes to any more. Called from the idle wait; does nothing when the idle wait is a
/// card driver's (the kernel task sleeps there holding the driver, busy with other I/O).
pub fn service() {
    if !in_kernel_task() || sched::in_device_wait() || SERVING.swap(true, Ordering::Acquire) {
        return;
    }
    loop {
        serve_queue();
        flush_settled();
        // Below the low watermark: make room before processes need it.
        if swap::enabled() && crate::vm::free_frames() < swap::low_watermark() {
            swap::reclaim(swap::high_watermark());
        }
        // A process may have filed a request while the flush or the reclaim slept on the card
        // (the wake-up it sent was spent on that sleep): serve it now.
        if QUEUE.lock().is_empty() {
            break;
        }
    }
    SERVING.store(false, Ordering::Release);
}

/// Serves the queued requests, one at a time, until the queue is empty.
fn serve_queue() {
    loop {
        let Some((pid, req)) = QUEUE.lock().pop_front() else {
            break;
        };
        let outcome = perform(pid, req);
        let mut t = TABLE.lock();
        let Some(p) = t.procs.get_mut(&pid) else {
            continue;
        };
        if p.state != State::IoWait {
            // Killed meanwhile.
            continue;
        }
        match outcome {
            Outcome::Retry => {}
            Outcome::Done(r) => {
                // The call returns: its result in r0, past the svc it was rewound to.
                p.ctx.pc = p.ctx.pc.wrapping_add(svc_size(p.ctx.cpsr));
                p.ctx.r[0] = match r {
                    Ok(v) => v,
                    Err(e) => (-e) as u32,
                };
            }
            Outcome::Kill(f) => {
                t.terminate(pid, ExitStatus::Killed(KillReason::Fault(f)));
                continue;
            }
        }
        t.make_ready(pid);
    }
}

fn io_errno(e: IoError) -> i32 {
    match e {
        IoError::NoSpace => errno::ENOSPC,
        IoError::Failed => errno::EIO,
    }
}

fn fs_errno(e: &FsError) -> i32 {
    match e {
        FsError::NotFound(_) | FsError::NotADirectory(_) => errno::ENOENT,
        FsError::IsADirectory(_) => errno::EACCES,
        _ => errno::EIO,
    }
}

fn perform(pid: Pid, req: Request) -> Outcome {
    match req {
        Request::SwapIn {
            va,
            slot,
            fault,
            errno,
        } => swap_in(pid, va, slot, fault, errno),
        Request::Reclaim => {
            swap::make_room();
            Outcome::Retry
        }
        Request::Page {
            file,
            index,
            fault,
            errno,
        } => match file.load(index, &mut direct_map(), &mut KernelFrames) {
            Ok(_) | Err(FileError::BeyondEnd) => Outcome::Retry,
            Err(FileError::OutOfMemory) if swap::enabled() => {
                // No frame for the page: make room (or end the biggest process) and try again.
                swap::make_room();
                Outcome::Retry
            }
            Err(FileError::OutOfMemory | FileError::NoKernelMemory) if fault.is_none() => {
                Outcome::Done(Err(errno::ENOMEM))
            }
            Err(FileError::OutOfMemory | FileError::NoKernelMemory) => {
                let mut f = fault.expect("a fault");
                f.kind = super::fault::UserFaultKind::OutOfMemory;
                Outcome::Kill(f)
            }
            Err(_) => match fault {
                Some(mut f) => {
                    f.kind = super::fault::UserFaultKind::FileRead;
                    Outcome::Kill(f)
                }
                None => Outcome::Done(Err(errno)),
            },
        },
        Request::Open { path } => match open(&path) {
            Ok(_) => Outcome::Retry,
            Err(e) => Outcome::Done(Err(fs_errno(&e))),
        },
        Request::WriteBack(ranges) => {
            let mem = direct_map();
            let mut total = 0;
            for (file, pages) in ranges {
                match file.write_back(pages, &mem) {
                    Ok(n) => total += n,
                    Err(e) => return Outcome::Done(Err(io_errno(e))),
                }
            }
            Outcome::Done(Ok(total))
        }
        Request::SyncAll => Outcome::Done(sync().map_err(io_errno)),
    }
}

/// Reads the page at `va` of process `pid` back from swap `slot` and maps it there.
fn swap_in(
    pid: Pid,
    va: VirtAddr,
    slot: Slot,
    fault: Option<super::fault::UserFault>,
    errno: i32,
) -> Outcome {
    let Ok(frame) = KernelFrames.alloc_frame() else {
        // No frame: make room and fault again.
        swap::make_room();
        return Outcome::Retry;
    };
    if swap::read_slot(slot, frame).is_err() {
        let _ = KernelFrames.free_frame(frame);
        return match fault {
            Some(mut f) => {
                f.kind = super::fault::UserFaultKind::SwapRead;
                Outcome::Kill(f)
            }
            None => Outcome::Done(Err(errno)),
        };
    }
    let mut t = TABLE.lock();
    let super::Table { procs, refs, .. } = &mut *t;
    let mapped = procs
        .get_mut(&pid)
        .and_then(|p| p.vm.as_mut())
        .map(|space| space.swap_in(va, slot, frame, refs, &mut KernelFrames));
    if mapped != Some(Ok(true)) {
        // Back already, unmapped, or the process is gone: the frame is not needed.
        let _ = KernelFrames.free_frame(frame);
    }
    Outcome::Retry
}

/// Writes back the dirty pages that no mapping writes to any more (what `munmap` and exit
/// left). Errors leave the pages dirty, to be tried again.
pub(super) fn flush_settled() {
    let files = PAGE_CACHE.lock().objects();
    let mem = direct_map();
    for f in files.iter().filter(|f| f.has_settled_dirt()) {
        let _ = f.write_back_all(&mem);
    }
}

/// The file object of `path` if the cache has it (no I/O).
pub fn lookup(path: &str) -> Option<Arc<FileObject>> {
    PAGE_CACHE.lock().lookup(&canonical_path(path))
}

/// The file object of the file at `path` on the card: from the cache, or made from the file's
/// length (one look at the card, without holding the cache). The pages of its entries are
/// charged to the user budget. The kernel task only.
pub fn open(path: &str) -> Result<Arc<FileObject>, FsError> {
    let key = canonical_path(path);
    if let Some(o) = PAGE_CACHE.lock().lookup(&key) {
        return Ok(o);
    }
    let len = fs::file_len(&EMMC, &key)?;
    let source = FatPageSource::new(&EMMC, key.clone());
    let object = FileObject::new(Box::new(source), len, &CACHE_STATS, &KMEM);
    Ok(PAGE_CACHE.lock().insert(&key, object))
}

/// The file object of `path` for a system call: from the cache, or, in a process, a deferred
/// [`Request::Open`] (`Err(None)`: the call is restarted once the kernel task opened it).
pub fn open_for_call(path: &str) -> Result<Arc<FileObject>, Option<FsError>> {
    if in_kernel_task() {
        return open(path).map_err(Some);
    }
    match lookup(path) {
        Some(o) => Ok(o),
        None => {
            defer(Request::Open {
                path: String::from(path),
            });
            Err(None)
        }
    }
}

/// Reads up to `buf.len()` bytes of `file` from `offset` for a system call: through the
/// cache; a page not cached is read by the kernel task itself, or, in a process, deferred
/// (`Err(None)`; the call is restarted). Returns how many bytes (fewer at the end of the file).
pub fn read_for_call(
    file: &Arc<FileObject>,
    offset: u32,
    buf: &mut [u8],
    errno: i32,
) -> Result<usize, Option<FileError>> {
    if in_kernel_task() {
        return file
            .read(offset, buf, &mut direct_map(), &mut KernelFrames)
            .map_err(Some);
    }
    match file.read_cached(offset, buf, &mut direct_map()) {
        Ok(n) => Ok(n),
        Err(index) => {
            defer(Request::Page {
                file: file.clone(),
                index,
                fault: None,
                errno,
            });
            Err(None)
        }
    }
}

/// Makes sure the pages holding bytes `[offset, offset + len)` of `file` are cached, so that a
/// caller about to take the process table (and read them with it held) finds them there: the
/// kernel task reads what is missing now (sleeping on the card, holding nothing); a process
/// defers its call (`Err(None)`) for the first page missing.
pub fn ensure_cached(
    file: &Arc<FileObject>,
    offset: u32,
    len: u32,
) -> Result<(), Option<FileError>> {
    if len == 0 {
        return Ok(());
    }
    let first = offset / crate::mm::PAGE_SIZE;
    let last = offset.saturating_add(len - 1) / crate::mm::PAGE_SIZE;
    for index in first..=last {
        if file.cached_frame(index).is_some() {
            continue;
        }
        if in_kernel_task() {
            match file.load(index, &mut direct_map(), &mut KernelFrames) {
                Ok(_) | Err(FileError::BeyondEnd) => {}
                Err(e) => return Err(Some(e)),
            }
        } else {
            defer(Request::Page {
                file: file.clone(),
                index,
                fault: None,
                errno: errno::EIO,
            });
            return Err(None);
        }
    }
    Ok(())
}

/// Writes every dirty cached page back to the card; the pages written, or the first error.
/// The kernel task only.
pub fn sync() -> Result<u32, IoError> {
    let files = PAGE_CACHE.lock().objects();
    let mem = direct_map();
    let mut result = Ok(0);
    for f in files {
        match (f.write_back_all(&mem), &mut result) {
            (Ok(n), Ok(total)) => *total += n,
            (Err(e), Ok(_)) => result = Err(e),
            _ => {}
        }
    }
    result
}

/// Gives up to `want` clean cached pages no process maps back to the PMM, with the table's
/// owner counts `refs` (the caller holds the table). Returns how many went. No I/O.
pub fn shrink_with(refs: &FrameRefs, want: u32) -> u32 {
    PAGE_CACHE
        .lock()
        .shrink(want, refs, &direct_map(), &mut KernelFrames)
}

/// [`shrink_with`] taking the process table itself.
pub fn shrink(want: u32) -> u32 {
    let t = TABLE.lock();
    shrink_with(&t.refs, want)
}

/// Drops the file at `path` from the cache: its pages go (a page still mapped stays with its
/// mappings, which read past the end from now on) and the next open reads the card again.
pub fn forget(path: &str) {
    let key = canonical_path(path);
    let mut t = TABLE.lock();
    PAGE_CACHE
        .lock()
        .invalidate(&key, &mut t.refs, &mut KernelFrames);
}

/// Removes the file at `path` from the card, after dropping it from the cache. The kernel task
/// only.
pub fn remove_file(path: &str) -> Result<(), FsError> {
    forget(path);
    fs::remove_file(&EMMC, &canonical_path(path))
}

/// Creates or replaces the file at `path` with `data`. The file's cached pages are dropped
/// first (mappings of the old file keep what they map and read past its end from now on). The
/// kernel task only.
pub fn write_file(path: &str, data: &[u8]) -> Result<(), FsError> {
    forget(path);
    fs::write_file(&EMMC, &canonical_path(path), data)
}
