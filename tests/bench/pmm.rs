//! Host benchmark: the bitmap PMM against `buddy_system_allocator::FrameAllocator`.
//!
//! Run with `cargo bench --bench pmm`. Both allocators manage the same 1 GiB (262144 frames, the
//! first 64 reserved as firmware and kernel), start from the same state and run the same operation
//! sequence. Each case runs `REPS` rounds; a round sets both up afresh and runs them side by side.
//! `ns` is per allocation and its free, except in `fill-drain-1g` (per allocation or free).
//!
//! Timing is made to survive a shared, busy machine. A run is cut into laps of a fixed number of
//! operations (a few microseconds each), and the two allocators take turns lap by lap (which one
//! goes first alternates), so that whatever the machine does at a given moment, both see it. Each
//! lap is timed with `std::time::Instant`; since the operations are the same in every round, lap
//! `k` of one round and lap `k` of another time the same work, and the figure of an allocator is
//! the sum over laps of each lap's least time over the rounds, divided by the operations. Someone
//! else taking the CPU slows down a few laps of one round, rarely the same lap in every round, so
//! it drops out; what is left is what the code costs.
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

/// A benchmark run that can be advanced a lap at a time.
trait Run {
    /// Does the next lap of at most `n` operations; false when there was nothing left to do.
    fn advance(&mut self, n: usize) -> bool;
}

/// Runs `REPS` rounds; in each, `with_pmm` and `with_buddy` set up a fresh state and hand a
/// [`Run`] over it to their argument, and the two runs take turns a lap of `lap` operations at a
/// time (alternating which goes first). Returns for each the sum over laps of the least time of
/// that lap over the rounds, divided by `ops`, in ns.
fn duel(
    ops: u64,
    lap: usize,
    mut with_pmm: impl FnMut(&mut dyn FnMut(&mut dyn Run)),
    mut with_buddy: impl FnMut(&mut dyn FnMut(&mut dyn Run)),
) -> (f64, f64) {
    fn keep_least(best: &mut Vec<f64>, laps: &[f64]) {
        if best.is_empty() {
            best.extend_from_slice(laps);
        }
        assert_eq!(best.len(), laps.len(), "the same work in every round");
        for (b, &t) in best.iter_mut().zip(laps) {
            *b = b.min(t);
        }
    }
    fn timed_lap(run: &mut dyn Run, lap: usize, laps: &mut Vec<f64>) -> bool {
        let t = Instant::now();
        let more = run.advance(lap);
        laps.push(t.elapsed().as_secs_f64());
        more
    }
    let (mut best_p, mut best_b) = (Vec::new(), Vec::new());
    let (mut laps_p, mut laps_b) = (Vec::new(), Vec::new());
    for round in 0..REPS {
        laps_p.clear();
        laps_b.clear();
        with_pmm(&mut |p| {
            with_buddy(&mut |b| {
                let (mut more_p, mut more_b) = (true, true);
                let mut k = round;
                while more_p || more_b {
                    if k % 2 == 0 {
                        more_p = more_p && timed_lap(p, lap, &mut laps_p);
                        more_b = more_b && timed_lap(b, lap, &mut laps_b);
                    } else {
                        more_b = more_b && timed_lap(b, lap, &mut laps_b);
                        more_p = more_p && timed_lap(p, lap, &mut laps_p);
                    }
                    k += 1;
                }
            })
        });
        keep_least(&mut best_p, &laps_p);
        keep_least(&mut best_b, &laps_b);
    }
    let per_op = |best: Vec<f64>| best.iter().sum::<f64>() * 1e9 / ops as f64;
    (per_op(best_p), per_op(best_b))
}

/// `ops` allocations through a FIFO window of `W` live ones: allocate, then free the one
/// allocated `W` steps earlier; at the end the rest, oldest first. The window is a fixed ring
/// (`W` a power of two, `ops >= W`, laps of at least `W`), so the harness adds a few instructions
/// per step, the same for both allocators, instead of a `VecDeque`'s bookkeeping.
struct Windowed<S, T, A, F, const W: usize> {
    state: S,
    ops: usize,
    /// Steps done.
    done: usize,
    ring: Option<[T; W]>,
    alloc: A,
    free: F,
}

impl<S, T: Copy, A: Fn(&mut S) -> T, F: Fn(&mut S, T), const W: usize> Windowed<S, T, A, F, W> {
    fn new(state: S, ops: u64, alloc: A, free: F) -> Self {
        assert!(W.is_power_of_two() && ops as usize >= W);
        Self {
            state,
            ops: ops as usize,
            done: 0,
            ring: None,
            alloc,
            free,
        }
    }
}

impl<S, T: Copy, A: Fn(&mut S) -> T, F: Fn(&mut S, T), const W: usize> Run
    for Windowed<S, T, A, F, W>
{
    fn advance(&mut self, n: usize) -> bool {
        assert!(n >= W);
        let (state, alloc, free) = (&mut self.state, &self.alloc, &self.free);
        let Some(ring) = &mut self.ring else {
            // The first `W` allocations fill the window; from then on each one pushes out the
            // oldest.
            self.ring = Some(std::array::from_fn(|_| alloc(state)));
            self.done = W;
            return true;
        };
        if self.done == self.ops {
            // The rest, oldest first.
            for k in self.ops..self.ops + W {
                free(state, ring[k % W]);
            }
            self.done += 1;
            return true;
        }
        if self.done > self.ops {
            black_box(state);
            return false;
        }
        let stop = (self.done + n).min(self.ops);
        for i in self.done..stop {
            let x = alloc(state);
            let old = std::mem::replace(&mut ring[i % W], x);
            free(state, old);
        }
        self.done = stop;
        true
    }
}

/// Every frame allocated one by one until there is none left, then all freed in the same order.
struct FillDrain<S, T, A, F> {
    state: S,
    frames: Vec<T>,
    /// Frames freed so far, once allocation has run out.
    freed: Option<usize>,
    alloc: A,
    free: F,
}

impl<S, T: Copy, A: Fn(&mut S) -> Option<T>, F: Fn(&mut S, T)> FillDrain<S, T, A, F> {
    fn new(state: S, frames: usize, alloc: A, free: F) -> Self {
        Self {
            state,
            frames: Vec::with_capacity(frames),
            freed: None,
            alloc,
            free,
        }
    }
}

impl<S, T: Copy, A: Fn(&mut S) -> Option<T>, F: Fn(&mut S, T)> Run for FillDrain<S, T, A, F> {
    fn advance(&mut self, n: usize) -> bool {
        let state = &mut self.state;
        match self.freed {
            None => {
                for _ in 0..n {
                    match (self.alloc)(state) {
                        Some(f) => self.frames.push(f),
                        None => {
                            self.freed = Some(0);
                            break;
                        }
                    }
                }
                true
            }
            Some(k) if k < self.frames.len() => {
                let stop = (k + n).min(self.frames.len());
                for &f in &self.frames[k..stop] {
                    (self.free)(state, f);
                }
                self.freed = Some(stop);
                true
            }
            Some(_) => {
                black_box(state);
                false
            }
        }
    }
}

/// For the harness's closures: a refused call is a bug in the benchmark, kept out of line so
/// that the closures stay small enough to be inlined.
#[cold]
#[inline(never)]
fn refused<E: std::fmt::Debug>(e: E) -> ! {
    panic!("refused: {e:?}")
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

/// Contiguous runs of `count` frames aligned to `count` through a window of `CONTIG_WINDOW`.
const CONTIG_WINDOW: usize = 8;
const CONTIG_LAP: usize = 256;

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

    // (a) single frames on an empty gigabyte, (b) on a randomly half-full one (the same holes
    // for both).
    for (case, free) in [
        ("single-empty", None),
        ("single-half-full", Some(&holes[..])),
    ] {
        if !wanted(case) {
            continue;
        }
        let (p, b) = duel(
            SINGLE_OPS,
            SINGLE_LAP,
            |go| {
                go(&mut Windowed::<_, _, _, _, WINDOW>::new(
                    new_pmm(&mut storage, free),
                    SINGLE_OPS,
                    |p| p.alloc_frame().unwrap_or_else(|e| refused(e)),
                    |p, f| p.free_frame(f).unwrap_or_else(|e| refused(e)),
                ))
            },
            |go| {
                go(&mut Windowed::<_, _, _, _, WINDOW>::new(
                    new_buddy(free),
                    SINGLE_OPS,
                    |b| b.alloc(1).unwrap_or_else(|| refused("out of memory")),
                    |b, f| b.dealloc(f, 1),
                ))
            },
        );
        report(case, p, b);
    }

    // (c) 16 frames aligned to 64 KiB, (d) 256 frames aligned to 1 MiB, on an empty gigabyte.
    for (case, count, ops) in [
        ("contig-16-64k", 16u32, 200_000u64),
        ("contig-256-1m", 256, 100_000),
    ] {
        if !wanted(case) {
            continue;
        }
        let layout = Layout::from_size_align(count as usize, count as usize).unwrap();
        let (p, b) = duel(
            ops,
            CONTIG_LAP,
            |go| {
                go(&mut Windowed::<_, _, _, _, CONTIG_WINDOW>::new(
                    new_pmm(&mut storage, None),
                    ops,
                    |p| {
                        p.alloc_contiguous(count, count, None)
                            .unwrap_or_else(|e| refused(e))
                    },
                    |p, f| p.free_contiguous(f, count).unwrap_or_else(|e| refused(e)),
                ))
            },
            |go| {
                go(&mut Windowed::<_, _, _, _, CONTIG_WINDOW>::new(
                    new_buddy(None),
                    ops,
                    |b| {
                        b.alloc_aligned(layout)
                            .unwrap_or_else(|| refused("out of memory"))
                    },
                    |b, f| b.dealloc_aligned(f, layout),
                ))
            },
        );
        report(case, p, b);
    }

    // (e) every frame of the gigabyte one by one, then all freed; ns per alloc or free.
    if wanted("fill-drain-1g") {
        let n = (FRAMES - RESERVED) as usize;
        let (p, b) = duel(
            2 * n as u64,
            FILL_LAP,
            |go| {
                let mut run = FillDrain::new(
                    new_pmm(&mut storage, None),
                    n,
                    |p| p.alloc_frame().ok(),
                    |p, f| p.free_frame(f).unwrap_or_else(|e| refused(e)),
                );
                go(&mut run);
                assert_eq!(run.frames.len(), n);
            },
            |go| {
                let mut run =
                    FillDrain::new(new_buddy(None), n, |b| b.alloc(1), |b, f| b.dealloc(f, 1));
                go(&mut run);
                assert_eq!(run.frames.len(), n);
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
