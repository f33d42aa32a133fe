//! User memory (regions, demand paging, copy on write, shared objects) against a plain model.
//!
//! Random sequences of region adds, loads, stores, instruction fetches, loads by the kernel
//! (`populate`), forks (some of them short of frames), removals and teardowns over four spaces
//! that share one emulated MMU/TLB and one frame allocator. The model knows, per space, its
//! regions and which pages are mapped to which (model) frame, and per frame and shared-object
//! page the bytes written at a few offsets. After every step, for every live space:
//!
//! * the pages mapped in the tables are exactly those of the model, and the emulated MMU (TLB
//!   first) translates every page of the pool as the tables do (no stale entry);
//! * every mapped page holds exactly the bytes its model frame holds (a space sees its own
//!   writes and nobody else's), with the attributes its region and sharing allow;
//! * private pages shared copy on write are one frame until written, with the right owner count
//!   in `FrameRefs`, and the allocator's free count is what the model's frames and tables leave;
//! * no break-before-make violation, no invalidation left incomplete.
//!
//! At the end every space is destroyed and the allocator must have every frame back.

use pi2vm::mm::addr::{Frame, Page, PhysAddr, VirtAddr, PAGE_SIZE};
use pi2vm::mm::desc::{MapFlags, MapSize};
use pi2vm::mm::frame::{FrameAllocator, PmmError};
use pi2vm::mm::layout::KERNEL_L1_PHYS;
use pi2vm::mm::phys::{HostFrames, HostRam, PhysMem};
use pi2vm::mm::tlb::{Asid, EmulatedTlb};
use pi2vm::mm::uvm::{
    Access, Backing, FaultError, FrameRefs, Perm, RegionKind, Resolved, SharedObject, UserVm,
    UvmError,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};

type Vm = UserVm<HostRam, EmulatedTlb>;

const RAM: u32 = 2 << 20;
const FIRST_FRAME: u32 = 0x100;
const SPACES: usize = 4;
const OBJECTS: usize = 2;
const OBJECT_PAGES: u32 = 8;
/// Pool pages: two areas of 10 pages; each straddles two L1 slots, the second also two groups
/// of four slots (two L2 frames).
const AREA: [u32; 2] = [0x000F_B000, 0x003F_B000];
const AREA_PAGES: u32 = 10;
const POOL: u32 = 2 * AREA_PAGES;
/// Offsets in a page where bytes are written and checked.
const OFFSETS: [u32; 5] = [0, 1, 0x7ff, 0xffc, 0xfff];

fn pool_va(p: u32) -> u32 {
    AREA[(p / AREA_PAGES) as usize] + (p % AREA_PAGES) * PAGE_SIZE
}

#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    /// space, pool page, pages, kind 0..6, object, object offset
    Add(usize, u32, u32, u8, usize, u32),
    /// space, pool page, page offset index
    Read(usize, u32, usize),
    /// space, pool page, page offset index, byte, no frame available
    Write(usize, u32, usize, u8, bool),
    Exec(usize, u32),
    Populate(usize, u32, usize, u8),
    /// parent, child, frame budget
    Fork(usize, usize, Option<u32>),
    Remove(usize, u32, u32),
    Destroy(usize),
}

/// A region kind for `Op::Add`: private read/write most often.
fn kind() -> impl Strategy<Value = u8> {
    prop_oneof![4 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8), 2 => Just(4u8), 1 => Just(5u8)]
}

/// Space 0 at the start: both areas tiled with regions of 1..4 pages.
fn layout() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        (1..5u32, kind(), 0..OBJECTS, 0..4u32),
        2 * AREA_PAGES as usize,
    )
    .prop_map(|tiles| {
        let mut ops = Vec::new();
        let mut p = 0;
        for (n, k, o, f) in tiles {
            let left = AREA_PAGES - p % AREA_PAGES;
            if p >= POOL {
                break;
            }
            let n = n.min(left);
            ops.push(Op::Add(0, p, n, k, o, f));
            p += n;
        }
        ops
    })
}

fn op() -> impl Strategy<Value = Op> {
    let sp = 0..SPACES;
    let pg = 0..POOL;
    let off = 0..OFFSETS.len();
    prop_oneof![
        1 => sp.clone().prop_map(Op::Create),
        2 => (sp.clone(), pg.clone(), 1..5u32, kind(), 0..OBJECTS, 0..4u32)
            .prop_map(|(s, p, n, k, o, f)| Op::Add(s, p, n, k, o, f)),
        4 => (sp.clone(), pg.clone(), off.clone()).prop_map(|(s, p, o)| Op::Read(s, p, o)),
        8 => (sp.clone(), pg.clone(), off.clone(), 1..=255u8, prop::bool::weighted(0.1))
            .prop_map(|(s, p, o, b, oom)| Op::Write(s, p, o, b, oom)),
        1 => (sp.clone(), pg.clone()).prop_map(|(s, p)| Op::Exec(s, p)),
        1 => (sp.clone(), pg.clone(), off, 1..=255u8).prop_map(|(s, p, o, b)| Op::Populate(s, p, o, b)),
        4 => (sp.clone(), sp.clone(), prop::option::weighted(0.3, 0..6u32))
            .prop_map(|(s, t, b)| Op::Fork(s, t, b)),
        2 => (sp.clone(), pg, 1..4u32).prop_map(|(s, p, n)| Op::Remove(s, p, n)),
        1 => sp.prop_map(Op::Destroy),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MBacking {
    Private,
    Guard,
    /// object slot, object page of the region's first page
    Shared(usize, u32),
}

#[derive(Debug, Clone, Copy)]
struct MRegion {
    start: u32,
    len: u32,
    perm: Perm,
    backing: MBacking,
}

impl MRegion {
    fn end(&self) -> u32 {
        self.start + self.len
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MPage {
    /// A private page mapped to a model frame.
    Private(u32),
    /// A shared-object page mapped: object slot, object page.
    Shared(usize, u32),
}

#[derive(Debug, Default, Clone)]
struct MSpace {
    regions: BTreeMap<u32, MRegion>,
    /// VA page start -> what is mapped there.
    mapped: BTreeMap<u32, MPage>,
}

impl MSpace {
    fn region_at(&self, va: u32) -> Option<MRegion> {
        self.regions
            .range(..=va)
            .next_back()
            .map(|(_, r)| *r)
            .filter(|r| va < r.end())
    }
}

#[derive(Default)]
struct Model {
    spaces: [Option<MSpace>; SPACES],
    /// Model frame -> bytes at `OFFSETS`.
    frames: BTreeMap<u32, [u8; 5]>,
    next_frame: u32,
    /// (object slot, page) -> bytes at `OFFSETS`, for the allocated pages of live objects.
    objects: BTreeMap<(usize, u32), [u8; 5]>,
}

impl Model {
    fn owners(&self, id: u32) -> u32 {
        self.spaces
            .iter()
            .flatten()
            .map(|s| {
                s.mapped
                    .values()
                    .filter(|m| **m == MPage::Private(id))
                    .count() as u32
            })
            .sum()
    }

    fn new_frame(&mut self, bytes: [u8; 5]) -> u32 {
        self.next_frame += 1;
        self.frames.insert(self.next_frame, bytes);
        self.next_frame
    }

    /// Forgets model frames no space maps any more and objects no region maps any more.
    fn collect(&mut self) {
        let live: BTreeSet<u32> = self
            .spaces
            .iter()
            .flatten()
            .flat_map(|s| s.mapped.values())
            .filter_map(|m| match m {
                MPage::Private(id) => Some(*id),
                MPage::Shared(..) => None,
            })
            .collect();
        self.frames.retain(|id, _| live.contains(id));
        let objects = self.live_objects();
        self.objects.retain(|(o, _), _| objects.contains(o));
    }

    fn live_objects(&self) -> BTreeSet<usize> {
        self.spaces
            .iter()
            .flatten()
            .flat_map(|s| s.regions.values())
            .filter_map(|r| match r.backing {
                MBacking::Shared(o, _) => Some(o),
                _ => None,
            })
            .collect()
    }

    /// Bytes of what is mapped at a page.
    fn bytes(&self, m: MPage) -> [u8; 5] {
        match m {
            MPage::Private(id) => self.frames[&id],
            MPage::Shared(o, p) => self.objects.get(&(o, p)).copied().unwrap_or_default(),
        }
    }
}

/// Host frames that hold garbage when handed out: nothing may reach user space without being
/// zeroed or overwritten.
struct DirtyFrames {
    frames: HostFrames,
    ram: HostRam,
    fill: u32,
}

impl DirtyFrames {
    fn free_count(&self) -> usize {
        self.frames.free_count()
    }

    fn set_budget(&mut self, n: Option<u32>) {
        self.frames.set_budget(n);
    }
}

impl FrameAllocator for DirtyFrames {
    fn alloc_frame(&mut self) -> Result<Frame, PmmError> {
        let f = self.frames.alloc_frame()?;
        self.fill = self
            .fill
            .wrapping_mul(0x0101_0101)
            .wrapping_add(0x3779_b9f1);
        for off in OFFSETS {
            let pa = PhysAddr::new(f.start().as_u32() + (off & !3));
            self.ram.write_u32(pa, self.fill | 0x0101_0101);
        }
        Ok(f)
    }

    fn alloc_contiguous(
        &mut self,
        count: u32,
        align: u32,
        limit: Option<PhysAddr>,
    ) -> Result<Frame, PmmError> {
        self.frames.alloc_contiguous(count, align, limit)
    }

    fn free_frame(&mut self, frame: Frame) -> Result<(), PmmError> {
        self.frames.free_frame(frame)
    }

    fn free_contiguous(&mut self, first: Frame, count: u32) -> Result<(), PmmError> {
        self.frames.free_contiguous(first, count)
    }
}

struct Rig {
    ram: HostRam,
    tlb: EmulatedTlb,
    alloc: DirtyFrames,
    refs: FrameRefs,
    vms: [Option<Vm>; SPACES],
    objects: [Weak<SharedObject>; OBJECTS],
    model: Model,
    initial_free: usize,
}

fn asid(s: usize) -> Asid {
    Asid::new(s as u8 + 1)
}

fn va(v: u32) -> VirtAddr {
    VirtAddr::new(v)
}

impl Rig {
    fn new() -> Self {
        let ram = HostRam::new(RAM);
        let tlb = EmulatedTlb::new(&ram);
        let frames = HostFrames::new(Frame::from_number(FIRST_FRAME), (RAM >> 12) - FIRST_FRAME);
        let initial_free = frames.free_count();
        let alloc = DirtyFrames {
            frames,
            ram: ram.clone(),
            fill: 0,
        };
        Self {
            ram,
            tlb,
            alloc,
            refs: FrameRefs::new(),
            vms: Default::default(),
            objects: Default::default(),
            model: Model::default(),
            initial_free,
        }
    }

    /// A new empty space in slot `s`, if free and fewer than two spaces live (spaces mostly come
    /// from forks, which make more interesting ones).
    fn create(&mut self, s: usize) {
        if self.vms[s].is_none() && self.vms.iter().flatten().count() < 2 {
            let vm = Vm::new(self.ram.clone(), self.tlb.clone(), asid(s), &mut self.alloc).unwrap();
            self.vms[s] = Some(vm);
            self.model.spaces[s] = Some(MSpace::default());
        }
    }

    /// Translation through the emulated MMU, as the CPU running space `s` sees it.
    fn mmu(&mut self, s: usize, v: u32) -> Option<(PhysAddr, MapFlags)> {
        let vm = self.vms[s].as_ref().unwrap();
        let t = self
            .tlb
            .translate(vm.l1_phys(), vm.asid(), KERNEL_L1_PHYS, va(v))?;
        Some((t.pa, t.flags.unwrap()))
    }

    fn fault(&mut self, s: usize, v: u32, access: Access) -> Result<Resolved, FaultError> {
        let vm = self.vms[s].as_mut().unwrap();
        vm.handle_fault(va(v), access, &mut self.alloc, &mut self.refs)
    }

    /// The live space an operation on space `s` applies to: `s`, or the next live one.
    fn live(&self, s: usize) -> usize {
        (0..SPACES)
            .map(|i| (s + i) % SPACES)
            .find(|&i| self.vms[i].is_some())
            .unwrap_or(s)
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Create(s) => self.create(s),
            Op::Add(s, p, n, kind, o, off) => self.add(self.live(s), p, n, kind, o, off),
            Op::Read(s, p, i) => self.read(self.live(s), p, i),
            Op::Write(s, p, i, b, oom) => self.write(self.live(s), p, i, b, oom),
            Op::Exec(s, p) => self.exec(self.live(s), p),
            Op::Populate(s, p, i, b) => self.populate(self.live(s), p, i, b),
            Op::Fork(s, t, budget) => self.fork(self.live(s), t, budget),
            Op::Remove(s, p, n) => self.remove(self.live(s), p, n),
            Op::Destroy(s) => self.destroy(s),
        }
    }

    fn add(&mut self, s: usize, p: u32, n: u32, kind: u8, o: usize, off: u32) {
        let Some(ms) = &self.model.spaces[s] else {
            return;
        };
        let start = pool_va(p);
        let len = n * PAGE_SIZE;
        let (perm, rkind, backing) = match kind {
            0 => (Perm::RW, RegionKind::Anon, MBacking::Private),
            1 => (Perm::R, RegionKind::Data, MBacking::Private),
            2 => (Perm::RX, RegionKind::Text, MBacking::Private),
            3 => (Perm::RW, RegionKind::Guard, MBacking::Guard),
            4 => (Perm::RW, RegionKind::Shared, MBacking::Shared(o, off)),
            _ => (Perm::R, RegionKind::Shared, MBacking::Shared(o, off)),
        };
        let overlap = ms
            .regions
            .values()
            .any(|r| r.start < start + len && start < r.end());
        let expected = match backing {
            MBacking::Shared(..) if off + n > OBJECT_PAGES => Err(UvmError::BadLength),
            _ if overlap => Err(UvmError::Overlap),
            _ => Ok(()),
        };
        let vm = self.vms[s].as_mut().unwrap();
        let got = match backing {
            MBacking::Shared(o, off) => {
                let object = self.objects[o].upgrade().unwrap_or_else(|| {
                    let object = SharedObject::new(OBJECT_PAGES);
                    self.objects[o] = Arc::downgrade(&object);
                    object
                });
                vm.add_shared_region(va(start), len, perm, rkind, object, off)
            }
            _ => vm.add_region(va(start), len, perm, rkind, Backing::Private),
        };
        assert_eq!(got, expected);
        if got.is_ok() {
            let r = MRegion {
                start,
                len,
                perm,
                backing,
            };
            self.model.spaces[s]
                .as_mut()
                .unwrap()
                .regions
                .insert(start, r);
        }
    }

    /// Records that `page` of space `s` now maps `m` (allocating the object page if needed).
    fn map(&mut self, s: usize, page: u32, m: MPage) {
        if let MPage::Shared(o, idx) = m {
            self.model.objects.entry((o, idx)).or_default();
        }
        let space = self.model.spaces[s].as_mut().unwrap();
        space.mapped.insert(page, m);
        self.model.collect();
    }

    /// What a fault on an unmapped page of `r` maps.
    fn fresh_page(&mut self, r: MRegion, page: u32) -> (MPage, Resolved) {
        match r.backing {
            MBacking::Private => (
                MPage::Private(self.model.new_frame([0; 5])),
                Resolved::DemandZero,
            ),
            MBacking::Shared(o, off) => {
                let index = off + (page - r.start) / PAGE_SIZE;
                (MPage::Shared(o, index), Resolved::SharedPage)
            }
            MBacking::Guard => unreachable!(),
        }
    }

    /// The expected refusal of an access by the region, if any.
    fn refusal(ms: &MSpace, v: u32, access: Access) -> Result<MRegion, FaultError> {
        let r = ms.region_at(v).ok_or(FaultError::NoRegion)?;
        let allowed = match access {
            Access::Read => true,
            Access::Write => r.perm == Perm::RW,
            Access::Execute => r.perm == Perm::RX,
        };
        match r.backing {
            MBacking::Guard => Err(FaultError::Guard),
            _ if !allowed => Err(FaultError::Protection),
            _ => Ok(r),
        }
    }

    fn read(&mut self, s: usize, p: u32, i: usize) {
        let Some(ms) = self.model.spaces[s].clone() else {
            return;
        };
        let v = pool_va(p) + OFFSETS[i];
        let page = pool_va(p);
        let expected = ms.mapped.get(&page).copied();
        let pa = match self.mmu(s, v) {
            Some((pa, _)) => {
                assert!(expected.is_some(), "MMU translates an unmapped page");
                pa
            }
            None => {
                assert!(expected.is_none(), "MMU misses a mapped page");
                let got = self.fault(s, v, Access::Read);
                let r = match Self::refusal(&ms, v, Access::Read) {
                    Err(e) => {
                        assert_eq!(got, Err(e));
                        return;
                    }
                    Ok(r) => r,
                };
                let (m, resolved) = self.fresh_page(r, page);
                assert_eq!(got, Ok(resolved));
                self.map(s, page, m);
                self.mmu(s, v).expect("resolved").0
            }
        };
        let mut b = [0];
        self.ram.read_bytes(pa, &mut b);
        let m = self.model.spaces[s].as_ref().unwrap().mapped[&page];
        assert_eq!(b[0], self.model.bytes(m)[i], "read {v:#x} in space {s}");
    }

    fn write(&mut self, s: usize, p: u32, i: usize, byte: u8, oom: bool) {
        let Some(ms) = self.model.spaces[s].clone() else {
            return;
        };
        let page = pool_va(p);
        let v = page + OFFSETS[i];
        let mapped = ms.mapped.get(&page).copied();
        let pa = match self.mmu(s, v) {
            Some((pa, f)) if f.access.is_writable() => {
                match mapped {
                    Some(MPage::Private(id)) => assert_eq!(self.model.owners(id), 1),
                    Some(MPage::Shared(..)) => {}
                    None => panic!("MMU translates an unmapped page"),
                }
                pa
            }
            _ => {
                if oom {
                    self.alloc.set_budget(Some(0));
                }
                let got = self.fault(s, v, Access::Write);
                self.alloc.set_budget(None);
                let r = match Self::refusal(&ms, v, Access::Write) {
                    Err(e) => {
                        assert_eq!(got, Err(e));
                        return;
                    }
                    Ok(r) => r,
                };
                let (m, resolved) = match mapped {
                    None => self.fresh_page(r, page),
                    Some(MPage::Private(id)) if self.model.owners(id) > 1 => {
                        let bytes = self.model.frames[&id];
                        (
                            MPage::Private(self.model.new_frame(bytes)),
                            Resolved::CopyOnWrite,
                        )
                    }
                    Some(m @ MPage::Private(_)) => (m, Resolved::Reclaimed),
                    Some(MPage::Shared(..)) => panic!("shared page mapped read-only in RW"),
                };
                // With no frame to spare, a fault fails when it needs one: for the page (a
                // demand-zero page, a copy, a new object page) or for an L2 table (the first
                // page of a group of four L1 slots).
                let needs_page = match (resolved, m) {
                    (Resolved::DemandZero | Resolved::CopyOnWrite, _) => true,
                    (Resolved::SharedPage, MPage::Shared(o, idx)) => {
                        !self.model.objects.contains_key(&(o, idx))
                    }
                    _ => false,
                };
                let needs_table =
                    mapped.is_none() && !ms.mapped.keys().any(|k| k >> 22 == page >> 22);
                if oom && (needs_page || needs_table) {
                    assert_eq!(got, Err(FaultError::OutOfMemory));
                    self.model.collect();
                    return;
                }
                assert_eq!(got, Ok(resolved), "write {v:#x} in space {s}");
                self.map(s, page, m);
                let (pa, f) = self.mmu(s, v).expect("resolved");
                assert!(f.access.is_writable());
                pa
            }
        };
        self.ram.write_bytes(pa, &[byte]);
        match self.model.spaces[s].as_ref().unwrap().mapped[&page] {
            MPage::Private(id) => self.model.frames.get_mut(&id).unwrap()[i] = byte,
            MPage::Shared(o, idx) => self.model.objects.entry((o, idx)).or_default()[i] = byte,
        }
    }

    fn exec(&mut self, s: usize, p: u32) {
        let Some(ms) = self.model.spaces[s].clone() else {
            return;
        };
        let page = pool_va(p);
        let got = self.fault(s, page, Access::Execute);
        let r = match Self::refusal(&ms, page, Access::Execute) {
            Err(e) => {
                assert_eq!(got, Err(e));
                return;
            }
            Ok(r) => r,
        };
        if ms.mapped.contains_key(&page) {
            assert_eq!(got, Ok(Resolved::AlreadyMapped));
        } else {
            let (m, resolved) = self.fresh_page(r, page);
            assert_eq!(got, Ok(resolved));
            self.map(s, page, m);
        }
    }

    fn populate(&mut self, s: usize, p: u32, i: usize, byte: u8) {
        let Some(ms) = self.model.spaces[s].clone() else {
            return;
        };
        let page = pool_va(p);
        let v = page + OFFSETS[i];
        let vm = self.vms[s].as_mut().unwrap();
        let got = vm.populate(va(v), &[byte], &mut self.alloc, &mut self.refs);
        match ms.region_at(v) {
            Some(r) if r.backing == MBacking::Private => {
                assert_eq!(got, Ok(()));
                let id = match ms.mapped.get(&page) {
                    None => self.model.new_frame([0; 5]),
                    Some(MPage::Private(id)) if self.model.owners(*id) > 1 => {
                        let bytes = self.model.frames[id];
                        self.model.new_frame(bytes)
                    }
                    Some(MPage::Private(id)) => *id,
                    Some(MPage::Shared(..)) => unreachable!(),
                };
                self.model.frames.get_mut(&id).unwrap()[i] = byte;
                let space = self.model.spaces[s].as_mut().unwrap();
                space.mapped.insert(page, MPage::Private(id));
                self.model.collect();
            }
            _ => assert_eq!(got, Err(UvmError::NotFound)),
        }
    }

    fn fork(&mut self, s: usize, t: usize, budget: Option<u32>) {
        if self.vms[s].is_none() || self.vms[t].is_some() {
            return;
        }
        self.alloc.set_budget(budget);
        let parent = self.vms[s].as_mut().unwrap();
        let got = parent.fork(
            asid(t),
            self.ram.clone(),
            self.tlb.clone(),
            &mut self.alloc,
            &mut self.refs,
        );
        self.alloc.set_budget(None);
        match got {
            Ok(child) => {
                self.vms[t] = Some(child);
                let ms = self.model.spaces[s].as_ref().unwrap();
                let child = MSpace {
                    regions: ms.regions.clone(),
                    mapped: ms
                        .mapped
                        .iter()
                        .filter(|(_, m)| matches!(m, MPage::Private(_)))
                        .map(|(k, m)| (*k, *m))
                        .collect(),
                };
                self.model.spaces[t] = Some(child);
            }
            Err(e) => {
                assert!(budget.is_some(), "fork failed without a budget: {e:?}");
                assert_eq!(e, UvmError::OutOfMemory);
            }
        }
    }

    fn remove(&mut self, s: usize, p: u32, n: u32) {
        let Some(ms) = self.model.spaces[s].as_mut() else {
            return;
        };
        let start = pool_va(p);
        let end = start + n * PAGE_SIZE;
        let hit: Vec<MRegion> = ms
            .regions
            .values()
            .filter(|r| r.start < end && start < r.end())
            .copied()
            .collect();
        let vm = self.vms[s].as_mut().unwrap();
        let got = vm.remove(va(start), end - start, &mut self.alloc, &mut self.refs);
        if hit.is_empty() {
            assert_eq!(got, Err(UvmError::NotFound));
            return;
        }
        assert_eq!(got, Ok(()));
        for r in hit {
            ms.regions.remove(&r.start);
            let (from, to) = (r.start.max(start), r.end().min(end));
            if r.start < from {
                ms.regions.insert(
                    r.start,
                    MRegion {
                        len: from - r.start,
                        ..r
                    },
                );
            }
            if to < r.end() {
                let backing = match r.backing {
                    MBacking::Shared(o, off) => {
                        MBacking::Shared(o, off + (to - r.start) / PAGE_SIZE)
                    }
                    b => b,
                };
                ms.regions.insert(
                    to,
                    MRegion {
                        start: to,
                        len: r.end() - to,
                        backing,
                        ..r
                    },
                );
            }
            let gone: Vec<u32> = ms.mapped.range(from..to).map(|(k, _)| *k).collect();
            for k in gone {
                ms.mapped.remove(&k);
            }
        }
        self.model.collect();
    }

    fn destroy(&mut self, s: usize) {
        if let Some(vm) = self.vms[s].take() {
            vm.destroy(&mut self.alloc, &mut self.refs).unwrap();
            self.model.spaces[s] = None;
            self.model.collect();
        }
    }

    /// Every check of the module documentation. `full`: look for mappings in the whole space,
    /// not only in the slots of the pool areas.
    fn check(&mut self, full: bool) {
        let mut owners: BTreeMap<u32, u32> = BTreeMap::new();
        for m in self
            .model
            .spaces
            .iter()
            .flatten()
            .flat_map(|s| s.mapped.values())
        {
            if let MPage::Private(id) = m {
                *owners.entry(*id).or_default() += 1;
            }
        }
        let mut data_frames: BTreeMap<u32, PhysAddr> = BTreeMap::new();
        let mut object_frames: BTreeMap<(usize, u32), PhysAddr> = BTreeMap::new();
        let mut tables = 0;
        for s in 0..SPACES {
            let Some(ms) = self.model.spaces[s].clone() else {
                continue;
            };
            let vm = self.vms[s].as_ref().unwrap();
            let resident = vm.resident_pages();
            let mut in_tables = BTreeMap::new();
            if full {
                vm.space().for_each_mapping(|m| {
                    assert_eq!(m.size, MapSize::Page);
                    for k in 0..m.len / PAGE_SIZE {
                        let v = m.va.as_u32() + k * PAGE_SIZE;
                        in_tables.insert(v, (m.pa.as_u32() + k * PAGE_SIZE, m.flags.unwrap()));
                    }
                });
            } else {
                // Regions never leave the areas: walk their slots only.
                for a in AREA {
                    let mut v = va(a & !0xf_ffff);
                    let end = va((a & !0xf_ffff) + 0x20_0000);
                    while let Some((at, t)) = vm.space().next_mapped(v, end) {
                        assert_eq!(t.size, MapSize::Page);
                        in_tables.insert(at.as_u32(), (t.pa.as_u32(), t.flags.unwrap()));
                        v = va(at.as_u32() + PAGE_SIZE);
                    }
                }
            }
            let model_pages: BTreeSet<u32> = ms.mapped.keys().copied().collect();
            let table_pages: BTreeSet<u32> = in_tables.keys().copied().collect();
            assert_eq!(table_pages, model_pages, "mapped pages of space {s}");
            assert_eq!(resident, model_pages.len() as u32);
            // Tables: L1 (two frames), counts, and one L2 frame per group of four slots in use.
            let groups: BTreeSet<u32> = model_pages.iter().map(|v| v >> 22).collect();
            tables += 3 + groups.len();
            // No stale translation anywhere in the pool or the mapped pages.
            let pool = AREA
                .iter()
                .flat_map(|a| (0..AREA_PAGES + 4).map(move |i| a + i * PAGE_SIZE))
                .chain(model_pages.iter().copied());
            for v in pool.collect::<Vec<_>>() {
                let walked = in_tables.get(&v).map(|&(pa, f)| (PhysAddr::new(pa), f));
                assert_eq!(
                    self.mmu(s, v),
                    walked,
                    "MMU vs tables at {v:#x} in space {s}"
                );
            }
            for (&v, &m) in &ms.mapped {
                let (pa, flags) = in_tables[&v];
                let r = ms.region_at(v).expect("mapped page outside its regions");
                let expected: &[MapFlags] = match (m, r.perm) {
                    (MPage::Private(id), Perm::RW) if owners[&id] > 1 => &[MapFlags::USER_RODATA],
                    (MPage::Private(_), Perm::RW) => &[MapFlags::USER_DATA, MapFlags::USER_RODATA],
                    (_, perm) => &[perm.flags()],
                };
                assert!(
                    expected.contains(&flags),
                    "flags {flags:?} at {v:#x} ({m:?})"
                );
                let mut got = [0u8; 5];
                for (i, off) in OFFSETS.iter().enumerate() {
                    let mut b = [0];
                    self.ram.read_bytes(PhysAddr::new(pa + off), &mut b);
                    got[i] = b[0];
                }
                assert_eq!(
                    got,
                    self.model.bytes(m),
                    "bytes at {v:#x} in space {s} ({m:?})"
                );
                let pa = PhysAddr::new(pa);
                match m {
                    MPage::Private(id) => {
                        assert_eq!(*data_frames.entry(id).or_insert(pa), pa, "frame {id}");
                        assert_eq!(self.refs.count(Frame::containing(pa)), owners[&id]);
                    }
                    MPage::Shared(o, idx) => {
                        assert_eq!(*object_frames.entry((o, idx)).or_insert(pa), pa);
                    }
                }
            }
        }
        let distinct: BTreeSet<PhysAddr> = data_frames
            .values()
            .chain(object_frames.values())
            .copied()
            .collect();
        assert_eq!(
            distinct.len(),
            data_frames.len() + object_frames.len(),
            "frames mixed up"
        );
        let shared = owners.values().filter(|&&n| n > 1).count();
        assert_eq!(self.refs.shared_frames() as usize, shared);
        // Objects: alive exactly while a region maps them, with the pages the model allocated.
        let live = self.model.live_objects();
        let mut object_pages = 0;
        for o in 0..OBJECTS {
            match self.objects[o].upgrade() {
                Some(object) => {
                    assert!(live.contains(&o), "object {o} outlived its regions");
                    let pages = self.model.objects.keys().filter(|k| k.0 == o).count();
                    assert_eq!(object.resident() as usize, pages);
                    object_pages += pages;
                }
                None => assert!(!live.contains(&o), "object {o} gone too early"),
            }
        }
        assert_eq!(self.model.frames.len(), data_frames.len());
        let used = tables + data_frames.len() + object_pages;
        assert_eq!(
            self.alloc.free_count(),
            self.initial_free - used,
            "frames leaked or lost"
        );
        assert!(
            self.tlb.violations().is_empty(),
            "{:?}",
            self.tlb.violations()
        );
        assert_eq!(self.tlb.pending_invalidations(), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn user_memory_matches_the_model(
        layout in layout(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut r = Rig::new();
        r.create(0);
        for (i, op) in layout.iter().chain(&ops).enumerate() {
            r.apply(op);
            r.check(i % 16 == 15);
        }
        r.check(true);
        for s in 0..SPACES {
            r.destroy(s);
        }
        r.check(true);
        prop_assert_eq!(r.alloc.free_count(), r.initial_free);
        prop_assert_eq!(r.refs.shared_frames(), 0);
        prop_assert!(r.objects.iter().all(|o| o.upgrade().is_none()));
    }
}

/// The page reached by `Page::containing` is the one the model calls `pool_va`.
#[test]
fn pool_pages_are_page_aligned_and_distinct() {
    let pages: BTreeSet<u32> = (0..POOL)
        .map(|p| Page::containing(va(pool_va(p))).start().as_u32())
        .collect();
    assert_eq!(pages.len(), POOL as usize);
}
