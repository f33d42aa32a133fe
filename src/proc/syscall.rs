//! The system-call interface (ABI in docs/syscalls.md): `svc #0`, number in r7, arguments in
//! r0-r3, result in r0; a negative result is `-errno`.

use super::files;
use super::sched;
use super::uaccess::{copy_from_user, Efault};
use super::{ExitStatus, KernelFrames, Pid, Process, State, KMEM, SHARED, TABLE};
use crate::abi::{errno, info, map, nr, prot};
use crate::arch::arm::exception::TrapFrame;
use crate::arch::arm::timer;
use crate::fs::FsError;
use crate::mm::asid::ContextId;
use crate::mm::file_object::CacheStats;
use crate::mm::layout::{USER_END, USER_MMAP_BASE, USER_MMAP_END};
use crate::mm::uvm::{Backing, Perm, RegionKind, SharedObject, UvmError, USER_START};
use crate::mm::{VirtAddr, PAGE_SIZE};
use alloc::sync::Arc;

/// Named shared-memory objects that may exist at once.
const MAX_SHARED_OBJECTS: usize = 256;

type SysResult = Result<u32, i32>;

/// Handles the SVC in `frame` for the current process (called straight from the SVC vector).
pub(super) fn dispatch(frame: &mut TrapFrame) {
    let [a0, a1, a2, a3] = [frame.r[0], frame.r[1], frame.r[2], frame.r[3]];
    let result = match frame.r[7] {
        nr::EXIT => return exit(frame, a0 as i32),
        nr::WRITE => write(a0, a1, a2),
        nr::YIELD => {
            frame.r[0] = 0;
            // System calls run with IRQs masked (the SVC entry masks them).
            return sched::reschedule(&mut TABLE.lock_masked(), frame);
        }
        nr::GETPID => Ok(current_pid()),
        nr::SLEEP => return sleep(frame, a0),
        nr::MMAP => mmap(a0, a1, a2),
        nr::MUNMAP => munmap(a0, a1),
        nr::FORK => fork(frame),
        nr::SHM => shm(a0, a1),
        nr::SYSINFO => sysinfo(a0),
        nr::WAIT => return wait(frame, a0),
        nr::SPAWN => spawn(a0, a1, a2),
        nr::MAP_FILE => map_file(a0, a1, a2, a3),
        nr::MSYNC => msync(a0, a1),
        nr::SYNC => sync(),
        _ => Err(errno::ENOSYS),
    };
    frame.r[0] = match result {
        Ok(v) => v,
        Err(files::DEFERRED_ERRNO) => return defer_call(frame),
        Err(e) => (-e) as u32,
    };
}

/// The call needs the card: the process sleeps until the kernel task has done the request the
/// call filed, and the call runs again (or returns what the request says, see `files`).
#[cold]
fn defer_call(frame: &mut TrapFrame) {
    let Some(req) = files::take_deferred() else {
        frame.r[0] = (-errno::EIO) as u32;
        return;
    };
    let mut t = TABLE.lock();
    let pid = t.current().expect("a system call has a current process");
    files::rewind_svc(frame);
    files::submit(&mut t, pid, req);
    sched::reschedule(&mut t, frame);
}

/// The errno of a user copy that failed: `EFAULT`, unless the copy faulted on a file page that
/// must be read first (then the call is deferred and restarted).
fn copy_errno() -> i32 {
    if files::deferred_pending() {
        files::DEFERRED_ERRNO
    } else {
        errno::EFAULT
    }
}

fn current_pid() -> Pid {
    super::current_pid()
}

/// Runs `f` on the current process.
fn with_current<R>(f: impl FnOnce(&mut Process) -> R) -> R {
    let mut t = TABLE.lock();
    let pid = t.current().expect("a system call has a current process");
    f(t.procs.get_mut(&pid).expect("the current process exists"))
}

fn exit(frame: &mut TrapFrame, code: i32) {
    let mut t = TABLE.lock();
    let pid = t.current().expect("a system call has a current process");
    t.terminate(pid, ExitStatus::exited(code));
    sched::reschedule(&mut t, frame);
}

/// At most this many bytes per `write`: the console sends with IRQs masked, so a bigger
/// request would hold up the scheduler; the caller gets the short count.
const WRITE_MAX: u32 = 4096;

/// `write(fd, buf, len)`: fd 1 is the console. The whole request (at most [`WRITE_MAX`]
/// bytes) is copied in first, so a buffer that is only partly valid prints nothing and fails
/// with `EFAULT` (no lock is held while user memory is read).
fn write(fd: u32, buf: u32, len: u32) -> SysResult {
    if fd != 1 {
        return Err(errno::EBADF);
    }
    let len = len.min(WRITE_MAX);
    let mut bounce = [0u8; WRITE_MAX as usize];
    let bytes = &mut bounce[..len as usize];
    copy_from_user(bytes, buf).map_err(|Efault| copy_errno())?;
    crate::console::write_bytes(bytes);
    Ok(len)
}

fn sleep(frame: &mut TrapFrame, ms: u32) {
    if ms == 0 {
        frame.r[0] = 0;
        return sched::reschedule(&mut TABLE.lock(), frame);
    }
    let until = timer::now() + u64::from(ms) * u64::from(sched::ticks_per_ms());
    frame.r[0] = 0;
    let mut t = TABLE.lock();
    let pid = t.current().expect("a system call has a current process");
    if let Some(p) = t.procs.get_mut(&pid) {
        p.state = State::Sleeping { until };
    }
    sched::reschedule(&mut t, frame);
}

fn page_len(len: u32) -> Result<u32, i32> {
    if len == 0 {
        return Err(errno::EINVAL);
    }
    len.checked_next_multiple_of(PAGE_SIZE).ok_or(errno::EINVAL)
}

/// The errno for a refused region operation: running out of regions or of the kernel-memory
/// budget is `ENOMEM`, like running out of frames.
fn region_errno(e: UvmError) -> i32 {
    match e {
        UvmError::TooManyRegions | UvmError::NoKernelMemory | UvmError::OutOfMemory => {
            errno::ENOMEM
        }
        _ => errno::EINVAL,
    }
}

/// `mmap(hint, len, prot)`: anonymous private memory, zero-filled on first touch. Costs no
/// frame until then.
fn mmap(hint: u32, len: u32, prot: u32) -> SysResult {
    let len = page_len(len)?;
    let perm = match prot {
        prot::READ => Perm::R,
        p if p == prot::READ | prot::WRITE || p == prot::WRITE => Perm::RW,
        _ => return Err(errno::EINVAL),
    };
    with_current(|p| {
        let vm = p.vm.as_mut().ok_or(errno::ESRCH)?;
        // A page-aligned hint is taken as is if the whole range is free and inside
        // [USER_START, 2 GiB); otherwise the kernel chooses.
        if hint >= USER_START.as_u32() && hint.is_multiple_of(PAGE_SIZE) {
            let va = VirtAddr::new(hint);
            match vm.add_region(va, len, perm, RegionKind::Anon, Backing::Private) {
                Ok(()) => return Ok(hint),
                Err(e @ (UvmError::TooManyRegions | UvmError::NoKernelMemory)) => {
                    return Err(region_errno(e))
                }
                Err(_) => {}
            }
        }
        let va = vm
            .find_free(len, USER_MMAP_BASE, USER_MMAP_END)
            .ok_or(errno::ENOMEM)?;
        vm.add_region(va, len, perm, RegionKind::Anon, Backing::Private)
            .map_err(|_| errno::ENOMEM)?;
        Ok(va.as_u32())
    })
}

/// `munmap(addr, len)`: pages of the range that are not mapped are skipped, so a range with
/// nothing in it succeeds and changes nothing.
fn munmap(va: u32, len: u32) -> SysResult {
    let len = page_len(len)?;
    if !va.is_multiple_of(PAGE_SIZE) {
        return Err(errno::EINVAL);
    }
    if va.checked_add(len).is_none_or(|e| e > USER_END.as_u32()) {
        return Err(errno::EINVAL);
    }
    let mut t = TABLE.lock();
    let (vm, refs) = t.current_vm().ok_or(errno::ESRCH)?;
    match vm.remove(VirtAddr::new(va), len, &mut KernelFrames, refs) {
        Ok(()) | Err(UvmError::NotFound) => Ok(0),
        Err(e) => Err(region_errno(e)),
    }
}

/// `fork()`: a copy of the caller whose private pages are shared copy-on-write.
fn fork(frame: &mut TrapFrame) -> SysResult {
    let mut t = TABLE.lock();
    let pid = t.current().expect("a system call has a current process");
    let child_pid = t.alloc_pid().ok_or(errno::ENOMEM)?;
    let super::Table { procs, refs, .. } = &mut *t;
    let parent = procs.get_mut(&pid).expect("the current process exists");
    let name = parent.name;
    let cpu = super::cpu_state::fork(parent);
    let vm = parent.vm.as_mut().ok_or(errno::ESRCH)?;
    let child_space = {
        // SAFETY: the direct map is live; the new space only uses frames it owns.
        let mem = unsafe { crate::arch::arm::direct_map::DirectMap::new() };
        vm.fork(
            crate::mm::asid::Asid::KERNEL,
            mem,
            crate::arch::arm::mmu::CpuTlb,
            &mut KernelFrames,
            refs,
        )
        .map_err(|_| errno::ENOMEM)?
    };
    let mut ctx = *frame;
    ctx.r[0] = 0;
    t.procs.insert(
        child_pid,
        Process {
            pid: child_pid,
            parent: pid,
            name,
            state: State::Ready,
            ctx,
            cpu,
            vm: Some(child_space),
            context: ContextId::NEW,
            asid: None,
            ticks: 0,
            core: super::NO_CORE,
            passed_over: false,
            kill: None,
        },
    );
    t.make_ready(child_pid);
    Ok(child_pid)
}

/// `shm(key, len)`: maps shared-memory object `key` (created zero-filled on first use), or
/// returns where the caller already maps the whole of it.
fn shm(key: u32, len: u32) -> SysResult {
    let mut shared = SHARED.lock();
    let existing = shared.get(&key).and_then(|w| w.upgrade());
    let object = match existing {
        Some(o) => {
            if len != 0 && len.div_ceil(PAGE_SIZE) != o.pages() {
                // Our reference goes the way every outside reference must.
                drop(shared);
                let _ = SharedObject::release(o, &mut KernelFrames, &mut super::frame_refs());
                return Err(errno::EINVAL);
            }
            o
        }
        None => {
            let len = page_len(len)?;
            if len > USER_MMAP_END.as_u32() - USER_MMAP_BASE.as_u32() {
                return Err(errno::ENOMEM);
            }
            // Forget the keys whose objects are gone, then refuse more than the cap.
            shared.retain(|_, w| w.strong_count() > 0);
            if shared.len() >= MAX_SHARED_OBJECTS {
                return Err(errno::ENOMEM);
            }
            let o = SharedObject::try_new(len / PAGE_SIZE, &KMEM).map_err(region_errno)?;
            shared.insert(key, Arc::downgrade(&o));
            o
        }
    };
    drop(shared);
    let len = object.pages() * PAGE_SIZE;
    let mapped = with_current(|p| {
        let vm = p.vm.as_mut().ok_or(errno::ESRCH)?;
        // Only a mapping of the whole object, from its first page, is "the" mapping: what is
        // left of one after a partial munmap is not (its start holds another page).
        let whole = vm.regions().find(|r| match &r.backing {
            Backing::Shared(o) => Arc::ptr_eq(o, &object) && r.offset == 0 && r.len == len,
            _ => false,
        });
        if let Some(r) = whole {
            return Ok(r.start.as_u32());
        }
        let va = vm
            .find_free(len, USER_MMAP_BASE, USER_MMAP_END)
            .ok_or(errno::ENOMEM)?;
        vm.add_shared_region(va, len, Perm::RW, RegionKind::Shared, object.clone(), 0)
            .map_err(region_errno)?;
        Ok(va.as_u32())
    });
    // Our own reference goes; the object lives on in the regions that map it (if none does,
    // its frames are freed here).
    let _ = SharedObject::release(object, &mut KernelFrames, &mut super::frame_refs());
    mapped
}

fn sysinfo(what: u32) -> SysResult {
    match what {
        info::FREE_FRAMES => Ok(crate::vm::free_frames()),
        info::RESIDENT_PAGES => {
            with_current(|p| Ok(p.vm.as_ref().map_or(0, |v| v.resident_pages())))
        }
        info::ASID => with_current(|p| Ok(p.asid.map_or(0, |a| u32::from(a.get())))),
        info::COW_SHARED_FRAMES => Ok(TABLE.lock().refs.shared_frames()),
        info::TIMER_HZ => timer::frequency().map_err(|_| errno::ENOSYS),
        info::CACHE_MISSES => Ok(CacheStats::get(&super::files::CACHE_STATS.misses)),
        info::CACHE_PAGES => Ok(CacheStats::get(&super::files::CACHE_STATS.pages)),
        _ => Err(errno::EINVAL),
    }
}

/// `wait(pid)`: the exit status of child `pid`, blocking until it has ended.
/// Longest path `spawn` takes.
const PATH_MAX: u32 = 255;

/// Copies the path of `len` bytes at `ptr` in from the caller into `buf`.
fn user_path(ptr: u32, len: u32, buf: &mut [u8; PATH_MAX as usize]) -> Result<&str, i32> {
    if len == 0 || len > PATH_MAX {
        return Err(errno::EINVAL);
    }
    let bytes = &mut buf[..len as usize];
    copy_from_user(bytes, ptr).map_err(|Efault| copy_errno())?;
    core::str::from_utf8(bytes).map_err(|_| errno::EINVAL)
}

/// `map_file(path, path_len, len, offset | flags)`: maps `len` bytes (rounded up to pages; 0:
/// the rest of the file) of the file at `path` from the page-aligned `offset`, private or
/// shared (see `abi::map`). The file's pages come from the page cache on first touch. A
/// mapping may reach past the end of the file: the last page's tail reads zero, and a page
/// wholly past the end is a bus error when touched.
#[inline(never)]
fn map_file(path: u32, path_len: u32, len: u32, offset_flags: u32) -> SysResult {
    let flags = offset_flags & map::FLAGS;
    let offset = offset_flags & !map::FLAGS;
    let perm = match flags & !map::SHARED {
        map::READ => Perm::R,
        f if f == map::READ | map::WRITE || f == map::WRITE => Perm::RW,
        _ => return Err(errno::EINVAL),
    };
    let shared = flags & map::SHARED != 0;
    let mut buf = [0u8; PATH_MAX as usize];
    let path = user_path(path, path_len, &mut buf)?;
    let file = files::open_for_call(path).map_err(|e| match e {
        None => files::DEFERRED_ERRNO,
        Some(FsError::NotFound(_) | FsError::NotADirectory(_)) => errno::ENOENT,
        Some(FsError::IsADirectory(_)) => errno::EACCES,
        Some(_) => errno::EIO,
    })?;
    let len = match len {
        0 => file
            .size()
            .checked_sub(offset)
            .filter(|&n| n > 0)
            .ok_or(errno::EINVAL)?,
        n => n,
    };
    let len = page_len(len)?;
    if len > USER_MMAP_END.as_u32() - USER_MMAP_BASE.as_u32() {
        return Err(errno::ENOMEM);
    }
    with_current(|p| {
        let vm = p.vm.as_mut().ok_or(errno::ESRCH)?;
        let va = vm
            .find_free(len, USER_MMAP_BASE, USER_MMAP_END)
            .ok_or(errno::ENOMEM)?;
        let kind = RegionKind::Anon;
        vm.add_file_region(va, len, perm, kind, file, offset / PAGE_SIZE, shared)
            .map_err(region_errno)?;
        Ok(va.as_u32())
    })
}

/// `msync(addr, len)`: writes back the changes of the caller's shared file mappings in the
/// range; the number of pages written.
#[inline(never)]
fn msync(va: u32, len: u32) -> SysResult {
    let len = page_len(len)?;
    if !va.is_multiple_of(PAGE_SIZE) {
        return Err(errno::EINVAL);
    }
    let mut t = TABLE.lock();
    let (vm, _) = t.current_vm().ok_or(errno::ESRCH)?;
    let ranges = vm
        .prepare_sync(VirtAddr::new(va), len)
        .map_err(|_| errno::EINVAL)?;
    if ranges.is_empty() {
        return Ok(0);
    }
    // The kernel task writes them; the call returns the pages written (or EIO/ENOSPC).
    files::defer(files::Request::WriteBack(ranges));
    Err(files::DEFERRED_ERRNO)
}

/// `sync()`: the kernel task writes back every dirty page; the call returns how many.
fn sync() -> SysResult {
    files::defer(files::Request::SyncAll);
    Err(files::DEFERRED_ERRNO)
}

/// `spawn(path, len, arg)`: starts the program at `path` (see [`super::spawn_program`]) as a
/// child of the caller, with `arg` in r0. The path is copied in first; the file is read from the
/// card with the polling driver, so the caller holds the CPU until the program is loaded.
fn spawn(path: u32, len: u32, arg: u32) -> SysResult {
    let mut buf = [0u8; PATH_MAX as usize];
    let path = user_path(path, len, &mut buf)?;
    super::spawn_program(path, arg, current_pid()).map_err(|e| e.errno())
}

fn wait(frame: &mut TrapFrame, child: u32) {
    let mut t = TABLE.lock();
    let pid = t.current().expect("a system call has a current process");
    let status = match t.procs.get(&child) {
        Some(c) if c.parent == pid => match c.state {
            State::Zombie(s) => Some(s),
            _ => None,
        },
        _ => {
            frame.r[0] = (-errno::ECHILD) as u32;
            return;
        }
    };
    match status {
        Some(s) => {
            t.procs.remove(&child);
            frame.r[0] = s.code();
        }
        None => {
            if let Some(p) = t.procs.get_mut(&pid) {
                p.state = State::Waiting { child };
            }
            sched::reschedule(&mut t, frame);
        }
    }
}
