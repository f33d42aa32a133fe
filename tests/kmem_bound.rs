//! The kernel-memory charge of a user address space covers what its regions really take.
//!
//! A counting allocator measures the heap the region map of a [`UserVm`] holds, block sizes
//! rounded up to powers of two as the kernel's buddy heap rounds them, while random `mmap`- and
//! `munmap`-like operations (whole regions, cut ends, holes) run; after every step the live
//! bytes must not exceed what the space has charged to its budget. If the charge
//! (`uvm::regions_cost`) underestimated the region map, a process could take more heap than it
//! paid for.

use pi2vm::mm::addr::{Frame, VirtAddr, PAGE_SIZE};
use pi2vm::mm::kmem::KmemBudget;
use pi2vm::mm::phys::{HostFrames, HostRam};
use pi2vm::mm::tlb::{Asid, EmulatedTlb};
use pi2vm::mm::uvm::{regions_cost, Backing, FrameRefs, Perm, RegionKind, UserVm, MAX_REGIONS};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting this thread's live bytes as a buddy heap would hand them out.
struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn buddy_block(layout: Layout) -> i64 {
    layout.size().max(layout.align()).next_power_of_two() as i64
}

// SAFETY: forwards to `System`, which upholds the `GlobalAlloc` contract; counting changes
// nothing about the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|l| l.set(l.get() + buddy_block(layout)));
        // SAFETY: the caller's contract is forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get() - buddy_block(layout)));
        // SAFETY: the caller's contract is forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn live() -> i64 {
    LIVE.with(Cell::get)
}

/// A small deterministic generator (the test must not allocate while it measures).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % u64::from(n)) as u32
    }
}

static BUDGET: KmemBudget = KmemBudget::new(u32::MAX);

#[test]
fn the_charge_covers_the_region_map_under_random_mmap_and_munmap() {
    const RAM: u32 = 4 << 20;
    let ram = HostRam::new(RAM);
    let tlb = EmulatedTlb::new(&ram);
    let mut alloc = HostFrames::new(Frame::from_number(0x100), (RAM >> 12) - 0x100);
    let mut refs = FrameRefs::new();
    for seed in 1..=6u64 {
        let mut rng = Lcg(seed);
        let mut vm =
            UserVm::new_in(ram.clone(), tlb.clone(), Asid::new(1), &mut alloc, &BUDGET).unwrap();
        let base = live();
        let mut worst = 0.0f64;
        for _ in 0..4000 {
            // Page-granular addresses in a 64 MiB window, so that regions meet, split and go.
            let start = 0x1000_0000 + rng.below(16384) * PAGE_SIZE;
            let longest = if rng.below(4) == 0 { 64 } else { 4 };
            let len = (1 + rng.below(longest)) * PAGE_SIZE;
            if rng.below(3) == 0 {
                let _ = vm.remove(VirtAddr::new(start), len, &mut alloc, &mut refs);
            } else {
                let _ = vm.add_region(
                    VirtAddr::new(start),
                    len,
                    Perm::RW,
                    RegionKind::Anon,
                    Backing::Private,
                );
            }
            let used = live() - base;
            let charged = i64::from(vm.kmem_charged());
            assert!(
                used <= charged,
                "seed {seed}: {} regions take {used} bytes, only {charged} charged",
                vm.regions().count()
            );
            assert_eq!(
                vm.kmem_charged(),
                regions_cost(vm.regions().count()),
                "the charge follows the region count"
            );
            worst = worst.max(used as f64 / charged as f64);
        }
        assert!(vm.regions().count() <= MAX_REGIONS);
        vm.destroy(&mut alloc, &mut refs).unwrap();
        assert_eq!(
            BUDGET.used(),
            0,
            "seed {seed}: the charge went with the space"
        );
        assert!(worst > 0.1, "the bound is not absurdly loose: {worst}");
    }
}
