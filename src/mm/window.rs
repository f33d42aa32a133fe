//! The shared heap/MMIO gigabyte of the kernel half: bookkeeping only.
//!
//! ```text
//!  0xC000_0000  HEAP_BASE   +--------------------+
//!                           | kernel heap        |  grows up, page by page
//!               heap top -> +--------------------+
//!                           |   (free)           |
//!            mmio bottom -> +--------------------+
//!                           | MMIO mappings      |  grow down, one record each
//!  0xFFF0_0000  MMIO_TOP    +--------------------+
//! ```
//!
//! The heap is full when its top would cross the lowest MMIO mapping, and a new MMIO mapping
//! fails when it would cross the heap top: both are errors, never an overwrite. [`KernelWindow`]
//! only hands out virtual ranges and remembers them by name; the caller maps them with the
//! kernel's [`AddressSpace`](super::vas::AddressSpace) (heap: Normal write-back RW XN; MMIO:
//! Device XN) and, if that fails, gives the range back with [`KernelWindow::shrink_heap`] or
//! [`KernelWindow::cancel_last_mmio`]. It never allocates: the heap grows through it.

use super::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use super::layout::{HEAP_BASE, MMIO_TOP};
use core::fmt;

/// How many MMIO mappings the window can record.
pub const MAX_MMIO_MAPPINGS: usize = 16;

/// Why the window refused a request. A refused call changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowError {
    /// The heap top would cross the lowest MMIO mapping.
    HeapWouldCrossMmio,
    /// The MMIO mapping would reach below the heap top.
    MmioWouldCrossHeap,
    /// The record array is full.
    TooManyMappings,
    /// A size of zero bytes.
    ZeroSize,
    /// The physical range wraps past 4 GiB.
    OutOfRange,
    /// Shrinking the heap below its base, or cancelling a mapping that is not the last one.
    NotLast,
}

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::HeapWouldCrossMmio => "heap would cross the MMIO window",
            Self::MmioWouldCrossHeap => "MMIO mapping would cross the heap top",
            Self::TooManyMappings => "too many MMIO mappings",
            Self::ZeroSize => "zero size",
            Self::OutOfRange => "physical range wraps past 4 GiB",
            Self::NotLast => "not the last allocation",
        })
    }
}

/// A half-open virtual range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtRange {
    /// First address.
    pub start: VirtAddr,
    /// One past the last address.
    pub end: VirtAddr,
}

impl VirtRange {
    /// Length in bytes.
    pub const fn len(&self) -> u32 {
        self.end.as_u32() - self.start.as_u32()
    }

    /// Whether the range is empty.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One MMIO mapping: `size` bytes (whole pages) of physical `phys` at virtual `virt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioRecord {
    /// Who asked for it (for printing the map).
    pub name: &'static str,
    /// First physical address (page aligned).
    pub phys: PhysAddr,
    /// First virtual address (page aligned).
    pub virt: VirtAddr,
    /// Size in bytes, a multiple of 4 KiB.
    pub size: u32,
}

/// The heap/MMIO bookkeeping of 0xC000_0000..0xFFF0_0000.
#[derive(Debug, Clone)]
pub struct KernelWindow {
    heap_top: VirtAddr,
    mmio_bottom: VirtAddr,
    records: [Option<MmioRecord>; MAX_MMIO_MAPPINGS],
    count: usize,
    /// Whether the last `alloc_mmio` made a new record (rather than reusing one).
    last_alloc_new: bool,
}

impl Default for KernelWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelWindow {
    /// An empty window: no heap, no MMIO.
    pub const fn new() -> Self {
        Self {
            heap_top: HEAP_BASE,
            mmio_bottom: MMIO_TOP,
            records: [None; MAX_MMIO_MAPPINGS],
            count: 0,
            last_alloc_new: false,
        }
    }

    /// The heap so far: `[HEAP_BASE, heap top)`.
    pub fn heap(&self) -> VirtRange {
        VirtRange {
            start: HEAP_BASE,
            end: self.heap_top,
        }
    }

    /// The lowest MMIO address (`MMIO_TOP` when there is no MMIO mapping).
    pub fn mmio_bottom(&self) -> VirtAddr {
        self.mmio_bottom
    }

    /// Grows the heap by `bytes` rounded up to whole pages and returns the new pages' range, for
    /// the caller to map.
    pub fn grow_heap(&mut self, bytes: u32) -> Result<VirtRange, WindowError> {
        if bytes == 0 {
            return Err(WindowError::ZeroSize);
        }
        let len = bytes
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(WindowError::HeapWouldCrossMmio)?;
        let free = self.mmio_bottom.as_u32() - self.heap_top.as_u32();
        if len > free {
            return Err(WindowError::HeapWouldCrossMmio);
        }
        let start = self.heap_top;
        self.heap_top = VirtAddr::new(start.as_u32() + len);
        Ok(VirtRange {
            start,
            end: self.heap_top,
        })
    }

    /// Gives back the top `bytes` (whole pages) of the heap, e.g. when mapping them failed.
    pub fn shrink_heap(&mut self, bytes: u32) -> Result<(), WindowError> {
        let len = bytes
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(WindowError::NotLast)?;
        if len > self.heap_top.as_u32() - HEAP_BASE.as_u32() {
            return Err(WindowError::NotLast);
        }
        self.heap_top = VirtAddr::new(self.heap_top.as_u32() - len);
        Ok(())
    }

    /// A virtual address for the `size` bytes of device registers at `phys`, recorded as `name`.
    ///
    /// The window works in whole pages: the returned address keeps `phys`'s offset inside its
    /// page. A range already inside an earlier mapping reuses it (the caller then has nothing to
    /// map: see [`KernelWindow::is_new`]); otherwise the window grows down by the pages needed.
    pub fn alloc_mmio(
        &mut self,
        name: &'static str,
        phys: PhysAddr,
        size: u32,
    ) -> Result<VirtAddr, WindowError> {
        if size == 0 {
            return Err(WindowError::ZeroSize);
        }
        let first = phys.align_down(PAGE_SIZE);
        let end = u64::from(phys.as_u32()) + u64::from(size);
        if end > 1 << 32 {
            return Err(WindowError::OutOfRange);
        }
        let end = end.next_multiple_of(u64::from(PAGE_SIZE));
        let span = (end - u64::from(first.as_u32())) as u32;
        for r in self.records.iter().flatten() {
            let r_end = u64::from(r.phys.as_u32()) + u64::from(r.size);
            if first >= r.phys && end <= r_end {
                self.last_alloc_new = false;
                return Ok(VirtAddr::new(
                    r.virt.as_u32() + (phys.as_u32() - r.phys.as_u32()),
                ));
            }
        }
        if self.count == MAX_MMIO_MAPPINGS {
            return Err(WindowError::TooManyMappings);
        }
        let free = self.mmio_bottom.as_u32() - self.heap_top.as_u32();
        if span > free {
            return Err(WindowError::MmioWouldCrossHeap);
        }
        let virt = VirtAddr::new(self.mmio_bottom.as_u32() - span);
        self.records[self.count] = Some(MmioRecord {
            name,
            phys: first,
            virt,
            size: span,
        });
        self.count += 1;
        self.mmio_bottom = virt;
        self.last_alloc_new = true;
        Ok(VirtAddr::new(virt.as_u32() + phys.page_offset()))
    }

    /// Whether `va`, just returned by `alloc_mmio`, starts a new record, i.e. the caller must map
    /// it; `false` when `alloc_mmio` reused an earlier mapping (even the most recent one).
    pub fn is_new(&self, va: VirtAddr) -> bool {
        self.last_alloc_new
            && self
                .last()
                .is_some_and(|r| r.virt == va.align_down(PAGE_SIZE))
    }

    /// The most recent MMIO record.
    pub fn last(&self) -> Option<&MmioRecord> {
        self.count
            .checked_sub(1)
            .and_then(|i| self.records[i].as_ref())
    }

    /// Forgets the most recent MMIO mapping, which must start at the page of `va` (e.g. mapping
    /// it failed).
    pub fn cancel_last_mmio(&mut self, va: VirtAddr) -> Result<MmioRecord, WindowError> {
        match self.last() {
            Some(r) if r.virt == va.align_down(PAGE_SIZE) => {
                let r = *r;
                self.count -= 1;
                self.records[self.count] = None;
                self.last_alloc_new = false;
                self.mmio_bottom = VirtAddr::new(r.virt.as_u32() + r.size);
                Ok(r)
            }
            _ => Err(WindowError::NotLast),
        }
    }

    /// The MMIO mappings, oldest (highest) first.
    pub fn mmio_mappings(&self) -> impl Iterator<Item = &MmioRecord> {
        self.records[..self.count].iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UART0: PhysAddr = PhysAddr::new(0x3F20_1000);

    #[test]
    fn the_heap_grows_up_by_whole_pages_from_its_base() {
        let mut w = KernelWindow::new();
        let r = w.grow_heap(1).unwrap();
        assert_eq!(r.start, HEAP_BASE);
        assert_eq!(r.len(), PAGE_SIZE);
        let r = w.grow_heap(0x2001).unwrap();
        assert_eq!(r.start, VirtAddr::new(0xC000_1000));
        assert_eq!(r.end, VirtAddr::new(0xC000_4000));
        assert_eq!(w.heap().len(), 0x4000);
        assert_eq!(w.grow_heap(0), Err(WindowError::ZeroSize));
    }

    #[test]
    fn mmio_grows_down_and_keeps_the_offset_inside_the_page() {
        let mut w = KernelWindow::new();
        let va = w.alloc_mmio("uart0", UART0, 0x90).unwrap();
        assert_eq!(va, VirtAddr::new(0xFFEF_F000));
        assert!(w.is_new(va));
        let mbox = w
            .alloc_mmio("mailbox", PhysAddr::new(0x3F00_B880), 0x40)
            .unwrap();
        assert_eq!(mbox, VirtAddr::new(0xFFEF_E880));
        assert_eq!(w.mmio_bottom(), VirtAddr::new(0xFFEF_E000));
        // Straddling a page boundary takes two pages.
        let x = w
            .alloc_mmio("straddle", PhysAddr::new(0x3F00_3FF0), 0x20)
            .unwrap();
        assert_eq!(x, VirtAddr::new(0xFFEF_CFF0));
        let names: [&str; 3] = core::array::from_fn(|i| w.mmio_mappings().nth(i).unwrap().name);
        assert_eq!(names, ["uart0", "mailbox", "straddle"]);
    }

    #[test]
    fn a_range_inside_an_existing_mapping_reuses_it() {
        let mut w = KernelWindow::new();
        let a = w
            .alloc_mmio("gpio+uart", PhysAddr::new(0x3F20_0000), 0x2000)
            .unwrap();
        let b = w.alloc_mmio("uart0", UART0, 0x48).unwrap();
        assert_eq!(b.as_u32(), a.as_u32() + 0x1000);
        assert!(!w.is_new(b));
        assert_eq!(w.mmio_mappings().count(), 1);
    }

    #[test]
    fn a_range_in_the_first_page_of_the_latest_mapping_is_not_new() {
        let mut w = KernelWindow::new();
        let mbox = w
            .alloc_mmio("mailbox", PhysAddr::new(0x3F00_B880), 0x40)
            .unwrap();
        assert!(w.is_new(mbox));
        let intc = w
            .alloc_mmio("intc", PhysAddr::new(0x3F00_B200), 0x28)
            .unwrap();
        assert_eq!(intc.as_u32(), mbox.as_u32() - 0x680);
        assert!(!w.is_new(intc), "the page is mapped already");
        assert_eq!(w.mmio_mappings().count(), 1);
    }

    #[test]
    fn the_heap_cannot_cross_the_lowest_mmio_mapping() {
        let mut w = KernelWindow::new();
        w.alloc_mmio("uart0", UART0, 0x1000).unwrap();
        let free = w.mmio_bottom().as_u32() - HEAP_BASE.as_u32();
        assert_eq!(w.grow_heap(free + 1), Err(WindowError::HeapWouldCrossMmio));
        assert_eq!(w.heap().len(), 0);
        w.grow_heap(free).unwrap();
        assert_eq!(w.heap().end, w.mmio_bottom());
        assert_eq!(w.grow_heap(1), Err(WindowError::HeapWouldCrossMmio));
    }

    #[test]
    fn mmio_cannot_cross_the_heap_top() {
        let mut w = KernelWindow::new();
        let free = MMIO_TOP.as_u32() - HEAP_BASE.as_u32();
        w.grow_heap(free - 0x1000).unwrap();
        assert_eq!(
            w.alloc_mmio("big", PhysAddr::new(0x3F00_0000), 0x2000),
            Err(WindowError::MmioWouldCrossHeap)
        );
        w.alloc_mmio("small", PhysAddr::new(0x3F00_0000), 0x1000)
            .unwrap();
        assert_eq!(w.mmio_bottom(), w.heap().end);
    }

    #[test]
    fn the_record_array_is_fixed_and_refuses_when_full() {
        let mut w = KernelWindow::new();
        for i in 0..MAX_MMIO_MAPPINGS as u32 {
            w.alloc_mmio("dev", PhysAddr::new(0x3F00_0000 + 0x2000 * i), 4)
                .unwrap();
        }
        assert_eq!(
            w.alloc_mmio("one too many", PhysAddr::new(0x4000_0000), 4),
            Err(WindowError::TooManyMappings)
        );
    }

    #[test]
    fn cancelling_gives_the_pages_back_and_wrapping_ranges_are_refused() {
        let mut w = KernelWindow::new();
        let va = w.alloc_mmio("uart0", UART0, 0x90).unwrap();
        assert_eq!(w.cancel_last_mmio(va).unwrap().name, "uart0");
        assert_eq!(w.mmio_bottom(), MMIO_TOP);
        assert_eq!(w.cancel_last_mmio(va), Err(WindowError::NotLast));
        assert_eq!(
            w.alloc_mmio("wrap", PhysAddr::new(0xFFFF_F000), 0x2000),
            Err(WindowError::OutOfRange)
        );
        assert_eq!(
            w.alloc_mmio("top", PhysAddr::new(0xFFFF_F000), 0x1000),
            Ok(VirtAddr::new(0xFFEF_F000))
        );
        w.grow_heap(0x3000).unwrap();
        w.shrink_heap(0x2000).unwrap();
        assert_eq!(w.heap().len(), 0x1000);
        assert_eq!(w.shrink_heap(0x2000), Err(WindowError::NotLast));
    }
}
