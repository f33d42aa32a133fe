//! The private pages of an address space that are not mapped but not lost either: pages the
//! reclaim clock has **aged** (unmapped to learn whether they are used again; the frame is still
//! the space's) and pages written to **swap** (the data is in a swap slot).
//!
//! A page is aged by unmapping it: the MMU then reports its next use as a translation fault,
//! which maps the same frame again (the page was referenced). A page still aged when the clock
//! comes back was not used for a whole turn: it is written to swap and its frame freed. So the
//! referenced information comes from the MMU, not from a guess, at the cost of one fault per
//! used page per turn.
//!
//! Kept apart from the translation tables (whose invalid entries stay zero, so no table walk of
//! the kernel has to know about swap) in a sorted map by page, whose heap is charged to
//! [`AWAY_BUDGET`]: when it is spent, a page the clock would age stays resident.

use super::addr::{Frame, VirtAddr};
use super::frame::FrameAllocator;
use super::kmem::{Charge, KmemBudget, OverBudget};
use super::swap_slots::Slot;
use super::uvm::FrameRefs;
use alloc::collections::BTreeMap;

/// Where a non-resident private page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Away {
    /// Unmapped by the clock; the frame is still this space's (one owner in `FrameRefs`).
    Aged(Frame),
    /// In this swap slot (one reference in the slots' counts).
    Swapped(Slot),
}

/// Heap one entry may take: the entry (12 bytes) and its share of a B-tree node (nodes of at
/// most 11 entries, at least half full), rounded up.
pub const ENTRY_COST: u32 = 32;

/// The kernel heap all spaces' entries may take. Unlimited until the kernel sizes it from its
/// swap (two entries per slot: the pages in swap, and as many aged ones) and keeps the frames
/// to grow the heap that much out of user reach.
pub static AWAY_BUDGET: KmemBudget = KmemBudget::new(u32::MAX);

/// The non-resident pages of one space, by page address.
#[derive(Debug)]
pub struct Nonresident {
    pages: BTreeMap<u32, Away>,
    charge: Charge,
}

impl Default for Nonresident {
    fn default() -> Self {
        Self::new()
    }
}

impl Nonresident {
    /// None yet; entries are charged to [`AWAY_BUDGET`].
    pub fn new() -> Self {
        Self {
            pages: BTreeMap::new(),
            charge: AWAY_BUDGET.empty(),
        }
    }

    /// How many pages are away.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether no page is away.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Pages in swap.
    pub fn swapped(&self) -> usize {
        self.pages
            .values()
            .filter(|a| matches!(a, Away::Swapped(_)))
            .count()
    }

    /// Where the page at `va` (page aligned) is, if it is away.
    #[inline]
    pub fn get(&self, va: VirtAddr) -> Option<Away> {
        if self.pages.is_empty() {
            return None;
        }
        self.pages.get(&va.as_u32()).copied()
    }

    /// Records the page at `va` as away, or refuses (nothing changed) when the budget cannot
    /// pay for the entry.
    pub fn insert(&mut self, va: VirtAddr, away: Away) -> Result<(), OverBudget> {
        let n = self.pages.len() as u32 + 1;
        self.charge.resize(n * ENTRY_COST)?;
        if self.pages.insert(va.as_u32(), away).is_some() {
            // Replaced an entry: one entry fewer than charged.
            let _ = self.charge.resize((n - 1) * ENTRY_COST);
        }
        Ok(())
    }

    /// Replaces the entry of `va` (which must be there).
    pub fn replace(&mut self, va: VirtAddr, away: Away) {
        if let Some(a) = self.pages.get_mut(&va.as_u32()) {
            *a = away;
        }
    }

    /// Forgets the page at `va` (it is mapped again); returns where it was.
    pub fn remove(&mut self, va: VirtAddr) -> Option<Away> {
        let a = self.pages.remove(&va.as_u32())?;
        let _ = self.charge.resize(self.pages.len() as u32 * ENTRY_COST);
        Some(a)
    }

    /// The entries in `[from, to)`, in address order.
    pub fn range(
        &self,
        from: VirtAddr,
        to: VirtAddr,
    ) -> impl Iterator<Item = (VirtAddr, Away)> + '_ {
        self.pages
            .range(from.as_u32()..to.as_u32())
            .map(|(&va, &a)| (VirtAddr::new(va), a))
    }

    /// Gives up the pages in `[from, to)` (`munmap`, teardown): an aged frame goes back to
    /// `alloc` with its last owner, a slot loses one reference. Keeps going after an error;
    /// returns whether all went well.
    pub fn release_range<A: FrameAllocator>(
        &mut self,
        from: VirtAddr,
        to: VirtAddr,
        refs: &mut FrameRefs,
        alloc: &mut A,
    ) -> bool {
        if self.pages.is_empty() {
            return true;
        }
        let doomed: alloc::vec::Vec<(u32, Away)> = self
            .pages
            .range(from.as_u32()..to.as_u32())
            .map(|(&v, &a)| (v, a))
            .collect();
        let mut ok = true;
        for (va, away) in doomed {
            self.pages.remove(&va);
            match away {
                Away::Aged(frame) => {
                    if refs.release(frame) && alloc.free_frame(frame).is_err() {
                        ok = false;
                    }
                }
                Away::Swapped(slot) => {
                    if refs.swap.release(slot).is_err() {
                        ok = false;
                    }
                }
            }
        }
        let _ = self.charge.resize(self.pages.len() as u32 * ENTRY_COST);
        ok
    }

    /// A copy for a forked child: every aged frame and every slot gets one more owner, so
    /// parent and child each find the same data. Refused (nothing changed) when the child's
    /// budget cannot pay for the entries.
    pub fn fork(&self, refs: &mut FrameRefs) -> Result<Self, OverBudget> {
        let charge = AWAY_BUDGET.charge(self.pages.len() as u32 * ENTRY_COST)?;
        for away in self.pages.values() {
            match *away {
                Away::Aged(frame) => refs.share(frame),
                Away::Swapped(slot) => {
                    // Every slot here has this space's reference.
                    let _ = refs.swap.share(slot);
                }
            }
        }
        Ok(Self {
            pages: self.pages.clone(),
            charge,
        })
    }
}
