//! User-space memory: a process's address space as a set of regions backed by memory objects.
//!
//! The model follows Mach's and Phoenix-RTOS's memory objects. A [`UserVm`] owns one user
//! [`AddressSpace`] (TTBR0, `0..2 GiB`, non-global entries tagged with its ASID, PXN) and a map
//! of [`Region`]s. A region says what *may* be there; the translation tables say what *is*
//! there. Nothing is mapped when a region is added: pages come into being on first access,
//! through [`UserVm::handle_fault`], or eagerly through [`UserVm::populate`] (the ELF loader).
//!
//! * A **private** region is anonymous memory: a page is a zeroed frame on first access, owned by
//!   the space. [`UserVm::fork`] shares every mapped private page between parent and child,
//!   read-only in both; the first write copies it (copy on write), or, when the other owners are
//!   gone by then, makes it writable in place.
//! * A **shared** region maps a [`SharedObject`]: its pages are allocated (zeroed) on first
//!   access by any space and then shared by every space mapping that page, writes included. The
//!   object owns them, and gives them back when the last reference to it goes.
//! * A **guard** region reserves addresses that must never be mapped (below a stack).
//!
//! # Ownership of frames
//!
//! A mapped private frame has one owner (the space that maps it) unless it is shared copy on
//! write after a fork: then [`FrameRefs`], one table for all spaces, counts its owners. A frame
//! is returned to the allocator when its last owner unmaps it. Frames of shared objects are not
//! counted there: the object owns them.
//!
//! The frame allocator and the `FrameRefs` are the caller's (the kernel keeps them under
//! locks) and are passed to each call; nothing here is global. Every frame handed to user space
//! is zeroed or completely overwritten before it is mapped, so no data leaks between processes.
//!
//! Errors are values, and a refused call changes nothing (the rare exception, an inconsistency
//! reported by the table code as [`UvmError::Map`] or [`FaultError::Map`], means a broken
//! invariant).
//!
//! # Caches
//!
//! Data written through [`PhysMem`] (the direct map on the target) and read through a user
//! mapping meet in the same data cache (both Normal write-back), so nothing is needed for data.
//! Instructions are another matter: after [`UserVm::populate`] writes into an executable region,
//! the caller must make them visible to instruction fetch (clean the data cache to the point of
//! unification, invalidate the instruction cache; ARM ARM B2.2.9) before the process runs them.

use super::addr::{Frame, Page, VirtAddr, PAGE_SIZE};
use super::desc::MapFlags;
use super::file_object::{FileError, FileObject, Lookup};
use super::frame::{FrameAllocator, PmmError};
use super::kmem::{self, Charge, KmemBudget};
use super::nonresident::{Away, Nonresident};
use super::phys::PhysMem;
use super::region_map::{capacity_for, RegionMap};
use super::swap_slots::{Slot, SwapSlots};
use super::tlb::{Asid, Tlb};
use super::vas::{AddressSpace, MapError};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

/// The lowest address a region may start at: nothing is ever mapped in the first 64 KiB, so
/// that null pointers, and small offsets from them, fault.
pub const USER_START: VirtAddr = VirtAddr::new(0x1_0000);
/// The end (exclusive) of user space: TTBR0 translates `0..2 GiB`.
pub const USER_END: VirtAddr = VirtAddr::new(0x8000_0000);

// ----- permissions, kinds, backings -----------------------------------------------------------

/// What user code may do with a region. Never writable and executable together (W^X).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Perm {
    /// Read only (constant data).
    R,
    /// Read and write (data, heap, stack).
    RW,
    /// Read and execute (text).
    RX,
}

impl Perm {
    /// The attributes a page of such a region is mapped with: [`MapFlags::USER_RODATA`],
    /// [`MapFlags::USER_DATA`] or [`MapFlags::USER_TEXT`].
    pub const fn flags(self) -> MapFlags {
        match self {
            Self::R => MapFlags::USER_RODATA,
            Self::RW => MapFlags::USER_DATA,
            Self::RX => MapFlags::USER_TEXT,
        }
    }

    /// The attributes of a page shared copy on write: like [`Perm::flags`], read-only for `RW`.
    /// (A fork gets them by setting AP\[2\] in the descriptor; the tests check they agree.)
    #[cfg(test)]
    const fn cow_flags(self) -> MapFlags {
        match self {
            Self::RW => MapFlags::USER_RODATA,
            p => p.flags(),
        }
    }

    /// Whether the permission allows `access`.
    pub const fn allows(self, access: Access) -> bool {
        matches!(
            (self, access),
            (_, Access::Read) | (Self::RW, Access::Write) | (Self::RX, Access::Execute)
        )
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::R => "r--",
            Self::RW => "rw-",
            Self::RX => "r-x",
        })
    }
}

/// What a region is for: shown in memory maps and fault reports; only `Guard` changes behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegionKind {
    /// Program text.
    Text,
    /// Program data and bss.
    Data,
    /// A thread's stack.
    Stack,
    /// Anonymous memory (heap, `mmap`).
    Anon,
    /// A shared memory object.
    Shared,
    /// Addresses that must stay unmapped (below a stack): every access is a [`FaultError::Guard`].
    Guard,
}

impl fmt::Display for RegionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Text => "text",
            Self::Data => "data",
            Self::Stack => "stack",
            Self::Anon => "anon",
            Self::Shared => "shared",
            Self::Guard => "guard",
        })
    }
}

/// Where the pages of a region come from.
#[derive(Debug, Clone)]
pub enum Backing {
    /// Anonymous memory of this space: demand-zero, copy on write after a fork.
    Private,
    /// Pages of a shared object, shared with every space that maps them.
    Shared(Arc<SharedObject>),
    /// Pages of a file, private: the cached page is mapped read-only until the first write,
    /// which copies it (a program's text and data, `mmap` of a file without `MAP_SHARED`).
    File(Arc<FileObject>),
    /// Pages of a file, shared: every space maps the cached page itself, and writes reach the
    /// file when the page is written back (`mmap` of a file with `MAP_SHARED`).
    SharedFile(Arc<FileObject>),
}

impl Backing {
    /// Whether mapped pages are owned through [`FrameRefs`] and copied on write: anonymous
    /// memory and private file mappings (whose cached pages count the mapping as an owner).
    fn copy_on_write(&self) -> bool {
        matches!(self, Self::Private | Self::File(_))
    }
}

/// A memory object whose pages several address spaces may map: allocated zeroed on first access,
/// freed when the last reference to the object goes.
///
/// Regions hold strong references; a registry of named objects should hold [`alloc::sync::Weak`]
/// ones, so that the object goes with its last mapping. Whoever holds a strong reference outside
/// a region must give it up with [`SharedObject::release`], which frees the pages when it is the
/// last one (dropping it instead would leak them: dropping has no frame allocator).
pub struct SharedObject {
    pages: u32,
    /// Where each page is (nothing until first touched); sized once, when the object is made.
    frames: spin::Mutex<Vec<ObjectPage>>,
    /// The heap this object takes (the record and its page table), charged when it was made.
    _charge: Charge,
}

/// Where one page of a shared object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectPage {
    /// Never touched: reads zero when it is.
    Absent,
    /// In `frame`. `aged`: the reclaim clock unmapped it from every space and nobody mapped it
    /// since (see [`SharedObject::clock`]).
    Resident { frame: Frame, aged: bool },
    /// Written to this swap slot (the object holds its one reference).
    Swapped(Slot),
}

/// Heap bytes a shared object of `pages` pages takes: its record (behind an `Arc`, two counts
/// more) and its table of pages.
pub fn shared_object_cost(pages: u32) -> u32 {
    kmem::object_cost::<(usize, usize, SharedObject)>()
        + kmem::slice_cost::<ObjectPage>(pages as usize)
}

impl SharedObject {
    /// A new object of `pages` pages, none of them allocated yet, its heap charged to
    /// [`kmem::UNLIMITED`].
    pub fn new(pages: u32) -> Arc<Self> {
        Self::try_new(pages, &kmem::UNLIMITED).expect("an unlimited budget and a small object")
    }

    /// A new object of `pages` pages whose heap is charged to `budget`: `NoKernelMemory` when
    /// the budget (or the heap) cannot hold it.
    pub fn try_new(pages: u32, budget: &'static KmemBudget) -> Result<Arc<Self>, UvmError> {
        let charge = budget
            .charge(shared_object_cost(pages))
            .map_err(|_| UvmError::NoKernelMemory)?;
        let mut frames = Vec::new();
        frames
            .try_reserve_exact(pages as usize)
            .map_err(|_| UvmError::NoKernelMemory)?;
        frames.resize(pages as usize, ObjectPage::Absent);
        Ok(Arc::new(Self {
            pages,
            frames: spin::Mutex::new(frames),
            _charge: charge,
        }))
    }

    /// Its size in pages.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// How many of its pages have a frame.
    pub fn resident(&self) -> u32 {
        self.frames
            .lock()
            .iter()
            .filter(|p| matches!(p, ObjectPage::Resident { .. }))
            .count() as u32
    }

    /// How many of its pages are in swap.
    pub fn swapped(&self) -> u32 {
        self.frames
            .lock()
            .iter()
            .filter(|p| matches!(p, ObjectPage::Swapped(_)))
            .count() as u32
    }

    /// Gives up the reference `this`. When it was the last one, the object's frames go back to
    /// `alloc`, its swap slots to `refs`, and `true` is returned.
    pub fn release<A: FrameAllocator>(
        this: Arc<Self>,
        alloc: &mut A,
        refs: &mut FrameRefs,
    ) -> Result<bool, UvmError> {
        match Arc::into_inner(this) {
            Some(object) => {
                let mut result = Ok(true);
                for page in object.frames.into_inner() {
                    match page {
                        ObjectPage::Absent => {}
                        ObjectPage::Resident { frame, .. } => {
                            if let Err(e) = alloc.free_frame(frame) {
                                note(&mut result, e.into());
                            }
                        }
                        ObjectPage::Swapped(slot) => {
                            let _ = refs.swap.release(slot);
                        }
                    }
                }
                result
            }
            None => Ok(false),
        }
    }

    /// The swap slot of page `index`, if it is in swap.
    pub fn slot_of(&self, index: u32) -> Option<Slot> {
        match self.frames.lock().get(index as usize) {
            Some(ObjectPage::Swapped(slot)) => Some(*slot),
            _ => None,
        }
    }

    /// One step of the reclaim clock over the object's pages from `hand` (see
    /// [`UserVm::clock`] for private pages): a resident page is aged, which `unmap_everywhere`
    /// must make true by unmapping it from every space that maps it (the next use by any of
    /// them faults and maps it again); a page still aged when the clock comes back is a victim
    /// (index and frame). Looks at up to `scan` pages, stops at `want` victims; returns where
    /// the next step starts (`None`: the end of the object).
    pub fn clock(
        &self,
        hand: u32,
        scan: u32,
        want: usize,
        mut unmap_everywhere: impl FnMut(u32),
    ) -> (Option<u32>, Vec<(u32, Frame)>) {
        let mut victims = Vec::new();
        let mut frames = self.frames.lock();
        let mut looked = 0;
        for index in hand..self.pages {
            if looked >= scan || victims.len() >= want {
                return (Some(index), victims);
            }
            if let ObjectPage::Resident { frame, aged } = &mut frames[index as usize] {
                looked += 1;
                if *aged {
                    victims.push((index, *frame));
                } else {
                    unmap_everywhere(index);
                    *aged = true;
                }
            }
        }
        (None, victims)
    }

    /// Page `index`, a victim of [`SharedObject::clock`], was written to `slot`: if it is still
    /// aged in `frame` (nobody mapped it meanwhile), it is now in swap and `true` is returned
    /// (the caller frees the frame); otherwise nothing changes (the caller gives the slot back).
    pub fn swapped_out(&self, index: u32, frame: Frame, slot: Slot) -> bool {
        let mut frames = self.frames.lock();
        match frames.get_mut(index as usize) {
            Some(p) if *p == (ObjectPage::Resident { frame, aged: true }) => {
                *p = ObjectPage::Swapped(slot);
                true
            }
            _ => false,
        }
    }

    /// `frame` holds what `slot` held for page `index`: if the page is still in that slot, it
    /// is resident in `frame` again and `true` is returned (the caller drops the slot's
    /// reference); otherwise the caller frees the frame.
    pub fn swap_in(&self, index: u32, slot: Slot, frame: Frame) -> bool {
        let mut frames = self.frames.lock();
        match frames.get_mut(index as usize) {
            Some(p) if *p == ObjectPage::Swapped(slot) => {
                *p = ObjectPage::Resident { frame, aged: false };
                true
            }
            _ => false,
        }
    }
}

impl fmt::Debug for SharedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedObject")
            .field("pages", &self.pages)
            .field("resident", &self.resident())
            .finish()
    }
}

/// Owner counts of the frames shared copy on write between address spaces.
///
/// Only frames with more than one owner are recorded: a private frame not in the table has a
/// single owner, the space that maps it. One table serves all spaces (a fork shares frames
/// between two of them, and a child may outlive its parent).
///
/// A flat array of counts indexed by frame number: O(1), and no heap that user programs could
/// make grow. The kernel sizes it for all of RAM once at boot ([`FrameRefs::with_frames`]), so
/// sharing a frame never allocates there; a table made with [`FrameRefs::new`] grows on demand
/// (host tests). Counts are 32 bits: a frame of the page cache (or the zero page) may be mapped
/// many times by one process, and no number of mappings the process table allows (64 spaces of
/// 2^19 pages) reaches 2^32.
///
/// The table also knows the **zero page** ([`FrameRefs::set_zero_frame`]): one frame of zeroes
/// that reads of untouched private memory map read-only. The kernel owns it for good, so like a
/// cached file page it is never the last owner's to free.
#[derive(Debug, Default)]
pub struct FrameRefs {
    /// Owners of each frame when shared, 0 otherwise.
    counts: Vec<u32>,
    /// Frames with a count.
    shared: u32,
    /// The shared zero page, if there is one.
    zero: Option<Frame>,
    /// The swap slots and their references (none until a swap partition is found).
    pub swap: SwapSlots,
}

impl FrameRefs {
    /// An empty table that grows as frames are shared.
    pub const fn new() -> Self {
        Self {
            counts: Vec::new(),
            shared: 0,
            zero: None,
            swap: SwapSlots::none(),
        }
    }

    /// Makes `frame` (all zeroes, never written again, owned by the caller for good) the zero
    /// page: reads of untouched private memory map it read-only, and the first write replaces
    /// it with a frame of the space's own, with no copy.
    pub fn set_zero_frame(&mut self, frame: Frame) {
        self.zero = Some(frame);
    }

    /// The zero page, if there is one.
    pub fn zero_frame(&self) -> Option<Frame> {
        self.zero
    }

    /// A table for frames `0..frames`, allocated now.
    pub fn with_frames(frames: u32) -> Self {
        let mut t = Self::new();
        t.counts.resize(frames as usize, 0);
        t
    }

    /// Number of frames with more than one owner.
    pub fn shared_frames(&self) -> u32 {
        self.shared
    }

    /// Number of owners of `frame`: its count when shared, otherwise 1 (a frame the table does
    /// not know has a single owner, or is no user frame at all).
    pub fn count(&self, frame: Frame) -> u32 {
        match self.counts.get(frame.number() as usize) {
            Some(&n) if n > 1 => n,
            _ => 1,
        }
    }

    /// One more owner of `frame`. Inlined into the loop of a fork; growing the table (host
    /// tests only) is out of line.
    #[inline]
    pub(crate) fn share(&mut self, frame: Frame) {
        let i = frame.number() as usize;
        if i >= self.counts.len() {
            self.grow(i + 1);
        }
        let n = &mut self.counts[i];
        if *n == 0 {
            // A private frame (one owner) gets its second.
            *n = 2;
            self.shared += 1;
        } else {
            // Bounded by the page-table entries all spaces can have (see above).
            *n += 1;
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, len: usize) {
        self.counts.resize(len, 0);
    }

    /// One owner fewer; `true` when that was the last one (the frame is free to go).
    #[inline]
    pub(crate) fn release(&mut self, frame: Frame) -> bool {
        let Some(n) = self.counts.get_mut(frame.number() as usize) else {
            return true;
        };
        match *n {
            0 => true,
            2 => {
                *n = 0;
                self.shared -= 1;
                false
            }
            _ => {
                *n -= 1;
                false
            }
        }
    }
}

/// A range of user addresses and what may be there.
#[derive(Debug, Clone)]
pub struct Region {
    /// First address (page aligned).
    pub start: VirtAddr,
    /// Length in bytes (a multiple of the page size, not zero).
    pub len: u32,
    /// What user code may do there.
    pub perm: Perm,
    /// What it is for.
    pub kind: RegionKind,
    /// Where its pages come from.
    pub backing: Backing,
    /// For a region backed by an object or a file, the object (file) page its first page maps
    /// (0 unless the region was added at an offset or is what remains of a split); 0 for
    /// private regions.
    pub offset: u32,
}

impl Region {
    /// The first address past the region (at most 2 GiB).
    pub fn end(&self) -> VirtAddr {
        VirtAddr::new(self.start.as_u32() + self.len)
    }

    /// Whether `va` lies in the region.
    pub fn contains(&self, va: VirtAddr) -> bool {
        va >= self.start && va < self.end()
    }

    /// Its length in pages.
    pub fn pages(&self) -> u32 {
        self.len / PAGE_SIZE
    }

    /// The object or file page that `page` of the region maps.
    fn object_page(&self, page: Page) -> u32 {
        self.offset + (page.start().as_u32() - self.start.as_u32()) / PAGE_SIZE
    }
}

impl fmt::Display for Region {
    /// One line of a memory map: `00400000-00402000 r-x text private`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08x}-{:08x} {} {:<6} ",
            self.start.as_u32(),
            self.end().as_u32(),
            self.perm,
            self.kind
        )?;
        match &self.backing {
            Backing::Private => f.write_str("private"),
            Backing::Shared(o) => write!(
                f,
                "shared @{} ({}/{} pages resident)",
                self.offset,
                o.resident(),
                o.pages()
            ),
            Backing::File(o) | Backing::SharedFile(o) => write!(
                f,
                "{} file @{} ({}/{} pages cached)",
                if matches!(self.backing, Backing::File(_)) {
                    "private"
                } else {
                    "shared"
                },
                self.offset,
                o.resident(),
                o.page_count()
            ),
        }
    }
}

// ----- faults and errors ----------------------------------------------------------------------

/// The kind of access that faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
    /// An instruction fetch.
    Execute,
}

/// Why a fault could not be resolved: the process gets a signal (or dies). Nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultError {
    /// No region covers the address.
    NoRegion,
    /// The address lies in a guard region (a stack overflow, most likely).
    Guard,
    /// The region forbids the access: a write to a read-only or executable region, or an
    /// instruction fetch outside an executable one.
    Protection,
    /// No frame for the page or for an L2 table.
    OutOfMemory,
    /// The page of a file mapping lies past the end of the file.
    BeyondEnd,
    /// The page of a file mapping is not in the page cache: the caller has it read
    /// ([`UserVm::file_page_at`], [`FileObject::load`]) and resolves the fault again.
    NotCached,
    /// The page is in swap: the caller reads it ([`UserVm::swapped_at`]) and puts it back
    /// ([`UserVm::swap_in`]), and the access is made again.
    SwappedOut,
    /// Reading the page from its file failed.
    Io,
    /// The translation tables refused an operation they should have accepted (a broken
    /// invariant).
    Map(MapError),
}

impl From<FileError> for FaultError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::BeyondEnd => Self::BeyondEnd,
            FileError::Io(_) => Self::Io,
            FileError::OutOfMemory | FileError::NoKernelMemory => Self::OutOfMemory,
        }
    }
}

impl From<MapError> for FaultError {
    fn from(e: MapError) -> Self {
        match e {
            MapError::OutOfMemory => Self::OutOfMemory,
            e => Self::Map(e),
        }
    }
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRegion => f.write_str("no region at this address"),
            Self::Guard => f.write_str("access to a guard page"),
            Self::Protection => f.write_str("access not allowed by the region"),
            Self::OutOfMemory => f.write_str("out of memory"),
            Self::BeyondEnd => f.write_str("past the end of the mapped file"),
            Self::NotCached => f.write_str("the file page is not cached yet"),
            Self::SwappedOut => f.write_str("the page is in swap"),
            Self::Io => f.write_str("the page could not be read from its file"),
            Self::Map(e) => write!(f, "translation tables: {e}"),
        }
    }
}

/// How a fault was resolved: the faulting instruction may be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// A private page got its first frame, zeroed (on its first write; after a read that
    /// mapped the zero page, the zero page is replaced).
    DemandZero,
    /// A read of an untouched private page mapped the shared zero page, read-only.
    ZeroPage,
    /// A page the reclaim clock had aged was used again: mapped again, same frame.
    Referenced,
    /// A write to a private page shared after a fork: the page now has its own copy.
    CopyOnWrite,
    /// A write to a private page that had been shared after a fork but whose other owners are
    /// gone: made writable in place, no copy.
    Reclaimed,
    /// A page of a shared object was mapped (allocated zeroed if it was the first access).
    SharedPage,
    /// A page of a file was mapped from the page cache (read from the file on a miss); or a
    /// private copy of it was made for a write.
    FilePage,
    /// The page already allowed the access (another thread resolved the fault first, or a
    /// stale TLB entry): nothing to do.
    AlreadyMapped,
}

/// Why a [`UserVm`] operation was refused. A refused call changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UvmError {
    /// The translation tables refused an operation (a broken invariant; `OutOfMemory` is
    /// reported as [`UvmError::OutOfMemory`]).
    Map(MapError),
    /// The range overlaps an existing region.
    Overlap,
    /// The range touches page 0, reaches past 2 GiB or wraps.
    OutsideUser,
    /// An address or length is not page aligned.
    Unaligned,
    /// A length of zero.
    ZeroSize,
    /// No (suitable) region there.
    NotFound,
    /// No frame for a page or a table.
    OutOfMemory,
    /// The length does not fit: past the end of the region, or of the shared object.
    BadLength,
    /// The space has [`MAX_REGIONS`] regions already.
    TooManyRegions,
    /// The kernel-memory budget for user requests cannot hold the heap this needs.
    NoKernelMemory,
    /// Writing pages back to their file failed (they stay dirty in the page cache).
    Io(super::file_object::IoError),
}

impl From<MapError> for UvmError {
    fn from(e: MapError) -> Self {
        match e {
            MapError::OutOfMemory => Self::OutOfMemory,
            e => Self::Map(e),
        }
    }
}

impl From<PmmError> for UvmError {
    fn from(e: PmmError) -> Self {
        MapError::from(e).into()
    }
}

impl fmt::Display for UvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Map(e) => write!(f, "translation tables: {e}"),
            Self::Overlap => f.write_str("overlaps a region"),
            Self::OutsideUser => f.write_str("outside user space"),
            Self::Unaligned => f.write_str("not page aligned"),
            Self::ZeroSize => f.write_str("zero length"),
            Self::NotFound => f.write_str("no such region"),
            Self::OutOfMemory => f.write_str("out of memory"),
            Self::BadLength => f.write_str("length past the end of the region or object"),
            Self::TooManyRegions => f.write_str("too many regions"),
            Self::NoKernelMemory => f.write_str("kernel memory budget exhausted"),
            Self::Io(e) => write!(f, "write-back: {e}"),
        }
    }
}

/// What one step of [`UserVm::clock`] did.
#[derive(Debug, Default)]
pub struct Clock {
    /// Where the next step starts, or `None` when this one reached the end of the space.
    pub next: Option<VirtAddr>,
    /// Pages looked at.
    pub scanned: u32,
    /// Pages unmapped to see whether they are used again.
    pub aged: u32,
    /// Mappings of page-cache frames dropped (the cache keeps the pages).
    pub dropped: u32,
    /// Pages not used for a whole turn, to be written to swap: address and frame.
    pub victims: Vec<(VirtAddr, Frame)>,
}

/// Pages `range` of a file: what `msync` writes back.
pub type FileRange = (Arc<FileObject>, core::ops::Range<u32>);

// ----- the user address space -----------------------------------------------------------------

/// The memory of one process: its address space and its regions.
///
/// Must be torn down with [`UserVm::destroy`]: dropping it leaks its frames.
pub struct UserVm<M: PhysMem, T: Tlb> {
    space: AddressSpace<M, T>,
    /// Regions by start address; they never overlap.
    regions: RegionMap,
    /// Number of mapped pages.
    resident: u32,
    /// The heap its region map may take, charged to the budget it was made with.
    kmem: Charge,
    /// Private pages aged by the reclaim clock or in swap.
    away: Nonresident,
}

/// Regions one space may have: each costs kernel heap (see [`regions_cost`]).
pub const MAX_REGIONS: usize = 1024;

/// Heap bytes of the region map of a space with `n` regions: one array of
/// [`capacity_for`]`(n)` regions.
pub const fn regions_cost(n: usize) -> u32 {
    kmem::slice_cost::<Region>(capacity_for(n))
}

/// Records `e` in `result` unless an earlier error is there.
fn note<T>(result: &mut Result<T, UvmError>, e: UvmError) {
    if result.is_ok() {
        *result = Err(e);
    }
}

/// `page + 1` (the next page start; user pages never wrap).
#[inline]
fn next_page(va: VirtAddr) -> VirtAddr {
    VirtAddr::new(va.as_u32() + PAGE_SIZE)
}

impl<M: PhysMem, T: Tlb> UserVm<M, T> {
    /// A new, empty user space tagged with `asid`, whose regions' heap is charged to
    /// [`kmem::UNLIMITED`].
    pub fn new<A: FrameAllocator>(
        mem: M,
        tlb: T,
        asid: Asid,
        alloc: &mut A,
    ) -> Result<Self, UvmError> {
        Self::new_in(mem, tlb, asid, alloc, &kmem::UNLIMITED)
    }

    /// A new, empty user space tagged with `asid`, whose regions' heap is charged to `budget`:
    /// adding a region the budget cannot hold fails with `NoKernelMemory`, as does a fork whose
    /// child's regions it cannot hold.
    pub fn new_in<A: FrameAllocator>(
        mem: M,
        tlb: T,
        asid: Asid,
        alloc: &mut A,
        budget: &'static KmemBudget,
    ) -> Result<Self, UvmError> {
        let charge = budget
            .charge(regions_cost(0))
            .map_err(|_| UvmError::NoKernelMemory)?;
        Self::with_charge(mem, tlb, asid, alloc, charge)
    }

    fn with_charge<A: FrameAllocator>(
        mem: M,
        tlb: T,
        asid: Asid,
        alloc: &mut A,
        kmem: Charge,
    ) -> Result<Self, UvmError> {
        let away = Nonresident::new();
        Ok(Self {
            space: AddressSpace::new_user(mem, tlb, asid, alloc)?,
            regions: RegionMap::new(),
            resident: 0,
            kmem,
            away,
        })
    }

    /// Makes the charge for the region map, and its room, cover `n` regions, or refuses
    /// (nothing changed).
    fn charge_regions(&mut self, n: usize) -> Result<(), UvmError> {
        if n > MAX_REGIONS {
            return Err(UvmError::TooManyRegions);
        }
        let before = self.kmem.bytes();
        self.kmem
            .resize(regions_cost(n).max(before))
            .map_err(|_| UvmError::NoKernelMemory)?;
        if self.regions.reserve_for(n).is_err() {
            // Shrinking back cannot be refused.
            let _ = self.kmem.resize(before);
            return Err(UvmError::NoKernelMemory);
        }
        Ok(())
    }

    /// Gives back the room and the charge the regions there are no longer need.
    fn settle_regions(&mut self) {
        self.regions.shrink();
        // Never more than was charged before: shrinking cannot be refused.
        let _ = self.kmem.resize(regions_cost(self.regions.len()));
    }

    /// Heap bytes charged for the region map now.
    pub fn kmem_charged(&self) -> u32 {
        self.kmem.bytes()
    }

    /// Gives the space a new ASID after an ASID rollover; the caller must have invalidated the
    /// old tag's TLB entries, as a rollover does (see [`AddressSpace::set_asid`]).
    pub fn set_asid(&mut self, asid: Asid) {
        self.space.set_asid(asid);
    }

    /// The translation tables.
    pub fn space(&self) -> &AddressSpace<M, T> {
        &self.space
    }

    /// Physical address of the L1 table, for TTBR0.
    pub fn l1_phys(&self) -> super::addr::PhysAddr {
        self.space.l1_phys()
    }

    /// The ASID the space's entries are tagged with.
    pub fn asid(&self) -> Asid {
        // A user space always has one.
        self.space.asid().unwrap_or(Asid::KERNEL)
    }

    /// The regions, by address.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.values()
    }

    /// The region containing `va`.
    pub fn region_at(&self, va: VirtAddr) -> Option<&Region> {
        self.regions.lookup(va)
    }

    /// Number of mapped pages (private and shared).
    pub fn resident_pages(&self) -> u32 {
        self.resident
    }

    /// Checks `[start, start + len)`: page aligned, not empty, inside `USER_START..USER_END`.
    fn check_user_range(start: VirtAddr, len: u32) -> Result<VirtAddr, UvmError> {
        if len == 0 {
            return Err(UvmError::ZeroSize);
        }
        if !start.is_aligned(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
            return Err(UvmError::Unaligned);
        }
        let end = start.checked_add(len).ok_or(UvmError::OutsideUser)?;
        if start < USER_START || end > USER_END {
            return Err(UvmError::OutsideUser);
        }
        Ok(end)
    }

    /// Adds a region of `len` bytes at `start` (page aligned, inside
    /// `[USER_START, USER_END)`, overlapping no other region). Nothing is mapped: pages come on
    /// first access. A shared region maps the object from its first page; its length must not
    /// exceed the object's.
    pub fn add_region(
        &mut self,
        start: VirtAddr,
        len: u32,
        perm: Perm,
        kind: RegionKind,
        backing: Backing,
    ) -> Result<(), UvmError> {
        self.insert_region(start, len, perm, kind, backing, 0)
    }

    /// Adds a region mapping `object` from its page `first_page` (`mmap` at an offset); as
    /// [`UserVm::add_region`] otherwise. `BadLength` when the region would reach past the
    /// object's end.
    pub fn add_shared_region(
        &mut self,
        start: VirtAddr,
        len: u32,
        perm: Perm,
        kind: RegionKind,
        object: Arc<SharedObject>,
        first_page: u32,
    ) -> Result<(), UvmError> {
        self.insert_region(start, len, perm, kind, Backing::Shared(object), first_page)
    }

    /// Adds a region mapping the file `object` from its page `first_page`: private (a write
    /// copies the page) or `shared` (writes reach the file when written back). The region may
    /// reach past the end of the file; an access to a page wholly past it is a
    /// [`FaultError::BeyondEnd`]. As [`UserVm::add_region`] otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn add_file_region(
        &mut self,
        start: VirtAddr,
        len: u32,
        perm: Perm,
        kind: RegionKind,
        object: Arc<FileObject>,
        first_page: u32,
        shared: bool,
    ) -> Result<(), UvmError> {
        let backing = if shared {
            Backing::SharedFile(object)
        } else {
            Backing::File(object)
        };
        self.insert_region(start, len, perm, kind, backing, first_page)
    }

    fn insert_region(
        &mut self,
        start: VirtAddr,
        len: u32,
        perm: Perm,
        kind: RegionKind,
        backing: Backing,
        offset: u32,
    ) -> Result<(), UvmError> {
        let end = Self::check_user_range(start, len)?;
        if !matches!(backing, Backing::Private) {
            // A file mapping may reach past the end of the file (an access there faults); one
            // of a shared object may not.
            let end = offset.checked_add(len / PAGE_SIZE);
            let pages = match &backing {
                Backing::Shared(o) => o.pages(),
                _ => u32::MAX,
            };
            if end.is_none_or(|e| e > pages) {
                return Err(UvmError::BadLength);
            }
        }
        let slot = self
            .regions
            .free_slot(start, end)
            .ok_or(UvmError::Overlap)?;
        let offset = match backing {
            Backing::Private => 0,
            _ => offset,
        };
        self.charge_regions(self.regions.len() + 1)?;
        self.regions.insert_at(
            slot,
            Region {
                start,
                len,
                perm,
                kind,
                backing,
                offset,
            },
        );
        Ok(())
    }

    /// The lowest address of a gap of `len` bytes (rounded up to pages) that lies within
    /// `[from, below)` (rounded inwards to pages) and inside user space, touching no region;
    /// `None` if there is none. For `mmap` without a fixed address.
    pub fn find_free(&self, len: u32, from: VirtAddr, below: VirtAddr) -> Option<VirtAddr> {
        if len == 0 {
            return None;
        }
        let len = u64::from(len).next_multiple_of(u64::from(PAGE_SIZE));
        let lo = u64::from(from.as_u32())
            .next_multiple_of(u64::from(PAGE_SIZE))
            .max(u64::from(USER_START.as_u32()));
        let hi = u64::from(below.align_down(PAGE_SIZE).as_u32()).min(u64::from(USER_END.as_u32()));
        if lo >= hi {
            return None;
        }
        // Here `lo` < 2 GiB. Skip a region that starts below `lo` and reaches past it.
        let lo = lo as u32;
        let mut candidate = u64::from(lo);
        // The regions that end after `lo` (the first may start below it).
        for r in self.regions.from(VirtAddr::new(lo)) {
            let start = u64::from(r.start.as_u32());
            if start >= hi || candidate + len <= start {
                break;
            }
            candidate = candidate.max(u64::from(r.end().as_u32()));
        }
        (candidate + len <= hi).then(|| VirtAddr::new(candidate as u32))
    }

    /// Whether all of `[va, va + len)` lies in regions (not guards) that allow reading, or
    /// writing when `write`: the check before the kernel copies from or to user memory. An empty
    /// range is always allowed. It does not say the pages are mapped: a copy may still fault,
    /// and the fault is then resolved as one of user code would be.
    pub fn check_range(&self, va: VirtAddr, len: u32, write: bool) -> bool {
        let Some(end) = u64::from(va.as_u32()).checked_add(u64::from(len)) else {
            return false;
        };
        let mut v = va;
        while u64::from(v.as_u32()) < end {
            let Some(r) = self.region_at(v) else {
                return false;
            };
            if r.kind == RegionKind::Guard || (write && r.perm != Perm::RW) {
                return false;
            }
            v = r.end();
        }
        true
    }

    // ----- faults ---------------------------------------------------------------------------

    /// Resolves a fault at `va` caused by `access` (the abort handler's job for user
    /// addresses), mapping what the region says should be there:
    ///
    /// * private, not mapped: a zeroed frame, with the region's permission (a read of an `RW`
    ///   page maps it writable at once);
    /// * private, mapped read-only in an `RW` region, a write: copy on write when another space
    ///   still shares the frame (a new frame, the page remapped break-before-make, one owner
    ///   fewer), otherwise the page is made writable in place;
    /// * shared: the object's page, allocated zeroed on the object's first access to it, mapped
    ///   with the region's permission.
    ///
    /// Refused (nothing changed): `NoRegion`, `Guard`, `Protection` (the region forbids the
    /// access), `OutOfMemory`.
    pub fn handle_fault<A: FrameAllocator>(
        &mut self,
        va: VirtAddr,
        access: Access,
        alloc: &mut A,
        refs: &mut FrameRefs,
    ) -> Result<Resolved, FaultError> {
        self.resolve_fault(va, access, false, alloc, refs)
    }

    /// [`UserVm::handle_fault`] for a fault the MMU reported as a *translation* fault: the page
    /// was not mapped when the access was made, so the walk that asks is skipped (if the page is
    /// mapped after all, the mapping attempt says so and the fault is handled as usual).
    pub fn handle_translation_fault<A: FrameAllocator>(
        &mut self,
        va: VirtAddr,
        access: Access,
        alloc: &mut A,
        refs: &mut FrameRefs,
    ) -> Result<Resolved, FaultError> {
        self.resolve_fault(va, access, true, alloc, refs)
    }

    fn resolve_fault<A: FrameAllocator>(
        &mut self,
        va: VirtAddr,
        access: Access,
        unmapped: bool,
        alloc: &mut A,
        refs: &mut FrameRefs,
    ) -> Result<Resolved, FaultError> {
        let region = self.regions.lookup(va).ok_or(FaultError::NoRegion)?;
        if region.kind == RegionKind::Guard {
            return Err(FaultError::Guard);
        }
        if !region.perm.allows(access) {
            return Err(FaultError::Protection);
        }
        let page = Page::containing(va);
        let flags = region.perm.flags();
        let space = &mut self.space;
        let mapped = !unmapped && space.is_mapped(page.start());
        let Some(t) = mapped.then(|| space.translate(page.start())).flatten() else {
            if let Some(away) = self.away.get(page.start()) {
                // Only private pages go away; their regions are the ones that find them.
                return match away {
                    Away::Swapped(_) => Err(FaultError::SwappedOut),
                    Away::Aged(frame) => {
                        // Used again: the same frame, writable only if it is the space's alone
                        // (a page still shared copy on write stays read-only).
                        let flags = match region.perm {
                            Perm::RW if refs.count(frame) > 1 => Perm::R.flags(),
                            p => p.flags(),
                        };
                        space.map_page(page, frame, flags, alloc)?;
                        self.away.remove(page.start());
                        self.resident += 1;
                        Ok(Resolved::Referenced)
                    }
                };
            }
            let resolved = match &region.backing {
                Backing::Private if access == Access::Read && refs.zero.is_some() => {
                    // A read of untouched memory: the zero page, read-only; the first write
                    // takes a frame of its own.
                    let zero = refs.zero.expect("checked");
                    let ro = match region.perm {
                        Perm::RW => Perm::R.flags(),
                        p => p.flags(),
                    };
                    match space.map_page(page, zero, ro, alloc) {
                        Ok(()) => refs.share(zero),
                        Err(MapError::AlreadyMapped) if unmapped => {
                            return self.resolve_fault(va, access, false, alloc, refs);
                        }
                        Err(e) => return Err(e.into()),
                    }
                    Resolved::ZeroPage
                }
                Backing::Private => {
                    // A frame zeroed ahead of time if the allocator has one, else zeroed now.
                    let (frame, zeroed) = alloc
                        .alloc_for_zero()
                        .map_err(|_| FaultError::OutOfMemory)?;
                    if !zeroed {
                        space.mem_mut().zero_frame(frame);
                    }
                    match space.map_page(page, frame, flags, alloc) {
                        Ok(()) => {}
                        Err(MapError::AlreadyMapped) if unmapped => {
                            // Mapped after all: handle it as a fault on a mapped page.
                            alloc.free_frame(frame).map_err(MapError::from)?;
                            return self.resolve_fault(va, access, false, alloc, refs);
                        }
                        Err(e) => {
                            alloc.free_frame(frame).map_err(MapError::from)?;
                            return Err(e.into());
                        }
                    }
                    Resolved::DemandZero
                }
                Backing::Shared(object) => {
                    let index = region.object_page(page);
                    match Self::map_object_page(space, object, index, page, flags, alloc) {
                        Ok(()) => {}
                        Err(FaultError::Map(MapError::AlreadyMapped)) if unmapped => {
                            return self.resolve_fault(va, access, false, alloc, refs);
                        }
                        Err(e) => return Err(e),
                    }
                    Resolved::SharedPage
                }
                Backing::File(object) | Backing::SharedFile(object) => {
                    let index = region.object_page(page);
                    let shared = matches!(region.backing, Backing::SharedFile(_));
                    match Self::map_file_page(
                        space,
                        object,
                        index,
                        page,
                        region.perm,
                        access,
                        shared,
                        alloc,
                        refs,
                    ) {
                        Ok(()) => {}
                        Err(FaultError::Map(MapError::AlreadyMapped)) if unmapped => {
                            return self.resolve_fault(va, access, false, alloc, refs);
                        }
                        Err(e) => return Err(e),
                    }
                    Resolved::FilePage
                }
            };
            self.resident += 1;
            return Ok(resolved);
        };
        let writable = t.flags.is_some_and(|f| f.access.is_writable());
        if access != Access::Write || writable {
            return Ok(Resolved::AlreadyMapped);
        }
        // A write to a read-only page of an RW region.
        match &region.backing {
            Backing::Private if Some(Frame::containing(t.pa)) == refs.zero => {
                // The zero page: a frame of its own, zeroed (no copy needed).
                let (new, zeroed) = alloc
                    .alloc_for_zero()
                    .map_err(|_| FaultError::OutOfMemory)?;
                if !zeroed {
                    space.mem_mut().zero_frame(new);
                }
                if let Err(e) = space.remap_page(page, new, flags) {
                    alloc.free_frame(new).map_err(MapError::from)?;
                    return Err(e.into());
                }
                refs.release(Frame::containing(t.pa));
                Ok(Resolved::DemandZero)
            }
            Backing::Private | Backing::File(_) => {
                let old = Frame::containing(t.pa);
                if refs.count(old) > 1 {
                    let new = alloc.alloc_frame().map_err(|_| FaultError::OutOfMemory)?;
                    space.mem_mut().copy_frame(new, old);
                    if let Err(e) = space.remap_page(page, new, flags) {
                        alloc.free_frame(new).map_err(MapError::from)?;
                        return Err(e.into());
                    }
                    refs.release(old);
                    Ok(Resolved::CopyOnWrite)
                } else {
                    space.protect_page(page, flags)?;
                    Ok(Resolved::Reclaimed)
                }
            }
            Backing::Shared(_) => {
                space.protect_page(page, flags)?;
                Ok(Resolved::SharedPage)
            }
            Backing::SharedFile(object) => {
                // The first write through this mapping: from now on the page is dirty.
                space.protect_page(page, flags)?;
                object.note_writer(region.object_page(page));
                Ok(Resolved::FilePage)
            }
        }
    }

    /// Maps page `index` of the file `object` at `page` for a fault of kind `access` in a
    /// region with `perm`: the cached page itself, read-only unless it is a write to a shared
    /// mapping (a later write faults again: copy on write for a private mapping, dirty
    /// tracking for a shared one), with one more owner in `refs`; or, for a write to a private
    /// mapping, a private copy at once.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn map_file_page<A: FrameAllocator>(
        space: &mut AddressSpace<M, T>,
        object: &FileObject,
        index: u32,
        page: Page,
        perm: Perm,
        access: Access,
        shared: bool,
        alloc: &mut A,
        refs: &mut FrameRefs,
    ) -> Result<(), FaultError> {
        let frame = match object.lookup(index, perm == Perm::RX, space.mem_mut()) {
            Lookup::Hit(frame) => frame,
            Lookup::Miss => return Err(FaultError::NotCached),
            Lookup::BeyondEnd => return Err(FaultError::BeyondEnd),
        };
        if access == Access::Write && !shared {
            let copy = alloc.alloc_frame().map_err(|_| FaultError::OutOfMemory)?;
            space.mem_mut().copy_frame(copy, frame);
            if let Err(e) = space.map_page(page, copy, perm.flags(), alloc) {
                alloc.free_frame(copy).map_err(MapError::from)?;
                return Err(e.into());
            }
            return Ok(());
        }
        let writable = access == Access::Write;
        let flags = match perm {
            Perm::RW if !writable => Perm::R.flags(),
            p => p.flags(),
        };
        space.map_page(page, frame, flags, alloc)?;
        refs.share(frame);
        if writable {
            object.note_writer(index);
        }
        Ok(())
    }

    /// Maps page `index` of `object` at `page`, allocating it (zeroed) when it has no frame yet.
    /// The object stays locked throughout, so that two spaces faulting on the same object page
    /// get the same frame; on failure a frame allocated here goes back.
    fn map_object_page<A: FrameAllocator>(
        space: &mut AddressSpace<M, T>,
        object: &SharedObject,
        index: u32,
        page: Page,
        flags: MapFlags,
        alloc: &mut A,
    ) -> Result<(), FaultError> {
        let mut frames = object.frames.lock();
        // The region was checked against the object's size when it was added.
        let slot = frames
            .get_mut(index as usize)
            .ok_or(MapError::OutsideSpace)?;
        let (frame, fresh) = match *slot {
            ObjectPage::Resident { frame, .. } => (frame, false),
            ObjectPage::Swapped(_) => return Err(FaultError::SwappedOut),
            ObjectPage::Absent => {
                let f = alloc.alloc_frame().map_err(MapError::from)?;
                space.mem_mut().zero_frame(f);
                (f, true)
            }
        };
        match space.map_page(page, frame, flags, alloc) {
            Ok(()) => {
                // Mapped (again): not aged any more.
                *slot = ObjectPage::Resident { frame, aged: false };
                Ok(())
            }
            Err(e) => {
                if fresh {
                    alloc.free_frame(frame).map_err(MapError::from)?;
                }
                Err(e.into())
            }
        }
    }

    // ----- loading --------------------------------------------------------------------------

    /// Writes `data` at `va` (any alignment), all of it inside one private region, mapping its
    /// pages now (zeroed frames, with the region's permission, where nothing is mapped yet).
    /// The bytes are written through [`PhysMem`], not through the user mapping, so read-only and
    /// executable regions can be loaded too (see the module documentation for the instruction
    /// cache). A page still shared copy on write gets its own copy first, so the other owners
    /// do not see the write.
    ///
    /// `NotFound` when no private region contains `va`, `BadLength` when the data would reach
    /// past its end. On `OutOfMemory` nothing was written or mapped. Empty `data` does nothing.
    pub fn populate<A: FrameAllocator>(
        &mut self,
        va: VirtAddr,
        data: &[u8],
        alloc: &mut A,
        refs: &mut FrameRefs,
    ) -> Result<(), UvmError> {
        if data.is_empty() {
            return Ok(());
        }
        let region = self.regions.lookup(va).ok_or(UvmError::NotFound)?;
        if region.kind == RegionKind::Guard || !matches!(region.backing, Backing::Private) {
            return Err(UvmError::NotFound);
        }
        let len = u32::try_from(data.len()).map_err(|_| UvmError::BadLength)?;
        let end = u64::from(va.as_u32()) + u64::from(len);
        if end > u64::from(region.end().as_u32()) {
            return Err(UvmError::BadLength);
        }
        let flags = region.perm.flags();
        let first = va.align_down(PAGE_SIZE);
        let end = VirtAddr::new(end as u32);

        // 1. Every frame this call needs, before anything is written: fresh pages are mapped
        //    (zeroed), copies for shared pages are only allocated.
        let mut fresh: Vec<Page> = Vec::new();
        let mut copies: Vec<(Page, Frame, Frame)> = Vec::new();
        let mut failed = None;
        let mut v = first;
        while v < end {
            let page = Page::containing(v);
            match self.space.translate(v) {
                None => match alloc.alloc_frame() {
                    Ok(frame) => {
                        self.space.mem_mut().zero_frame(frame);
                        match self.space.map_page(page, frame, flags, alloc) {
                            Ok(()) => fresh.push(page),
                            Err(e) => {
                                failed = Some(UvmError::from(e));
                                if let Err(e) = alloc.free_frame(frame) {
                                    failed = Some(e.into());
                                }
                            }
                        }
                    }
                    Err(e) => failed = Some(e.into()),
                },
                Some(t) => {
                    let old = Frame::containing(t.pa);
                    if refs.count(old) > 1 {
                        match alloc.alloc_frame() {
                            Ok(new) => copies.push((page, old, new)),
                            Err(e) => failed = Some(e.into()),
                        }
                    }
                }
            }
            if failed.is_some() {
                break;
            }
            v = next_page(v);
        }
        if let Some(e) = failed {
            let mut result = Err(e);
            for (_, _, new) in copies {
                if let Err(e) = alloc.free_frame(new) {
                    note(&mut result, e.into());
                }
            }
            for page in fresh {
                match self.space.unmap_page(page, alloc) {
                    Ok(frame) => {
                        if let Err(e) = alloc.free_frame(frame) {
                            note(&mut result, e.into());
                        }
                    }
                    Err(e) => note(&mut result, e.into()),
                }
            }
            return result;
        }
        self.resident += fresh.len() as u32;

        // 2. Break the sharing of shared pages.
        for (page, old, new) in copies {
            self.space.mem_mut().copy_frame(new, old);
            self.space.remap_page(page, new, flags)?;
            refs.release(old);
        }

        // 3. The bytes, page by page.
        let mut v = va;
        let mut rest = data;
        while !rest.is_empty() {
            let t = self
                .space
                .translate(v)
                .ok_or(UvmError::Map(MapError::NotMapped))?;
            let n = ((PAGE_SIZE - v.page_offset()) as usize).min(rest.len());
            self.space.mem_mut().write_bytes(t.pa, &rest[..n]);
            rest = &rest[n..];
            v = VirtAddr::new(v.as_u32() + n as u32);
        }
        Ok(())
    }

    /// The file and the file page that `va` maps, if a file region covers it (what a
    /// [`FaultError::NotCached`] asks to have read).
    pub fn file_page_at(&self, va: VirtAddr) -> Option<(Arc<FileObject>, u32)> {
        let region = self.regions.lookup(va)?;
        match &region.backing {
            Backing::File(o) | Backing::SharedFile(o) => {
                Some((o.clone(), region.object_page(Page::containing(va))))
            }
            _ => None,
        }
    }

    // ----- reclaim --------------------------------------------------------------------------

    /// One step of the reclaim clock over this space's private pages (anonymous memory and
    /// private file mappings), from `hand`, looking at up to `scan` pages and stopping once it
    /// has `want` victims:
    ///
    /// * a mapped page is **aged**: unmapped (its TLB entry invalidated), its frame kept as
    ///   [`Away::Aged`], so that its next use faults and maps it again (the MMU's word that it
    ///   was referenced); a mapped page of a file mapping that is the page cache's frame is
    ///   just unmapped (the cache keeps it; it comes back as a hit); the zero page is skipped;
    /// * a page still aged when the clock comes back was not used for a whole turn: it is a
    ///   **victim**, returned for the caller to write to swap ([`UserVm::swapped_out`]).
    ///
    /// Pages whose entry the space's budget cannot pay for stay mapped.
    pub fn clock<A: FrameAllocator>(
        &mut self,
        hand: VirtAddr,
        scan: u32,
        want: usize,
        refs: &mut FrameRefs,
        alloc: &mut A,
    ) -> Clock {
        let mut out = Clock::default();
        let (regions, space, away) = (&self.regions, &mut self.space, &mut self.away);
        for region in regions.from(hand) {
            let shared_file = match &region.backing {
                Backing::SharedFile(o) => Some(o),
                b if b.copy_on_write() => None,
                _ => continue,
            };
            let to = region.end();
            let mut p = region.start.max(hand);
            while p < to {
                if out.scanned >= scan || out.victims.len() >= want {
                    out.next = Some(p);
                    return out;
                }
                let mapped = space.next_mapped(p, to);
                let aged = away.range(p, to).find_map(|(va, a)| match a {
                    Away::Aged(f) => Some((va, f)),
                    Away::Swapped(_) => None,
                });
                let va = match (mapped, aged) {
                    (Some((m, t)), a) if a.is_none_or(|(va, _)| m < va) => {
                        let frame = Frame::containing(t.pa);
                        let page = Page::containing(m);
                        let cached = match &region.backing {
                            Backing::File(o) => {
                                o.cached_frame(region.object_page(page)) == Some(frame)
                            }
                            _ => false,
                        };
                        if let Some(object) = shared_file {
                            // The page cache's page: unmapped here (one writer fewer if the
                            // mapping was writable); once written back and mapped nowhere, the
                            // cache may let it go, and a later use reads it again.
                            let writable = t.flags.is_some_and(|f| f.access.is_writable());
                            if space.unmap_page(page, alloc).is_ok() {
                                if writable {
                                    object.writer_gone(region.object_page(page));
                                }
                                // The last owner only if the cache let the page go (the file
                                // was replaced): then it goes back now.
                                if refs.release(frame) {
                                    let _ = alloc.free_frame(frame);
                                }
                                self.resident -= 1;
                                out.dropped += 1;
                            }
                        } else if Some(frame) == refs.zero {
                            // Shared by everything that reads untouched memory.
                        } else if cached {
                            if space.unmap_page(page, alloc).is_ok() {
                                refs.release(frame);
                                self.resident -= 1;
                                out.dropped += 1;
                            }
                        } else if away.insert(m, Away::Aged(frame)).is_ok() {
                            if space.unmap_page(page, alloc).is_ok() {
                                self.resident -= 1;
                                out.aged += 1;
                            } else {
                                away.remove(m);
                            }
                        }
                        m
                    }
                    (_, Some((va, frame))) => {
                        out.victims.push((va, frame));
                        va
                    }
                    (None, None) => break,
                    (Some(_), None) => unreachable!("handled above"),
                };
                out.scanned += 1;
                p = next_page(va);
            }
        }
        out.next = None;
        out
    }

    /// Whether the page at `va` is still aged in `frame` (a victim of [`UserVm::clock`] that
    /// nobody used or unmapped since): the reclaimer checks this just before it copies the
    /// frame out.
    pub fn is_aged(&self, va: VirtAddr, frame: Frame) -> bool {
        self.away.get(va) == Some(Away::Aged(frame))
    }

    /// The page at `va`, a victim of [`UserVm::clock`], was written to `slot`: if it is still
    /// aged with `frame` (nobody used it meanwhile), it is now in swap and the space gives the
    /// frame up (back to `alloc` if it was its last owner), and `true` is returned; otherwise
    /// nothing changes and the caller gives the slot back.
    pub fn swapped_out<A: FrameAllocator>(
        &mut self,
        va: VirtAddr,
        frame: Frame,
        slot: Slot,
        refs: &mut FrameRefs,
        alloc: &mut A,
    ) -> bool {
        match self.away.get(va) {
            Some(Away::Aged(f)) if f == frame => {
                self.away.replace(va, Away::Swapped(slot));
                if refs.release(frame) {
                    let _ = alloc.free_frame(frame);
                }
                true
            }
            _ => false,
        }
    }

    /// The swap slot of the page at `va`, if it is in swap (what a [`FaultError::SwappedOut`]
    /// asks to have read).
    pub fn swapped_at(&self, va: VirtAddr) -> Option<Slot> {
        let page = Page::containing(va);
        if let Some(Backing::Shared(o)) = self.regions.lookup(page.start()).map(|r| &r.backing) {
            let region = self.regions.lookup(page.start())?;
            return o.slot_of(region.object_page(page));
        }
        match self.away.get(page.start()) {
            Some(Away::Swapped(slot)) => Some(slot),
            _ => None,
        }
    }

    /// `frame` holds the contents of `slot`, read for the page at `va`: if the page is still in
    /// that slot, it is mapped with its region's permission (the frame is the space's own) and
    /// the slot loses this space's reference; `true` then. `false` (nothing changed; the caller
    /// frees the frame) if the page came back or went meanwhile.
    pub fn swap_in<A: FrameAllocator>(
        &mut self,
        va: VirtAddr,
        slot: Slot,
        frame: Frame,
        refs: &mut FrameRefs,
        alloc: &mut A,
    ) -> Result<bool, UvmError> {
        let page = Page::containing(va);
        if let Some(region) = self.regions.lookup(page.start()) {
            if let Backing::Shared(o) = &region.backing {
                // The object's page: back in the object (the fault then maps it as usual).
                if o.swap_in(region.object_page(page), slot, frame) {
                    let _ = refs.swap.release(slot);
                    return Ok(true);
                }
                return Ok(false);
            }
        }
        if self.away.get(page.start()) != Some(Away::Swapped(slot)) {
            return Ok(false);
        }
        let perm = self
            .regions
            .lookup(page.start())
            .ok_or(UvmError::NotFound)?
            .perm;
        if perm == Perm::RX {
            // Code read into a fresh frame through the data cache: made visible to instruction
            // fetch before it is mapped executable (ARM ARM B2.2.9).
            self.space.mem_mut().sync_instructions(frame);
        }
        self.space.map_page(page, frame, perm.flags(), alloc)?;
        self.away.remove(page.start());
        let _ = refs.swap.release(slot);
        self.resident += 1;
        Ok(true)
    }

    /// Unmaps page `index` of `object` wherever this space maps it (the reclaim clock ages a
    /// shared object's page in every space); returns how many mappings went.
    pub fn unmap_object_page<A: FrameAllocator>(
        &mut self,
        object: &Arc<SharedObject>,
        index: u32,
        alloc: &mut A,
    ) -> u32 {
        let mut gone = 0;
        for region in self.regions.values() {
            let Backing::Shared(o) = &region.backing else {
                continue;
            };
            if !Arc::ptr_eq(o, object)
                || index < region.offset
                || index - region.offset >= region.pages()
            {
                continue;
            }
            let va = VirtAddr::new(region.start.as_u32() + (index - region.offset) * PAGE_SIZE);
            if self.space.is_mapped(va)
                && self.space.unmap_page(Page::containing(va), alloc).is_ok()
            {
                self.resident -= 1;
                gone += 1;
            }
        }
        gone
    }

    /// Pages of this space that are aged or in swap, and how many of them are in swap.
    pub fn away_pages(&self) -> (usize, usize) {
        (self.away.len(), self.away.swapped())
    }

    // ----- write-back -----------------------------------------------------------------------

    /// Writes back what this space's shared file mappings in `[start, start + len)` changed
    /// (`msync`): [`UserVm::prepare_sync`], then each file's dirty pages of the range go to the
    /// file. Returns the pages written; on an I/O error the failed pages stay dirty and the
    /// first error is returned (after trying them all).
    pub fn sync(&mut self, start: VirtAddr, len: u32) -> Result<u32, UvmError> {
        let mut result = Ok(0);
        for (object, pages) in self.prepare_sync(start, len)? {
            match (object.write_back(pages, self.space.mem()), &mut result) {
                (Ok(n), Ok(total)) => *total += n,
                (Err(e), Ok(_)) => result = Err(UvmError::Io(e)),
                _ => {}
            }
        }
        result
    }

    /// The first half of `msync` (no I/O): the space's writable mappings of its shared file
    /// pages in `[start, start + len)` become read-only, so that a later write faults and marks
    /// the page dirty again; returns the files and page ranges to write back (other regions in
    /// the range are skipped).
    pub fn prepare_sync(&mut self, start: VirtAddr, len: u32) -> Result<Vec<FileRange>, UvmError> {
        let end = Self::check_user_range(start, len)?;
        let mut out = Vec::new();
        let space = &mut self.space;
        for region in self.regions.from(start) {
            if region.start >= end {
                break;
            }
            let Backing::SharedFile(object) = &region.backing else {
                continue;
            };
            let from = region.start.max(start);
            let to = region.end().min(end);
            let mut v = from;
            while let Some((va, t)) = space.next_mapped(v, to) {
                if t.flags.is_some_and(|f| f.access.is_writable()) {
                    let page = Page::containing(va);
                    space.protect_page(page, Perm::R.flags())?;
                    object.writer_gone(region.object_page(page));
                }
                v = next_page(va);
            }
            let first = region.object_page(Page::containing(from));
            let pages = (to.as_u32() - from.as_u32()) / PAGE_SIZE;
            out.push((object.clone(), first..first + pages));
        }
        Ok(out)
    }

    // ----- removal --------------------------------------------------------------------------

    /// Unmaps the pages of `[from, to)` (inside `region`, not a shared file mapping: see
    /// [`UserVm::release_shared_file_pages`]) and gives up this space's ownership of them: a
    /// private frame goes back to `alloc` with its last owner (a cached file page never: the
    /// cache owns it too); a shared object's frames stay the object's. Keeps going after an
    /// error and returns the first.
    fn release_pages<A: FrameAllocator>(
        space: &mut AddressSpace<M, T>,
        resident: &mut u32,
        region: &Region,
        from: VirtAddr,
        to: VirtAddr,
        alloc: &mut A,
        refs: &mut FrameRefs,
    ) -> Result<(), UvmError> {
        let owned = !matches!(region.backing, Backing::Shared(_));
        let mut result = Ok(());
        let mut v = from;
        // Only what is mapped is unmapped (and invalidated): pages never touched have no TLB
        // entry to remove (a fault entry is never cached, ARM ARM B3.10.1).
        while let Some(va) = space.next_mapped_va(v, to) {
            match space.unmap_page(Page::containing(va), alloc) {
                Ok(frame) => {
                    *resident -= 1;
                    if owned && refs.release(frame) {
                        if let Err(e) = alloc.free_frame(frame) {
                            note(&mut result, e.into());
                        }
                    }
                }
                Err(e) => note(&mut result, e.into()),
            }
            v = next_page(va);
        }
        result
    }

    /// [`UserVm::release_pages`] for a shared file mapping: each writable mapping removed is
    /// one writer fewer for its page, each page one owner fewer (a page the cache has let go of
    /// goes back to `alloc` with its last mapping). The dirty pages stay dirty in the page
    /// cache: whoever keeps the cache writes them back (the kernel's flusher; no I/O here).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn release_shared_file_pages<A: FrameAllocator>(
        space: &mut AddressSpace<M, T>,
        resident: &mut u32,
        region: &Region,
        object: &FileObject,
        from: VirtAddr,
        to: VirtAddr,
        alloc: &mut A,
        refs: &mut FrameRefs,
    ) -> Result<(), UvmError> {
        let mut result = Ok(());
        let mut v = from;
        while let Some(va) = space.next_mapped_va(v, to) {
            let page = Page::containing(va);
            if Self::maps_writable(space, va) {
                object.writer_gone(region.object_page(page));
            }
            match space.unmap_page(page, alloc) {
                Ok(frame) => {
                    *resident -= 1;
                    if refs.release(frame) {
                        if let Err(e) = alloc.free_frame(frame) {
                            note(&mut result, e.into());
                        }
                    }
                }
                Err(e) => note(&mut result, e.into()),
            }
            v = next_page(va);
        }
        result
    }

    /// Whether `va` is mapped writable.
    fn maps_writable(space: &AddressSpace<M, T>, va: VirtAddr) -> bool {
        space
            .translate(va)
            .and_then(|t| t.flags)
            .is_some_and(|f| f.access.is_writable())
    }

    /// Drops a region's reference to its backing; a shared object whose last reference this was
    /// gives its frames back.
    #[inline]
    fn drop_backing<A: FrameAllocator>(
        backing: Backing,
        alloc: &mut A,
        refs: &mut FrameRefs,
    ) -> Result<(), UvmError> {
        match backing {
            Backing::Private => Ok(()),
            Backing::Shared(object) => SharedObject::release(object, alloc, refs).map(|_| ()),
            // A file's pages stay in the page cache, which holds the object too.
            file => {
                drop(file);
                Ok(())
            }
        }
    }

    /// Removes `[start, start + len)` from the space (`munmap`), page granular: regions are cut
    /// or split as needed, several may go at once, addresses of the range outside any region
    /// are ignored. Mapped pages are unmapped; private frames go back to `alloc` with their last
    /// owner, and a shared object's frames when its last region goes.
    ///
    /// `NotFound` (nothing changed) when no region meets the range; `TooManyRegions` or
    /// `NoKernelMemory` (nothing changed) when cutting a hole in a region would make one region
    /// more than the space may have or its budget can hold.
    pub fn remove<A: FrameAllocator>(
        &mut self,
        start: VirtAddr,
        len: u32,
        alloc: &mut A,
        refs: &mut FrameRefs,
    ) -> Result<(), UvmError> {
        let end = Self::check_user_range(start, len)?;
        let Some(last) = self.regions.last_meeting_index(start, end) else {
            return Err(UvmError::NotFound);
        };
        // Cutting a hole inside one region leaves two: one region more to pay for.
        if self
            .regions
            .get(last)
            .is_some_and(|r| r.start < start && r.end() > end)
        {
            self.charge_regions(self.regions.len() + 1)?;
        }
        let mut result = Ok(());
        // From the highest region meeting the range down: what remains of a cut region lies
        // outside the range and takes its place (left piece first), so the next candidate is
        // always the one just below.
        let mut next = Some(last);
        while let Some(i) = next {
            let region = self.regions.remove_at(i);
            let cut_from = region.start.max(start);
            let cut_to = region.end().min(end);
            if !self.away.release_range(cut_from, cut_to, refs, alloc) {
                note(&mut result, UvmError::Map(MapError::NotMapped));
            }
            let (space, resident) = (&mut self.space, &mut self.resident);
            let r = match &region.backing {
                Backing::SharedFile(object) => Self::release_shared_file_pages(
                    space, resident, &region, object, cut_from, cut_to, alloc, refs,
                ),
                _ => Self::release_pages(space, resident, &region, cut_from, cut_to, alloc, refs),
            };
            if let Err(e) = r {
                note(&mut result, e);
            }
            let mut at = i;
            if region.start < cut_from {
                let left = Region {
                    len: cut_from.as_u32() - region.start.as_u32(),
                    ..region.clone()
                };
                self.regions.insert_at(at, left);
                at += 1;
            }
            if cut_to < region.end() {
                let skipped = (cut_to.as_u32() - region.start.as_u32()) / PAGE_SIZE;
                let right = Region {
                    start: cut_to,
                    len: region.end().as_u32() - cut_to.as_u32(),
                    offset: match region.backing {
                        Backing::Private => 0,
                        _ => region.offset + skipped,
                    },
                    ..region.clone()
                };
                self.regions.insert_at(at, right);
            }
            let r = Self::drop_backing(region.backing, alloc, refs);
            if let Err(e) = r {
                note(&mut result, e);
            }
            next = i
                .checked_sub(1)
                .filter(|&j| self.regions.get(j).is_some_and(|r| r.end() > start));
        }
        self.settle_regions();
        result
    }

    // ----- fork and teardown ----------------------------------------------------------------

    /// A copy of this space for a child process, tagged `child_asid`: the same regions; every
    /// mapped private page is shared copy on write (read-only in both, one more owner in
    /// `refs`); shared regions map the same objects, lazily.
    ///
    /// The child must not be live before this returns (it is not in any TTBR, and gets an ASID
    /// with nothing cached when it first runs). The pages are copied a table at a time by
    /// [`AddressSpace::share_read_only_into`], which also write-protects the parent's writable
    /// pages and makes that take effect with one TLB invalidation by the parent's ASID before
    /// it returns, so the parent cannot write a shared page once back in user mode.
    ///
    /// Pages of shared regions are left out: the child maps them on first access, as it
    /// would any page of the object (copying their descriptors would be correct too, since
    /// the child's regions hold the same objects, but costs the fork what the child may never
    /// use).
    ///
    /// On `OutOfMemory` (a table of the child) everything is undone: the child's frames go
    /// back, the owner counts are as before, and the parent's pages are writable again where
    /// they are its own (a page that was read-only but not shared may come back writable, which
    /// only saves a fault).
    pub fn fork<A: FrameAllocator>(
        &mut self,
        child_asid: Asid,
        child_mem: M,
        child_tlb: T,
        alloc: &mut A,
        refs: &mut FrameRefs,
    ) -> Result<UserVm<M, T>, UvmError> {
        let charge = self
            .kmem
            .budget()
            .charge(regions_cost(self.regions.len()))
            .map_err(|_| UvmError::NoKernelMemory)?;
        let mut child = UserVm::with_charge(child_mem, child_tlb, child_asid, alloc, charge)?;
        child.regions = self.regions.clone();
        let private = self
            .regions
            .values()
            .filter(|r| r.backing.copy_on_write())
            .map(|r| (r.start, r.end()));
        let shared = self
            .space
            .share_read_only_into(&mut child.space, private, alloc, |f| refs.share(f));
        match shared {
            Ok(pages) => {
                child.resident = pages;
                match self.away.fork(refs) {
                    Ok(away) => {
                        child.away = away;
                        Ok(child)
                    }
                    Err(_) => {
                        Self::undo_fork(&mut self.space, &self.regions, child, alloc, refs);
                        Err(UvmError::NoKernelMemory)
                    }
                }
            }
            Err(e) => {
                Self::undo_fork(&mut self.space, &self.regions, child, alloc, refs);
                Err(e.into())
            }
        }
    }

    /// Undoes a fork that failed: every page the child maps loses that owner, and becomes
    /// writable again in the parent if its region is `RW` and the parent is its only owner
    /// (one pass per table and one TLB invalidation by the parent's ASID, see
    /// [`AddressSpace::unshare_from`]); then the child's tables go back.
    fn undo_fork<A: FrameAllocator>(
        parent: &mut AddressSpace<M, T>,
        regions: &RegionMap,
        child: UserVm<M, T>,
        alloc: &mut A,
        refs: &mut FrameRefs,
    ) {
        let private = regions
            .values()
            .filter(|r| r.backing.copy_on_write())
            .map(|r| (r.start, r.end(), r.perm == Perm::RW));
        parent.unshare_from(&child.space, private, |frame| {
            refs.release(frame);
            refs.count(frame) == 1
        });
        // Its regions hold nothing but references the parent holds too; its tables go back.
        let _ = child.space.destroy(alloc);
    }

    /// Tears the space down: every private frame goes back to `alloc` with its last owner,
    /// every shared object whose last region this was gives its frames back, then the
    /// translation tables go (see [`AddressSpace::destroy`]; the space must not be live in any
    /// TTBR). Keeps going after an error and returns the first.
    pub fn destroy<A: FrameAllocator>(
        mut self,
        alloc: &mut A,
        refs: &mut FrameRefs,
    ) -> Result<(), UvmError> {
        // No TLB entry of the space may reach a frame once it is back in the allocator: one
        // invalidation of the whole ASID, before the first frame goes.
        let asid = self.asid();
        self.space.tlb_mut().invalidate_asid(asid);
        self.space.tlb_mut().sync();
        let mut result = Ok(());
        if !self.away.release_range(USER_START, USER_END, refs, alloc) {
            note(&mut result, UvmError::Map(MapError::NotMapped));
        }
        for region in core::mem::take(&mut self.regions).into_values() {
            if let Backing::SharedFile(object) = &region.backing {
                // Writable mappings are counted by the file, and its dirty pages written back:
                // page by page, as a munmap does (the TLB holds nothing of the space any more).
                let r = Self::release_shared_file_pages(
                    &mut self.space,
                    &mut self.resident,
                    &region,
                    object,
                    region.start,
                    region.end(),
                    alloc,
                    refs,
                );
                if let Err(e) = r {
                    note(&mut result, e);
                }
            } else if region.backing.copy_on_write() {
                // Each table read once; the tables themselves are left as they are (the space
                // is not live and its ASID has nothing cached) and go back at the end.
                let r = self
                    .space
                    .for_each_page(region.start, region.end(), |frame| {
                        if refs.release(frame) {
                            if let Err(e) = alloc.free_frame(frame) {
                                note(&mut result, e.into());
                            }
                        }
                    });
                if let Err(e) = r {
                    note(&mut result, e.into());
                }
            }
            if let Err(e) = Self::drop_backing(region.backing, alloc, refs) {
                note(&mut result, e);
            }
        }
        if let Err(e) = self.space.destroy(alloc) {
            note(&mut result, e.into());
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::addr::PhysAddr;
    use crate::mm::desc::{Access as Ap, Translation};
    use crate::mm::layout::KERNEL_L1_PHYS;
    use crate::mm::phys::{HostFrames, HostRam};
    use crate::mm::tlb::EmulatedTlb;

    type Vm = UserVm<HostRam, EmulatedTlb>;

    const RAM: u32 = 2 << 20;
    const FIRST_FRAME: u32 = 0x100;
    const A1: Asid = Asid::new(1);
    const A2: Asid = Asid::new(2);
    const A3: Asid = Asid::new(3);

    /// Host frames that hold garbage when handed out: nothing may reach user space without
    /// being zeroed or overwritten.
    struct DirtyFrames {
        frames: HostFrames,
        ram: HostRam,
    }

    impl DirtyFrames {
        fn free_count(&self) -> usize {
            self.frames.free_count()
        }

        fn set_budget(&mut self, n: Option<u32>) {
            self.frames.set_budget(n);
        }
    }

    impl FrameAllocator for DirtyFrames {
        fn alloc_frame(&mut self) -> Result<Frame, PmmError> {
            let f = self.frames.alloc_frame()?;
            for i in 0..PAGE_SIZE / 4 {
                let pa = PhysAddr::new(f.start().as_u32() + 4 * i);
                self.ram.write_u32(pa, 0xdead_beef ^ i);
            }
            Ok(f)
        }

        fn alloc_contiguous(
            &mut self,
            count: u32,
            align: u32,
            limit: Option<PhysAddr>,
        ) -> Result<Frame, PmmError> {
            self.frames.alloc_contiguous(count, align, limit)
        }

        fn free_frame(&mut self, frame: Frame) -> Result<(), PmmError> {
            self.frames.free_frame(frame)
        }

        fn free_contiguous(&mut self, first: Frame, count: u32) -> Result<(), PmmError> {
            self.frames.free_contiguous(first, count)
        }
    }

    struct Rig {
        ram: HostRam,
        tlb: EmulatedTlb,
        alloc: DirtyFrames,
        refs: FrameRefs,
    }

    fn va(v: u32) -> VirtAddr {
        VirtAddr::new(v)
    }

    impl Rig {
        fn new() -> Self {
            let ram = HostRam::new(RAM);
            let tlb = EmulatedTlb::new(&ram);
            let frames =
                HostFrames::new(Frame::from_number(FIRST_FRAME), (RAM >> 12) - FIRST_FRAME);
            Self {
                alloc: DirtyFrames {
                    frames,
                    ram: ram.clone(),
                },
                ram,
                tlb,
                refs: FrameRefs::new(),
            }
        }

        fn vm(&mut self, asid: Asid) -> Vm {
            Vm::new(self.ram.clone(), self.tlb.clone(), asid, &mut self.alloc).unwrap()
        }

        fn fork(&mut self, parent: &mut Vm, asid: Asid) -> Result<Vm, UvmError> {
            parent.fork(
                asid,
                self.ram.clone(),
                self.tlb.clone(),
                &mut self.alloc,
                &mut self.refs,
            )
        }

        fn fault(&mut self, vm: &mut Vm, v: u32, access: Access) -> Result<Resolved, FaultError> {
            vm.handle_fault(va(v), access, &mut self.alloc, &mut self.refs)
        }

        /// Translation through the emulated MMU and TLB, as the CPU running `vm` sees it.
        fn mmu(&mut self, vm: &Vm, v: u32) -> Option<Translation> {
            self.tlb
                .translate(vm.l1_phys(), vm.asid(), KERNEL_L1_PHYS, va(v))
        }

        /// A user load: through the MMU, resolving a fault first if there is one.
        fn load(&mut self, vm: &mut Vm, v: u32) -> Result<u8, FaultError> {
            let t = match self.mmu(vm, v) {
                Some(t) => t,
                None => {
                    self.fault(vm, v, Access::Read)?;
                    self.mmu(vm, v).expect("resolved")
                }
            };
            let mut b = [0];
            self.ram.read_bytes(t.pa, &mut b);
            Ok(b[0])
        }

        /// A user store: through the MMU, resolving a fault first if the page is not writable.
        fn store(&mut self, vm: &mut Vm, v: u32, byte: u8) -> Result<(), FaultError> {
            let writable = |t: &Translation| t.flags.unwrap().access == Ap::UserReadWrite;
            let t = match self.mmu(vm, v) {
                Some(t) if writable(&t) => t,
                _ => {
                    self.fault(vm, v, Access::Write)?;
                    let t = self.mmu(vm, v).expect("resolved");
                    assert!(writable(&t), "fault resolved without write access");
                    t
                }
            };
            self.ram.write_bytes(t.pa, &[byte]);
            Ok(())
        }

        fn clean(&self) {
            assert!(
                self.tlb.violations().is_empty(),
                "{:?}",
                self.tlb.violations()
            );
            assert_eq!(self.tlb.pending_invalidations(), 0);
        }
    }

    fn add(vm: &mut Vm, start: u32, len: u32, perm: Perm, kind: RegionKind) {
        vm.add_region(va(start), len, perm, kind, Backing::Private)
            .unwrap();
    }

    fn mapped_pages(vm: &Vm) -> u32 {
        let mut n = 0;
        vm.space().for_each_mapping(|m| n += m.len / PAGE_SIZE);
        n
    }

    /// A zero page for the rig: a frame of zeroes the allocator never gets back.
    fn with_zero_page(r: &mut Rig) -> Frame {
        let z = r.alloc.alloc_frame().unwrap();
        r.ram.clone().zero_frame(z);
        r.refs.set_zero_frame(z);
        z
    }

    #[test]
    fn reads_of_untouched_memory_map_the_zero_page_and_a_write_takes_a_frame_without_a_copy() {
        let mut r = Rig::new();
        let zero = with_zero_page(&mut r);
        let mut a = r.vm(A1);
        let mut b = r.vm(A2);
        add(&mut a, 0x40_0000, 4 * PAGE_SIZE, Perm::RW, RegionKind::Anon);
        add(&mut b, 0x40_0000, 4 * PAGE_SIZE, Perm::R, RegionKind::Anon);
        let free = r.alloc.free_count();
        for p in 0..4 {
            assert_eq!(r.load(&mut a, 0x40_0000 + p * PAGE_SIZE + 7).unwrap(), 0);
            assert_eq!(r.load(&mut b, 0x40_0000 + p * PAGE_SIZE).unwrap(), 0);
        }
        // Eight read faults, no frame taken (the L2 tables were there from the first).
        assert!(r.alloc.free_count() + 2 >= free, "reads took frames");
        let t = r.mmu(&a, 0x40_1000).unwrap();
        assert_eq!(Frame::containing(t.pa), zero);
        assert_eq!(
            t.flags.unwrap().access,
            Ap::UserRead,
            "the zero page mapped writable"
        );
        assert_eq!(r.refs.count(zero), 9, "the kernel and eight mappings");
        // A write: a frame of its own, reading zero, the zero page untouched.
        r.store(&mut a, 0x40_1000 + 5, 0x99).unwrap();
        assert_ne!(Frame::containing(r.mmu(&a, 0x40_1000).unwrap().pa), zero);
        assert_eq!(r.load(&mut a, 0x40_1000).unwrap(), 0);
        assert_eq!(r.load(&mut a, 0x40_1005).unwrap(), 0x99);
        assert_eq!(r.load(&mut b, 0x40_1005).unwrap(), 0);
        assert_eq!(r.refs.count(zero), 8);
        // A read-only region never leaves the zero page.
        assert_eq!(
            r.fault(&mut b, 0x40_1000, Access::Write),
            Err(FaultError::Protection)
        );
        // Fork shares the zero mappings; the child's write takes its own frame.
        let mut c = r.fork(&mut a, A3).unwrap();
        assert_eq!(r.refs.count(zero), 11);
        r.store(&mut c, 0x40_2000, 1).unwrap();
        assert_eq!(r.load(&mut a, 0x40_2000).unwrap(), 0);
        for vm in [a, b, c] {
            vm.destroy(&mut r.alloc, &mut r.refs).unwrap();
        }
        assert_eq!(r.refs.count(zero), 1, "mappings of the zero page left");
        assert_eq!(r.refs.shared_frames(), 0);
        let mut b = [0u8; 4096];
        r.ram.read_bytes(zero.start(), &mut b);
        assert!(b.iter().all(|&x| x == 0), "the zero page was written");
        r.clean();
    }

    #[test]
    fn add_region_checks_its_range_and_maps_nothing() {
        let mut r = Rig::new();
        let mut u = r.vm(A1);
        let p = Backing::Private;
        let add = |u: &mut Vm, s: u32, l: u32| {
            u.add_region(va(s), l, Perm::RW, RegionKind::Anon, Backing::Private)
        };
        assert_eq!(add(&mut u, 0x1000, 0), Err(UvmError::ZeroSize));
        assert_eq!(add(&mut u, 0x1800, 0x1000), Err(UvmError::Unaligned));
        assert_eq!(add(&mut u, 0x1000, 0x1800), Err(UvmError::Unaligned));
        assert_eq!(add(&mut u, 0, 0x2000), Err(UvmError::OutsideUser));
        assert_eq!(add(&mut u, 0x7fff_f000, 0x2000), Err(UvmError::OutsideUser));
        assert_eq!(add(&mut u, 0xffff_f000, 0x2000), Err(UvmError::OutsideUser));
        assert_eq!(add(&mut u, 0x8000_0000, 0x1000), Err(UvmError::OutsideUser));
        assert_eq!(add(&mut u, 0xf000, 0x1000), Err(UvmError::OutsideUser));
        add(&mut u, 0x1_0000, 0x7ffe_f000).unwrap();
        add(&mut u, 0x7fff_f000, 0x1000).unwrap();
        assert_eq!(add(&mut u, 0x10_0000, 0x1000), Err(UvmError::Overlap));
        let mut u2 = r.vm(A2);
        add(&mut u2, 0x10_0000, 0x4000).unwrap();
        for (s, l) in [(0xf_f000, 0x2000), (0x10_3000, 0x1000), (0xf_0000, 0x20000)] {
            assert_eq!(add(&mut u2, s, l), Err(UvmError::Overlap), "{s:#x}+{l:#x}");
        }
        add(&mut u2, 0xf_f000, 0x1000).unwrap();
        add(&mut u2, 0x10_4000, 0x1000).unwrap();
        let object = SharedObject::new(2);
        assert_eq!(
            u2.add_region(
                va(0x20_0000),
                0x3000,
                Perm::RW,
                RegionKind::Shared,
                Backing::Shared(object.clone())
            ),
            Err(UvmError::BadLength)
        );
        assert_eq!(
            u2.add_shared_region(
                va(0x20_0000),
                0x2000,
                Perm::RW,
                RegionKind::Shared,
                object.clone(),
                1
            ),
            Err(UvmError::BadLength)
        );
        u2.add_shared_region(
            va(0x20_0000),
            0x1000,
            Perm::RW,
            RegionKind::Shared,
            object.clone(),
            1,
        )
        .unwrap();
        assert_eq!(u2.regions().count(), 4);
        assert_eq!(u2.region_at(va(0x20_0fff)).unwrap().offset, 1);
        assert!(u2.region_at(va(0x20_1000)).is_none());
        assert_eq!(u2.region_at(va(0x10_3fff)).unwrap().start, va(0x10_0000));
        assert_eq!(u.resident_pages() + u2.resident_pages(), 0);
        assert_eq!(mapped_pages(&u) + mapped_pages(&u2), 0);
        drop(p);
        for u in [u, u2] {
            u.destroy(&mut r.alloc, &mut r.refs).unwrap();
        }
        assert!(SharedObject::release(object, &mut r.alloc, &mut r.refs).unwrap());
    }

    #[test]
    fn find_free_returns_the_lowest_gap_that_fits() {
        let mut r = Rig::new();
        let mut u = r.vm(A1);
        assert_eq!(u.find_free(1, va(0), USER_END), Some(USER_START));
        assert_eq!(u.find_free(0, va(0), USER_END), None);
        add(&mut u, 0x1_0000, 0x3000, Perm::RX, RegionKind::Text);
        add(&mut u, 0x1_6000, 0x1000, Perm::RW, RegionKind::Data);
        add(&mut u, 0x1_9000, 0x1000, Perm::RW, RegionKind::Anon);
        assert_eq!(u.find_free(0x2000, va(0), USER_END), Some(va(0x1_3000)));
        assert_eq!(u.find_free(0x3000, va(0), USER_END), Some(va(0x1_3000)));
        assert_eq!(u.find_free(0x3001, va(0), USER_END), Some(va(0x1_a000)));
        assert_eq!(
            u.find_free(0x1001, va(0x1_4000), USER_END),
            Some(va(0x1_4000))
        );
        assert_eq!(
            u.find_free(0x1001, va(0x1_5000), USER_END),
            Some(va(0x1_7000))
        );
        assert_eq!(
            u.find_free(0x1000, va(0x1_2345), USER_END),
            Some(va(0x1_3000))
        );
        assert_eq!(
            u.find_free(0x1000, va(0x1_4001), USER_END),
            Some(va(0x1_5000))
        );
        assert_eq!(
            u.find_free(0x1000, va(0x1_6000), USER_END),
            Some(va(0x1_7000))
        );
        assert_eq!(u.find_free(0x4000, va(0), va(0x1_9fff)), None);
        assert_eq!(
            u.find_free(0x2000, va(0x1_4000), va(0x1_6000)),
            Some(va(0x1_4000))
        );
        assert_eq!(
            u.find_free(0x1000, va(0x7fff_f000), va(0xffff_ffff)),
            Some(va(0x7fff_f000))
        );
        assert_eq!(u.find_free(0x2000, va(0x7fff_f000), va(0xffff_ffff)), None);
        assert_eq!(u.find_free(0x1000, va(0x9000_0000), va(0xffff_ffff)), None);
        assert_eq!(u.find_free(u32::MAX, va(0), USER_END), None);
        u.destroy(&mut r.alloc, &mut r.refs).unwrap();
    }

    #[test]
    fn a_first_access_maps_a_zeroed_frame_with_the_region_permission() {
        let mut r = Rig::new();
        let before = r.alloc.free_count();
        let mut u = r.vm(A1);
        add(&mut u, 0x1_0000, 0x4000, Perm::RW, RegionKind::Anon);
        add(&mut u, 0x2_0000, 0x1000, Perm::RX, RegionKind::Text);
        add(&mut u, 0x3_0000, 0x1000, Perm::R, RegionKind::Data);
        assert_eq!(
            r.fault(&mut u, 0x1_1234, Access::Read),
            Ok(Resolved::DemandZero)
        );
        let t = r.mmu(&u, 0x1_1234).unwrap();
        assert_eq!(
            t.flags.map(|f| f.access),
            Some(Ap::UserReadWrite),
            "read maps RW"
        );
        assert_eq!(
            r.fault(&mut u, 0x1_1000, Access::Write),
            Ok(Resolved::AlreadyMapped)
        );
        assert_eq!(
            r.fault(&mut u, 0x1_2000, Access::Write),
            Ok(Resolved::DemandZero)
        );
        assert_eq!(
            r.fault(&mut u, 0x2_0010, Access::Execute),
            Ok(Resolved::DemandZero)
        );
        assert_eq!(
            r.mmu(&u, 0x2_0000).unwrap().flags,
            Some(MapFlags::USER_TEXT)
        );
        assert_eq!(
            r.fault(&mut u, 0x3_0000, Access::Read),
            Ok(Resolved::DemandZero)
        );
        assert_eq!(
            r.mmu(&u, 0x3_0000).unwrap().flags,
            Some(MapFlags::USER_RODATA)
        );
        for page in [0x1_1000u32, 0x1_2000, 0x2_0000, 0x3_0000] {
            for off in (0..PAGE_SIZE).step_by(4) {
                assert_eq!(r.load(&mut u, page + off), Ok(0));
            }
        }
        assert_eq!(u.resident_pages(), 4);
        assert_eq!(mapped_pages(&u), 4);
        r.store(&mut u, 0x1_1001, 7).unwrap();
        assert_eq!(r.load(&mut u, 0x1_1001), Ok(7));
        r.clean();
        u.destroy(&mut r.alloc, &mut r.refs).unwrap();
        assert_eq!(r.alloc.free_count(), before);
    }

    #[test]
    fn refused_faults_change_nothing() {
        let mut r = Rig::new();
        let mut u = r.vm(A1);
        add(&mut u, 0x1_0000, 0x1000, Perm::RW, RegionKind::Stack);
        add(&mut u, 0x4_0000, 0x1000, Perm::RW, RegionKind::Guard);
        add(&mut u, 0x2_0000, 0x1000, Perm::RX, RegionKind::Text);
        add(&mut u, 0x3_0000, 0x1000, Perm::R, RegionKind::Data);
        let cases = [
            (0x0, Access::Read, FaultError::NoRegion),
            (0x1_1000, Access::Read, FaultError::NoRegion),
            (0x8000_0000, Access::Read, FaultError::NoRegion),
            (0xffff_fffc, Access::Write, FaultError::NoRegion),
            (0x4_0ffc, Access::Write, FaultError::Guard),
            (0x4_0000, Access::Read, FaultError::Guard),
            (0x2_0000, Access::Write, FaultError::Protection),
            (0x3_0000, Access::Write, FaultError::Protection),
            (0x3_0000, Access::Execute, FaultError::Protection),
            (0x1_0000, Access::Execute, FaultError::Protection),
        ];
        let before = r.alloc.free_count();
        for (v, a, e) in cases {
            assert_eq!(r.fault(&mut u, v, a), Err(e), "{v:#x} {a:?}");
        }
        // Out of memory: for the frame, then for the L2 table of a new slot.
        r.alloc.set_budget(Some(0));
        assert_eq!(
            r.fault(&mut u, 0x1_0000, Access::Write),
            Err(FaultError::OutOfMemory)
        );
        r.alloc.set_budget(Some(1));
        assert_eq!(
            r.fault(&mut u, 0x1_0000, Access::Write),
            Err(FaultError::OutOfMemory)
        );
        r.alloc.set_budget(None);
        assert_eq!(r.alloc.free_count(), before);
        assert_eq!(u.resident_pages(), 0);
        assert_eq!(mapped_pages(&u), 0);
        assert_eq!(
            r.fault(&mut u, 0x1_0000, Access::Write),
            Ok(Resolved::DemandZero)
        );
        u.destroy(&mut r.alloc, &mut r.refs).unwrap();
    }

    #[test]
    fn after_fork_each_side_sees_only_its_own_writes() {
        let mut r = Rig::new();
        let before = r.alloc.free_count();
        let mut p = r.vm(A1);
        add(&mut p, 0x1_0000, 0x3000, Perm::RW, RegionKind::Data);
        r.store(&mut p, 0x1_0000, 1).unwrap();
        r.store(&mut p, 0x1_1000, 2).unwrap();
        r.store(&mut p, 0x1_2000, 3).unwrap();
        // Cached writable in the parent's TLB entries: the fork must invalidate them.
        assert!(r.mmu(&p, 0x1_0000).is_some());
        let mut c = r.fork(&mut p, A2).unwrap();
        assert_eq!(r.refs.shared_frames(), 3);
        assert_eq!(c.resident_pages(), 3);
        let pf = Frame::containing(r.mmu(&p, 0x1_0000).unwrap().pa);
        assert_eq!(r.refs.count(pf), 2);
        for v in [0x1_0000, 0x1_1000, 0x1_2000] {
            assert_eq!(r.mmu(&p, v).unwrap().flags, Some(MapFlags::USER_RODATA));
            assert_eq!(r.mmu(&c, v).unwrap().flags, Some(MapFlags::USER_RODATA));
            assert_eq!(r.mmu(&p, v).unwrap().pa, r.mmu(&c, v).unwrap().pa);
        }
        assert_eq!(r.load(&mut c, 0x1_0000), Ok(1));
        // The parent writes: it gets a copy, the child keeps the old value.
        let free = r.alloc.free_count();
        assert_eq!(
            r.fault(&mut p, 0x1_0000, Access::Write),
            Ok(Resolved::CopyOnWrite)
        );
        assert_eq!(r.alloc.free_count(), free - 1);
        r.store(&mut p, 0x1_0000, 10).unwrap();
        assert_eq!(r.load(&mut c, 0x1_0000), Ok(1));
        assert_eq!(r.load(&mut p, 0x1_0000), Ok(10));
        assert_eq!(r.refs.count(pf), 1);
        // The child writes the same page: its last owner, so no copy.
        assert_eq!(
            r.fault(&mut c, 0x1_0000, Access::Write),
            Ok(Resolved::Reclaimed)
        );
        assert_eq!(r.alloc.free_count(), free - 1);
        assert_eq!(r.mmu(&c, 0x1_0000).unwrap().pa, pf.start());
        r.store(&mut c, 0x1_0000, 20).unwrap();
        assert_eq!(r.load(&mut p, 0x1_0000), Ok(10));
        // The child writes another page first.
        r.store(&mut c, 0x1_1000, 21).unwrap();
        assert_eq!(r.load(&mut p, 0x1_1000), Ok(2));
        // A read of a shared page is no write: no copy.
        assert_eq!(
            r.fault(&mut p, 0x1_2000, Access::Read),
            Ok(Resolved::AlreadyMapped)
        );
        assert_eq!(r.refs.shared_frames(), 1);
        r.clean();
        // Forking the child again: three owners of the page nobody wrote.
        let mut g = r.fork(&mut c, A3).unwrap();
        let shared = Frame::containing(r.mmu(&g, 0x1_2000).unwrap().pa);
        assert_eq!(r.refs.count(shared), 3);
        r.store(&mut g, 0x1_2000, 30).unwrap();
        assert_eq!(r.refs.count(shared), 2);
        assert_eq!(
            (r.load(&mut p, 0x1_2000), r.load(&mut c, 0x1_2000)),
            (Ok(3), Ok(3))
        );
        assert_eq!(r.load(&mut g, 0x1_0000), Ok(20));
        r.clean();
        // The parent goes first: the child's pages stay.
        p.destroy(&mut r.alloc, &mut r.refs).unwrap();
        assert_eq!(r.load(&mut c, 0x1_2000), Ok(3));
        assert_eq!(r.load(&mut g, 0x1_1000), Ok(21));
        c.destroy(&mut r.alloc, &mut r.refs).unwrap();
        assert_eq!(r.load(&mut g, 0x1_1000), Ok(21));
        g.destroy(&mut r.alloc, &mut r.refs).unwrap();
        assert_eq!(r.refs.shared_frames(), 0);
        assert_eq!(r.alloc.free_count(), before);
        r.clean();
    }

    #[test]
    fn fork_shares_read_only_and_text_pages_as_they_are() {
        let mut r = Rig::new();
        let mut p = r.vm(A1);
        add(&mut p, 0x1_0000, 0x1000, Perm::RX, RegionKind::Text);
        add(&mut p, 0x2_0000, 0x1000, Perm::R, RegionKind::Data);
        p.populate(
            va(0x1_0000),
            &[0xe1, 0x2f, 0xff, 0x1e],
            &mut r.alloc,
            &mut r.refs,
        )
        .unwrap();
        r.fault(&mut p, 0x2_0000, Access::Read).unwrap();
        let mut c = r.fork(&mut p, A2).unwrap();
        assert_eq!(
            r.mmu(&c, 0x1_0000).unwrap().flags,
            Some(MapFlags::USER_TEXT)
        );
        assert_eq!(
            r.mmu(&p, 0x1_0000).unwrap().flags,
            Some(MapFlags::USER_TEXT)
        );
        assert_eq!(
            r.mmu(&c, 0x2_0000).unwrap().flags,
            Some(MapFlags::USER_RODATA)
        );
        assert_eq!(r.load(&mut c, 0x1_0003), Ok(0x1e));
        assert_eq!(
            r.fault(&mut c, 0x1_0000, Access::Execute),
            Ok(Resolved::AlreadyMapped)
        );
        assert_eq!(
            r.fault(&mut c, 0x1_0000, Access::Write),
            Err(FaultError::Protection)
        );
        assert_eq!(r.refs.shared_frames(), 2);
        r.clean();
        p.destroy(&mut r.alloc, &mut r.refs).unwrap();
        c.destroy(&mut r.alloc, &mut r.refs).unwrap();
        assert_eq!(r.refs.shared_frames(), 0);
    }

    #[test]
    fn a_fork_that_runs_out_of_memory_is_undone() {
        let mut r = Rig::new();
        let mut p = r.vm(A1);
        add(&mut p, 0x1_0000, 0x2000, Perm::RW, RegionKind::Data);
        add(&mut p, 0x50_0000, 0x1000, Perm::RW, RegionKind::Stack);
        add(&mut p, 0x60_0000, 0x1000, Perm::R, RegionKind::Data);
        r.store(&mut p, 0x1_0000, 1).unwrap();
        r.store(&mut p, 0x1_1000, 2).unwrap();
        r.store(&mut p, 0x50_0000, 3).unwrap();
        r.load(&mut p, 0x60_0000).unwrap();
        let before = r.alloc.free_count();
        // Short of the L1 (one run), the counts, the first L2 frame, the second L2 frame (after
        // the first region is shared: it must be unshared again).
        for budget in 0..4 {
            r.alloc.set_budget(Some(budget));
            assert!(matches!(r.fork(&mut p, A2), Err(UvmError::OutOfMemory)));
            r.alloc.set_budget(None);
            assert_eq!(r.alloc.free_count(), before, "budget {budget}");
            assert_eq!(r.refs.shared_frames(), 0);
            for (v, flags) in [
                (0x1_0000, MapFlags::USER_DATA),
                (0x1_1000, MapFlags::USER_DATA),
                (0x50_0000, MapFlags::USER_DATA),
                (0x60_0000, MapFlags::USER_RODATA),
            ] {
                assert_eq!(p.space().translate(va(v)).unwrap().flags, Some(flags));
            }
            r.clean();
        }
        r.alloc.set_budget(Some(4));
        let c = r.fork(&mut p, A2).unwrap();
        r.alloc.set_budget(None);
        assert_eq!(r.load(&mut p, 0x50_0000), Ok(3));
        c.destroy(&mut r.alloc, &mut r.refs).unwrap();
        p.destroy(&mut r.alloc, &mut r.refs).unwrap();
    }

    #[test]
    fn a_shared_object_is_shared_by_every_space_and_freed_with_its_last_region() {
        let mut r = Rig::new();
        let before = r.alloc.free_count();
        let mut a = r.vm(A1);
        let mut b = r.vm(A2);
        let object = SharedObject::new(4);
        let shared = |o: &Arc<SharedObject>| Backing::Shared(o.clone());
        a.add_region(
            va(0x10_0000),
            0x4000,
            Perm::RW,
            RegionKind::Shared,
            shared(&object),
        )
        .unwrap();
        b.add_region(
            va(0x20_0000),
            0x4000,
            Perm::R,
            RegionKind::Shared,
            shared(&object),
        )
        .unwrap();
        // The object page exists once, whoever touches it first.
        assert_eq!(r.load(&mut b, 0x20_1000), Ok(0));
        assert_eq!(object.resident(), 1);
        r.store(&mut a, 0x10_1008, 5).unwrap();
        assert_eq!(r.load(&mut b, 0x20_1008), Ok(5));
        assert_eq!(
            r.fault(&mut b, 0x20_1000, Access::Write),
            Err(FaultError::Protection)
        );
        assert_eq!(
            r.fault(&mut a, 0x10_3000, Access::Write),
            Ok(Resolved::SharedPage)
        );
        assert_eq!(
            r.fault(&mut a, 0x10_3000, Access::Read),
            Ok(Resolved::AlreadyMapped)
        );
        assert_eq!(object.resident(), 2);
        assert_eq!(r.refs.shared_frames(), 0);
        // A fork maps the object lazily and shares its writes.
        let mut c = r.fork(&mut a, A3).unwrap();
        assert_eq!(c.resident_pages(), 0);
        r.store(&mut c, 0x10_1009, 6).unwrap();
        assert_eq!(r.load(&mut a, 0x10_1009), Ok(6));
        assert_eq!(
            r.mmu(&a, 0x10_1000).unwrap().flags,
            Some(MapFlags::USER_DATA)
        );
        // Out of memory for a new object page: nothing changes, in the object either.
        r.alloc.set_budget(Some(0));
        assert_eq!(
            r.fault(&mut c, 0x10_2000, Access::Read),
            Err(FaultError::OutOfMemory)
        );
        r.alloc.set_budget(None);
        assert_eq!(object.resident(), 2);
        let r_before = r.alloc.free_count();
        a.destroy(&mut r.alloc, &mut r.refs).unwrap();
        c.remove(va(0x10_0000), 0x4000, &mut r.alloc, &mut r.refs)
            .unwrap();
        assert_eq!(r.load(&mut b, 0x20_1009), Ok(6), "b still maps the object");
        assert!(r.alloc.free_count() > r_before, "a's tables went");
        let objects_frames = object.resident() as usize;
        let free = r.alloc.free_count();
        assert!(!SharedObject::release(object, &mut r.alloc, &mut r.refs).unwrap());
        b.remove(va(0x20_0000), 0x4000, &mut r.alloc, &mut r.refs)
            .unwrap();
        assert!(r.alloc.free_count() >= free + objects_frames);
        b.destroy(&mut r.alloc, &mut r.refs).unwrap();
        c.destroy(&mut r.alloc, &mut r.refs).unwrap();
        assert_eq!(r.alloc.free_count(), before);
        r.clean();
    }

    #[test]
    fn a_split_shared_region_keeps_mapping_the_right_object_pages() {
        let mut r = Rig::new();
        let before = r.alloc.free_count();
        let mut a = r.vm(A1);
        let object = SharedObject::new(8);
        a.add_shared_region(
            va(0x10_0000),
            0x6000,
            Perm::RW,
            RegionKind::Shared,
            object.clone(),
            2,
        )
        .unwrap();
        for i in 0..6u32 {
            r.store(&mut a, 0x10_0000 + i * 0x1000, i as u8 + 100)
                .unwrap();
        }
        a.remove(va(0x10_2000), 0x2000, &mut r.alloc, &mut r.refs)
            .unwrap();
        let offsets: Vec<_> = a
            .regions()
            .map(|g| (g.start.as_u32(), g.len, g.offset))
            .collect();
        assert_eq!(offsets, [(0x10_0000, 0x2000, 2), (0x10_4000, 0x2000, 6)]);
        assert_eq!(object.resident(), 6, "the object keeps its pages");
        assert_eq!(a.resident_pages(), 4);
        // A second mapping of the object sees the same pages at the same offsets.
        let mut b = r.vm(A2);
        b.add_shared_region(
            va(0x30_0000),
            0x8000,
            Perm::R,
            RegionKind::Shared,
            object.clone(),
            0,
        )
        .unwrap();
        for i in 0..6u32 {
            assert_eq!(r.load(&mut b, 0x30_2000 + i * 0x1000), Ok(i as u8 + 100));
        }
        assert_eq!(r.load(&mut a, 0x10_5000), Ok(105));
        assert!(!SharedObject::release(object, &mut r.alloc, &mut r.refs).unwrap());
        a.destroy(&mut r.alloc, &mut r.refs).unwrap();
        b.destroy(&mut r.alloc, &mut r.refs).unwrap();
        assert_eq!(r.alloc.free_count(), before);
    }

    #[test]
    fn remove_cuts_splits_and_frees_what_it_unmaps() {
        let mut r = Rig::new();
        let before = r.alloc.free_count();
        let mut u = r.vm(A1);
        add(&mut u, 0x1_0000, 0x8000, Perm::RW, RegionKind::Anon);
        add(&mut u, 0x1_8000, 0x2000, Perm::R, RegionKind::Data);
        add(&mut u, 0x4_0000, 0x2000, Perm::RW, RegionKind::Anon);
        for v in (0x1_0000..0x1_8000).step_by(0x1000) {
            r.store(&mut u, v, v as u8 + (v >> 12) as u8).unwrap();
        }
        r.load(&mut u, 0x1_9000).unwrap();
        let rm =
            |r: &mut Rig, u: &mut Vm, s: u32, l: u32| u.remove(va(s), l, &mut r.alloc, &mut r.refs);
        assert_eq!(rm(&mut r, &mut u, 0x1_0000, 0), Err(UvmError::ZeroSize));
        assert_eq!(
            rm(&mut r, &mut u, 0x1_0800, 0x1000),
            Err(UvmError::Unaligned)
        );
        assert_eq!(rm(&mut r, &mut u, 0x0, 0x2000), Err(UvmError::OutsideUser));
        assert_eq!(
            rm(&mut r, &mut u, 0x2_0000, 0x1000),
            Err(UvmError::NotFound)
        );
        assert_eq!(
            rm(&mut r, &mut u, 0x4_2000, 0x1000),
            Err(UvmError::NotFound)
        );
        // A hole in the middle: two regions remain, the pages in the hole go.
        let free = r.alloc.free_count();
        rm(&mut r, &mut u, 0x1_2000, 0x2000).unwrap();
        assert_eq!(r.alloc.free_count(), free + 2);
        assert_eq!(u.resident_pages(), 7);
        assert_eq!(
            r.fault(&mut u, 0x1_2000, Access::Read),
            Err(FaultError::NoRegion)
        );
        assert_eq!(r.mmu(&u, 0x1_3000), None);
        assert_eq!(r.load(&mut u, 0x1_4000), Ok(0x14));
        // Across the end of one region, a whole one and into a gap.
        rm(&mut r, &mut u, 0x1_7000, 0x2_0000).unwrap();
        let left: Vec<_> = u
            .regions()
            .map(|g| (g.start.as_u32(), g.len, g.perm))
            .collect();
        assert_eq!(
            left,
            [
                (0x1_0000, 0x2000, Perm::RW),
                (0x1_4000, 0x3000, Perm::RW),
                (0x4_0000, 0x2000, Perm::RW)
            ]
        );
        assert_eq!(u.resident_pages(), 5);
        assert_eq!(mapped_pages(&u), 5);
        // Shared copy on write: the frame stays with its other owner.
        let mut c = r.fork(&mut u, A2).unwrap();
        let free = r.alloc.free_count();
        rm(&mut r, &mut u, 0x1_0000, 0x2000).unwrap();
        assert_eq!(r.alloc.free_count(), free, "the child still owns them");
        assert_eq!(r.load(&mut c, 0x1_1000), Ok(0x11));
        rm(&mut r, &mut c, 0x1_0000, 0x2000).unwrap();
        assert_eq!(r.alloc.free_count(), free + 2);
        r.clean();
        u.destroy(&mut r.alloc, &mut r.refs).unwrap();
        c.destroy(&mut r.alloc, &mut r.refs).unwrap();
        assert_eq!(r.alloc.free_count(), before);
        assert_eq!(r.refs.shared_frames(), 0);
    }

    #[test]
    fn populate_writes_through_physical_memory_and_maps_the_pages() {
        let mut r = Rig::new();
        let before = r.alloc.free_count();
        let mut u = r.vm(A1);
        add(&mut u, 0x1_0000, 0x3000, Perm::RX, RegionKind::Text);
        add(&mut u, 0x2_0000, 0x2000, Perm::RW, RegionKind::Data);
        add(&mut u, 0x4_0000, 0x1000, Perm::RW, RegionKind::Guard);
        let object = SharedObject::new(1);
        u.add_region(
            va(0x3_0000),
            0x1000,
            Perm::RW,
            RegionKind::Shared,
            Backing::Shared(object),
        )
        .unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 1) as u8).collect();
        let pop = |r: &mut Rig, u: &mut Vm, v: u32, d: &[u8]| {
            u.populate(va(v), d, &mut r.alloc, &mut r.refs)
        };
        assert_eq!(pop(&mut r, &mut u, 0x1_0000 + 0x1001, &data[..0]), Ok(()));
        assert_eq!(u.resident_pages(), 0);
        assert_eq!(
            pop(&mut r, &mut u, 0x5_0000, &data),
            Err(UvmError::NotFound)
        );
        assert_eq!(
            pop(&mut r, &mut u, 0xf000, &data[..1]),
            Err(UvmError::NotFound)
        );
        assert_eq!(
            pop(&mut r, &mut u, 0x3_0000, &data[..1]),
            Err(UvmError::NotFound)
        );
        assert_eq!(
            pop(&mut r, &mut u, 0x1_2000, &data),
            Err(UvmError::BadLength)
        );
        // Out of memory on the second page: nothing written, nothing mapped.
        let free = r.alloc.free_count();
        r.alloc.set_budget(Some(2));
        assert_eq!(
            pop(&mut r, &mut u, 0x1_0ffe, &data),
            Err(UvmError::OutOfMemory)
        );
        r.alloc.set_budget(None);
        assert_eq!(r.alloc.free_count(), free);
        assert_eq!((u.resident_pages(), mapped_pages(&u)), (0, 0));
        // Unaligned, across three pages of a read-only executable region.
        pop(&mut r, &mut u, 0x1_0ffe, &data).unwrap();
        assert_eq!(u.resident_pages(), 3);
        for (i, &b) in data.iter().enumerate() {
            assert_eq!(r.load(&mut u, 0x1_0ffe + i as u32), Ok(b));
        }
        assert_eq!(r.load(&mut u, 0x1_0ffd), Ok(0), "zeroed around the data");
        assert_eq!(r.load(&mut u, 0x1_0ffe + 5000), Ok(0));
        assert_eq!(
            r.mmu(&u, 0x1_1000).unwrap().flags,
            Some(MapFlags::USER_TEXT)
        );
        // Again over mapped pages: overwritten in place.
        pop(&mut r, &mut u, 0x1_1000, &[9, 9]).unwrap();
        assert_eq!(u.resident_pages(), 3);
        assert_eq!(r.load(&mut u, 0x1_1001), Ok(9));
        // Over a page shared copy on write: the child keeps what it had.
        r.store(&mut u, 0x2_0000, 1).unwrap();
        let mut c = r.fork(&mut u, A2).unwrap();
        pop(&mut r, &mut u, 0x2_0000, &[2]).unwrap();
        assert_eq!(
            (r.load(&mut u, 0x2_0000), r.load(&mut c, 0x2_0000)),
            (Ok(2), Ok(1))
        );
        assert_eq!(r.refs.shared_frames(), 3, "the three text pages");
        r.clean();
        c.destroy(&mut r.alloc, &mut r.refs).unwrap();
        u.destroy(&mut r.alloc, &mut r.refs).unwrap();
        assert_eq!(r.alloc.free_count(), before);
    }

    #[test]
    fn check_range_follows_regions_and_their_permissions() {
        let mut r = Rig::new();
        let mut u = r.vm(A1);
        add(&mut u, 0x1_0000, 0x2000, Perm::RW, RegionKind::Data);
        add(&mut u, 0x1_2000, 0x1000, Perm::RW, RegionKind::Anon);
        add(&mut u, 0x1_3000, 0x1000, Perm::R, RegionKind::Data);
        add(&mut u, 0x1_4000, 0x1000, Perm::RW, RegionKind::Guard);
        add(&mut u, 0x2_0000, 0x1000, Perm::RX, RegionKind::Text);
        assert!(
            u.check_range(va(0x1_0010), 0x2ff0, true),
            "two adjacent regions"
        );
        assert!(!u.check_range(va(0x1_0010), 0x2ff1, true), "into read-only");
        assert!(u.check_range(va(0x1_0010), 0x3ff0, false));
        assert!(
            !u.check_range(va(0x1_0010), 0x3ff1, false),
            "into the guard"
        );
        assert!(u.check_range(va(0x2_0000), 0x1000, false));
        assert!(!u.check_range(va(0x2_0000), 1, true));
        assert!(!u.check_range(va(0x1_fffc), 8, false), "a gap");
        assert!(!u.check_range(va(0x1_0000), u32::MAX, false));
        assert!(!u.check_range(va(0xffff_ff00), 0x1000, false));
        assert!(u.check_range(va(0x5_0000), 0, true));
        u.destroy(&mut r.alloc, &mut r.refs).unwrap();
    }

    #[test]
    fn a_new_asid_tags_later_maintenance() {
        let mut r = Rig::new();
        let mut p = r.vm(A1);
        add(&mut p, 0x1_0000, 0x1000, Perm::RW, RegionKind::Data);
        r.store(&mut p, 0x1_0000, 1).unwrap();
        // A rollover: everything is flushed, the space runs with another ASID from now on.
        r.tlb.invalidate_all();
        r.tlb.sync();
        p.set_asid(A3);
        assert_eq!(p.asid(), A3);
        assert_eq!(r.load(&mut p, 0x1_0000), Ok(1));
        let mut c = r.fork(&mut p, A2).unwrap();
        // The parent's writable entry, cached under A3, must have been invalidated under A3.
        assert_eq!(
            r.mmu(&p, 0x1_0000).unwrap().flags,
            Some(MapFlags::USER_RODATA)
        );
        r.store(&mut p, 0x1_0000, 2).unwrap();
        assert_eq!(r.load(&mut c, 0x1_0000), Ok(1));
        assert_eq!(r.load(&mut p, 0x1_0000), Ok(2));
        r.clean();
        p.destroy(&mut r.alloc, &mut r.refs).unwrap();
        c.destroy(&mut r.alloc, &mut r.refs).unwrap();
    }

    #[test]
    fn displays_a_memory_map_line() {
        let mut r = Rig::new();
        let mut u = r.vm(A1);
        add(&mut u, 0x40_0000, 0x2000, Perm::RX, RegionKind::Text);
        let object = SharedObject::new(4);
        u.add_shared_region(
            va(0x50_0000),
            0x1000,
            Perm::RW,
            RegionKind::Shared,
            object,
            3,
        )
        .unwrap();
        let lines: Vec<_> = u.regions().map(|g| alloc::format!("{g}")).collect();
        assert_eq!(
            lines,
            [
                "00400000-00402000 r-x text   private",
                "00500000-00501000 rw- shared shared @3 (0/4 pages resident)"
            ]
        );
        assert_eq!(
            alloc::format!("{}", FaultError::Guard),
            "access to a guard page"
        );
        assert_eq!(
            alloc::format!("{:?}", SharedObject::new(2)),
            "SharedObject { pages: 2, resident: 0 }"
        );
        u.destroy(&mut r.alloc, &mut r.refs).unwrap();
    }

    #[test]
    fn frame_refs_record_only_shared_frames() {
        let mut refs = FrameRefs::new();
        let f = Frame::from_number(7);
        assert_eq!(refs.count(f), 1);
        assert!(refs.release(f), "an unrecorded frame has one owner");
        refs.share(f);
        refs.share(f);
        assert_eq!((refs.count(f), refs.shared_frames()), (3, 1));
        assert!(!refs.release(f));
        assert!(!refs.release(f));
        assert_eq!((refs.count(f), refs.shared_frames()), (1, 0));
        assert!(refs.release(f));
    }

    impl Rig {
        fn vm_in(&mut self, asid: Asid, budget: &'static KmemBudget) -> Vm {
            Vm::new_in(
                self.ram.clone(),
                self.tlb.clone(),
                asid,
                &mut self.alloc,
                budget,
            )
            .unwrap()
        }
    }

    #[test]
    fn regions_are_refused_when_the_budget_cannot_hold_them() {
        // Room for the map's first array: four regions (the next would need eight slots).
        static B: KmemBudget = KmemBudget::new(regions_cost(4));
        assert_eq!(
            regions_cost(1),
            regions_cost(4),
            "arrays come in powers of two, 4 at least"
        );
        assert!(regions_cost(5) > regions_cost(4));
        let mut r = Rig::new();
        let mut u = r.vm_in(A1, &B);
        for i in 0..4 {
            add(
                &mut u,
                0x10_0000 + i * 0x1_0000,
                0x4000,
                Perm::RW,
                RegionKind::Anon,
            );
        }
        assert_eq!(B.used(), regions_cost(4));
        let fifth = u.add_region(
            va(0x20_0000),
            0x1000,
            Perm::RW,
            RegionKind::Anon,
            Backing::Private,
        );
        assert_eq!(fifth, Err(UvmError::NoKernelMemory));
        assert_eq!(u.regions().count(), 4, "a refused add changes nothing");
        // A hole in the middle of a region would make a fifth: refused, nothing removed.
        assert_eq!(
            u.remove(va(0x10_1000), 0x1000, &mut r.alloc, &mut r.refs),
            Err(UvmError::NoKernelMemory)
        );
        assert_eq!(u.regions().count(), 4);
        // Cutting an end makes none; removing a region makes room.
        u.remove(va(0x10_3000), 0x1000, &mut r.alloc, &mut r.refs)
            .unwrap();
        u.remove(va(0x11_0000), 0x4000, &mut r.alloc, &mut r.refs)
            .unwrap();
        assert_eq!(u.regions().count(), 3);
        // Now the hole fits.
        u.remove(va(0x10_1000), 0x1000, &mut r.alloc, &mut r.refs)
            .unwrap();
        assert_eq!((u.regions().count(), B.used()), (4, regions_cost(4)));
        u.destroy(&mut r.alloc, &mut r.refs).unwrap();
        assert_eq!(B.used(), 0, "a destroyed space gives its whole charge back");
    }

    #[test]
    fn a_space_has_at_most_max_regions() {
        let mut r = Rig::new();
        let mut u = r.vm(A1);
        for i in 0..MAX_REGIONS as u32 {
            add(
                &mut u,
                0x10_0000 + i * 0x2000,
                0x1000,
                Perm::R,
                RegionKind::Anon,
            );
        }
        let over = u.add_region(
            va(0x4000_0000),
            0x3000,
            Perm::RW,
            RegionKind::Anon,
            Backing::Private,
        );
        assert_eq!(over, Err(UvmError::TooManyRegions));
        // No hole either; removing a whole region still works.
        u.remove(va(0x10_0000), 0x1000, &mut r.alloc, &mut r.refs)
            .unwrap();
        add(&mut u, 0x4000_0000, 0x3000, Perm::RW, RegionKind::Anon);
        assert_eq!(
            u.remove(va(0x4000_1000), 0x1000, &mut r.alloc, &mut r.refs),
            Err(UvmError::TooManyRegions)
        );
        u.destroy(&mut r.alloc, &mut r.refs).unwrap();
    }

    #[test]
    fn a_fork_the_budget_cannot_hold_is_refused_and_changes_nothing() {
        // The parent's five regions need an array of eight; the budget has room for that and
        // an array of four, not two of eight.
        static B: KmemBudget = KmemBudget::new(regions_cost(8) + regions_cost(4));
        let mut r = Rig::new();
        let mut p = r.vm_in(A1, &B);
        for i in 0..5 {
            add(
                &mut p,
                0x10_0000 + i * 0x10_0000,
                0x2000,
                Perm::RW,
                RegionKind::Anon,
            );
        }
        r.store(&mut p, 0x10_0000, 5).unwrap();
        let free = r.alloc.free_count();
        assert!(matches!(r.fork(&mut p, A2), Err(UvmError::NoKernelMemory)));
        assert_eq!(r.alloc.free_count(), free, "no table of a child was kept");
        assert_eq!(r.refs.shared_frames(), 0);
        // The parent's page is still its own and writable.
        r.store(&mut p, 0x10_0000, 6).unwrap();
        assert_eq!(r.refs.shared_frames(), 0);
        p.remove(va(0x40_0000), 0x20_0000, &mut r.alloc, &mut r.refs)
            .unwrap();
        assert_eq!(B.used(), regions_cost(3), "the array shrank");
        let c = r.fork(&mut p, A2).unwrap();
        assert_eq!(B.used(), 2 * regions_cost(3));
        c.destroy(&mut r.alloc, &mut r.refs).unwrap();
        p.destroy(&mut r.alloc, &mut r.refs).unwrap();
        assert_eq!(B.used(), 0);
    }

    #[test]
    fn shared_objects_are_charged_until_their_last_reference_goes() {
        static B: KmemBudget = KmemBudget::new(16 * 1024);
        let cost = shared_object_cost(256);
        assert!(cost >= 256 * 8, "the page table of 256 pages is counted");
        let a = SharedObject::try_new(256, &B).unwrap();
        assert_eq!(B.used(), cost);
        assert!(matches!(
            SharedObject::try_new(4096, &B),
            Err(UvmError::NoKernelMemory)
        ));
        let mut r = Rig::new();
        let mut u = r.vm(A1);
        u.add_shared_region(
            va(0x10_0000),
            0x2000,
            Perm::RW,
            RegionKind::Shared,
            a.clone(),
            3,
        )
        .unwrap();
        r.store(&mut u, 0x10_1000, 9).unwrap();
        assert!(!SharedObject::release(a, &mut r.alloc, &mut r.refs).unwrap());
        assert_eq!(B.used(), cost, "a region still holds it");
        u.destroy(&mut r.alloc, &mut r.refs).unwrap();
        assert_eq!(B.used(), 0);
    }

    #[test]
    fn frame_refs_sized_up_front_never_grow() {
        let mut refs = FrameRefs::with_frames(64);
        let f = Frame::from_number(63);
        refs.share(f);
        refs.share(f);
        assert_eq!(refs.counts.len(), 64);
        assert_eq!((refs.count(f), refs.shared_frames()), (3, 1));
        assert_eq!(refs.count(Frame::from_number(1000)), 1);
    }

    /// A parent whose regions share slots and cross a slot boundary: text and a data region
    /// in slot 0, data from slot 0 into slot 1 and into group 1 (slot 4), a shared object
    /// and a second data region in slot 1. Every private page is touched (the data pages
    /// written, so cached writable); returns the private pages.
    fn mixed_parent(r: &mut Rig, p: &mut Vm, object: &Arc<SharedObject>) -> Vec<u32> {
        add(p, 0x1_0000, 0x1000, Perm::RX, RegionKind::Text);
        add(p, 0x2_0000, 0x1000, Perm::R, RegionKind::Data);
        add(p, 0xF_E000, 0x30_4000, Perm::RW, RegionKind::Anon);
        p.add_shared_region(
            va(0x48_0000),
            0x2000,
            Perm::RW,
            RegionKind::Shared,
            object.clone(),
            0,
        )
        .unwrap();
        add(p, 0x4C_0000, 0x2000, Perm::RW, RegionKind::Stack);
        p.populate(va(0x1_0000), &[1, 2, 3, 4], &mut r.alloc, &mut r.refs)
            .unwrap();
        r.load(p, 0x2_0000).unwrap();
        let mut private = vec![0x1_0000, 0x2_0000];
        for v in (0xF_E000..0x10_3000)
            .step_by(0x1000)
            .chain([0x40_0000, 0x40_1000, 0x4C_0000, 0x4C_1000])
        {
            r.store(p, v, v as u8 ^ 0x5a).unwrap();
            private.push(v);
        }
        r.store(p, 0x48_0000, 0x77).unwrap();
        assert!(r.mmu(p, 0x10_0000).is_some());
        private
    }

    #[test]
    fn fork_copies_each_table_once_and_leaves_shared_pages_to_the_child_faults() {
        let mut r = Rig::new();
        let before = r.alloc.free_count();
        let object = SharedObject::new(2);
        let mut p = r.vm(A1);
        let private = mixed_parent(&mut r, &mut p, &object);
        let free = r.alloc.free_count();
        let mut c = r.fork(&mut p, A2).unwrap();
        // L1 (two frames), the counts, one L2 frame per group (0 and 1).
        assert_eq!(r.alloc.free_count(), free - 5);
        assert_eq!(c.resident_pages(), private.len() as u32);
        assert_eq!(r.refs.shared_frames(), private.len() as u32);
        for &v in &private {
            let perm = p.region_at(va(v)).unwrap().perm;
            let (pt, ct) = (r.mmu(&p, v).unwrap(), r.mmu(&c, v).unwrap());
            assert_eq!(pt.pa, ct.pa);
            // What a fork maps: the region's attributes, read-only for RW (AP[2] set).
            assert_eq!(pt.flags, Some(perm.cow_flags()), "parent {v:#x}");
            assert_eq!(ct.flags, Some(perm.cow_flags()), "child {v:#x}");
        }
        // The shared page is left to the child's first access.
        assert_eq!(c.space().translate(va(0x48_0000)), None);
        assert_eq!(r.load(&mut c, 0x48_0000), Ok(0x77));
        assert_eq!(mapped_pages(&c), private.len() as u32 + 1);
        r.clean();
        // Both write everywhere and see only their own writes.
        for &v in &private[2..] {
            r.store(&mut c, v, 1).unwrap();
            assert_eq!(r.load(&mut p, v), Ok(v as u8 ^ 0x5a));
            r.store(&mut p, v, 2).unwrap();
            assert_eq!(r.load(&mut c, v), Ok(1));
        }
        r.clean();
        // The child's slot counts are right: removing its regions gives its tables back.
        c.remove(va(0x1_0000), 0x7FF0_0000, &mut r.alloc, &mut r.refs)
            .unwrap();
        assert_eq!(mapped_pages(&c), 0);
        c.destroy(&mut r.alloc, &mut r.refs).unwrap();
        p.destroy(&mut r.alloc, &mut r.refs).unwrap();
        assert!(SharedObject::release(object, &mut r.alloc, &mut r.refs).unwrap());
        assert_eq!(r.refs.shared_frames(), 0);
        assert_eq!(r.alloc.free_count(), before);
        r.clean();
    }

    #[test]
    fn a_fork_short_of_a_table_midway_is_undone_and_the_parent_writes_without_a_fault() {
        let mut r = Rig::new();
        let object = SharedObject::new(2);
        let mut p = r.vm(A1);
        let private = mixed_parent(&mut r, &mut p, &object);
        let before = r.alloc.free_count();
        // Three allocations: the child's L1 (one run), its counts, its L2 frame for group 0;
        // the copy stops at group 1, after sharing group 0's pages and write-protecting them.
        r.alloc.set_budget(Some(3));
        assert!(matches!(r.fork(&mut p, A2), Err(UvmError::OutOfMemory)));
        r.alloc.set_budget(None);
        assert_eq!(r.alloc.free_count(), before);
        assert_eq!(r.refs.shared_frames(), 0);
        r.clean();
        for &v in &private {
            let perm = p.region_at(va(v)).unwrap().perm;
            assert_eq!(r.mmu(&p, v).unwrap().flags, Some(perm.flags()), "{v:#x}");
        }
        // No stale read-only entry: a write through the MMU needs no fault (`store` would
        // resolve one, then insist the TLB allows the write).
        for &v in &private[2..] {
            let free = r.alloc.free_count();
            r.store(&mut p, v, 9).unwrap();
            assert_eq!(r.alloc.free_count(), free, "no copy at {v:#x}");
        }
        r.clean();
        p.destroy(&mut r.alloc, &mut r.refs).unwrap();
        assert!(SharedObject::release(object, &mut r.alloc, &mut r.refs).unwrap());
    }

    #[test]
    fn a_section_in_a_private_region_is_refused_by_fork_and_changes_nothing() {
        let mut r = Rig::new();
        let mut p = r.vm(A1);
        add(&mut p, 0x1_0000, 0x1000, Perm::RW, RegionKind::Data);
        add(&mut p, 0x40_0000, 0x10_0000, Perm::RW, RegionKind::Anon);
        r.store(&mut p, 0x1_0000, 1).unwrap();
        // Never made by this module; here by hand (over memory no allocator hands out), to
        // see a fork refuse it.
        p.space
            .map_section(va(0x40_0000), PhysAddr::new(0), MapFlags::USER_DATA)
            .unwrap();
        let before = r.alloc.free_count();
        assert_eq!(
            r.fork(&mut p, A2).err(),
            Some(UvmError::Map(MapError::GranuleMismatch))
        );
        assert_eq!(r.alloc.free_count(), before);
        assert_eq!(r.refs.shared_frames(), 0);
        r.store(&mut p, 0x1_0000, 2).unwrap();
        assert_eq!(
            p.space().translate(va(0x40_0000)).unwrap().flags,
            Some(MapFlags::USER_DATA)
        );
        r.clean();
        p.space.unmap_section(va(0x40_0000)).unwrap();
        p.destroy(&mut r.alloc, &mut r.refs).unwrap();
    }

    #[test]
    fn a_translation_fault_on_a_page_mapped_after_all_is_handled_as_usual() {
        let mut r = Rig::new();
        let mut p = r.vm(A1);
        add(&mut p, 0x10_0000, 0x2000, Perm::RW, RegionKind::Anon);
        let object = SharedObject::new(1);
        p.add_shared_region(
            va(0x20_0000),
            0x1000,
            Perm::RW,
            RegionKind::Shared,
            object.clone(),
            0,
        )
        .unwrap();
        r.store(&mut p, 0x10_0000, 7).unwrap();
        r.store(&mut p, 0x20_0000, 8).unwrap();
        let free = r.alloc.free_count();
        // Both pages are mapped: told they were not, the handler still finds them.
        for v in [0x10_0000, 0x20_0000] {
            let got = p.handle_translation_fault(va(v), Access::Read, &mut r.alloc, &mut r.refs);
            assert_eq!(got, Ok(Resolved::AlreadyMapped), "{v:#x}");
        }
        assert_eq!(r.alloc.free_count(), free, "no frame kept");
        // A shared copy-on-write page written after a fork is copied, not zeroed.
        let mut c = r.fork(&mut p, A2).unwrap();
        let got =
            c.handle_translation_fault(va(0x10_0000), Access::Write, &mut r.alloc, &mut r.refs);
        assert_eq!(got, Ok(Resolved::CopyOnWrite));
        assert_eq!(r.load(&mut c, 0x10_0000), Ok(7));
        // Untouched: demand zero, as with handle_fault.
        let got =
            p.handle_translation_fault(va(0x10_1000), Access::Write, &mut r.alloc, &mut r.refs);
        assert_eq!(got, Ok(Resolved::DemandZero));
        c.destroy(&mut r.alloc, &mut r.refs).unwrap();
        p.destroy(&mut r.alloc, &mut r.refs).unwrap();
        assert!(SharedObject::release(object, &mut r.alloc, &mut r.refs).unwrap());
    }

    /// Frames zeroed ahead of time, handed out by `take_zeroed` (as the kernel's pool does).
    struct Pooled {
        inner: DirtyFrames,
        pool: Vec<Frame>,
    }

    impl FrameAllocator for Pooled {
        fn alloc_frame(&mut self) -> Result<Frame, PmmError> {
            self.inner.alloc_frame()
        }
        fn alloc_contiguous(
            &mut self,
            count: u32,
            align: u32,
            limit: Option<PhysAddr>,
        ) -> Result<Frame, PmmError> {
            self.inner.alloc_contiguous(count, align, limit)
        }
        fn free_frame(&mut self, frame: Frame) -> Result<(), PmmError> {
            self.inner.free_frame(frame)
        }
        fn free_contiguous(&mut self, first: Frame, count: u32) -> Result<(), PmmError> {
            self.inner.free_contiguous(first, count)
        }
        fn alloc_for_zero(&mut self) -> Result<(Frame, bool), PmmError> {
            match self.pool.pop() {
                Some(f) => Ok((f, true)),
                None => Ok((self.alloc_frame()?, false)),
            }
        }
    }

    #[test]
    fn a_demand_zero_fault_maps_a_frame_zeroed_ahead_when_there_is_one() {
        let mut r = Rig::new();
        let mut u = r.vm(A1);
        add(&mut u, 0x10_0000, 0x2000, Perm::RW, RegionKind::Anon);
        // One frame zeroed ahead (through the host RAM, as the idle loop would).
        let ready = r.alloc.alloc_frame().unwrap();
        r.ram.clone().zero_frame(ready);
        let mut pooled = Pooled {
            inner: DirtyFrames {
                frames: core::mem::replace(
                    &mut r.alloc.frames,
                    HostFrames::new(Frame::from_number(FIRST_FRAME), 0),
                ),
                ram: r.ram.clone(),
            },
            pool: alloc::vec![ready],
        };
        let got =
            u.handle_translation_fault(va(0x10_0000), Access::Write, &mut pooled, &mut r.refs);
        assert_eq!(got, Ok(Resolved::DemandZero));
        let t = u.space().translate(va(0x10_0000)).unwrap();
        assert_eq!(
            Frame::containing(t.pa),
            ready,
            "the pooled frame is the one mapped"
        );
        // The pool is empty now: the next fault zeroes a fresh (dirty) frame itself.
        u.handle_fault(va(0x10_1000), Access::Read, &mut pooled, &mut r.refs)
            .unwrap();
        r.alloc.frames = core::mem::replace(
            &mut pooled.inner.frames,
            HostFrames::new(Frame::from_number(FIRST_FRAME), 0),
        );
        assert_eq!(r.load(&mut u, 0x10_0010), Ok(0));
        assert_eq!(r.load(&mut u, 0x10_1ff0), Ok(0));
        u.destroy(&mut r.alloc, &mut r.refs).unwrap();
    }
}
