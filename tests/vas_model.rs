//! Address spaces against a plain model.
//!
//! Random map/unmap/protect/remap of pages, sections and ranges in one kernel and three user
//! spaces (ASIDs 1..3) that share one emulated MMU/TLB. After every step every page the test has
//! ever touched is translated through the emulated MMU (TLB first, then the tables), so a missing
//! invalidation shows up as a stale translation, and the emulation must have seen no
//! break-before-make violation, no unpublished descriptor and no incomplete invalidation.

use pi2vm::mm::addr::{Frame, Page, PhysAddr, VirtAddr, SECTION_SIZE};
use pi2vm::mm::desc::{MapFlags, MapSize, MemoryType, Translation};
use pi2vm::mm::layout::KERNEL_L1_PHYS;
use pi2vm::mm::phys::{HostFrames, HostRam};
use pi2vm::mm::tlb::{Asid, EmulatedTlb};
use pi2vm::mm::vas::{AddressSpace, Granule, MapError};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

type Space = AddressSpace<HostRam, EmulatedTlb>;

const RAM: u32 = 4 << 20;
const SPACES: usize = 4; // 0: kernel, 1..=3: user
const SLOTS: u32 = 6;
const FLAGS: [MapFlags; 8] = [
    MapFlags::USER_DATA,
    MapFlags::USER_TEXT,
    MapFlags::USER_RODATA,
    MapFlags::KERNEL_DATA,
    MapFlags::KERNEL_RODATA,
    MapFlags::KERNEL_TEXT,
    MapFlags::KERNEL_DEVICE,
    MapFlags::KERNEL_DMA.with_memory(MemoryType::StronglyOrdered),
];

#[derive(Debug, Clone)]
enum Op {
    MapPage(usize, u32, u32, usize),
    UnmapPage(usize, u32),
    ProtectPage(usize, u32, usize),
    RemapPage(usize, u32, u32, usize),
    MapSection(usize, u32, u32, usize),
    UnmapSection(usize, u32),
    ProtectSection(usize, u32, usize),
    MapPages(usize, u32, u32, u32, usize),
    MapSections(usize, u32, u32, u32, usize),
    UnmapRange(usize, u32, u32),
    ProtectRange(usize, u32, u32, usize),
    Recreate(usize),
}

/// A page index in the pool: slot `0..SLOTS`, page 0..8 or 248..256 of it.
fn pool_page() -> impl Strategy<Value = u32> {
    (0..SLOTS, prop_oneof![0..8u32, 248..256u32]).prop_map(|(s, p)| s << 8 | p)
}

fn op() -> impl Strategy<Value = Op> {
    let sp = 0..SPACES;
    let fl = 0..FLAGS.len();
    prop_oneof![
        4 => (sp.clone(), pool_page(), 0..64u32, fl.clone()).prop_map(|(s, p, f, x)| Op::MapPage(s, p, f, x)),
        3 => (sp.clone(), pool_page()).prop_map(|(s, p)| Op::UnmapPage(s, p)),
        2 => (sp.clone(), pool_page(), fl.clone()).prop_map(|(s, p, x)| Op::ProtectPage(s, p, x)),
        1 => (sp.clone(), pool_page(), 0..64u32, fl.clone()).prop_map(|(s, p, f, x)| Op::RemapPage(s, p, f, x)),
        1 => (sp.clone(), 0..SLOTS, 0..8u32, fl.clone()).prop_map(|(s, l, f, x)| Op::MapSection(s, l, f, x)),
        1 => (sp.clone(), 0..SLOTS).prop_map(|(s, l)| Op::UnmapSection(s, l)),
        1 => (sp.clone(), 0..SLOTS, fl.clone()).prop_map(|(s, l, x)| Op::ProtectSection(s, l, x)),
        2 => (sp.clone(), pool_page(), 1..10u32, 0..64u32, fl.clone()).prop_map(|(s, p, n, f, x)| Op::MapPages(s, p, n, f, x)),
        1 => (sp.clone(), 0..SLOTS - 1, 1..3u32, 0..8u32, fl.clone()).prop_map(|(s, l, n, f, x)| Op::MapSections(s, l, n, f, x)),
        2 => (sp.clone(), pool_page(), 1..10u32).prop_map(|(s, p, n)| Op::UnmapRange(s, p, n)),
        1 => (sp.clone(), pool_page(), 1..10u32, fl).prop_map(|(s, p, n, x)| Op::ProtectRange(s, p, n, x)),
        1 => (1..SPACES).prop_map(Op::Recreate),
    ]
}

/// Base VA of a space's pool.
fn base(space: usize) -> u32 {
    if space == 0 {
        0xC000_0000
    } else {
        0x0010_0000 * space as u32
    }
}

fn va_of(space: usize, page_index: u32) -> u32 {
    base(space) + (page_index << 12)
}

fn normalized(space: usize, f: MapFlags) -> MapFlags {
    MapFlags {
        global: space == 0,
        pxn: space != 0,
        ..f
    }
}

#[derive(Default)]
struct Model {
    /// (space, VA page number) -> (PA page number, flags).
    pages: BTreeMap<(usize, u32), (u32, MapFlags)>,
    /// (space, L1 slot) -> (PA section number, flags).
    sections: BTreeMap<(usize, u32), (u32, MapFlags)>,
}

impl Model {
    fn slot_has_pages(&self, space: usize, slot: u32) -> bool {
        self.pages
            .range((space, slot << 8)..(space, (slot + 1) << 8))
            .next()
            .is_some()
    }

    fn expect(&self, space: usize, va: u32) -> Option<Translation> {
        if let Some(&(pa, f)) = self.pages.get(&(space, va >> 12)) {
            return Some(Translation {
                pa: PhysAddr::new(pa << 12 | (va & 0xfff)),
                size: MapSize::Page,
                flags: Some(f),
            });
        }
        self.sections
            .get(&(space, va >> 20))
            .map(|&(pa, f)| Translation {
                pa: PhysAddr::new(pa << 20 | (va & 0xf_ffff)),
                size: MapSize::Section,
                flags: Some(f),
            })
    }

    /// What `check_mapped` of the implementation answers for a range.
    fn check_mapped(&self, space: usize, va: u32, len: u32) -> Result<(), MapError> {
        let mut done = 0;
        while done < len {
            let v = va + done;
            if self.sections.contains_key(&(space, v >> 20)) {
                if !v.is_multiple_of(SECTION_SIZE) || len - done < SECTION_SIZE {
                    return Err(MapError::GranuleMismatch);
                }
                done += SECTION_SIZE;
            } else if self.pages.contains_key(&(space, v >> 12)) {
                done += 4096;
            } else {
                return Err(MapError::NotMapped);
            }
        }
        Ok(())
    }
}

struct World {
    ram: HostRam,
    tlb: EmulatedTlb,
    alloc: HostFrames,
    spaces: Vec<Option<Space>>,
    model: Model,
    touched: BTreeSet<(usize, u32)>,
}

impl World {
    fn new() -> Self {
        let ram = HostRam::new(RAM);
        let tlb = EmulatedTlb::new(&ram);
        let mut alloc = HostFrames::new(Frame::from_number(0x10), (RAM >> 12) - 0x10);
        let mut spaces = vec![Some(
            Space::adopt_kernel(ram.clone(), tlb.clone(), &mut alloc).unwrap(),
        )];
        for a in 1..SPACES {
            spaces.push(Some(
                Space::new_user(ram.clone(), tlb.clone(), Asid::new(a as u8), &mut alloc).unwrap(),
            ));
        }
        let mut touched = BTreeSet::new();
        for s in 0..SPACES {
            for slot in 0..SLOTS {
                for p in (0..8).chain(248..256) {
                    touched.insert((s, va_of(s, slot << 8 | p) >> 12));
                }
            }
        }
        Self {
            ram,
            tlb,
            alloc,
            spaces,
            model: Model::default(),
            touched,
        }
    }

    fn space(&mut self, s: usize) -> &mut Space {
        self.spaces[s].as_mut().unwrap()
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::MapPage(s, p, f, x) => {
                let va = va_of(s, p);
                let want = if self.model.sections.contains_key(&(s, va >> 20))
                    || self.model.pages.contains_key(&(s, va >> 12))
                {
                    Err(MapError::AlreadyMapped)
                } else {
                    Ok(())
                };
                let page = Page::containing(VirtAddr::new(va));
                let frame = Frame::from_number(0x1_0000 + f);
                let got = {
                    let (sp, alloc) = (self.spaces[s].as_mut().unwrap(), &mut self.alloc);
                    sp.map_page(page, frame, FLAGS[x], alloc)
                };
                assert_eq!(got, want, "{op:?}");
                if got.is_ok() {
                    self.model
                        .pages
                        .insert((s, va >> 12), (frame.number(), normalized(s, FLAGS[x])));
                }
            }
            Op::UnmapPage(s, p) => {
                let va = va_of(s, p);
                let want = if self.model.sections.contains_key(&(s, va >> 20)) {
                    Err(MapError::GranuleMismatch)
                } else {
                    match self.model.pages.get(&(s, va >> 12)) {
                        Some(&(pa, _)) => Ok(Frame::from_number(pa)),
                        None => Err(MapError::NotMapped),
                    }
                };
                let page = Page::containing(VirtAddr::new(va));
                let got = {
                    let (sp, alloc) = (self.spaces[s].as_mut().unwrap(), &mut self.alloc);
                    sp.unmap_page(page, alloc)
                };
                assert_eq!(got, want, "{op:?}");
                if got.is_ok() {
                    self.model.pages.remove(&(s, va >> 12));
                }
            }
            Op::ProtectPage(s, p, x) | Op::RemapPage(s, p, _, x) => {
                let va = va_of(s, p);
                let old = self.model.pages.get(&(s, va >> 12)).copied();
                let err = if self.model.sections.contains_key(&(s, va >> 20)) {
                    Some(MapError::GranuleMismatch)
                } else if old.is_none() {
                    Some(MapError::NotMapped)
                } else {
                    None
                };
                let page = Page::containing(VirtAddr::new(va));
                let new_pa = match *op {
                    Op::RemapPage(_, _, f, _) => {
                        let frame = Frame::from_number(0x1_0000 + f);
                        let got = self.space(s).remap_page(page, frame, FLAGS[x]);
                        match err {
                            Some(e) => assert_eq!(got, Err(e), "{op:?}"),
                            None => assert_eq!(got, Ok(Frame::from_number(old.unwrap().0))),
                        }
                        frame.number()
                    }
                    _ => {
                        let got = self.space(s).protect_page(page, FLAGS[x]);
                        assert_eq!(got, err.map_or(Ok(()), Err), "{op:?}");
                        old.map_or(0, |o| o.0)
                    }
                };
                if err.is_none() {
                    self.model
                        .pages
                        .insert((s, va >> 12), (new_pa, normalized(s, FLAGS[x])));
                }
            }
            Op::MapSection(s, l, f, x) => {
                let va = base(s) + (l << 20);
                let slot = va >> 20;
                let want = if self.model.sections.contains_key(&(s, slot))
                    || self.model.slot_has_pages(s, slot)
                {
                    Err(MapError::AlreadyMapped)
                } else {
                    Ok(())
                };
                let pa = 0x200 + f;
                let got =
                    self.space(s)
                        .map_section(VirtAddr::new(va), PhysAddr::new(pa << 20), FLAGS[x]);
                assert_eq!(got, want, "{op:?}");
                if got.is_ok() {
                    self.model
                        .sections
                        .insert((s, slot), (pa, normalized(s, FLAGS[x])));
                }
            }
            Op::UnmapSection(s, l) | Op::ProtectSection(s, l, _) => {
                let va = base(s) + (l << 20);
                let slot = va >> 20;
                let old = self.model.sections.get(&(s, slot)).copied();
                let err = match old {
                    Some(_) => None,
                    None if self.model.slot_has_pages(s, slot) => Some(MapError::GranuleMismatch),
                    None => Some(MapError::NotMapped),
                };
                if let Op::ProtectSection(_, _, x) = *op {
                    let got = self.space(s).protect_section(VirtAddr::new(va), FLAGS[x]);
                    assert_eq!(got, err.map_or(Ok(()), Err), "{op:?}");
                    if let Some((pa, _)) = old {
                        self.model
                            .sections
                            .insert((s, slot), (pa, normalized(s, FLAGS[x])));
                    }
                } else {
                    let got = self.space(s).unmap_section(VirtAddr::new(va));
                    match err {
                        Some(e) => assert_eq!(got, Err(e), "{op:?}"),
                        None => assert_eq!(got, Ok(PhysAddr::new(old.unwrap().0 << 20))),
                    }
                    self.model.sections.remove(&(s, slot));
                }
            }
            Op::MapPages(s, p, n, f, x) => {
                let va = va_of(s, p);
                let clash = (0..n).any(|i| {
                    let v = va + (i << 12);
                    self.model.sections.contains_key(&(s, v >> 20))
                        || self.model.pages.contains_key(&(s, v >> 12))
                });
                let want = if clash {
                    Err(MapError::AlreadyMapped)
                } else {
                    Ok(())
                };
                let got = {
                    let (sp, alloc) = (self.spaces[s].as_mut().unwrap(), &mut self.alloc);
                    sp.map_range(
                        VirtAddr::new(va),
                        PhysAddr::new((0x1_0000 + f) << 12),
                        n << 12,
                        FLAGS[x],
                        Granule::Auto,
                        alloc,
                    )
                };
                assert_eq!(got, want, "{op:?}");
                for i in 0..n {
                    let key = (s, (va >> 12) + i);
                    self.touched.insert(key);
                    if got.is_ok() {
                        self.model
                            .pages
                            .insert(key, (0x1_0000 + f + i, normalized(s, FLAGS[x])));
                    }
                }
            }
            Op::MapSections(s, l, n, f, x) => {
                let va = base(s) + (l << 20);
                let clash = (0..n).any(|i| {
                    let slot = (va >> 20) + i;
                    self.model.sections.contains_key(&(s, slot))
                        || self.model.slot_has_pages(s, slot)
                });
                let want = if clash {
                    Err(MapError::AlreadyMapped)
                } else {
                    Ok(())
                };
                let pa = 0x200 + f;
                let got = {
                    let (sp, alloc) = (self.spaces[s].as_mut().unwrap(), &mut self.alloc);
                    sp.map_range(
                        VirtAddr::new(va),
                        PhysAddr::new(pa << 20),
                        n << 20,
                        FLAGS[x],
                        Granule::Sections,
                        alloc,
                    )
                };
                assert_eq!(got, want, "{op:?}");
                if got.is_ok() {
                    for i in 0..n {
                        self.model
                            .sections
                            .insert((s, (va >> 20) + i), (pa + i, normalized(s, FLAGS[x])));
                    }
                }
            }
            Op::UnmapRange(s, p, n) | Op::ProtectRange(s, p, n, _) => {
                let va = va_of(s, p);
                let want = self.model.check_mapped(s, va, n << 12);
                let got = match *op {
                    Op::ProtectRange(_, _, _, x) => {
                        self.space(s)
                            .protect_range(VirtAddr::new(va), n << 12, FLAGS[x])
                    }
                    _ => {
                        let (sp, alloc) = (self.spaces[s].as_mut().unwrap(), &mut self.alloc);
                        sp.unmap_range(VirtAddr::new(va), n << 12, alloc)
                    }
                };
                assert_eq!(got, want, "{op:?}");
                for i in 0..n {
                    self.touched.insert((s, (va >> 12) + i));
                }
                if got.is_ok() {
                    let mut done = 0;
                    while done < n << 12 {
                        let v = va + done;
                        if let Some(e) = self.model.sections.get_mut(&(s, v >> 20)) {
                            match *op {
                                Op::ProtectRange(_, _, _, x) => e.1 = normalized(s, FLAGS[x]),
                                _ => {
                                    self.model.sections.remove(&(s, v >> 20));
                                }
                            }
                            done += SECTION_SIZE;
                        } else {
                            match *op {
                                Op::ProtectRange(_, _, _, x) => {
                                    self.model.pages.get_mut(&(s, v >> 12)).unwrap().1 =
                                        normalized(s, FLAGS[x])
                                }
                                _ => {
                                    self.model.pages.remove(&(s, v >> 12));
                                }
                            }
                            done += 4096;
                        }
                    }
                }
            }
            Op::Recreate(s) => {
                let old = self.spaces[s].take().unwrap();
                old.destroy(&mut self.alloc).unwrap();
                self.spaces[s] = Some(
                    Space::new_user(
                        self.ram.clone(),
                        self.tlb.clone(),
                        Asid::new(s as u8),
                        &mut self.alloc,
                    )
                    .unwrap(),
                );
                self.model.pages.retain(|k, _| k.0 != s);
                self.model.sections.retain(|k, _| k.0 != s);
            }
        }
    }

    /// Translates every touched page (three addresses of every section) through the emulated
    /// MMU in the context of its space, and also through the tables directly.
    fn check(&mut self, step: usize) {
        let user_ctx = |w: &World, s: usize| {
            let sp = w.spaces[s].as_ref().unwrap();
            (sp.l1_phys(), sp.asid().unwrap())
        };
        let mut vas: Vec<(usize, u32)> = self.touched.iter().map(|&(s, p)| (s, p << 12)).collect();
        for &(s, slot) in self.model.sections.keys() {
            for off in [0, 0x8_0123, 0xF_F000] {
                vas.push((s, slot << 20 | off));
            }
        }
        for (s, va) in vas {
            // Kernel addresses are seen through a rotating user context: global entries.
            let ctx = if s == 0 { 1 + step % (SPACES - 1) } else { s };
            let (ttbr0, asid) = user_ctx(self, ctx);
            let want = self.model.expect(s, va);
            let got = self
                .tlb
                .translate(ttbr0, asid, KERNEL_L1_PHYS, VirtAddr::new(va));
            assert_eq!(
                got, want,
                "MMU view of space {s} at {va:#x} after step {step}"
            );
            let direct = self.spaces[s]
                .as_ref()
                .unwrap()
                .translate(VirtAddr::new(va));
            assert_eq!(direct, want, "table view of space {s} at {va:#x}");
        }
        assert_eq!(self.tlb.violations(), vec![]);
        assert_eq!(self.tlb.pending_invalidations(), 0);
        assert_eq!(self.tlb.unpublished_words(), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn address_spaces_follow_the_model_and_the_tlb_never_goes_stale(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let mut w = World::new();
        let start_free = w.alloc.free_count()
            + 2 * (SPACES - 1) // user L1 tables
            + SPACES; // count frames
        for (i, op) in ops.iter().enumerate() {
            w.apply(op);
            w.check(i);
        }
        let mut runs = 0;
        w.spaces[0].as_ref().unwrap().for_each_mapping(|_| runs += 1);
        prop_assert!(runs <= w.model.pages.len() + w.model.sections.len());
        for s in w.spaces.iter_mut() {
            s.take().unwrap().destroy(&mut w.alloc).unwrap();
        }
        prop_assert_eq!(w.alloc.free_count(), start_free);
        prop_assert_eq!(w.tlb.violations(), vec![]);
    }
}
