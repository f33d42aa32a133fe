//! The page cache of the card's files (`mm::page_cache`) as the kernel keeps it: one cache for
//! the system, opened by path for programs and file mappings, written back by `sync`, shrunk when
//! memory runs short.
//!
//! Lock order: the process table (which holds the frame owner counts), then [`PAGE_CACHE`], then
//! a file object's own lock. A fault resolves file pages with the table locked and takes only
//! the object's lock.

use super::{KernelFrames, KMEM, TABLE};
use crate::arch::arm::direct_map::DirectMap;
use crate::arch::arm::irq::IrqSafeMutex;
use crate::bsp::raspi2::emmc::EMMC;
use crate::fs::page_source::FatPageSource;
use crate::fs::{self, FsError};
use crate::mm::file_object::{CacheStats, FileObject, IoError};
use crate::mm::page_cache::{canonical_path, PageCache};
use crate::mm::FrameRefs;
use alloc::boxed::Box;
use alloc::sync::Arc;

/// What the page cache has done since boot.
pub static CACHE_STATS: CacheStats = CacheStats::new();

/// The cached files.
pub static PAGE_CACHE: IrqSafeMutex<PageCache> = IrqSafeMutex::new(PageCache::new(&CACHE_STATS));

fn direct_map() -> DirectMap {
    // SAFETY: the direct map is live once processes exist, and the cache only hands it frames
    // it owns.
    unsafe { DirectMap::new() }
}

/// The file object of the file at `path` on the card: from the cache, or made from the file's
/// length (one look at the card). The pages of its entries are charged to the user budget.
pub fn open(path: &str) -> Result<Arc<FileObject>, FsError> {
    let key = canonical_path(path);
    let mut cache = PAGE_CACHE.lock();
    cache.open(&key, || {
        let len = fs::file_len(&EMMC, &key)?;
        let source = FatPageSource::new(&EMMC, key.clone());
        Ok(FileObject::new(Box::new(source), len, &CACHE_STATS, &KMEM))
    })
}

/// Writes every dirty cached page back to the card; the pages written, or the first error.
pub fn sync() -> Result<u32, IoError> {
    PAGE_CACHE.lock().sync(&direct_map())
}

/// Gives up to `want` cached pages no process maps back to the PMM, with the table's owner
/// counts `refs` (the caller holds the table). Returns how many went.
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

/// Removes the file at `path` from the card, after dropping it from the cache.
pub fn remove_file(path: &str) -> Result<(), FsError> {
    forget(path);
    fs::remove_file(&EMMC, &canonical_path(path))
}

/// Creates or replaces the file at `path` with `data`. The file's cached pages are dropped
/// first (mappings of the old file keep what they map and read past its end from now on).
pub fn write_file(path: &str, data: &[u8]) -> Result<(), FsError> {
    forget(path);
    fs::write_file(&EMMC, &canonical_path(path), data)
}
