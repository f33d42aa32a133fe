//! Block devices, independent of the board: the trait a storage driver implements, a RAM disk
//! for host tests, partitions that offset block numbers, MBR parsing ([`mbr`]) and the SD
//! protocol's arithmetic ([`sd`]).
//!
//! Block numbers are typed ([`BlockIdx`], [`BlockCount`], shared with `embedded-sdmmc`); a block
//! is 512 bytes.

pub mod mbr;
pub mod sd;

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

pub use embedded_sdmmc::{Block, BlockCount, BlockIdx};

/// Bytes in a block.
pub const BLOCK_SIZE: usize = Block::LEN;

/// Why a block transfer or a device set-up failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    /// No card answered (or none is attached).
    NoCard,
    /// The device is not set up (no card found at boot, or not initialised yet).
    NotReady,
    /// A command got no answer, or a transfer did not finish, in time.
    Timeout { what: &'static str, cmd: u8 },
    /// The controller reported an error (CRC, end bit, index) for a command or its data.
    Command { cmd: u8, status: u32 },
    /// The card answered with something this driver does not support.
    Unsupported(&'static str),
    /// Blocks past the end of the device or partition.
    OutOfRange {
        start: u32,
        count: u32,
        capacity: u32,
    },
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCard => f.write_str("no card: nothing answered the identification commands"),
            Self::NotReady => f.write_str("the card is not set up (none was found at boot)"),
            Self::Timeout { what, cmd } => write!(f, "timeout: {what} (CMD{cmd})"),
            Self::Command { cmd, status } => write!(
                f,
                "CMD{cmd} failed: interrupt status {status:#010x} ({})",
                error_bits(*status)
            ),
            Self::Unsupported(what) => write!(f, "unsupported card: {what}"),
            Self::OutOfRange {
                start,
                count,
                capacity,
            } => write!(
                f,
                "blocks {start}..{} past the end ({capacity} blocks)",
                u64::from(*start) + u64::from(*count)
            ),
        }
    }
}

impl core::error::Error for BlockError {}

/// The SDHCI error-interrupt bits of `status` as words.
fn error_bits(status: u32) -> &'static str {
    if status & (1 << 17) != 0 {
        "command CRC error"
    } else if status & (1 << 21) != 0 {
        "data CRC error"
    } else if status & (1 << 16) != 0 {
        "command timeout"
    } else if status & (1 << 20) != 0 {
        "data timeout"
    } else if status & (1 << 18) != 0 {
        "command end bit error"
    } else if status & (1 << 19) != 0 {
        "command index error"
    } else if status & (1 << 22) != 0 {
        "data end bit error"
    } else if status & (1 << 24) != 0 {
        "auto CMD12 error"
    } else {
        "error"
    }
}

/// A device of 512-byte blocks. Methods take `&self`: an implementation locks what it needs.
pub trait BlockDevice {
    /// Reads `blocks.len()` blocks starting at `start`.
    fn read_blocks(&self, start: BlockIdx, blocks: &mut [Block]) -> Result<(), BlockError>;
    /// Writes `blocks.len()` blocks starting at `start`.
    fn write_blocks(&self, start: BlockIdx, blocks: &[Block]) -> Result<(), BlockError>;
    /// How many blocks the device holds.
    fn num_blocks(&self) -> BlockCount;
}

/// Checks that `count` blocks from `start` fit in `capacity`.
pub fn check_range(start: BlockIdx, count: usize, capacity: BlockCount) -> Result<(), BlockError> {
    let end = u64::from(start.0) + count as u64;
    if end > u64::from(capacity.0) {
        return Err(BlockError::OutOfRange {
            start: start.0,
            count: count as u32,
            capacity: capacity.0,
        });
    }
    Ok(())
}

/// A disk in RAM (host tests, and a stand-in where no card is wanted).
pub struct RamDisk {
    bytes: spin::Mutex<Vec<u8>>,
}

impl RamDisk {
    /// A zeroed disk of `blocks` blocks.
    pub fn new(blocks: u32) -> Self {
        Self::from_bytes(vec![0; blocks as usize * BLOCK_SIZE])
    }

    /// A disk holding `bytes` (rounded up to whole blocks with zeros).
    pub fn from_bytes(mut bytes: Vec<u8>) -> Self {
        bytes.resize(bytes.len().div_ceil(BLOCK_SIZE) * BLOCK_SIZE, 0);
        Self {
            bytes: spin::Mutex::new(bytes),
        }
    }
}

impl BlockDevice for RamDisk {
    fn read_blocks(&self, start: BlockIdx, blocks: &mut [Block]) -> Result<(), BlockError> {
        check_range(start, blocks.len(), self.num_blocks())?;
        let bytes = self.bytes.lock();
        for (i, b) in blocks.iter_mut().enumerate() {
            let at = (start.0 as usize + i) * BLOCK_SIZE;
            b.contents.copy_from_slice(&bytes[at..at + BLOCK_SIZE]);
        }
        Ok(())
    }

    fn write_blocks(&self, start: BlockIdx, blocks: &[Block]) -> Result<(), BlockError> {
        check_range(start, blocks.len(), self.num_blocks())?;
        let mut bytes = self.bytes.lock();
        for (i, b) in blocks.iter().enumerate() {
            let at = (start.0 as usize + i) * BLOCK_SIZE;
            bytes[at..at + BLOCK_SIZE].copy_from_slice(&b.contents);
        }
        Ok(())
    }

    fn num_blocks(&self) -> BlockCount {
        BlockCount((self.bytes.lock().len() / BLOCK_SIZE) as u32)
    }
}

/// A window of another device: block 0 here is block `start` there.
pub struct Partition<'a, D: BlockDevice + ?Sized> {
    dev: &'a D,
    start: BlockIdx,
    count: BlockCount,
}

impl<'a, D: BlockDevice + ?Sized> Partition<'a, D> {
    /// The blocks `start..start + count` of `dev`; fails if they do not fit in it.
    pub fn new(dev: &'a D, start: BlockIdx, count: BlockCount) -> Result<Self, BlockError> {
        check_range(start, count.0 as usize, dev.num_blocks())?;
        Ok(Self { dev, start, count })
    }

    /// Where the partition starts on its device.
    pub fn start(&self) -> BlockIdx {
        self.start
    }
}

impl<D: BlockDevice + ?Sized> BlockDevice for Partition<'_, D> {
    fn read_blocks(&self, start: BlockIdx, blocks: &mut [Block]) -> Result<(), BlockError> {
        check_range(start, blocks.len(), self.count)?;
        self.dev
            .read_blocks(BlockIdx(self.start.0 + start.0), blocks)
    }

    fn write_blocks(&self, start: BlockIdx, blocks: &[Block]) -> Result<(), BlockError> {
        check_range(start, blocks.len(), self.count)?;
        self.dev
            .write_blocks(BlockIdx(self.start.0 + start.0), blocks)
    }

    fn num_blocks(&self) -> BlockCount {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_of(byte: u8) -> Block {
        let mut b = Block::new();
        b.contents.fill(byte);
        b
    }

    #[test]
    fn ram_disk_reads_back_what_was_written() {
        let d = RamDisk::new(8);
        d.write_blocks(BlockIdx(3), &[block_of(7), block_of(9)])
            .unwrap();
        let mut out = [Block::new(), Block::new(), Block::new()];
        d.read_blocks(BlockIdx(2), &mut out).unwrap();
        assert_eq!(out[0].contents, [0; 512]);
        assert_eq!(out[1].contents, [7; 512]);
        assert_eq!(out[2].contents, [9; 512]);
    }

    #[test]
    fn ram_disk_refuses_blocks_past_its_end() {
        let d = RamDisk::new(4);
        let mut out = [Block::new(), Block::new()];
        assert_eq!(
            d.read_blocks(BlockIdx(3), &mut out),
            Err(BlockError::OutOfRange {
                start: 3,
                count: 2,
                capacity: 4
            })
        );
    }

    #[test]
    fn partition_offsets_block_numbers_and_keeps_to_its_bounds() {
        let d = RamDisk::new(16);
        let p = Partition::new(&d, BlockIdx(10), BlockCount(4)).unwrap();
        p.write_blocks(BlockIdx(1), &[block_of(5)]).unwrap();
        let mut out = [Block::new()];
        d.read_blocks(BlockIdx(11), &mut out).unwrap();
        assert_eq!(out[0].contents, [5; 512]);
        assert!(p.write_blocks(BlockIdx(4), &[block_of(1)]).is_err());
        assert!(Partition::new(&d, BlockIdx(14), BlockCount(4)).is_err());
    }
}
