//! TLB and table-walk maintenance, as a trait the address-space code calls generically.
//!
//! The MMU caches translations in TLBs and, on ARMv7, may also cache L1 entries in intermediate
//! *walk caches*. Neither is coherent with the tables: after changing a descriptor the kernel must
//! (ARM ARM B3.10 "TLB maintenance", B3.10.1 "General TLB maintenance requirements"):
//!
//! 1. make the write visible to the table walk ([`Tlb::publish`]): with cacheable table walks
//!    (TTBR.IRGN/RGN write-back, as the kernel programs them on the Cortex-A7) a DSB is enough;
//!    with non-cacheable walks the lines must first be cleaned to the point of coherency (DCCMVAC);
//! 2. if the old descriptor was valid, invalidate every TLB entry that may hold it
//!    ([`Tlb::invalidate_page`]: TLBIMVA for a non-global entry of one ASID, TLBIMVAA for a global
//!    one; both also drop walk-cache copies of the L1 entry for that address);
//! 3. complete it all ([`Tlb::sync`]): BPIALL (branch predictor, whose targets are virtual), DSB
//!    (the invalidations are complete), ISB (later instructions are fetched and translated anew).
//!
//! Replacing a valid descriptor with another valid one that has a different output address, size
//! or memory type is *break-before-make*: write a fault entry, publish, invalidate, sync, and only
//! then write the new entry. A change of permissions alone may be written in place, then
//! invalidated. A fault entry is never cached, so turning fault into valid needs no invalidation.
//!
//! On the host, [`EmulatedTlb`] (with [`HostRam`](super::phys::HostRam)) plays the MMU: it walks
//! the tables as the hardware would, caches what it learns and forgets it only when invalidated,
//! sees descriptor writes only once published, and records a [`BbmViolation`] whenever a cached
//! descriptor is replaced by a conflicting valid one.

#[cfg(not(target_os = "none"))]
use super::addr::PhysAddr;
use super::addr::VirtAddr;

pub use super::asid::Asid;

/// Which TLB entries of a virtual address an invalidation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlbTag {
    /// Global entries (kernel mappings): invalidate for all ASIDs (TLBIMVAA).
    Global,
    /// Non-global entries of one ASID (user mappings), plus any global entry of the address
    /// (TLBIMVA).
    Asid(Asid),
}

/// TLB and table-walk maintenance. The kernel implements it with CP15 operations; the address
/// space calls it generically, so the calls inline.
pub trait Tlb {
    /// Makes descriptor words just written in `[first, first + bytes)` (physical) visible to the
    /// table walk. Target: DCCMVAC over the range (through the direct map) when walks are not
    /// coherent with the data cache, then DSB.
    fn publish(&mut self, first: super::addr::PhysAddr, bytes: u32);

    /// Invalidates the TLB entries (and walk-cache copies of the L1 entry) that translate `va`:
    /// for `TlbTag::Asid(a)` those of ASID `a` and global ones (TLBIMVA / TLBIMVAIS), for
    /// `TlbTag::Global` those of every ASID (TLBIMVAA / TLBIMVAAIS). Completes at [`Tlb::sync`].
    fn invalidate_page(&mut self, va: VirtAddr, tag: TlbTag);

    /// Invalidates every non-global entry of `asid` (TLBIASID / TLBIASIDIS). Completes at
    /// [`Tlb::sync`].
    fn invalidate_asid(&mut self, asid: Asid);

    /// Invalidates every entry (TLBIALL / TLBIALLIS). Completes at [`Tlb::sync`].
    fn invalidate_all(&mut self);

    /// Completes the maintenance issued so far: BPIALL, DSB, ISB on the target.
    fn sync(&mut self);
}

#[cfg(not(target_os = "none"))]
pub use host::{BbmViolation, EmulatedTlb};

#[cfg(not(target_os = "none"))]
pub(crate) use host::TlbState;

#[cfg(not(target_os = "none"))]
mod host {
    extern crate alloc;

    use super::{Asid, PhysAddr, Tlb, TlbTag, VirtAddr};
    use crate::mm::addr::{PAGE_SHIFT, SECTION_SHIFT};
    use crate::mm::desc::{L1Entry, L2Entry, MapSize, Translation};
    use crate::mm::phys::{HostRam, Machine};
    use alloc::collections::BTreeMap;
    use alloc::rc::Rc;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    /// A valid descriptor was replaced by a conflicting valid one while the emulated TLB or walk
    /// cache could still hold the old one: break-before-make was not followed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct BbmViolation {
        /// Physical address of the descriptor.
        pub desc: PhysAddr,
        /// Its old value.
        pub old: u32,
        /// The value written.
        pub new: u32,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Level {
        L1,
        L2,
    }

    #[derive(Debug, Clone, Copy)]
    struct Leaf {
        translation: Translation,
        l1_desc: u32,
        l2_desc: Option<u32>,
        filled: u64,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Invalidation {
        Page(u32, TlbTag),
        Asid(Asid),
        All,
    }

    /// An invalidation and the write sequence number when it was issued.
    #[derive(Debug, Clone, Copy)]
    struct Issued {
        what: Invalidation,
        seq: u64,
    }

    /// State of the emulated TLB: leaf entries keyed by (size, page or section number, tag), walk
    /// cache entries keyed by (L1 slot, tag), and the descriptors they were read from.
    #[derive(Default)]
    pub(crate) struct TlbState {
        leaves: BTreeMap<(MapSize, u32, TlbTag), Leaf>,
        walk: BTreeMap<(u32, TlbTag), (u32, u32, u64)>,
        refs: BTreeMap<u32, (u32, Level)>,
        pending: Vec<Issued>,
        violations: Vec<BbmViolation>,
        hits: u64,
        /// Sequence number of tracked descriptor writes.
        seq: u64,
        /// For descriptors some entry was read from: when they were written.
        written: BTreeMap<u32, Vec<u64>>,
    }

    impl TlbState {
        fn add_ref(&mut self, desc: u32, level: Level) {
            self.refs.entry(desc).or_insert((0, level)).0 += 1;
        }

        fn drop_ref(&mut self, desc: u32) {
            if let Some(r) = self.refs.get_mut(&desc) {
                r.0 -= 1;
                if r.0 == 0 {
                    self.refs.remove(&desc);
                }
            }
        }

        fn remove_leaf(&mut self, key: (MapSize, u32, TlbTag)) {
            if let Some(leaf) = self.leaves.remove(&key) {
                self.drop_ref(leaf.l1_desc);
                if let Some(d) = leaf.l2_desc {
                    self.drop_ref(d);
                }
            }
        }

        fn remove_walk(&mut self, key: (u32, TlbTag)) {
            if let Some((desc, _, _)) = self.walk.remove(&key) {
                self.drop_ref(desc);
            }
        }

        /// Called by `HostRam` for every tracked word write: is a cached descriptor being replaced
        /// by a conflicting valid one?
        pub(crate) fn check_write(&mut self, pa: u32, old: u32, new: u32) {
            self.seq += 1;
            let Some(&(_, level)) = self.refs.get(&pa) else {
                return;
            };
            self.written.entry(pa).or_default().push(self.seq);
            let conflict = match level {
                Level::L1 => match (L1Entry::decode(old), L1Entry::decode(new)) {
                    (_, L1Entry::Fault) | (L1Entry::Fault, _) => false,
                    (L1Entry::Section(a), L1Entry::Section(b)) => {
                        a.output_bits() != b.output_bits()
                    }
                    (L1Entry::Table(a), L1Entry::Table(b)) => a.base() != b.base(),
                    _ => true,
                },
                Level::L2 => match (L2Entry::decode(old), L2Entry::decode(new)) {
                    (_, L2Entry::Fault) | (L2Entry::Fault, _) => false,
                    (L2Entry::SmallPage(a), L2Entry::SmallPage(b)) => {
                        a.output_bits() != b.output_bits()
                    }
                    _ => true,
                },
            };
            if conflict {
                self.violations.push(BbmViolation {
                    desc: PhysAddr::new(pa),
                    old,
                    new,
                });
            }
        }

        /// Whether an entry read from `descs` survives an invalidation issued at `seq`: the
        /// walker may have refetched it between the invalidation and a later write of one of
        /// its descriptors, so such an invalidation does not count for it.
        fn refilled(&self, seq: u64, filled: u64, descs: [Option<u32>; 2]) -> bool {
            let writes = |d: &u32| self.written.get(d).map_or(&[][..], Vec::as_slice);
            let still_there = descs
                .iter()
                .flatten()
                .all(|d| !writes(d).iter().any(|&w| w > filled && w <= seq));
            let changed_later = descs
                .iter()
                .flatten()
                .any(|d| writes(d).iter().any(|&w| w > seq));
            still_there && changed_later
        }

        fn apply(&mut self, issued: Issued) {
            let seq = issued.seq;
            match issued.what {
                Invalidation::Page(va, tag) => {
                    let page = va >> PAGE_SHIFT;
                    let section = va >> SECTION_SHIFT;
                    let matches = |t: TlbTag| match tag {
                        TlbTag::Global => true,
                        TlbTag::Asid(_) => t == tag || t == TlbTag::Global,
                    };
                    let leaf_keys: Vec<_> = self
                        .leaves
                        .range((MapSize::Page, page, TlbTag::Global)..)
                        .take_while(|(k, _)| k.0 == MapSize::Page && k.1 == page)
                        .map(|(k, _)| *k)
                        .chain(
                            self.leaves
                                .range((MapSize::Section, section, TlbTag::Global)..)
                                .take_while(|(k, _)| k.0 == MapSize::Section && k.1 == section)
                                .map(|(k, _)| *k),
                        )
                        .filter(|k| matches(k.2))
                        .filter(|k| {
                            let l = &self.leaves[k];
                            !self.refilled(seq, l.filled, [Some(l.l1_desc), l.l2_desc])
                        })
                        .collect();
                    for k in leaf_keys {
                        self.remove_leaf(k);
                    }
                    let walk_keys: Vec<_> = self
                        .walk
                        .range((section, TlbTag::Global)..)
                        .take_while(|(k, _)| k.0 == section)
                        .map(|(k, _)| *k)
                        .filter(|k| matches(k.1))
                        .filter(|k| {
                            let w = self.walk[k];
                            !self.refilled(seq, w.2, [Some(w.0), None])
                        })
                        .collect();
                    for k in walk_keys {
                        self.remove_walk(k);
                    }
                }
                Invalidation::Asid(a) => {
                    let tag = TlbTag::Asid(a);
                    let leaf_keys: Vec<_> = self
                        .leaves
                        .iter()
                        .filter(|(k, l)| {
                            k.2 == tag
                                && !self.refilled(seq, l.filled, [Some(l.l1_desc), l.l2_desc])
                        })
                        .map(|(k, _)| *k)
                        .collect();
                    for k in leaf_keys {
                        self.remove_leaf(k);
                    }
                    let walk_keys: Vec<_> = self
                        .walk
                        .iter()
                        .filter(|(k, w)| k.1 == tag && !self.refilled(seq, w.2, [Some(w.0), None]))
                        .map(|(k, _)| *k)
                        .collect();
                    for k in walk_keys {
                        self.remove_walk(k);
                    }
                }
                Invalidation::All => {
                    let leaf_keys: Vec<_> = self.leaves.keys().copied().collect();
                    for k in leaf_keys {
                        let l = self.leaves[&k];
                        if !self.refilled(seq, l.filled, [Some(l.l1_desc), l.l2_desc]) {
                            self.remove_leaf(k);
                        }
                    }
                    let walk_keys: Vec<_> = self.walk.keys().copied().collect();
                    for k in walk_keys {
                        let w = self.walk[&k];
                        if !self.refilled(seq, w.2, [Some(w.0), None]) {
                            self.remove_walk(k);
                        }
                    }
                }
            }
        }
    }

    /// The host [`Tlb`]: an emulated MMU (table walk, TLB, walk cache) over a [`HostRam`].
    ///
    /// It learns translations only on [`EmulatedTlb::translate`], forgets them only on an
    /// invalidation completed by [`Tlb::sync`], and its walker reads only published descriptor
    /// writes. The hardware may also walk speculatively at any time; the model stands for that
    /// in one place: an invalidation does not remove an entry whose descriptor was written
    /// *after* the invalidation was issued, since the walker could have refetched the old value
    /// in between. So the order must be: write, publish, invalidate, sync.
    #[derive(Clone)]
    pub struct EmulatedTlb {
        machine: Rc<RefCell<Machine>>,
    }

    impl EmulatedTlb {
        /// An empty TLB in front of `ram` (they share the machine).
        pub fn new(ram: &HostRam) -> Self {
            Self {
                machine: ram.machine.clone(),
            }
        }

        /// Translates `va` as the MMU would with TTBCR.N = 1: VA < 2 GiB through the 8 KiB table
        /// at `ttbr0` (non-global entries tagged `asid`), the rest through the 16 KiB table at
        /// `ttbr1`. A TLB hit wins over the tables; a miss walks the published tables and caches
        /// the result (and a page-table L1 entry in the walk cache).
        pub fn translate(
            &mut self,
            ttbr0: PhysAddr,
            asid: Asid,
            ttbr1: PhysAddr,
            va: VirtAddr,
        ) -> Option<Translation> {
            let mut guard = self.machine.borrow_mut();
            let m = &mut *guard;
            let v = va.as_u32();
            let page = v >> PAGE_SHIFT;
            let section = v >> SECTION_SHIFT;
            let own = TlbTag::Asid(asid);
            for key in [
                (MapSize::Page, page, TlbTag::Global),
                (MapSize::Page, page, own),
                (MapSize::Section, section, TlbTag::Global),
                (MapSize::Section, section, own),
            ] {
                if let Some(leaf) = m.tlb.leaves.get(&key) {
                    let mut t = leaf.translation;
                    let mask = t.size.bytes() - 1;
                    t.pa = PhysAddr::new((t.pa.as_u32() & !mask) | (v & mask));
                    m.tlb.hits += 1;
                    return Some(t);
                }
            }
            // Miss: walk. The walk-cache tag of a TTBR0 L1 entry is the ASID, of TTBR1 global.
            // A cached L1 entry is used whatever the TTBR now says, as on the hardware.
            let (l1_desc, walk_tag) = if v < 0x8000_0000 {
                (ttbr0.as_u32() + 4 * section, own)
            } else {
                (ttbr1.as_u32() + 4 * section, TlbTag::Global)
            };
            let (l1_desc, l1) = match m.tlb.walk.get(&(section, walk_tag)) {
                Some(&(d, value, _)) => (d, value),
                None => (l1_desc, m.walker_read(l1_desc)),
            };
            let (translation, l2_desc) = match L1Entry::decode(l1) {
                L1Entry::Section(s) => (
                    Translation {
                        pa: PhysAddr::new(s.base().as_u32() | (v & 0xf_ffff)),
                        size: MapSize::Section,
                        flags: s.flags(),
                    },
                    None,
                ),
                L1Entry::Table(t) => {
                    if let alloc::collections::btree_map::Entry::Vacant(e) =
                        m.tlb.walk.entry((section, walk_tag))
                    {
                        e.insert((l1_desc, l1, m.tlb.seq));
                        m.tlb.add_ref(l1_desc, Level::L1);
                    }
                    let l2_desc = t.base().as_u32() + 4 * (page & 0xff);
                    match L2Entry::decode(m.walker_read(l2_desc)) {
                        L2Entry::SmallPage(p) => (
                            Translation {
                                pa: PhysAddr::new(p.base().as_u32() | (v & 0xfff)),
                                size: MapSize::Page,
                                flags: p.flags(t.pxn()),
                            },
                            Some(l2_desc),
                        ),
                        _ => return None,
                    }
                }
                _ => return None,
            };
            let global = translation.flags.is_none_or(|f| f.global);
            let tag = if global { TlbTag::Global } else { own };
            let key = match translation.size {
                MapSize::Page => (MapSize::Page, page, tag),
                MapSize::Section => (MapSize::Section, section, tag),
            };
            m.tlb.add_ref(l1_desc, Level::L1);
            if let Some(d) = l2_desc {
                m.tlb.add_ref(d, Level::L2);
            }
            m.tlb.remove_leaf(key);
            m.tlb.leaves.insert(
                key,
                Leaf {
                    translation,
                    l1_desc,
                    l2_desc,
                    filled: m.tlb.seq,
                },
            );
            Some(translation)
        }

        /// Every break-before-make violation seen so far.
        pub fn violations(&self) -> Vec<BbmViolation> {
            self.machine.borrow().tlb.violations.clone()
        }

        /// Number of cached leaf entries.
        pub fn cached_entries(&self) -> usize {
            self.machine.borrow().tlb.leaves.len()
        }

        /// Number of invalidations issued but not yet completed by `sync`.
        pub fn pending_invalidations(&self) -> usize {
            self.machine.borrow().tlb.pending.len()
        }

        /// Number of descriptor words written but not yet published to the walker.
        pub fn unpublished_words(&self) -> usize {
            self.machine.borrow().unpublished.len()
        }
    }

    impl Tlb for EmulatedTlb {
        fn publish(&mut self, first: PhysAddr, bytes: u32) {
            let mut m = self.machine.borrow_mut();
            let lo = first.as_usize() / 4;
            let hi = lo + (bytes as usize).div_ceil(4);
            let keys: Vec<usize> = m.unpublished.range(lo..hi).map(|(k, _)| *k).collect();
            for k in keys {
                m.unpublished.remove(&k);
            }
        }

        fn invalidate_page(&mut self, va: VirtAddr, tag: TlbTag) {
            let mut m = self.machine.borrow_mut();
            let seq = m.tlb.seq;
            m.tlb.pending.push(Issued {
                what: Invalidation::Page(va.as_u32(), tag),
                seq,
            });
        }

        fn invalidate_asid(&mut self, asid: Asid) {
            let mut m = self.machine.borrow_mut();
            let seq = m.tlb.seq;
            m.tlb.pending.push(Issued {
                what: Invalidation::Asid(asid),
                seq,
            });
        }

        fn invalidate_all(&mut self) {
            let mut m = self.machine.borrow_mut();
            let seq = m.tlb.seq;
            m.tlb.pending.push(Issued {
                what: Invalidation::All,
                seq,
            });
        }

        fn sync(&mut self) {
            let mut m = self.machine.borrow_mut();
            let pending = core::mem::take(&mut m.tlb.pending);
            for inv in pending {
                m.tlb.apply(inv);
            }
            let m = &mut *m;
            let refs = &m.tlb.refs;
            m.tlb.written.retain(|d, _| refs.contains_key(d));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::mm::desc::{MapFlags, SectionDesc, SmallPageDesc, TableDesc};
        use crate::mm::phys::PhysMem;

        const TTBR1: PhysAddr = PhysAddr::new(0x4000);
        const TTBR0: PhysAddr = PhysAddr::new(0x8000);
        const L2: PhysAddr = PhysAddr::new(0xC000);
        const A1: Asid = Asid::new(1);
        const A2: Asid = Asid::new(2);

        fn machine() -> (HostRam, EmulatedTlb) {
            let ram = HostRam::new(0x10_0000);
            let tlb = EmulatedTlb::new(&ram);
            (ram, tlb)
        }

        fn set(ram: &mut HostRam, tlb: &mut EmulatedTlb, pa: PhysAddr, v: u32) {
            ram.write_u32(pa, v);
            tlb.publish(pa, 4);
        }

        #[test]
        fn a_cached_translation_survives_until_invalidated_and_synced() {
            let (mut ram, mut tlb) = machine();
            let l1 = PhysAddr::new(TTBR1.as_u32() + 4 * 0xC00);
            set(
                &mut ram,
                &mut tlb,
                l1,
                SectionDesc::new(PhysAddr::new(0x30_0000), MapFlags::KERNEL_DATA).raw(),
            );
            let va = VirtAddr::new(0xC000_1234);
            let t = tlb.translate(TTBR0, A1, TTBR1, va).unwrap();
            assert_eq!(t.pa, PhysAddr::new(0x30_1234));
            set(&mut ram, &mut tlb, l1, 0);
            assert!(tlb.translate(TTBR0, A1, TTBR1, va).is_some(), "stale entry");
            tlb.invalidate_page(va, TlbTag::Global);
            assert!(
                tlb.translate(TTBR0, A1, TTBR1, va).is_some(),
                "not complete before sync"
            );
            tlb.sync();
            assert!(tlb.translate(TTBR0, A1, TTBR1, va).is_none());
            assert!(tlb.violations().is_empty());
        }

        #[test]
        fn unpublished_writes_are_not_walked() {
            let (mut ram, mut tlb) = machine();
            let l1 = PhysAddr::new(TTBR1.as_u32() + 4 * 0xC00);
            ram.write_u32(
                l1,
                SectionDesc::new(PhysAddr::new(0x30_0000), MapFlags::KERNEL_DATA).raw(),
            );
            assert!(tlb
                .translate(TTBR0, A1, TTBR1, VirtAddr::new(0xC000_0000))
                .is_none());
            tlb.publish(l1, 4);
            assert!(tlb
                .translate(TTBR0, A1, TTBR1, VirtAddr::new(0xC000_0000))
                .is_some());
        }

        #[test]
        fn non_global_entries_are_per_asid_and_asid_invalidation_drops_them() {
            let (mut ram, mut tlb) = machine();
            set(
                &mut ram,
                &mut tlb,
                PhysAddr::new(TTBR0.as_u32() + 4),
                TableDesc::new(L2, true).raw(),
            );
            set(
                &mut ram,
                &mut tlb,
                L2,
                SmallPageDesc::new(PhysAddr::new(0x5_0000), MapFlags::USER_DATA).raw(),
            );
            let va = VirtAddr::new(0x10_0000);
            assert!(tlb.translate(TTBR0, A1, TTBR1, va).is_some());
            assert!(tlb.translate(TTBR0, A2, TTBR1, va).is_some());
            set(&mut ram, &mut tlb, L2, 0);
            tlb.invalidate_page(va, TlbTag::Asid(A1));
            tlb.sync();
            assert!(tlb.translate(TTBR0, A1, TTBR1, va).is_none());
            assert!(
                tlb.translate(TTBR0, A2, TTBR1, va).is_some(),
                "A2 still cached"
            );
            tlb.invalidate_asid(A2);
            tlb.sync();
            assert!(tlb.translate(TTBR0, A2, TTBR1, va).is_none());
        }

        #[test]
        fn the_walk_cache_keeps_a_cleared_l1_entry_until_invalidated() {
            let (mut ram, mut tlb) = machine();
            let l1 = PhysAddr::new(TTBR1.as_u32() + 4 * 0xC00);
            set(&mut ram, &mut tlb, l1, TableDesc::new(L2, false).raw());
            set(
                &mut ram,
                &mut tlb,
                L2,
                SmallPageDesc::new(PhysAddr::new(0x5_0000), MapFlags::KERNEL_DATA).raw(),
            );
            let va = VirtAddr::new(0xC000_0000);
            assert!(tlb.translate(TTBR0, A1, TTBR1, va).is_some());
            // Drop only the leaf: the walk cache still points at the old L2 table.
            set(&mut ram, &mut tlb, l1, 0);
            {
                let mut m = tlb.machine.borrow_mut();
                m.tlb.leaves.clear();
            }
            assert!(tlb.translate(TTBR0, A1, TTBR1, va).is_some());
        }

        #[test]
        fn an_invalidation_issued_before_the_write_does_not_count() {
            let (mut ram, mut tlb) = machine();
            let l1 = PhysAddr::new(TTBR1.as_u32() + 4 * 0xC00);
            let desc = SectionDesc::new(PhysAddr::new(0x30_0000), MapFlags::KERNEL_DATA).raw();
            set(&mut ram, &mut tlb, l1, desc);
            let va = VirtAddr::new(0xC000_0000);
            tlb.translate(TTBR0, A1, TTBR1, va);
            tlb.invalidate_page(va, TlbTag::Global);
            set(&mut ram, &mut tlb, l1, 0);
            tlb.sync();
            assert!(
                tlb.translate(TTBR0, A1, TTBR1, va).is_some(),
                "may have been refetched"
            );
            tlb.invalidate_page(va, TlbTag::Global);
            tlb.sync();
            assert!(tlb.translate(TTBR0, A1, TTBR1, va).is_none());
        }

        #[test]
        fn replacing_a_cached_descriptor_in_place_is_a_bbm_violation() {
            let (mut ram, mut tlb) = machine();
            let l1 = PhysAddr::new(TTBR1.as_u32() + 4 * 0xC00);
            set(
                &mut ram,
                &mut tlb,
                l1,
                SectionDesc::new(PhysAddr::new(0x30_0000), MapFlags::KERNEL_DATA).raw(),
            );
            tlb.translate(TTBR0, A1, TTBR1, VirtAddr::new(0xC000_0000));
            // Permission-only change: allowed (needs invalidation, not BBM).
            set(
                &mut ram,
                &mut tlb,
                l1,
                SectionDesc::new(PhysAddr::new(0x30_0000), MapFlags::KERNEL_RODATA).raw(),
            );
            assert!(tlb.violations().is_empty());
            // Another output address: violation.
            set(
                &mut ram,
                &mut tlb,
                l1,
                SectionDesc::new(PhysAddr::new(0x40_0000), MapFlags::KERNEL_RODATA).raw(),
            );
            assert_eq!(tlb.violations().len(), 1);
        }
    }
}
