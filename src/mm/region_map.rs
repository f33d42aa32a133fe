//! The regions of a user space, by start address: a sorted array with a lookup hint.
//!
//! Every fault and every checked copy looks up the region of an address, mostly the same region
//! as the time before (a loop touching a buffer, a stack growing). So the map remembers where
//! its last lookup landed and tries that slot first; otherwise a binary search finds it. Regions
//! never overlap, so sorting by start also sorts by end.
//!
//! A space has at most a thousand or so regions, so inserting and removing by shifting the tail
//! of the array is cheap, and the array's heap is one block whose size is known exactly: its
//! capacity is always [`capacity_for`] its length, a power of two, which is what the space
//! charges to its kernel-memory budget (see `uvm::regions_cost`).

use super::addr::VirtAddr;
use super::uvm::Region;
use alloc::collections::TryReserveError;
use alloc::vec::Vec;
use core::cell::Cell;

/// Up to this many regions after an insertion or removal point are moved by swaps; more, by
/// one memory move.
const SHORT_TAIL: usize = 4;

/// The capacity the map keeps for `n` regions: the next power of two, at least 4.
pub const fn capacity_for(n: usize) -> usize {
    let n = if n < 4 { 4 } else { n };
    n.next_power_of_two()
}

/// Regions sorted by start address, none overlapping.
#[derive(Debug, Default)]
pub struct RegionMap {
    regions: Vec<Region>,
    /// Index of the region the last lookup found (may be stale: always checked).
    hint: Cell<usize>,
}

impl Clone for RegionMap {
    fn clone(&self) -> Self {
        // The same capacity rule for the copy (a plain `Vec::clone` allocates only the length).
        let mut regions = Vec::with_capacity(self.regions.capacity());
        regions.extend(self.regions.iter().cloned());
        Self {
            regions,
            hint: Cell::new(0),
        }
    }
}

impl RegionMap {
    /// An empty map (no heap until the first region).
    pub const fn new() -> Self {
        Self {
            regions: Vec::new(),
            hint: Cell::new(0),
        }
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether there is no region.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// The heap the map takes now, in elements.
    pub fn capacity(&self) -> usize {
        self.regions.capacity()
    }

    /// The regions, by address.
    pub fn values(&self) -> core::slice::Iter<'_, Region> {
        self.regions.iter()
    }

    /// The regions, by address, taken out of the map.
    pub fn into_values(self) -> alloc::vec::IntoIter<Region> {
        self.regions.into_iter()
    }

    /// Index of the first region that ends after `va` (the one containing `va`, if any).
    fn first_ending_after(&self, va: u32) -> usize {
        self.regions.partition_point(|r| r.end().as_u32() <= va)
    }

    /// The region containing `va`.
    #[inline]
    pub fn lookup(&self, va: VirtAddr) -> Option<&Region> {
        let h = self.hint.get();
        if let Some(r) = self.regions.get(h) {
            if r.contains(va) {
                return Some(r);
            }
        }
        let i = self.first_ending_after(va.as_u32());
        let r = self.regions.get(i).filter(|r| r.contains(va))?;
        self.hint.set(i);
        Some(r)
    }

    /// The last region that starts below `end` and ends after `start`: the highest one meeting
    /// `[start, end)`.
    pub fn last_meeting(&self, start: VirtAddr, end: VirtAddr) -> Option<&Region> {
        self.last_meeting_index(start, end)
            .map(|i| &self.regions[i])
    }

    /// The regions that end after `va`, by address.
    pub fn from(&self, va: VirtAddr) -> core::slice::Iter<'_, Region> {
        self.regions[self.first_ending_after(va.as_u32())..].iter()
    }

    /// Makes room for `n` regions in all, keeping the capacity rule, or refuses (nothing changed).
    pub fn reserve_for(&mut self, n: usize) -> Result<(), TryReserveError> {
        let cap = capacity_for(n);
        if cap > self.regions.capacity() {
            self.regions.try_reserve_exact(cap - self.regions.len())?;
        }
        Ok(())
    }

    /// Gives back what the capacity rule no longer needs.
    pub fn shrink(&mut self) {
        let cap = capacity_for(self.regions.len());
        if self.regions.capacity() > cap {
            self.regions.shrink_to(cap);
        }
    }

    /// Where a region `[start, end)` would go, if it overlaps none: its index.
    pub fn free_slot(&self, start: VirtAddr, end: VirtAddr) -> Option<usize> {
        let i = self.regions.partition_point(|r| r.start < start);
        let before_ok = i == 0 || self.regions[i - 1].end() <= start;
        let after_ok = self.regions.get(i).is_none_or(|r| r.start >= end);
        (before_ok && after_ok).then_some(i)
    }

    /// Adds `region`, which overlaps none; room must have been made with
    /// [`RegionMap::reserve_for`] (so this never allocates).
    pub fn insert(&mut self, region: Region) {
        let i = self.regions.partition_point(|r| r.start < region.start);
        self.insert_at(i, region);
    }

    /// Adds `region` at index `i` (from [`RegionMap::free_slot`]), room made as for `insert`.
    pub fn insert_at(&mut self, i: usize, region: Region) {
        debug_assert!(
            self.regions.len() < self.regions.capacity(),
            "room reserved"
        );
        debug_assert!(i == 0 || self.regions[i - 1].end() <= region.start);
        debug_assert!(self.regions.get(i).is_none_or(|r| r.end() > region.start));
        if self.regions.len() - i <= SHORT_TAIL {
            // A few swaps are cheaper than the general memmove.
            self.regions.push(region);
            let mut j = self.regions.len() - 1;
            while j > i {
                self.regions.swap(j - 1, j);
                j -= 1;
            }
        } else {
            self.regions.insert(i, region);
        }
        self.hint.set(i);
    }

    /// Index of the last region that starts below `end` and ends after `start`.
    pub fn last_meeting_index(&self, start: VirtAddr, end: VirtAddr) -> Option<usize> {
        let below_end = self.regions.partition_point(|r| r.start < end);
        below_end
            .checked_sub(1)
            .filter(|&i| self.regions[i].end() > start)
    }

    /// The region at index `i`.
    pub fn get(&self, i: usize) -> Option<&Region> {
        self.regions.get(i)
    }

    /// Takes out the region at index `i`.
    pub fn remove_at(&mut self, i: usize) -> Region {
        if self.regions.len() - i <= SHORT_TAIL {
            let last = self.regions.len() - 1;
            for j in i..last {
                self.regions.swap(j, j + 1);
            }
            self.regions.pop().expect("index in range")
        } else {
            self.regions.remove(i)
        }
    }

    /// Takes out the region that starts at `start`.
    pub fn remove(&mut self, start: VirtAddr) -> Option<Region> {
        let i = self.regions.partition_point(|r| r.start < start);
        if self.regions.get(i).is_some_and(|r| r.start == start) {
            Some(self.remove_at(i))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::uvm::{Backing, Perm, RegionKind};

    fn region(start: u32, pages: u32) -> Region {
        Region {
            start: VirtAddr::new(start),
            len: pages * 0x1000,
            perm: Perm::RW,
            kind: RegionKind::Anon,
            backing: Backing::Private,
            offset: 0,
        }
    }

    fn map(regions: &[(u32, u32)]) -> RegionMap {
        let mut m = RegionMap::new();
        for &(start, pages) in regions {
            m.reserve_for(m.len() + 1).unwrap();
            m.insert(region(start, pages));
        }
        m
    }

    #[test]
    fn regions_stay_sorted_and_are_found_by_any_address_inside() {
        let m = map(&[(0x5_0000, 2), (0x1_0000, 1), (0x3_0000, 4)]);
        let starts: Vec<u32> = m.values().map(|r| r.start.as_u32()).collect();
        assert_eq!(starts, [0x1_0000, 0x3_0000, 0x5_0000]);
        for (va, want) in [
            (0x1_0000, Some(0x1_0000)),
            (0x1_0fff, Some(0x1_0000)),
            (0x1_1000, None),
            (0x3_3fff, Some(0x3_0000)),
            (0x3_4000, None),
            (0x5_1000, Some(0x5_0000)),
            (0x0, None),
            (0x7fff_f000, None),
        ] {
            // Twice: the second time through the hint.
            for _ in 0..2 {
                let got = m.lookup(VirtAddr::new(va)).map(|r| r.start.as_u32());
                assert_eq!(got, want, "{va:#x}");
            }
        }
    }

    #[test]
    fn range_queries_meet_exactly_the_overlapping_regions() {
        let m = map(&[(0x1_0000, 1), (0x3_0000, 4), (0x5_0000, 2)]);
        let at = |v| VirtAddr::new(v);
        let last = |s, e| m.last_meeting(at(s), at(e)).map(|r| r.start.as_u32());
        assert_eq!(last(0x0, 0x1_0000), None);
        assert_eq!(last(0x0, 0x1_0001), Some(0x1_0000));
        assert_eq!(last(0x1_1000, 0x3_0000), None);
        assert_eq!(last(0x1_0000, 0x6_0000), Some(0x5_0000));
        assert_eq!(last(0x3_3000, 0x5_0000), Some(0x3_0000));
        let from: Vec<u32> = m.from(at(0x3_3fff)).map(|r| r.start.as_u32()).collect();
        assert_eq!(from, [0x3_0000, 0x5_0000]);
        assert_eq!(m.from(at(0x5_2000)).count(), 0);
    }

    #[test]
    fn inserting_and_removing_keep_the_order_with_short_and_long_tails() {
        let mut m = RegionMap::new();
        // Descending starts: every insertion goes in front of a growing tail.
        for i in (0..12u32).rev() {
            let (start, end) = (
                VirtAddr::new(0x10_0000 + i * 0x2000),
                VirtAddr::new(0x10_1000 + i * 0x2000),
            );
            let slot = m.free_slot(start, end).expect("free");
            assert_eq!(slot, 0);
            m.reserve_for(m.len() + 1).unwrap();
            m.insert_at(slot, region(start.as_u32(), 1));
        }
        let starts = |m: &RegionMap| m.values().map(|r| r.start.as_u32()).collect::<Vec<_>>();
        let want: Vec<u32> = (0..12).map(|i| 0x10_0000 + i * 0x2000).collect();
        assert_eq!(starts(&m), want);
        // Overlaps are refused, gaps found.
        let at = |v| VirtAddr::new(v);
        assert_eq!(m.free_slot(at(0x10_0800), at(0x10_1800)), None);
        assert_eq!(m.free_slot(at(0x10_1000), at(0x10_2000)), Some(1));
        assert_eq!(m.free_slot(at(0x10_1000), at(0x10_2001)), None);
        assert_eq!(m.free_slot(at(0x20_0000), at(0x20_1000)), Some(12));
        // Remove from the front (long tail) and near the end (short tail).
        assert_eq!(m.remove_at(0).start.as_u32(), 0x10_0000);
        assert_eq!(m.remove_at(9).start.as_u32(), 0x10_0000 + 10 * 0x2000);
        let mut want: Vec<u32> = (1..12).map(|i| 0x10_0000 + i * 0x2000).collect();
        want.retain(|&v| v != 0x10_0000 + 10 * 0x2000);
        assert_eq!(starts(&m), want);
        assert_eq!(m.last_meeting_index(at(0x10_0000), at(0x10_3000)), Some(0));
        assert_eq!(m.last_meeting_index(at(0x10_0000), at(0x10_2000)), None);
    }

    #[test]
    fn capacity_follows_the_rule_that_is_charged() {
        let mut m = RegionMap::new();
        for i in 0..9 {
            m.reserve_for(m.len() + 1).unwrap();
            m.insert(region(0x10_0000 + i * 0x1_0000, 1));
            assert_eq!(m.capacity(), capacity_for(m.len()), "{} regions", m.len());
        }
        assert_eq!(m.capacity(), 16);
        for i in 0..7 {
            assert!(m.remove(VirtAddr::new(0x10_0000 + i * 0x1_0000)).is_some());
            m.shrink();
            assert_eq!(m.capacity(), capacity_for(m.len()));
        }
        assert_eq!(m.capacity(), 4);
        assert!(m.remove(VirtAddr::new(0x10_0000)).is_none(), "already gone");
        let c = m.clone();
        assert_eq!((c.len(), c.capacity()), (2, 4));
    }
}
