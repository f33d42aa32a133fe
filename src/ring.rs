//! A fixed-size byte queue shared between an interrupt handler that fills it and the code that
//! empties it, without a lock: the console's receive buffer. Portable, tested on the host.
//!
//! One producer at a time (the caller guarantees it: the console pushes only under its receive
//! lock), any number of consumers (a consumer claims a byte with a compare-and-swap of the read
//! index, so two tasks that interleave never get the same byte). The indices count bytes ever
//! pushed and popped, wrapping; their difference is the fill level.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// A queue of at most `N` bytes; `N` is a power of two.
pub struct ByteRing<const N: usize> {
    bytes: [AtomicU8; N],
    /// Bytes ever pushed (only the producer writes it).
    head: AtomicUsize,
    /// Bytes ever popped.
    tail: AtomicUsize,
    /// Bytes refused because the queue was full.
    dropped: AtomicUsize,
}

impl<const N: usize> Default for ByteRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ByteRing<N> {
    /// An empty queue.
    pub const fn new() -> Self {
        const { assert!(N.is_power_of_two() && N <= usize::MAX / 2) };
        Self {
            bytes: [const { AtomicU8::new(0) }; N],
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        }
    }

    /// Appends `b`, or counts it as dropped and returns `false` if the queue is full.
    ///
    /// Only one context may push at a time (the producer); pushes may run concurrently with pops.
    pub fn push(&self, b: u8) -> bool {
        let head = self.head.load(Ordering::Relaxed);
        // Acquire: a slot is reused only after the pop that freed it has read it.
        let tail = self.tail.load(Ordering::Acquire);
        if head.wrapping_sub(tail) >= N {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.bytes[head % N].store(b, Ordering::Relaxed);
        // Release: a consumer that sees the new head sees the byte.
        self.head.store(head.wrapping_add(1), Ordering::Release);
        true
    }

    /// Takes the oldest byte, if any. Safe to call from several contexts at once.
    pub fn pop(&self) -> Option<u8> {
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            let head = self.head.load(Ordering::Acquire);
            if head == tail {
                return None;
            }
            // Read before claiming: the producer cannot overwrite this slot while `tail` is
            // unchanged, and if another consumer claimed it first the exchange fails and the
            // byte read is discarded.
            let b = self.bytes[tail % N].load(Ordering::Relaxed);
            match self.tail.compare_exchange_weak(
                tail,
                tail.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(b),
                Err(now) => tail = now,
            }
        }
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        let tail = self.tail.load(Ordering::Acquire);
        let head = self.head.load(Ordering::Acquire);
        head.wrapping_sub(tail).min(N)
    }

    /// Whether no byte is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most bytes it holds.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Bytes refused so far because the queue was full.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Relaxed)
    }
}
