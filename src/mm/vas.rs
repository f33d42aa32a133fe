//! Address spaces: the kernel half (TTBR1) and user spaces (TTBR0), built from short descriptors.
//!
//! # How the tables are laid out
//!
//! With TTBCR.N = 1 (ARM ARM B3.5.4 "Selecting between TTBR0 and TTBR1") a virtual address below
//! 2 GiB is translated through TTBR0, whose L1 table then has only 2048 entries (8 KiB, 8 KiB
//! aligned); the rest through TTBR1, whose table is a full 16 KiB one of which only entries
//! 2048..4095 are ever used. So:
//!
//! * the **kernel space** adopts the 16 KiB table at physical 0x4000 that the boot stub built and
//!   manages its upper half (slots 2048..4095), with global entries;
//! * a **user space** owns an 8 KiB table (two contiguous frames, 8 KiB aligned) for slots
//!   0..2047, with non-global entries tagged by its ASID and PXN on every entry, so the kernel
//!   never executes user memory.
//!
//! # L2 tables without a heap
//!
//! The kernel heap grows by mapping pages through this code, so nothing here may allocate from
//! the heap. An L2 table is 1 KiB, a frame holds four: the frame serves the four consecutive L1
//! slots `slot & !3 ..= slot | 3`, and slot `s` uses quarter `s & 3`. A slot that needs a table
//! looks at its three siblings' L1 entries: if one points into a frame, its quarter of that frame
//! is the table (it is all zero: an unused quarter always is); otherwise a fresh frame is taken.
//!
//! Each space owns one more frame holding a 16-bit count of valid entries for each of its 2048
//! slots, kept incrementally. When a slot's count drops to 0 its L1 entry is cleared (and
//! invalidated: ARMv7 walk caches may hold L1 entries, B3.10.2) and, when none of the four
//! siblings still points into the frame, the frame goes back to the allocator. Mapping or
//! unmapping one page thus never scans a table or divides: one L1 read, one L2 read and write, one
//! count update, and the TLB maintenance. A bitmap with one bit per group of four slots says
//! which groups have an L2 frame, so that teardown need not read every L1 entry.
//!
//! # TLB maintenance
//!
//! Every operation completes its own maintenance through the [`Tlb`] trait (see
//! [`tlb`](super::tlb) for the sequence): a call that returns has published its descriptor
//! writes, invalidated what it replaced for the right (VA, ASID) and synchronised, so the
//! maintenance cannot be forgotten by a caller. Range operations issue one invalidation per entry
//! and synchronise once. The bulk copy of a fork ([`AddressSpace::share_read_only_into`]) and its
//! undo only change permissions of valid entries, publish once per table and invalidate the
//! space's whole ASID once before returning. A frame returned by an unmap is no longer reachable through any TLB.
//! Replacing a valid entry by one with another output address or memory type is done
//! break-before-make (B3.10.1): fault entry, invalidate, sync, new entry.
//!
//! Errors are values; a refused call changes nothing (a range operation that fails halfway undoes
//! what it did).

use super::addr::{Frame, Page, PhysAddr, VirtAddr, PAGE_SIZE, SECTION_SIZE};
use super::desc::{
    L1Entry, L2Entry, MapFlags, MapSize, SectionDesc, SmallPageDesc, TableDesc, Translation,
    L2_SMALL,
};
use super::frame::{FrameAllocator, PmmError};
use super::layout;
use super::phys::PhysMem;
use super::tlb::{Asid, Tlb, TlbTag};
use core::fmt;

/// Why an address-space operation was refused. A refused call changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// An address or length is not aligned to the mapping size.
    Unaligned,
    /// Something is already mapped there.
    AlreadyMapped,
    /// Nothing is mapped there.
    NotMapped,
    /// No frame for an L1 table, L2 table or the count frame.
    OutOfMemory,
    /// The address (range) is not in this space (a user space ends at 2 GiB, the kernel space
    /// starts there), or wraps past 4 GiB.
    OutsideSpace,
    /// A range of zero bytes.
    ZeroSize,
    /// The range is mapped with another granule (a page operation on a section, or a range that
    /// covers only part of a section).
    GranuleMismatch,
    /// The attributes break a rule: writable and executable (W^X), or executable Device memory.
    BadAttributes,
    /// The adopted kernel table holds L2 tables or supersections this code did not make.
    ForeignTable,
    /// The frame allocator refused to take a frame back (a broken invariant).
    Pmm(PmmError),
}

impl From<PmmError> for MapError {
    fn from(e: PmmError) -> Self {
        match e {
            PmmError::OutOfMemory => Self::OutOfMemory,
            e => Self::Pmm(e),
        }
    }
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unaligned => f.write_str("address or length not aligned"),
            Self::AlreadyMapped => f.write_str("already mapped"),
            Self::NotMapped => f.write_str("not mapped"),
            Self::OutOfMemory => f.write_str("out of memory for translation tables"),
            Self::OutsideSpace => f.write_str("outside this address space"),
            Self::ZeroSize => f.write_str("zero-sized range"),
            Self::GranuleMismatch => f.write_str("mapped with another granule"),
            Self::BadAttributes => f.write_str("attributes break W^X or execute Device memory"),
            Self::ForeignTable => f.write_str("table holds entries this code did not make"),
            Self::Pmm(e) => write!(f, "frame allocator: {e}"),
        }
    }
}

/// How a range operation may map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granule {
    /// 4 KiB pages only.
    Pages,
    /// 1 MiB sections only: addresses and length must be 1 MiB aligned.
    Sections,
    /// Sections where VA, PA and the remaining length allow, pages elsewhere.
    Auto,
}

/// One run of mappings, as reported by [`AddressSpace::for_each_mapping`]: `len` bytes at `va`
/// mapped to contiguous physical memory at `pa` with the same size and attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First virtual address.
    pub va: VirtAddr,
    /// First physical address.
    pub pa: PhysAddr,
    /// Length in bytes.
    pub len: u32,
    /// Size of each descriptor in the run.
    pub size: MapSize,
    /// Attributes, `None` when outside [`MapFlags`]'s model.
    pub flags: Option<MapFlags>,
}

/// A set of translation tables: the kernel half or one user space.
///
/// `M` reaches physical memory, `T` maintains the TLB; both are small handles (zero-sized on the
/// target). Frames come from, and go back to, the allocator passed to each call.
pub struct AddressSpace<M: PhysMem, T: Tlb> {
    mem: M,
    tlb: T,
    l1: PhysAddr,
    counts: PhysAddr,
    first_slot: usize,
    end_slot: usize,
    asid: Option<Asid>,
    /// One bit per group of four slots (counted from `first_slot`) that has an L2 frame, so
    /// that teardown finds the frames without reading every L1 entry.
    l2_groups: [u32; GROUP_WORDS],
}

const L2_TABLE_SIZE: u32 = 1024;
const SLOTS_PER_SPACE: usize = 2048;
/// Words of the bitmap of groups of four slots that have an L2 frame.
const GROUP_WORDS: usize = SLOTS_PER_SPACE / 4 / 32;
/// AP\[2\] of a small-page descriptor: set, the page is read-only (user and kernel alike).
const L2_AP2: u32 = L2_SMALL::AP2.mask << L2_SMALL::AP2.shift;
/// XN of a small-page descriptor: set, the page is never executed.
const L2_XN: u32 = L2_SMALL::XN.mask << L2_SMALL::XN.shift;

/// The pieces of the page range `[start, end)` (checked, not empty) per L1 slot: the slot and
/// the L2 indices `first..end` it covers.
fn slot_pieces(start: VirtAddr, end: VirtAddr) -> impl Iterator<Item = (usize, usize, usize)> {
    let last = VirtAddr::new(end.as_u32() - 1);
    let (first_slot, last_slot) = (start.l1_index(), last.l1_index());
    (first_slot..=last_slot).map(move |slot| {
        let first = if slot == first_slot {
            start.l2_index()
        } else {
            0
        };
        let end = if slot == last_slot {
            last.l2_index() + 1
        } else {
            256
        };
        (slot, first, end)
    })
}

impl<M: PhysMem, T: Tlb> AddressSpace<M, T> {
    /// Takes over the upper half (slots 2048..4095) of the kernel's L1 table at
    /// [`layout::KERNEL_L1_PHYS`], as the boot code left it. Sections are kept and managed. L2
    /// tables are adopted if they follow this module's layout (a table for slot `s` is quarter
    /// `s & 3` of one frame shared by the group `s & !3`, and the quarters of that frame no slot
    /// points to are all zero), and their valid entries are counted; anything else
    /// (supersections, large pages, tables laid out otherwise) is refused with `ForeignTable`.
    pub fn adopt_kernel<A: FrameAllocator>(
        mem: M,
        tlb: T,
        alloc: &mut A,
    ) -> Result<Self, MapError> {
        let l1 = layout::KERNEL_L1_PHYS;
        let entry = |slot: usize| {
            L1Entry::decode(mem.read_u32(PhysAddr::new(l1.as_u32() + 4 * slot as u32)))
        };
        for slot in SLOTS_PER_SPACE..2 * SLOTS_PER_SPACE {
            match entry(slot) {
                L1Entry::Fault | L1Entry::Section(_) => {}
                L1Entry::Table(t) => Self::check_adoptable_table(&mem, &entry, slot, t)?,
                _ => return Err(MapError::ForeignTable),
            }
        }
        let mut space = Self {
            mem,
            tlb,
            l1,
            counts: PhysAddr::new(0),
            first_slot: SLOTS_PER_SPACE,
            end_slot: 2 * SLOTS_PER_SPACE,
            asid: None,
            l2_groups: [0; GROUP_WORDS],
        };
        let counts = alloc.alloc_frame()?;
        space.zero_data_frame(counts);
        space.counts = counts.start();
        for slot in SLOTS_PER_SPACE..2 * SLOTS_PER_SPACE {
            if let L1Entry::Table(t) = space.l1_entry(slot) {
                space.set_group(slot, true);
                let valid = (0..256u32)
                    .filter(|i| {
                        let raw = space.mem.read_u32(PhysAddr::new(t.base().as_u32() + 4 * i));
                        matches!(L2Entry::decode(raw), L2Entry::SmallPage(_))
                    })
                    .count() as u16;
                let pa = space.count_pa(slot);
                space.mem.write_u16(pa, valid);
            }
        }
        Ok(space)
    }

    /// Whether the table `t` of `slot` follows the quarter-frame layout and holds small pages only.
    fn check_adoptable_table(
        mem: &M,
        entry: &impl Fn(usize) -> L1Entry,
        slot: usize,
        t: TableDesc,
    ) -> Result<(), MapError> {
        let frame = t.base().align_down(PAGE_SIZE);
        if t.base().as_u32() != frame.as_u32() + (slot as u32 & 3) * L2_TABLE_SIZE || t.pxn() {
            return Err(MapError::ForeignTable);
        }
        let group = slot & !3;
        for s in group..group + 4 {
            let quarter = PhysAddr::new(frame.as_u32() + (s as u32 & 3) * L2_TABLE_SIZE);
            match entry(s) {
                L1Entry::Table(u) if u.base().align_down(PAGE_SIZE) == frame => {}
                L1Entry::Table(_) => return Err(MapError::ForeignTable),
                _ => {
                    // A quarter no slot uses must be zero: it will be handed out as a new table.
                    if (0..256u32)
                        .any(|i| mem.read_u32(PhysAddr::new(quarter.as_u32() + 4 * i)) != 0)
                    {
                        return Err(MapError::ForeignTable);
                    }
                }
            }
        }
        if (0..256u32).any(|i| {
            let raw = mem.read_u32(PhysAddr::new(t.base().as_u32() + 4 * i));
            matches!(L2Entry::decode(raw), L2Entry::LargePage(_))
        }) {
            return Err(MapError::ForeignTable);
        }
        Ok(())
    }

    /// A new, empty user space (TTBR0 table of 8 KiB) whose entries are tagged with `asid`.
    pub fn new_user<A: FrameAllocator>(
        mem: M,
        tlb: T,
        asid: Asid,
        alloc: &mut A,
    ) -> Result<Self, MapError> {
        let l1 = alloc.alloc_contiguous(2, 2, None)?;
        let counts = match alloc.alloc_frame() {
            Ok(f) => f,
            Err(e) => {
                alloc.free_contiguous(l1, 2)?;
                return Err(e.into());
            }
        };
        let mut space = Self {
            mem,
            tlb,
            l1: l1.start(),
            counts: counts.start(),
            first_slot: 0,
            end_slot: SLOTS_PER_SPACE,
            asid: Some(asid),
            l2_groups: [0; GROUP_WORDS],
        };
        space.mem.zero_frame(l1);
        space.mem.zero_frame(Frame::from_number(l1.number() + 1));
        space.zero_data_frame(counts);
        space.tlb.publish(l1.start(), 2 * PAGE_SIZE);
        space.tlb.sync();
        Ok(space)
    }

    /// Physical address of the L1 table: the value for TTBR0 (user) or TTBR1 (kernel), to be
    /// combined with the walk attributes by the caller.
    pub fn l1_phys(&self) -> PhysAddr {
        self.l1
    }

    /// The ASID of a user space; `None` for the kernel space.
    pub fn asid(&self) -> Option<Asid> {
        self.asid
    }

    /// Gives a user space a new ASID, after an ASID rollover handed it one: only the tag used by
    /// later TLB maintenance changes, the tables stay as they are (non-global entries carry no
    /// ASID; the TLB tags them with the current ASID when it caches them).
    ///
    /// The caller must have made sure no TLB entry of the old tag survives that could be mixed
    /// up with the new one, as a rollover requires anyway (the whole TLB is invalidated before an
    /// ASID of the previous generation is handed out again). Returns `false`, changing nothing,
    /// for the kernel space, which has no ASID.
    pub fn set_asid(&mut self, asid: Asid) -> bool {
        match &mut self.asid {
            Some(a) => {
                *a = asid;
                true
            }
            None => false,
        }
    }

    /// The physical-memory handle.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// The physical-memory handle, to fill data frames (zero, copy, load) before or while they
    /// are mapped. Writing a translation table through it bypasses the TLB maintenance of this
    /// type and breaks the space.
    pub fn mem_mut(&mut self) -> &mut M {
        &mut self.mem
    }

    /// The TLB handle.
    pub fn tlb_mut(&mut self) -> &mut T {
        &mut self.tlb
    }

    /// First virtual address of the space.
    pub fn start(&self) -> VirtAddr {
        VirtAddr::new((self.first_slot as u32) << 20)
    }

    // ----- small helpers -------------------------------------------------------------------

    /// Zeroes a frame the walker never reads (the counts). It may have been an L2 table in a
    /// previous life, so the zeroes are published like table writes: the walker's view of
    /// physical memory never lags behind (one DSB, once per space).
    fn zero_data_frame(&mut self, frame: Frame) {
        self.mem.zero_frame(frame);
        self.tlb.publish(frame.start(), PAGE_SIZE);
    }

    /// The tag of this space's TLB entries: its ASID, or global for the kernel space.
    ///
    /// Which cores may hold an entry, and why the kernel's [`Tlb`] (`mmu::CpuTlb`, the
    /// inner-shareable forms) reaches them, for every invalidation in this file:
    /// * user entries (non-global, tagged with this space's ASID): only cores that ran this
    ///   space (TTBR0 walking its table) since it got that ASID, or before a rollover that let it
    ///   keep it: the core it runs on and, once processes migrate, cores it ran on earlier, which
    ///   the kernel does not track. TLBIMVAIS / TLBIASIDIS reach every core of the inner-shareable
    ///   domain, which each core joined by setting ACTLR.SMP before turning its MMU on, so no
    ///   core that ran the space is missed. Entries it cached under an ASID of an older generation
    ///   are not reached by the tag, but every core flushes its own TLB after a rollover before
    ///   it uses an ASID again (`vm::enter_user`). A space that has not run since a rollover
    ///   still carries its old ASID as tag, which may now be another space's: invalidating it
    ///   only makes that space refetch, and still reaches a core holding this space's old entries
    ///   that has not flushed yet.
    /// * kernel entries (global, the TTBR1 half every core shares): any core may hold them, so
    ///   TLBIMVAAIS / TLBIALLIS, again to every core of the domain.
    #[inline]
    fn tag(&self) -> TlbTag {
        match self.asid {
            Some(a) => TlbTag::Asid(a),
            None => TlbTag::Global,
        }
    }

    /// The space decides global and PXN: kernel entries are global and may execute at PL1,
    /// user entries are non-global and PXN.
    #[inline]
    fn normalize(&self, flags: MapFlags) -> Result<MapFlags, MapError> {
        if !flags.is_sane() {
            return Err(MapError::BadAttributes);
        }
        let user = self.asid.is_some();
        Ok(MapFlags {
            global: !user,
            pxn: user,
            ..flags
        })
    }

    #[inline]
    fn in_space(&self, va: VirtAddr) -> bool {
        let s = va.l1_index();
        s >= self.first_slot && s < self.end_slot
    }

    /// Checks `[va, va + len)` lies in the space; `len > 0`.
    fn check_range(&self, va: VirtAddr, len: u32, align: u32) -> Result<(), MapError> {
        if len == 0 {
            return Err(MapError::ZeroSize);
        }
        if !va.is_aligned(align) || len & (align - 1) != 0 {
            return Err(MapError::Unaligned);
        }
        let last = va.checked_add(len - 1).ok_or(MapError::OutsideSpace)?;
        if !self.in_space(va) || !self.in_space(last) {
            return Err(MapError::OutsideSpace);
        }
        Ok(())
    }

    #[inline]
    fn l1_pa(&self, slot: usize) -> PhysAddr {
        PhysAddr::new(self.l1.as_u32() + 4 * slot as u32)
    }

    #[inline]
    fn count_pa(&self, slot: usize) -> PhysAddr {
        PhysAddr::new(self.counts.as_u32() + 2 * (slot - self.first_slot) as u32)
    }

    #[inline]
    fn l1_entry(&self, slot: usize) -> L1Entry {
        L1Entry::decode(self.mem.read_u32(self.l1_pa(slot)))
    }

    #[inline]
    fn write_published(&mut self, pa: PhysAddr, value: u32) {
        self.mem.write_u32(pa, value);
        self.tlb.publish(pa, 4);
    }

    /// The frame of L2 tables that serves `slot`'s group of four, if a sibling has one.
    fn sibling_l2_frame(&self, slot: usize) -> Option<PhysAddr> {
        let group = slot & !3;
        (group..group + 4)
            .filter(|&s| s != slot)
            .find_map(|s| match self.l1_entry(s) {
                L1Entry::Table(t) => Some(t.base().align_down(PAGE_SIZE)),
                _ => None,
            })
    }

    /// Records whether `slot`'s group of four has an L2 frame.
    #[inline]
    fn set_group(&mut self, slot: usize, present: bool) {
        let g = (slot - self.first_slot) / 4;
        let bit = 1 << (g % 32);
        if present {
            self.l2_groups[g / 32] |= bit;
        } else {
            self.l2_groups[g / 32] &= !bit;
        }
    }

    /// An all-zero L2 table for `slot`, whose L1 entry is a fault: a quarter of the group's
    /// frame, or of a fresh one.
    fn l2_for_empty_slot<A: FrameAllocator>(
        &mut self,
        slot: usize,
        alloc: &mut A,
    ) -> Result<PhysAddr, MapError> {
        let frame = match self.sibling_l2_frame(slot) {
            Some(f) => f,
            None => {
                let f = alloc.alloc_frame()?;
                self.mem.zero_frame(f);
                self.tlb.publish(f.start(), PAGE_SIZE);
                self.set_group(slot, true);
                f.start()
            }
        };
        Ok(PhysAddr::new(
            frame.as_u32() + (slot as u32 & 3) * L2_TABLE_SIZE,
        ))
    }

    /// One more (`+1`) or one fewer (`-1`) valid entry in `slot`'s table; returns the new count.
    #[inline]
    fn adjust_count(&mut self, slot: usize, up: bool) -> u16 {
        let pa = self.count_pa(slot);
        let c = self.mem.read_u16(pa);
        let c = if up { c + 1 } else { c - 1 };
        self.mem.write_u16(pa, c);
        c
    }

    /// `slot`'s table has no valid entry left: clear its L1 entry, invalidate it (walk caches)
    /// and give the frame back when no sibling uses it any more. `va` lies in the slot.
    fn release_slot<A: FrameAllocator>(
        &mut self,
        slot: usize,
        table: PhysAddr,
        va: VirtAddr,
        alloc: &mut A,
    ) -> Result<(), MapError> {
        self.write_published(self.l1_pa(slot), 0);
        // Walk-cache copies of the L1 entry, on any core that walked it (see `tag`).
        self.tlb.invalidate_page(va, self.tag());
        if self.sibling_l2_frame(slot).is_none() {
            // The frame may be reused at once: the walker must be done with it first.
            self.tlb.sync();
            self.set_group(slot, false);
            alloc.free_frame(Frame::containing(table))?;
        }
        Ok(())
    }

    // ----- pages ---------------------------------------------------------------------------

    fn map_page_nosync<A: FrameAllocator>(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        flags: MapFlags,
        alloc: &mut A,
    ) -> Result<(), MapError> {
        let slot = va.l1_index();
        let l1_pa = self.l1_pa(slot);
        let (table, fresh) = match L1Entry::decode(self.mem.read_u32(l1_pa)) {
            L1Entry::Table(t) => (t.base(), false),
            L1Entry::Fault => (self.l2_for_empty_slot(slot, alloc)?, true),
            _ => return Err(MapError::AlreadyMapped),
        };
        let l2_pa = PhysAddr::new(table.as_u32() + 4 * va.l2_index() as u32);
        if !fresh && self.mem.read_u32(l2_pa) & 0b11 != 0 {
            return Err(MapError::AlreadyMapped);
        }
        self.write_published(l2_pa, SmallPageDesc::new(pa, flags).raw());
        if fresh {
            let user = self.asid.is_some();
            self.write_published(l1_pa, TableDesc::new(table, user).raw());
        }
        self.adjust_count(slot, true);
        Ok(())
    }

    /// Looks up the small-page descriptor of `va`: (slot, table, descriptor address, value).
    fn find_page(&self, va: VirtAddr) -> Result<(usize, PhysAddr, PhysAddr, u32), MapError> {
        if !self.in_space(va) {
            return Err(MapError::OutsideSpace);
        }
        let slot = va.l1_index();
        match self.l1_entry(slot) {
            L1Entry::Table(t) => {
                let l2_pa = PhysAddr::new(t.base().as_u32() + 4 * va.l2_index() as u32);
                let raw = self.mem.read_u32(l2_pa);
                match L2Entry::decode(raw) {
                    L2Entry::SmallPage(_) => Ok((slot, t.base(), l2_pa, raw)),
                    L2Entry::Fault => Err(MapError::NotMapped),
                    L2Entry::LargePage(_) => Err(MapError::GranuleMismatch),
                }
            }
            L1Entry::Fault => Err(MapError::NotMapped),
            _ => Err(MapError::GranuleMismatch),
        }
    }

    fn unmap_page_nosync<A: FrameAllocator>(
        &mut self,
        va: VirtAddr,
        alloc: &mut A,
    ) -> Result<PhysAddr, MapError> {
        let (slot, table, l2_pa, raw) = self.find_page(va)?;
        self.write_published(l2_pa, 0);
        // Unmap: every core that may hold the page (see `tag`), by MVA, inner-shareable.
        self.tlb.invalidate_page(va, self.tag());
        if self.adjust_count(slot, false) == 0 {
            self.release_slot(slot, table, va, alloc)?;
        }
        Ok(PhysAddr::new(raw & !(PAGE_SIZE - 1)))
    }

    /// The small page that `find_page` found.
    fn small_page(raw: u32) -> SmallPageDesc {
        match L2Entry::decode(raw) {
            L2Entry::SmallPage(p) => p,
            _ => unreachable!("find_page returns small pages only"),
        }
    }

    /// Replaces a valid descriptor at `desc_pa` (translating `va`) with `new`: in place when
    /// only permissions differ, break-before-make otherwise. Synchronises.
    ///
    /// Protect and copy on write (the write fault replaces a read-only page with a private copy)
    /// come here: the old entry may be on any core that ran the space (see `tag`), and the IS
    /// invalidation by MVA drops it there before the new one may be used.
    fn replace_valid(&mut self, va: VirtAddr, desc_pa: PhysAddr, same_output: bool, new: u32) {
        if !same_output {
            self.write_published(desc_pa, 0);
            self.tlb.invalidate_page(va, self.tag());
            self.tlb.sync();
        }
        self.write_published(desc_pa, new);
        self.tlb.invalidate_page(va, self.tag());
        self.tlb.sync();
    }

    /// Maps the 4 KiB `page` to `frame`.
    pub fn map_page<A: FrameAllocator>(
        &mut self,
        page: Page,
        frame: Frame,
        flags: MapFlags,
        alloc: &mut A,
    ) -> Result<(), MapError> {
        let va = page.start();
        if !self.in_space(va) {
            return Err(MapError::OutsideSpace);
        }
        let flags = self.normalize(flags)?;
        self.map_page_nosync(va, frame.start(), flags, alloc)?;
        // A fault entry is never cached: no invalidation, only make the new entry take effect.
        self.tlb.sync();
        Ok(())
    }

    /// Unmaps the 4 KiB `page` and returns the frame it mapped (now unreachable through the
    /// TLB). May give an emptied L2 frame back to `alloc`.
    pub fn unmap_page<A: FrameAllocator>(
        &mut self,
        page: Page,
        alloc: &mut A,
    ) -> Result<Frame, MapError> {
        let pa = self.unmap_page_nosync(page.start(), alloc)?;
        self.tlb.sync();
        Ok(Frame::containing(pa))
    }

    /// Changes the attributes of the mapped 4 KiB `page` (break-before-make when the memory
    /// type changes).
    pub fn protect_page(&mut self, page: Page, flags: MapFlags) -> Result<(), MapError> {
        let va = page.start();
        let (_, _, l2_pa, raw) = self.find_page(va)?;
        let flags = self.normalize(flags)?;
        let old = Self::small_page(raw);
        let new = SmallPageDesc::new(old.base(), flags);
        self.replace_valid(va, l2_pa, old.output_bits() == new.output_bits(), new.raw());
        Ok(())
    }

    /// Makes the mapped 4 KiB `page` point at `frame` with `flags`, break-before-make, and
    /// returns the frame it mapped before.
    pub fn remap_page(
        &mut self,
        page: Page,
        frame: Frame,
        flags: MapFlags,
    ) -> Result<Frame, MapError> {
        let va = page.start();
        let (_, _, l2_pa, raw) = self.find_page(va)?;
        let flags = self.normalize(flags)?;
        let old = Self::small_page(raw);
        let new = SmallPageDesc::new(frame.start(), flags);
        self.replace_valid(va, l2_pa, old.output_bits() == new.output_bits(), new.raw());
        Ok(Frame::containing(PhysAddr::new(raw)))
    }

    // ----- sections ------------------------------------------------------------------------

    fn map_section_nosync(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        flags: MapFlags,
    ) -> Result<(), MapError> {
        let slot = va.l1_index();
        if !matches!(self.l1_entry(slot), L1Entry::Fault) {
            return Err(MapError::AlreadyMapped);
        }
        self.write_published(self.l1_pa(slot), SectionDesc::new(pa, flags).raw());
        Ok(())
    }

    fn find_section(&self, va: VirtAddr) -> Result<(usize, SectionDesc), MapError> {
        if !va.is_aligned(SECTION_SIZE) {
            return Err(MapError::Unaligned);
        }
        if !self.in_space(va) {
            return Err(MapError::OutsideSpace);
        }
        let slot = va.l1_index();
        match self.l1_entry(slot) {
            L1Entry::Section(s) => Ok((slot, s)),
            L1Entry::Fault => Err(MapError::NotMapped),
            _ => Err(MapError::GranuleMismatch),
        }
    }

    fn unmap_section_nosync(&mut self, va: VirtAddr) -> Result<PhysAddr, MapError> {
        let (slot, s) = self.find_section(va)?;
        self.write_published(self.l1_pa(slot), 0);
        // As a page (see `tag`): sections are kernel mappings, global, on any core.
        self.tlb.invalidate_page(va, self.tag());
        Ok(s.base())
    }

    /// Maps the 1 MiB at `va` to the 1 MiB at `pa` with one section descriptor.
    pub fn map_section(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        flags: MapFlags,
    ) -> Result<(), MapError> {
        if !va.is_aligned(SECTION_SIZE) || !pa.is_aligned(SECTION_SIZE) {
            return Err(MapError::Unaligned);
        }
        if !self.in_space(va) {
            return Err(MapError::OutsideSpace);
        }
        let flags = self.normalize(flags)?;
        self.map_section_nosync(va, pa, flags)?;
        self.tlb.sync();
        Ok(())
    }

    /// Unmaps the section at `va` and returns the physical address it mapped.
    pub fn unmap_section(&mut self, va: VirtAddr) -> Result<PhysAddr, MapError> {
        let pa = self.unmap_section_nosync(va)?;
        self.tlb.sync();
        Ok(pa)
    }

    /// Changes the attributes of the section at `va` (break-before-make when the memory type
    /// changes).
    pub fn protect_section(&mut self, va: VirtAddr, flags: MapFlags) -> Result<(), MapError> {
        let (slot, s) = self.find_section(va)?;
        let flags = self.normalize(flags)?;
        let new = SectionDesc::new(s.base(), flags);
        let same = s.output_bits() == new.output_bits();
        self.replace_valid(va, self.l1_pa(slot), same, new.raw());
        Ok(())
    }

    // ----- lookups -------------------------------------------------------------------------

    /// Whether anything maps `va`: the walk of [`AddressSpace::translate`] without decoding the
    /// attributes (the first question of every page fault).
    #[inline]
    pub fn is_mapped(&self, va: VirtAddr) -> bool {
        if !self.in_space(va) {
            return false;
        }
        match self.l1_entry(va.l1_index()) {
            L1Entry::Fault => false,
            L1Entry::Table(t) => {
                let l2_pa = PhysAddr::new(t.base().as_u32() + 4 * va.l2_index() as u32);
                self.mem.read_u32(l2_pa) & 0b11 != 0
            }
            _ => true,
        }
    }

    /// Walks the tables for `va` as the MMU would (ignoring the TLB).
    pub fn translate(&self, va: VirtAddr) -> Option<Translation> {
        if !self.in_space(va) {
            return None;
        }
        let v = va.as_u32();
        match self.l1_entry(va.l1_index()) {
            L1Entry::Section(s) => Some(Translation {
                pa: PhysAddr::new(s.base().as_u32() | (v & (SECTION_SIZE - 1))),
                size: MapSize::Section,
                flags: s.flags(),
            }),
            L1Entry::Table(t) => {
                let l2_pa = PhysAddr::new(t.base().as_u32() + 4 * va.l2_index() as u32);
                match L2Entry::decode(self.mem.read_u32(l2_pa)) {
                    L2Entry::SmallPage(p) => Some(Translation {
                        pa: PhysAddr::new(p.base().as_u32() | va.page_offset()),
                        size: MapSize::Page,
                        flags: p.flags(t.pxn()),
                    }),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The first mapped address in `[from, end)` (both rounded down to 4 KiB) and its
    /// translation, skipping empty L1 slots whole: for a page, its start; for a section, `from`
    /// or the section's start, whichever is higher. `None` when nothing there is mapped. Calling
    /// it again from just past the answer walks the mappings of a range in address order.
    pub fn next_mapped(&self, from: VirtAddr, end: VirtAddr) -> Option<(VirtAddr, Translation)> {
        let (va, hit) = self.next_mapped_raw(from, end)?;
        let t = match hit {
            RawHit::Section(s) => Translation {
                pa: PhysAddr::new(s.base().as_u32() | (va.as_u32() & (SECTION_SIZE - 1))),
                size: MapSize::Section,
                flags: s.flags(),
            },
            RawHit::Page(p, pxn) => Translation {
                pa: p.base(),
                size: MapSize::Page,
                flags: p.flags(pxn),
            },
        };
        Some((va, t))
    }

    /// The address [`AddressSpace::next_mapped`] would find, without decoding what maps it
    /// (for callers that only unmap what is there).
    #[inline]
    pub fn next_mapped_va(&self, from: VirtAddr, end: VirtAddr) -> Option<VirtAddr> {
        self.next_mapped_raw(from, end).map(|(va, _)| va)
    }

    /// The walk behind [`AddressSpace::next_mapped`]: the address and its raw descriptor.
    /// Inlined: in `munmap`'s loop the first test usually finds the page (or the end) at once.
    #[inline(always)]
    fn next_mapped_raw(&self, from: VirtAddr, end: VirtAddr) -> Option<(VirtAddr, RawHit)> {
        let mut v = from.align_down(PAGE_SIZE).as_u32();
        let end = end.align_down(PAGE_SIZE).as_u32();
        while v < end {
            let va = VirtAddr::new(v);
            let slot = va.l1_index();
            if slot < self.first_slot {
                v = (self.first_slot as u32) << 20;
                continue;
            }
            if slot >= self.end_slot {
                return None;
            }
            // First address of the next slot (saturating at 4 GiB for the last one).
            let next_slot = ((slot as u32) << 20).checked_add(SECTION_SIZE);
            match self.l1_entry(slot) {
                L1Entry::Section(s) => return Some((va, RawHit::Section(s))),
                L1Entry::Table(t) => {
                    let slot_end = next_slot.map_or(end, |n| n.min(end));
                    while v < slot_end {
                        let va = VirtAddr::new(v);
                        let l2_pa = PhysAddr::new(t.base().as_u32() + 4 * va.l2_index() as u32);
                        if let L2Entry::SmallPage(p) = L2Entry::decode(self.mem.read_u32(l2_pa)) {
                            return Some((va, RawHit::Page(p, t.pxn())));
                        }
                        v += PAGE_SIZE;
                    }
                }
                _ => {}
            }
            v = next_slot?;
        }
        None
    }

    /// Calls `f` for every run of mappings, in address order. A run is a maximal sequence of
    /// descriptors of the same size and attributes mapping contiguous virtual to contiguous
    /// physical memory.
    pub fn for_each_mapping(&self, mut f: impl FnMut(Mapping)) {
        let mut run: Option<Mapping> = None;
        let mut emit = |m: Mapping, run: &mut Option<Mapping>| {
            if let Some(r) = run {
                let contiguous = r.size == m.size
                    && r.flags == m.flags
                    && r.va.as_u32().wrapping_add(r.len) == m.va.as_u32()
                    && r.pa.as_u32().wrapping_add(r.len) == m.pa.as_u32();
                if contiguous {
                    r.len += m.len;
                    return;
                }
                f(*r);
            }
            *run = Some(m);
        };
        for slot in self.first_slot..self.end_slot {
            let base = (slot as u32) << 20;
            match self.l1_entry(slot) {
                L1Entry::Section(s) => emit(
                    Mapping {
                        va: VirtAddr::new(base),
                        pa: s.base(),
                        len: SECTION_SIZE,
                        size: MapSize::Section,
                        flags: s.flags(),
                    },
                    &mut run,
                ),
                L1Entry::Table(t) => {
                    for i in 0..256u32 {
                        let raw = self.mem.read_u32(PhysAddr::new(t.base().as_u32() + 4 * i));
                        if let L2Entry::SmallPage(p) = L2Entry::decode(raw) {
                            emit(
                                Mapping {
                                    va: VirtAddr::new(base | i << 12),
                                    pa: p.base(),
                                    len: PAGE_SIZE,
                                    size: MapSize::Page,
                                    flags: p.flags(t.pxn()),
                                },
                                &mut run,
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(r) = run {
            f(r);
        }
    }

    // ----- ranges --------------------------------------------------------------------------

    /// Maps `len` bytes at `va` to `pa`, with the descriptor sizes `granule` allows. On failure
    /// everything mapped by this call is unmapped again.
    pub fn map_range<A: FrameAllocator>(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        len: u32,
        flags: MapFlags,
        granule: Granule,
        alloc: &mut A,
    ) -> Result<(), MapError> {
        let align = match granule {
            Granule::Sections => SECTION_SIZE,
            _ => PAGE_SIZE,
        };
        self.check_range(va, len, align)?;
        if !pa.is_aligned(align) {
            return Err(MapError::Unaligned);
        }
        pa.checked_add(len - 1).ok_or(MapError::OutsideSpace)?;
        let flags = self.normalize(flags)?;
        let mut done = 0;
        while done < len {
            let v = VirtAddr::new(va.as_u32() + done);
            let p = PhysAddr::new(pa.as_u32() + done);
            let section = granule != Granule::Pages
                && v.is_aligned(SECTION_SIZE)
                && p.is_aligned(SECTION_SIZE)
                && len - done >= SECTION_SIZE;
            let r = if section {
                self.map_section_nosync(v, p, flags).map(|_| SECTION_SIZE)
            } else {
                self.map_page_nosync(v, p, flags, alloc).map(|_| PAGE_SIZE)
            };
            match r {
                Ok(n) => done += n,
                Err(e) => {
                    if done > 0 {
                        self.unmap_checked_range(va, done, alloc)?;
                    }
                    self.tlb.sync();
                    return Err(e);
                }
            }
        }
        self.tlb.sync();
        Ok(())
    }

    /// Checks that all of `[va, va + len)` is mapped, by whole sections or pages.
    fn check_mapped(&self, va: VirtAddr, len: u32) -> Result<(), MapError> {
        self.check_range(va, len, PAGE_SIZE)?;
        let mut done = 0;
        while done < len {
            let v = VirtAddr::new(va.as_u32() + done);
            match self.l1_entry(v.l1_index()) {
                L1Entry::Section(_) => {
                    if !v.is_aligned(SECTION_SIZE) || len - done < SECTION_SIZE {
                        return Err(MapError::GranuleMismatch);
                    }
                    done += SECTION_SIZE;
                }
                _ => {
                    self.find_page(v)?;
                    done += PAGE_SIZE;
                }
            }
        }
        Ok(())
    }

    /// Unmaps a range already checked by `check_mapped`; does not sync.
    fn unmap_checked_range<A: FrameAllocator>(
        &mut self,
        va: VirtAddr,
        len: u32,
        alloc: &mut A,
    ) -> Result<(), MapError> {
        let mut done = 0;
        while done < len {
            let v = VirtAddr::new(va.as_u32() + done);
            if let L1Entry::Section(_) = self.l1_entry(v.l1_index()) {
                self.unmap_section_nosync(v)?;
                done += SECTION_SIZE;
            } else {
                self.unmap_page_nosync(v, alloc)?;
                done += PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// Unmaps `len` bytes at `va`, all of which must be mapped (sections wholly inside the
    /// range). The frames stay the caller's.
    pub fn unmap_range<A: FrameAllocator>(
        &mut self,
        va: VirtAddr,
        len: u32,
        alloc: &mut A,
    ) -> Result<(), MapError> {
        self.check_mapped(va, len)?;
        let r = self.unmap_checked_range(va, len, alloc);
        self.tlb.sync();
        r
    }

    /// Changes the attributes of `len` bytes at `va`, all of which must be mapped (sections
    /// wholly inside the range).
    pub fn protect_range(
        &mut self,
        va: VirtAddr,
        len: u32,
        flags: MapFlags,
    ) -> Result<(), MapError> {
        self.check_mapped(va, len)?;
        self.normalize(flags)?;
        let mut done = 0;
        while done < len {
            let v = VirtAddr::new(va.as_u32() + done);
            if let L1Entry::Section(_) = self.l1_entry(v.l1_index()) {
                self.protect_section(v, flags)?;
                done += SECTION_SIZE;
            } else {
                self.protect_page(Page::containing(v), flags)?;
                done += PAGE_SIZE;
            }
        }
        Ok(())
    }

    // ----- bulk operations: fork and teardown ----------------------------------------------

    /// Checks the page range `[start, end)` for a bulk operation: `Ok(false)` when it is empty.
    fn check_bulk_range(&self, start: VirtAddr, end: VirtAddr) -> Result<bool, MapError> {
        if end <= start {
            return if end == start {
                Ok(false)
            } else {
                Err(MapError::OutsideSpace)
            };
        }
        self.check_range(start, end.as_u32() - start.as_u32(), PAGE_SIZE)?;
        Ok(true)
    }

    /// Physical address of descriptor `index` of the L2 table at `table`.
    #[inline]
    fn l2_desc_pa(table: PhysAddr, index: usize) -> PhysAddr {
        PhysAddr::new(table.as_u32() + 4 * index as u32)
    }

    /// Adds `n` valid entries to `slot`'s count at once.
    #[inline]
    fn add_to_count(&mut self, slot: usize, n: u16) {
        let pa = self.count_pa(slot);
        let c = self.mem.read_u16(pa);
        self.mem.write_u16(pa, c + n);
    }

    /// Invalidates every TLB entry this space may have cached (its ASID; the whole TLB for the
    /// kernel space) and synchronises.
    ///
    /// Fork's write-protect and the unshare use it: the space's entries may be on every core that
    /// ran it, and TLBIASIDIS reaches them all (see `tag`).
    fn invalidate_space(&mut self) {
        match self.asid {
            Some(a) => self.tlb.invalidate_asid(a),
            None => self.tlb.invalidate_all(),
        }
        self.tlb.sync();
    }

    /// Shares the small pages mapped in `ranges` with `child`, read-only in both (the copy of a
    /// fork): each is mapped in `child` at the same address with the same descriptor but AP\[2\]
    /// set (read-only), and made read-only here where it was writable. `share` is called with
    /// the frame of every page copied. Returns the number of pages copied.
    ///
    /// Each L2 table is gone through once: `child` gets its table for the slot when the first
    /// mapped page is found (none for an empty slot), the descriptors are copied in one loop,
    /// the child's table and the changed part of this one are published once per table, and
    /// the child's count of the slot grows once.
    ///
    /// TLB maintenance:
    /// * `child` must not be live (in no TTBR, its ASID without cached entries, as a space about
    ///   to get a fresh ASID is): its entries only go from fault to valid, and a fault entry is
    ///   never cached, so publishing them is all they need.
    /// * Here, valid entries go from read/write to read-only with the same output address and
    ///   memory type: a change of permissions, which ARM ARM B3.10.1 ("General TLB maintenance
    ///   requirements") allows in place, without break-before-make, as long as the TLB entries
    ///   that may still hold the old permission are invalidated before it must no longer be
    ///   used. Instead of one TLBIMVA per page, this space's whole ASID is invalidated once
    ///   (TLBIASID, then BPIALL, DSB, ISB), after every descriptor write has been published
    ///   (DSB, or a clean to the point of coherency when walks are not coherent), and before
    ///   this returns, on success and on error alike. So when the call returns no entry of this
    ///   space anywhere in the TLB still allows a write to a page it made read-only, and the
    ///   caller (a system call of the process that owns this space) cannot return to user mode
    ///   before. Entries the invalidation drops that were not changed are only refetched.
    ///
    /// Errors: a range not page aligned or outside the space (`Unaligned`, `OutsideSpace`), a
    /// section or large page in a range (`GranuleMismatch`), `child` mapping a page of a range
    /// already (`AlreadyMapped`), no frame for a table of `child` (`OutOfMemory`). What was
    /// copied before the error stays copied, `share` having been called for each such page,
    /// and write-protected here (its TLB maintenance done): the caller undoes it, with
    /// [`AddressSpace::unshare_from`] for instance.
    pub fn share_read_only_into<A: FrameAllocator>(
        &mut self,
        child: &mut Self,
        ranges: impl IntoIterator<Item = (VirtAddr, VirtAddr)>,
        alloc: &mut A,
        mut share: impl FnMut(Frame),
    ) -> Result<u32, MapError> {
        let mut copied = 0;
        let mut protected = false;
        let mut result = Ok(());
        'ranges: for (start, end) in ranges {
            match self
                .check_bulk_range(start, end)
                .and_then(|r| child.check_bulk_range(start, end).map(|c| r && c))
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            for (slot, first, end) in slot_pieces(start, end) {
                let r = self.share_slot(
                    child,
                    slot,
                    first..end,
                    alloc,
                    &mut share,
                    &mut copied,
                    &mut protected,
                );
                if let Err(e) = r {
                    result = Err(e);
                    break 'ranges;
                }
            }
        }
        if protected {
            // Every write-protecting store was published by `share_slot` (DSB); now the one
            // invalidation by ASID that replaces a TLBIMVA per page (see above), completed by
            // BPIALL, DSB, ISB before anything can use this space's translations again.
            self.invalidate_space();
        }
        result.map(|()| copied)
    }

    /// The part of [`AddressSpace::share_read_only_into`] in one slot, L2 indices `range`.
    /// Sets `protected` when it write-protected a descriptor here (published, not invalidated).
    #[allow(clippy::too_many_arguments)]
    fn share_slot<A: FrameAllocator>(
        &mut self,
        child: &mut Self,
        slot: usize,
        range: core::ops::Range<usize>,
        alloc: &mut A,
        share: &mut impl FnMut(Frame),
        copied: &mut u32,
        protected: &mut bool,
    ) -> Result<(), MapError> {
        let table = match self.l1_entry(slot) {
            L1Entry::Fault => return Ok(()),
            L1Entry::Table(t) => t.base(),
            _ => return Err(MapError::GranuleMismatch),
        };
        // The first mapped entry: an empty piece costs the child no table.
        let mut first = None;
        for i in range.clone() {
            match self.mem.read_u32(Self::l2_desc_pa(table, i)) & 0b11 {
                0b00 => {}
                0b01 => return Err(MapError::GranuleMismatch),
                _ => {
                    first = Some(i);
                    break;
                }
            }
        }
        let Some(first) = first else {
            return Ok(());
        };
        let (dst, fresh) = match child.l1_entry(slot) {
            L1Entry::Fault => (child.l2_for_empty_slot(slot, alloc)?, true),
            L1Entry::Table(t) => (t.base(), false),
            _ => return Err(MapError::AlreadyMapped),
        };
        let mut result = Ok(());
        let mut n: u16 = 0;
        let mut changed = false;
        for i in first..range.end {
            let src = Self::l2_desc_pa(table, i);
            let raw = self.mem.read_u32(src);
            match raw & 0b11 {
                0b00 => continue,
                0b01 => {
                    result = Err(MapError::GranuleMismatch);
                    break;
                }
                _ => {}
            }
            let to = Self::l2_desc_pa(dst, i);
            // A fresh table is all zero; a table another range made may not be, here.
            if !fresh && child.mem.read_u32(to) & 0b11 != 0 {
                result = Err(MapError::AlreadyMapped);
                break;
            }
            let ro = raw | L2_AP2;
            child.mem.write_u32(to, ro);
            if ro != raw {
                self.mem.write_u32(src, ro);
                changed = true;
            }
            share(Frame::containing(PhysAddr::new(raw)));
            n += 1;
        }
        // Published from the first entry copied to the end of the piece: at most one table
        // (1 KiB, 16 cache lines when walks are not coherent), one DSB each.
        let written = 4 * (range.end - first) as u32;
        if n > 0 {
            // The child's new entries reach its walker before its L1 entry points at them (the
            // child is not live, so the order is only tidiness), then the entry itself.
            child.tlb.publish(Self::l2_desc_pa(dst, first), written);
            if fresh {
                let user = child.asid.is_some();
                child.write_published(child.l1_pa(slot), TableDesc::new(dst, user).raw());
            }
            child.add_to_count(slot, n);
            *copied += u32::from(n);
        }
        if changed {
            // Visible to the walker before the TLB invalidation that follows (B3.10.1).
            self.tlb.publish(Self::l2_desc_pa(table, first), written);
            *protected = true;
        }
        result
    }

    /// Undoes [`AddressSpace::share_read_only_into`] after a failure: for every small page
    /// `child` maps in `ranges`, calls `release(frame)`; where the range says `writable` and
    /// `release` returns `true` (this space is the frame's only owner again), the same page
    /// here, if it maps the same frame and is execute-never (W^X), is made writable again
    /// (AP\[2\] cleared). `child` is not changed: the
    /// caller tears it down. Ranges outside either space are skipped.
    ///
    /// TLB maintenance: making a page writable loosens a permission in place (no
    /// break-before-make, B3.10.1), but an entry still cached read-only would fault on every
    /// write without the tables ever saying why; so, as in the share, the writes are published
    /// per table and this space's ASID is invalidated once (TLBIASID, BPIALL, DSB, ISB) before
    /// this returns.
    pub fn unshare_from(
        &mut self,
        child: &Self,
        ranges: impl IntoIterator<Item = (VirtAddr, VirtAddr, bool)>,
        mut release: impl FnMut(Frame) -> bool,
    ) {
        let mut changed_any = false;
        for (start, end, writable) in ranges {
            let checked = self
                .check_bulk_range(start, end)
                .and_then(|r| child.check_bulk_range(start, end).map(|c| r && c));
            if checked != Ok(true) {
                continue;
            }
            for (slot, first, end) in slot_pieces(start, end) {
                let L1Entry::Table(c) = child.l1_entry(slot) else {
                    continue;
                };
                let mine = match self.l1_entry(slot) {
                    L1Entry::Table(t) => Some(t.base()),
                    _ => None,
                };
                let mut changed = (usize::MAX, 0);
                for i in first..end {
                    let raw = child.mem.read_u32(Self::l2_desc_pa(c.base(), i));
                    if raw & 0b10 == 0 {
                        continue;
                    }
                    let sole = release(Frame::containing(PhysAddr::new(raw)));
                    let Some(table) = mine.filter(|_| writable && sole) else {
                        continue;
                    };
                    let pa = Self::l2_desc_pa(table, i);
                    let own = self.mem.read_u32(pa);
                    let same_frame = (own ^ raw) & !(PAGE_SIZE - 1) == 0;
                    // Execute-never pages only: W^X holds whatever the caller says.
                    let xn = own & L2_XN != 0;
                    if own & 0b10 != 0 && same_frame && xn && own & L2_AP2 != 0 {
                        self.mem.write_u32(pa, own & !L2_AP2);
                        changed = (changed.0.min(i), i + 1);
                    }
                }
                if let (Some(table), true) = (mine, changed.1 > 0) {
                    self.tlb.publish(
                        Self::l2_desc_pa(table, changed.0),
                        4 * (changed.1 - changed.0) as u32,
                    );
                    changed_any = true;
                }
            }
        }
        if changed_any {
            self.invalidate_space();
        }
    }

    /// Calls `f` with the frame of every small page mapped in `[start, end)`, in address order,
    /// reading each L2 table once and changing nothing (teardown: the caller frees what it
    /// owns, once no TLB entry can reach it). A section or large page in the range is
    /// `GranuleMismatch`, reported after the rest of the range was gone through; its frames are
    /// not passed to `f`.
    pub fn for_each_page(
        &self,
        start: VirtAddr,
        end: VirtAddr,
        mut f: impl FnMut(Frame),
    ) -> Result<(), MapError> {
        if !self.check_bulk_range(start, end)? {
            return Ok(());
        }
        let mut result = Ok(());
        for (slot, first, end) in slot_pieces(start, end) {
            let table = match self.l1_entry(slot) {
                L1Entry::Fault => continue,
                L1Entry::Table(t) => t.base(),
                _ => {
                    result = Err(MapError::GranuleMismatch);
                    continue;
                }
            };
            for i in first..end {
                let raw = self.mem.read_u32(Self::l2_desc_pa(table, i));
                match raw & 0b11 {
                    0b00 => {}
                    0b01 => result = Err(MapError::GranuleMismatch),
                    _ => f(Frame::containing(PhysAddr::new(raw))),
                }
            }
        }
        result
    }

    // ----- teardown ------------------------------------------------------------------------

    /// Whether the group bitmap says exactly which groups have an L2 table (debug check).
    fn groups_match_the_table(&self) -> bool {
        (self.first_slot..self.end_slot).step_by(4).all(|group| {
            let has = (group..group + 4).any(|s| matches!(self.l1_entry(s), L1Entry::Table(_)));
            let g = (group - self.first_slot) / 4;
            has == (self.l2_groups[g / 32] & (1 << (g % 32)) != 0)
        })
    }

    /// Gives every frame of the space back: L2 frames, the count frame and (user space) the L1
    /// table. The space must not be live in any TTBR. A user space's ASID is invalidated, so it
    /// may be reused; the kernel space clears its half and invalidates the whole TLB.
    pub fn destroy<A: FrameAllocator>(mut self, alloc: &mut A) -> Result<(), MapError> {
        let mut result = Ok(());
        if let Some(a) = self.asid {
            // Nothing of this ASID may stay cached once its frames are reused, on any core
            // that ran the space: TLBIASIDIS (see `tag`). The caller frees the ASID only after.
            self.tlb.invalidate_asid(a);
            self.tlb.sync();
        }
        debug_assert!(self.groups_match_the_table(), "L2 group bitmap out of date");
        let mut l2_frames = [PhysAddr::new(0); 4];
        // Only the groups that have an L2 frame (a 2048-slot scan would cost more than the
        // rest of a small space's teardown).
        let groups = core::mem::take(&mut self.l2_groups);
        let groups = groups.iter().enumerate().flat_map(|(w, &bits)| {
            (0..32)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| 4 * (32 * w + b))
        });
        let first_slot = self.first_slot;
        for group in groups.map(|g| first_slot + g) {
            let mut n = 0;
            for slot in group..group + 4 {
                if let L1Entry::Table(t) = self.l1_entry(slot) {
                    let f = t.base().align_down(PAGE_SIZE);
                    if !l2_frames[..n].contains(&f) {
                        l2_frames[n] = f;
                        n += 1;
                    }
                }
            }
            if n == 0 {
                continue;
            }
            if self.asid.is_none() {
                // The kernel table stays in use: clear the group and forget it before freeing.
                for slot in group..group + 4 {
                    if let L1Entry::Table(_) = self.l1_entry(slot) {
                        self.write_published(self.l1_pa(slot), 0);
                    }
                }
                self.tlb.invalidate_all();
                self.tlb.sync();
            }
            for f in &l2_frames[..n] {
                if let Err(e) = alloc.free_frame(Frame::containing(*f)) {
                    result = Err(e.into());
                }
            }
        }
        if self.asid.is_none() {
            for slot in self.first_slot..self.end_slot {
                if let L1Entry::Section(_) = self.l1_entry(slot) {
                    self.write_published(self.l1_pa(slot), 0);
                }
            }
            self.tlb.invalidate_all();
            self.tlb.sync();
        }
        if let Err(e) = alloc.free_frame(Frame::containing(self.counts)) {
            result = Err(e.into());
        }
        if self.asid.is_some() {
            if let Err(e) = alloc.free_contiguous(Frame::containing(self.l1), 2) {
                result = Err(e.into());
            }
        }
        result
    }
}

/// What maps an address, undecoded: a section, or a small page and its table's PXN.
enum RawHit {
    Section(SectionDesc),
    Page(SmallPageDesc, bool),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::desc::{Access, MemoryType};
    use crate::mm::phys::{HostFrames, HostRam};
    use crate::mm::tlb::EmulatedTlb;

    type Space = AddressSpace<HostRam, EmulatedTlb>;

    const RAM: u32 = 8 << 20;
    const A1: Asid = Asid::new(1);
    const A2: Asid = Asid::new(2);

    struct Rig {
        ram: HostRam,
        tlb: EmulatedTlb,
        alloc: HostFrames,
    }

    impl Rig {
        fn new() -> Self {
            let ram = HostRam::new(RAM);
            let tlb = EmulatedTlb::new(&ram);
            let alloc = HostFrames::new(Frame::from_number(0x100), (RAM >> 12) - 0x100);
            Self { ram, tlb, alloc }
        }

        fn kernel(&mut self) -> Space {
            Space::adopt_kernel(self.ram.clone(), self.tlb.clone(), &mut self.alloc).unwrap()
        }

        fn user(&mut self, asid: Asid) -> Space {
            Space::new_user(self.ram.clone(), self.tlb.clone(), asid, &mut self.alloc).unwrap()
        }

        /// Translation through the emulated MMU and TLB, as the CPU would see it.
        fn mmu(&mut self, space: &Space, va: u32) -> Option<Translation> {
            let (ttbr0, asid) = match space.asid() {
                Some(a) => (space.l1_phys(), a),
                None => (PhysAddr::new(0x8000), Asid::new(0)),
            };
            self.tlb
                .translate(ttbr0, asid, layout::KERNEL_L1_PHYS, VirtAddr::new(va))
        }

        fn mmu_pa(&mut self, space: &Space, va: u32) -> Option<u32> {
            self.mmu(space, va).map(|t| t.pa.as_u32())
        }
    }

    fn page(va: u32) -> Page {
        Page::from_start(VirtAddr::new(va)).unwrap()
    }

    fn frame(pa: u32) -> Frame {
        Frame::from_start(PhysAddr::new(pa)).unwrap()
    }

    #[test]
    fn a_mapped_page_translates_to_its_frame_with_its_flags() {
        let mut r = Rig::new();
        let mut u = r.user(A1);
        u.map_page(
            page(0x1000),
            frame(0x7_0000),
            MapFlags::USER_DATA,
            &mut r.alloc,
        )
        .unwrap();
        let t = u.translate(VirtAddr::new(0x1234)).unwrap();
        assert_eq!(t.pa, PhysAddr::new(0x7_0234));
        assert_eq!(t.size, MapSize::Page);
        assert_eq!(t.flags, Some(MapFlags::USER_DATA));
        assert_eq!(r.mmu(&u, 0x1234), Some(t));
        assert_eq!(u.translate(VirtAddr::new(0x2000)), None);
    }

    #[test]
    fn the_space_sets_global_and_pxn_by_half() {
        let mut r = Rig::new();
        let mut k = r.kernel();
        let mut u = r.user(A1);
        k.map_page(
            page(0xC000_0000),
            frame(0x7_0000),
            MapFlags::USER_DATA,
            &mut r.alloc,
        )
        .unwrap();
        u.map_page(
            page(0x1000),
            frame(0x7_0000),
            MapFlags::KERNEL_DATA,
            &mut r.alloc,
        )
        .unwrap();
        let kf = k
            .translate(VirtAddr::new(0xC000_0000))
            .unwrap()
            .flags
            .unwrap();
        assert!(kf.global && !kf.pxn);
        let uf = u.translate(VirtAddr::new(0x1000)).unwrap().flags.unwrap();
        assert!(!uf.global && uf.pxn);
    }

    #[test]
    fn mapping_over_a_mapping_is_refused_and_changes_nothing() {
        let mut r = Rig::new();
        let mut u = r.user(A1);
        u.map_page(
            page(0x1000),
            frame(0x7_0000),
            MapFlags::USER_DATA,
            &mut r.alloc,
        )
        .unwrap();
        assert_eq!(
            u.map_page(
                page(0x1000),
                frame(0x8_0000),
                MapFlags::USER_DATA,
                &mut r.alloc
            ),
            Err(MapError::AlreadyMapped)
        );
        u.map_section(
            VirtAddr::new(0x10_0000),
            PhysAddr::new(0x10_0000),
            MapFlags::USER_DATA,
        )
        .unwrap();
        assert_eq!(
            u.map_page(
                page(0x10_5000),
                frame(0x8_0000),
                MapFlags::USER_DATA,
                &mut r.alloc
            ),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(
            u.map_section(VirtAddr::new(0), PhysAddr::new(0), MapFlags::USER_DATA),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(
            u.translate(VirtAddr::new(0x1000)).unwrap().pa,
            PhysAddr::new(0x7_0000)
        );
    }

    #[test]
    fn each_space_refuses_addresses_of_the_other_half() {
        let mut r = Rig::new();
        let mut k = r.kernel();
        let mut u = r.user(A1);
        let f = frame(0x7_0000);
        assert_eq!(
            u.map_page(page(0x8000_0000), f, MapFlags::USER_DATA, &mut r.alloc),
            Err(MapError::OutsideSpace)
        );
        assert_eq!(
            k.map_page(page(0x7FFF_F000), f, MapFlags::KERNEL_DATA, &mut r.alloc),
            Err(MapError::OutsideSpace)
        );
        assert_eq!(
            u.map_range(
                VirtAddr::new(0x7FFF_F000),
                PhysAddr::new(0x7_0000),
                0x2000,
                MapFlags::USER_DATA,
                Granule::Pages,
                &mut r.alloc
            ),
            Err(MapError::OutsideSpace)
        );
        assert_eq!(
            k.map_range(
                VirtAddr::new(0xFFFF_F000),
                PhysAddr::new(0x7_0000),
                0x2000,
                MapFlags::KERNEL_DATA,
                Granule::Pages,
                &mut r.alloc
            ),
            Err(MapError::OutsideSpace)
        );
        // Page 0 is the process layer's business.
        u.map_page(page(0), f, MapFlags::USER_DATA, &mut r.alloc)
            .unwrap();
    }

    #[test]
    fn w_x_and_executable_device_memory_are_refused() {
        let mut r = Rig::new();
        let mut k = r.kernel();
        let wx = MapFlags::KERNEL_DATA.with_executable(true);
        assert_eq!(
            k.map_page(page(0xC000_0000), frame(0x7_0000), wx, &mut r.alloc),
            Err(MapError::BadAttributes)
        );
        let dx = MapFlags::KERNEL_TEXT.with_memory(MemoryType::Device);
        assert_eq!(
            k.map_section(VirtAddr::new(0xC000_0000), PhysAddr::new(0), dx),
            Err(MapError::BadAttributes)
        );
    }

    #[test]
    fn unmap_invalidates_the_tlb_entry_of_that_asid() {
        let mut r = Rig::new();
        let mut u1 = r.user(A1);
        let mut u2 = r.user(A2);
        for u in [&mut u1, &mut u2] {
            u.map_page(
                page(0x5000),
                frame(0x7_0000),
                MapFlags::USER_DATA,
                &mut r.alloc,
            )
            .unwrap();
            u.map_page(
                page(0x6000),
                frame(0x7_1000),
                MapFlags::USER_DATA,
                &mut r.alloc,
            )
            .unwrap();
        }
        assert_eq!(r.mmu_pa(&u1, 0x5000), Some(0x7_0000));
        assert_eq!(r.mmu_pa(&u2, 0x5000), Some(0x7_0000));
        assert_eq!(
            u1.unmap_page(page(0x5000), &mut r.alloc),
            Ok(frame(0x7_0000))
        );
        assert_eq!(r.mmu_pa(&u1, 0x5000), None);
        assert_eq!(
            r.mmu_pa(&u2, 0x5000),
            Some(0x7_0000),
            "other ASID untouched"
        );
        assert_eq!(r.tlb.pending_invalidations(), 0);
        assert_eq!(r.tlb.unpublished_words(), 0);
    }

    #[test]
    fn next_mapped_walks_a_range_skipping_empty_slots() {
        let mut r = Rig::new();
        let mut u = r.user(A1);
        for va in [0x1000, 0x2000, 0x30_5000, 0x30_f000] {
            u.map_page(
                page(va),
                frame(0x7_0000 + va % 0x10_0000),
                MapFlags::USER_DATA,
                &mut r.alloc,
            )
            .unwrap();
        }
        u.map_section(
            VirtAddr::new(0x50_0000),
            PhysAddr::new(0x20_0000),
            MapFlags::USER_RODATA,
        )
        .unwrap();
        let walk = |from: u32, end: u32| {
            let mut found = Vec::new();
            let mut v = VirtAddr::new(from);
            while let Some((va, t)) = u.next_mapped(v, VirtAddr::new(end)) {
                found.push((va.as_u32(), t.pa.as_u32(), t.size));
                v = VirtAddr::new(va.as_u32() + PAGE_SIZE);
            }
            found
        };
        assert_eq!(
            walk(0, 0x8000_0000)[..4],
            [
                (0x1000, 0x7_1000, MapSize::Page),
                (0x2000, 0x7_2000, MapSize::Page),
                (0x30_5000, 0x7_5000, MapSize::Page),
                (0x30_f000, 0x7_f000, MapSize::Page),
            ]
        );
        assert_eq!(
            walk(0x1fff, 0x30_5000).len(),
            2,
            "rounded down; end exclusive"
        );
        assert_eq!(walk(0x2001, 0x30_5fff), [(0x2000, 0x7_2000, MapSize::Page)]);
        assert_eq!(
            walk(0x50_3000, 0x50_5000),
            [
                (0x50_3000, 0x20_3000, MapSize::Section),
                (0x50_4000, 0x20_4000, MapSize::Section)
            ]
        );
        assert!(walk(0x3000, 0x30_5000).is_empty());
        assert!(
            walk(0x8000_0000, 0xffff_f000).is_empty(),
            "outside the space"
        );
        let k = r.kernel();
        assert!(k
            .next_mapped(VirtAddr::new(0), VirtAddr::new(0xC000_0000))
            .is_none());
    }

    #[test]
    fn a_user_space_takes_a_new_asid_for_later_maintenance() {
        let mut r = Rig::new();
        let mut u = r.user(A1);
        let mut k = r.kernel();
        assert!(!k.set_asid(A2), "the kernel space has no ASID");
        assert_eq!(k.asid(), None);
        u.map_page(
            page(0x5000),
            frame(0x7_0000),
            MapFlags::USER_DATA,
            &mut r.alloc,
        )
        .unwrap();
        // A rollover flushes everything; the space then runs as A2.
        r.tlb.invalidate_all();
        r.tlb.sync();
        assert!(u.set_asid(A2));
        assert_eq!(u.asid(), Some(A2));
        assert_eq!(r.mmu_pa(&u, 0x5000), Some(0x7_0000));
        u.remap_page(page(0x5000), frame(0x7_1000), MapFlags::USER_DATA)
            .unwrap();
        assert_eq!(r.mmu_pa(&u, 0x5000), Some(0x7_1000), "invalidated under A2");
        assert!(r.tlb.violations().is_empty());
        u.mem_mut().write_u32(PhysAddr::new(0x7_1000), 5);
        assert_eq!(u.mem().read_u32(PhysAddr::new(0x7_1000)), 5);
    }

    #[test]
    fn kernel_unmap_invalidates_the_global_entry_for_every_asid() {
        let mut r = Rig::new();
        let mut k = r.kernel();
        let u = r.user(A1);
        k.map_page(
            page(0xC000_0000),
            frame(0x7_0000),
            MapFlags::KERNEL_DATA,
            &mut r.alloc,
        )
        .unwrap();
        assert_eq!(r.mmu_pa(&u, 0xC000_0000), Some(0x7_0000));
        k.unmap_page(page(0xC000_0000), &mut r.alloc).unwrap();
        assert_eq!(r.mmu_pa(&u, 0xC000_0000), None);
        assert_eq!(r.mmu_pa(&k, 0xC000_0000), None);
    }

    #[test]
    fn protect_changes_permissions_and_the_tlb_sees_it() {
        let mut r = Rig::new();
        let mut u = r.user(A1);
        u.map_page(
            page(0x5000),
            frame(0x7_0000),
            MapFlags::USER_DATA,
            &mut r.alloc,
        )
        .unwrap();
        r.mmu(&u, 0x5000);
        u.protect_page(page(0x5000), MapFlags::USER_RODATA).unwrap();
        let f = r.mmu(&u, 0x5000).unwrap().flags.unwrap();
        assert_eq!(f.access, Access::UserRead);
        assert!(r.tlb.violations().is_empty());
    }

    #[test]
    fn remapping_a_page_is_break_before_make() {
        let mut r = Rig::new();
        let mut k = r.kernel();
        k.map_page(
            page(0xC000_0000),
            frame(0x7_0000),
            MapFlags::KERNEL_DATA,
            &mut r.alloc,
        )
        .unwrap();
        r.mmu(&k, 0xC000_0000);
        let old = k
            .remap_page(page(0xC000_0000), frame(0x9_0000), MapFlags::KERNEL_DATA)
            .unwrap();
        assert_eq!(old, frame(0x7_0000));
        assert_eq!(r.mmu_pa(&k, 0xC000_0000), Some(0x9_0000));
        // A new memory type, same frame: also break-before-make.
        k.protect_page(page(0xC000_0000), MapFlags::KERNEL_DMA)
            .unwrap();
        let t = r.mmu(&k, 0xC000_0000).unwrap();
        assert_eq!(t.flags.unwrap().memory, MemoryType::NormalNonCacheable);
        k.protect_section(VirtAddr::new(0xC000_0000), MapFlags::KERNEL_DATA)
            .unwrap_err();
        assert!(r.tlb.violations().is_empty(), "{:?}", r.tlb.violations());
    }

    #[test]
    fn four_slots_share_one_l2_frame() {
        let mut r = Rig::new();
        let mut u = r.user(A1);
        let before = r.alloc.free_count();
        for mb in 0..4u32 {
            u.map_page(
                page(mb << 20),
                frame(0x7_0000),
                MapFlags::USER_DATA,
                &mut r.alloc,
            )
            .unwrap();
        }
        assert_eq!(before - r.alloc.free_count(), 1);
        u.map_page(
            page(4 << 20),
            frame(0x7_0000),
            MapFlags::USER_DATA,
            &mut r.alloc,
        )
        .unwrap();
        assert_eq!(before - r.alloc.free_count(), 2);
    }

    #[test]
    fn l2_frame_is_freed_when_its_last_entry_goes() {
        let mut r = Rig::new();
        let mut u = r.user(A1);
        let before = r.alloc.free_count();
        u.map_page(
            page(0x1000),
            frame(0x7_0000),
            MapFlags::USER_DATA,
            &mut r.alloc,
        )
        .unwrap();
        u.map_page(
            page(0x10_1000),
            frame(0x7_0000),
            MapFlags::USER_DATA,
            &mut r.alloc,
        )
        .unwrap();
        u.map_page(
            page(0x2000),
            frame(0x7_0000),
            MapFlags::USER_DATA,
            &mut r.alloc,
        )
        .unwrap();
        u.unmap_page(page(0x1000), &mut r.alloc).unwrap();
        u.unmap_page(page(0x2000), &mut r.alloc).unwrap();
        assert_eq!(
            before - r.alloc.free_count(),
            1,
            "sibling slot still uses the frame"
        );
        u.unmap_page(page(0x10_1000), &mut r.alloc).unwrap();
        assert_eq!(r.alloc.free_count(), before);
    }

    #[test]
    fn an_emptied_l1_entry_is_invalidated_from_the_walk_cache() {
        let mut r = Rig::new();
        let mut u = r.user(A1);
        u.map_page(
            page(0x30_1000),
            frame(0x7_0000),
            MapFlags::USER_DATA,
            &mut r.alloc,
        )
        .unwrap();
        assert!(r.mmu(&u, 0x30_1000).is_some()); // walk cache holds the table entry
        u.unmap_page(page(0x30_1000), &mut r.alloc).unwrap();
        u.map_section(
            VirtAddr::new(0x30_0000),
            PhysAddr::new(0x50_0000),
            MapFlags::USER_DATA,
        )
        .unwrap();
        assert_eq!(r.mmu_pa(&u, 0x30_2000), Some(0x50_2000));
        assert!(r.tlb.violations().is_empty());
    }

    #[test]
    fn sections_map_unmap_and_protect() {
        let mut r = Rig::new();
        let mut k = r.kernel();
        let va = VirtAddr::new(0xC010_0000);
        assert_eq!(
            k.map_section(
                VirtAddr::new(0xC010_1000),
                PhysAddr::new(0),
                MapFlags::KERNEL_DATA
            ),
            Err(MapError::Unaligned)
        );
        k.map_section(va, PhysAddr::new(0x20_0000), MapFlags::KERNEL_DATA)
            .unwrap();
        assert_eq!(r.mmu_pa(&k, 0xC018_0004), Some(0x28_0004));
        k.protect_section(va, MapFlags::KERNEL_RODATA).unwrap();
        assert_eq!(
            r.mmu(&k, 0xC018_0004).unwrap().flags,
            Some(MapFlags::KERNEL_RODATA)
        );
        assert_eq!(
            k.unmap_page(page(0xC010_0000), &mut r.alloc),
            Err(MapError::GranuleMismatch)
        );
        assert_eq!(k.unmap_section(va), Ok(PhysAddr::new(0x20_0000)));
        assert_eq!(r.mmu_pa(&k, 0xC018_0004), None);
        assert_eq!(k.unmap_section(va), Err(MapError::NotMapped));
    }

    #[test]
    fn a_range_uses_sections_where_aligned_and_pages_elsewhere() {
        let mut r = Rig::new();
        let mut k = r.kernel();
        let va = VirtAddr::new(0xC00F_F000);
        let pa = PhysAddr::new(0x00FF_F000);
        k.map_range(
            va,
            pa,
            0x20_2000,
            MapFlags::KERNEL_DATA,
            Granule::Auto,
            &mut r.alloc,
        )
        .unwrap();
        let mut runs = [None; 4];
        let mut n = 0;
        k.for_each_mapping(|m| {
            runs[n] = Some((m.va.as_u32(), m.pa.as_u32(), m.len, m.size));
            n += 1;
        });
        assert_eq!(
            &runs[..n],
            &[
                Some((0xC00F_F000, 0x00FF_F000, 0x1000, MapSize::Page)),
                Some((0xC010_0000, 0x0100_0000, 0x20_0000, MapSize::Section)),
                Some((0xC030_0000, 0x0120_0000, 0x1000, MapSize::Page)),
            ]
        );
        k.unmap_range(va, 0x20_2000, &mut r.alloc).unwrap();
        assert_eq!(k.translate(VirtAddr::new(0xC020_0000)), None);
    }

    #[test]
    fn a_failed_range_map_undoes_what_it_did() {
        let mut r = Rig::new();
        let mut u = r.user(A1);
        let before = r.alloc.free_count();
        r.alloc.set_budget(Some(1));
        let e = u.map_range(
            VirtAddr::new(0x3F_F000),
            PhysAddr::new(0x7_0000),
            0x40_2000,
            MapFlags::USER_DATA,
            Granule::Pages,
            &mut r.alloc,
        );
        assert_eq!(e, Err(MapError::OutOfMemory));
        r.alloc.set_budget(None);
        assert_eq!(r.alloc.free_count(), before);
        let mut any = false;
        u.for_each_mapping(|_| any = true);
        assert!(!any);
        // Overlap halfway: also undone.
        u.map_page(
            page(0x5000),
            frame(0x7_0000),
            MapFlags::USER_DATA,
            &mut r.alloc,
        )
        .unwrap();
        let e = u.map_range(
            VirtAddr::new(0x1000),
            PhysAddr::new(0x7_0000),
            0x8000,
            MapFlags::USER_DATA,
            Granule::Pages,
            &mut r.alloc,
        );
        assert_eq!(e, Err(MapError::AlreadyMapped));
        assert_eq!(u.translate(VirtAddr::new(0x1000)), None);
        assert!(u.translate(VirtAddr::new(0x5000)).is_some());
    }

    #[test]
    fn a_range_op_on_part_of_a_section_or_a_hole_is_refused_whole() {
        let mut r = Rig::new();
        let mut u = r.user(A1);
        u.map_section(
            VirtAddr::new(0x10_0000),
            PhysAddr::new(0x10_0000),
            MapFlags::USER_DATA,
        )
        .unwrap();
        u.map_page(
            page(0x20_0000),
            frame(0x7_0000),
            MapFlags::USER_DATA,
            &mut r.alloc,
        )
        .unwrap();
        assert_eq!(
            u.unmap_range(VirtAddr::new(0x10_0000), 0x8_0000, &mut r.alloc),
            Err(MapError::GranuleMismatch)
        );
        assert_eq!(
            u.unmap_range(VirtAddr::new(0x10_0000), 0x10_2000, &mut r.alloc),
            Err(MapError::NotMapped)
        );
        assert_eq!(
            u.protect_range(VirtAddr::new(0x10_0000), 0x10_2000, MapFlags::USER_RODATA),
            Err(MapError::NotMapped)
        );
        assert!(u.translate(VirtAddr::new(0x10_0000)).is_some());
        u.protect_range(VirtAddr::new(0x10_0000), 0x10_1000, MapFlags::USER_RODATA)
            .unwrap();
        assert_eq!(
            u.translate(VirtAddr::new(0x20_0000)).unwrap().flags,
            Some(MapFlags::USER_RODATA)
        );
    }

    #[test]
    fn out_of_memory_changes_nothing() {
        let mut r = Rig::new();
        let mut u = r.user(A1);
        r.alloc.set_budget(Some(0));
        assert_eq!(
            u.map_page(
                page(0x1000),
                frame(0x7_0000),
                MapFlags::USER_DATA,
                &mut r.alloc
            ),
            Err(MapError::OutOfMemory)
        );
        assert_eq!(u.translate(VirtAddr::new(0x1000)), None);
        assert!(matches!(
            Space::new_user(r.ram.clone(), r.tlb.clone(), A2, &mut r.alloc),
            Err(MapError::OutOfMemory)
        ));
        r.alloc.set_budget(Some(1));
        let before = r.alloc.free_count();
        assert!(Space::new_user(r.ram.clone(), r.tlb.clone(), A2, &mut r.alloc).is_err());
        assert_eq!(r.alloc.free_count(), before);
    }

    #[test]
    fn destroy_returns_every_frame_and_forgets_the_asid() {
        let mut r = Rig::new();
        let before = r.alloc.free_count();
        let mut u = r.user(A1);
        let mut k = r.kernel();
        u.map_range(
            VirtAddr::new(0x1000),
            PhysAddr::new(0x7_0000),
            0x50_0000,
            MapFlags::USER_DATA,
            Granule::Pages,
            &mut r.alloc,
        )
        .unwrap();
        k.map_range(
            VirtAddr::new(0xC000_0000),
            PhysAddr::new(0x7_0000),
            0x30_0000,
            MapFlags::KERNEL_DATA,
            Granule::Auto,
            &mut r.alloc,
        )
        .unwrap();
        assert!(r.mmu(&u, 0x1000).is_some());
        u.destroy(&mut r.alloc).unwrap();
        k.destroy(&mut r.alloc).unwrap();
        assert_eq!(r.alloc.free_count(), before);
        let u = r.user(A1);
        assert_eq!(r.mmu(&u, 0x1000), None, "ASID reused without stale entries");
    }

    #[test]
    fn adopting_a_kernel_table_keeps_sections_and_refuses_foreign_tables() {
        let mut r = Rig::new();
        let boot = SectionDesc::new(PhysAddr::new(0), MapFlags::KERNEL_TEXT).raw();
        r.ram.write_u32(PhysAddr::new(0x4000 + 4 * 0x800), boot);
        let k = r.kernel();
        assert_eq!(
            k.translate(VirtAddr::new(0x8000_8000)).unwrap().pa,
            PhysAddr::new(0x8000)
        );
        r.ram.write_u32(
            PhysAddr::new(0x4000 + 4 * 0x801),
            TableDesc::new(PhysAddr::new(0x10_0000), false).raw(),
        );
        assert!(matches!(
            Space::adopt_kernel(r.ram.clone(), r.tlb.clone(), &mut r.alloc),
            Err(MapError::ForeignTable)
        ));
    }

    #[test]
    fn an_adopted_table_in_quarter_layout_is_counted_and_freed_with_its_last_page() {
        let mut r = Rig::new();
        // One frame of L2 tables serving slots 0x800..0x803; slot 0x801 uses quarter 1, with
        // two pages, as the boot code's W^X tables do.
        let l2 = r.alloc.alloc_frame().unwrap();
        let q1 = l2.start().as_u32() + 0x400;
        for (i, pa) in [0x1000u32, 0x2000].into_iter().enumerate() {
            let d = SmallPageDesc::new(PhysAddr::new(pa), MapFlags::KERNEL_DATA).raw();
            r.ram.write_u32(PhysAddr::new(q1 + 4 * i as u32), d);
        }
        let desc = TableDesc::new(PhysAddr::new(q1), false).raw();
        r.ram.write_u32(PhysAddr::new(0x4000 + 4 * 0x801), desc);
        r.tlb.publish(l2.start(), PAGE_SIZE);
        r.tlb.publish(layout::KERNEL_L1_PHYS, layout::L1_TABLE_SIZE);
        let free_before = r.alloc.free_count();
        let mut k = r.kernel();
        assert_eq!(r.mmu_pa(&k, 0x8010_1000), Some(0x2000));
        // A new page in the same slot is counted with the adopted ones.
        k.map_page(
            page(0x8010_5000),
            frame(0x5000),
            MapFlags::KERNEL_DATA,
            &mut r.alloc,
        )
        .unwrap();
        for va in [0x8010_0000, 0x8010_1000, 0x8010_5000] {
            k.unmap_page(page(va), &mut r.alloc).unwrap();
        }
        assert_eq!(r.mmu_pa(&k, 0x8010_0000), None);
        // The counts frame is held, the adopted L2 frame came back with the last page.
        assert_eq!(r.alloc.free_count(), free_before);
        assert!(r.tlb.violations().is_empty());
    }

    #[test]
    fn adopting_a_table_whose_unused_quarters_are_not_zero_is_refused() {
        let mut r = Rig::new();
        let l2 = r.alloc.alloc_frame().unwrap();
        let q0 = l2.start().as_u32();
        r.ram.write_u32(PhysAddr::new(q0 + 0x800), 0x1234_0002); // quarter 2: nobody's
        let desc = TableDesc::new(PhysAddr::new(q0), false).raw();
        r.ram.write_u32(PhysAddr::new(0x4000 + 4 * 0x800), desc);
        assert!(matches!(
            Space::adopt_kernel(r.ram.clone(), r.tlb.clone(), &mut r.alloc),
            Err(MapError::ForeignTable)
        ));
    }

    // ----- bulk sharing (fork) and teardown walks -----

    /// A [`Tlb`] in front of the emulated one that counts the maintenance it is asked for, and
    /// can be told to forget invalidations by ASID (to show the checks below would catch it).
    #[derive(Clone)]
    struct Counting {
        inner: EmulatedTlb,
        log: alloc::rc::Rc<core::cell::RefCell<Counts>>,
    }

    #[derive(Default, Debug, PartialEq, Eq)]
    struct Counts {
        pages: u32,
        asids: u32,
        all: u32,
        forget_asid_invalidations: bool,
    }

    impl Tlb for Counting {
        fn publish(&mut self, first: PhysAddr, bytes: u32) {
            self.inner.publish(first, bytes);
        }
        fn invalidate_page(&mut self, va: VirtAddr, tag: TlbTag) {
            self.log.borrow_mut().pages += 1;
            self.inner.invalidate_page(va, tag);
        }
        fn invalidate_asid(&mut self, asid: Asid) {
            let mut log = self.log.borrow_mut();
            log.asids += 1;
            if !log.forget_asid_invalidations {
                self.inner.invalidate_asid(asid);
            }
        }
        fn invalidate_all(&mut self) {
            self.log.borrow_mut().all += 1;
            self.inner.invalidate_all();
        }
        fn sync(&mut self) {
            self.inner.sync();
        }
    }

    type CSpace = AddressSpace<HostRam, Counting>;

    impl Rig {
        fn counted(
            &mut self,
            asid: Asid,
            log: &alloc::rc::Rc<core::cell::RefCell<Counts>>,
        ) -> CSpace {
            let tlb = Counting {
                inner: self.tlb.clone(),
                log: log.clone(),
            };
            CSpace::new_user(self.ram.clone(), tlb, asid, &mut self.alloc).unwrap()
        }

        /// What the CPU running `space` sees at `va` (through the emulated TLB).
        fn cmmu(&mut self, space: &CSpace, va: u32) -> Option<(u32, MapFlags)> {
            self.tlb
                .translate(
                    space.l1_phys(),
                    space.asid().unwrap(),
                    layout::KERNEL_L1_PHYS,
                    VirtAddr::new(va),
                )
                .map(|t| (t.pa.as_u32(), t.flags.unwrap()))
        }

        fn clean(&self) {
            assert!(
                self.tlb.violations().is_empty(),
                "{:?}",
                self.tlb.violations()
            );
            assert_eq!(self.tlb.pending_invalidations(), 0);
            assert_eq!(self.tlb.unpublished_words(), 0);
        }
    }

    fn va(v: u32) -> VirtAddr {
        VirtAddr::new(v)
    }

    /// The parent of the sharing tests: writable pages in slots 1 (group 0) and 5 (group 1), a
    /// text page in slot 2, a writable page at 0x30_0000 outside the shared ranges; every page
    /// cached in the TLB. Returns the pages (va, pa, flags).
    fn parent_with_cached_pages(
        r: &mut Rig,
        p: &mut CSpace,
    ) -> alloc::vec::Vec<(u32, u32, MapFlags)> {
        let pages = alloc::vec![
            (0x10_0000, 0x7_0000, MapFlags::USER_DATA),
            (0x10_1000, 0x7_1000, MapFlags::USER_DATA),
            (0x10_3000, 0x7_3000, MapFlags::USER_RODATA),
            (0x1F_F000, 0x7_4000, MapFlags::USER_DATA),
            (0x20_0000, 0x7_5000, MapFlags::USER_TEXT),
            (0x50_0000, 0x7_6000, MapFlags::USER_DATA),
            (0x5F_F000, 0x7_7000, MapFlags::USER_DATA),
            (0x30_0000, 0x7_8000, MapFlags::USER_DATA),
        ];
        for &(v, pa, flags) in &pages {
            p.map_page(page(v), frame(pa), flags, &mut r.alloc).unwrap();
            assert_eq!(r.cmmu(p, v), Some((pa, flags)));
        }
        pages
    }

    const SHARED_RANGES: [(u32, u32); 3] = [
        (0x10_0000, 0x10_4000),
        (0x1F_F000, 0x20_1000),
        (0x50_0000, 0x60_0000),
    ];

    fn ranges() -> impl Iterator<Item = (VirtAddr, VirtAddr)> {
        SHARED_RANGES.iter().map(|&(a, b)| (va(a), va(b)))
    }

    fn read_only(flags: MapFlags) -> MapFlags {
        match flags.access {
            Access::UserReadWrite => flags.with_access(Access::UserRead),
            _ => flags,
        }
    }

    #[test]
    fn sharing_copies_read_only_and_write_protects_with_one_asid_invalidation() {
        let mut r = Rig::new();
        let log = alloc::rc::Rc::new(core::cell::RefCell::new(Counts::default()));
        let mut p = r.counted(A1, &log);
        let pages = parent_with_cached_pages(&mut r, &mut p);
        let mut c = r.counted(A2, &log);
        let free = r.alloc.free_count();
        *log.borrow_mut() = Counts::default();
        let mut shared = alloc::vec::Vec::new();
        let n = p
            .share_read_only_into(&mut c, ranges(), &mut r.alloc, |f| shared.push(f))
            .unwrap();
        assert_eq!(n, 7);
        // One invalidation by the parent's ASID, no page invalidation, nothing for the child.
        assert_eq!(
            *log.borrow(),
            Counts {
                asids: 1,
                ..Counts::default()
            }
        );
        // Child tables: one L2 frame for group 0 (slots 1 and 2), one for group 1 (slot 5).
        assert_eq!(r.alloc.free_count(), free - 2);
        r.clean();
        let expected: alloc::vec::Vec<Frame> =
            pages[..7].iter().map(|&(_, pa, _)| frame(pa)).collect();
        assert_eq!(shared, expected);
        for &(v, pa, flags) in &pages[..7] {
            // No stale writable entry in the parent: the TLB held every page writable.
            assert_eq!(r.cmmu(&p, v), Some((pa, read_only(flags))), "parent {v:#x}");
            assert_eq!(r.cmmu(&c, v), Some((pa, read_only(flags))), "child {v:#x}");
        }
        // Outside the ranges: untouched, and not in the child.
        assert_eq!(r.cmmu(&p, 0x30_0000), Some((0x7_8000, MapFlags::USER_DATA)));
        assert_eq!(r.cmmu(&c, 0x30_0000), None);
        // The child's counts are right: unmapping its pages gives its tables back.
        for &(v, _, _) in &pages[..7] {
            c.unmap_page(page(v), &mut r.alloc).unwrap();
        }
        assert_eq!(r.alloc.free_count(), free);
        r.clean();
    }

    #[test]
    fn a_forgotten_asid_invalidation_leaves_the_parent_writable_in_the_tlb() {
        // The control for the test above: the emulated TLB keeps the writable entries when the
        // one invalidation is left out, so a share that forgot it would fail there.
        let mut r = Rig::new();
        let log = alloc::rc::Rc::new(core::cell::RefCell::new(Counts::default()));
        let mut p = r.counted(A1, &log);
        parent_with_cached_pages(&mut r, &mut p);
        let mut c = r.counted(A2, &log);
        log.borrow_mut().forget_asid_invalidations = true;
        p.share_read_only_into(&mut c, ranges(), &mut r.alloc, |_| {})
            .unwrap();
        assert_eq!(r.cmmu(&p, 0x10_0000), Some((0x7_0000, MapFlags::USER_DATA)));
        assert_eq!(
            p.translate(va(0x10_0000)).unwrap().flags,
            Some(MapFlags::USER_RODATA)
        );
    }

    #[test]
    fn a_share_short_of_a_child_table_stops_there_and_unshare_restores_the_parent() {
        let mut r = Rig::new();
        let log = alloc::rc::Rc::new(core::cell::RefCell::new(Counts::default()));
        let mut p = r.counted(A1, &log);
        let pages = parent_with_cached_pages(&mut r, &mut p);
        let mut c = r.counted(A2, &log);
        let free = r.alloc.free_count();
        // A table for group 0, none for group 1 (slot 5).
        r.alloc.set_budget(Some(1));
        let mut shared = alloc::vec::Vec::new();
        let got = p.share_read_only_into(&mut c, ranges(), &mut r.alloc, |f| shared.push(f));
        r.alloc.set_budget(None);
        assert_eq!(got, Err(MapError::OutOfMemory));
        // What was copied before stays copied and write-protected, its invalidation done.
        assert_eq!(shared.len(), 5);
        assert_eq!(log.borrow().asids, 1);
        r.clean();
        for &(v, pa, flags) in &pages[..5] {
            assert_eq!(r.cmmu(&p, v), Some((pa, read_only(flags))));
            assert_eq!(r.cmmu(&c, v), Some((pa, read_only(flags))));
        }
        for &(v, pa, flags) in &pages[5..] {
            assert_eq!(r.cmmu(&p, v), Some((pa, flags)));
            assert_eq!(r.cmmu(&c, v), None);
        }
        // Undo: every page the child got is released; the writable ranges get write access
        // back where the parent is the only owner (all but 0x10_1000) and the page is not
        // executable (the text page 0x20_0000 stays as it is).
        let mut released = alloc::vec::Vec::new();
        let undo = [
            (0x10_0000, 0x10_2000, true),
            (0x10_2000, 0x10_4000, false),
            (0x1F_F000, 0x20_1000, true),
            (0x50_0000, 0x60_0000, true),
        ]
        .map(|(a, b, w)| (va(a), va(b), w));
        p.unshare_from(&c, undo, |f| {
            released.push(f);
            f != frame(0x7_1000)
        });
        assert_eq!(released, shared);
        assert_eq!(log.borrow().asids, 2);
        r.clean();
        for &(v, pa, flags) in &pages {
            let now = match v {
                // Not its only owner; in a range not writable; executable.
                0x10_1000 | 0x10_3000 | 0x20_0000 => read_only(flags),
                _ => flags,
            };
            assert_eq!(r.cmmu(&p, v), Some((pa, now)), "parent {v:#x}");
        }
        c.destroy(&mut r.alloc).unwrap();
        assert_eq!(r.alloc.free_count(), free + 3);
        r.clean();
    }

    #[test]
    fn sections_and_large_pages_are_neither_shared_nor_walked() {
        let mut r = Rig::new();
        let mut p = r.user(A1);
        let mut c = r.user(A2);
        p.map_section(va(0x40_0000), PhysAddr::new(0x20_0000), MapFlags::USER_DATA)
            .unwrap();
        let free = r.alloc.free_count();
        let range = [(va(0x40_0000), va(0x41_0000))];
        assert_eq!(
            p.share_read_only_into(&mut c, range, &mut r.alloc, |_| panic!("shared")),
            Err(MapError::GranuleMismatch)
        );
        assert_eq!(r.alloc.free_count(), free);
        assert_eq!(c.next_mapped(va(0x1000), va(0x8000_0000)), None);
        assert_eq!(
            p.translate(va(0x40_0000)).unwrap().flags,
            Some(MapFlags::USER_DATA)
        );
        assert_eq!(
            p.for_each_page(va(0x40_0000), va(0x50_0000), |_| panic!("walked")),
            Err(MapError::GranuleMismatch)
        );
        // A large page (never made here) after two small pages: those two are copied.
        p.map_page(
            page(0x10_0000),
            frame(0x7_0000),
            MapFlags::USER_DATA,
            &mut r.alloc,
        )
        .unwrap();
        p.map_page(
            page(0x10_1000),
            frame(0x7_1000),
            MapFlags::USER_DATA,
            &mut r.alloc,
        )
        .unwrap();
        let L1Entry::Table(t) = p.l1_entry(1) else {
            panic!("no table");
        };
        let large = Space::l2_desc_pa(t.base(), 4);
        r.ram.write_u32(large, 0x9_0000 | 0b01);
        r.tlb.publish(large, 4);
        let mut seen = alloc::vec::Vec::new();
        assert_eq!(
            p.for_each_page(va(0x10_0000), va(0x20_0000), |f| seen.push(f)),
            Err(MapError::GranuleMismatch)
        );
        assert_eq!(seen, [frame(0x7_0000), frame(0x7_1000)]);
        let range = [(va(0x10_0000), va(0x10_8000))];
        let mut shared = 0;
        assert_eq!(
            p.share_read_only_into(&mut c, range, &mut r.alloc, |_| shared += 1),
            Err(MapError::GranuleMismatch)
        );
        assert_eq!(shared, 2);
        assert_eq!(
            r.mmu(&c, 0x10_1000).unwrap().flags,
            Some(MapFlags::USER_RODATA)
        );
        assert_eq!(r.mmu(&c, 0x10_4000), None);
        assert!(r.tlb.violations().is_empty());
    }

    #[test]
    fn for_each_page_reports_every_page_of_a_range_once_in_order() {
        let mut r = Rig::new();
        let mut u = r.user(A1);
        let pages = [
            0x1_0000, 0x1_1000, 0xF_F000, 0x10_0000, 0x12_3000, 0x40_0000, 0x7FF_F000,
        ];
        for (i, &v) in pages.iter().enumerate() {
            u.map_page(
                page(v),
                frame(0x7_0000 + 0x1000 * i as u32),
                MapFlags::USER_DATA,
                &mut r.alloc,
            )
            .unwrap();
        }
        let walk = |u: &Space, a: u32, b: u32| {
            let mut seen = alloc::vec::Vec::new();
            u.for_each_page(va(a), va(b), |f| seen.push(f.start().as_u32()))
                .unwrap();
            seen
        };
        let by_next_mapped = |u: &Space, a: u32, b: u32| {
            let mut seen = alloc::vec::Vec::new();
            let mut v = va(a);
            while let Some((at, t)) = u.next_mapped(v, va(b)) {
                seen.push(t.pa.as_u32());
                v = va(at.as_u32() + PAGE_SIZE);
            }
            seen
        };
        for (a, b) in [
            (0x1000, 0x8000_0000),
            (0x1_1000, 0x10_1000),
            (0xF_F000, 0x10_0000),
            (0x12_4000, 0x7FF_F000),
            (0x5000, 0x5000),
        ] {
            assert_eq!(walk(&u, a, b), by_next_mapped(&u, a, b), "{a:#x}..{b:#x}");
        }
        assert_eq!(walk(&u, 0x1000, 0x8000_0000).len(), pages.len());
        assert_eq!(
            u.for_each_page(va(0x1800), va(0x3000), |_| {}),
            Err(MapError::Unaligned)
        );
        assert_eq!(
            u.for_each_page(va(0x3000), va(0x1000), |_| {}),
            Err(MapError::OutsideSpace)
        );
    }
}
