//! The physical memory manager: a bitmap of 4 KiB frames with two one-bit-per-word levels.
//!
//! # Data structure
//!
//! ```text
//!  summary  (1 bit per bitmap word: "this word has a free frame")
//!  +--------------------------------+----
//!  |1 0 1 1 ...                     | ...        256 words for 1 GiB (1 KiB)
//!  +--------------------------------+----
//!   |   |
//!   v   v
//!  bitmap   (1 bit per frame: 1 = free, 0 = allocated or reserved)
//!  +--------+--------+--------+----
//!  |word 0  |word 1  |word 2  | ...               8192 words for 1 GiB (32 KiB)
//!  +--------+--------+--------+----
//!   frames    frames   frames
//!   0..32     32..64   64..96
//!
//!  full     (1 bit per bitmap word: "all 32 frames of this word are free"), 1 KiB for 1 GiB
//! ```
//!
//! A set bit means *free*, so "does this word hold a free frame" is `word != 0` and "which one" is
//! `word.trailing_zeros()`. All three live in one `&mut [u32]` that the caller hands over (on the
//! target: frames right after the kernel image, reached through the direct map; on the host: a
//! `Vec`); [`Pmm::storage_words`] says how long it must be. The module allocates nothing itself and
//! contains no `unsafe`.
//!
//! - **Single frames** are found next-fit: a hint remembers the bitmap word of the last allocation;
//!   the search looks at the summary from there on (32 bitmap words per summary word, skipping
//!   full ones with one `trailing_zeros`), wrapping to the start once. It never scans from frame 0.
//! - **Contiguous runs** are found first-fit from the bottom (so low memory with a `limit`, e.g.
//!   for DMA, is used first): jump to the next free frame through the summary, round up to the
//!   alignment, then test the candidate run a whole word at a time (`word & mask == mask`). When
//!   the run is broken, the search jumps past the *last* allocated frame of the candidate (found
//!   with `leading_zeros`), never bit by bit. Runs of whole words (count and alignment multiples
//!   of 32 frames, such as 1 MiB blocks) are searched in the `full` level instead, one bit per
//!   word of 32 frames.
//! - **Reserved frames** (firmware area, the kernel L1 table, the kernel image, this bitmap) are
//!   clear in the bitmap like allocated ones; what tells them apart is a small sorted array of
//!   disjoint, non-adjacent frame ranges inside the struct ([`MAX_RESERVED_RANGES`] entries; new
//!   ranges merge with ones they overlap or touch, so the usual boot reservations, which sit end to
//!   end from frame 0, take a single entry). Only a frame whose bit is clear is looked up there, so
//!   a normal free costs one short scan of a few entries. No heap, and no second bitmap.
//! - **Counts** of free and reserved frames are kept as the bits change, so they cost nothing to
//!   read.
//!
//! Every operation checks everything first and only then changes state: a refused call leaves the
//! manager exactly as it was.

use super::addr::{Frame, PhysAddr, PAGE_SHIFT};
use super::frame::{FrameAllocator, PmmError};

/// Capacity of the reserved-range table.
pub const MAX_RESERVED_RANGES: usize = 16;

/// Most frames one manager can describe: the whole 32-bit physical address space.
pub const MAX_FRAMES: u32 = 1 << (32 - PAGE_SHIFT);

const BITS: u32 = u32::BITS;

/// Mask of the bits `lo..hi` of one word (`lo < hi <= 32`).
#[inline]
fn bit_range(lo: u32, hi: u32) -> u32 {
    debug_assert!(lo < hi && hi <= BITS);
    (u32::MAX >> (BITS - (hi - lo))) << lo
}

/// The words covering frames `start..end` (non-empty), each with the mask of the frames it holds.
#[inline]
fn chunks(start: u32, end: u32) -> impl DoubleEndedIterator<Item = (usize, u32)> {
    debug_assert!(start < end);
    let first = start / BITS;
    let last = (end - 1) / BITS;
    (first..=last).map(move |w| {
        let lo = if w == first { start % BITS } else { 0 };
        let hi = if w == last {
            (end - 1) % BITS + 1
        } else {
            BITS
        };
        (w as usize, bit_range(lo, hi))
    })
}

/// The first set bit at or after bit `from` of a one-bit-per-word level.
#[inline]
fn next_set(level: &[u32], from: usize) -> Option<usize> {
    let b = BITS as usize;
    let mut i = from / b;
    let mut bits = *level.get(i)? & (u32::MAX << (from % b));
    loop {
        if bits != 0 {
            return Some(i * b + bits.trailing_zeros() as usize);
        }
        i += 1;
        bits = *level.get(i)?;
    }
}

/// The last clear bit of bits `lo..hi` (non-empty) of a level, if any.
#[inline]
fn last_clear(level: &[u32], lo: usize, hi: usize) -> Option<usize> {
    let b = BITS as usize;
    if lo / b == (hi - 1) / b {
        // The common case: one word of the level.
        let m = bit_range((lo % b) as u32, ((hi - 1) % b + 1) as u32);
        let missing = !level[lo / b] & m;
        return (missing != 0)
            .then(|| (lo / b) * b + (BITS - 1 - missing.leading_zeros()) as usize);
    }
    chunks(lo as u32, hi as u32).rev().find_map(|(i, m)| {
        let missing = !level[i] & m;
        (missing != 0).then(|| i * BITS as usize + (BITS - 1 - missing.leading_zeros()) as usize)
    })
}

/// Sets (`on`) or clears bits `lo..hi` (non-empty) of a level.
#[inline]
fn set_range(level: &mut [u32], lo: usize, hi: usize, on: bool) {
    let b = BITS as usize;
    if lo / b == (hi - 1) / b {
        // The common case: one word (runs of up to 32 bitmap words, 128 MiB).
        let m = bit_range((lo % b) as u32, ((hi - 1) % b + 1) as u32);
        if on {
            level[lo / b] |= m;
        } else {
            level[lo / b] &= !m;
        }
        return;
    }
    for (i, m) in chunks(lo as u32, hi as u32) {
        if on {
            level[i] |= m;
        } else {
            level[i] &= !m;
        }
    }
}

/// A run of frames `[start, end)` split at word boundaries: the masks of its first and last
/// words (the same word, with `head == tail`, for a run inside one word) and whole words between.
struct Span {
    first: usize,
    last: usize,
    head: u32,
    tail: u32,
}

impl Span {
    #[inline]
    fn new(start: u32, end: u32) -> Self {
        debug_assert!(start < end);
        let first = (start / BITS) as usize;
        let last = ((end - 1) / BITS) as usize;
        let mut head = u32::MAX << (start % BITS);
        let mut tail = u32::MAX >> (BITS - 1 - (end - 1) % BITS);
        if first == last {
            head &= tail;
            tail = head;
        }
        Self {
            first,
            last,
            head,
            tail,
        }
    }
}

/// A physical memory manager over frames `0..total_frames()`, keeping its bitmap in borrowed
/// storage. See the [module documentation](self) for the layout.
pub struct Pmm<'a> {
    /// One bit per frame, 1 = free.
    bitmap: &'a mut [u32],
    /// One bit per bitmap word, 1 = that word is not zero.
    summary: &'a mut [u32],
    /// One bit per bitmap word, 1 = that word is `u32::MAX` (all 32 frames free): runs of whole
    /// words are searched here, one bit per word.
    full: &'a mut [u32],
    frame_count: u32,
    free: u32,
    reserved: u32,
    /// Bitmap word where the next single-frame search starts.
    hint: usize,
    /// Reserved frame ranges `[start, end)`, sorted, disjoint and not touching; only the first
    /// `range_count` are meaningful.
    ranges: [(u32, u32); MAX_RESERVED_RANGES],
    range_count: usize,
}

impl<'a> Pmm<'a> {
    /// How many `u32` words of storage [`Pmm::new`] needs for `frame_count` frames (bitmap and
    /// the two one-bit-per-word levels). 1 GiB (262144 frames) needs 8704 words, 34 KiB.
    pub const fn storage_words(frame_count: u32) -> usize {
        let words = frame_count.div_ceil(BITS);
        (words + 2 * words.div_ceil(BITS)) as usize
    }

    /// A manager for frames `0..frame_count`, all free, whose bitmap lives in `storage` (of which
    /// the first [`Pmm::storage_words`] words are used and overwritten).
    ///
    /// The caller then reserves what is not free to hand out, the storage itself included.
    pub fn new(storage: &'a mut [u32], frame_count: u32) -> Result<Self, PmmError> {
        if frame_count == 0 {
            return Err(PmmError::ZeroCount);
        }
        if frame_count > MAX_FRAMES {
            return Err(PmmError::OutOfRange);
        }
        let words = frame_count.div_ceil(BITS) as usize;
        if storage.len() < Self::storage_words(frame_count) {
            return Err(PmmError::BitmapTooSmall);
        }
        let (bitmap, rest) = storage.split_at_mut(words);
        let (summary, rest) = rest.split_at_mut(words.div_ceil(BITS as usize));
        let full = &mut rest[..summary.len()];

        bitmap.fill(u32::MAX);
        let tail = frame_count % BITS;
        if tail != 0 {
            // Bits past the last frame stay clear forever: never free, never handed out.
            bitmap[words - 1] = bit_range(0, tail);
        }
        summary.fill(u32::MAX);
        let summary_tail = (words as u32) % BITS;
        if summary_tail != 0 {
            let last = summary.len() - 1;
            summary[last] = bit_range(0, summary_tail);
        }
        full.copy_from_slice(summary);
        if tail != 0 {
            // The last word has bits past the last frame: never full.
            full[(words - 1) / BITS as usize] &= !(1 << ((words - 1) % BITS as usize));
        }

        Ok(Self {
            bitmap,
            summary,
            full,
            frame_count,
            free: frame_count,
            reserved: 0,
            hint: 0,
            ranges: [(0, 0); MAX_RESERVED_RANGES],
            range_count: 0,
        })
    }

    /// Whether both one-bit-per-word levels agree with the bitmap (for tests: every operation
    /// keeps them in step).
    pub fn levels_consistent(&self) -> bool {
        let b = BITS as usize;
        self.bitmap.iter().enumerate().all(|(w, &x)| {
            let bit = 1 << (w % b);
            ((self.summary[w / b] & bit != 0) == (x != 0))
                && ((self.full[w / b] & bit != 0) == (x == u32::MAX))
        })
    }

    /// Number of frames managed (free, allocated and reserved).
    pub fn total_frames(&self) -> u32 {
        self.frame_count
    }

    /// Number of free frames.
    pub fn free_frames(&self) -> u32 {
        self.free
    }

    /// Number of reserved frames.
    pub fn reserved_frames(&self) -> u32 {
        self.reserved
    }

    /// Number of frames handed out and not yet returned.
    pub fn allocated_frames(&self) -> u32 {
        self.frame_count - self.free - self.reserved
    }

    /// Whether `frame` is managed and free.
    pub fn is_free(&self, frame: Frame) -> bool {
        let n = frame.number();
        n < self.frame_count && self.bitmap[(n / BITS) as usize] & (1 << (n % BITS)) != 0
    }

    /// Whether `frame` is managed and reserved.
    pub fn is_reserved(&self, frame: Frame) -> bool {
        let n = frame.number();
        n < self.frame_count && self.in_reserved(n)
    }

    /// The reserved ranges, in ascending order, as (first frame, number of frames).
    pub fn reserved_ranges(&self) -> impl Iterator<Item = (Frame, u32)> + '_ {
        self.ranges[..self.range_count]
            .iter()
            .map(|&(s, e)| (Frame::from_number(s), e - s))
    }

    /// Allocates one frame.
    #[inline]
    pub fn alloc_frame(&mut self) -> Result<Frame, PmmError> {
        let mut w = self.hint;
        let mut word = self.bitmap[w];
        if word == 0 {
            if self.free == 0 {
                return Err(PmmError::OutOfMemory);
            }
            w = self
                .next_nonempty_word(w)
                .or_else(|| self.next_nonempty_word(0))
                .ok_or(PmmError::OutOfMemory)?;
            word = self.bitmap[w];
            self.hint = w;
        }
        let bit = word.trailing_zeros();
        let value = word & (word - 1);
        self.bitmap[w] = value;
        if word == u32::MAX {
            self.full[w / BITS as usize] &= !(1 << (w % BITS as usize));
        }
        if value == 0 {
            self.summary[w / BITS as usize] &= !(1 << (w % BITS as usize));
        }
        self.free -= 1;
        Ok(Frame::from_number(w as u32 * BITS + bit))
    }

    /// Returns one frame. Refused with `OutOfRange` past the managed memory, `DoubleFree` when it
    /// is already free and `Reserved` when it is reserved.
    #[inline]
    pub fn free_frame(&mut self, frame: Frame) -> Result<(), PmmError> {
        let n = frame.number();
        if n >= self.frame_count {
            return Err(PmmError::OutOfRange);
        }
        let w = (n / BITS) as usize;
        let bit = 1 << (n % BITS);
        let word = self.bitmap[w];
        if word & bit != 0 {
            return Err(PmmError::DoubleFree);
        }
        if self.in_reserved(n) {
            return Err(PmmError::Reserved);
        }
        self.bitmap[w] = word | bit;
        if word == 0 {
            self.summary[w / BITS as usize] |= 1 << (w % BITS as usize);
        }
        if word | bit == u32::MAX {
            self.full[w / BITS as usize] |= 1 << (w % BITS as usize);
        }
        self.free += 1;
        Ok(())
    }

    /// Returns the address of one frame (convenience for callers holding a [`PhysAddr`]);
    /// `Unaligned` unless it is 4 KiB aligned, otherwise as [`Pmm::free_frame`].
    pub fn free_addr(&mut self, addr: PhysAddr) -> Result<(), PmmError> {
        let frame = Frame::from_start(addr).map_err(|_| PmmError::Unaligned)?;
        self.free_frame(frame)
    }

    /// Allocates `count` contiguous frames whose first frame number is a multiple of `align`
    /// frames (a power of two) and which all end at or below `limit` (exclusive; rounded down to a
    /// frame) when given. The lowest such run is taken, except that a request for one frame with
    /// no alignment and no limit is served as [`Pmm::alloc_frame`] (next-fit).
    pub fn alloc_contiguous(
        &mut self,
        count: u32,
        align: u32,
        limit: Option<PhysAddr>,
    ) -> Result<Frame, PmmError> {
        if count == 0 {
            return Err(PmmError::ZeroCount);
        }
        if !align.is_power_of_two() {
            return Err(PmmError::BadAlignment);
        }
        let end = match limit {
            Some(l) => self.frame_count.min(l.as_u32() >> PAGE_SHIFT),
            None => self.frame_count,
        };
        if count > self.free || count > end {
            return Err(PmmError::OutOfMemory);
        }
        if count == 1 && align == 1 && end == self.frame_count {
            return self.alloc_frame();
        }
        if count.is_multiple_of(BITS) && align.is_multiple_of(BITS) {
            return self.alloc_whole_words(count, align, end);
        }
        let mut pos = 0;
        loop {
            let f = self.next_free_from(pos).ok_or(PmmError::OutOfMemory)?;
            let start = match f.checked_add(align - 1) {
                Some(v) => v & !(align - 1),
                None => return Err(PmmError::OutOfMemory),
            };
            let stop = match start.checked_add(count) {
                Some(v) if v <= end => v,
                _ => return Err(PmmError::OutOfMemory),
            };
            match self.last_taken(start, stop) {
                None => {
                    self.clear_bits(start, stop);
                    self.free -= count;
                    return Ok(Frame::from_number(start));
                }
                Some(taken) => pos = taken + 1,
            }
        }
    }

    /// `alloc_contiguous` for runs of whole bitmap words (count and alignment multiples of 32
    /// frames, e.g. 256 frames aligned to 1 MiB), searched in the `full` level, one bit per word:
    /// a candidate (an aligned word index) fits when all its bits are set, and a failed one jumps
    /// past its last clear bit to the next set one. Lowest fit, like the general path.
    fn alloc_whole_words(&mut self, count: u32, align: u32, end: u32) -> Result<Frame, PmmError> {
        let words = (count / BITS) as usize;
        let step = (align / BITS) as usize;
        let end_w = (end / BITS) as usize;
        let mut w = next_set(self.full, 0).ok_or(PmmError::OutOfMemory)?;
        loop {
            // `step` is a power of two: round up with a mask, not a division.
            w = (w + step - 1) & !(step - 1);
            if w + words > end_w {
                return Err(PmmError::OutOfMemory);
            }
            match last_clear(self.full, w, w + words) {
                None => {
                    // A plain loop: runs are a few words, shorter than a memset call is worth.
                    for x in &mut self.bitmap[w..w + words] {
                        *x = 0;
                    }
                    self.mark_words(w, w + words, false);
                    self.free -= count;
                    return Ok(Frame::from_number(w as u32 * BITS));
                }
                Some(k) => w = next_set(self.full, k + 1).ok_or(PmmError::OutOfMemory)?,
            }
        }
    }

    /// Returns `count` contiguous frames starting at `first`. Checks the whole run before changing
    /// anything: `OutOfRange`, `Reserved` if any frame is reserved, `DoubleFree` if any is free.
    pub fn free_contiguous(&mut self, first: Frame, count: u32) -> Result<(), PmmError> {
        let (start, end) = self.checked_run(first, count)?;
        if self.reserved_overlap(start, end) != 0 {
            return Err(PmmError::Reserved);
        }
        if start.is_multiple_of(BITS) && count.is_multiple_of(BITS) {
            // Whole words: no masks.
            let (lo, hi) = ((start / BITS) as usize, (end / BITS) as usize);
            if self.bitmap[lo..hi].iter().any(|&w| w != 0) {
                return Err(PmmError::DoubleFree);
            }
            for x in &mut self.bitmap[lo..hi] {
                *x = u32::MAX;
            }
            self.mark_words(lo, hi, true);
            self.free += count;
            return Ok(());
        }
        if self.any_free(start, end) {
            return Err(PmmError::DoubleFree);
        }
        self.set_bits(start, end);
        self.free += count;
        Ok(())
    }

    /// Reserves `count` frames from `first`: they stop being free and can never be freed.
    ///
    /// Reserving frames that are already reserved is allowed (ranges merge); frames that are
    /// allocated are refused with `InUse`. `TooManyReserved` when the range touches no existing
    /// one and the table is full.
    pub fn reserve(&mut self, first: Frame, count: u32) -> Result<(), PmmError> {
        let (start, end) = self.checked_run(first, count)?;
        let free_in = self.count_free(start, end);
        let reserved_in = self.reserved_overlap(start, end);
        if free_in + reserved_in != count {
            return Err(PmmError::InUse);
        }

        // Ranges that overlap or touch [start, end) form one block of the sorted table.
        let ranges = &self.ranges[..self.range_count];
        let lo_idx = ranges.partition_point(|&(_, e)| e < start);
        let hi_idx = ranges.partition_point(|&(s, _)| s <= end);
        let merged = hi_idx - lo_idx;
        if merged == 0 && self.range_count == MAX_RESERVED_RANGES {
            return Err(PmmError::TooManyReserved);
        }
        let (lo, hi) = if merged == 0 {
            (start, end)
        } else {
            (start.min(ranges[lo_idx].0), end.max(ranges[hi_idx - 1].1))
        };

        // Replace entries lo_idx..hi_idx with the single merged one.
        if merged == 0 {
            self.ranges
                .copy_within(lo_idx..self.range_count, lo_idx + 1);
        } else {
            self.ranges
                .copy_within(hi_idx..self.range_count, lo_idx + 1);
        }
        self.ranges[lo_idx] = (lo, hi);
        self.range_count = self.range_count + 1 - merged;

        self.clear_bits(start, end);
        self.free -= free_in;
        self.reserved += free_in;
        Ok(())
    }

    /// Reserves every frame that overlaps the bytes `start..end` (rounded out to frames), e.g. a
    /// kernel image whose end is not page aligned. `ZeroCount` if the range is empty.
    pub fn reserve_region(&mut self, start: PhysAddr, end: PhysAddr) -> Result<(), PmmError> {
        if end <= start {
            return Err(PmmError::ZeroCount);
        }
        let first = start.as_u32() >> PAGE_SHIFT;
        let last = ((end.as_u32() as u64).div_ceil(1 << PAGE_SHIFT)) as u32;
        if last > self.frame_count {
            return Err(PmmError::OutOfRange);
        }
        self.reserve(Frame::from_number(first), last - first)
    }

    // ---- checks ----------------------------------------------------------------------------

    /// `[start, end)` of a run, or why it is not a valid one.
    fn checked_run(&self, first: Frame, count: u32) -> Result<(u32, u32), PmmError> {
        if count == 0 {
            return Err(PmmError::ZeroCount);
        }
        let start = first.number();
        match start.checked_add(count) {
            Some(end) if end <= self.frame_count => Ok((start, end)),
            _ => Err(PmmError::OutOfRange),
        }
    }

    #[inline]
    fn in_reserved(&self, n: u32) -> bool {
        let ranges = &self.ranges[..self.range_count];
        // Sorted: most frames lie above the boot reservations, so test the last end first.
        match ranges.last() {
            Some(&(_, end)) if n < end => ranges.iter().any(|&(s, e)| s <= n && n < e),
            _ => false,
        }
    }

    /// How many frames of `[start, end)` are reserved.
    fn reserved_overlap(&self, start: u32, end: u32) -> u32 {
        self.ranges[..self.range_count]
            .iter()
            .map(|&(s, e)| end.min(e).saturating_sub(start.max(s)))
            .sum()
    }

    fn count_free(&self, start: u32, end: u32) -> u32 {
        let r = Span::new(start, end);
        if r.first == r.last {
            return (self.bitmap[r.first] & r.head).count_ones();
        }
        let middle: u32 = self.bitmap[r.first + 1..r.last]
            .iter()
            .map(|w| w.count_ones())
            .sum();
        (self.bitmap[r.first] & r.head).count_ones()
            + middle
            + (self.bitmap[r.last] & r.tail).count_ones()
    }

    /// Whether any frame of `[start, end)` is free.
    fn any_free(&self, start: u32, end: u32) -> bool {
        let r = Span::new(start, end);
        if r.first == r.last {
            return self.bitmap[r.first] & r.head != 0;
        }
        let middle = self.bitmap[r.first + 1..r.last]
            .iter()
            .fold(0, |acc, &w| acc | w);
        (self.bitmap[r.first] & r.head) | middle | (self.bitmap[r.last] & r.tail) != 0
    }

    /// The highest frame of `[start, end)` that is not free, if any. Whole words in the middle
    /// are compared with `u32::MAX`.
    fn last_taken(&self, start: u32, end: u32) -> Option<u32> {
        let r = Span::new(start, end);
        let highest = |w: usize, taken: u32| w as u32 * BITS + (BITS - 1 - taken.leading_zeros());
        if r.first == r.last {
            let taken = !self.bitmap[r.first] & r.head;
            return (taken != 0).then(|| highest(r.first, taken));
        }
        let taken = !self.bitmap[r.last] & r.tail;
        if taken != 0 {
            return Some(highest(r.last, taken));
        }
        if let Some(i) = self.bitmap[r.first + 1..r.last]
            .iter()
            .rposition(|&w| w != u32::MAX)
        {
            let w = r.first + 1 + i;
            return Some(highest(w, !self.bitmap[w]));
        }
        let taken = !self.bitmap[r.first] & r.head;
        (taken != 0).then(|| highest(r.first, taken))
    }

    // ---- searches --------------------------------------------------------------------------

    /// The first bitmap word at or after `w` that holds a free frame, through the summary.
    #[inline]
    fn next_nonempty_word(&self, w: usize) -> Option<usize> {
        next_set(self.summary, w)
    }

    /// The first free frame at or after `pos`.
    fn next_free_from(&self, pos: u32) -> Option<u32> {
        let w = (pos / BITS) as usize;
        let bits = self.bitmap.get(w)? & (u32::MAX << (pos % BITS));
        if bits != 0 {
            return Some(w as u32 * BITS + bits.trailing_zeros());
        }
        let w = self.next_nonempty_word(w + 1)?;
        Some(w as u32 * BITS + self.bitmap[w].trailing_zeros())
    }

    // ---- updates (no checks, no counts) ------------------------------------------------------

    /// Stores a bitmap word and keeps its summary bit in step.
    #[inline]
    fn set_word(&mut self, w: usize, value: u32) {
        self.bitmap[w] = value;
        let s = w / BITS as usize;
        let bit = 1 << (w % BITS as usize);
        if value == 0 {
            self.summary[s] &= !bit;
        } else {
            self.summary[s] |= bit;
        }
        if value == u32::MAX {
            self.full[s] |= bit;
        } else {
            self.full[s] &= !bit;
        }
    }

    /// Bitmap words `lo..hi` (non-empty) were just filled with all ones (`free`) or all zeros:
    /// sets or clears their bits in both levels.
    fn mark_words(&mut self, lo: usize, hi: usize, free: bool) {
        set_range(self.summary, lo, hi, free);
        set_range(self.full, lo, hi, free);
    }

    /// Marks `[start, end)` not free: partial head and tail words, whole words in between.
    fn clear_bits(&mut self, start: u32, end: u32) {
        let r = Span::new(start, end);
        let head = self.bitmap[r.first] & !r.head;
        self.set_word(r.first, head);
        if r.first == r.last {
            return;
        }
        if r.first + 1 < r.last {
            self.bitmap[r.first + 1..r.last].fill(0);
            self.mark_words(r.first + 1, r.last, false);
        }
        let tail = self.bitmap[r.last] & !r.tail;
        self.set_word(r.last, tail);
    }

    /// Marks `[start, end)` free: partial head and tail words, whole words in between.
    fn set_bits(&mut self, start: u32, end: u32) {
        let r = Span::new(start, end);
        let head = self.bitmap[r.first] | r.head;
        self.set_word(r.first, head);
        if r.first == r.last {
            return;
        }
        if r.first + 1 < r.last {
            self.bitmap[r.first + 1..r.last].fill(u32::MAX);
            self.mark_words(r.first + 1, r.last, true);
        }
        let tail = self.bitmap[r.last] | r.tail;
        self.set_word(r.last, tail);
    }
}

impl core::fmt::Debug for Pmm<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pmm")
            .field("total", &self.frame_count)
            .field("free", &self.free)
            .field("reserved", &self.reserved)
            .field("reserved_ranges", &&self.ranges[..self.range_count])
            .finish_non_exhaustive()
    }
}

impl FrameAllocator for Pmm<'_> {
    fn alloc_frame(&mut self) -> Result<Frame, PmmError> {
        Pmm::alloc_frame(self)
    }

    fn alloc_contiguous(
        &mut self,
        count: u32,
        align: u32,
        limit: Option<PhysAddr>,
    ) -> Result<Frame, PmmError> {
        Pmm::alloc_contiguous(self, count, align, limit)
    }

    fn free_frame(&mut self, frame: Frame) -> Result<(), PmmError> {
        Pmm::free_frame(self, frame)
    }

    fn free_contiguous(&mut self, first: Frame, count: u32) -> Result<(), PmmError> {
        Pmm::free_contiguous(self, first, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const ONE_GIB_FRAMES: u32 = 262_144;

    fn storage(frames: u32) -> Vec<u32> {
        vec![0xdead_beef; Pmm::storage_words(frames)]
    }

    fn frame(n: u32) -> Frame {
        Frame::from_number(n)
    }

    /// Everything a refused call must leave untouched.
    #[derive(Debug, PartialEq)]
    struct Snapshot {
        bitmap: Vec<u32>,
        summary: Vec<u32>,
        free: u32,
        reserved: u32,
        hint: usize,
        ranges: Vec<(u32, u32)>,
    }

    fn snapshot(p: &Pmm) -> Snapshot {
        Snapshot {
            bitmap: p.bitmap.to_vec(),
            summary: p.summary.to_vec(),
            free: p.free,
            reserved: p.reserved,
            hint: p.hint,
            ranges: p.ranges[..p.range_count].to_vec(),
        }
    }

    /// The summary and the counts agree with the bitmap.
    fn check_invariants(p: &Pmm) {
        for (w, &word) in p.bitmap.iter().enumerate() {
            let s = p.summary[w / 32] & (1 << (w % 32)) != 0;
            assert_eq!(s, word != 0, "summary bit of word {w}");
        }
        let free: u32 = p.bitmap.iter().map(|w| w.count_ones()).sum();
        assert_eq!(free, p.free_frames());
        let reserved: u32 = p.reserved_ranges().map(|(_, n)| n).sum();
        assert_eq!(reserved, p.reserved_frames());
        assert_eq!(
            p.total_frames(),
            p.free_frames() + p.reserved_frames() + p.allocated_frames()
        );
    }

    #[test]
    fn storage_for_one_gib_is_a_32_kib_bitmap_plus_two_1_kib_levels() {
        assert_eq!(Pmm::storage_words(ONE_GIB_FRAMES), 8192 + 2 * 256);
        assert_eq!(Pmm::storage_words(1), 1 + 2);
        assert_eq!(Pmm::storage_words(33), 2 + 2);
        assert_eq!(Pmm::storage_words(32 * 33), 33 + 2 * 2);
    }

    #[test]
    fn a_new_manager_has_every_frame_free() {
        let mut s = storage(1000);
        let p = Pmm::new(&mut s, 1000).unwrap();
        assert_eq!(p.total_frames(), 1000);
        assert_eq!(p.free_frames(), 1000);
        assert_eq!(p.reserved_frames(), 0);
        assert_eq!(p.allocated_frames(), 0);
        assert!(p.is_free(frame(999)));
        assert!(!p.is_free(frame(1000)));
        check_invariants(&p);
    }

    #[test]
    fn construction_refuses_storage_that_is_too_small() {
        let mut s = vec![0; Pmm::storage_words(1000) - 1];
        assert_eq!(Pmm::new(&mut s, 1000).err(), Some(PmmError::BitmapTooSmall));
    }

    #[test]
    fn construction_refuses_zero_frames_and_more_than_4_gib() {
        let mut s = storage(64);
        assert_eq!(Pmm::new(&mut s, 0).err(), Some(PmmError::ZeroCount));
        let mut s = storage(MAX_FRAMES + 1);
        assert_eq!(
            Pmm::new(&mut s, MAX_FRAMES + 1).err(),
            Some(PmmError::OutOfRange)
        );
        assert!(Pmm::new(&mut s, MAX_FRAMES).is_ok());
    }

    #[test]
    fn longer_storage_is_accepted_and_only_its_prefix_used() {
        let mut s = [7; 100];
        {
            let p = Pmm::new(&mut s, 40).unwrap();
            assert_eq!(p.free_frames(), 40);
        }
        assert!(s[Pmm::storage_words(40)..].iter().all(|&w| w == 7));
    }

    #[test]
    fn alloc_frame_hands_out_every_frame_once_then_runs_out() {
        let mut s = storage(70);
        let mut p = Pmm::new(&mut s, 70).unwrap();
        let mut seen = [false; 70];
        for _ in 0..70 {
            let f = p.alloc_frame().unwrap().number() as usize;
            assert!(!seen[f], "frame {f} handed out twice");
            seen[f] = true;
        }
        let before = snapshot(&p);
        assert_eq!(p.alloc_frame(), Err(PmmError::OutOfMemory));
        assert_eq!(snapshot(&p), before);
        assert_eq!(p.allocated_frames(), 70);
        check_invariants(&p);
    }

    #[test]
    fn alloc_frame_goes_on_after_the_last_allocation_instead_of_rescanning_from_zero() {
        let mut s = storage(200);
        let mut p = Pmm::new(&mut s, 200).unwrap();
        for n in 0..100 {
            assert_eq!(p.alloc_frame(), Ok(frame(n)));
        }
        p.free_frame(frame(3)).unwrap();
        assert_eq!(p.alloc_frame(), Ok(frame(100)));
    }

    #[test]
    fn alloc_frame_wraps_around_to_frames_freed_below_the_hint() {
        let mut s = storage(200);
        let mut p = Pmm::new(&mut s, 200).unwrap();
        for _ in 0..200 {
            p.alloc_frame().unwrap();
        }
        p.free_frame(frame(5)).unwrap();
        assert_eq!(p.alloc_frame(), Ok(frame(5)));
        check_invariants(&p);
    }

    #[test]
    fn alloc_frame_skips_reserved_frames() {
        let mut s = storage(64);
        let mut p = Pmm::new(&mut s, 64).unwrap();
        p.reserve(frame(0), 40).unwrap();
        for n in 40..64 {
            assert_eq!(p.alloc_frame(), Ok(frame(n)));
        }
        assert_eq!(p.alloc_frame(), Err(PmmError::OutOfMemory));
    }

    #[test]
    fn freeing_a_frame_makes_it_free_again() {
        let mut s = storage(64);
        let mut p = Pmm::new(&mut s, 64).unwrap();
        let f = p.alloc_frame().unwrap();
        assert!(!p.is_free(f));
        p.free_frame(f).unwrap();
        assert!(p.is_free(f));
        assert_eq!(p.free_frames(), 64);
        check_invariants(&p);
    }

    #[test]
    fn freeing_a_free_frame_is_a_double_free_and_changes_nothing() {
        let mut s = storage(64);
        let mut p = Pmm::new(&mut s, 64).unwrap();
        let f = p.alloc_frame().unwrap();
        p.free_frame(f).unwrap();
        let before = snapshot(&p);
        assert_eq!(p.free_frame(f), Err(PmmError::DoubleFree));
        assert_eq!(p.free_frame(frame(63)), Err(PmmError::DoubleFree));
        assert_eq!(snapshot(&p), before);
    }

    #[test]
    fn freeing_a_reserved_frame_is_refused_and_changes_nothing() {
        let mut s = storage(64);
        let mut p = Pmm::new(&mut s, 64).unwrap();
        p.reserve(frame(8), 4).unwrap();
        let before = snapshot(&p);
        assert_eq!(p.free_frame(frame(9)), Err(PmmError::Reserved));
        assert_eq!(snapshot(&p), before);
        assert!(p.is_reserved(frame(9)));
    }

    #[test]
    fn freeing_past_the_end_of_memory_is_out_of_range() {
        let mut s = storage(40);
        let mut p = Pmm::new(&mut s, 40).unwrap();
        let before = snapshot(&p);
        assert_eq!(p.free_frame(frame(40)), Err(PmmError::OutOfRange));
        assert_eq!(p.free_frame(frame(63)), Err(PmmError::OutOfRange));
        assert_eq!(snapshot(&p), before);
    }

    #[test]
    fn freeing_by_address_refuses_an_unaligned_address() {
        let mut s = storage(40);
        let mut p = Pmm::new(&mut s, 40).unwrap();
        let f = p.alloc_frame().unwrap();
        let before = snapshot(&p);
        assert_eq!(
            p.free_addr(PhysAddr::new(f.start().as_u32() + 4)),
            Err(PmmError::Unaligned)
        );
        assert_eq!(snapshot(&p), before);
        assert_eq!(p.free_addr(f.start()), Ok(()));
    }

    #[test]
    fn alloc_contiguous_returns_a_run_aligned_as_asked() {
        let mut s = storage(1024);
        let mut p = Pmm::new(&mut s, 1024).unwrap();
        p.reserve(frame(0), 3).unwrap();
        let f = p.alloc_contiguous(16, 16, None).unwrap();
        assert_eq!(f, frame(16));
        for n in 16..32 {
            assert!(!p.is_free(frame(n)));
        }
        assert!(p.is_free(frame(3)) && p.is_free(frame(32)));
        let g = p.alloc_contiguous(256, 256, None).unwrap();
        assert_eq!(g, frame(256));
        assert_eq!(p.allocated_frames(), 16 + 256);
        check_invariants(&p);
    }

    #[test]
    fn alloc_contiguous_takes_the_lowest_run_that_fits() {
        let mut s = storage(256);
        let mut p = Pmm::new(&mut s, 256).unwrap();
        assert_eq!(p.alloc_contiguous(5, 1, None), Ok(frame(0)));
        assert_eq!(p.alloc_contiguous(40, 1, None), Ok(frame(5)));
        assert_eq!(p.alloc_contiguous(3, 4, None), Ok(frame(48)));
    }

    #[test]
    fn alloc_contiguous_jumps_over_a_run_broken_by_an_allocated_frame() {
        let mut s = storage(512);
        let mut p = Pmm::new(&mut s, 512).unwrap();
        // Everything free except frames 70 and 130.
        p.reserve(frame(70), 1).unwrap();
        p.reserve(frame(130), 1).unwrap();
        // 64 aligned to 2: 0..64 fits.
        assert_eq!(p.alloc_contiguous(64, 2, None), Ok(frame(0)));
        // Next 64-run: 71..135 is broken by 130, so 132 (aligned to 2 after 131).
        assert_eq!(p.alloc_contiguous(64, 2, None), Ok(frame(132)));
        check_invariants(&p);
    }

    #[test]
    fn alloc_contiguous_stays_below_the_limit() {
        let mut s = storage(1024);
        let mut p = Pmm::new(&mut s, 1024).unwrap();
        p.reserve(frame(0), 8).unwrap();
        let limit = Some(PhysAddr::new(16 * 4096));
        assert_eq!(p.alloc_contiguous(8, 1, limit), Ok(frame(8)));
        let before = snapshot(&p);
        assert_eq!(p.alloc_contiguous(1, 1, limit), Err(PmmError::OutOfMemory));
        assert_eq!(snapshot(&p), before);
        // A limit that is not frame aligned is rounded down: frame 16 would end past it.
        let limit = Some(PhysAddr::new(17 * 4096 - 1));
        assert_eq!(p.alloc_contiguous(1, 1, limit), Err(PmmError::OutOfMemory));
        let limit = Some(PhysAddr::new(17 * 4096));
        assert_eq!(p.alloc_contiguous(1, 1, limit), Ok(frame(16)));
        // A limit past the end of memory is no limit.
        let limit = Some(PhysAddr::new(0xffff_f000));
        assert_eq!(p.alloc_contiguous(1000, 1, limit), Ok(frame(17)));
    }

    #[test]
    fn alloc_contiguous_refuses_zero_frames() {
        let mut s = storage(64);
        let mut p = Pmm::new(&mut s, 64).unwrap();
        let before = snapshot(&p);
        assert_eq!(p.alloc_contiguous(0, 1, None), Err(PmmError::ZeroCount));
        assert_eq!(snapshot(&p), before);
    }

    #[test]
    fn alloc_contiguous_refuses_an_alignment_that_is_not_a_power_of_two() {
        let mut s = storage(64);
        let mut p = Pmm::new(&mut s, 64).unwrap();
        let before = snapshot(&p);
        for align in [0, 3, 6, 12, u32::MAX] {
            assert_eq!(
                p.alloc_contiguous(1, align, None),
                Err(PmmError::BadAlignment)
            );
        }
        assert_eq!(snapshot(&p), before);
    }

    #[test]
    fn alloc_contiguous_is_out_of_memory_when_no_run_fits_even_if_enough_frames_are_free() {
        let mut s = storage(64);
        let mut p2 = Pmm::new(&mut s, 64).unwrap();
        // Take every even frame: 32 free frames, no run of 2.
        for n in (0..64).step_by(2) {
            assert_eq!(
                p2.alloc_contiguous(1, 2, Some(PhysAddr::new(64 * 4096))),
                Ok(frame(n))
            );
        }
        let before = snapshot(&p2);
        assert_eq!(p2.alloc_contiguous(2, 1, None), Err(PmmError::OutOfMemory));
        assert_eq!(
            p2.alloc_contiguous(1, 1 << 31, None),
            Err(PmmError::OutOfMemory)
        );
        assert_eq!(p2.alloc_contiguous(65, 1, None), Err(PmmError::OutOfMemory));
        assert_eq!(snapshot(&p2), before);
        assert_eq!(p2.free_frames(), 32);
    }

    #[test]
    fn alloc_contiguous_crosses_word_boundaries() {
        let mut s = storage(200);
        let mut p = Pmm::new(&mut s, 200).unwrap();
        p.reserve(frame(0), 30).unwrap();
        assert_eq!(p.alloc_contiguous(100, 1, None), Ok(frame(30)));
        assert_eq!(p.free_frames(), 70);
        p.free_contiguous(frame(30), 100).unwrap();
        assert_eq!(p.free_frames(), 170);
        check_invariants(&p);
    }

    #[test]
    fn free_contiguous_returns_the_whole_run() {
        let mut s = storage(256);
        let mut p = Pmm::new(&mut s, 256).unwrap();
        let f = p.alloc_contiguous(64, 64, None).unwrap();
        p.free_contiguous(f, 64).unwrap();
        assert_eq!(p.free_frames(), 256);
        check_invariants(&p);
    }

    #[test]
    fn free_contiguous_over_a_partly_free_run_is_refused_and_changes_nothing() {
        let mut s = storage(256);
        let mut p = Pmm::new(&mut s, 256).unwrap();
        let f = p.alloc_contiguous(40, 1, None).unwrap();
        p.free_frame(frame(f.number() + 39)).unwrap();
        let before = snapshot(&p);
        assert_eq!(p.free_contiguous(f, 40), Err(PmmError::DoubleFree));
        assert_eq!(snapshot(&p), before);
    }

    #[test]
    fn free_contiguous_over_a_reserved_frame_is_refused_and_changes_nothing() {
        let mut s = storage(256);
        let mut p = Pmm::new(&mut s, 256).unwrap();
        p.reserve(frame(10), 1).unwrap();
        let f = p.alloc_contiguous(10, 1, None).unwrap();
        assert_eq!(f, frame(0));
        let before = snapshot(&p);
        assert_eq!(p.free_contiguous(f, 11), Err(PmmError::Reserved));
        assert_eq!(snapshot(&p), before);
    }

    #[test]
    fn free_contiguous_refuses_zero_frames_and_runs_past_the_end() {
        let mut s = storage(64);
        let mut p = Pmm::new(&mut s, 64).unwrap();
        p.alloc_contiguous(64, 1, None).unwrap();
        let before = snapshot(&p);
        assert_eq!(p.free_contiguous(frame(0), 0), Err(PmmError::ZeroCount));
        assert_eq!(p.free_contiguous(frame(60), 5), Err(PmmError::OutOfRange));
        assert_eq!(
            p.free_contiguous(frame(60), u32::MAX),
            Err(PmmError::OutOfRange)
        );
        assert_eq!(snapshot(&p), before);
    }

    #[test]
    fn reserving_takes_free_frames_out_of_circulation() {
        let mut s = storage(64);
        let mut p = Pmm::new(&mut s, 64).unwrap();
        p.reserve(frame(4), 8).unwrap();
        assert_eq!(p.reserved_frames(), 8);
        assert_eq!(p.free_frames(), 56);
        assert!(p.is_reserved(frame(4)) && p.is_reserved(frame(11)));
        assert!(!p.is_reserved(frame(12)) && !p.is_free(frame(4)));
        check_invariants(&p);
    }

    #[test]
    fn reserving_allocated_frames_is_refused_as_in_use_and_changes_nothing() {
        let mut s = storage(64);
        let mut p = Pmm::new(&mut s, 64).unwrap();
        let f = p.alloc_frame().unwrap();
        let before = snapshot(&p);
        assert_eq!(p.reserve(f, 3), Err(PmmError::InUse));
        assert_eq!(snapshot(&p), before);
    }

    #[test]
    fn reserving_refuses_zero_frames_and_ranges_past_the_end() {
        let mut s = storage(64);
        let mut p = Pmm::new(&mut s, 64).unwrap();
        let before = snapshot(&p);
        assert_eq!(p.reserve(frame(0), 0), Err(PmmError::ZeroCount));
        assert_eq!(p.reserve(frame(60), 5), Err(PmmError::OutOfRange));
        assert_eq!(p.reserve(frame(64), 1), Err(PmmError::OutOfRange));
        assert_eq!(snapshot(&p), before);
    }

    #[test]
    fn overlapping_and_touching_reservations_merge_into_one_range() {
        let mut s = storage(256);
        let mut p = Pmm::new(&mut s, 256).unwrap();
        p.reserve(frame(10), 5).unwrap();
        p.reserve(frame(30), 5).unwrap();
        p.reserve(frame(50), 5).unwrap();
        p.reserve(frame(12), 20).unwrap(); // overlaps 10..15 and 30..35
        let ranges: Vec<_> = p.reserved_ranges().collect();
        assert_eq!(ranges, [(frame(10), 25), (frame(50), 5)]);
        p.reserve(frame(55), 1).unwrap(); // touches 50..55
        p.reserve(frame(5), 5).unwrap(); // touches 10..35
        let ranges: Vec<_> = p.reserved_ranges().collect();
        assert_eq!(ranges, [(frame(5), 30), (frame(50), 6)]);
        assert_eq!(p.reserved_frames(), 36);
        p.reserve(frame(0), 100).unwrap();
        assert_eq!(p.reserved_ranges().count(), 1);
        assert_eq!(p.reserved_frames(), 100);
        check_invariants(&p);
    }

    #[test]
    fn a_full_reserved_table_refuses_a_new_range_and_changes_nothing() {
        let mut s = storage(256);
        let mut p = Pmm::new(&mut s, 256).unwrap();
        for i in 0..MAX_RESERVED_RANGES as u32 {
            p.reserve(frame(i * 4), 1).unwrap();
        }
        let before = snapshot(&p);
        assert_eq!(p.reserve(frame(200), 1), Err(PmmError::TooManyReserved));
        assert_eq!(snapshot(&p), before);
        // Growing an existing range still works.
        p.reserve(frame(1), 1).unwrap();
        assert!(p.is_reserved(frame(1)));
        check_invariants(&p);
    }

    #[test]
    fn reserving_a_region_rounds_out_to_whole_frames() {
        let mut s = storage(64);
        let mut p = Pmm::new(&mut s, 64).unwrap();
        p.reserve_region(PhysAddr::new(0x1800), PhysAddr::new(0x3001))
            .unwrap();
        let ranges: Vec<_> = p.reserved_ranges().collect();
        assert_eq!(ranges, [(frame(1), 3)]);
        assert_eq!(
            p.reserve_region(PhysAddr::new(0x3000), PhysAddr::new(0x3000)),
            Err(PmmError::ZeroCount)
        );
        assert_eq!(
            p.reserve_region(PhysAddr::new(0x3000), PhysAddr::new(0x4_0001)),
            Err(PmmError::OutOfRange)
        );
    }

    #[test]
    fn boot_reservations_sit_end_to_end_and_take_one_table_entry() {
        let frames = ONE_GIB_FRAMES - 64 * 256; // 960 MiB, as under QEMU
        let mut s = storage(frames);
        let mut p = Pmm::new(&mut s, frames).unwrap();
        let kernel_end = 0x8000 + 0x2_3456;
        let bitmap_start = (kernel_end + 0xfff) & !0xfff;
        let bitmap_end = bitmap_start + Pmm::storage_words(frames) as u32 * 4;
        p.reserve_region(PhysAddr::new(0), PhysAddr::new(0x4000))
            .unwrap();
        p.reserve_region(PhysAddr::new(0x4000), PhysAddr::new(0x8000))
            .unwrap();
        p.reserve_region(PhysAddr::new(0x8000), PhysAddr::new(kernel_end))
            .unwrap();
        p.reserve_region(PhysAddr::new(bitmap_start), PhysAddr::new(bitmap_end))
            .unwrap();
        assert_eq!(p.reserved_ranges().count(), 1);
        let f = p.alloc_frame().unwrap();
        assert!(f.start().as_u32() >= bitmap_end);
        check_invariants(&p);
    }

    #[test]
    fn a_whole_gigabyte_can_be_allocated_and_freed_frame_by_frame() {
        let mut s = storage(ONE_GIB_FRAMES);
        let mut p = Pmm::new(&mut s, ONE_GIB_FRAMES).unwrap();
        for n in 0..ONE_GIB_FRAMES {
            assert_eq!(p.alloc_frame(), Ok(frame(n)));
        }
        assert_eq!(p.alloc_frame(), Err(PmmError::OutOfMemory));
        for n in 0..ONE_GIB_FRAMES {
            p.free_frame(frame(n)).unwrap();
        }
        assert_eq!(p.free_frames(), ONE_GIB_FRAMES);
        check_invariants(&p);
    }

    #[test]
    fn the_frame_allocator_trait_reaches_the_same_operations() {
        fn exercise(a: &mut dyn FrameAllocator) {
            let f = a.alloc_frame().unwrap();
            let g = a.alloc_contiguous(4, 4, None).unwrap();
            assert_eq!(g.number() % 4, 0);
            a.free_contiguous(g, 4).unwrap();
            a.free_frame(f).unwrap();
            assert_eq!(a.free_frame(f), Err(PmmError::DoubleFree));
        }
        let mut s = storage(64);
        let mut p = Pmm::new(&mut s, 64).unwrap();
        exercise(&mut p);
        assert_eq!(p.free_frames(), 64);
    }
}
