//! Typed addresses.
//!
//! A raw `u32` address crosses no module boundary: physical addresses are [`PhysAddr`], virtual ones
//! [`VirtAddr`], and whole 4 KiB units are [`Frame`] (physical) and [`Page`] (virtual). Alignment is
//! checked once, when a `Frame` or `Page` is made from an address.

use core::fmt;

/// Size of a small page and of a physical frame.
pub const PAGE_SIZE: u32 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// Size of an ARMv7 short-descriptor section.
pub const SECTION_SIZE: u32 = 1 << 20;
/// log2 of [`SECTION_SIZE`].
pub const SECTION_SHIFT: u32 = 20;

/// The address was not aligned as the operation requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unaligned;

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u32);

        impl $name {
            /// Wraps a raw address.
            pub const fn new(addr: u32) -> Self {
                Self(addr)
            }

            /// The raw address.
            pub const fn as_u32(self) -> u32 {
                self.0
            }

            /// The raw address as a `usize` (for pointer arithmetic and indexing).
            pub const fn as_usize(self) -> usize {
                self.0 as usize
            }

            /// Whether the address is a multiple of `align` (a power of two).
            pub const fn is_aligned(self, align: u32) -> bool {
                debug_assert!(align.is_power_of_two());
                self.0 & (align - 1) == 0
            }

            /// Rounds down to a multiple of `align` (a power of two).
            pub const fn align_down(self, align: u32) -> Self {
                debug_assert!(align.is_power_of_two());
                Self(self.0 & !(align - 1))
            }

            /// Rounds up to a multiple of `align` (a power of two); `None` past 4 GiB.
            pub const fn align_up(self, align: u32) -> Option<Self> {
                debug_assert!(align.is_power_of_two());
                match self.0.checked_add(align - 1) {
                    Some(v) => Some(Self(v & !(align - 1))),
                    None => None,
                }
            }

            /// `self + offset`, or `None` past 4 GiB.
            pub const fn checked_add(self, offset: u32) -> Option<Self> {
                match self.0.checked_add(offset) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// `self - offset`, or `None` below 0.
            pub const fn checked_sub(self, offset: u32) -> Option<Self> {
                match self.0.checked_sub(offset) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// Offset of the address inside its 4 KiB page.
            pub const fn page_offset(self) -> u32 {
                self.0 & (PAGE_SIZE - 1)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "({:#010x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#010x}", self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address_type!(
    /// A physical (bus-side of the MMU) address.
    PhysAddr,
    "PhysAddr"
);
address_type!(
    /// A virtual address, as the CPU issues it.
    VirtAddr,
    "VirtAddr"
);

impl VirtAddr {
    /// Index of the 1 MiB L1 slot this address falls in (VA\[31:20\]).
    pub const fn l1_index(self) -> usize {
        (self.0 >> SECTION_SHIFT) as usize
    }

    /// Index inside an L2 table (VA\[19:12\]).
    pub const fn l2_index(self) -> usize {
        ((self.0 >> PAGE_SHIFT) & 0xff) as usize
    }
}

macro_rules! unit_type {
    ($(#[$doc:meta])* $name:ident, $addr:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        #[repr(transparent)]
        pub struct $name(u32);

        impl $name {
            /// The unit with this number (address / 4 KiB).
            pub const fn from_number(number: u32) -> Self {
                debug_assert!(number < (1 << (32 - PAGE_SHIFT)));
                Self(number)
            }

            /// The unit that starts at `addr`, which must be 4 KiB aligned.
            pub const fn from_start(addr: $addr) -> Result<Self, Unaligned> {
                if addr.is_aligned(PAGE_SIZE) {
                    Ok(Self(addr.as_u32() >> PAGE_SHIFT))
                } else {
                    Err(Unaligned)
                }
            }

            /// The unit that contains `addr`.
            pub const fn containing(addr: $addr) -> Self {
                Self(addr.as_u32() >> PAGE_SHIFT)
            }

            /// Its number (address / 4 KiB).
            pub const fn number(self) -> u32 {
                self.0
            }

            /// Its first byte.
            pub const fn start(self) -> $addr {
                $addr::new(self.0 << PAGE_SHIFT)
            }

            /// The unit `n` units further, or `None` past 4 GiB.
            pub const fn checked_add(self, n: u32) -> Option<Self> {
                match self.0.checked_add(n) {
                    Some(v) if v < (1 << (32 - PAGE_SHIFT)) => Some(Self(v)),
                    _ => None,
                }
            }
        }
    };
}

unit_type!(
    /// A 4 KiB physical frame.
    Frame,
    PhysAddr
);
unit_type!(
    /// A 4 KiB virtual page.
    Page,
    VirtAddr
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_is_checked_once_at_construction() {
        assert_eq!(Frame::from_start(PhysAddr::new(0x1001)), Err(Unaligned));
        let f = Frame::from_start(PhysAddr::new(0x3000)).unwrap();
        assert_eq!(f.number(), 3);
        assert_eq!(f.start(), PhysAddr::new(0x3000));
        assert_eq!(Frame::containing(PhysAddr::new(0x3fff)), f);
    }

    #[test]
    fn rounding_saturates_to_none_past_4_gib() {
        assert_eq!(VirtAddr::new(0xffff_f001).align_up(PAGE_SIZE), None);
        assert_eq!(
            VirtAddr::new(0x1234).align_up(PAGE_SIZE),
            Some(VirtAddr::new(0x2000))
        );
        assert_eq!(
            VirtAddr::new(0x1234).align_down(PAGE_SIZE),
            VirtAddr::new(0x1000)
        );
        assert_eq!(Page::from_number(0xf_ffff).checked_add(1), None);
    }

    #[test]
    fn table_indices_follow_the_short_descriptor_split() {
        let va = VirtAddr::new(0xC012_3456);
        assert_eq!(va.l1_index(), 0xC01);
        assert_eq!(va.l2_index(), 0x23);
        assert_eq!(va.page_offset(), 0x456);
    }
}
