//! File-backed memory objects: the cached pages of one file.
//!
//! A [`FileObject`] is what a region maps when its pages come from a file (a program's text and
//! data, `mmap` of a file): the file's data in 4 KiB frames, indexed by page, read from the
//! file's [`PageSource`] on first use and kept afterwards, so that every process mapping the
//! file, and every later start of the same program, finds them in memory. Together, the objects
//! of all open files are the page cache ([`super::page_cache`]).
//!
//! # Who owns a cached frame
//!
//! The object owns its frames. Every page-table entry that maps one is an owner too, counted in
//! the [`FrameRefs`] shared by all address spaces, exactly as a page shared copy on write after
//! a fork: a cached frame mapped by two processes has three owners. So the rules of private
//! memory carry over unchanged: a write to a privately mapped file page finds more than one
//! owner and copies; unmapping drops one owner. A frame with one owner left (the object) is
//! mapped nowhere and may be evicted; a frame the object gives up while processes still map it
//! ([`FileObject::detach`]) goes back to the allocator with its last mapping.
//!
//! # Dirty pages
//!
//! ARMv7 has no dirty bit in its descriptors. A page of a shared writable mapping is therefore
//! mapped read-only first; the first write faults and [`FileObject::note_writer`] marks the page
//! dirty and counts one more writable mapping of it. A writable mapping may change the page at
//! any time without the kernel knowing, so a page with writable mappings stays dirty when it is
//! written back, and only a write-back after the last writable mapping was removed or
//! write-protected ([`FileObject::writer_gone`]) makes it clean.
//!
//! # Executable pages
//!
//! A page read from the file was written through the data cache. Before it is mapped
//! executable the first time, [`PhysMem::sync_instructions`] cleans it to the point of
//! unification and invalidates the instruction cache (ARM ARM B2.2.9); the page remembers
//! that, until it is written again.

use super::addr::{Frame, PhysAddr, PAGE_SIZE};
use super::frame::FrameAllocator;
use super::kmem::{self, Charge, KmemBudget};
use super::phys::PhysMem;
use super::uvm::FrameRefs;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec;
use core::fmt;
use core::ops::Range;
use core::sync::atomic::{AtomicU32, Ordering};

/// Why the storage under a file failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoError {
    /// The device or the file system reported an error (the source has said which).
    Failed,
    /// No space left to write to.
    NoSpace,
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Failed => "I/O error",
            Self::NoSpace => "no space left on the device",
        })
    }
}

/// Where a file's bytes live: the card's file system in the kernel, a RAM disk in tests.
pub trait PageSource: Send + Sync {
    /// Reads the bytes of page `index` of the file into `buf` (one page long). Bytes past the
    /// end of the file may hold anything: the object zeroes them.
    fn read_page(&self, index: u32, buf: &mut [u8]) -> Result<(), IoError>;

    /// Writes `data` (at most one page, never past the file's end) at the start of page
    /// `index` of the file. The file does not grow.
    fn write_page(&self, index: u32, data: &[u8]) -> Result<(), IoError>;
}

/// Counters of the page cache, shown by `meminfo`.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Pages cached now.
    pub pages: AtomicU32,
    /// Cached pages that differ from the file.
    pub dirty: AtomicU32,
    /// Lookups that found the page cached.
    pub hits: AtomicU32,
    /// Lookups that read the page from its file.
    pub misses: AtomicU32,
    /// Pages written back to their file.
    pub writebacks: AtomicU32,
    /// Clean, unmapped pages given back to free memory.
    pub evictions: AtomicU32,
    /// Page reads that failed.
    pub read_errors: AtomicU32,
    /// Write-backs that failed (the page stays dirty and is tried again).
    pub write_errors: AtomicU32,
}

impl CacheStats {
    /// All counters zero.
    pub const fn new() -> Self {
        Self {
            pages: AtomicU32::new(0),
            dirty: AtomicU32::new(0),
            hits: AtomicU32::new(0),
            misses: AtomicU32::new(0),
            writebacks: AtomicU32::new(0),
            evictions: AtomicU32::new(0),
            read_errors: AtomicU32::new(0),
            write_errors: AtomicU32::new(0),
        }
    }

    fn add(counter: &AtomicU32, n: u32) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(counter: &AtomicU32, n: u32) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    /// The value of `counter` now.
    pub fn get(counter: &AtomicU32) -> u32 {
        counter.load(Ordering::Relaxed)
    }
}

/// Why a page of a file could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileError {
    /// The page lies wholly past the end of the file (a `SIGBUS` for the process that asked).
    BeyondEnd,
    /// Reading the file failed.
    Io(IoError),
    /// No frame for the page.
    OutOfMemory,
    /// The kernel-memory budget cannot hold the page's entry.
    NoKernelMemory,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BeyondEnd => f.write_str("past the end of the file"),
            Self::Io(e) => write!(f, "{e}"),
            Self::OutOfMemory => f.write_str("out of memory"),
            Self::NoKernelMemory => f.write_str("kernel memory budget exhausted"),
        }
    }
}

/// One cached page.
#[derive(Debug, Clone, Copy)]
struct CachedPage {
    frame: Frame,
    /// Differs from the file (or may: see `writers`).
    dirty: bool,
    /// Page-table entries that map it writable.
    writers: u16,
    /// Cleaned to PoU and the I-cache invalidated since it was last written.
    exec_ready: bool,
    /// Counts the writable mappings made; a write-back makes the page clean only if this did
    /// not change while it wrote.
    generation: u32,
    /// Read for a lookup that missed, which comes back for it: that lookup is not a hit.
    fresh: bool,
}

/// What [`FileObject::lookup`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The page is cached in this frame.
    Hit(Frame),
    /// The page must be read from the file first.
    Miss,
    /// The page lies wholly past the end of the file.
    BeyondEnd,
}

/// Heap one cached page's entry may take: the entry and its share of a B-tree node (nodes of
/// at most 11 entries, at least half full) rounded up generously.
const PAGE_ENTRY_COST: u32 = 64;

struct State {
    /// The file's length in bytes.
    size: u32,
    pages: BTreeMap<u32, CachedPage>,
    /// The heap the entries take.
    charge: Charge,
}

/// The cached pages of one file. See the module documentation.
pub struct FileObject {
    source: Box<dyn PageSource>,
    state: spin::Mutex<State>,
    stats: &'static CacheStats,
}

impl fmt::Debug for FileObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("FileObject")
            .field("size", &s.size)
            .field("resident", &s.pages.len())
            .finish()
    }
}

/// Bytes of page `index` that lie inside a file of `size` bytes.
fn valid_bytes(size: u32, index: u32) -> usize {
    let start = u64::from(index) * u64::from(PAGE_SIZE);
    (u64::from(size).saturating_sub(start)).min(u64::from(PAGE_SIZE)) as usize
}

impl FileObject {
    /// An object for a file of `size` bytes read through `source`, nothing cached yet. The
    /// entries of its cached pages are charged to `budget`; `stats` counts what it does.
    pub fn new(
        source: Box<dyn PageSource>,
        size: u32,
        stats: &'static CacheStats,
        budget: &'static KmemBudget,
    ) -> Arc<Self> {
        Arc::new(Self {
            source,
            state: spin::Mutex::new(State {
                size,
                pages: BTreeMap::new(),
                charge: budget.empty(),
            }),
            stats,
        })
    }

    /// The file's length in bytes.
    pub fn size(&self) -> u32 {
        self.state.lock().size
    }

    /// Pages the file's bytes touch.
    pub fn page_count(&self) -> u32 {
        self.size().div_ceil(PAGE_SIZE)
    }

    /// Pages cached now.
    pub fn resident(&self) -> u32 {
        self.state.lock().pages.len() as u32
    }

    /// Cached pages that are dirty.
    pub fn dirty_pages(&self) -> u32 {
        self.state.lock().pages.values().filter(|p| p.dirty).count() as u32
    }

    /// The frame of page `index` if it is cached.
    pub fn cached_frame(&self, index: u32) -> Option<Frame> {
        self.state.lock().pages.get(&index).map(|p| p.frame)
    }

    /// The frame of cached page `index`, without reading anything: [`Lookup::Miss`] when the
    /// page must be read first ([`FileObject::load`]). With `exec`, the page is also made safe to
    /// execute (see the module documentation). A hit is counted.
    pub fn lookup<M: PhysMem>(&self, index: u32, exec: bool, mem: &mut M) -> Lookup {
        let mut s = self.state.lock();
        let size = s.size;
        match s.pages.get_mut(&index) {
            Some(page) => {
                if !page.fresh {
                    CacheStats::add(&self.stats.hits, 1);
                }
                page.fresh = false;
                if exec && !page.exec_ready {
                    mem.sync_instructions(page.frame);
                    page.exec_ready = true;
                }
                Lookup::Hit(page.frame)
            }
            None if valid_bytes(size, index) == 0 => Lookup::BeyondEnd,
            None => Lookup::Miss,
        }
    }

    /// Reads page `index` from the file into a new frame and caches it (the bytes past the end
    /// of the file read zero); a page cached already is left as it is. The object is not locked
    /// while the source reads, so that a reader that sleeps on the device holds up nobody who
    /// only looks pages up.
    pub fn load<M: PhysMem, A: FrameAllocator>(
        &self,
        index: u32,
        mem: &mut M,
        alloc: &mut A,
    ) -> Result<Frame, FileError> {
        let valid = {
            let mut s = self.state.lock();
            if let Some(p) = s.pages.get(&index) {
                return Ok(p.frame);
            }
            let valid = valid_bytes(s.size, index);
            if valid == 0 {
                return Err(FileError::BeyondEnd);
            }
            // The entry's heap, charged before the read (given back below if it fails).
            let cost = (s.pages.len() as u32 + 1) * PAGE_ENTRY_COST;
            let before = s.charge.bytes();
            s.charge
                .resize(cost.max(before))
                .map_err(|_| FileError::NoKernelMemory)?;
            valid
        };
        let give_back_charge = |s: &mut State| {
            let cost = s.pages.len() as u32 * PAGE_ENTRY_COST;
            let _ = s.charge.resize(cost);
        };
        let Ok(frame) = alloc.alloc_frame() else {
            give_back_charge(&mut self.state.lock());
            return Err(FileError::OutOfMemory);
        };
        let mut buf = vec![0u8; PAGE_SIZE as usize];
        if let Err(e) = self.source.read_page(index, &mut buf) {
            CacheStats::add(&self.stats.read_errors, 1);
            // The frame was never seen by anyone.
            let _ = alloc.free_frame(frame);
            give_back_charge(&mut self.state.lock());
            return Err(FileError::Io(e));
        }
        buf[valid..].fill(0);
        mem.write_bytes(frame.start(), &buf);
        let mut s = self.state.lock();
        if let Some(p) = s.pages.get(&index) {
            // Read twice (the file was detached and reopened meanwhile, or two readers): keep
            // the first.
            let kept = p.frame;
            drop(s);
            let _ = alloc.free_frame(frame);
            return Ok(kept);
        }
        if s.size == 0 {
            // Detached while it was read: the file this page belonged to is gone.
            give_back_charge(&mut s);
            drop(s);
            let _ = alloc.free_frame(frame);
            return Err(FileError::BeyondEnd);
        }
        CacheStats::add(&self.stats.misses, 1);
        CacheStats::add(&self.stats.pages, 1);
        s.pages.insert(
            index,
            CachedPage {
                frame,
                dirty: false,
                writers: 0,
                exec_ready: false,
                generation: 0,
                fresh: true,
            },
        );
        Ok(frame)
    }

    /// The frame holding page `index`, read from the file on a miss: [`FileObject::lookup`],
    /// then [`FileObject::load`] if needed (for callers that may wait for the device).
    pub fn page<M: PhysMem, A: FrameAllocator>(
        &self,
        index: u32,
        exec: bool,
        mem: &mut M,
        alloc: &mut A,
    ) -> Result<Frame, FileError> {
        loop {
            match self.lookup(index, exec, mem) {
                Lookup::Hit(frame) => return Ok(frame),
                Lookup::BeyondEnd => return Err(FileError::BeyondEnd),
                Lookup::Miss => {
                    self.load(index, mem, alloc)?;
                }
            }
        }
    }

    /// A writable mapping of cached page `index` was made: the page is dirty from now on (see
    /// the module documentation).
    pub fn note_writer(&self, index: u32) {
        let mut s = self.state.lock();
        if let Some(p) = s.pages.get_mut(&index) {
            if !p.dirty {
                p.dirty = true;
                CacheStats::add(&self.stats.dirty, 1);
            }
            p.writers = p.writers.saturating_add(1);
            p.exec_ready = false;
            p.generation = p.generation.wrapping_add(1);
        }
    }

    /// A writable mapping of page `index` was removed or write-protected.
    pub fn writer_gone(&self, index: u32) {
        if let Some(p) = self.state.lock().pages.get_mut(&index) {
            p.writers = p.writers.saturating_sub(1);
        }
    }

    /// Writes the dirty cached pages of `pages` back to the file (only the bytes inside the
    /// file: a mapping never makes the file longer). A page without writable mappings becomes
    /// clean. Goes on after an error and returns the first; a page that failed stays dirty.
    /// Returns the number of pages written.
    pub fn write_back<M: PhysMem>(&self, pages: Range<u32>, mem: &M) -> Result<u32, IoError> {
        let dirty: alloc::vec::Vec<u32> = {
            let s = self.state.lock();
            s.pages
                .range(pages)
                .filter(|(_, p)| p.dirty)
                .map(|(&i, _)| i)
                .collect()
        };
        let mut written = 0;
        let mut result = Ok(());
        let mut buf = vec![0u8; PAGE_SIZE as usize];
        for index in dirty {
            // The page's bytes copied with the object locked, written without the lock (the
            // source may sleep on the device).
            let (valid, generation) = {
                let s = self.state.lock();
                let Some(p) = s.pages.get(&index).filter(|p| p.dirty) else {
                    continue;
                };
                let valid = valid_bytes(s.size, index);
                mem.read_bytes(p.frame.start(), &mut buf[..valid]);
                (valid, p.generation)
            };
            match self.source.write_page(index, &buf[..valid]) {
                Ok(()) => {
                    written += 1;
                    CacheStats::add(&self.stats.writebacks, 1);
                    let mut s = self.state.lock();
                    if let Some(p) = s.pages.get_mut(&index) {
                        if p.dirty && p.writers == 0 && p.generation == generation {
                            p.dirty = false;
                            CacheStats::sub(&self.stats.dirty, 1);
                        }
                    }
                }
                Err(e) => {
                    CacheStats::add(&self.stats.write_errors, 1);
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        result.map(|()| written)
    }

    /// Every dirty page written back; see [`FileObject::write_back`].
    pub fn write_back_all<M: PhysMem>(&self, mem: &M) -> Result<u32, IoError> {
        self.write_back(0..u32::MAX, mem)
    }

    /// Gives up to `want` clean cached pages that no page table maps back to `alloc` (a dirty
    /// page must be written back first). Returns how many went. Does no I/O.
    pub fn evict<M: PhysMem, A: FrameAllocator>(
        &self,
        want: u32,
        refs: &FrameRefs,
        _mem: &M,
        alloc: &mut A,
    ) -> u32 {
        let mut s = self.state.lock();
        let mut victims = alloc::vec::Vec::new();
        for (&i, p) in s.pages.iter_mut() {
            if victims.len() >= want as usize {
                break;
            }
            if p.dirty || p.writers != 0 || refs.count(p.frame) != 1 {
                continue;
            }
            if p.fresh {
                // Just read for a lookup that has not come back yet: kept this once (a second
                // chance, so that a page whose reader never came back does not stay for good).
                p.fresh = false;
                continue;
            }
            victims.push(i);
        }
        for &index in &victims {
            if let Some(p) = s.pages.remove(&index) {
                // Not mapped anywhere (one owner, the object), so nothing can reach the frame.
                let _ = alloc.free_frame(p.frame);
                CacheStats::sub(&self.stats.pages, 1);
                CacheStats::add(&self.stats.evictions, 1);
            }
        }
        let cost = s.pages.len() as u32 * PAGE_ENTRY_COST;
        let _ = s.charge.resize(cost);
        victims.len() as u32
    }

    /// Whether some cached page is dirty and no mapping writes to it: what a flush would write
    /// back and leave clean.
    pub fn has_settled_dirt(&self) -> bool {
        self.state
            .lock()
            .pages
            .values()
            .any(|p| p.dirty && p.writers == 0)
    }

    /// The file was replaced or removed: the object lets go of every page and reads as an
    /// empty file from now on (an access to its mappings is past the end). A page still mapped
    /// stays with its mappings (the last one gives it back); dirty data is dropped, as the file
    /// it belonged to is gone.
    pub fn detach<A: FrameAllocator>(&self, refs: &mut FrameRefs, alloc: &mut A) {
        let mut s = self.state.lock();
        s.size = 0;
        for (_, p) in core::mem::take(&mut s.pages) {
            if p.dirty {
                CacheStats::sub(&self.stats.dirty, 1);
            }
            CacheStats::sub(&self.stats.pages, 1);
            if refs.release(p.frame) {
                let _ = alloc.free_frame(p.frame);
            }
        }
        let _ = s.charge.resize(0);
    }

    /// Copies up to `buf.len()` bytes of the file from byte `offset` into `buf` from cached pages
    /// only; returns how many (fewer at the end of the file), or the first page that is not
    /// cached (nothing is read then).
    pub fn read_cached<M: PhysMem>(
        &self,
        offset: u32,
        buf: &mut [u8],
        mem: &mut M,
    ) -> Result<usize, u32> {
        let size = self.size();
        let end = u64::from(offset) + buf.len() as u64;
        let end = end.min(u64::from(size.max(offset))) as u32;
        let mut index = offset / PAGE_SIZE;
        while index * PAGE_SIZE < end {
            if self.cached_frame(index).is_none() {
                return Err(index);
            }
            index += 1;
        }
        let mut done = 0;
        let mut at = offset;
        while at < end {
            let Lookup::Hit(frame) = self.lookup(at / PAGE_SIZE, false, mem) else {
                return Err(at / PAGE_SIZE);
            };
            let in_page = at % PAGE_SIZE;
            let n = (PAGE_SIZE - in_page).min(end - at) as usize;
            mem.read_bytes(
                PhysAddr::new(frame.start().as_u32() + in_page),
                &mut buf[done..done + n],
            );
            done += n;
            at += n as u32;
        }
        Ok(done)
    }

    /// Copies up to `buf.len()` bytes of the file from byte `offset` into `buf` through the
    /// cache; returns how many (fewer at the end of the file).
    pub fn read<M: PhysMem, A: FrameAllocator>(
        &self,
        offset: u32,
        buf: &mut [u8],
        mem: &mut M,
        alloc: &mut A,
    ) -> Result<usize, FileError> {
        let size = self.size();
        let mut done = 0;
        let mut at = offset;
        while done < buf.len() && at < size {
            let frame = self.page(at / PAGE_SIZE, false, mem, alloc)?;
            let in_page = (at % PAGE_SIZE) as usize;
            let n = (PAGE_SIZE as usize - in_page)
                .min(buf.len() - done)
                .min((size - at) as usize);
            mem.read_bytes(
                PhysAddr::new(frame.start().as_u32() + in_page as u32),
                &mut buf[done..done + n],
            );
            done += n;
            at += n as u32;
        }
        Ok(done)
    }
}

/// Heap bytes of a file object of the page cache (its record behind an `Arc`).
pub fn object_cost() -> u32 {
    kmem::object_cost::<(usize, usize, FileObject)>()
}
