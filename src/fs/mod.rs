//! Files on the card: the FAT16/32 file system of the first MBR partition, through the
//! `embedded-sdmmc` crate (not a FAT of our own). [`FatDisk`] lends any [`BlockDevice`] of this
//! kernel to the crate; each call here opens the volume, walks the path and closes everything
//! again (no state is kept between calls, and no cache yet: every block comes from the device).

pub mod page_source;

use crate::block::{self, Block, BlockCount, BlockDevice, BlockError, BlockIdx};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use embedded_sdmmc::{Mode, ShortFileName, TimeSource, Timestamp, VolumeIdx, VolumeManager};

/// A kernel block device as `embedded-sdmmc` wants it, fenced to the MBR and the partition it
/// opens.
///
/// The fence is there because the crate (0.10) has been seen to write past the end of a full
/// FAT32 partition (`tests/fat_card.rs`, a full volume): on the card that is the next
/// partition, or the unpartitioned space, and must never be touched. Outside the MBR block and
/// the partition every access is refused with [`BlockError::OutOfRange`], which the crate
/// passes up as an error.
pub struct FatDisk<'a, D: BlockDevice + ?Sized> {
    dev: &'a D,
    /// The partition `[start, end)` the crate may use, besides block 0; `None` when block 0
    /// holds no partition table (the crate then finds no volume).
    fence: Option<(u32, u32)>,
}

impl<'a, D: BlockDevice + ?Sized> FatDisk<'a, D> {
    /// `dev`, fenced to the first partition of its MBR (the one `embedded-sdmmc` opens as
    /// volume 0). Reads block 0 to find it.
    pub fn new(dev: &'a D) -> Result<Self, BlockError> {
        let mut b = [Block::new()];
        dev.read_blocks(BlockIdx(0), &mut b)?;
        let fence = block::mbr::parse(&b[0])
            .ok()
            .and_then(|entries| entries.iter().find(|e| e.slot == 0).copied())
            .map(|e| (e.start.0, e.end().0));
        Ok(Self { dev, fence })
    }

    /// Whether `[start, start + count)` is block 0 or lies inside the partition.
    fn allowed(&self, start: BlockIdx, count: usize) -> Result<(), BlockError> {
        let end = u64::from(start.0) + count as u64;
        let inside = match self.fence {
            _ if start.0 == 0 && end == 1 => true,
            Some((lo, hi)) => start.0 >= lo && end <= u64::from(hi),
            None => false,
        };
        if inside {
            Ok(())
        } else {
            Err(BlockError::OutOfRange {
                start: start.0,
                count: count as u32,
                capacity: self.fence.map_or(1, |(_, hi)| hi),
            })
        }
    }
}

impl<D: BlockDevice + ?Sized> embedded_sdmmc::BlockDevice for FatDisk<'_, D> {
    type Error = BlockError;

    fn read(&self, blocks: &mut [Block], start: BlockIdx) -> Result<(), BlockError> {
        self.allowed(start, blocks.len())?;
        self.dev.read_blocks(start, blocks)
    }

    fn write(&self, blocks: &[Block], start: BlockIdx) -> Result<(), BlockError> {
        self.allowed(start, blocks.len())?;
        self.dev.write_blocks(start, blocks)
    }

    fn num_blocks(&self) -> Result<BlockCount, BlockError> {
        Ok(self.dev.num_blocks())
    }
}

/// No real-time clock yet: files written get this fixed time.
pub struct FixedClock;

impl TimeSource for FixedClock {
    fn get_timestamp(&self) -> Timestamp {
        Timestamp {
            year_since_1970: 55,
            zero_indexed_month: 0,
            zero_indexed_day: 0,
            hours: 0,
            minutes: 0,
            seconds: 0,
        }
    }
}

/// Why a file operation failed.
#[derive(Debug)]
pub enum FsError {
    /// The device underneath failed.
    Block(BlockError),
    /// A path component does not exist.
    NotFound(String),
    /// A file was used as a directory.
    NotADirectory(String),
    /// A directory was used as a file.
    IsADirectory(String),
    /// What `embedded-sdmmc` reported otherwise (no FAT volume, bad name, ...).
    Fat(String),
    /// The file is larger than the caller's limit (its size in bytes).
    TooBig(u32),
    /// The volume has no free cluster left.
    Full,
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Block(e) => write!(f, "{e}"),
            Self::NotFound(p) => write!(f, "{p}: no such file or directory"),
            Self::NotADirectory(p) => write!(f, "{p}: not a directory"),
            Self::IsADirectory(p) => write!(f, "{p}: is a directory"),
            Self::Fat(e) => write!(f, "FAT: {e}"),
            Self::TooBig(n) => write!(f, "file too large ({n} bytes)"),
            Self::Full => f.write_str("no space left on the card"),
        }
    }
}

type FatError = embedded_sdmmc::Error<BlockError>;

fn fat_error(e: FatError, path: &str) -> FsError {
    match e {
        embedded_sdmmc::Error::DeviceError(b) => FsError::Block(b),
        embedded_sdmmc::Error::NotFound => FsError::NotFound(String::from(path)),
        embedded_sdmmc::Error::OpenedFileAsDir => FsError::NotADirectory(String::from(path)),
        embedded_sdmmc::Error::OpenedDirAsFile => FsError::IsADirectory(String::from(path)),
        embedded_sdmmc::Error::DiskFull => FsError::Full,
        other => FsError::Fat(alloc::format!("{other:?}")),
    }
}

/// One directory entry as `ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The 8.3 name in lower case (`hello`, `config.txt`).
    pub name: String,
    pub size: u32,
    pub is_dir: bool,
}

/// The components of an absolute or relative path (empty ones and `.` dropped).
fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

fn display_name(n: &ShortFileName) -> String {
    let mut s = alloc::format!("{n}");
    s.make_ascii_lowercase();
    s
}

type Manager<'a, D> = VolumeManager<FatDisk<'a, D>, FixedClock, 4, 4, 1>;

/// Runs `f` on the directory at `path` of the first partition's FAT volume.
fn with_dir<D: BlockDevice + ?Sized, R>(
    dev: &D,
    path: &str,
    f: impl FnOnce(
        &embedded_sdmmc::Directory<'_, FatDisk<'_, D>, FixedClock, 4, 4, 1>,
    ) -> Result<R, FsError>,
) -> Result<R, FsError> {
    let disk = FatDisk::new(dev).map_err(FsError::Block)?;
    let mgr: Manager<'_, D> = VolumeManager::new_with_limits(disk, FixedClock, 0);
    let volume = mgr
        .open_volume(VolumeIdx(0))
        .map_err(|e| fat_error(e, "volume 0"))?;
    let mut dir = volume.open_root_dir().map_err(|e| fat_error(e, "/"))?;
    for c in components(path) {
        dir.change_dir(c).map_err(|e| fat_error(e, path))?;
    }
    f(&dir)
}

/// The entries of the directory at `path` (`.` and `..` left out), in directory order.
pub fn list_dir<D: BlockDevice + ?Sized>(dev: &D, path: &str) -> Result<Vec<DirEntry>, FsError> {
    with_dir(dev, path, |dir| {
        let mut out = Vec::new();
        dir.iterate_dir(|e| {
            if e.name != ShortFileName::this_dir()
                && e.name != ShortFileName::parent_dir()
                && !e.attributes.is_volume()
            {
                out.push(DirEntry {
                    name: display_name(&e.name),
                    size: e.size,
                    is_dir: e.attributes.is_directory(),
                });
            }
            core::ops::ControlFlow::<()>::Continue(())
        })
        .map_err(|e| fat_error(e, path))?;
        Ok(out)
    })
}

/// Splits `path` into its directory and its last component.
fn split_last(path: &str) -> Result<(&str, &str), FsError> {
    let trimmed = path.trim_end_matches('/');
    let (dir, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if name.is_empty() {
        return Err(FsError::IsADirectory(String::from(path)));
    }
    Ok((dir, name))
}

/// The whole contents of the file at `path`.
pub fn read_file<D: BlockDevice + ?Sized>(dev: &D, path: &str) -> Result<Vec<u8>, FsError> {
    read_file_max(dev, path, usize::MAX)
}

/// The whole contents of the file at `path`, refused with [`FsError::TooBig`] (before
/// anything is allocated) when it is longer than `max` bytes.
pub fn read_file_max<D: BlockDevice + ?Sized>(
    dev: &D,
    path: &str,
    max: usize,
) -> Result<Vec<u8>, FsError> {
    read_start(dev, path, max, true).map(|(data, _)| data)
}

/// At most the first `max` bytes of the file at `path`, and the file's whole length: what a
/// reader that shows only the start of a file needs, without allocating the rest.
pub fn read_head<D: BlockDevice + ?Sized>(
    dev: &D,
    path: &str,
    max: usize,
) -> Result<(Vec<u8>, u32), FsError> {
    read_start(dev, path, max, false)
}

/// The first `max` bytes of the file at `path` (or `TooBig` when it is longer and
/// `whole_or_nothing`), and its length.
fn read_start<D: BlockDevice + ?Sized>(
    dev: &D,
    path: &str,
    max: usize,
    whole_or_nothing: bool,
) -> Result<(Vec<u8>, u32), FsError> {
    let (dir_path, name) = split_last(path)?;
    with_dir(dev, dir_path, |dir| {
        let file = dir
            .open_file_in_dir(name, Mode::ReadOnly)
            .map_err(|e| fat_error(e, path))?;
        let length = file.length();
        if whole_or_nothing && length as usize > max {
            return Err(FsError::TooBig(length));
        }
        let mut out = alloc::vec![0u8; (length as usize).min(max)];
        let mut at = 0;
        while at < out.len() {
            let n = file.read(&mut out[at..]).map_err(|e| fat_error(e, path))?;
            if n == 0 {
                break;
            }
            at += n;
        }
        out.truncate(at);
        Ok((out, length))
    })
}

/// Runs `f` on the file at `path`, opened in `mode`, and closes it (which writes its directory
/// entry when it changed).
fn with_file<D: BlockDevice + ?Sized, R>(
    dev: &D,
    path: &str,
    mode: Mode,
    f: impl FnOnce(
        &embedded_sdmmc::File<'_, FatDisk<'_, D>, FixedClock, 4, 4, 1>,
    ) -> Result<R, FatError>,
) -> Result<R, FsError> {
    let (dir_path, name) = split_last(path)?;
    with_dir(dev, dir_path, |dir| {
        let file = dir
            .open_file_in_dir(name, mode)
            .map_err(|e| fat_error(e, path))?;
        let r = f(&file).map_err(|e| fat_error(e, path))?;
        file.close().map_err(|e| fat_error(e, path))?;
        Ok(r)
    })
}

/// The length in bytes of the file at `path`.
pub fn file_len<D: BlockDevice + ?Sized>(dev: &D, path: &str) -> Result<u32, FsError> {
    with_file(dev, path, Mode::ReadOnly, |file| Ok(file.length()))
}

/// Reads up to `buf.len()` bytes of the file at `path` from byte `offset`; returns how many
/// (fewer at the end of the file, 0 past it).
pub fn read_at<D: BlockDevice + ?Sized>(
    dev: &D,
    path: &str,
    offset: u32,
    buf: &mut [u8],
) -> Result<usize, FsError> {
    with_file(dev, path, Mode::ReadOnly, |file| {
        if offset >= file.length() {
            return Ok(0);
        }
        file.seek_from_start(offset)?;
        let mut at = 0;
        while at < buf.len() {
            let n = file.read(&mut buf[at..])?;
            if n == 0 {
                break;
            }
            at += n;
        }
        Ok(at)
    })
}

/// Overwrites the bytes of the file at `path` from byte `offset` with `data`, which must lie
/// inside the file (`TooBig` otherwise: this never makes a file longer).
pub fn write_at<D: BlockDevice + ?Sized>(
    dev: &D,
    path: &str,
    offset: u32,
    data: &[u8],
) -> Result<(), FsError> {
    let mut past_end = None;
    with_file(dev, path, Mode::ReadWriteAppend, |file| {
        let end = u64::from(offset) + data.len() as u64;
        if end > u64::from(file.length()) {
            past_end = Some(file.length());
            return Ok(());
        }
        file.seek_from_start(offset)?;
        file.write(data)
    })?;
    match past_end {
        Some(len) => Err(FsError::TooBig(len)),
        None => Ok(()),
    }
}

/// Creates or replaces the file at `path` with `data`.
pub fn write_file<D: BlockDevice + ?Sized>(
    dev: &D,
    path: &str,
    data: &[u8],
) -> Result<(), FsError> {
    let (dir_path, name) = split_last(path)?;
    with_dir(dev, dir_path, |dir| {
        let file = dir
            .open_file_in_dir(name, Mode::ReadWriteCreateOrTruncate)
            .map_err(|e| fat_error(e, path))?;
        file.write(data).map_err(|e| fat_error(e, path))?;
        file.close().map_err(|e| fat_error(e, path))
    })
}

/// Removes the file at `path`.
pub fn remove_file<D: BlockDevice + ?Sized>(dev: &D, path: &str) -> Result<(), FsError> {
    let (dir_path, name) = split_last(path)?;
    with_dir(dev, dir_path, |dir| {
        dir.delete_entry_in_dir(name)
            .map_err(|e| fat_error(e, path))
    })
}

/// The first FAT32 partition of `dev`'s MBR.
pub fn fat32_partition<D: BlockDevice + ?Sized>(
    dev: &D,
) -> Result<block::mbr::PartitionEntry, FsError> {
    let mut b = [Block::new()];
    dev.read_blocks(BlockIdx(0), &mut b)
        .map_err(FsError::Block)?;
    match block::mbr::find_fat32(&b[0]) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(FsError::Fat(String::from("the MBR has no FAT32 partition"))),
        Err(e) => Err(FsError::Fat(alloc::format!("{e}"))),
    }
}
