//! The kernel's [`PhysMem`]: RAM reached through the direct map at `PA + 0x8000_0000`, and the
//! two whole-page routines the fault paths pay for (zeroing a fresh frame, copying one on write).
//!
//! `mm` reaches physical memory only through the [`PhysMem`] trait; this is the kernel's
//! implementation (the host tests use `mm::phys::HostRam`).

use crate::mm::addr::{Frame, PhysAddr, PAGE_SIZE};
use crate::mm::layout;
use crate::mm::phys::PhysMem;

core::arch::global_asm!(
    r#"
    .text
    .arm
    // page_zero(r0 = 4 KiB-aligned page): eight zero registers stored with STM, four stores
    // (128 bytes) per iteration, 32 iterations: 205 instructions for the page (a word loop
    // takes about 1,030).
    .globl page_zero
page_zero:
    push    {{r4-r9}}
    mov     r2, #0
    mov     r3, #0
    mov     r4, #0
    mov     r5, #0
    mov     r6, #0
    mov     r7, #0
    mov     r8, #0
    mov     r9, #0
    mov     r1, #{iterations}
1:  stmia   r0!, {{r2-r9}}
    stmia   r0!, {{r2-r9}}
    stmia   r0!, {{r2-r9}}
    stmia   r0!, {{r2-r9}}
    subs    r1, r1, #1
    bne     1b
    pop     {{r4-r9}}
    bx      lr

    // page_copy(r0 = destination page, r1 = source page), both 4 KiB aligned and distinct:
    // 32 bytes per LDM/STM pair, two pairs per iteration.
    .globl page_copy
page_copy:
    push    {{r4-r10}}
    mov     r2, #{copy_iterations}
2:  ldmia   r1!, {{r3-r10}}
    stmia   r0!, {{r3-r10}}
    ldmia   r1!, {{r3-r10}}
    stmia   r0!, {{r3-r10}}
    subs    r2, r2, #1
    bne     2b
    pop     {{r4-r10}}
    bx      lr
"#,
    iterations = const PAGE_SIZE / 128,
    copy_iterations = const PAGE_SIZE / 64,
);

extern "C" {
    /// Zeroes the 4 KiB at `page`.
    fn page_zero(page: *mut u8);
    /// Copies the 4 KiB at `src` to `dst`.
    fn page_copy(dst: *mut u8, src: *const u8);
}

/// Zeroes the 4 KiB page at `page` with store-multiple instructions.
///
/// # Safety
/// `page` must be 4 KiB aligned (checked) and the caller must own the 4 KiB there.
pub unsafe fn zero_page(page: *mut u8) {
    assert!(
        (page as usize).is_multiple_of(PAGE_SIZE as usize),
        "unaligned page"
    );
    // SAFETY: forwarded: an aligned page the caller owns; `page_zero` writes exactly it and
    // follows the AAPCS (callee-saved registers restored).
    unsafe { page_zero(page) }
}

/// Copies the 4 KiB page at `src` to `dst` with load/store-multiple instructions.
///
/// # Safety
/// Both must be 4 KiB aligned (checked) and distinct; the caller owns `dst` and may read `src`.
pub unsafe fn copy_page(dst: *mut u8, src: *const u8) {
    assert!(
        (dst as usize | src as usize).is_multiple_of(PAGE_SIZE as usize)
            && !core::ptr::eq(dst, src),
        "unaligned or identical pages"
    );
    // SAFETY: forwarded, as for `zero_page`.
    unsafe { page_copy(dst, src) }
}

/// The kernel's [`PhysMem`]: RAM reached through the direct map at `PA + 0x8000_0000`.
///
/// Plain (volatile) loads and stores; ordering against the table walker is the business of the
/// [`Tlb`](crate::mm::tlb::Tlb) implementation (DSB after descriptor writes).
#[derive(Debug)]
pub struct DirectMap {
    _private: (),
}

impl DirectMap {
    /// # Safety
    ///
    /// The direct map must be live (MMU on, `0x8000_0000..` mapping RAM read/write for the
    /// kernel), and every address later handed to the returned value must be RAM covered by it
    /// that the caller owns (tables and frames of the address spaces).
    pub const unsafe fn new() -> Self {
        Self { _private: () }
    }

    #[inline]
    fn ptr<T>(pa: PhysAddr) -> *mut T {
        match layout::phys_to_virt(pa) {
            Some(va) => va.as_usize() as *mut T,
            None => panic!("physical address outside the direct map"),
        }
    }
}

impl PhysMem for DirectMap {
    #[inline]
    fn read_u32(&self, pa: PhysAddr) -> u32 {
        // SAFETY: `DirectMap::new`'s contract: `pa` is direct-mapped RAM owned by the caller, and
        // aligned as the trait requires.
        unsafe { core::ptr::read_volatile(Self::ptr::<u32>(pa)) }
    }

    #[inline]
    fn write_u32(&mut self, pa: PhysAddr, value: u32) {
        // SAFETY: as in `read_u32`.
        unsafe { core::ptr::write_volatile(Self::ptr::<u32>(pa), value) }
    }

    #[inline]
    fn read_u16(&self, pa: PhysAddr) -> u16 {
        // SAFETY: as in `read_u32`.
        unsafe { core::ptr::read_volatile(Self::ptr::<u16>(pa)) }
    }

    #[inline]
    fn write_u16(&mut self, pa: PhysAddr, value: u16) {
        // SAFETY: as in `read_u32`.
        unsafe { core::ptr::write_volatile(Self::ptr::<u16>(pa), value) }
    }

    fn zero_frame(&mut self, frame: Frame) {
        // SAFETY: `DirectMap::new`'s contract: the frame is direct-mapped RAM the caller owns,
        // 4 KiB aligned as `page_zero` requires.
        unsafe { zero_page(Self::ptr::<u8>(frame.start())) }
    }

    fn copy_frame(&mut self, dst: Frame, src: Frame) {
        // SAFETY: as above, for two distinct whole frames (so they do not overlap).
        unsafe { copy_page(Self::ptr::<u8>(dst.start()), Self::ptr::<u8>(src.start())) }
    }

    fn write_bytes(&mut self, pa: PhysAddr, data: &[u8]) {
        // SAFETY: `DirectMap::new`'s contract: `[pa, pa + len)` is direct-mapped RAM the caller
        // owns (a frame's data, not a descriptor), which no Rust reference aliases.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), Self::ptr::<u8>(pa), data.len()) }
    }

    fn read_bytes(&self, pa: PhysAddr, buf: &mut [u8]) {
        // SAFETY: as in `write_bytes`.
        unsafe { core::ptr::copy_nonoverlapping(Self::ptr::<u8>(pa), buf.as_mut_ptr(), buf.len()) }
    }

    fn sync_instructions(&mut self, frame: Frame) {
        // The frame was written through its direct-map alias; the clean by VA of that alias
        // reaches the same physical lines (PIPT D-cache), and the I-cache is invalidated whole.
        if let Some(va) = layout::phys_to_virt(frame.start()) {
            crate::arch::arm::cache::sync_instructions(va, crate::mm::PAGE_SIZE);
        }
    }
}
