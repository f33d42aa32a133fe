//! Reclaim on the host: the clock ages and evicts private pages (demand-zero, copy on write
//! after forks, the zero page left alone) to a simulated swap device, faults bring them back,
//! and random runs of writes, reads, forks, unmaps, clock steps and teardowns are checked
//! byte for byte against a model. At the end every frame and every swap slot is free again and
//! no owner count is left.

use pi2vm::mm::addr::{Frame, VirtAddr, PAGE_SIZE};
use pi2vm::mm::desc::{Access as Ap, Translation};
use pi2vm::mm::layout::KERNEL_L1_PHYS;
use pi2vm::mm::phys::{HostFrames, HostRam, PhysMem};
use pi2vm::mm::swap_slots::{Slot, SwapSlots};
use pi2vm::mm::tlb::{Asid, EmulatedTlb};
use pi2vm::mm::uvm::{Access, Backing, FaultError, FrameRefs, Perm, RegionKind, UserVm};
use pi2vm::mm::FrameAllocator;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

type Vm = UserVm<HostRam, EmulatedTlb>;

const RAM: u32 = 2 << 20;
const FIRST_FRAME: u32 = 0x100;
const BASE: u32 = 0x0040_0000;
const PAGES: u32 = 12;
const SLOTS: u32 = 64;

struct Rig {
    ram: HostRam,
    tlb: EmulatedTlb,
    alloc: HostFrames,
    refs: FrameRefs,
    /// The swap device: slot -> page contents.
    device: HashMap<Slot, Vec<u8>>,
    zero: Frame,
}

impl Rig {
    fn new() -> Self {
        let ram = HostRam::new(RAM);
        let tlb = EmulatedTlb::new(&ram);
        let mut alloc = HostFrames::new(Frame::from_number(FIRST_FRAME), (RAM >> 12) - FIRST_FRAME);
        let mut refs = FrameRefs::new();
        let zero = alloc.alloc_frame().unwrap();
        ram.clone().zero_frame(zero);
        refs.set_zero_frame(zero);
        refs.swap = SwapSlots::new(SLOTS);
        Self {
            ram,
            tlb,
            alloc,
            refs,
            device: HashMap::new(),
            zero,
        }
    }

    fn vm(&mut self, asid: u8) -> Vm {
        let mut vm = Vm::new(
            self.ram.clone(),
            self.tlb.clone(),
            Asid::new(asid),
            &mut self.alloc,
        )
        .unwrap();
        vm.add_region(
            VirtAddr::new(BASE),
            PAGES * PAGE_SIZE,
            Perm::RW,
            RegionKind::Anon,
            Backing::Private,
        )
        .unwrap();
        vm
    }

    fn mmu(&mut self, vm: &Vm, v: u32) -> Option<Translation> {
        self.tlb
            .translate(vm.l1_phys(), vm.asid(), KERNEL_L1_PHYS, VirtAddr::new(v))
    }

    /// A fault resolved as the kernel does: a page in swap is read back first.
    fn fault(&mut self, vm: &mut Vm, v: u32, access: Access) {
        let va = VirtAddr::new(v);
        match vm.handle_fault(va, access, &mut self.alloc, &mut self.refs) {
            Ok(_) => {}
            Err(FaultError::SwappedOut) => {
                let slot = vm.swapped_at(va).expect("a page in swap");
                let frame = self.alloc.alloc_frame().unwrap();
                let data = self.device[&slot].clone();
                self.ram.write_bytes(frame.start(), &data);
                assert!(vm
                    .swap_in(va, slot, frame, &mut self.refs, &mut self.alloc)
                    .unwrap());
                if self.refs.swap.refs(slot) == 0 {
                    self.device.remove(&slot);
                }
                // The access again (a write to a page shared copy on write copies now).
                self.fault_again(vm, v, access);
            }
            Err(e) => panic!("fault at {v:#x}: {e}"),
        }
    }

    fn fault_again(&mut self, vm: &mut Vm, v: u32, access: Access) {
        let ok = |t: &Translation| {
            access != Access::Write || t.flags.unwrap().access == Ap::UserReadWrite
        };
        if !self.mmu(vm, v).is_some_and(|t| ok(&t)) {
            vm.handle_fault(VirtAddr::new(v), access, &mut self.alloc, &mut self.refs)
                .unwrap();
        }
    }

    fn load(&mut self, vm: &mut Vm, v: u32) -> u8 {
        if self.mmu(vm, v).is_none() {
            self.fault(vm, v, Access::Read);
        }
        let t = self.mmu(vm, v).expect("resolved");
        let mut b = [0];
        self.ram.read_bytes(t.pa, &mut b);
        b[0]
    }

    fn store(&mut self, vm: &mut Vm, v: u32, byte: u8) {
        let writable = |t: &Translation| t.flags.unwrap().access == Ap::UserReadWrite;
        // As the CPU retries the store after each fault: an aged page shared copy on write
        // comes back read-only first, and the next fault copies it.
        for _ in 0..3 {
            if self.mmu(vm, v).is_some_and(|t| writable(&t)) {
                break;
            }
            self.fault(vm, v, Access::Write);
        }
        let t = self.mmu(vm, v).expect("resolved");
        assert!(writable(&t));
        self.ram.write_bytes(t.pa, &[byte]);
    }

    /// One clock step over `vm` from the start, victims written to the device.
    fn clock(&mut self, vm: &mut Vm) -> (u32, usize) {
        let c = vm.clock(VirtAddr::new(BASE), 64, 8, &mut self.refs, &mut self.alloc);
        let mut out = 0;
        for (va, frame) in c.victims {
            assert_ne!(frame, self.zero, "the zero page was chosen");
            let Ok(slot) = self.refs.swap.alloc() else {
                break;
            };
            let mut data = vec![0u8; PAGE_SIZE as usize];
            self.ram.read_bytes(frame.start(), &mut data);
            self.device.insert(slot, data);
            if vm.swapped_out(va, frame, slot, &mut self.refs, &mut self.alloc) {
                out += 1;
            } else {
                self.refs.swap.release(slot).unwrap();
                self.device.remove(&slot);
            }
        }
        (c.aged, out)
    }
}

#[test]
fn a_page_not_used_for_a_turn_goes_to_swap_and_comes_back_byte_for_byte() {
    let mut r = Rig::new();
    let mut a = r.vm(1);
    for p in 0..4 {
        r.store(&mut a, BASE + p * PAGE_SIZE + p, 0x10 + p as u8);
    }
    let free = r.alloc.free_count();
    // First turn ages the four pages; the second finds them unused and swaps them out.
    assert_eq!(r.clock(&mut a), (4, 0));
    // Page 1 is used in between: it is mapped again and stays.
    assert_eq!(r.load(&mut a, BASE + PAGE_SIZE + 1), 0x11);
    let (_, out) = r.clock(&mut a);
    assert_eq!(out, 3, "three unused pages swapped out");
    assert_eq!(r.refs.swap.used(), 3);
    // Their frames freed (and the L2 table, once the clock aged page 1 again: nothing is
    // mapped in it then).
    assert!(
        r.alloc.free_count() >= free + 3,
        "their frames were not freed"
    );
    assert_eq!(a.away_pages().1, 3);
    for p in 0..4 {
        assert_eq!(r.load(&mut a, BASE + p * PAGE_SIZE + p), 0x10 + p as u8);
    }
    assert_eq!(
        r.refs.swap.used(),
        0,
        "slots kept after the pages came back"
    );
    a.destroy(&mut r.alloc, &mut r.refs).unwrap();
}

#[test]
fn a_forked_pair_both_find_a_shared_page_after_it_was_swapped() {
    let mut r = Rig::new();
    let mut a = r.vm(1);
    r.store(&mut a, BASE, 0x42);
    let mut b = a
        .fork(
            Asid::new(2),
            r.ram.clone(),
            r.tlb.clone(),
            &mut r.alloc,
            &mut r.refs,
        )
        .unwrap();
    r.clock(&mut a);
    r.clock(&mut a);
    assert_eq!(r.refs.swap.used(), 1);
    // The child swaps its reference too: its own slot.
    r.clock(&mut b);
    r.clock(&mut b);
    assert_eq!(r.refs.swap.used(), 2);
    // A fork of a space with a page in swap shares the slot.
    let mut c = b
        .fork(
            Asid::new(3),
            r.ram.clone(),
            r.tlb.clone(),
            &mut r.alloc,
            &mut r.refs,
        )
        .unwrap();
    assert_eq!(r.refs.swap.used(), 2);
    r.store(&mut c, BASE + 1, 0x43);
    assert_eq!(r.load(&mut a, BASE), 0x42);
    assert_eq!(r.load(&mut b, BASE), 0x42);
    assert_eq!(r.load(&mut b, BASE + 1), 0);
    assert_eq!(r.load(&mut c, BASE), 0x42);
    assert_eq!(r.load(&mut c, BASE + 1), 0x43);
    for vm in [a, b, c] {
        vm.destroy(&mut r.alloc, &mut r.refs).unwrap();
    }
    assert_eq!(r.refs.swap.used(), 0);
    assert_eq!(r.refs.shared_frames(), 0);
}

#[derive(Debug, Clone)]
enum Op {
    Write(usize, u32, u8),
    Read(usize, u32),
    Fork(usize, usize),
    Clock(usize),
    Unmap(usize, u32),
    Destroy(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let sp = 0..3usize;
    let pg = 0..PAGES;
    prop_oneof![
        6 => (sp.clone(), pg.clone(), 1..=255u8).prop_map(|(s, p, b)| Op::Write(s, p, b)),
        4 => (sp.clone(), pg.clone()).prop_map(|(s, p)| Op::Read(s, p)),
        1 => (sp.clone(), sp.clone()).prop_map(|(a, b)| Op::Fork(a, b)),
        4 => sp.clone().prop_map(Op::Clock),
        1 => (sp.clone(), pg).prop_map(|(s, p)| Op::Unmap(s, p)),
        1 => sp.prop_map(Op::Destroy),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn reclaim_matches_the_model_and_leaks_nothing(ops in prop::collection::vec(op(), 1..120)) {
        let mut r = Rig::new();
        let free0 = r.alloc.free_count();
        let mut vms: Vec<Option<Vm>> = vec![None, None, None];
        // Per space: page -> byte at offset 7 (absent: zero); None: the page is unmapped.
        let mut model: Vec<BTreeMap<u32, Option<u8>>> = vec![BTreeMap::new(); 3];
        let mut next_asid = 1u8;
        for op in ops {
            match op {
                Op::Write(s, p, b) => {
                    if vms[s].is_none() {
                        vms[s] = Some(r.vm(next_asid));
                        next_asid += 1;
                        model[s].clear();
                    }
                    if model[s].get(&p) == Some(&None) {
                        continue;
                    }
                    let vm = vms[s].as_mut().unwrap();
                    r.store(vm, BASE + p * PAGE_SIZE + 7, b);
                    model[s].insert(p, Some(b));
                }
                Op::Read(s, p) => {
                    if let Some(vm) = vms[s].as_mut() {
                        if model[s].get(&p) == Some(&None) {
                            continue;
                        }
                        let want = model[s].get(&p).copied().flatten().unwrap_or(0);
                        prop_assert_eq!(r.load(vm, BASE + p * PAGE_SIZE + 7), want);
                    }
                }
                Op::Fork(a, b) => {
                    if a != b && vms[b].is_none() {
                        if let Some(vm) = vms[a].as_mut() {
                            let child = vm.fork(Asid::new(next_asid), r.ram.clone(), r.tlb.clone(), &mut r.alloc, &mut r.refs).unwrap();
                            next_asid += 1;
                            vms[b] = Some(child);
                            model[b] = model[a].clone();
                        }
                    }
                }
                Op::Clock(s) => {
                    if let Some(mut vm) = vms[s].take() {
                        r.clock(&mut vm);
                        vms[s] = Some(vm);
                    }
                }
                Op::Unmap(s, p) => {
                    if let Some(vm) = vms[s].as_mut() {
                        if model[s].get(&p) != Some(&None) {
                            vm.remove(VirtAddr::new(BASE + p * PAGE_SIZE), PAGE_SIZE, &mut r.alloc, &mut r.refs).unwrap();
                            model[s].insert(p, None);
                        }
                    }
                }
                Op::Destroy(s) => {
                    if let Some(vm) = vms[s].take() {
                        vm.destroy(&mut r.alloc, &mut r.refs).unwrap();
                    }
                }
            }
            prop_assert!(r.tlb.violations().is_empty(), "{:?}", r.tlb.violations());
        }
        for vm in vms.into_iter().flatten() {
            vm.destroy(&mut r.alloc, &mut r.refs).unwrap();
        }
        prop_assert_eq!(r.refs.swap.used(), 0, "swap slots leaked");
        prop_assert_eq!(r.refs.shared_frames(), 0, "owner counts left");
        prop_assert_eq!(r.refs.count(r.zero), 1, "zero page mappings left");
        prop_assert_eq!(r.alloc.free_count(), free0, "frames leaked");
    }
}

#[test]
fn a_shared_object_page_goes_to_swap_once_and_every_mapper_finds_it() {
    use pi2vm::mm::uvm::SharedObject;
    let mut r = Rig::new();
    let free0 = r.alloc.free_count();
    let object = SharedObject::new(4);
    let at = 0x0080_0000;
    let mut spaces: Vec<Vm> = (1..=2).map(|a| r.vm(a)).collect();
    for vm in &mut spaces {
        vm.add_shared_region(
            VirtAddr::new(at),
            4 * PAGE_SIZE,
            Perm::RW,
            RegionKind::Shared,
            object.clone(),
            0,
        )
        .unwrap();
    }
    let (a, rest) = spaces.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut rest[0]);
    r.store(a, at + 5, 0x77);
    assert_eq!(r.load(b, at + 5), 0x77);
    // First turn: aged, unmapped in both spaces.
    let (_, v) = object.clock(0, 4, 4, |index| {
        a.unmap_object_page(&object, index, &mut r.alloc);
        b.unmap_object_page(&object, index, &mut r.alloc);
    });
    assert!(v.is_empty());
    assert!(
        r.mmu(a, at).is_none() && r.mmu(b, at).is_none(),
        "still mapped after aging"
    );
    // Second turn: not used since, a victim; written once, its frame freed.
    let (_, v) = object.clock(0, 4, 4, |_| panic!("aged twice"));
    assert_eq!(v.len(), 1);
    let (index, frame) = v[0];
    let slot = r.refs.swap.alloc().unwrap();
    let mut data = vec![0u8; PAGE_SIZE as usize];
    r.ram.read_bytes(frame.start(), &mut data);
    r.device.insert(slot, data);
    assert!(object.swapped_out(index, frame, slot));
    r.alloc.free_frame(frame).unwrap();
    assert_eq!(object.swapped(), 1);
    // Both spaces find the same data: one reads it back into the object, the other maps it.
    assert_eq!(r.load(b, at + 5), 0x77);
    assert_eq!(r.refs.swap.used(), 0, "the slot outlived the swap-in");
    assert_eq!(r.load(a, at + 5), 0x77);
    r.store(a, at + 6, 0x78);
    assert_eq!(r.load(b, at + 6), 0x78);
    for vm in spaces {
        vm.destroy(&mut r.alloc, &mut r.refs).unwrap();
    }
    assert!(SharedObject::release(object, &mut r.alloc, &mut r.refs).unwrap());
    assert_eq!(r.alloc.free_count(), free0, "frames leaked");
    assert_eq!(r.refs.swap.used(), 0);
}
