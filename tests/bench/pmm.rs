//! Host benchmark: the bitmap PMM against `buddy_system_allocator::FrameAllocator`.
//!
//! Run with `cargo bench --bench pmm`. Both allocators manage the same 1 GiB (262144 frames, the
//! first 64 reserved as firmware and kernel), start from the same state and run the same operation
//! sequence. Each case runs `REPS` rounds; a round runs the PMM and buddy back to back (which one
//! goes first alternates), each from a fresh state.
//!
//! Timing is made to survive a shared, busy machine. A run is timed in laps of a fixed number of
//! operations (a few microseconds each) with `std::time::Instant`; since the operations are the
//! same in every round, lap `k` of one round and lap `k` of another time the same work, and the
//! figure of an allocator is the sum over laps of each lap's least time over the rounds, divided
//! by the operations. Someone else taking the CPU slows down a few laps of one round, rarely the
//! same lap in every round, so it drops out; what is left is what the code costs. Both allocators
//! are measured the same way, in the same rounds.
//!
//! Output, one line per case: `ns <case> pmm <ns/op> buddy <ns/op>` and `ratio <case> <buddy/pmm>`,
//! then `metadata pmm <bytes>` and `metadata buddy <bytes>`. Buddy's metadata is measured, not
//! guessed: a counting global allocator records the heap bytes its per-order `BTreeSet`s hold
//! (allocator bookkeeping of the heap itself not included) in the randomly half-full state of
//! case `single-half-full`, plus the size of the struct.

use buddy_system_allocator::FrameAllocator as Buddy;
use pi2vm::mm::pmm::Pmm;
use pi2vm::mm::Frame;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Heap bytes currently allocated by the process.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees hold; the counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded from our caller, who upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded from our caller: `ptr` came from `alloc` with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FRAMES: u32 = 262_144;
const RESERVED: u32 = 64;
/// 2^(ORDER-1) = 2^18 frames: the smallest buddy order that holds the whole gigabyte in one block.
const ORDER: usize = 19;
/// Rounds per case.
const REPS: usize = 15;

type BuddyAlloc = Buddy<ORDER>;

/// xorshift64*, seeded: the same "random" holes on every run and for both allocators.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The frames left free in the half-full state: each unreserved frame with probability 1/2.
fn holes() -> Vec<bool> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    (0..FRAMES)
        .map(|f| f >= RESERVED && rng.next() >> 63 == 1)
        .collect()
}

fn new_pmm<'a>(storage: &'a mut [u32], free: Option<&[bool]>) -> Pmm<'a> {
    let mut pmm = Pmm::new(storage, FRAMES).unwrap();
    pmm.reserve(Frame::from_number(0), RESERVED).unwrap();
    if let Some(free) = free {
        pmm.alloc_contiguous(FRAMES - RESERVED, 1, None).unwrap();
        for (f, _) in free.iter().enumerate().filter(|(_, &h)| h) {
            pmm.free_frame(Frame::from_number(f as u32)).unwrap();
        }
    }
    pmm
}

fn new_buddy(free: Option<&[bool]>) -> BuddyAlloc {
    let mut b = BuddyAlloc::new();
    match free {
        None => b.add_frame(RESERVED as usize, FRAMES as usize),
        Some(free) => {
            let mut f = 0;
            while f < free.len() {
                if free[f] {
                    let start = f;
                    while f < free.len() && free[f] {
                        f += 1;
                    }
                    b.add_frame(start, f);
                } else {
                    f += 1;
                }
            }
        }
    }
    b
}

/// The lap times of one run.
struct Laps {
    last: Instant,
    times: Vec<f64>,
}

impl Laps {
    fn new() -> Self {
        Self {
            last: Instant::now(),
            times: Vec::with_capacity(4096),
        }
    }

    /// Starts the clock (after the state is set up).
    fn start(&mut self) {
        self.times.clear();
        self.last = Instant::now();
    }

    /// Ends a lap and starts the next.
    #[inline]
    fn lap(&mut self) {
        let now = Instant::now();
        self.times.push((now - self.last).as_secs_f64());
        self.last = now;
    }
}

/// Runs `REPS` rounds of `pmm` and `buddy` (each sets up its state, calls [`Laps::start`], runs
/// its operations calling [`Laps::lap`] every so many, and ends with a lap), alternating which
/// goes first, and returns for each the sum over laps of the least time of that lap, divided by
/// `ops`, in ns.
fn duel(ops: u64, mut pmm: impl FnMut(&mut Laps), mut buddy: impl FnMut(&mut Laps)) -> (f64, f64) {
    fn keep_least(best: &mut Vec<f64>, laps: &Laps) {
        if best.is_empty() {
            best.extend_from_slice(&laps.times);
        }
        assert_eq!(best.len(), laps.times.len(), "the same work in every round");
        for (b, &t) in best.iter_mut().zip(&laps.times) {
            *b = b.min(t);
        }
    }
    let (mut p, mut b) = (Vec::new(), Vec::new());
    let mut laps = Laps::new();
    for round in 0..REPS {
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                pmm(&mut laps);
                keep_least(&mut p, &laps);
            } else {
                buddy(&mut laps);
                keep_least(&mut b, &laps);
            }
        }
    }
    let per_op = |best: Vec<f64>| best.iter().sum::<f64>() * 1e9 / ops as f64;
    (per_op(p), per_op(b))
}

/// `ops` allocations through a FIFO window of `W` live ones: allocate, then free the one
/// allocated `W` steps earlier; at the end the rest, oldest first; a lap every `lap` steps. The
/// window is a fixed ring (`W` a power of two), so the harness adds a few instructions per step,
/// the same for both allocators, instead of a `VecDeque`'s bookkeeping.
fn windowed<S, T: Copy, const W: usize>(
    state: &mut S,
    ops: u64,
    lap: usize,
    laps: &mut Laps,
    alloc: impl Fn(&mut S) -> T,
    free: impl Fn(&mut S, T),
) {
    let mut ring: [Option<T>; W] = [None; W];
    laps.start();
    for i in 0..ops as usize {
        let x = black_box(alloc(state));
        if let Some(old) = ring[i % W].replace(x) {
            free(state, old);
        }
        if i % lap == lap - 1 {
            laps.lap();
        }
    }
    for i in ops as usize..ops as usize + W {
        if let Some(old) = ring[i % W].take() {
            free(state, old);
        }
    }
    laps.lap();
    black_box(state);
}

fn report(case: &str, pmm: f64, buddy: f64) {
    println!("ns {case} pmm {pmm:.1} buddy {buddy:.1}");
    println!("ratio {case} {:.2}", buddy / pmm);
}

/// Single frames through a FIFO window: allocate one, free the one allocated `WINDOW` steps ago.
const WINDOW: usize = 64;
const SINGLE_OPS: u64 = 1_000_000;
/// Steps per lap: some microseconds for the PMM.
const SINGLE_LAP: usize = 1024;

fn single_pmm(pmm: &mut Pmm, laps: &mut Laps) {
    windowed::<_, _, WINDOW>(
        pmm,
        SINGLE_OPS,
        SINGLE_LAP,
        laps,
        |p| p.alloc_frame().unwrap(),
        |p, f| p.free_frame(f).unwrap(),
    );
}

fn single_buddy(b: &mut BuddyAlloc, laps: &mut Laps) {
    windowed::<_, _, WINDOW>(
        b,
        SINGLE_OPS,
        SINGLE_LAP,
        laps,
        |b| b.alloc(1).unwrap(),
        |b, f| b.dealloc(f, 1),
    );
}

/// Contiguous runs of `count` frames aligned to `count` through a window of `CONTIG_WINDOW`.
const CONTIG_WINDOW: usize = 8;
const CONTIG_LAP: usize = 256;

fn contig_pmm(pmm: &mut Pmm, count: u32, ops: u64, laps: &mut Laps) {
    windowed::<_, _, CONTIG_WINDOW>(
        pmm,
        ops,
        CONTIG_LAP,
        laps,
        |p| p.alloc_contiguous(count, count, None).unwrap(),
        |p, f| p.free_contiguous(f, count).unwrap(),
    );
}

fn contig_buddy(b: &mut BuddyAlloc, count: usize, ops: u64, laps: &mut Laps) {
    let layout = Layout::from_size_align(count, count).unwrap();
    windowed::<_, _, CONTIG_WINDOW>(
        b,
        ops,
        CONTIG_LAP,
        laps,
        |b| b.alloc_aligned(layout).unwrap(),
        |b, f| b.dealloc_aligned(f, layout),
    );
}

/// Frames per lap when filling and draining.
const FILL_LAP: usize = 4096;

fn main() {
    // `cargo bench --bench pmm -- <text>` runs only the cases whose name contains <text>.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let wanted = |case: &str| case.contains(filter.as_str());
    let mut storage = vec![0u32; Pmm::storage_words(FRAMES)];
    let holes = holes();

    // (a) single frames on an empty gigabyte.
    if wanted("single-empty") {
        let (p, b) = duel(
            SINGLE_OPS,
            |laps| single_pmm(&mut new_pmm(&mut storage, None), laps),
            |laps| single_buddy(&mut new_buddy(None), laps),
        );
        report("single-empty", p, b);
    }

    // (b) single frames on a randomly half-full gigabyte (same holes for both).
    if wanted("single-half-full") {
        let (p, b) = duel(
            SINGLE_OPS,
            |laps| single_pmm(&mut new_pmm(&mut storage, Some(&holes)), laps),
            |laps| single_buddy(&mut new_buddy(Some(&holes)), laps),
        );
        report("single-half-full", p, b);
    }

    // (c) 16 frames aligned to 64 KiB, (d) 256 frames aligned to 1 MiB, on an empty gigabyte.
    for (case, count, ops) in [
        ("contig-16-64k", 16u32, 200_000u64),
        ("contig-256-1m", 256, 100_000),
    ] {
        if !wanted(case) {
            continue;
        }
        let (p, b) = duel(
            ops,
            |laps| contig_pmm(&mut new_pmm(&mut storage, None), count, ops, laps),
            |laps| contig_buddy(&mut new_buddy(None), count as usize, ops, laps),
        );
        report(case, p, b);
    }

    // (e) every frame of the gigabyte one by one, then all freed; ns per alloc or free.
    if wanted("fill-drain-1g") {
        let n = (FRAMES - RESERVED) as usize;
        let ops = 2 * n as u64;
        let mut frames = Vec::with_capacity(n);
        let mut numbers = Vec::with_capacity(n);
        let (p, b) = duel(
            ops,
            |laps| {
                let mut pmm = new_pmm(&mut storage, None);
                frames.clear();
                laps.start();
                while let Ok(f) = pmm.alloc_frame() {
                    frames.push(f);
                    if frames.len() % FILL_LAP == 0 {
                        laps.lap();
                    }
                }
                assert_eq!(frames.len(), n);
                for (i, &f) in frames.iter().enumerate() {
                    pmm.free_frame(f).unwrap();
                    if i % FILL_LAP == FILL_LAP - 1 {
                        laps.lap();
                    }
                }
                laps.lap();
                black_box(&mut pmm);
            },
            |laps| {
                let mut bd = new_buddy(None);
                numbers.clear();
                laps.start();
                while let Some(f) = bd.alloc(1) {
                    numbers.push(f);
                    if numbers.len() % FILL_LAP == 0 {
                        laps.lap();
                    }
                }
                assert_eq!(numbers.len(), n);
                for (i, &f) in numbers.iter().enumerate() {
                    bd.dealloc(f, 1);
                    if i % FILL_LAP == FILL_LAP - 1 {
                        laps.lap();
                    }
                }
                laps.lap();
                black_box(&mut bd);
            },
        );
        report("fill-drain-1g", p, b);
    }

    // Metadata: the PMM's storage and struct; buddy's struct plus its heap in the half-full state.
    let pmm_bytes = Pmm::storage_words(FRAMES) * 4 + std::mem::size_of::<Pmm>();
    println!("metadata pmm {pmm_bytes}");
    let before = LIVE.load(Ordering::Relaxed);
    let half_full = new_buddy(Some(&holes));
    let heap = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "metadata buddy {}",
        heap + std::mem::size_of::<BuddyAlloc>()
    );
    drop(half_full);
    let before = LIVE.load(Ordering::Relaxed);
    let empty = new_buddy(None);
    let heap = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "metadata buddy-empty {}",
        heap + std::mem::size_of::<BuddyAlloc>()
    );
    drop(empty);
}
