//! What only the real MMU can show: after `vm2_start` the identity map is gone, W^X holds, the
//! direct map is where the memory map says, the heap grows and stops at the MMIO window, and a
//! user address space can be made, entered and destroyed without losing a frame.

use super::Entry;
use crate::arch::arm::boot::image_layout;
use crate::arch::arm::direct_map::DirectMap;
use crate::arch::arm::exception::{try_exec, try_read, try_write};
use crate::arch::arm::mmu::{self, CpuTlb};
use crate::bsp::raspi2 as board;
use crate::init::BootInfo;
use crate::mm::addr::SECTION_SIZE;
use crate::mm::desc::MapFlags;
use crate::mm::fault::{FaultKind, FaultLevel};
use crate::mm::phys::PhysMem;
use crate::mm::vas::AddressSpace;
use crate::mm::window::WindowError;
use crate::mm::{layout, Page, PhysAddr, VirtAddr, PAGE_SIZE};
use crate::vm::{self, VmError};
use alloc::boxed::Box;
use alloc::vec::Vec;

pub const ENTRIES: &[Entry] = &[
    Entry::Step("vm2_start", start),
    Entry::Test(
        "vm::ram_in_use_follows_the_command_line",
        ram_in_use_follows_the_command_line,
    ),
    Entry::Test(
        "vm::former_identity_addresses_fault",
        former_identity_addresses_fault,
    ),
    Entry::Test(
        "vm::kernel_text_and_rodata_are_not_writable",
        text_and_rodata_not_writable,
    ),
    Entry::Test(
        "vm::heap_and_direct_map_are_not_executable",
        heap_and_direct_map_not_executable,
    ),
    Entry::Test(
        "vm::stack_guard_page_is_unmapped",
        stack_guard_page_is_unmapped,
    ),
    Entry::Test(
        "vm::direct_map_is_pa_plus_2_gib_for_all_ram",
        direct_map_is_pa_plus_2_gib,
    ),
    Entry::Test(
        "vm::page_zero_and_copy_change_exactly_their_page",
        page_routines,
    ),
    Entry::Test(
        "vm::firmware_area_is_mapped_read_only",
        firmware_area_is_read_only,
    ),
    Entry::Test(
        "vm::kernel_runs_with_user_memory_closed_and_async_aborts_unmasked",
        kernel_state_is_guarded,
    ),
    Entry::Test(
        "vm::vectors_are_high_and_read_only",
        vectors_are_high_and_read_only,
    ),
    Entry::Test(
        "vm::heap_grows_over_many_mib_and_reuses_freed_memory",
        heap_grows_and_reuses,
    ),
    Entry::Test(
        "vm::mmio_reuses_a_mapping_of_the_same_registers",
        mmio_reuses_a_mapping,
    ),
    Entry::Test(
        "vm::heap_and_mmio_fail_cleanly_when_they_would_cross",
        heap_and_mmio_collide_cleanly,
    ),
    Entry::Test(
        "vm::user_space_is_created_entered_and_destroyed_without_leaks",
        user_space_lifecycle,
    ),
    Entry::ShouldPanic(
        "vm::a_kernel_fault_panics_with_dfsr_and_dfar_decoded",
        kernel_fault_panics,
        "kernel data abort: translation fault (section / L1), read [FSR=0x5] at DFAR=0x00001234",
    ),
    Entry::ShouldPanic(
        "vm::a_write_to_rodata_reports_a_permission_fault",
        rodata_write_panics,
        "permission fault (page / L2), write",
    ),
    Entry::ShouldPanic(
        "vm::a_kernel_access_to_user_memory_outside_the_copy_routines_is_reported",
        touch_user_memory_panics,
        "kernel touched user memory outside the copy routines",
    ),
    Entry::ShouldPanic(
        "vm::kernel_stack_overflow_hits_the_guard_page_and_is_reported",
        overflow_the_stack,
        "kernel stack overflow",
    ),
];

fn kernel_fault_panics() {
    // SAFETY: deliberately faults (nothing is mapped at 0x1234 after vm2_start); the test expects
    // the resulting panic.
    let v = unsafe { core::ptr::read_volatile(0x1234 as *const u32) };
    println!("read {v:#x}");
}

/// A kernel bug that reads user memory with an ordinary load (not through `proc::uaccess`):
/// the user domain is closed, so it faults and the report says what happened.
fn touch_user_memory_panics() {
    let mut ctx = crate::mm::asid::ContextId::NEW;
    let asid = ctx_asid_for_new_space(&mut ctx);
    // SAFETY: the direct map is live; the space only touches frames the PMM gives it.
    let mem = unsafe { DirectMap::new() };
    let mut space = vm::with_pmm(|p| AddressSpace::new_user(mem, CpuTlb, asid, p)).unwrap();
    let f = vm::alloc_frame().unwrap();
    let page = Page::containing(VirtAddr::new(STRAY_VA));
    vm::with_pmm(|p| space.map_page(page, f, MapFlags::USER_DATA, p)).unwrap();
    vm::enter_user(space.l1_phys(), &mut ctx).unwrap();
    *STRAY.lock() = Some((space, f, ctx));
    super::clean_up_after_panic(forget_stray_space);
    assert_eq!(
        mmu::dacr(),
        mmu::DACR_KERNEL,
        "the kernel runs with user memory closed"
    );
    // SAFETY: deliberately faults: the page is mapped, but in the closed user domain. The test
    // expects the panic; the clean-up tears the space down.
    let v = unsafe { core::ptr::read_volatile(STRAY_VA as *const u32) };
    println!("read {v:#x}");
}

const STRAY_VA: u32 = 0x0040_0000;

type StraySpace = (
    AddressSpace<DirectMap, CpuTlb>,
    crate::mm::Frame,
    crate::mm::asid::ContextId,
);

/// The user space of `touch_user_memory_panics`, for its clean-up.
static STRAY: spin::Mutex<Option<StraySpace>> = spin::Mutex::new(None);

fn forget_stray_space() {
    let Some((mut space, f, mut ctx)) = STRAY.lock().take() else {
        return;
    };
    vm::leave_user();
    let got = vm::with_pmm(|p| space.unmap_page(Page::containing(VirtAddr::new(STRAY_VA)), p));
    assert_eq!(got, Ok(f));
    vm::with_pmm(|p| p.free_frame(f)).unwrap();
    vm::with_pmm(|p| space.destroy(p)).unwrap();
    vm::ASIDS.lock().release(&mut ctx).unwrap();
}

fn rodata_write_panics() {
    static CONSTANT: u32 = 7;
    // SAFETY: deliberately faults (.rodata is read-only); the test expects the panic.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of!(CONSTANT) as *mut u32, 8) };
}

fn overflow_the_stack() {
    // Recursing until the guard page stops it is the point.
    #[allow(unconditional_recursion)]
    #[inline(never)]
    fn deeper(n: u32) -> u32 {
        let frame = core::hint::black_box([n; 64]);
        frame[(n % 64) as usize] + deeper(n + 1)
    }
    println!("{}", deeper(0));
}

fn start(_info: &BootInfo) {
    vm::vm2_start();
}

/// With `mem=` on the firmware's command line (the board run's stand-in passes `mem=512M`) the
/// direct map and the PMM end at the limit; without one, at the firmware's size.
fn ram_in_use_follows_the_command_line() {
    let (_, fw) = crate::init::MAILBOX
        .lock()
        .as_ref()
        .expect("mailbox")
        .arm_memory()
        .expect("the firmware reports the ARM memory");
    let cmdline = crate::init::firmware_cmdline();
    let ram_end = vm::info().expect("vm2_start ran").ram_end.as_u32();
    let expected = match cmdline.limit() {
        None => layout::direct_map_end(fw).as_u32(),
        Some(l) => {
            let mib = (l >> 20).clamp(64, u64::from(fw >> 20)) as u32;
            layout::direct_map_end(mib << 20).as_u32()
        }
    };
    assert_eq!(
        ram_end,
        expected,
        "command line {:?} ({}), firmware {fw:#x}",
        cmdline.text(),
        cmdline.source
    );
    if cmdline.from_firmware && cmdline.text().split(' ').any(|a| a == "mem=512M") {
        assert_eq!(ram_end, 512 << 20);
    }
    let total = vm::PMM.lock().as_ref().expect("PMM").total_frames();
    assert_eq!(total, ram_end / PAGE_SIZE);
}

fn former_identity_addresses_fault() {
    for addr in [0x8000, 0x4000, board::UART0_PHYS.as_u32(), 0x0010_0000] {
        let st = try_read(addr).expect_err("a former identity address must fault");
        assert_eq!(st.kind, FaultKind::Translation, "{addr:#x}: {st}");
        assert_eq!(st.level, Some(FaultLevel::Section), "{addr:#x}: {st}");
    }
}

fn text_and_rodata_not_writable() {
    let img = image_layout();
    for addr in [img.text.0, img.text.1 - 4, img.rodata.0] {
        let before = try_read(addr).expect("readable");
        // SAFETY: the write is expected to fault; if it did not, the test fails below anyway.
        let st = unsafe { try_write(addr, !before) }.expect_err("must not be writable");
        assert_eq!(st.kind, FaultKind::Permission, "{addr:#x}: {st}");
        assert!(st.write);
        assert_eq!(
            try_read(addr),
            Ok(before),
            "the refused write changed memory"
        );
    }
}

/// `bx lr`: returns at once if it ever runs.
const BX_LR: u32 = 0xe12f_ff1e;

fn heap_and_direct_map_not_executable() {
    let on_heap = Box::new([BX_LR; 4]);
    // SAFETY: the code is a bare return; the fetch is expected to fault (XN).
    let st = unsafe { try_exec(on_heap.as_ptr() as u32) }.expect_err("heap must be XN");
    assert_eq!(st.kind, FaultKind::Permission, "heap: {st}");

    let frame = vm::alloc_frame().expect("a frame");
    let va = layout::phys_to_virt(frame.start()).unwrap();
    // SAFETY: the frame is ours; its direct-map address is RW.
    unsafe { (va.as_usize() as *mut u32).write_volatile(BX_LR) };
    // SAFETY: as above.
    let st = unsafe { try_exec(va.as_u32()) }.expect_err("direct map must be XN");
    assert_eq!(st.kind, FaultKind::Permission, "direct map: {st}");
    vm::with_pmm(|p| p.free_frame(frame)).unwrap();

    // Data and stack too.
    let img = image_layout();
    for (what, addr) in [(".data", img.data.0), ("stacks", img.stacks.0)] {
        // SAFETY: expected to fault; if it ran, whatever is there would run, and the test fails.
        let st = unsafe { try_exec(addr) };
        assert!(st.is_err(), "{what} must be XN");
    }
}

fn stack_guard_page_is_unmapped() {
    let img = image_layout();
    let st = try_read(img.stack_guard.0).expect_err("guard page must fault");
    assert_eq!(st.kind, FaultKind::Translation);
    assert_eq!(st.level, Some(FaultLevel::Page));
}

fn direct_map_is_pa_plus_2_gib() {
    let ram_end = vm::info().unwrap().ram_end.as_u32();
    // Whole MiB only: a section past the ARM's memory would map the GPU's.
    assert_eq!(ram_end % SECTION_SIZE, 0, "{ram_end:#x}");
    let reported = crate::init::MAILBOX
        .lock()
        .as_ref()
        .unwrap()
        .arm_memory()
        .unwrap()
        .1;
    // What `mem=` on the command line leaves of it, if anything.
    let reported = crate::cmdline::limited_ram(reported, crate::init::firmware_cmdline().limit());
    assert!(ram_end <= reported && reported - ram_end < SECTION_SIZE);
    let mut pa = 0;
    while pa < ram_end {
        for probe in [pa, pa + SECTION_SIZE - PAGE_SIZE] {
            let va = VirtAddr::new(probe + layout::KERNEL_OFFSET);
            assert_eq!(
                mmu::translate_privileged_read(va),
                Some(PhysAddr::new(probe)),
                "{va:?}"
            );
        }
        pa += SECTION_SIZE;
    }
    // Not one byte more: the end of RAM and the peripherals are not in the direct map.
    let past = layout::KERNEL_OFFSET + ram_end;
    assert!(try_read(past).is_err(), "{past:#x} is past the end of RAM");
    let periph = layout::phys_to_virt(board::UART0_PHYS).unwrap().as_u32();
    assert!(
        try_read(periph).is_err(),
        "peripherals must not be in the direct map"
    );
}

/// The store-multiple page routines behind demand-zero and copy-on-write: three contiguous
/// frames filled with a pattern; zeroing and copying the middle one changes it alone.
fn page_routines() {
    let first = vm::with_pmm(|p| p.alloc_contiguous(3, 1, None)).unwrap();
    let base = layout::phys_to_virt(first.start()).unwrap().as_usize() as *mut u32;
    let words = 3 * PAGE_SIZE as usize / 4;
    let pattern = |i: usize| (i as u32).wrapping_mul(0x9e37_79b9) | 1;
    // SAFETY: the three frames were just allocated and are direct-mapped; all accesses below
    // stay inside them.
    unsafe {
        for i in 0..words {
            base.add(i).write_volatile(pattern(i));
        }
        let mut mem = DirectMap::new();
        let middle = crate::mm::Frame::from_number(first.number() + 1);
        mem.zero_frame(middle);
        for i in 0..words {
            let want = if (1024..2048).contains(&i) {
                0
            } else {
                pattern(i)
            };
            assert_eq!(base.add(i).read_volatile(), want, "word {i} after zeroing");
        }
        mem.copy_frame(middle, first);
        for i in 0..words {
            let want = pattern(if (1024..2048).contains(&i) {
                i - 1024
            } else {
                i
            });
            assert_eq!(base.add(i).read_volatile(), want, "word {i} after copying");
        }
    }
    vm::with_pmm(|p| p.free_contiguous(first, 3)).unwrap();
}

/// Physical 0..0x4000 (the firmware's spin code for the parked cores, the ATAGs) is readable
/// through the direct map but never writable; the L1 table right after it is.
fn firmware_area_is_read_only() {
    for pa in [0u32, 0x100, layout::FIRMWARE_AREA_END.as_u32() - 4] {
        let va = layout::KERNEL_OFFSET + pa;
        try_read(va).expect("readable");
        // SAFETY: deliberately faults: the page is mapped read-only (a write would change
        // nothing the kernel owns if it did not).
        let st = unsafe { try_write(va, 0) }.expect_err("read-only");
        assert_eq!(st.kind, FaultKind::Permission, "{va:#x}: {st}");
    }
    let l1 = layout::KERNEL_OFFSET + layout::KERNEL_L1_PHYS.as_u32();
    let v = try_read(l1).unwrap();
    // SAFETY: writes back the value just read from the kernel's own L1 table (slot 0, which
    // is empty after the identity map went).
    unsafe { try_write(l1, v) }.expect("the L1 table is writable");
}

/// The kernel task runs with user memory closed (DACR) and asynchronous aborts unmasked.
fn kernel_state_is_guarded() {
    assert_eq!(mmu::dacr(), mmu::DACR_KERNEL);
    assert!(!crate::arch::arm::irq::async_aborts_masked(), "CPSR.A");
}

fn vectors_are_high_and_read_only() {
    let sctlr = aarch32_cpu::register::Sctlr::read().raw_value();
    assert!(sctlr & (1 << 13) != 0, "SCTLR.V");
    let va = layout::HIGH_VECTORS.as_u32();
    let first = try_read(va).expect("vector page mapped");
    assert_eq!(
        first,
        crate::arch::arm::exception::vector_table()[..4]
            .iter()
            .rev()
            .fold(0u32, |w, b| w << 8 | u32::from(*b))
    );
    // SAFETY: expected to fault.
    let st = unsafe { try_write(va, 0) }.expect_err("vector page must be read-only");
    assert_eq!(st.kind, FaultKind::Permission);
}

fn heap_grows_and_reuses() {
    const MIB: usize = 1 << 20;
    const CHUNKS: usize = 48;
    let heap_before = vm::heap_size();
    let mut chunks: Vec<Vec<u32>> = Vec::new();
    for c in 0..CHUNKS {
        let mut v = Vec::with_capacity(MIB / 4);
        v.extend((0..MIB / 4).map(|i| (c * MIB + i) as u32 ^ 0x5a5a_5a5a));
        chunks.push(v);
    }
    for (c, v) in chunks.iter().enumerate() {
        assert!(v
            .iter()
            .enumerate()
            .all(|(i, &w)| w == (c * MIB + i) as u32 ^ 0x5a5a_5a5a));
    }
    let grown = vm::heap_size();
    assert!(
        grown - heap_before >= (CHUNKS * MIB) as u32,
        "heap grew {} bytes",
        grown - heap_before
    );
    print!("(heap {} MiB) ", grown >> 20);
    drop(chunks);
    // Freed memory is reused: the same again needs no more growth.
    let mut again: Vec<Vec<u8>> = Vec::new();
    for _ in 0..CHUNKS {
        again.push(alloc::vec![0xa5; MIB]);
    }
    assert_eq!(vm::heap_size(), grown, "reuse must not grow the heap");
}

fn mmio_reuses_a_mapping() {
    let uart = vm::devices().unwrap().uart0;
    let again = vm::map_mmio("uart0-again", board::UART0_PHYS, 0x48).unwrap();
    assert_eq!(again, uart);
}

fn heap_and_mmio_collide_cleanly() {
    let (heap_top, mmio_bottom) =
        vm::with_kernel_vm(|k, _| (k.window.heap().end, k.window.mmio_bottom()));
    // Fill the window with a large device mapping of an unused bus range (never accessed), so
    // only 2 MiB stay between the heap top and the MMIO bottom.
    let gap = mmio_bottom.as_u32() - heap_top.as_u32();
    let span = (gap - 2 * SECTION_SIZE) & !(PAGE_SIZE - 1);
    let va_start = mmio_bottom.as_u32() - span;
    let pa = 0x4100_0000 + (va_start & (SECTION_SIZE - 1));
    let filler = vm::map_mmio("test-filler", PhysAddr::new(pa), span).expect("filler mapping");
    let free = vm::free_frames();
    let heap = vm::heap_size();

    // The heap cannot grow now: an allocation larger than all it holds is a clean error, and
    // nothing is lost.
    let big = heap as usize + (4 << 20);
    let mut v: Vec<u8> = Vec::new();
    assert!(
        v.try_reserve_exact(big).is_err(),
        "heap must stop at the MMIO window"
    );
    assert_eq!(vm::heap_size(), heap);
    assert_eq!(vm::free_frames(), free);
    assert_eq!(
        vm::grow_heap(4 << 20),
        Err(VmError::Window(WindowError::HeapWouldCrossMmio))
    );

    // Nor can a new MMIO mapping reach into the heap (a bus range outside the filler's).
    let e = vm::map_mmio("too-big", PhysAddr::new(0xf000_0000), 4 << 20);
    assert_eq!(e, Err(VmError::Window(WindowError::MmioWouldCrossHeap)));
    assert_eq!(vm::free_frames(), free);

    vm::unmap_last_mmio(filler).expect("remove the filler");
    assert!(
        v.try_reserve_exact(big).is_ok(),
        "room again after the filler went"
    );
}

/// Gives a new context its ASID without running it yet (as a process is created before it first
/// runs), then tells the allocator this CPU runs nothing.
fn ctx_asid_for_new_space(ctx: &mut crate::mm::asid::ContextId) -> crate::mm::Asid {
    let asid = vm::ASIDS.lock().switch_to(0, ctx).unwrap().asid;
    vm::ASIDS.lock().leave(0).unwrap();
    asid
}

fn user_space_lifecycle() {
    let free_before = vm::free_frames();
    let mut ctx = crate::mm::asid::ContextId::NEW;
    // The space is tagged with the ASID it will run with; a fresh context in this generation
    // keeps it until the next rollover.
    let asid = ctx_asid_for_new_space(&mut ctx);
    const BASE: u32 = 0x0040_0000;
    const PAGES: u32 = 4;
    // SAFETY: the direct map is live; the space only touches frames the PMM gives it.
    let mem = unsafe { DirectMap::new() };
    let mut space = vm::with_pmm(|p| AddressSpace::new_user(mem, CpuTlb, asid, p)).unwrap();
    let mut frames = Vec::new();
    for i in 0..PAGES {
        let f = vm::alloc_frame().unwrap();
        let page = Page::containing(VirtAddr::new(BASE + i * PAGE_SIZE));
        vm::with_pmm(|p| space.map_page(page, f, MapFlags::USER_DATA, p)).unwrap();
        frames.push(f);
    }
    assert_eq!(vm::enter_user(space.l1_phys(), &mut ctx), Ok(asid));
    assert_eq!(mmu::current_asid(), asid.get());
    for i in 0..PAGES {
        let va = BASE + i * PAGE_SIZE;
        // User memory is closed to ordinary kernel accesses (software PAN): a domain fault.
        let st = try_read(va).expect_err("user memory closed to the kernel");
        assert_eq!(st.kind, FaultKind::Domain, "{va:#x}: {st}");
        // SAFETY: mapped user RW just above; deliberately faults on the closed user domain.
        let st = unsafe { try_write(va + 8, 1) }.expect_err("closed for writes too");
        assert_eq!(st.kind, FaultKind::Domain, "{va:#x}: {st}");
        // SAFETY: mapped user RW just above; with the user domain open, privileged access to a
        // user page is allowed.
        mmu::with_user_access(|| unsafe { try_write(va + 8, 0xc0de_0000 + i) })
            .expect("user page writable with the user domain open");
        // The same bytes through the direct map of the frame.
        let direct = layout::phys_to_virt(frames[i as usize].start())
            .unwrap()
            .as_u32();
        assert_eq!(try_read(direct + 8), Ok(0xc0de_0000 + i));
    }
    for addr in [0, BASE + PAGES * PAGE_SIZE, 0x7fff_f000] {
        let st = mmu::with_user_access(|| try_read(addr)).expect_err("unmapped: must fault");
        assert_eq!(st.kind, FaultKind::Translation, "{addr:#x}: {st}");
    }
    vm::leave_user();
    assert!(try_read(BASE).is_err(), "no user space is current");
    for f in &frames {
        let page_va = BASE + frames.iter().position(|g| g == f).unwrap() as u32 * PAGE_SIZE;
        let got = vm::with_pmm(|p| space.unmap_page(Page::containing(VirtAddr::new(page_va)), p));
        assert_eq!(got, Ok(*f));
        vm::with_pmm(|p| p.free_frame(*f)).unwrap();
    }
    vm::with_pmm(|p| space.destroy(p)).unwrap();
    assert_eq!(vm::ASIDS.lock().release(&mut ctx), Ok(Some(asid)));
    assert_eq!(vm::free_frames(), free_before, "frames leaked");
}
