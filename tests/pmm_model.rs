//! The PMM against a plain model: a set of free frames and a set of reserved frames, compared after
//! every step of random operation sequences, refused calls included.

use pi2vm::mm::pmm::{Pmm, MAX_RESERVED_RANGES};
use pi2vm::mm::{Frame, FrameAllocator, PhysAddr, PmmError};
use proptest::prelude::*;
use std::collections::BTreeSet;

const MAX_FRAMES: u32 = 700;
/// Frames of the larger memories: 256 bitmap words, so that the one-bit-per-word levels span
/// several words of their own and runs of whole words have room.
const BIG_FRAMES: u32 = 8192;

#[derive(Debug, Clone)]
enum Op {
    Alloc,
    /// Frees the first frame of a live allocation.
    FreeOwned(usize),
    /// Frees any frame number, often a wrong one.
    FreeAny(u32),
    /// Frees through an address, possibly unaligned.
    FreeAddr(u32, u32),
    AllocContiguous {
        count: u32,
        align: u32,
        limit: Option<u32>,
    },
    /// Frees the rest of a live allocation in one call.
    FreeRunOwned(usize),
    FreeRunAny(u32, u32),
    Reserve(u32, u32),
}

fn align() -> impl Strategy<Value = u32> {
    prop_oneof![
        8 => (0u32..8).prop_map(|s| 1 << s),
        1 => Just(1 << 31),
        1 => prop_oneof![Just(0), Just(3), Just(24), Just(u32::MAX)],
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let any_frame = 0u32..MAX_FRAMES + 40;
    prop_oneof![
        8 => Just(Op::Alloc),
        5 => any::<usize>().prop_map(Op::FreeOwned),
        1 => any_frame.clone().prop_map(Op::FreeAny),
        1 => (any_frame.clone(), prop_oneof![Just(0u32), 1u32..4096]).prop_map(|(f, o)| Op::FreeAddr(f, o)),
        5 => (0u32..80, align(), proptest::option::of(0u32..(MAX_FRAMES + 40) * 4096))
            .prop_map(|(count, align, limit)| Op::AllocContiguous { count, align, limit }),
        3 => any::<usize>().prop_map(Op::FreeRunOwned),
        1 => (any_frame.clone(), 0u32..80).prop_map(|(f, n)| Op::FreeRunAny(f, n)),
        2 => (any_frame, 0u32..24).prop_map(|(f, n)| Op::Reserve(f, n)),
    ]
}

/// Operations for the larger memories: mostly runs of whole words (the `full` level; up to 40
/// words, aligned to 1 to 128 words), runs of up to a few words in the bitmap, and frees of whole
/// words at random (mostly refused).
fn big_op() -> impl Strategy<Value = Op> {
    let any_frame = 0u32..BIG_FRAMES + 40;
    let limit = proptest::option::of(0u32..(BIG_FRAMES + 40) * 4096);
    prop_oneof![
        4 => Just(Op::Alloc),
        3 => any::<usize>().prop_map(Op::FreeOwned),
        8 => (1u32..=40, 0u32..8, limit.clone()).prop_map(|(w, s, limit)| Op::AllocContiguous {
            count: w * 32,
            align: 32 << s,
            limit,
        }),
        4 => (1u32..100, 0u32..10, limit).prop_map(|(count, s, limit)| Op::AllocContiguous {
            count,
            align: 1 << s,
            limit,
        }),
        4 => any::<usize>().prop_map(Op::FreeRunOwned),
        1 => (0u32..BIG_FRAMES / 32 + 2, 1u32..40).prop_map(|(w, n)| Op::FreeRunAny(w * 32, n * 32)),
        1 => (any_frame.clone(), 0u32..80).prop_map(|(f, n)| Op::FreeRunAny(f, n)),
        1 => (any_frame, 0u32..64).prop_map(|(f, n)| Op::Reserve(f, n)),
    ]
}

/// What the PMM should hold.
struct Model {
    frames: u32,
    free: BTreeSet<u32>,
    reserved: BTreeSet<u32>,
    /// Live allocations (first frame, frames) handed out and not yet returned.
    runs: Vec<(u32, u32)>,
}

impl Model {
    fn is_allocated(&self, f: u32) -> bool {
        f < self.frames && !self.free.contains(&f) && !self.reserved.contains(&f)
    }

    /// The maximal runs of a set of frames, as the PMM reports reserved ranges.
    fn runs_of(set: &BTreeSet<u32>) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        for &f in set {
            match out.last_mut() {
                Some((s, n)) if *s + *n == f => *n += 1,
                _ => out.push((f, 1)),
            }
        }
        out
    }

    /// The lowest aligned run of `count` free frames ending at or below `end`.
    fn lowest_fit(&self, count: u32, align: u32, end: u32) -> Option<u32> {
        let mut s: u64 = 0;
        while s + count as u64 <= end as u64 {
            let s32 = s as u32;
            if (s32..s32 + count).all(|f| self.free.contains(&f)) {
                return Some(s32);
            }
            s += align as u64;
        }
        None
    }

    fn run_error(&self, first: u32, count: u32) -> Option<PmmError> {
        if count == 0 {
            Some(PmmError::ZeroCount)
        } else if first as u64 + count as u64 > self.frames as u64 {
            Some(PmmError::OutOfRange)
        } else {
            None
        }
    }

    fn expected_free_run(&self, first: u32, count: u32) -> Result<(), PmmError> {
        if let Some(e) = self.run_error(first, count) {
            return Err(e);
        }
        let range = first..first + count;
        if range.clone().any(|f| self.reserved.contains(&f)) {
            Err(PmmError::Reserved)
        } else if range.clone().any(|f| self.free.contains(&f)) {
            Err(PmmError::DoubleFree)
        } else {
            Ok(())
        }
    }

    fn apply_free_run(&mut self, first: u32, count: u32) {
        for f in first..first + count {
            self.free.insert(f);
        }
        // Forget the live allocations the run covered (wholly or partly).
        let mut kept = Vec::new();
        for &(s, n) in &self.runs {
            for (a, b) in [
                (s, s.max(first).min(s + n)),
                ((first + count).max(s).min(s + n), s + n),
            ] {
                if a < b {
                    kept.push((a, b - a));
                }
            }
        }
        self.runs = kept;
    }

    fn expected_reserve(&self, first: u32, count: u32) -> Result<(), PmmError> {
        if let Some(e) = self.run_error(first, count) {
            return Err(e);
        }
        if (first..first + count).any(|f| self.is_allocated(f)) {
            return Err(PmmError::InUse);
        }
        let mut after = self.reserved.clone();
        after.extend(first..first + count);
        if Self::runs_of(&after).len() > MAX_RESERVED_RANGES {
            return Err(PmmError::TooManyReserved);
        }
        Ok(())
    }
}

fn compare(pmm: &Pmm, m: &Model) {
    assert_eq!(pmm.total_frames(), m.frames);
    assert_eq!(pmm.free_frames() as usize, m.free.len(), "free count");
    assert!(
        pmm.levels_consistent(),
        "summary/full levels out of step with the bitmap"
    );
    assert_eq!(
        pmm.reserved_frames() as usize,
        m.reserved.len(),
        "reserved count"
    );
    assert_eq!(
        pmm.allocated_frames() as usize,
        m.frames as usize - m.free.len() - m.reserved.len()
    );
    // Both sets in order, side by side with the frames (and some past the end).
    let (mut free, mut reserved) = (m.free.iter().peekable(), m.reserved.iter().peekable());
    for f in 0..m.frames.max(MAX_FRAMES) + 40 {
        let frame = Frame::from_number(f);
        assert_eq!(
            pmm.is_free(frame),
            free.next_if_eq(&&f).is_some(),
            "frame {f} free"
        );
        assert_eq!(
            pmm.is_reserved(frame),
            reserved.next_if_eq(&&f).is_some(),
            "frame {f} reserved"
        );
    }
    let ranges: Vec<(u32, u32)> = pmm
        .reserved_ranges()
        .map(|(f, n)| (f.number(), n))
        .collect();
    assert_eq!(ranges, Model::runs_of(&m.reserved));
}

fn step(pmm: &mut Pmm, m: &mut Model, op: &Op) {
    match *op {
        Op::Alloc => match pmm.alloc_frame() {
            Ok(f) => {
                let f = f.number();
                assert!(m.free.remove(&f), "frame {f} handed out but not free");
                m.runs.push((f, 1));
            }
            Err(e) => {
                assert_eq!(e, PmmError::OutOfMemory);
                assert!(m.free.is_empty(), "out of memory with free frames left");
            }
        },
        Op::FreeOwned(pick) => {
            if m.runs.is_empty() {
                return;
            }
            let (s, _) = m.runs[pick % m.runs.len()];
            assert_eq!(
                FrameAllocator::free_frame(pmm, Frame::from_number(s)),
                Ok(())
            );
            m.apply_free_run(s, 1);
        }
        Op::FreeAny(f) => {
            let expected = if f >= m.frames {
                Err(PmmError::OutOfRange)
            } else {
                m.expected_free_run(f, 1)
            };
            assert_eq!(pmm.free_frame(Frame::from_number(f)), expected);
            if expected.is_ok() {
                m.apply_free_run(f, 1);
            }
        }
        Op::FreeAddr(f, offset) => {
            let expected = if offset != 0 {
                Err(PmmError::Unaligned)
            } else if f >= m.frames {
                Err(PmmError::OutOfRange)
            } else {
                m.expected_free_run(f, 1)
            };
            assert_eq!(pmm.free_addr(PhysAddr::new(f * 4096 + offset)), expected);
            if expected.is_ok() {
                m.apply_free_run(f, 1);
            }
        }
        Op::AllocContiguous {
            count,
            align,
            limit,
        } => {
            let end = limit.map_or(m.frames, |l| m.frames.min(l / 4096));
            let got = FrameAllocator::alloc_contiguous(pmm, count, align, limit.map(PhysAddr::new));
            if count == 0 {
                assert_eq!(got, Err(PmmError::ZeroCount));
                return;
            }
            if !align.is_power_of_two() {
                assert_eq!(got, Err(PmmError::BadAlignment));
                return;
            }
            let lowest = m.lowest_fit(count, align, end);
            match (got, lowest) {
                (Err(e), None) => assert_eq!(e, PmmError::OutOfMemory),
                (Err(e), Some(s)) => panic!("{e:?} although frames {s}..+{count} fit"),
                (Ok(f), None) => panic!("handed out {f:?} although nothing fits"),
                (Ok(f), Some(s)) => {
                    let f = f.number();
                    assert_eq!(f % align, 0, "alignment");
                    assert!(f + count <= end, "limit");
                    if !(count == 1 && align == 1 && end == m.frames) {
                        assert_eq!(f, s, "not the lowest fit");
                    }
                    for x in f..f + count {
                        assert!(m.free.remove(&x), "frame {x} handed out but not free");
                    }
                    m.runs.push((f, count));
                }
            }
        }
        Op::FreeRunOwned(pick) => {
            if m.runs.is_empty() {
                return;
            }
            let (s, n) = m.runs[pick % m.runs.len()];
            assert_eq!(pmm.free_contiguous(Frame::from_number(s), n), Ok(()));
            m.apply_free_run(s, n);
        }
        Op::FreeRunAny(first, count) => {
            let expected = m.expected_free_run(first, count);
            assert_eq!(
                pmm.free_contiguous(Frame::from_number(first), count),
                expected
            );
            if expected.is_ok() {
                m.apply_free_run(first, count);
            }
        }
        Op::Reserve(first, count) => {
            let expected = m.expected_reserve(first, count);
            assert_eq!(pmm.reserve(Frame::from_number(first), count), expected);
            if expected.is_ok() {
                for f in first..first + count {
                    m.free.remove(&f);
                    m.reserved.insert(f);
                }
            }
        }
    }
}

fn run(frames: u32, boot_reserved: u32, ops: &[Op]) {
    let mut storage = vec![0u32; Pmm::storage_words(frames)];
    let mut pmm = Pmm::new(&mut storage, frames).unwrap();
    let mut m = Model {
        frames,
        free: (0..frames).collect(),
        reserved: BTreeSet::new(),
        runs: Vec::new(),
    };
    let boot = boot_reserved.min(frames);
    if boot > 0 {
        pmm.reserve(Frame::from_number(0), boot).unwrap();
        for f in 0..boot {
            m.free.remove(&f);
            m.reserved.insert(f);
        }
    }
    compare(&pmm, &m);
    for op in ops {
        step(&mut pmm, &mut m, op);
        compare(&pmm, &m);
    }
    // Nothing lost: returning every live allocation gives back every unreserved frame.
    for (s, n) in std::mem::take(&mut m.runs) {
        pmm.free_contiguous(Frame::from_number(s), n).unwrap();
        m.apply_free_run(s, n);
    }
    compare(&pmm, &m);
    assert_eq!(pmm.free_frames() + pmm.reserved_frames(), frames);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_agree_with_the_model(
        frames in 1u32..=MAX_FRAMES,
        boot_reserved in 0u32..50,
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        run(frames, boot_reserved, &ops);
    }

    #[test]
    fn small_memories_under_pressure_agree_with_the_model(
        frames in 1u32..=70,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        run(frames, 0, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn larger_memories_with_runs_of_whole_words_agree_with_the_model(
        frames in 1u32..=BIG_FRAMES,
        // Often whole words, so that runs of whole words start right after the boot reservations
        // and the bottom of memory can fill up.
        boot_reserved in prop_oneof![0u32..300, (0u32..10).prop_map(|w| w * 32)],
        ops in proptest::collection::vec(big_op(), 1..120),
    ) {
        run(frames, boot_reserved, &ops);
    }
}
