//! Host cost of the per-page path: one 4 KiB map plus its unmap, TLB maintenance included.
//!
//! The physical memory is a plain `Vec` and the TLB maintenance a counter, so the figure is the
//! cost of the address-space code itself (descriptor encoding, table lookup, count update), not
//! of the emulation used by the tests. Prints `cost host_map_unmap_ns <n>`.

use pi2vm::mm::addr::{Frame, Page, PhysAddr, VirtAddr, PAGE_SIZE};
use pi2vm::mm::desc::MapFlags;
use pi2vm::mm::phys::{HostFrames, PhysMem};
use pi2vm::mm::tlb::{Asid, Tlb, TlbTag};
use pi2vm::mm::vas::AddressSpace;
use std::hint::black_box;
use std::time::Instant;

const RAM: u32 = 4 << 20;

struct PlainRam(Vec<u32>);

impl PhysMem for PlainRam {
    fn read_u32(&self, pa: PhysAddr) -> u32 {
        self.0[pa.as_usize() / 4]
    }
    fn write_u32(&mut self, pa: PhysAddr, value: u32) {
        self.0[pa.as_usize() / 4] = value;
    }
    fn read_u16(&self, pa: PhysAddr) -> u16 {
        (self.0[pa.as_usize() / 4] >> (8 * (pa.as_u32() & 2))) as u16
    }
    fn write_u16(&mut self, pa: PhysAddr, value: u16) {
        let w = &mut self.0[pa.as_usize() / 4];
        let shift = 8 * (pa.as_u32() & 2);
        *w = (*w & !(0xffff << shift)) | u32::from(value) << shift;
    }
}

/// Counts maintenance operations, as the CP15 version would issue them.
#[derive(Default)]
struct CountingTlb(u64);

impl Tlb for CountingTlb {
    fn publish(&mut self, _: PhysAddr, _: u32) {
        self.0 += 1;
    }
    fn invalidate_page(&mut self, va: VirtAddr, _: TlbTag) {
        self.0 += u64::from(black_box(va.as_u32()) & 1) + 1;
    }
    fn invalidate_asid(&mut self, _: Asid) {
        self.0 += 1;
    }
    fn invalidate_all(&mut self) {
        self.0 += 1;
    }
    fn sync(&mut self) {
        self.0 += 1;
    }
}

fn main() {
    let mut alloc = HostFrames::new(Frame::from_number(0x10), (RAM >> 12) - 0x10);
    let mut space = AddressSpace::new_user(
        PlainRam(vec![0; (RAM / 4) as usize]),
        CountingTlb::default(),
        Asid::new(1),
        &mut alloc,
    )
    .unwrap();
    // Keep one page mapped so the slot's table stays: the steady state of a growing heap.
    let anchor = Page::from_start(VirtAddr::new(0x40_0000)).unwrap();
    space
        .map_page(
            anchor,
            Frame::from_number(0x800),
            MapFlags::USER_DATA,
            &mut alloc,
        )
        .unwrap();
    let frame = Frame::from_number(0x900);
    let rounds = 2_000_000u32;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for i in 0..rounds {
            let va = VirtAddr::new(0x40_1000 + (i & 0xfe) * PAGE_SIZE);
            let page = Page::from_start(va).unwrap();
            space
                .map_page(black_box(page), frame, MapFlags::USER_DATA, &mut alloc)
                .unwrap();
            black_box(space.unmap_page(page, &mut alloc).unwrap());
        }
        best = best.min(t.elapsed().as_nanos() as f64 / f64::from(rounds));
    }
    let ops = space.tlb_mut().0;
    black_box(ops);
    println!("cost host_map_unmap_ns {}", best.round() as u64);
}
