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
//!   full ones with one `trailing_zeros`), wrapping around once to the lowest word that may hold a
//!   free frame. It never scans from frame 0. The common case, a free frame in the hinted word, is
//!   a handful of instructions; the levels are touched only when a word becomes empty or wholly
//!   free (or stops being), at most once in 32 operations, out of line.
//! - **Contiguous runs** are found first-fit from the bottom (so low memory with a `limit`, e.g.
//!   for DMA, is used first). A second hint, `low`, says below which bitmap word nothing is free:
//!   every free lowers it, a search of the bitmap raises it to the first word in which it found a
//!   free frame, and searches start there instead of at frame 0. Words are tested whole, not bit
//!   by bit:
//!   - a run of up to 32 frames no longer than its alignment (16 frames aligned to 64 KiB, say)
//!     fits in an aligned slot of one word, and one subtract-and-mask finds the lowest slot whose
//!     frames are all free (the "zero byte" test, for slots of any width);
//!   - a run of up to 32 frames longer than its alignment looks at the word and the next one as a
//!     64-bit window, in which a few shift-and steps mark where runs of that length start;
//!   - a longer run jumps to the next free frame through the summary, rounds up to the alignment
//!     and tests the candidate a word at a time; when it is broken, the search goes on past its
//!     *last* allocated frame (found with `leading_zeros`).
//!
//!   Runs of whole words (count and alignment multiples of 32 frames, such as 1 MiB blocks) are
//!   searched in the `full` level instead, where a word stands for 32 bitmap words (1024 frames),
//!   with the same word-at-a-time tests: 256 frames aligned to 1 MiB are an aligned byte `0xff`
//!   there. Allocating or freeing them stores whole words, and a whole-word free checks for double
//!   frees in the summary.
//! - **Reserved frames** (firmware area, the kernel L1 table, the kernel image, this bitmap) are
//!   clear in the bitmap like allocated ones; what tells them apart is a small sorted array of
//!   disjoint, non-adjacent frame ranges inside the struct ([`MAX_RESERVED_RANGES`] entries; new
//!   ranges merge with ones they overlap or touch, so the usual boot reservations, which sit end to
//!   end from frame 0, take a single entry). Only a frame whose bit is clear is looked up there, and
//!   only below the end of the highest range, so a normal free costs one comparison. No heap, and
//!   no second bitmap.
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

/// Whether any of bits `lo..hi` (non-empty) of a level is set.
#[inline(always)]
fn any_set(level: &[u32], lo: usize, hi: usize) -> bool {
    let b = BITS as usize;
    if lo / b == (hi - 1) / b {
        // The common case: one word.
        return level[lo / b] & bit_range((lo % b) as u32, ((hi - 1) % b + 1) as u32) != 0;
    }
    chunks(lo as u32, hi as u32).any(|(i, m)| level[i] & m != 0)
}

/// Sets (`on`) or clears bits `lo..hi` (non-empty) of a level.
#[inline(always)]
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
    set_range_across(level, lo, hi, on);
}

/// [`set_range`] for bits spread over several words, out of line.
#[inline(never)]
fn set_range_across(level: &mut [u32], lo: usize, hi: usize, on: bool) {
    for (i, m) in chunks(lo as u32, hi as u32) {
        if on {
            level[i] |= m;
        } else {
            level[i] &= !m;
        }
    }
}

/// The shifts that turn a bit string into the starts of its runs of `n` ones (`1 <= n <= 32`).
/// After `x &= x >> k` for `k` = 1, 2, 4, ... up to `h / 2`, where `h` is the largest power of
/// two not above `n`, bit `p` says that bits `p..p + h` are set; a last shift by `n - h` makes
/// that `p..p + n`. Shifts that are not needed are zero (no-ops), so the test of a word has no
/// loop and no branch, and working them out takes a few instructions.
#[inline(always)]
fn run_shifts(n: u32) -> [u32; 6] {
    debug_assert!((1..=BITS).contains(&n));
    let h = 1 << (BITS - 1 - n.leading_zeros());
    let m = h - 1;
    [1 & m, 2 & m, 4 & m, 8 & m, 16 & m, n - h]
}

/// Bit `p` of the result is set when bits `p..p + n` of `x` are all set, with `shifts` from
/// [`run_shifts`]`(n)`.
#[inline(always)]
fn run_starts(x: u64, shifts: &[u32; 6]) -> u64 {
    shifts.iter().fold(x, |r, &k| r & (r >> k))
}

/// The bits of a word at which a run aligned to `align` (a power of two, at most 32) may start:
/// every bit for 1, `0x5555_5555` for 2, ..., `0x0001_0001` for 16, bit 0 for 32. A table, not a
/// division.
#[inline]
fn aligned_starts(align: u32) -> u32 {
    const STARTS: [u32; 6] = [
        u32::MAX,
        0x5555_5555,
        0x1111_1111,
        0x0101_0101,
        0x0001_0001,
        0x0000_0001,
    ];
    debug_assert!(align.is_power_of_two() && align <= BITS);
    STARTS[align.trailing_zeros() as usize]
}

/// `x` rounded up to a multiple of `step`, a power of two (a mask, not a division).
#[inline]
fn round_up(x: usize, step: usize) -> usize {
    debug_assert!(step.is_power_of_two());
    (x + step - 1) & !(step - 1)
}

/// The lowest bit `p` of a level, in a word `from..=last`, such that `p` is a multiple of `align`
/// and bits `p..p + n` are all set, for `1 <= n <= align <= 32` (`align` a power of two: a request
/// no longer than its alignment, the usual case); the caller checks that the run ends in time.
/// `next_nonzero(i)` is the first non-zero word at or after `i` (the bitmap's comes from the
/// summary), so empty stretches cost one jump.
///
/// Each word is tested at once, without a loop over its bits. The aligned slots of `align` bits
/// never cross a word, and a slot fits when its low `n` bits are all set. With `missing` the clear
/// bits among those, the lowest slot where `missing` is zero is flagged at its top bit by
/// `(missing - low) & !missing & high` (`low` and `high`: the lowest and highest bit of every
/// slot): the "zero byte" test, for slots of any width. A borrow only leaves a slot that is zero,
/// so no slot below the lowest fitting one is flagged.
#[inline(always)]
fn find_slot(
    level: &[u32],
    from: usize,
    last: usize,
    n: u32,
    align: u32,
    next_nonzero: impl Fn(usize) -> Option<usize>,
) -> Option<usize> {
    debug_assert!(1 <= n && n <= align && align <= BITS && align.is_power_of_two());
    let low = aligned_starts(align);
    let top = align - 1;
    let high = low << top;
    let need = if n == BITS {
        u32::MAX
    } else {
        low.wrapping_mul((1 << n) - 1)
    };
    scan(level, from, last, next_nonzero, |x, _| {
        let missing = !x & need;
        (missing.wrapping_sub(low) & !missing & high) >> top
    })
}

/// As [`find_slot`], for runs longer than their alignment (`align < n <= 32`), which may cross
/// into the next word: with the next word each word makes a 64-bit window in which
/// [`run_starts`] marks where runs of `n` begin, and [`aligned_starts`] keeps the aligned ones.
#[inline(always)]
fn find_window(
    level: &[u32],
    from: usize,
    last: usize,
    n: u32,
    align: u32,
    next_nonzero: impl Fn(usize) -> Option<usize>,
) -> Option<usize> {
    debug_assert!(align < n && n <= BITS && align.is_power_of_two());
    let starts = aligned_starts(align);
    let shifts = run_shifts(n);
    scan(level, from, last, next_nonzero, |x, i| {
        let next = level.get(i + 1).copied().unwrap_or(0);
        run_starts(u64::from(x) | u64::from(next) << BITS, &shifts) as u32 & starts
    })
}

/// The loop of [`find_slot`] and [`find_window`]: the lowest bit `p` in words `from..=last` of a level such that
/// `starts(word, i)`, which marks where runs start in a non-zero word `i`, has bit `p % 32` set.
#[inline(always)]
fn scan(
    level: &[u32],
    from: usize,
    last: usize,
    next_nonzero: impl Fn(usize) -> Option<usize>,
    starts: impl Fn(u32, usize) -> u32,
) -> Option<usize> {
    let mut i = from;
    while i <= last {
        let x = level[i];
        if x == 0 {
            i = next_nonzero(i + 1)?;
            continue;
        }
        let fits = starts(x, i);
        if fits != 0 {
            return Some(i * BITS as usize + fits.trailing_zeros() as usize);
        }
        i += 1;
    }
    None
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
    /// Every bitmap word below this one is zero (no free frame): contiguous searches start here,
    /// and a single-frame search that wraps around. Lowered by every free, raised by searches of
    /// the bitmap to the first word in which they found a free frame.
    low: usize,
    /// The end of the highest reserved range (0 when there is none): frames at or above it are
    /// not reserved, without looking at the table.
    reserved_end: u32,
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
            low: 0,
            reserved_end: 0,
            ranges: [(0, 0); MAX_RESERVED_RANGES],
            range_count: 0,
        })
    }

    /// Whether both one-bit-per-word levels agree with the bitmap and the search hints hold
    /// (for tests: every operation keeps them in step).
    pub fn levels_consistent(&self) -> bool {
        let b = BITS as usize;
        let levels = self.bitmap.iter().enumerate().all(|(w, &x)| {
            let bit = 1 << (w % b);
            ((self.summary[w / b] & bit != 0) == (x != 0))
                && ((self.full[w / b] & bit != 0) == (x == u32::MAX))
        });
        let low = self.low < self.bitmap.len() && self.bitmap[..self.low].iter().all(|&x| x == 0);
        let top = self.ranges[..self.range_count].last().map_or(0, |r| r.1);
        levels && low && self.hint < self.bitmap.len() && self.reserved_end == top
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
        let w = self.hint;
        let word = self.bitmap[w];
        if word == 0 {
            return self.alloc_frame_past_hint();
        }
        Ok(self.take_lowest(w, word))
    }

    /// [`Pmm::alloc_frame`] when the hinted word is empty: moves the hint to the next word with a
    /// free frame, wrapping around to `low` once. Out of line, so that the common path stays short
    /// where it is inlined.
    #[cold]
    #[inline(never)]
    fn alloc_frame_past_hint(&mut self) -> Result<Frame, PmmError> {
        if self.free == 0 {
            return Err(PmmError::OutOfMemory);
        }
        let w = self
            .next_nonempty_word(self.hint)
            .or_else(|| self.next_nonempty_word(self.low))
            .ok_or(PmmError::OutOfMemory)?;
        self.hint = w;
        let word = self.bitmap[w];
        Ok(self.take_lowest(w, word))
    }

    /// Takes the lowest free frame of bitmap word `w`, whose value `word` is not zero.
    #[inline(always)]
    fn take_lowest(&mut self, w: usize, word: u32) -> Frame {
        let value = word & (word - 1);
        self.bitmap[w] = value;
        if word == u32::MAX || value == 0 {
            self.word_changed(w, value);
        }
        self.free -= 1;
        Frame::from_number(w as u32 * BITS + word.trailing_zeros())
    }

    /// Brings the bits of bitmap word `w` in both levels, and `low`, in step with its new `value`
    /// (so every path that stores a word through it keeps `low` right). Single-frame operations
    /// need it only when the word was or becomes wholly free or empty, at most once in 32 of
    /// them; out of line, so that their common path stays short.
    #[inline(never)]
    fn word_changed(&mut self, w: usize, value: u32) {
        let (s, bit) = (w / BITS as usize, 1 << (w % BITS as usize));
        if value == 0 {
            self.summary[s] &= !bit;
        } else {
            self.summary[s] |= bit;
            // Only a word that was empty can lie below `low`.
            self.low = self.low.min(w);
        }
        if value == u32::MAX {
            self.full[s] |= bit;
        } else {
            self.full[s] &= !bit;
        }
    }

    /// Returns one frame. Refused with `OutOfRange` past the managed memory, `DoubleFree` when it
    /// is already free and `Reserved` when it is reserved.
    #[inline(always)]
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
        let value = word | bit;
        self.bitmap[w] = value;
        if word == 0 || value == u32::MAX {
            self.word_changed(w, value);
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
        if !(count | align).is_multiple_of(BITS) {
            return self.alloc_run(count, align, end);
        }
        // Whole words (count and alignment multiples of 32 frames), found in the `full` level.
        let lo = self
            .find_whole_words(count / BITS, align / BITS, end / BITS)
            .ok_or(PmmError::OutOfMemory)?;
        self.fill_words(lo, lo + (count / BITS) as usize, false);
        self.free -= count;
        Ok(Frame::from_number(lo as u32 * BITS))
    }

    /// [`Pmm::alloc_contiguous`] for runs that are not whole words, searched in the bitmap from
    /// the first word with a free frame on.
    #[inline(never)]
    fn alloc_run(&mut self, count: u32, align: u32, end: u32) -> Result<Frame, PmmError> {
        if count == 1 && align == 1 && end == self.frame_count {
            return self.alloc_frame();
        }
        // Nothing is free below `first`; the search starts there.
        let first = self
            .next_nonempty_word(self.low)
            .ok_or(PmmError::OutOfMemory)?;
        let last = ((end - count) / BITS) as usize;
        let next_nonzero = |i| next_set(self.summary, i);
        let start = if count <= align && align <= BITS {
            find_slot(self.bitmap, first, last, count, align, next_nonzero)
        } else if count <= BITS && align <= BITS {
            find_window(self.bitmap, first, last, count, align, next_nonzero)
        } else {
            self.find_long_run(first, count, align, end)
        }
        .map(|p| p as u32)
        .filter(|&p| p + count <= end)
        .ok_or(PmmError::OutOfMemory)?;
        self.low = first;
        self.clear_bits(start, start + count);
        self.free -= count;
        Ok(Frame::from_number(start))
    }

    /// The lowest run of `count` free frames aligned to `align` that ends at or below frame
    /// `end`, from bitmap word `first` on, for runs longer than a word or aligned to more than one:
    /// jump to the next free frame through the summary, round up to the alignment, test the
    /// candidate a word at a time, and when it is broken go on past its *last* allocated frame.
    fn find_long_run(&self, first: usize, count: u32, align: u32, end: u32) -> Option<usize> {
        let mut pos = first as u32 * BITS;
        loop {
            let f = self.next_free_from(pos)?;
            let start = f.checked_add(align - 1)? & !(align - 1);
            let stop = start.checked_add(count).filter(|&v| v <= end)?;
            match self.last_taken(start, stop) {
                None => return Some(start as usize),
                Some(taken) => pos = taken + 1,
            }
        }
    }

    /// The lowest run of `words` wholly free bitmap words aligned to `step` words (a power of
    /// two) that ends at or below word `end`, searched in the `full` level, one bit per word, from
    /// the level word of `low` on. Runs no longer than their alignment of up to 32 words (128 MiB)
    /// go through [`find_slot`], a level word at a time: 256 frames aligned to 1 MiB, for one, are
    /// an aligned byte `0xff` there.
    #[inline(always)]
    fn find_whole_words(&self, words: u32, step: u32, end: u32) -> Option<usize> {
        if !(words <= step && step <= BITS) {
            return self.find_other_words(words, step, end);
        }
        let full = &*self.full;
        // `count <= end` was checked, so `end >= words`.
        let last = ((end - words) / BITS) as usize;
        let lo = find_slot(
            full,
            self.low / BITS as usize,
            last.min(full.len() - 1),
            words,
            step,
            Some,
        )?;
        (lo + words as usize <= end as usize).then_some(lo)
    }

    /// [`Pmm::find_whole_words`] for runs longer than their alignment (up to 32 words, with
    /// [`find_window`]) or longer than 32 words or aligned to more (jumping past the last clear
    /// bit of each failed candidate).
    #[inline(never)]
    fn find_other_words(&self, words: u32, step: u32, end: u32) -> Option<usize> {
        let full = &*self.full;
        if words <= BITS && step <= BITS {
            let last = ((end - words) / BITS) as usize;
            let lo = find_window(
                full,
                self.low / BITS as usize,
                last.min(full.len() - 1),
                words,
                step,
                Some,
            )?;
            return (lo + words as usize <= end as usize).then_some(lo);
        }
        let (words, step, end) = (words as usize, step as usize, end as usize);
        let mut w = next_set(full, self.low)?;
        loop {
            w = round_up(w, step);
            if w + words > end {
                return None;
            }
            match last_clear(full, w, w + words) {
                None => return Some(w),
                Some(k) => w = next_set(full, k + 1)?,
            }
        }
    }

    /// Marks bitmap words `lo..hi` (non-empty) all free or all allocated, with their bits in
    /// both levels.
    #[inline(always)]
    fn fill_words(&mut self, lo: usize, hi: usize, free: bool) {
        let value = if free { u32::MAX } else { 0 };
        // Eight words (1 MiB) per fixed-size copy, which is a few plain stores; a loop of single
        // words would become a call to `memset`, costly for runs of a few words.
        let words = &mut self.bitmap[lo..hi];
        let mut i = 0;
        while i + 8 <= words.len() {
            words[i..i + 8].copy_from_slice(&[value; 8]);
            i += 8;
        }
        for x in &mut words[i..] {
            *x = value;
        }
        self.mark_words(lo, hi, free);
    }

    /// Returns `count` contiguous frames starting at `first`. Checks the whole run before changing
    /// anything: `OutOfRange`, `Reserved` if any frame is reserved, `DoubleFree` if any is free.
    pub fn free_contiguous(&mut self, first: Frame, count: u32) -> Result<(), PmmError> {
        let (start, end) = self.checked_run(first, count)?;
        if self.reserved_overlap(start, end) != 0 {
            return Err(PmmError::Reserved);
        }
        if !(start | count).is_multiple_of(BITS) {
            return self.free_run(start, end);
        }
        // Whole words: no masks, and the summary says whether any of them has a free frame.
        let (lo, hi) = ((start / BITS) as usize, (end / BITS) as usize);
        if any_set(self.summary, lo, hi) {
            return Err(PmmError::DoubleFree);
        }
        self.fill_words(lo, hi, true);
        self.low = self.low.min(lo);
        self.free += count;
        Ok(())
    }

    /// [`Pmm::free_contiguous`] for runs that are not whole words, from the double-free check on.
    #[inline(never)]
    fn free_run(&mut self, start: u32, end: u32) -> Result<(), PmmError> {
        if self.any_free(start, end) {
            return Err(PmmError::DoubleFree);
        }
        // `set_bits` lowers `low` as it makes words non-empty.
        self.set_bits(start, end);
        self.free += end - start;
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
        self.reserved_end = self.ranges[self.range_count - 1].1;

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
        // Most frames lie above the boot reservations: one comparison.
        n < self.reserved_end
            && self.ranges[..self.range_count]
                .iter()
                .any(|&(s, e)| s <= n && n < e)
    }

    /// How many frames of `[start, end)` are reserved.
    #[inline]
    fn reserved_overlap(&self, start: u32, end: u32) -> u32 {
        // Most runs lie above the boot reservations: one comparison.
        if start >= self.reserved_end {
            return 0;
        }
        self.reserved_in(start, end)
    }

    /// [`Pmm::reserved_overlap`] through the table.
    #[inline(never)]
    fn reserved_in(&self, start: u32, end: u32) -> u32 {
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

    /// Stores a bitmap word and keeps both levels, and `low`, in step.
    #[inline]
    fn set_word(&mut self, w: usize, value: u32) {
        self.bitmap[w] = value;
        self.word_changed(w, value);
    }

    /// Bitmap words `lo..hi` (non-empty) were just filled with all ones (`free`) or all zeros:
    /// sets or clears their bits in both levels.
    #[inline(always)]
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
        low: usize,
        ranges: Vec<(u32, u32)>,
    }

    fn snapshot(p: &Pmm) -> Snapshot {
        Snapshot {
            bitmap: p.bitmap.to_vec(),
            summary: p.summary.to_vec(),
            free: p.free,
            reserved: p.reserved,
            hint: p.hint,
            low: p.low,
            ranges: p.ranges[..p.range_count].to_vec(),
        }
    }

    /// The summary and the counts agree with the bitmap.
    fn check_invariants(p: &Pmm) {
        for (w, &word) in p.bitmap.iter().enumerate() {
            let s = p.summary[w / 32] & (1 << (w % 32)) != 0;
            assert_eq!(s, word != 0, "summary bit of word {w}");
        }
        assert!(p.levels_consistent(), "levels or hints out of step");
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
    fn contiguous_searches_start_at_the_first_word_with_a_free_frame_and_every_free_lowers_it() {
        let mut s = storage(1024);
        let mut p = Pmm::new(&mut s, 1024).unwrap();
        for n in 0..64 {
            assert_eq!(p.alloc_frame(), Ok(frame(n)));
        }
        assert_eq!(p.low, 0);
        // The search finds words 0 and 1 empty and remembers it.
        assert_eq!(p.alloc_contiguous(16, 16, None), Ok(frame(64)));
        assert_eq!(p.low, 2);
        assert_eq!(p.alloc_contiguous(16, 1, None), Ok(frame(80)));
        assert_eq!(p.alloc_contiguous(8, 8, None), Ok(frame(96)));
        assert_eq!(p.low, 3);
        check_invariants(&p);
        // A single frame, a short run and a run of whole words freed below the hint lower it.
        p.free_frame(frame(40)).unwrap();
        assert_eq!(p.low, 1);
        check_invariants(&p);
        assert_eq!(p.alloc_contiguous(1, 2, None), Ok(frame(40)));
        assert_eq!(p.alloc_contiguous(16, 16, None), Ok(frame(112)));
        assert_eq!(p.low, 3);
        p.free_contiguous(frame(80), 16).unwrap();
        assert_eq!(p.low, 2);
        check_invariants(&p);
        assert_eq!(p.alloc_contiguous(16, 16, None), Ok(frame(80)));
        assert_eq!(p.alloc_contiguous(8, 1, None), Ok(frame(104)));
        assert_eq!(p.low, 3);
        p.free_contiguous(frame(0), 32).unwrap();
        assert_eq!(p.low, 0);
        check_invariants(&p);
        // Single frames wrap around to the hint, not to frame 0.
        assert_eq!(p.alloc_contiguous(32, 32, None), Ok(frame(0)));
        for n in 128..1024 {
            assert_eq!(p.alloc_frame(), Ok(frame(n)));
        }
        assert_eq!(p.alloc_contiguous(1, 2, None), Err(PmmError::OutOfMemory));
        p.free_frame(frame(700)).unwrap();
        assert_eq!(p.alloc_frame(), Ok(frame(700)));
        check_invariants(&p);
    }

    #[test]
    fn runs_of_whole_words_are_found_in_the_full_level_across_its_words() {
        // 4096 frames: 128 bitmap words, four words of each level.
        let mut s = storage(4096);
        let mut p = Pmm::new(&mut s, 4096).unwrap();
        // A frame reserved in every eighth word below word 96: no wholly free aligned block of
        // eight words until the fourth level word.
        for w in (0..96).step_by(8) {
            p.reserve(frame(w * 32 + 5), 1).unwrap();
        }
        // 8 words aligned to 8 (1 MiB): the "aligned byte 0xff" case.
        assert_eq!(p.alloc_contiguous(256, 256, None), Ok(frame(96 * 32)));
        // 3 words aligned to 1: runs that cross into the next level word are seen too.
        assert_eq!(p.alloc_contiguous(96, 32, None), Ok(frame(32)));
        // 2 words aligned to 2, below a limit that leaves no room.
        assert_eq!(
            p.alloc_contiguous(64, 64, Some(PhysAddr::new(96 * 32 * 4096))),
            Ok(frame(4 * 32))
        );
        assert_eq!(
            p.alloc_contiguous(256, 256, Some(PhysAddr::new(104 * 32 * 4096))),
            Err(PmmError::OutOfMemory)
        );
        // Longer than 32 words, and aligned to more than 32 words.
        assert_eq!(
            p.alloc_contiguous(33 * 32, 32, None),
            Err(PmmError::OutOfMemory)
        );
        assert_eq!(p.alloc_contiguous(24 * 32, 32, None), Ok(frame(104 * 32)));
        p.free_contiguous(frame(104 * 32), 24 * 32).unwrap();
        assert_eq!(
            p.alloc_contiguous(1024, 2048, None),
            Err(PmmError::OutOfMemory)
        );
        p.free_contiguous(frame(96 * 32), 256).unwrap();
        assert_eq!(p.alloc_contiguous(1024, 1024, None), Ok(frame(96 * 32)));
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
