//! A per-CPU cache of free frames in front of the PMM.
//!
//! With four cores taking and giving back frames (page faults, fork, exit), one lock around the
//! PMM would be a point every core meets, and its cache line would move between cores on every
//! allocation. Each CPU therefore keeps a small stack of free frames of its own, taken without
//! touching the PMM: it refills [`BATCH`] frames at once when it runs dry and gives [`BATCH`]
//! back when it overflows, so the PMM's lock is taken once per [`BATCH`] frames at most. This is
//! the same idea as Linux's per-CPU page lists.
//!
//! The frames in a cache are free memory: they are counted as free and can be taken back
//! ([`FrameCache::drain`]) when another CPU finds the PMM empty. In the PMM they are marked
//! allocated, so a frame is either in the PMM's free map, in one cache, or in use.
//!
//! Double frees: a frame given back while it is in any CPU's cache is refused
//! ([`PmmError::DoubleFree`]) through one bit per frame that all the caches share
//! ([`CachedSet`]), as the PMM refuses a frame that is free in its map. Frames leave a cache
//! most recently freed first (their lines may still be in the CPU's data cache).
//!
//! Portable: the kernel keeps one cache per core behind a lock of its own (uncontended: only
//! that core takes it, except to drain it when memory is short), and the host tests run four
//! of them against a model.

use super::frame::{FrameAllocator, PmmError};
use super::Frame;
use core::sync::atomic::{AtomicU32, Ordering};

/// Frames one cache holds at most.
pub const CAPACITY: usize = 64;
/// Frames moved between a cache and the PMM at once.
pub const BATCH: usize = CAPACITY / 2;

/// One bit per frame: set while the frame is in some CPU's cache. Shared by all the caches, so
/// a frame given back twice is refused whichever CPUs it is given back on (one atomic OR or AND
/// per operation, no lock). Covers frames `0..WORDS * 32`; a frame beyond is not checked.
pub struct CachedSet<const WORDS: usize> {
    words: [AtomicU32; WORDS],
}

impl<const WORDS: usize> Default for CachedSet<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const WORDS: usize> CachedSet<WORDS> {
    /// No frame cached.
    pub const fn new() -> Self {
        Self {
            words: [const { AtomicU32::new(0) }; WORDS],
        }
    }

    /// Marks `frame` cached; `DoubleFree` if it already is.
    fn mark(&self, frame: Frame) -> Result<(), PmmError> {
        let n = frame.number() as usize;
        let Some(word) = self.words.get(n / 32) else {
            return Ok(());
        };
        let bit = 1 << (n % 32);
        if word.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            return Err(PmmError::DoubleFree);
        }
        Ok(())
    }

    fn unmark(&self, frame: Frame) {
        let n = frame.number() as usize;
        if let Some(word) = self.words.get(n / 32) {
            word.fetch_and(!(1 << (n % 32)), Ordering::Relaxed);
        }
    }
}

/// One CPU's stack of free frames (by number).
#[derive(Debug)]
pub struct FrameCache {
    frames: [u32; CAPACITY],
    len: usize,
}

impl Default for FrameCache {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameCache {
    /// An empty cache.
    pub const fn new() -> Self {
        Self {
            frames: [0; CAPACITY],
            len: 0,
        }
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether it holds [`CAPACITY`] frames (the next [`FrameCache::put`] needs a drain first).
    pub fn is_full(&self) -> bool {
        self.len == CAPACITY
    }

    /// The most recently freed frame (its lines may still be in this CPU's data cache).
    pub fn take<const W: usize>(&mut self, marks: &CachedSet<W>) -> Option<Frame> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        let f = Frame::from_number(self.frames[self.len]);
        marks.unmark(f);
        Some(f)
    }

    /// Takes up to `take.min(BATCH)` frames from `pmm` (the kernel keeps a reserve there, so it
    /// says how many may go); returns how many came.
    pub fn refill<const W: usize>(
        &mut self,
        pmm: &mut impl FrameAllocator,
        take: u32,
        marks: &CachedSet<W>,
    ) -> usize {
        let want = (take as usize).min(BATCH).min(CAPACITY - self.len);
        let mut got = 0;
        while got < want {
            let Ok(f) = pmm.alloc_frame() else { break };
            // Fresh from the PMM: in no cache.
            let _ = marks.mark(f);
            self.frames[self.len] = f.number();
            self.len += 1;
            got += 1;
        }
        got
    }

    /// Keeps `frame` for the next allocation. Refused if it is in a cache already
    /// (`DoubleFree`: it was freed twice) or this cache is full (`OutOfMemory`: drain first).
    pub fn put<const W: usize>(
        &mut self,
        frame: Frame,
        marks: &CachedSet<W>,
    ) -> Result<(), PmmError> {
        if self.is_full() {
            return Err(PmmError::OutOfMemory);
        }
        marks.mark(frame)?;
        self.frames[self.len] = frame.number();
        self.len += 1;
        Ok(())
    }

    /// Gives up to `count` frames back to `pmm`; returns how many went. A frame the PMM refuses
    /// (it has it free: freed twice behind the caches' back) stops the drain, out of both.
    pub fn drain<const W: usize>(
        &mut self,
        pmm: &mut impl FrameAllocator,
        count: usize,
        marks: &CachedSet<W>,
    ) -> Result<usize, PmmError> {
        let mut done = 0;
        while done < count {
            let Some(f) = self.take(marks) else { break };
            done += 1;
            pmm.free_frame(f)?;
        }
        Ok(done)
    }

    /// A frame: [`FrameCache::take`], else a [`FrameCache::refill`] (at most `take`) and one of
    /// them; none is `OutOfMemory`. The policy the kernel follows, in one call.
    pub fn alloc<const W: usize>(
        &mut self,
        pmm: &mut impl FrameAllocator,
        take: u32,
        marks: &CachedSet<W>,
    ) -> Result<Frame, PmmError> {
        if let Some(f) = self.take(marks) {
            return Ok(f);
        }
        self.refill(pmm, take, marks);
        self.take(marks).ok_or(PmmError::OutOfMemory)
    }

    /// Keeps `frame`; when full, first gives [`BATCH`] frames back to `pmm`. The policy the
    /// kernel follows, in one call.
    pub fn free<const W: usize>(
        &mut self,
        frame: Frame,
        pmm: &mut impl FrameAllocator,
        marks: &CachedSet<W>,
    ) -> Result<(), PmmError> {
        if self.is_full() {
            self.drain(pmm, BATCH, marks)?;
        }
        self.put(frame, marks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::pmm::Pmm;
    use std::collections::BTreeSet;
    use std::vec;

    fn pmm(frames: u32) -> (Vec<u32>, u32) {
        (vec![0u32; Pmm::storage_words(frames)], frames)
    }

    #[test]
    fn refills_and_drains_in_batches() {
        let (mut bits, n) = pmm(1024);
        let mut p = Pmm::new(&mut bits, n).unwrap();
        let free = p.free_frames();
        let m = CachedSet::<64>::new();
        let mut c = FrameCache::new();
        let f = c.alloc(&mut p, u32::MAX, &m).unwrap();
        assert_eq!(c.len(), BATCH - 1);
        assert_eq!(p.free_frames(), free - BATCH as u32);
        c.free(f, &mut p, &m).unwrap();
        assert_eq!(c.free(f, &mut p, &m), Err(PmmError::DoubleFree));
        assert_eq!(c.drain(&mut p, usize::MAX, &m), Ok(BATCH));
        assert_eq!(p.free_frames(), free);
        assert!(c.is_empty());
    }

    #[test]
    fn a_full_cache_gives_a_batch_back_first() {
        let (mut bits, n) = pmm(1024);
        let mut p = Pmm::new(&mut bits, n).unwrap();
        let m = CachedSet::<64>::new();
        let mut c = FrameCache::new();
        let taken: Vec<Frame> = (0..CAPACITY + 1)
            .map(|_| p.alloc_frame().unwrap())
            .collect();
        for &f in &taken {
            c.free(f, &mut p, &m).unwrap();
        }
        assert_eq!(c.len(), CAPACITY - BATCH + 1);
    }

    #[test]
    fn a_frame_freed_twice_is_refused_on_any_cpu() {
        let (mut bits, n) = pmm(1024);
        let mut p = Pmm::new(&mut bits, n).unwrap();
        let m = CachedSet::<64>::new();
        let (mut a, mut b) = (FrameCache::new(), FrameCache::new());
        let f = a.alloc(&mut p, u32::MAX, &m).unwrap();
        a.free(f, &mut p, &m).unwrap();
        assert_eq!(b.free(f, &mut p, &m), Err(PmmError::DoubleFree));
        assert_eq!(a.free(f, &mut p, &m), Err(PmmError::DoubleFree));
        // Taken again, it may be freed again.
        let g = b.alloc(&mut p, u32::MAX, &m).unwrap();
        b.free(g, &mut p, &m).unwrap();
    }

    #[test]
    fn the_reserve_limits_a_refill() {
        let (mut bits, n) = pmm(1024);
        let mut p = Pmm::new(&mut bits, n).unwrap();
        let m = CachedSet::<64>::new();
        let mut c = FrameCache::new();
        assert_eq!(c.alloc(&mut p, 0, &m), Err(PmmError::OutOfMemory));
        c.alloc(&mut p, 3, &m).unwrap();
        assert_eq!(c.len(), 2);
    }

    proptest::proptest! {
        /// Four CPUs' caches over one PMM, random allocations and frees on random CPUs, a
        /// drain now and then (another CPU short of memory): no frame is ever handed out twice,
        /// every frame is in exactly one place (PMM free map, a cache, or held), and after
        /// everything is freed and drained the PMM has every frame back.
        #[test]
        fn four_cpus_agree_with_the_model(
            ops in proptest::collection::vec((0usize..4, 0u8..10), 1..3000),
        ) {
            const CPUS: usize = 4;
            let (mut bits, n) = pmm(300);
            let mut p = Pmm::new(&mut bits, n).unwrap();
            let total = p.free_frames();
            let marks = CachedSet::<16>::new();
            let mut caches: Vec<FrameCache> = (0..CPUS).map(|_| FrameCache::new()).collect();
            let mut held: Vec<Frame> = Vec::new();
            let mut out: BTreeSet<Frame> = BTreeSet::new();
            for (cpu, op) in ops {
                match op {
                    0..=4 => {
                        let take = p.free_frames();
                        match caches[cpu].alloc(&mut p, take, &marks) {
                            Ok(f) => {
                                proptest::prop_assert!(out.insert(f), "{f:?} handed out twice");
                                held.push(f);
                            }
                            Err(e) => {
                                proptest::prop_assert_eq!(e, PmmError::OutOfMemory);
                                proptest::prop_assert!(caches[cpu].is_empty());
                                proptest::prop_assert_eq!(p.free_frames(), 0);
                            }
                        }
                    }
                    5..=8 => {
                        if let Some(f) = held.pop() {
                            out.remove(&f);
                            caches[cpu].free(f, &mut p, &marks).unwrap();
                        }
                    }
                    _ => {
                        caches[cpu].drain(&mut p, usize::MAX, &marks).unwrap();
                    }
                }
                let cached: usize = caches.iter().map(FrameCache::len).sum();
                proptest::prop_assert_eq!(
                    p.free_frames() as usize + cached + held.len(),
                    total as usize
                );
            }
            for f in held.drain(..) {
                caches[0].free(f, &mut p, &marks).unwrap();
            }
            for c in &mut caches {
                c.drain(&mut p, usize::MAX, &marks).unwrap();
            }
            proptest::prop_assert_eq!(p.free_frames(), total);
        }
    }
}
