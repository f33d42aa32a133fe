//! A file on a FAT volume as the page cache's [`PageSource`]: pages are read and written through
//! `embedded-sdmmc` by path (the kernel is the only writer of its volume, so a path keeps naming
//! the same file while the page cache holds it).

use super::{read_at, write_at, FsError};
use crate::block::BlockDevice;
use crate::mm::file_object::{IoError, PageSource};
use crate::mm::PAGE_SIZE;
use alloc::string::String;

/// The file at `path` on the FAT volume of `dev`.
pub struct FatPageSource<D: BlockDevice + Sync + 'static> {
    dev: &'static D,
    path: String,
}

impl<D: BlockDevice + Sync + 'static> FatPageSource<D> {
    /// The file at `path` (which the caller found) on `dev`.
    pub fn new(dev: &'static D, path: String) -> Self {
        Self { dev, path }
    }
}

fn io_error(e: FsError) -> IoError {
    match e {
        FsError::Full => IoError::NoSpace,
        _ => IoError::Failed,
    }
}

impl<D: BlockDevice + Sync + 'static> PageSource for FatPageSource<D> {
    fn read_page(&self, index: u32, buf: &mut [u8]) -> Result<(), IoError> {
        let offset = index.checked_mul(PAGE_SIZE).ok_or(IoError::Failed)?;
        read_at(self.dev, &self.path, offset, buf)
            .map(|_| ())
            .map_err(io_error)
    }

    fn write_page(&self, index: u32, data: &[u8]) -> Result<(), IoError> {
        let offset = index.checked_mul(PAGE_SIZE).ok_or(IoError::Failed)?;
        write_at(self.dev, &self.path, offset, data).map_err(io_error)
    }
}
