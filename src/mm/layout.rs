//! The memory map: the one place that defines where things are.
//!
//! `link.ld` and the boot stub repeat a few of these numbers because they cannot import Rust; the
//! boot stub takes them as `const` operands of `global_asm!`, and exports them as absolute symbols
//! that `link.ld` `ASSERT`s against its own, so a disagreement fails the link.
//!
//! ```text
//!  Physical                                   Virtual (TTBCR.N = 1)
//!  0x0000_0000 +------------------------+     0x0000_0000 +-------------------------+
//!              | firmware vectors/ATAGs |                 | user address space      |
//!  0x0000_4000 | kernel L1 table 16 KiB |                 | (TTBR0, per ASID,       |
//!  0x0000_8000 | kernel image           |                 |  page 0 never mapped)   |
//!              | PMM bitmap + summary   |     0x8000_0000 +-------------------------+ TTBR1
//!              | frames managed by PMM  |                 | direct map of ARM RAM   |
//!  ARM mem end +------------------------+                 | VA = PA + 0x8000_0000   |
//!              | GPU memory (not ours)  |     0x8000_4000 |  kernel L1 table        |
//!  0x3F00_0000 | peripherals            |     0x8000_8000 |  kernel image (W^X)     |
//!  0x4000_0000 | ARM-local peripherals  |     ARM mem end +-------------------------+
//!              +------------------------+     0xC000_0000 | kernel heap, grows up   |
//!                                                         |          ...            |
//!                                                         | MMIO window, grows down |
//!                                             0xFFF0_0000 +-------------------------+
//!                                             0xFFFF_0000 | high vectors (SCTLR.V)  |
//!                                                         +-------------------------+
//! ```

use super::addr::{PhysAddr, VirtAddr};

/// Firmware area at the bottom of RAM (vectors, ATAGs); never handed out.
pub const FIRMWARE_AREA_END: PhysAddr = PhysAddr::new(0x4000);
/// Physical address of the kernel's 16 KiB L1 translation table (TTBR1, and TTBR0 during boot).
pub const KERNEL_L1_PHYS: PhysAddr = PhysAddr::new(0x4000);
/// Size of a full short-descriptor L1 table (4096 entries).
pub const L1_TABLE_SIZE: u32 = 16 * 1024;
/// Physical address where the firmware loads `kernel7.img` and where `_start` is.
pub const KERNEL_LOAD_PHYS: PhysAddr = PhysAddr::new(0x8000);

/// Start of the kernel half (TTBR1) and of the direct map: VA = PA + `KERNEL_OFFSET`.
pub const KERNEL_OFFSET: u32 = 0x8000_0000;
/// Start of the direct map of ARM RAM.
pub const DIRECT_MAP_BASE: VirtAddr = VirtAddr::new(KERNEL_OFFSET);
/// The direct map covers at most 1 GiB of RAM (0x8000_0000..0xC000_0000).
pub const DIRECT_MAP_MAX: u32 = 0x4000_0000;
/// Virtual address of the kernel image.
pub const KERNEL_VIRT: VirtAddr = VirtAddr::new(KERNEL_OFFSET + KERNEL_LOAD_PHYS.as_u32());

/// TTBCR.N: TTBR0 translates 0..2^(32-N) = 0..2 GiB, TTBR1 the rest.
pub const TTBCR_N: u32 = 1;
/// End (exclusive) of the user half.
pub const USER_END: VirtAddr = VirtAddr::new(KERNEL_OFFSET);
/// A TTBR0 table for N = 1 has 2048 entries (8 KiB).
pub const USER_L1_ENTRIES: usize = 2048;

/// Where user programs are linked (page 0 and the rest of the first 64 KiB stay unmapped).
pub const USER_IMAGE_BASE: VirtAddr = VirtAddr::new(0x0001_0000);
/// Anonymous and shared mappings (`mmap`, `shm`) go between these two addresses.
pub const USER_MMAP_BASE: VirtAddr = VirtAddr::new(0x2000_0000);
/// End of the `mmap` area (exclusive).
pub const USER_MMAP_END: VirtAddr = VirtAddr::new(0x4000_0000);
/// Initial user stack pointer: the stack grows down from here; the page above stays unmapped.
pub const USER_STACK_TOP: VirtAddr = VirtAddr::new(0x7FFF_0000);
/// Size of the user stack (demand-zero); one guard page lies below it.
pub const USER_STACK_SIZE: u32 = 256 * 1024;
/// Bottom of the shared heap/MMIO gigabyte; the heap grows up from here.
pub const HEAP_BASE: VirtAddr = VirtAddr::new(0xC000_0000);
/// Top (exclusive) of the MMIO window, which grows down from here.
pub const MMIO_TOP: VirtAddr = VirtAddr::new(0xFFF0_0000);
/// The high exception vector page (SCTLR.V = 1).
pub const HIGH_VECTORS: VirtAddr = VirtAddr::new(0xFFFF_0000);

/// Peripheral base as the ARM sees it on BCM2836 (bus address 0x7E00_0000).
pub const PERIPHERAL_BASE: PhysAddr = PhysAddr::new(0x3F00_0000);
/// ARM-local peripherals (core timers, core mailboxes, IRQ routing).
pub const LOCAL_PERIPHERAL_BASE: PhysAddr = PhysAddr::new(0x4000_0000);

/// Direct-map translation for RAM: `PA + KERNEL_OFFSET`, or `None` outside the 1 GiB it can cover.
pub const fn phys_to_virt(pa: PhysAddr) -> Option<VirtAddr> {
    if pa.as_u32() < DIRECT_MAP_MAX {
        Some(VirtAddr::new(pa.as_u32() + KERNEL_OFFSET))
    } else {
        None
    }
}

/// The end of the RAM the direct map covers, for `size` bytes of ARM memory reported by the
/// firmware: whole MiB only (rounded down, so no section reaches into the GPU's memory above
/// the ARM's), and at most [`DIRECT_MAP_MAX`].
pub const fn direct_map_end(size: u32) -> PhysAddr {
    let size = if size < DIRECT_MAP_MAX {
        size
    } else {
        DIRECT_MAP_MAX
    };
    PhysAddr::new(size & !(0x10_0000 - 1))
}

/// Inverse of [`phys_to_virt`]; `None` outside the direct map.
pub const fn virt_to_phys(va: VirtAddr) -> Option<PhysAddr> {
    let v = va.as_u32();
    if v >= KERNEL_OFFSET && v < KERNEL_OFFSET + DIRECT_MAP_MAX {
        Some(PhysAddr::new(v - KERNEL_OFFSET))
    } else {
        None
    }
}

// The contract, checked at compile time.
const _: () = {
    assert!(KERNEL_L1_PHYS.as_u32().is_multiple_of(L1_TABLE_SIZE));
    assert!(KERNEL_LOAD_PHYS.as_u32() >= KERNEL_L1_PHYS.as_u32() + L1_TABLE_SIZE);
    assert!(1u64 << (32 - TTBCR_N) == KERNEL_OFFSET as u64);
    assert!(KERNEL_OFFSET as u64 + DIRECT_MAP_MAX as u64 == HEAP_BASE.as_u32() as u64);
    assert!(HEAP_BASE.as_u32() < MMIO_TOP.as_u32());
    assert!(MMIO_TOP.as_u32() <= HIGH_VECTORS.as_u32());
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_map_is_pa_plus_two_gib_and_stops_at_one_gib() {
        assert_eq!(
            phys_to_virt(PhysAddr::new(0x4000)),
            Some(VirtAddr::new(0x8000_4000))
        );
        assert_eq!(
            phys_to_virt(PhysAddr::new(0x3F20_1000)),
            Some(VirtAddr::new(0xBF20_1000))
        );
        assert_eq!(phys_to_virt(PhysAddr::new(0x4000_0000)), None);
        assert_eq!(virt_to_phys(VirtAddr::new(0xC000_0000)), None);
        assert_eq!(
            virt_to_phys(VirtAddr::new(0x8000_8000)),
            Some(PhysAddr::new(0x8000))
        );
        assert_eq!(KERNEL_VIRT, VirtAddr::new(0x8000_8000));
    }

    #[test]
    fn the_direct_map_ends_on_a_whole_mib_below_the_gpu() {
        assert_eq!(direct_map_end(960 << 20), PhysAddr::new(960 << 20));
        // A split that is not a whole MiB: the partial MiB stays out (it shares a section with
        // GPU memory).
        assert_eq!(
            direct_map_end((944 << 20) + 0x8_0000),
            PhysAddr::new(944 << 20)
        );
        assert_eq!(direct_map_end(0xFFFF_F000), PhysAddr::new(DIRECT_MAP_MAX));
        assert_eq!(direct_map_end(0x000F_F000), PhysAddr::new(0));
    }
}
