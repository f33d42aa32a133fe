//! The page cache: the [`FileObject`] of every file whose pages are in memory, by path.
//!
//! Opening a file that is cached costs a lookup and no I/O: starting a program a second time
//! reads nothing from the card. An object stays here while it has cached pages, after its last
//! mapping went (that is what makes it a cache); [`PageCache::shrink`] gives the pages nobody
//! maps back when memory runs short, and drops objects left without pages or mappings.
//!
//! Keys are canonical paths ([`canonical_path`]): the kernel is the only writer of its file
//! system, and every change to a file's bytes outside the cache goes through
//! [`PageCache::invalidate`], so a path names the same bytes for as long as it is cached.

use super::file_object::{CacheStats, FileObject, IoError};
use super::frame::FrameAllocator;
use super::phys::PhysMem;
use super::uvm::FrameRefs;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// `path` with empty and `.` components dropped, `..` applied, lower case (FAT names are not
/// case-sensitive), `/`-separated and absolute: `/BIN//./x/../Hello` is `/bin/hello`.
pub fn canonical_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for c in parts {
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    out.make_ascii_lowercase();
    out
}

/// The cached files, by canonical path.
pub struct PageCache {
    files: BTreeMap<String, Arc<FileObject>>,
    stats: &'static CacheStats,
}

impl PageCache {
    /// An empty cache counting into `stats`.
    pub const fn new(stats: &'static CacheStats) -> Self {
        Self {
            files: BTreeMap::new(),
            stats,
        }
    }

    /// The counters.
    pub fn stats(&self) -> &'static CacheStats {
        self.stats
    }

    /// Files with an object here.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// The object of the file at `key` (a canonical path), if it is here.
    pub fn lookup(&self, key: &str) -> Option<Arc<FileObject>> {
        self.files.get(key).cloned()
    }

    /// The object of the file at `key`, made by `make` (which finds the file and its size) when
    /// it is not here yet.
    pub fn open<E>(
        &mut self,
        key: &str,
        make: impl FnOnce() -> Result<Arc<FileObject>, E>,
    ) -> Result<Arc<FileObject>, E> {
        if let Some(o) = self.files.get(key) {
            return Ok(o.clone());
        }
        let object = make()?;
        self.files.insert(String::from(key), object.clone());
        Ok(object)
    }

    /// Adds `object` as the file at `key`, unless one is there already: returns the one that
    /// is (for callers that made an object without holding the cache, while reading the card).
    pub fn insert(&mut self, key: &str, object: Arc<FileObject>) -> Arc<FileObject> {
        self.files
            .entry(String::from(key))
            .or_insert(object)
            .clone()
    }

    /// Every cached file's object (for work done without holding the cache).
    pub fn objects(&self) -> Vec<Arc<FileObject>> {
        self.files.values().cloned().collect()
    }

    /// The file at `key` changed outside the cache (rewritten, removed): its object lets go of
    /// its pages (see [`FileObject::detach`]) and leaves the cache; the next open reads the
    /// file anew.
    pub fn invalidate<A: FrameAllocator>(
        &mut self,
        key: &str,
        refs: &mut FrameRefs,
        alloc: &mut A,
    ) {
        if let Some(o) = self.files.remove(key) {
            o.detach(refs, alloc);
        }
    }

    /// Writes every dirty page back; returns the pages written or the first error (after
    /// trying every file).
    pub fn sync<M: PhysMem>(&self, mem: &M) -> Result<u32, IoError> {
        let mut result = Ok(0);
        for o in self.files.values() {
            match (o.write_back_all(mem), &mut result) {
                (Ok(n), Ok(total)) => *total += n,
                (Err(e), Ok(_)) => result = Err(e),
                _ => {}
            }
        }
        result
    }

    /// Gives up to `want` pages that no page table maps back to `alloc`, and drops the objects
    /// left with no page and no mapping. Returns how many pages went.
    pub fn shrink<M: PhysMem, A: FrameAllocator>(
        &mut self,
        want: u32,
        refs: &FrameRefs,
        mem: &M,
        alloc: &mut A,
    ) -> u32 {
        let mut gone = 0;
        for o in self.files.values() {
            if gone >= want {
                break;
            }
            gone += o.evict(want - gone, refs, mem, alloc);
        }
        // An object only the cache holds, with nothing cached, is worth nothing.
        self.files
            .retain(|_, o| Arc::strong_count(o) > 1 || o.resident() > 0);
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        assert_eq!(canonical_path("/BIN//./x/../Hello"), "/bin/hello");
        assert_eq!(canonical_path("bin/hello"), "/bin/hello");
        assert_eq!(canonical_path("/"), "/");
        assert_eq!(canonical_path(""), "/");
        assert_eq!(canonical_path("/../.."), "/");
        assert_eq!(canonical_path("/a/b/"), "/a/b");
    }
}
