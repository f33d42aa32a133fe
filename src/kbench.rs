//! On-target benchmarks, built with `--features kbench` and run by `make bench` under
//! `qemu -icount shift=0`, where PMCCNTR counts instructions. Each line is `cost <case> <n>`.

use crate::arch::arm::direct_map::DirectMap;
use crate::arch::arm::mmu::CpuTlb;
use crate::arch::arm::{pmu, semihosting};
use crate::init::BootInfo;
use crate::mm::desc::MapFlags;
use crate::mm::vas::AddressSpace;
use crate::mm::{Page, VirtAddr, PAGE_SIZE};
use crate::vm;

const ROUNDS: u32 = 1000;

fn report(case: &str, n: u32) {
    println!("cost {case} {n}");
}

/// Runs every benchmark and exits QEMU.
pub fn run(_info: &BootInfo) -> ! {
    pmu::enable();
    // Calibration: 1000 rounds of SUBS+BNE are 2000 instructions; under -icount shift=0 the
    // counter must say so (on a board it says cycles).
    let calib = pmu::measure(|| {
        // SAFETY: a register-only countdown loop.
        unsafe {
            core::arch::asm!("1: subs {n}, {n}, #1", "bne 1b", n = inout(reg) 1000u32 => _, options(nomem, nostack))
        }
    });
    report("calibration_2000_instructions", calib);
    report("vm2_start", pmu::measure(|| vm::vm2_start()));

    // PMM: one frame allocated and freed, under the lock (taken once, outside the count).
    vm::with_pmm(|p| {
        let total = pmu::measure(|| {
            for _ in 0..ROUNDS {
                let f = p.alloc_frame().unwrap();
                p.free_frame(f).unwrap();
            }
        });
        report("pmm_alloc_free_1", total / ROUNDS);
    });

    // Kernel space: map+unmap of one 4 KiB page, TLB maintenance included, in a slot whose L2
    // table stays (an anchor page keeps it); and the first map of a slot (new table).
    vm::with_kernel_vm(|k, p| {
        let anchor = Page::containing(VirtAddr::new(0xE000_0000));
        let page = Page::containing(VirtAddr::new(0xE000_1000));
        let af = p.alloc_frame().unwrap();
        let f = p.alloc_frame().unwrap();
        let new_table = pmu::measure(|| {
            k.space
                .map_page(anchor, af, MapFlags::KERNEL_DATA, p)
                .unwrap();
        });
        let total = pmu::measure(|| {
            for _ in 0..ROUNDS {
                k.space.map_page(page, f, MapFlags::KERNEL_DATA, p).unwrap();
                k.space.unmap_page(page, p).unwrap();
            }
        });
        report("map_unmap_4k", total / ROUNDS);
        report("map_4k_with_new_l2_table", new_table);
        k.space.unmap_page(anchor, p).unwrap();
        p.free_frame(af).unwrap();
        p.free_frame(f).unwrap();
    });

    // User space (non-global, by ASID) map+unmap.
    {
        // SAFETY: the direct map is live; the space only touches frames the PMM gives it.
        let mem = unsafe { DirectMap::new() };
        let mut space =
            vm::with_pmm(|p| AddressSpace::new_user(mem, CpuTlb, crate::mm::Asid::new(1), p))
                .unwrap();
        vm::with_pmm(|p| {
            let anchor = Page::containing(VirtAddr::new(0x0010_0000));
            let page = Page::containing(VirtAddr::new(0x0010_1000));
            let f = p.alloc_frame().unwrap();
            space.map_page(anchor, f, MapFlags::USER_DATA, p).unwrap();
            let total = pmu::measure(|| {
                for _ in 0..ROUNDS {
                    space.map_page(page, f, MapFlags::USER_DATA, p).unwrap();
                    space.unmap_page(page, p).unwrap();
                }
            });
            report("map_unmap_4k_user", total / ROUNDS);
            space.unmap_page(anchor, p).unwrap();
            p.free_frame(f).unwrap();
            space.destroy(p).unwrap();
        });
    }

    // Heap growth: one step of HEAP_GROW_MIN bytes (16 pages mapped, frames from the PMM).
    let steps = 16;
    let total = pmu::measure(|| {
        for _ in 0..steps {
            vm::grow_heap(vm::HEAP_GROW_MIN).unwrap();
        }
    });
    report("heap_grow_step_64k", total / steps);
    report(
        "heap_grow_per_page",
        total / steps / (vm::HEAP_GROW_MIN / PAGE_SIZE),
    );

    processes();

    println!("kbench: done");
    crate::console::flush();
    semihosting::exit(0)
}

/// Process costs: the address-space switch and fork measured here, the system call and the
/// demand-zero fault end to end by the `bench` user program (it reads PMCCNTR itself).
fn processes() {
    use crate::mm::uvm::{Access, Backing, Perm, RegionKind};
    use crate::proc::{self, KernelFrames};

    // 4 KiB zero fill alone, to set the demand-zero figure against: the median of 15, handed to
    // the `bench` program, which prints it in its place in the comparison with Linux.
    let zero_fill = vm::with_pmm(|p| {
        let f = p.alloc_frame().unwrap();
        // SAFETY: the direct map is live and the frame was just allocated.
        let mut mem = unsafe { DirectMap::new() };
        let mut n = [0u32; 15];
        for x in n.iter_mut() {
            *x = pmu::measure(|| crate::mm::phys::PhysMem::zero_frame(&mut mem, f));
        }
        p.free_frame(f).unwrap();
        n.sort_unstable();
        n[n.len() / 2]
    });

    // Address-space switch between two user spaces (ASID/TTBR0 sequence, no TLB flush).
    proc::init_memory();
    let mut a = proc::new_space().unwrap();
    let mut b = proc::new_space().unwrap();
    let (mut ca, mut cb) = (
        crate::mm::asid::ContextId::NEW,
        crate::mm::asid::ContextId::NEW,
    );
    vm::enter_user(a.l1_phys(), &mut ca).unwrap();
    vm::enter_user(b.l1_phys(), &mut cb).unwrap();
    let total = pmu::measure(|| {
        for _ in 0..ROUNDS / 2 {
            vm::enter_user(a.l1_phys(), &mut ca).unwrap();
            vm::enter_user(b.l1_phys(), &mut cb).unwrap();
        }
    });
    report("address_space_switch", total / ROUNDS);
    vm::leave_user();
    a.set_asid(ca.asid().unwrap());
    b.set_asid(cb.asid().unwrap());

    // Fork of a space with 1 MiB touched.
    let base = VirtAddr::new(0x2000_0000);
    a.add_region(base, 1 << 20, Perm::RW, RegionKind::Anon, Backing::Private)
        .unwrap();
    {
        let mut refs = crate::proc::frame_refs();
        for i in 0..256 {
            let va = VirtAddr::new(base.as_u32() + i * PAGE_SIZE);
            a.handle_fault(va, Access::Write, &mut KernelFrames, &mut refs)
                .unwrap();
        }
    }
    let mut child = None;
    let n = pmu::measure(|| {
        // SAFETY: the direct map is live; the child only uses frames it owns.
        let mem = unsafe { DirectMap::new() };
        child = Some(
            a.fork(
                crate::mm::Asid::KERNEL,
                mem,
                CpuTlb,
                &mut KernelFrames,
                &mut crate::proc::frame_refs(),
            )
            .unwrap(),
        );
    });
    report("fork_1mib_touched", n);
    let mut refs = crate::proc::frame_refs();
    // Its teardown: 256 pages still shared with the parent (no frame freed but its tables).
    let child = child.unwrap();
    let n = pmu::measure(|| child.destroy(&mut KernelFrames, &mut refs).unwrap());
    report("destroy_forked_1mib", n);
    let n = pmu::measure(|| a.destroy(&mut KernelFrames, &mut refs).unwrap());
    report("destroy_1mib_touched", n);
    b.destroy(&mut KernelFrames, &mut refs).unwrap();
    drop(refs);
    for ctx in [&mut ca, &mut cb] {
        vm::ASIDS.lock().release(ctx).unwrap();
    }

    // The user program: the VM paths as a process sees them (docs/benchmarks.md).
    crate::irq::init();
    // Cores 1-3 online and idle in WFI (they execute nothing while the figures are taken).
    crate::smp::start_secondaries();
    multicore();
    // The `bench` program may run on any core: each core lets User mode read its counter.
    for core in crate::smp::online() {
        assert!(crate::smp::start_on(core, || {
            pmu::enable();
            allow_user_counter();
            0
        }));
        assert_eq!(crate::smp::result_of(core), Some(0));
    }
    allow_user_counter();
    proc::init();
    // The card, for the page-cache cases (none attached: the program skips them).
    crate::init::report_card();
    if crate::proc::swap::enabled() {
        swap_costs();
    }
    let pid = proc::spawn("bench", zero_fill).unwrap();
    let status = proc::wait(pid);
    println!("bench program: {status}");
}

/// Lets User mode read this core's PMCCNTR (PMUSERENR.EN; benchmark builds only).
fn allow_user_counter() {
    // SAFETY: PMUSERENR.EN = 1 only opens the PMU's counters to User mode reads.
    unsafe { core::arch::asm!("mcr p15, 0, {}, c9, c14, 0", in(reg) 1u32, options(nostack)) };
}

/// One frame allocated and freed the way processes get them (`KernelFrames`), `ROUNDS` times.
fn alloc_free_rounds() -> u32 {
    use crate::mm::frame::FrameAllocator;
    for _ in 0..ROUNDS {
        let f = crate::proc::KernelFrames.alloc_frame().unwrap();
        crate::proc::KernelFrames.free_frame(f).unwrap();
    }
    ROUNDS
}

/// Costs on several cores, before the scheduler starts (cores 1-3 waiting in WFI for
/// requests): an IPI round trip, and frame allocation with four cores allocating at once.
///
/// Under `-icount shift=0` PMCCNTR follows QEMU's one virtual clock, which every core's
/// instructions advance: a window measured on core 0 while four cores work counts the
/// instructions of all four. So the contended case is reported per operation over all cores'
/// operations, comparable with the same operations on one core; what it adds is the cost of
/// sharing (spinning on a lock, cache lines moving). On a board the same window is elapsed
/// cycles, a quarter of which per operation is the ideal.
fn multicore() {
    let online: alloc::vec::Vec<usize> = crate::smp::online().collect();
    if online.is_empty() {
        println!("kbench: no secondary core online, multicore cases skipped");
        return;
    }
    // IPI round trip: core 0 files a request, sends the IPI (mailbox 0), the core wakes from
    // WFI, runs an empty function and answers; core 0 sees the answer. Median of 15.
    let mut n = [0u32; 15];
    for x in n.iter_mut() {
        *x = pmu::measure(|| {
            assert!(crate::smp::start_on(online[0], || 0));
            crate::smp::result_of(online[0]).expect("the core answers");
        });
    }
    n.sort_unstable();
    report("ipi_round_trip", n[n.len() / 2]);

    let cores = 1 + online.len() as u32;
    let alone = pmu::measure(|| {
        for _ in 0..cores {
            alloc_free_rounds();
        }
    });
    report("frame_alloc_free_1_core", alone / (cores * ROUNDS));
    let together = pmu::measure(|| {
        for &c in &online {
            assert!(crate::smp::start_on(c, alloc_free_rounds));
        }
        alloc_free_rounds();
        for &c in &online {
            assert_eq!(crate::smp::result_of(c), Some(ROUNDS));
        }
    });
    report("frame_alloc_free_4_cores", together / (cores * ROUNDS));
}

/// Swapping one page out and back in, the card transfers apart: the clock's two visits (aging,
/// then finding the victim), the bookkeeping of the swap-out (slot, table of pages away, frame
/// freed), the fault that finds the page in swap, the bookkeeping of the swap-in (frame mapped,
/// slot freed); and the 4 KiB written to and read from the card.
fn swap_costs() {
    use crate::mm::uvm::{Access, Backing, FaultError, Perm, RegionKind};
    use crate::mm::FrameAllocator;
    use crate::proc::{swap, KernelFrames};
    const PAGES: u32 = 16;
    let mut s = crate::proc::new_space().unwrap();
    let mut ctx = crate::mm::asid::ContextId::NEW;
    vm::enter_user(s.l1_phys(), &mut ctx).unwrap();
    vm::leave_user();
    s.set_asid(ctx.asid().unwrap());
    let base = VirtAddr::new(0x2000_0000);
    s.add_region(
        base,
        PAGES * PAGE_SIZE,
        Perm::RW,
        RegionKind::Anon,
        Backing::Private,
    )
    .unwrap();
    let mut refs = crate::proc::frame_refs();
    for i in 0..PAGES {
        let va = VirtAddr::new(base.as_u32() + i * PAGE_SIZE);
        s.handle_fault(va, Access::Write, &mut KernelFrames, &mut refs)
            .unwrap();
    }
    let age = pmu::measure(|| {
        s.clock(base, PAGES, PAGES as usize, &mut refs, &mut KernelFrames);
    });
    let mut victims = alloc::vec::Vec::new();
    let find = pmu::measure(|| {
        victims = s
            .clock(base, PAGES, PAGES as usize, &mut refs, &mut KernelFrames)
            .victims;
    });
    let (va, frame) = victims[0];
    let mut slot = None;
    let out = pmu::measure(|| {
        let sl = refs.swap.alloc().unwrap();
        assert!(s.swapped_out(va, frame, sl, &mut refs, &mut KernelFrames));
        slot = Some(sl);
    });
    let slot = slot.unwrap();
    drop(refs);
    // The frame was freed by swapped_out; the transfer is measured from a frame of our own.
    let buf = KernelFrames.alloc_frame().unwrap();
    let write = pmu::measure(|| swap::write_slot(slot, buf).unwrap());
    let mut refs = crate::proc::frame_refs();
    let mut found = None;
    let detect = pmu::measure(|| {
        found = Some(s.handle_fault(va, Access::Read, &mut KernelFrames, &mut refs));
    });
    assert_eq!(found, Some(Err(FaultError::SwappedOut)));
    drop(refs);
    let read = pmu::measure(|| swap::read_slot(slot, buf).unwrap());
    let mut refs = crate::proc::frame_refs();
    let back = pmu::measure(|| {
        let f = KernelFrames.alloc_frame().unwrap();
        assert!(s
            .swap_in(va, slot, f, &mut refs, &mut KernelFrames)
            .unwrap());
    });
    report("swap_out_page", age / PAGES + find / PAGES + out);
    report("swap_in_page", detect + back);
    report("swap_card_write_4k", write);
    report("swap_card_read_4k", read);
    KernelFrames.free_frame(buf).unwrap();
    s.destroy(&mut KernelFrames, &mut refs).unwrap();
    drop(refs);
    vm::ASIDS.lock().release(&mut ctx).unwrap();
}
