//! `vm2_start` and the kernel's virtual memory: direct map, W^X image, PMM, ASIDs, heap, MMIO
//! window, high vectors.
//!
//! This is the glue between the portable `mm` layer and the hardware. Locks are taken in one
//! order only: heap, then [`KERNEL_VM`], then [`PMM`]; code holding the last two never allocates
//! from the heap (the heap's rescue path takes them to grow).

use crate::arch::arm::boot::image_layout;
use crate::arch::arm::cp15::TlbiAll;
use crate::arch::arm::direct_map::DirectMap;
use crate::arch::arm::irq::IrqSafeMutex;
use crate::arch::arm::{cache, core_id, exception, mmu, smp, tlb};
use crate::bsp::raspi2::mmio::Mmio;
use crate::bsp::raspi2::{self as board};
use crate::mm::addr::{SECTION_SHIFT, SECTION_SIZE};
use crate::mm::asid::{Asid, AsidAllocator, AsidError, ContextId};
use crate::mm::desc::{MapFlags, SectionDesc, SmallPageDesc, TableDesc};
use crate::mm::frame_cache::{self, CachedSet, FrameCache};
use crate::mm::phys::PhysMem;
use crate::mm::pmm::Pmm;
use crate::mm::tlb::Tlb;
use crate::mm::vas::{AddressSpace, Granule, MapError};
use crate::mm::window::{KernelWindow, WindowError};
use crate::mm::zero_pool::ZeroPool;
use crate::mm::{layout, Frame, Page, PhysAddr, PmmError, VirtAddr, PAGE_SIZE};
use buddy_system_allocator::{Heap, LockedHeapWithRescue};
use core::alloc::Layout;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The kernel's address space type: tables reached through the direct map, CP15 maintenance.
pub type KernelSpace = AddressSpace<DirectMap, mmu::CpuTlb>;

/// The kernel half and its heap/MMIO gigabyte.
pub struct KernelVm {
    pub space: KernelSpace,
    pub window: KernelWindow,
}

/// The physical memory manager (after `vm2_start`).
pub static PMM: IrqSafeMutex<Option<Pmm<'static>>> = IrqSafeMutex::new(None);
/// The kernel address space (after `vm2_start`).
pub static KERNEL_VM: IrqSafeMutex<Option<KernelVm>> = IrqSafeMutex::new(None);
/// ASIDs for user address spaces, one allocator for the four cores (indexed by MPIDR.Aff0): a
/// rollover keeps the ASID running on each core and makes each core flush its own TLB before its
/// next ASID use (`enter_user`).
pub static ASIDS: IrqSafeMutex<AsidAllocator<{ smp::CORES }>> =
    IrqSafeMutex::new(AsidAllocator::new());

/// Smallest heap growth step: growing is a lock round trip and a TLB sync per page, so it is
/// done a few pages at a time.
pub const HEAP_GROW_MIN: u32 = 16 * PAGE_SIZE;

#[global_allocator]
static HEAP: IrqSafeHeap = IrqSafeHeap(LockedHeapWithRescue::new(grow_heap_for));

/// The kernel heap with IRQs masked while its (plain spin) lock is held, so that an interrupt
/// handler that allocates (the scheduler, system calls) can never spin on a lock the code it
/// interrupted holds.
struct IrqSafeHeap(LockedHeapWithRescue<32>);

// SAFETY: forwards to `LockedHeapWithRescue`, which upholds the `GlobalAlloc` contract; masking
// IRQs around the calls changes nothing about the memory handed out.
unsafe impl core::alloc::GlobalAlloc for IrqSafeHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let was = crate::arch::arm::irq::disable();
        // SAFETY: the caller's `GlobalAlloc::alloc` contract is forwarded as is.
        let p = unsafe { self.0.alloc(layout) };
        crate::arch::arm::irq::restore(was);
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let was = crate::arch::arm::irq::disable();
        // SAFETY: the caller's `GlobalAlloc::dealloc` contract is forwarded as is.
        unsafe { self.0.dealloc(ptr, layout) };
        crate::arch::arm::irq::restore(was);
    }
}

/// Why a VM operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmError {
    Map(MapError),
    Window(WindowError),
    Pmm(PmmError),
    /// `vm2_start` has not run.
    NotReady,
}

impl From<MapError> for VmError {
    fn from(e: MapError) -> Self {
        Self::Map(e)
    }
}
impl From<WindowError> for VmError {
    fn from(e: WindowError) -> Self {
        Self::Window(e)
    }
}
impl From<PmmError> for VmError {
    fn from(e: PmmError) -> Self {
        Self::Pmm(e)
    }
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Map(e) => write!(f, "map: {e}"),
            Self::Window(e) => write!(f, "window: {e}"),
            Self::Pmm(e) => write!(f, "pmm: {e}"),
            Self::NotReady => f.write_str("VM not started"),
        }
    }
}

/// Handles to the board's devices through the MMIO window, made by `vm2_start`.
#[derive(Debug, Clone, Copy)]
pub struct Devices {
    pub uart0: VirtAddr,
    pub gpio: VirtAddr,
    pub mailbox: VirtAddr,
    /// The BCM2835 interrupt controller (in the mailbox's page, which is mapped once).
    pub intc: VirtAddr,
    pub system_timer: VirtAddr,
    pub local: VirtAddr,
}

static DEVICES: spin::Once<Devices> = spin::Once::new();

/// The device mappings, once `vm2_start` has made them.
pub fn devices() -> Option<&'static Devices> {
    DEVICES.get()
}

/// What `vm2_start` found and built, for the memory map it prints and for tests.
#[derive(Debug, Clone, Copy)]
pub struct VmInfo {
    pub ram_end: PhysAddr,
    pub pmm_storage: (PhysAddr, PhysAddr),
    pub vectors_frame: Frame,
    /// Table walks snoop the L1 data cache (ID_MMFR3.CohWalk).
    pub coherent_walks: bool,
}

static VM_INFO: spin::Once<VmInfo> = spin::Once::new();

/// What `vm2_start` built.
pub fn info() -> Option<&'static VmInfo> {
    VM_INFO.get()
}

/// Brings up the kernel's virtual memory; see ARCHITECTURE.md ("Boot flow", step 3). Called once,
/// on core 0, with interrupts masked, while the boot map (identity + remap) is still in place;
/// returns with the identity map gone, TTBR0 walks off, and the heap, the MMIO window and the
/// high vectors in service, after printing the resulting memory map.
#[no_mangle]
#[inline(never)]
pub extern "C" fn vm2_start() {
    // 1. How much RAM is ours (the firmware's answer; the direct map holds at most 1 GiB).
    let (base, size) = crate::init::MAILBOX
        .lock()
        .as_ref()
        .expect("mailbox set up by kernel_init")
        .arm_memory()
        .expect("the firmware reports the ARM memory");
    assert_eq!(base.as_u32(), 0, "ARM memory must start at 0");
    // Whole MiB only, so that no section of the direct map reaches into the GPU's memory after
    // the ARM's (a partial MiB at the end is left unused).
    // The command line's `mem=` may lower it (whole MiB, at least `cmdline::MIN_RAM`).
    let cmdline = crate::init::firmware_cmdline();
    let limited = crate::cmdline::limited_ram(size, cmdline.limit());
    let ram_end = layout::direct_map_end(limited);
    match cmdline.limit() {
        Some(l) => println!(
            "  RAM in use   : {} MiB of {} MiB (mem={} MiB{})",
            ram_end.as_u32() >> 20,
            size >> 20,
            l >> 20,
            if l < u64::from(crate::cmdline::MIN_RAM) {
                ", raised to the 64 MiB minimum"
            } else {
                ""
            }
        ),
        None => println!(
            "  RAM in use   : {} MiB of {} MiB (no mem=)",
            ram_end.as_u32() >> 20,
            size >> 20
        ),
    }
    let coherent = mmu::probe_walk_coherency();

    // 2. Direct map: every MiB of RAM the boot map does not already cover, as Normal WB XN
    // sections. The slots are empty (fault), so writing them needs no TLB maintenance, only a
    // DSB before use (ARM ARM B3.10.1: fault entries are never cached).
    let img = image_layout();
    let image_end_pa = img.end - layout::KERNEL_OFFSET;
    let boot_mibs = image_end_pa.div_ceil(SECTION_SIZE);
    let ram_mibs = ram_end.as_u32().div_ceil(SECTION_SIZE);
    // SAFETY: the boot map covers the kernel table at 0x8000_4000 and it is owned by the kernel;
    // nothing else runs.
    let mut mem = unsafe { DirectMap::new() };
    for mib in boot_mibs..ram_mibs {
        let slot = (layout::KERNEL_OFFSET >> SECTION_SHIFT) + mib;
        let desc = SectionDesc::new(PhysAddr::new(mib << SECTION_SHIFT), MapFlags::KERNEL_DATA);
        mem.write_u32(l1_entry_pa(slot as usize), desc.raw());
    }
    // DSB (publish) so the walker sees the entries, then ISB so that no later instruction was
    // fetched or issued against the old (fault) view (ARM ARM B3.10.1).
    mmu::CpuTlb.publish(layout::KERNEL_L1_PHYS, layout::L1_TABLE_SIZE);
    crate::arch::arm::barrier::isb();

    // 3. The PMM's bitmap right after the image, in the direct map.
    let frames = ram_end.as_u32() / PAGE_SIZE;
    let words = Pmm::storage_words(frames);
    let storage_pa = PhysAddr::new(image_end_pa).align_up(PAGE_SIZE).unwrap();
    let storage_end = PhysAddr::new(storage_pa.as_u32() + (words * 4) as u32)
        .align_up(PAGE_SIZE)
        .unwrap();
    // SAFETY: the storage frames lie after the image, inside RAM and the direct map, and nothing
    // else uses them (they are reserved in the PMM below).
    let storage = unsafe {
        core::slice::from_raw_parts_mut(
            layout::phys_to_virt(storage_pa).unwrap().as_usize() as *mut u32,
            words,
        )
    };
    let mut pmm = Pmm::new(storage, frames).expect("PMM over the reported RAM");
    pmm.reserve_region(PhysAddr::new(0), layout::KERNEL_LOAD_PHYS)
        .expect("reserve firmware area and L1 table");
    pmm.reserve_region(layout::KERNEL_LOAD_PHYS, PhysAddr::new(image_end_pa))
        .expect("reserve kernel image");
    pmm.reserve_region(storage_pa, storage_end)
        .expect("reserve PMM bitmap");

    // 4. W^X for the image: the boot sections covering it become L2 tables (text RX, rodata R,
    // data/bss/stacks RW XN, the stack guard page unmapped, the rest RW XN).
    let l2_values = build_image_tables(&mut mem, &mut pmm, boot_mibs);
    // SAFETY: IRQs are masked and the identity map is still there; the tables map every page of
    // those MiBs to the same physical page as the sections did (except the guard page, which
    // nothing uses), so execution and the stack continue unchanged.
    unsafe {
        mmu::replace_kernel_l1_entries(
            (layout::KERNEL_OFFSET >> SECTION_SHIFT) as usize,
            &l2_values[..boot_mibs as usize],
        )
    };

    // 5. The kernel address space takes over the upper half as it now is.
    let space = KernelSpace::adopt_kernel(mem, mmu::CpuTlb, &mut pmm)
        .expect("kernel half of the boot table is adoptable");
    let mut vm = KernelVm {
        space,
        window: KernelWindow::new(),
    };

    // 6. Devices through the MMIO window, and the drivers moved there.
    let mut map = |name, pa: PhysAddr, size| {
        map_mmio_locked(&mut vm, &mut pmm, name, pa, size).expect("boot MMIO mapping")
    };
    let devices = Devices {
        uart0: map("uart0", board::UART0_PHYS, 0x1000),
        gpio: map("gpio", board::GPIO_PHYS, 0x1000),
        mailbox: map("mailbox+intc", board::MAILBOX_PHYS, 0x40),
        intc: map("intc", board::INTC_PHYS, 0x28),
        system_timer: map("system-timer", board::SYSTEM_TIMER_PHYS, 0x1000),
        local: map("arm-local", board::LOCAL_PHYS, 0x1000),
    };
    // SAFETY: both addresses map the same devices (Device, XN) as the boot mapping did.
    unsafe { crate::console::rebase(devices.uart0) };
    if let Some(mbox) = crate::init::MAILBOX.lock().as_mut() {
        // SAFETY: as above.
        mbox.rebase(unsafe { Mmio::new(devices.mailbox) });
    }
    DEVICES.call_once(|| devices);

    // 7. The identity map and the boot device sections go; TTBR0 walks are switched off until a
    // process runs. From now on the kernel runs with user memory closed (DACR_KERNEL).
    remove_identity_map();
    mmu::set_dacr(mmu::DACR_KERNEL);

    // 8. High vectors: a frame holding a copy of the vector table, mapped read-only executable at
    // 0xFFFF_0000, made coherent with instruction fetch, then SCTLR.V.
    let vectors_frame = install_high_vectors(&mut vm, &mut pmm);

    VM_INFO.call_once(|| VmInfo {
        ram_end,
        pmm_storage: (storage_pa, storage_end),
        vectors_frame,
        coherent_walks: coherent,
    });
    *PMM.lock() = Some(pmm);
    *KERNEL_VM.lock() = Some(vm);

    print_memory_map();
}

fn l1_entry_pa(slot: usize) -> PhysAddr {
    PhysAddr::new(layout::KERNEL_L1_PHYS.as_u32() + 4 * slot as u32)
}

/// Builds L2 tables mapping the first `mibs` MiB of RAM with the image's permissions (and the
/// firmware area below the L1 table read-only), in the
/// quarter-frame layout the address-space code uses (slot s uses quarter s & 3 of the frame
/// serving slots s & !3), and returns the L1 table descriptors to install.
fn build_image_tables(mem: &mut DirectMap, pmm: &mut Pmm<'static>, mibs: u32) -> [u32; 16] {
    assert!(mibs as usize <= 16, "kernel image larger than 16 MiB");
    let img = image_layout();
    let off = layout::KERNEL_OFFSET;
    let flags_for = |pa: u32| -> Option<MapFlags> {
        let va = pa + off;
        let within = |r: (u32, u32)| (r.0..r.1).contains(&va);
        if img.is_stack_guard(va) {
            None
        } else if pa < layout::FIRMWARE_AREA_END.as_u32() {
            // The firmware's area (the parked cores' spin code, the ATAGs): readable, so the
            // kernel can read the ATAGs, never writable.
            Some(MapFlags::KERNEL_RODATA)
        } else if within(img.text) {
            Some(MapFlags::KERNEL_TEXT)
        } else if within(img.rodata) {
            Some(MapFlags::KERNEL_RODATA)
        } else {
            Some(MapFlags::KERNEL_DATA)
        }
    };
    let mut values = [0u32; 16];
    let mut frame: Option<Frame> = None;
    for mib in 0..mibs {
        let slot = (off >> SECTION_SHIFT) + mib;
        if slot & 3 == 0 || frame.is_none() {
            if let Some(done) = frame {
                mmu::CpuTlb.publish(done.start(), PAGE_SIZE);
            }
            let f = pmm
                .alloc_frame()
                .expect("a frame for the image's L2 tables");
            mem.zero_frame(f);
            frame = Some(f);
        }
        let table = PhysAddr::new(frame.unwrap().start().as_u32() + (slot & 3) * 1024);
        for page in 0..256u32 {
            let pa = (mib << SECTION_SHIFT) + page * PAGE_SIZE;
            if let Some(flags) = flags_for(pa) {
                let d = SmallPageDesc::new(PhysAddr::new(pa), flags);
                mem.write_u32(PhysAddr::new(table.as_u32() + 4 * page), d.raw());
            }
        }
        values[mib as usize] = TableDesc::new(table, false).raw();
    }
    if let Some(done) = frame {
        mmu::CpuTlb.publish(done.start(), PAGE_SIZE);
    }
    values
}

fn remove_identity_map() {
    // SAFETY: the kernel table is live and owned; the kernel no longer uses any low address
    // (drivers moved to the window above).
    let mut mem = unsafe { DirectMap::new() };
    for slot in 0..layout::USER_L1_ENTRIES {
        mem.write_u32(l1_entry_pa(slot), 0);
    }
    // The removed entries were global and may sit in the TLB or the walk cache of any core that
    // ran with this table: TLBIALLIS reaches them all (only core 0 runs this early; a secondary
    // enters through its trampoline table and flushes its own TLB when it leaves it).
    mmu::CpuTlb.publish(layout::KERNEL_L1_PHYS, layout::L1_TABLE_SIZE);
    tlb::flush_all();
    mmu::switch_kernel_only();
}

fn install_high_vectors(vm: &mut KernelVm, pmm: &mut Pmm<'static>) -> Frame {
    let frame = pmm.alloc_frame().expect("a frame for the vector page");
    let va_direct = layout::phys_to_virt(frame.start()).unwrap();
    let table = exception::vector_table();
    // SAFETY: the frame was just allocated for this; it is in the direct map and 4 KiB long.
    unsafe {
        core::ptr::write_bytes(va_direct.as_usize() as *mut u8, 0, PAGE_SIZE as usize);
        core::ptr::copy_nonoverlapping(
            table.as_ptr(),
            va_direct.as_usize() as *mut u8,
            table.len(),
        );
    }
    // ARM ARM B2.2.9: new instructions need a D-cache clean to PoU, I-cache and branch predictor
    // invalidation, DSB, ISB before they are fetched (the data cache is PIPT, so cleaning through
    // the direct-map alias cleans the same lines).
    cache::sync_instructions(va_direct, table.len() as u32);
    vm.space
        .map_page(
            Page::containing(layout::HIGH_VECTORS),
            frame,
            MapFlags::KERNEL_TEXT,
            pmm,
        )
        .expect("map the high vector page");
    aarch32_cpu::register::Sctlr::modify(|s| s.set_v(true));
    crate::arch::arm::barrier::isb();
    frame
}

fn map_mmio_locked(
    vm: &mut KernelVm,
    pmm: &mut Pmm<'static>,
    name: &'static str,
    pa: PhysAddr,
    size: u32,
) -> Result<VirtAddr, VmError> {
    let va = vm.window.alloc_mmio(name, pa, size)?;
    if !vm.window.is_new(va) {
        return Ok(va);
    }
    let rec = *vm.window.last().expect("just recorded");
    if let Err(e) = vm.space.map_range(
        rec.virt,
        rec.phys,
        rec.size,
        MapFlags::KERNEL_DEVICE,
        Granule::Auto,
        pmm,
    ) {
        vm.window
            .cancel_last_mmio(rec.virt)
            .expect("the record just made is the last");
        return Err(e.into());
    }
    Ok(va)
}

/// Maps `size` bytes of device registers at `pa` into the MMIO window (Device, XN, privileged)
/// and records the mapping as `name`. A range inside an earlier mapping reuses it.
pub fn map_mmio(name: &'static str, pa: PhysAddr, size: u32) -> Result<VirtAddr, VmError> {
    let mut vm = KERNEL_VM.lock();
    let vm = vm.as_mut().ok_or(VmError::NotReady)?;
    let mut pmm = PMM.lock();
    let pmm = pmm.as_mut().ok_or(VmError::NotReady)?;
    map_mmio_locked(vm, pmm, name, pa, size)
}

/// Unmaps the most recent MMIO mapping (the window only shrinks from its bottom).
pub fn unmap_last_mmio(va: VirtAddr) -> Result<(), VmError> {
    let mut vm = KERNEL_VM.lock();
    let vm = vm.as_mut().ok_or(VmError::NotReady)?;
    let mut pmm = PMM.lock();
    let pmm = pmm.as_mut().ok_or(VmError::NotReady)?;
    let rec = *vm
        .window
        .last()
        .ok_or(VmError::Window(WindowError::NotLast))?;
    if rec.virt != va.align_down(PAGE_SIZE) {
        return Err(VmError::Window(WindowError::NotLast));
    }
    // Global kernel entries, which any core may hold (all share the TTBR1 half):
    // `unmap_range` invalidates them with TLBIMVAAIS on every core before the range is reused.
    vm.space.unmap_range(rec.virt, rec.size, pmm)?;
    vm.window.cancel_last_mmio(rec.virt)?;
    Ok(())
}

/// Grows the heap by at least `bytes`: reserves the range in the window, maps fresh frames
/// there. Returns the new range. Undoes everything on failure.
pub fn grow_heap(bytes: u32) -> Result<(VirtAddr, VirtAddr), VmError> {
    let mut vm = KERNEL_VM.lock();
    let vm = vm.as_mut().ok_or(VmError::NotReady)?;
    let mut pmm = PMM.lock();
    let pmm = pmm.as_mut().ok_or(VmError::NotReady)?;
    let bytes = bytes
        .max(HEAP_GROW_MIN)
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(VmError::Window(WindowError::HeapWouldCrossMmio))?;
    // The pages mapped here were fault entries, which no core caches: no invalidation. The
    // undo below unmaps global entries that any core may have cached meanwhile; `unmap_page`
    // invalidates them on every core (TLBIMVAAIS). A new MMIO mapping is the same.
    let range = vm.window.grow_heap(bytes)?;
    let mut va = range.start;
    let result = loop {
        if va >= range.end {
            break Ok(());
        }
        let frame = match pmm.alloc_frame() {
            Ok(f) => f,
            Err(e) => break Err(VmError::Pmm(e)),
        };
        if let Err(e) = vm
            .space
            .map_page(Page::containing(va), frame, MapFlags::KERNEL_DATA, pmm)
        {
            pmm.free_frame(frame).expect("frame just allocated");
            break Err(e.into());
        }
        va = VirtAddr::new(va.as_u32() + PAGE_SIZE);
    };
    if let Err(e) = result {
        // Undo: unmap and free what was mapped, give the range back.
        let mut undo = range.start;
        while undo < va {
            let f = vm
                .space
                .unmap_page(Page::containing(undo), pmm)
                .expect("mapped above");
            pmm.free_frame(f).expect("allocated above");
            undo = VirtAddr::new(undo.as_u32() + PAGE_SIZE);
        }
        vm.window
            .shrink_heap(range.len())
            .expect("the range just grown is the top");
        return Err(e);
    }
    Ok((range.start, range.end))
}

/// The heap's rescue: called with the heap lock held when an allocation does not fit. Must not
/// allocate.
///
/// A buddy allocator serves a request from one block of `size` (the request rounded up to a power
/// of two, at least its alignment) aligned to `size`, so the growth must contain such a block:
/// from the current top up to the next multiple of `size`, plus `size`. The pieces below the
/// aligned block are not lost: they join the heap as smaller blocks.
fn grow_heap_for(heap: &mut Heap<32>, layout: &Layout) {
    let block = layout.size().max(layout.align()).next_power_of_two() as u32;
    let top = heap_top().as_u32();
    let Some(aligned) = top.checked_next_multiple_of(block) else {
        return;
    };
    let Some(need) = (aligned - top).checked_add(block) else {
        return;
    };
    if let Ok((start, end)) = grow_heap(need) {
        // SAFETY: [start, end) was just mapped RW for the kernel and belongs to nobody else.
        unsafe { heap.add_to_heap(start.as_usize(), end.as_usize()) };
    }
}

/// The current top of the heap.
pub fn heap_top() -> VirtAddr {
    KERNEL_VM
        .lock()
        .as_ref()
        .map_or(layout::HEAP_BASE, |vm| vm.window.heap().end)
}

/// Bytes the heap has been given so far.
pub fn heap_size() -> u32 {
    KERNEL_VM
        .lock()
        .as_ref()
        .map_or(0, |vm| vm.window.heap().len())
}

/// Prints the virtual layout with real addresses, the frame counts and each MMIO mapping.
pub fn print_memory_map() {
    let Some(info) = info() else { return };
    let img = image_layout();
    println!("memory map:");
    println!(
        "  {:#010x}..{:#010x}  user space (TTBR0, off until a process runs)",
        0,
        layout::USER_END.as_u32()
    );
    println!(
        "  {:#010x}..{:#010x}  direct map of {} MiB ARM RAM (Normal WB, XN but text)",
        layout::KERNEL_OFFSET,
        layout::KERNEL_OFFSET + info.ram_end.as_u32(),
        info.ram_end.as_u32() >> 20
    );
    println!(
        "    {:#010x}  kernel L1 table",
        layout::KERNEL_OFFSET + layout::KERNEL_L1_PHYS.as_u32()
    );
    println!("    {:#010x}..{:#010x}  .text   RX", img.text.0, img.text.1);
    println!(
        "    {:#010x}..{:#010x}  .rodata R  XN",
        img.rodata.0, img.rodata.1
    );
    println!(
        "    {:#010x}..{:#010x}  .data/.bss RW XN",
        img.data.0, img.bss.1
    );
    println!(
        "    {:#010x}..{:#010x}  stack guard (unmapped)",
        img.stack_guard.0, img.stack_guard.1
    );
    println!(
        "    {:#010x}..{:#010x}  stacks RW XN",
        img.stacks.0, img.stacks.1
    );
    println!(
        "    {:#010x}..{:#010x}  PMM bitmap + summary",
        layout::KERNEL_OFFSET + info.pmm_storage.0.as_u32(),
        layout::KERNEL_OFFSET + info.pmm_storage.1.as_u32()
    );
    if let Some(vm) = KERNEL_VM.lock().as_ref() {
        let heap = vm.window.heap();
        println!(
            "  {:#010x}..{:#010x}  kernel heap ({} KiB, grows up)",
            heap.start.as_u32(),
            heap.end.as_u32(),
            heap.len() / 1024
        );
        println!(
            "  {:#010x}..{:#010x}  MMIO window (grows down)",
            vm.window.mmio_bottom().as_u32(),
            layout::MMIO_TOP.as_u32()
        );
        for r in vm.window.mmio_mappings() {
            println!(
                "    {:#010x}..{:#010x}  {:<14} phys {:#010x} Device XN",
                r.virt.as_u32(),
                r.virt.as_u32() + r.size,
                r.name,
                r.phys.as_u32()
            );
        }
    }
    println!(
        "  {:#010x}..{:#010x}  high vectors RX (frame {:#010x})",
        layout::HIGH_VECTORS.as_u32(),
        layout::HIGH_VECTORS.as_u32() + PAGE_SIZE,
        info.vectors_frame.start().as_u32()
    );
    println!(
        "table walks: {}",
        if info.coherent_walks {
            "coherent with the L1 D-cache (ID_MMFR3.CohWalk): DSB publishes a descriptor"
        } else {
            "not coherent: descriptors are cleaned to PoC before use"
        }
    );
    if let Some(p) = PMM.lock().as_ref() {
        println!(
            "frames: {} total, {} free, {} reserved, {} in use ({} KiB per frame)",
            p.total_frames(),
            p.free_frames(),
            p.reserved_frames(),
            p.allocated_frames(),
            PAGE_SIZE / 1024
        );
    }
}

/// Makes the user space with table `l1` and context `ctx` current on this core: takes an ASID
/// from the allocator for this core (a new one if `ctx` is new or of an older generation),
/// flushes this core's whole TLB first if an ASID rollover happened since this core last switched
/// (entries of the old generation may carry ASIDs now handed to others), then switches TTBR0 and
/// the ASID by the ARM ARM sequence. Returns the ASID: the caller tags the space's TLB maintenance
/// with it, which may differ from the one it had before a rollover.
///
/// The rollover flush is local (TLBIALL), not TLBIALLIS: the allocator tells *each* core to flush
/// once before its next ASID use, so every core clears its own TLB at the only moment it could
/// start using a recycled ASID; a broadcast would only make the four cores flush each other up to
/// four times per rollover. Until a core flushes it runs the space it ran at the rollover, whose
/// ASID the rollover kept for it, so the stale entries of other ASIDs it still holds cannot match.
pub fn enter_user(l1: PhysAddr, ctx: &mut ContextId) -> Result<Asid, AsidError> {
    // The core is read under the lock (IRQs masked), and the lock is held until CONTEXTIDR and
    // TTBR0 hold what the allocator recorded for this core: a rollover on another core in
    // between would otherwise keep the new space's ASID but not the one this core still runs,
    // and see the old space as not running while this core may still walk its table.
    let mut asids = ASIDS.lock();
    let switch = asids.switch_to(core_id() as usize, ctx)?;
    if switch.flush_tlb {
        flush_local_tlb();
    }
    mmu::switch_user(l1, switch.asid);
    drop(asids);
    Ok(switch.asid)
}

/// This core's part of an ASID rollover: DSB, TLBIALL (this core only), BPIALLIS, DSB, ISB.
/// The branch predictor is invalidated with the inner-shareable form because it is the only
/// one the CP15 layer has; on the Cortex-A7 it costs the same.
fn flush_local_tlb() {
    crate::arch::arm::barrier::dsb();
    // SAFETY: TLBIALL only drops this core's cached translations; the operand is ignored.
    unsafe { TlbiAll::write(0) };
    tlb::complete();
}

/// Leaves user space on this core: TTBR0 walks off, ASID 0, and the allocator told that nothing
/// runs here, so the space may be released.
pub fn leave_user() {
    mmu::switch_kernel_only();
    let mut asids = ASIDS.lock();
    asids
        .leave(core_id() as usize)
        .expect("every core of the cluster exists in the allocator");
}

/// Frames free: free in the PMM, plus those in the zero pool (zeroed ahead of time) and in the
/// cores' frame caches, which are still free memory for anyone who needs a frame.
pub fn free_frames() -> u32 {
    // The caches' counts are read under the PMM's lock, under which frames move between the
    // two (a refill, a drain): a batch is counted once.
    let in_pmm_or_cached = {
        let pmm = PMM.lock();
        pmm.as_ref().map_or(0, |p| p.free_frames()) + cached_frames()
    };
    in_pmm_or_cached + ZERO_POOL.lock().len() as u32
}

/// Per core, its cache of free frames for user memory (`mm::frame_cache`): the PMM's lock is
/// taken once per batch of frames, not per frame, and no cache line is shared on the fast
/// path. Only its core takes a cache's lock, except to drain it when another core finds the
/// PMM empty. Lock order: a cache (one at a time), then the PMM.
static FRAME_CACHES: [IrqSafeMutex<FrameCache>; smp::CORES] =
    [const { IrqSafeMutex::new(FrameCache::new()) }; smp::CORES];

/// Per core, the frames in its cache (stored under the cache's lock after each change, a plain
/// store rather than a shared counter's read-modify-write), so that [`free_frames`] needs none
/// of the caches' locks.
static CACHED_FRAMES: [AtomicU32; smp::CORES] = [const { AtomicU32::new(0) }; smp::CORES];

/// Which frames are in some core's cache (1 GiB of frames: all a Pi 2 has): a frame freed
/// twice is refused whichever cores it is freed on.
static CACHED_SET: CachedSet<{ (1 << 30) / PAGE_SIZE as usize / 32 }> = CachedSet::new();

/// A frame for user memory, from this core's cache, which is refilled from the PMM only above
/// `keep_free` frames there (the kernel's reserve). When the PMM has none above that, the other
/// cores' caches go back to it first (they are free memory too).
pub fn alloc_cached_frame(keep_free: u32) -> Result<Frame, PmmError> {
    let me = core_id() as usize;
    for attempt in 0..2 {
        {
            let mut cache = FRAME_CACHES[me].lock();
            if let Some(f) = cache.take(&CACHED_SET) {
                CACHED_FRAMES[me].store(cache.len() as u32, Ordering::Relaxed);
                return Ok(f);
            }
            {
                // The count changes under the PMM's lock too, so that `free_frames` (which
                // reads it under that lock) never sees a batch in both places or in neither.
                let mut pmm = PMM.lock_masked();
                let p = pmm.as_mut().ok_or(PmmError::OutOfMemory)?;
                let take = p.free_frames().saturating_sub(keep_free);
                cache.refill(p, take, &CACHED_SET);
                let f = cache.take(&CACHED_SET);
                CACHED_FRAMES[me].store(cache.len() as u32, Ordering::Relaxed);
                if let Some(f) = f {
                    return Ok(f);
                }
            }
        }
        if attempt == 0 && drain_frame_caches() == 0 {
            break;
        }
    }
    Err(PmmError::OutOfMemory)
}

/// Gives a frame of user memory back, to this core's cache (a full cache first gives a batch
/// back to the PMM). A frame already in this cache is refused (`DoubleFree`).
pub fn free_cached_frame(frame: Frame) -> Result<(), PmmError> {
    let me = core_id() as usize;
    let mut cache = FRAME_CACHES[me].lock();
    if cache.is_full() {
        let mut pmm = PMM.lock_masked();
        let p = pmm.as_mut().ok_or(PmmError::OutOfMemory)?;
        let drained = cache.drain(p, frame_cache::BATCH, &CACHED_SET);
        CACHED_FRAMES[me].store(cache.len() as u32, Ordering::Relaxed);
        drained?;
    }
    cache.put(frame, &CACHED_SET)?;
    CACHED_FRAMES[me].store(cache.len() as u32, Ordering::Relaxed);
    Ok(())
}

/// Free frames kept in the cores' frame caches.
pub fn cached_frames() -> u32 {
    CACHED_FRAMES
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
}

/// Gives every core's cached frames back to the PMM (one cache at a time); returns how many.
pub fn drain_frame_caches() -> u32 {
    let mut moved = 0;
    for (cache, count) in FRAME_CACHES.iter().zip(&CACHED_FRAMES) {
        let mut cache = cache.lock();
        let mut pmm = PMM.lock();
        let Some(p) = pmm.as_mut() else { break };
        // A refusal leaves the frame out of both (it was freed twice); the count follows.
        let before = cache.len();
        let _ = cache.drain(p, usize::MAX, &CACHED_SET);
        count.store(cache.len() as u32, Ordering::Relaxed);
        moved += (before - cache.len()) as u32;
    }
    moved
}

/// Frames zeroed while core 0 was idle, for demand-zero faults (see `mm::zero_pool`). Taken
/// alone: never held together with the PMM's lock.
pub static ZERO_POOL: IrqSafeMutex<ZeroPool> = IrqSafeMutex::new(ZeroPool::new());

/// Whether the zero pool may hold a frame: set when one is added, cleared when the last one
/// goes (under the pool's lock), so that a fault finds an empty pool without taking the lock.
static ZERO_POOL_READY: AtomicBool = AtomicBool::new(false);

/// A frame from the zero pool, if it has one.
#[inline]
pub fn take_zeroed_frame() -> Option<Frame> {
    if !ZERO_POOL_READY.load(Ordering::Relaxed) {
        return None;
    }
    let mut pool = ZERO_POOL.lock_masked();
    let frame = pool.pop();
    if pool.is_empty() {
        ZERO_POOL_READY.store(false, Ordering::Relaxed);
    }
    frame
}

/// Zeroes up to `batch` frames into the zero pool, taking them from the PMM only while it keeps
/// more than `keep_free` frames free. Returns how many were added. Called by the idle loop, with
/// IRQs masked: a batch delays a pending interrupt by a few thousand instructions at most.
pub fn refill_zero_pool(batch: usize, keep_free: u32) -> usize {
    let mut added = 0;
    while added < batch && ZERO_POOL.lock_masked().has_room() {
        let frame = {
            let mut pmm = PMM.lock_masked();
            let Some(p) = pmm.as_mut() else { break };
            if p.free_frames() <= keep_free {
                break;
            }
            match p.alloc_frame() {
                Ok(f) => f,
                Err(_) => break,
            }
        };
        // SAFETY: the direct map is live; the frame was just allocated and is ours.
        let mut mem = unsafe { DirectMap::new() };
        mem.zero_frame(frame);
        let pushed = {
            let mut pool = ZERO_POOL.lock_masked();
            let r = pool.push(frame);
            ZERO_POOL_READY.store(!pool.is_empty(), Ordering::Relaxed);
            r
        };
        if let Err(f) = pushed {
            // Cannot happen (room was checked, and only this loop fills the pool): give it back.
            with_pmm(|p| p.free_frame(f)).expect("a frame just allocated");
            break;
        }
        added += 1;
    }
    added
}

/// Runs `f` with the PMM as a frame allocator.
pub fn with_pmm<R>(f: impl FnOnce(&mut Pmm<'static>) -> R) -> R {
    let mut g = PMM.lock();
    f(g.as_mut().expect("vm2_start has run"))
}

/// Runs `f` with the kernel address space and the PMM.
pub fn with_kernel_vm<R>(f: impl FnOnce(&mut KernelVm, &mut Pmm<'static>) -> R) -> R {
    let mut vm = KERNEL_VM.lock();
    let mut pmm = PMM.lock();
    f(
        vm.as_mut().expect("vm2_start has run"),
        pmm.as_mut().expect("vm2_start has run"),
    )
}

/// A frame allocator view of the locked PMM, for code that holds the guard.
pub fn alloc_frame() -> Result<Frame, PmmError> {
    with_pmm(|p| p.alloc_frame())
}
