//! A bounded pool of frames zeroed ahead of time, so that a demand-zero fault maps a ready frame
//! instead of zeroing one while the process waits.
//!
//! The kernel fills it while core 0 has nothing else to do and takes from it on faults. The
//! frames in it are taken from the frame allocator, but they are still free memory for everyone
//! else: the kernel counts them as free and hands them out when the allocator has none left.
//! The pool is a fixed array (no heap), so it is usable under any lock.

use super::addr::Frame;

/// Frames the pool holds at most (256 KiB).
pub const ZERO_POOL_FRAMES: usize = 64;

/// Zeroed frames, last in first out.
#[derive(Debug)]
pub struct ZeroPool {
    frames: [u32; ZERO_POOL_FRAMES],
    len: usize,
    /// Frames handed out zeroed, and frames zeroed into the pool, since boot.
    pub taken: u64,
    pub filled: u64,
}

impl ZeroPool {
    /// An empty pool.
    pub const fn new() -> Self {
        Self {
            frames: [0; ZERO_POOL_FRAMES],
            len: 0,
            taken: 0,
            filled: 0,
        }
    }

    /// Frames in the pool.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the pool can take another frame.
    pub fn has_room(&self) -> bool {
        self.len < ZERO_POOL_FRAMES
    }

    /// Adds `frame`, which the caller has zeroed; `Err(frame)` back when the pool is full.
    pub fn push(&mut self, frame: Frame) -> Result<(), Frame> {
        if !self.has_room() {
            return Err(frame);
        }
        self.frames[self.len] = frame.number();
        self.len += 1;
        self.filled += 1;
        Ok(())
    }

    /// A zeroed frame, if there is one.
    pub fn pop(&mut self) -> Option<Frame> {
        self.len = self.len.checked_sub(1)?;
        self.taken += 1;
        Some(Frame::from_number(self.frames[self.len]))
    }
}

impl Default for ZeroPool {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_bounded_and_hands_back_what_it_took() {
        let mut p = ZeroPool::new();
        assert!(p.pop().is_none());
        for i in 0..ZERO_POOL_FRAMES as u32 {
            p.push(Frame::from_number(100 + i)).unwrap();
        }
        let extra = Frame::from_number(7);
        assert_eq!(p.push(extra), Err(extra), "full");
        assert_eq!(p.len(), ZERO_POOL_FRAMES);
        let mut got: Vec<u32> = core::iter::from_fn(|| p.pop())
            .map(|f| f.number())
            .collect();
        got.sort_unstable();
        let want: Vec<u32> = (100..100 + ZERO_POOL_FRAMES as u32).collect();
        assert_eq!(got, want);
        assert!(p.is_empty());
        assert_eq!((p.filled, p.taken), (64, 64));
    }
}
