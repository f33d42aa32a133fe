//! Starting a program: an ELF image (embedded in the kernel, or a file on the card mapped through
//! the page cache, see [`spawn_file`]) is checked, its pages mapped into a new address space with
//! their own permissions (text RX, read-only data R, data RW, all XN but text, PXN everywhere; a
//! page that two segments share gets the union, see [`crate::elf`]), a demand-zero stack with a
//! guard page below it, and the process is queued to run from the ELF entry point in User mode,
//! in ARM or Thumb state as the entry says.

use super::{KernelFrames, Pid, ProcName, Process, State, UserSpace, KMEM, TABLE};
use crate::arch::arm::boot::mode;
use crate::arch::arm::cache;
use crate::arch::arm::direct_map::DirectMap;
use crate::arch::arm::exception::TrapFrame;
use crate::arch::arm::mmu::CpuTlb;
use crate::elf::{self, ElfError, SegPerm};
use crate::fs::FsError;
use crate::mm::asid::{Asid, ContextId};
use crate::mm::file_object::{FileError, FileObject};
use crate::mm::layout::{self, USER_STACK_SIZE, USER_STACK_TOP};
use crate::mm::uvm::{Backing, Perm, RegionKind, UvmError};
use crate::mm::{VirtAddr, PAGE_SIZE};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

/// Why a program could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnError {
    /// No embedded program has that name.
    NoSuchProgram,
    /// No file at that path on the card.
    NoSuchFile(String),
    /// The path names a directory.
    NotAFile(String),
    /// Reading the card failed (no card, I/O error, no FAT volume).
    Card(String),
    /// The image is not a valid program.
    BadImage(ElfError),
    /// Building its address space failed (out of memory, most likely).
    Memory(UvmError),
    /// The process table is full.
    TooManyProcesses,
    /// A process asked, and the card must be read first: the call is restarted once the kernel
    /// task has read it (never reported to anyone).
    Deferred,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchProgram => f.write_str("no such program (try `ls`)"),
            Self::NoSuchFile(p) => write!(f, "{p}: no such file"),
            Self::NotAFile(p) => write!(f, "{p}: is a directory"),
            Self::Card(e) => write!(f, "cannot read the card: {e}"),
            Self::BadImage(e) => write!(f, "bad program image: {e}"),
            Self::Memory(e) => write!(f, "cannot build its address space: {e:?}"),
            Self::TooManyProcesses => f.write_str("too many processes"),
            Self::Deferred => f.write_str("waiting for the card"),
        }
    }
}

impl From<UvmError> for SpawnError {
    fn from(e: UvmError) -> Self {
        Self::Memory(e)
    }
}

impl From<FsError> for SpawnError {
    fn from(e: FsError) -> Self {
        match e {
            FsError::NotFound(p) | FsError::NotADirectory(p) => Self::NoSuchFile(p),
            FsError::IsADirectory(p) => Self::NotAFile(p),
            e => Self::Card(alloc::format!("{e}")),
        }
    }
}

impl SpawnError {
    /// The error number the `spawn` system call reports.
    pub fn errno(&self) -> i32 {
        use crate::abi::errno;
        match self {
            Self::NoSuchProgram | Self::NoSuchFile(_) => errno::ENOENT,
            Self::NotAFile(_) => errno::EACCES,
            Self::BadImage(_) => errno::ENOEXEC,
            Self::Memory(_) | Self::TooManyProcesses => errno::ENOMEM,
            Self::Card(_) => errno::EIO,
            Self::Deferred => super::files::DEFERRED_ERRNO,
        }
    }
}

/// CPSR a process starts with: User mode, ARM state, IRQs enabled, FIQs masked.
const USER_CPSR: u32 = mode::USR | 1 << 6;
/// CPSR.T: the process starts in Thumb state.
const PSR_T: u32 = 1 << 5;

/// A new user address space (its ASID comes when it first runs).
pub fn new_space() -> Result<UserSpace, UvmError> {
    // SAFETY: the direct map is live after vm2_start and the space only hands it frames it
    // owns.
    let mem = unsafe { DirectMap::new() };
    UserSpace::new_in(mem, CpuTlb, Asid::KERNEL, &mut KernelFrames, &KMEM)
}

/// Builds the address space of the program in `image`; returns it with the entry point and
/// whether it starts in Thumb state.
fn load(image: &[u8]) -> Result<(UserSpace, u32, bool), SpawnError> {
    let elf = elf::Elf::parse(image).map_err(SpawnError::BadImage)?;
    let mut space = new_space()?;
    match map_image(&mut space, &elf) {
        Ok(()) => Ok((space, elf.entry, elf.thumb)),
        Err(e) => {
            let _ = space.destroy(&mut KernelFrames, &mut crate::proc::frame_refs());
            Err(e)
        }
    }
}

fn map_image(space: &mut UserSpace, elf: &elf::Elf<'_>) -> Result<(), SpawnError> {
    let mut refs = crate::proc::frame_refs();
    for run in elf.runs() {
        let (perm, kind) = region_of(run.perm);
        space.add_region(
            VirtAddr::new(run.start),
            run.end - run.start,
            perm,
            kind,
            Backing::Private,
        )?;
        if perm == Perm::RX {
            // No demand-zero page in a text region: every page is present (zeroed) before the
            // file bytes go in, so that every executable page goes through the maintenance
            // below.
            let zeros = [0u8; PAGE_SIZE as usize];
            let mut va = run.start;
            while va < run.end {
                space.populate(VirtAddr::new(va), &zeros, &mut KernelFrames, &mut refs)?;
                va += PAGE_SIZE;
            }
        }
    }
    // File bytes now, split where a segment crosses from one run (region) into the next; the
    // rest of a data region (.bss) is demand-zero.
    for seg in elf.segments() {
        for run in elf.runs() {
            let from = seg.vaddr.max(run.start);
            let to = (seg.vaddr + seg.data.len() as u32).min(run.end);
            if from < to {
                let bytes = &seg.data[(from - seg.vaddr) as usize..(to - seg.vaddr) as usize];
                space.populate(VirtAddr::new(from), bytes, &mut KernelFrames, &mut refs)?;
            }
        }
    }
    for run in elf.runs().iter().filter(|r| r.perm.executable()) {
        // The code was written through the direct map (D-cache); the I-cache is invalidated
        // once, below.
        clean_text(space, run.start, run.end);
    }
    // Make the cleaned code visible to instruction fetch before it can run (ARM ARM B2.2.9).
    cache::invalidate_instructions();
    add_stack(space)
}

/// The stack regions every program gets: demand-zero, with a guard page below.
fn add_stack(space: &mut UserSpace) -> Result<(), SpawnError> {
    let stack_bottom = USER_STACK_TOP.as_u32() - USER_STACK_SIZE;
    space.add_region(
        VirtAddr::new(stack_bottom),
        USER_STACK_SIZE,
        Perm::RW,
        RegionKind::Stack,
        Backing::Private,
    )?;
    space.add_region(
        VirtAddr::new(stack_bottom - PAGE_SIZE),
        PAGE_SIZE,
        Perm::R,
        RegionKind::Guard,
        Backing::Private,
    )?;
    Ok(())
}

/// Starts the embedded program `name` with `arg` in r0 as a child of `parent`.
pub(super) fn spawn(name: &str, arg: u32, parent: Pid) -> Result<Pid, SpawnError> {
    let image = crate::programs::find(name).ok_or(SpawnError::NoSuchProgram)?;
    spawn_image(name, image, arg, parent)
}

impl From<FileError> for SpawnError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::OutOfMemory | FileError::NoKernelMemory => {
                Self::Memory(UvmError::OutOfMemory)
            }
            e => Self::Card(alloc::format!("{e}")),
        }
    }
}

/// Reads `len` bytes of `file` from `offset` into a new buffer, through the page cache (in a
/// process, a page not cached defers the call: see `files::read_for_call`).
fn read_file_bytes(file: &Arc<FileObject>, offset: u32, len: usize) -> Result<Vec<u8>, SpawnError> {
    let mut buf = alloc::vec![0u8; len];
    let n = match super::files::read_for_call(file, offset, &mut buf, crate::abi::errno::EIO) {
        Ok(n) => n,
        Err(None) => return Err(SpawnError::Deferred),
        Err(Some(e)) => return Err(e.into()),
    };
    buf.truncate(n);
    Ok(buf)
}

/// Starts the program in the card file `path` with `arg` in r0 as a child of `parent`.
///
/// The program is a memory object backed by its file ([`Elf::page_plan`]): pages that hold
/// only file bytes map the page cache, copy on write (text and read-only data are then one
/// frame however many processes run the program), and come in on first access; the few pages
/// that mix file bytes with zeroes or another segment are private, filled now. Only the ELF
/// and program headers are read to start it, and nothing at all when they are cached.
pub(super) fn spawn_file(path: &str, arg: u32, parent: Pid) -> Result<Pid, SpawnError> {
    let file = match super::files::open_for_call(path) {
        Ok(f) => f,
        Err(None) => return Err(SpawnError::Deferred),
        Err(Some(e)) => return Err(e.into()),
    };
    let name = path.rsplit('/').next().unwrap_or(path);
    let size = file.size();
    let ehdr = read_file_bytes(&file, 0, elf::EHDR_SIZE)?;
    // The program headers too, at most a page of them.
    let head_len = elf::headers_len(&ehdr)
        .unwrap_or(elf::EHDR_SIZE)
        .min(PAGE_SIZE as usize);
    let head = read_file_bytes(&file, 0, head_len)?;
    let elf = elf::Elf::parse_headers(&head, size).map_err(SpawnError::BadImage)?;
    let mut space = new_space()?;
    if let Err(e) = map_from_file(&mut space, &elf, &file) {
        let _ = space.destroy(&mut KernelFrames, &mut crate::proc::frame_refs());
        return Err(e);
    }
    start(name, space, elf.entry, elf.thumb, arg, parent)
}

/// Maps the program `elf` of `file` into `space` by its page plan, and its stack.
fn map_from_file(
    space: &mut UserSpace,
    elf: &elf::Elf<'_>,
    file: &Arc<FileObject>,
) -> Result<(), SpawnError> {
    let plan = elf
        .page_plan()
        .ok_or(SpawnError::BadImage(ElfError::TooManySegments))?;
    let plan = plan.runs();
    for run in plan {
        let (perm, kind) = region_of(run.perm);
        let (start, len) = (VirtAddr::new(run.start), run.end - run.start);
        match run.file_page {
            Some(first) => {
                space.add_file_region(start, len, perm, kind, file.clone(), first, false)?
            }
            None => space.add_region(start, len, perm, kind, Backing::Private)?,
        }
    }
    // Every file byte the private pages need is in the page cache before the process table is
    // taken below: the card is never read (and never polled) with the table held.
    for run in plan.iter().filter(|r| r.file_page.is_none()) {
        for seg in elf.segments() {
            let from = seg.vaddr.max(run.start);
            let to = (seg.vaddr + seg.filesz).min(run.end);
            if from < to {
                match super::files::ensure_cached(file, seg.offset + (from - seg.vaddr), to - from)
                {
                    Ok(()) => {}
                    Err(None) => return Err(SpawnError::Deferred),
                    Err(Some(e)) => return Err(e.into()),
                }
            }
        }
    }
    // The private pages: file bytes copied in (zero elsewhere); executable ones all present,
    // so that each goes through the maintenance below.
    let mut refs = crate::proc::frame_refs();
    for run in plan.iter().filter(|r| r.file_page.is_none()) {
        if run.perm.executable() {
            let zeros = [0u8; PAGE_SIZE as usize];
            let mut va = run.start;
            while va < run.end {
                space.populate(VirtAddr::new(va), &zeros, &mut KernelFrames, &mut refs)?;
                va += PAGE_SIZE;
            }
        }
        for seg in elf.segments() {
            let from = seg.vaddr.max(run.start);
            let to = (seg.vaddr + seg.filesz).min(run.end);
            // A page at a time: the kernel buffer stays one page, whatever the segment's size.
            let mut at = from;
            while at < to {
                let n = (PAGE_SIZE - at % PAGE_SIZE).min(to - at);
                let bytes = read_file_bytes(file, seg.offset + (at - seg.vaddr), n as usize)?;
                if bytes.len() != n as usize {
                    return Err(SpawnError::Card(String::from("the file ended early")));
                }
                space.populate(VirtAddr::new(at), &bytes, &mut KernelFrames, &mut refs)?;
                at += n;
            }
        }
        if run.perm.executable() {
            clean_text(space, run.start, run.end);
            // Make the cleaned code visible to instruction fetch before it can run (ARM ARM
            // B2.2.9).
            cache::invalidate_instructions();
        }
    }
    drop(refs);
    add_stack(space)
}

/// The region permission and kind of pages mapped `perm`.
fn region_of(perm: SegPerm) -> (Perm, RegionKind) {
    match perm {
        SegPerm::RX => (Perm::RX, RegionKind::Text),
        SegPerm::R => (Perm::R, RegionKind::Data),
        SegPerm::RW => (Perm::RW, RegionKind::Data),
    }
}

/// Cleans the code written through the direct map (D-cache) at `[start, end)` of `space` to
/// the Point of Unification, page by page; the caller then invalidates the I-cache once.
fn clean_text(space: &UserSpace, start: u32, end: u32) {
    let mut va = start;
    while va < end {
        if let Some(t) = space.space().translate(VirtAddr::new(va)) {
            if let Some(kva) = layout::phys_to_virt(t.pa) {
                cache::clean_to_pou(kva, PAGE_SIZE);
            }
        }
        va += PAGE_SIZE;
    }
}

/// Starts the program in `image` with `arg` in r0 as a child of `parent`; `name` is what `ps`
/// shows.
pub(super) fn spawn_image(
    name: &str,
    image: &[u8],
    arg: u32,
    parent: Pid,
) -> Result<Pid, SpawnError> {
    let (space, entry, thumb) = load(image)?;
    start(name, space, entry, thumb, arg, parent)
}

/// Queues a process running `space` from `entry` (in Thumb state if `thumb`) with `arg` in r0.
fn start(
    name: &str,
    space: UserSpace,
    entry: u32,
    thumb: bool,
    arg: u32,
    parent: Pid,
) -> Result<Pid, SpawnError> {
    let mut ctx = TrapFrame {
        sp_usr: USER_STACK_TOP.as_u32(),
        pc: entry,
        cpsr: if thumb { USER_CPSR | PSR_T } else { USER_CPSR },
        ..TrapFrame::default()
    };
    ctx.r[0] = arg;
    let name = ProcName::new(name);
    let mut t = TABLE.lock();
    let Some(pid) = t.alloc_pid() else {
        drop(t);
        let _ = space.destroy(&mut KernelFrames, &mut crate::proc::frame_refs());
        return Err(SpawnError::TooManyProcesses);
    };
    t.procs.insert(
        pid,
        Process {
            pid,
            parent,
            name,
            state: State::Ready,
            ctx,
            cpu: super::cpu_state::CpuState::new(),
            vm: Some(space),
            context: ContextId::NEW,
            asid: None,
            ticks: 0,
            core: super::NO_CORE,
            passed_over: false,
            kill: None,
        },
    );
    t.make_ready(pid);
    Ok(pid)
}
