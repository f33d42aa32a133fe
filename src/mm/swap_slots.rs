//! Swap slots: which 4 KiB slots of the swap partition hold a page, and how many page-table
//! entries (of all address spaces) refer to each.
//!
//! A slot is taken when a page is written out and given back when its last reference goes: the
//! page came back into every space that had it swapped out, or those spaces unmapped it or
//! ended. A page shared copy on write by several spaces is written once per space that swaps it
//! (each space's reference is its own), and a fork of a space with swapped pages adds one
//! reference to each of their slots, so every owner finds the same data.
//!
//! A bitmap of free slots (a word per 32 slots, searched from a rotating hint) and a count per
//! slot, both sized once when the swap partition is found: no heap grows with what processes
//! do.

use alloc::vec::Vec;
use core::fmt;

/// A slot number: page `n` of the swap partition (blocks `8n..8n+8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(pub u32);

/// Why a slot operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// Every slot is in use.
    Full,
    /// The slot is not in use (a double free, or a slot that was never taken).
    NotInUse(Slot),
    /// Past the end of the partition.
    OutOfRange(Slot),
}

impl fmt::Display for SlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => f.write_str("swap is full"),
            Self::NotInUse(s) => write!(f, "swap slot {} is not in use", s.0),
            Self::OutOfRange(s) => write!(f, "swap slot {} is past the end of swap", s.0),
        }
    }
}

/// The slots of one swap partition.
#[derive(Debug, Default)]
pub struct SwapSlots {
    /// Bit set: the slot is free.
    free: Vec<u32>,
    /// References to each slot in use (0: free).
    refs: Vec<u32>,
    /// Slots in use.
    used: u32,
    /// Where the next search starts (a word index).
    hint: usize,
}

impl SwapSlots {
    /// No swap: every allocation fails with `Full`.
    pub const fn none() -> Self {
        Self {
            free: Vec::new(),
            refs: Vec::new(),
            used: 0,
            hint: 0,
        }
    }

    /// `count` free slots.
    pub fn new(count: u32) -> Self {
        let words = count.div_ceil(32) as usize;
        let mut free = alloc::vec![u32::MAX; words];
        if !count.is_multiple_of(32) {
            // No slot past the end.
            free[words - 1] = (1u32 << (count % 32)) - 1;
        }
        Self {
            free,
            refs: alloc::vec![0; count as usize],
            used: 0,
            hint: 0,
        }
    }

    /// Slots in all.
    pub fn total(&self) -> u32 {
        self.refs.len() as u32
    }

    /// Slots in use.
    pub fn used(&self) -> u32 {
        self.used
    }

    /// References to `slot` (0: free).
    pub fn refs(&self, slot: Slot) -> u32 {
        self.refs.get(slot.0 as usize).copied().unwrap_or(0)
    }

    /// A free slot, with one reference.
    pub fn alloc(&mut self) -> Result<Slot, SlotError> {
        let words = self.free.len();
        for k in 0..words {
            let w = (self.hint + k) % words;
            let bits = self.free[w];
            if bits != 0 {
                let bit = bits.trailing_zeros();
                self.free[w] &= !(1 << bit);
                let slot = Slot(w as u32 * 32 + bit);
                self.refs[slot.0 as usize] = 1;
                self.used += 1;
                self.hint = w;
                return Ok(slot);
            }
        }
        Err(SlotError::Full)
    }

    /// One more reference to `slot` (a fork copied an entry that refers to it).
    pub fn share(&mut self, slot: Slot) -> Result<(), SlotError> {
        let r = self
            .refs
            .get_mut(slot.0 as usize)
            .ok_or(SlotError::OutOfRange(slot))?;
        if *r == 0 {
            return Err(SlotError::NotInUse(slot));
        }
        *r += 1;
        Ok(())
    }

    /// One reference fewer; the slot is free again (and `true` returned) when that was the
    /// last.
    pub fn release(&mut self, slot: Slot) -> Result<bool, SlotError> {
        let r = self
            .refs
            .get_mut(slot.0 as usize)
            .ok_or(SlotError::OutOfRange(slot))?;
        match *r {
            0 => Err(SlotError::NotInUse(slot)),
            1 => {
                *r = 0;
                self.free[slot.0 as usize / 32] |= 1 << (slot.0 % 32);
                self.used -= 1;
                Ok(true)
            }
            _ => {
                *r -= 1;
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_shared_and_freed_exactly_once() {
        let mut s = SwapSlots::new(40);
        assert_eq!(s.total(), 40);
        let taken: Vec<Slot> = (0..40).map(|_| s.alloc().unwrap()).collect();
        assert_eq!(s.alloc(), Err(SlotError::Full));
        assert_eq!(s.used(), 40);
        let mut sorted = taken.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 40, "a slot was handed out twice");
        assert!(sorted.iter().all(|x| x.0 < 40), "a slot past the end");
        s.share(taken[3]).unwrap();
        assert_eq!(s.release(taken[3]), Ok(false));
        assert_eq!(s.release(taken[3]), Ok(true));
        assert_eq!(s.release(taken[3]), Err(SlotError::NotInUse(taken[3])));
        assert_eq!(s.share(taken[3]), Err(SlotError::NotInUse(taken[3])));
        assert_eq!(s.alloc(), Ok(taken[3]));
        assert_eq!(s.release(Slot(40)), Err(SlotError::OutOfRange(Slot(40))));
        for t in taken {
            assert_eq!(s.release(t), Ok(true));
        }
        assert_eq!(s.used(), 0);
    }

    #[test]
    fn no_swap_is_always_full() {
        let mut s = SwapSlots::none();
        assert_eq!(s.alloc(), Err(SlotError::Full));
        assert_eq!(s.total(), 0);
    }
}
