//! The MBR partition table (block 0): four primary entries of 16 bytes at offset 446, the
//! signature 0x55 0xAA at 510. Extended partitions are not followed.

use super::{Block, BlockCount, BlockIdx};
use core::fmt;

/// One used primary partition entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionEntry {
    /// Slot 0..=3 in the table.
    pub slot: u8,
    /// The boot flag (0x80).
    pub bootable: bool,
    /// The partition type byte (0x0B/0x0C: FAT32, 0x0E/0x06/0x04: FAT16).
    pub kind: u8,
    pub start: BlockIdx,
    pub count: BlockCount,
}

impl PartitionEntry {
    /// FAT32 with CHS (0x0B) or LBA (0x0C) addressing.
    pub fn is_fat32(&self) -> bool {
        matches!(self.kind, 0x0B | 0x0C)
    }

    /// The first block after the partition.
    pub fn end(&self) -> BlockIdx {
        BlockIdx(self.start.0 + self.count.0)
    }
}

/// Why block 0 is not a usable MBR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MbrError {
    /// No 0x55 0xAA at offset 510.
    NoSignature,
    /// An entry's status byte is neither 0x00 nor 0x80 (likely a boot sector, not an MBR).
    BadStatus { slot: u8, status: u8 },
    /// An entry reaches past block 2^32.
    Overflow { slot: u8 },
    /// Two entries share blocks.
    Overlap { first: u8, second: u8 },
}

impl fmt::Display for MbrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSignature => f.write_str("block 0 has no MBR signature (55 AA)"),
            Self::BadStatus { slot, status } => {
                write!(
                    f,
                    "partition {slot}: status byte {status:#04x} is not 0x00/0x80"
                )
            }
            Self::Overflow { slot } => write!(f, "partition {slot} reaches past 2^32 blocks"),
            Self::Overlap { first, second } => {
                write!(f, "partitions {first} and {second} overlap")
            }
        }
    }
}

const TABLE: usize = 446;
const ENTRY: usize = 16;

/// The used entries of the table in block 0 (type byte not 0, size not 0), in slot order.
pub fn parse(block: &Block) -> Result<heapless_entries::Entries, MbrError> {
    let b = &block.contents;
    if b[510] != 0x55 || b[511] != 0xAA {
        return Err(MbrError::NoSignature);
    }
    let mut out = heapless_entries::Entries::default();
    for slot in 0..4u8 {
        let e = &b[TABLE + slot as usize * ENTRY..][..ENTRY];
        let status = e[0];
        if status != 0 && status != 0x80 {
            return Err(MbrError::BadStatus { slot, status });
        }
        let kind = e[4];
        let start = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
        let count = u32::from_le_bytes([e[12], e[13], e[14], e[15]]);
        if kind == 0 || count == 0 {
            continue;
        }
        if start.checked_add(count).is_none() {
            return Err(MbrError::Overflow { slot });
        }
        let entry = PartitionEntry {
            slot,
            bootable: status == 0x80,
            kind,
            start: BlockIdx(start),
            count: BlockCount(count),
        };
        for other in out.iter() {
            if entry.start < other.end() && other.start < entry.end() {
                return Err(MbrError::Overlap {
                    first: other.slot,
                    second: slot,
                });
            }
        }
        out.push(entry);
    }
    Ok(out)
}

/// The first FAT32 partition of the table in block 0.
pub fn find_fat32(block: &Block) -> Result<Option<PartitionEntry>, MbrError> {
    Ok(parse(block)?.iter().copied().find(PartitionEntry::is_fat32))
}

/// Writes entry `slot` of an MBR into `block` (and the signature): for tests and tools.
pub fn write_entry(block: &mut Block, slot: u8, bootable: bool, kind: u8, start: u32, count: u32) {
    let e = &mut block.contents[TABLE + slot as usize * ENTRY..][..ENTRY];
    e.fill(0);
    e[0] = if bootable { 0x80 } else { 0 };
    e[4] = kind;
    e[8..12].copy_from_slice(&start.to_le_bytes());
    e[12..16].copy_from_slice(&count.to_le_bytes());
    block.contents[510] = 0x55;
    block.contents[511] = 0xAA;
}

/// A fixed-capacity list of up to four entries (no heap needed).
pub mod heapless_entries {
    use super::PartitionEntry;

    /// Up to four partition entries.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Entries {
        items: [Option<PartitionEntry>; 4],
        len: usize,
    }

    impl Entries {
        pub(super) fn push(&mut self, e: PartitionEntry) {
            self.items[self.len] = Some(e);
            self.len += 1;
        }

        /// The entries, in slot order.
        pub fn iter(&self) -> impl Iterator<Item = &PartitionEntry> {
            self.items[..self.len].iter().flatten()
        }

        /// How many entries are used.
        pub fn len(&self) -> usize {
            self.len
        }

        /// No entry is used.
        pub fn is_empty(&self) -> bool {
            self.len == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_bootable_fat32_lba_partition_is_found() {
        let mut b = Block::new();
        write_entry(&mut b, 0, true, 0x0C, 2048, 120_832);
        let e = find_fat32(&b).unwrap().unwrap();
        assert_eq!(e.slot, 0);
        assert!(e.bootable);
        assert_eq!(e.start, BlockIdx(2048));
        assert_eq!(e.count, BlockCount(120_832));
        assert_eq!(e.end(), BlockIdx(2048 + 120_832));
    }

    #[test]
    fn empty_slots_are_skipped_and_the_first_fat32_wins() {
        let mut b = Block::new();
        write_entry(&mut b, 1, false, 0x83, 100, 50);
        write_entry(&mut b, 2, false, 0x0B, 200, 50);
        write_entry(&mut b, 3, false, 0x0C, 300, 50);
        let all = parse(&b).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(find_fat32(&b).unwrap().unwrap().slot, 2);
    }

    #[test]
    fn a_table_without_fat32_has_none() {
        let mut b = Block::new();
        write_entry(&mut b, 0, false, 0x83, 100, 50);
        assert_eq!(find_fat32(&b).unwrap(), None);
    }

    #[test]
    fn a_block_without_the_signature_is_refused() {
        assert_eq!(parse(&Block::new()), Err(MbrError::NoSignature));
    }

    #[test]
    fn a_bad_status_byte_is_refused() {
        let mut b = Block::new();
        write_entry(&mut b, 0, false, 0x0C, 2048, 10);
        b.contents[446] = 0x12;
        assert_eq!(
            parse(&b),
            Err(MbrError::BadStatus {
                slot: 0,
                status: 0x12
            })
        );
    }

    #[test]
    fn overlapping_or_overflowing_entries_are_refused() {
        let mut b = Block::new();
        write_entry(&mut b, 0, false, 0x0C, 100, 100);
        write_entry(&mut b, 1, false, 0x83, 150, 10);
        assert_eq!(
            parse(&b),
            Err(MbrError::Overlap {
                first: 0,
                second: 1
            })
        );
        let mut b = Block::new();
        write_entry(&mut b, 0, false, 0x0C, u32::MAX - 5, 10);
        assert_eq!(parse(&b), Err(MbrError::Overflow { slot: 0 }));
    }
}
