//! The contract between whoever owns physical frames (the PMM) and whoever needs them (address
//! spaces, the heap, DMA buffers).

use super::addr::{Frame, PhysAddr};
use core::fmt;

/// Why the physical memory manager refused a request. A refused call changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmmError {
    /// An address that must be 4 KiB aligned was not.
    Unaligned,
    /// The frame or range lies (partly) outside the managed memory.
    OutOfRange,
    /// Freeing a frame that is already free.
    DoubleFree,
    /// Freeing a frame that is reserved (firmware, tables, kernel image, bitmap).
    Reserved,
    /// A count of zero frames.
    ZeroCount,
    /// An alignment that is not a power of two.
    BadAlignment,
    /// Not enough free frames (or no free run that fits the constraints).
    OutOfMemory,
    /// The storage handed over for the bitmap is too small for the memory it must describe.
    BitmapTooSmall,
    /// Reserving a range that holds frames currently allocated to someone.
    InUse,
    /// The fixed-capacity table of reserved ranges is full (the range touches none of them).
    TooManyReserved,
}

impl fmt::Display for PmmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unaligned => "address not 4 KiB aligned",
            Self::OutOfRange => "outside managed physical memory",
            Self::DoubleFree => "frame already free (double free)",
            Self::Reserved => "frame is reserved",
            Self::ZeroCount => "zero frames requested",
            Self::BadAlignment => "alignment is not a power of two",
            Self::OutOfMemory => "out of physical memory",
            Self::BitmapTooSmall => "bitmap storage too small",
            Self::InUse => "frame is allocated",
            Self::TooManyReserved => "too many reserved ranges",
        })
    }
}

/// Something that hands out and takes back physical frames.
///
/// Implemented by the bitmap PMM; address spaces take their L1/L2 tables and page frames from it.
pub trait FrameAllocator {
    /// One free frame.
    fn alloc_frame(&mut self) -> Result<Frame, PmmError>;

    /// `count` contiguous free frames whose first frame number is a multiple of `align` frames
    /// (a power of two), all below `limit` when one is given.
    fn alloc_contiguous(
        &mut self,
        count: u32,
        align: u32,
        limit: Option<PhysAddr>,
    ) -> Result<Frame, PmmError>;

    /// Returns one frame.
    fn free_frame(&mut self, frame: Frame) -> Result<(), PmmError>;

    /// Returns `count` contiguous frames starting at `first`.
    fn free_contiguous(&mut self, first: Frame, count: u32) -> Result<(), PmmError>;

    /// A frame for a page that must read zero: one already zeroed if the allocator keeps some
    /// ready (the kernel's pool of frames zeroed while idle), with `true`; otherwise a fresh
    /// frame with `false`, which the caller zeroes.
    fn alloc_for_zero(&mut self) -> Result<(Frame, bool), PmmError> {
        Ok((self.alloc_frame()?, false))
    }
}
