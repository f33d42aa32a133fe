//! ELF32 parsing for the program loader: little-endian, `EM_ARM`, `ET_EXEC`, statically linked.
//!
//! [`Elf::parse`] validates everything the loader relies on and hands back the entry point and
//! the loadable segments, each with its permission and its file bytes. It works on any byte slice
//! (no alignment needed: every field is read with `from_le_bytes`), allocates nothing, and never
//! panics on hostile input; a program is either accepted whole or refused with an [`ElfError`].
//!
//! What an accepted image guarantees:
//!
//! - every `PT_LOAD` segment with a non-zero size lies inside the user half,
//!   `[USER_MIN, USER_END)`, without overflow, and its file bytes lie inside the image;
//!   `filesz <= memsz` (the rest is zero-filled: `.bss`);
//! - no segment is both writable and executable;
//! - no two segments overlap in memory. They may share a page (GNU ld puts the ELF headers in the
//!   first page of the text segment and starts the next segment in the page where the previous one
//!   ends, file offsets need not be page aligned): such a page gets the union of the permissions,
//!   and a page that a writable and an executable segment would share is refused. [`Elf::runs`]
//!   gives the page ranges to map with their permission; the loader copies each segment's file
//!   bytes to `vaddr`;
//! - the entry point lies inside an executable segment; bit 0 of `e_entry` set means Thumb state
//!   (as GCC's default for ARMv7-A emits): [`Elf::thumb`] says so and [`Elf::entry`] has the bit
//!   cleared; an ARM-state entry is word aligned;
//! - there is no interpreter and no dynamic section.
//!
//! The file is self-contained (only `core`), so the kernel's build script can include it to check
//! the embedded user programs when the kernel is built.

use core::fmt;

/// Page size the segments are mapped with.
pub const PAGE_SIZE: u32 = 4096;
/// Lowest address a segment may use: nothing is mapped in the first 64 KiB, so null pointers
/// (and small offsets from them) fault.
pub const USER_MIN: u32 = 0x1_0000;
/// End (exclusive) of the user half (TTBR0, `TTBCR.N = 1`).
pub const USER_END: u32 = 0x8000_0000;
/// Most loadable segments an image may have (text, rodata and data need three).
pub const MAX_SEGMENTS: usize = 8;
/// Most page runs the segments can make: each segment adds at most two page boundaries.
pub const MAX_RUNS: usize = 2 * MAX_SEGMENTS;

/// Size of the ELF header of a 32-bit file.
pub const EHDR_SIZE: usize = 52;
const PHDR_SIZE: usize = 32;

const ELFCLASS32: u8 = 1;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_ARM: u16 = 40;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;

const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

/// Why an image was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than an ELF header.
    TooShort,
    /// No `\x7fELF` at the start.
    BadMagic,
    /// Not 32-bit, little-endian, version 1, `EM_ARM` (or a header size other than 52).
    NotArm32Le,
    /// Not `ET_EXEC`, or it asks for an interpreter or dynamic linking.
    NotExecutable,
    /// The program header table is missing, has the wrong entry size or lies outside the file.
    BadPhdrTable,
    /// A `PT_LOAD` has more file bytes than memory bytes (`p_filesz > p_memsz`).
    FileSizeOverMemSize,
    /// A `PT_LOAD` has no permission at all (neither read, write nor execute).
    NoPermission,
    /// A segment's file bytes lie outside the image.
    SegmentOutsideFile,
    /// A segment lies outside `[USER_MIN, USER_END)` or wraps around.
    SegmentOutsideUser,
    /// A segment is both writable and executable.
    WriteAndExecute,
    /// Two segments overlap in memory.
    Overlap,
    /// A writable and an executable segment share a page.
    SharedPageWriteExecute,
    /// An ARM-state entry point (bit 0 clear) that is not word aligned.
    EntryMisaligned,
    /// The entry point is not inside an executable segment.
    EntryNotExecutable,
    /// More than [`MAX_SEGMENTS`] loadable segments.
    TooManySegments,
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ElfError::TooShort => "image shorter than an ELF header",
            ElfError::BadMagic => "not an ELF image (bad magic)",
            ElfError::NotArm32Le => "not a 32-bit little-endian ARM ELF",
            ElfError::NotExecutable => "not a statically linked executable (ET_EXEC)",
            ElfError::BadPhdrTable => {
                "program header table missing, of the wrong entry size or outside the file"
            }
            ElfError::FileSizeOverMemSize => "segment with more file bytes than memory bytes",
            ElfError::NoPermission => "segment with no permission (neither R, W nor X)",
            ElfError::SegmentOutsideFile => "segment data outside the file",
            ElfError::SegmentOutsideUser => "segment outside the user address range",
            ElfError::WriteAndExecute => "segment both writable and executable",
            ElfError::Overlap => "segments overlap in memory",
            ElfError::SharedPageWriteExecute => "a writable and an executable segment share a page",
            ElfError::EntryMisaligned => "ARM-state entry point not word aligned",
            ElfError::EntryNotExecutable => "entry point not in an executable segment",
            ElfError::TooManySegments => "too many loadable segments",
        })
    }
}

/// The access a segment is mapped with. Write implies read and execute implies read: the
/// short-descriptor format has neither write-only nor execute-only pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegPerm {
    /// Read-only, never executable (rodata).
    R,
    /// Read-write, never executable (data, bss).
    RW,
    /// Read and execute, never writable (text).
    RX,
}

impl SegPerm {
    /// Whether the segment may be written.
    pub const fn writable(self) -> bool {
        matches!(self, SegPerm::RW)
    }

    /// Whether code may run from the segment.
    pub const fn executable(self) -> bool {
        matches!(self, SegPerm::RX)
    }
}

/// One loadable segment: `memsz` bytes at `vaddr`, the first `data.len()` of them from the file,
/// the rest zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// First byte of the segment (not necessarily page aligned).
    pub vaddr: u32,
    /// Size in memory, `> 0` and `>= data.len()`.
    pub memsz: u32,
    /// The bytes from the file (`p_filesz` of them), to be copied to `vaddr`; empty when the
    /// image was parsed from its headers only ([`Elf::parse_headers`]) and they lie past them.
    pub data: &'a [u8],
    /// Where the bytes start in the file (`p_offset`).
    pub offset: u32,
    /// How many bytes come from the file (`p_filesz`).
    pub filesz: u32,
    /// How the segment's pages are mapped.
    pub perm: SegPerm,
}

impl Segment<'_> {
    const EMPTY: Segment<'static> = Segment {
        vaddr: 0,
        memsz: 0,
        data: &[],
        offset: 0,
        filesz: 0,
        perm: SegPerm::R,
    };

    /// End (exclusive) of the segment's bytes. Cannot overflow: the parser checked it is at most
    /// [`USER_END`].
    pub const fn end(&self) -> u32 {
        self.vaddr + self.memsz
    }

    /// First byte of the first page the segment touches.
    pub const fn page_start(&self) -> u32 {
        self.vaddr & !(PAGE_SIZE - 1)
    }

    /// End (exclusive) of the last page the segment touches; at most [`USER_END`].
    pub const fn page_end(&self) -> u32 {
        // USER_END is page aligned and end() <= USER_END, so rounding up cannot overflow.
        (self.end() + PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
    }

    /// Number of pages to map.
    pub const fn pages(&self) -> u32 {
        (self.page_end() - self.page_start()) / PAGE_SIZE
    }

    /// The file page that page `p` (one of the segment's) can map directly, if it holds only
    /// file bytes of this segment (see [`Elf::page_plan`]).
    fn file_page_at(&self, p: u32) -> Option<u32> {
        if self.filesz == 0 || self.offset % PAGE_SIZE != self.vaddr % PAGE_SIZE {
            return None;
        }
        let file_end = self.vaddr + self.filesz;
        let whole = p + PAGE_SIZE <= file_end;
        let last_without_bss = p < file_end && self.filesz == self.memsz;
        if !(whole || last_without_bss) {
            return None;
        }
        // Congruent: offset - vaddr % PAGE_SIZE is the file offset of the first page.
        let first = (self.offset - self.vaddr % PAGE_SIZE) / PAGE_SIZE;
        Some(first + (p - self.page_start()) / PAGE_SIZE)
    }

    /// Whether `addr` lies in `[vaddr, vaddr + memsz)`.
    pub const fn contains(&self, addr: u32) -> bool {
        addr >= self.vaddr && addr < self.end()
    }
}

/// Pages `[start, end)` mapped with one permission: the union of the permissions of the
/// segments that touch them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRun {
    /// First byte, page aligned.
    pub start: u32,
    /// End (exclusive), page aligned, at most [`USER_END`].
    pub end: u32,
    /// How the pages are mapped.
    pub perm: SegPerm,
}

impl PageRun {
    const EMPTY: PageRun = PageRun {
        start: 0,
        end: 0,
        perm: SegPerm::R,
    };
}

/// How many bytes from the start of the file hold the ELF header and the program headers,
/// from the ELF header `ehdr` (`None` if it is too short or the table's end overflows).
/// Nothing else is checked: [`Elf::parse_headers`] does that.
pub fn headers_len(ehdr: &[u8]) -> Option<usize> {
    if ehdr.len() < EHDR_SIZE {
        return None;
    }
    let phoff = u32_at(ehdr, 28) as usize;
    let phnum = usize::from(u16_at(ehdr, 44));
    phnum
        .checked_mul(PHDR_SIZE)
        .and_then(|n| n.checked_add(phoff))
        .map(|end| end.max(EHDR_SIZE))
}

/// Pages `[start, end)` of an image mapped one way: see [`Elf::page_plan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanRun {
    /// First byte, page aligned.
    pub start: u32,
    /// End (exclusive), page aligned.
    pub end: u32,
    /// How the pages are mapped.
    pub perm: SegPerm,
    /// The file page the first page maps (the others follow it), or `None` for private pages.
    pub file_page: Option<u32>,
}

impl PlanRun {
    const EMPTY: PlanRun = PlanRun {
        start: 0,
        end: 0,
        perm: SegPerm::R,
        file_page: None,
    };
}

/// Most runs of a page plan: a piece starts only at a run's start, at a segment's first or
/// last page, or at the page where its file bytes end or the one after, so a valid image has
/// far fewer.
pub const MAX_PLAN: usize = 6 * MAX_SEGMENTS;

/// The runs of [`Elf::page_plan`].
#[derive(Clone, Debug)]
pub struct Plan {
    runs: [PlanRun; MAX_PLAN],
    count: usize,
}

impl Plan {
    /// The runs, in address order.
    pub fn runs(&self) -> &[PlanRun] {
        &self.runs[..self.count]
    }
}

/// A validated executable: its entry point and its loadable segments, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Elf<'a> {
    /// Where execution starts: `e_entry` with bit 0 cleared.
    pub entry: u32,
    /// Whether execution starts in Thumb state (bit 0 of `e_entry` was set).
    pub thumb: bool,
    segments: [Segment<'a>; MAX_SEGMENTS],
    count: usize,
    runs: [PageRun; MAX_RUNS],
    run_count: usize,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

impl<'a> Elf<'a> {
    /// Parses and validates `image`. The returned segments borrow their bytes from it.
    pub fn parse(image: &'a [u8]) -> Result<Self, ElfError> {
        Self::parse_headers(image, image.len() as u32)
    }

    /// Parses and validates a file of `file_len` bytes from its first bytes, `head`, which
    /// must hold the ELF header and the program headers (`BadPhdrTable` otherwise). Segments
    /// are checked against `file_len`; their `data` is what of them `head` holds, whole, or
    /// empty (the loader then reads them through [`Segment::offset`]).
    pub fn parse_headers(head: &'a [u8], file_len: u32) -> Result<Self, ElfError> {
        let image = head;
        if image.len() < EHDR_SIZE {
            return Err(ElfError::TooShort);
        }
        let eh = &image[..EHDR_SIZE];
        if eh[0..4] != *b"\x7fELF" {
            return Err(ElfError::BadMagic);
        }
        if eh[4] != ELFCLASS32
            || eh[5] != ELFDATA2LSB
            || eh[6] != EV_CURRENT
            || u16_at(eh, 18) != EM_ARM
            || u32_at(eh, 20) != u32::from(EV_CURRENT)
            || usize::from(u16_at(eh, 40)) != EHDR_SIZE
        {
            return Err(ElfError::NotArm32Le);
        }
        if u16_at(eh, 16) != ET_EXEC {
            return Err(ElfError::NotExecutable);
        }
        let entry = u32_at(eh, 24);
        let phoff = u32_at(eh, 28) as usize;
        let phentsize = usize::from(u16_at(eh, 42));
        let phnum = usize::from(u16_at(eh, 44));
        if phentsize != PHDR_SIZE || phnum == 0 {
            return Err(ElfError::BadPhdrTable);
        }
        let table = phnum
            .checked_mul(PHDR_SIZE)
            .and_then(|size| phoff.checked_add(size))
            .and_then(|end| image.get(phoff..end))
            .ok_or(ElfError::BadPhdrTable)?;

        let mut elf = Elf {
            entry: entry & !1,
            thumb: entry & 1 != 0,
            segments: [Segment::EMPTY; MAX_SEGMENTS],
            count: 0,
            runs: [PageRun::EMPTY; MAX_RUNS],
            run_count: 0,
        };
        for ph in table.chunks_exact(PHDR_SIZE) {
            match u32_at(ph, 0) {
                PT_LOAD => {}
                PT_DYNAMIC | PT_INTERP => return Err(ElfError::NotExecutable),
                // PT_PHDR, PT_NOTE, PT_ARM_EXIDX, PT_GNU_STACK, ...: nothing to load.
                _ => continue,
            }
            let offset = u32_at(ph, 4) as usize;
            let vaddr = u32_at(ph, 8);
            let filesz = u32_at(ph, 16);
            let memsz = u32_at(ph, 20);
            let flags = u32_at(ph, 24);
            if filesz > memsz {
                return Err(ElfError::FileSizeOverMemSize);
            }
            if memsz == 0 {
                // An empty segment maps nothing (a linker script's unused PHDRS entry).
                continue;
            }
            // A segment without file bytes (bss only) may point anywhere, even past the end.
            let data = match filesz {
                0 => &[],
                _ => {
                    let end = offset
                        .checked_add(filesz as usize)
                        .filter(|&end| end <= file_len as usize)
                        .ok_or(ElfError::SegmentOutsideFile)?;
                    image.get(offset..end).unwrap_or(&[])
                }
            };
            match vaddr.checked_add(memsz) {
                Some(end) if vaddr >= USER_MIN && end <= USER_END => {}
                _ => return Err(ElfError::SegmentOutsideUser),
            }
            let perm = match (flags & PF_R != 0, flags & PF_W != 0, flags & PF_X != 0) {
                (_, true, true) => return Err(ElfError::WriteAndExecute),
                (_, true, false) => SegPerm::RW,
                (_, false, true) => SegPerm::RX,
                (true, false, false) => SegPerm::R,
                (false, false, false) => return Err(ElfError::NoPermission),
            };
            let seg = Segment {
                vaddr,
                memsz,
                data,
                // Both checked against the file's length above when filesz > 0.
                offset: if filesz == 0 { 0 } else { offset as u32 },
                filesz,
                perm,
            };
            let placed = &elf.segments[..elf.count];
            if placed
                .iter()
                .any(|s| seg.vaddr < s.end() && s.vaddr < seg.end())
            {
                return Err(ElfError::Overlap);
            }
            if elf.count == MAX_SEGMENTS {
                return Err(ElfError::TooManySegments);
            }
            elf.segments[elf.count] = seg;
            elf.count += 1;
        }

        elf.make_runs()?;

        if !elf.thumb && !entry.is_multiple_of(4) {
            return Err(ElfError::EntryMisaligned);
        }
        let in_text = elf
            .segments()
            .iter()
            .any(|s| s.perm.executable() && s.contains(elf.entry));
        if !in_text {
            return Err(ElfError::EntryNotExecutable);
        }
        Ok(elf)
    }

    /// Splits the pages the segments touch into runs of one permission. A page shared by
    /// several segments gets the union of their permissions; writable with executable is
    /// refused.
    fn make_runs(&mut self) -> Result<(), ElfError> {
        let segs = &self.segments[..self.count];
        let Some(mut p) = segs.iter().map(Segment::page_start).min() else {
            return Ok(());
        };
        loop {
            // The next page boundary of any segment above p: nothing changes before it.
            let next = segs
                .iter()
                .flat_map(|s| [s.page_start(), s.page_end()])
                .filter(|&b| b > p)
                .min();
            let Some(next) = next else {
                return Ok(());
            };
            let covering = segs
                .iter()
                .filter(|s| s.page_start() <= p && p < s.page_end());
            let (mut any, mut w, mut x) = (false, false, false);
            for s in covering {
                any = true;
                w |= s.perm.writable();
                x |= s.perm.executable();
            }
            if any {
                let perm = match (w, x) {
                    (true, true) => return Err(ElfError::SharedPageWriteExecute),
                    (true, false) => SegPerm::RW,
                    (false, true) => SegPerm::RX,
                    (false, false) => SegPerm::R,
                };
                match self.runs[..self.run_count].last_mut() {
                    Some(last) if last.end == p && last.perm == perm => last.end = next,
                    _ => {
                        // At most 2 * MAX_SEGMENTS boundaries, so fewer runs than that.
                        self.runs[self.run_count] = PageRun {
                            start: p,
                            end: next,
                            perm,
                        };
                        self.run_count += 1;
                    }
                }
            }
            p = next;
        }
    }

    /// The pages to map, in address order, each run with its permission; together they cover
    /// exactly the pages the segments touch.
    pub fn runs(&self) -> &[PageRun] {
        &self.runs[..self.run_count]
    }

    /// The loadable segments (non-empty `PT_LOAD`s), in file order.
    pub fn segments(&self) -> &[Segment<'a>] {
        &self.segments[..self.count]
    }

    /// How each page of the image is to be had when it is mapped from its file (demand
    /// paging): runs of pages, in address order, that either map consecutive pages of the file
    /// (copy on write), or are private pages (the file bytes copied in at load time, the rest
    /// zero). A page maps the file when exactly one segment touches it, that segment's file
    /// offset and address agree modulo the page size, and the page holds only bytes of the
    /// file (up to a segment end with no bss after it in the page, whose following file bytes
    /// then show as they would on Linux). Every other page, and every page of an executable
    /// run that would otherwise be demand-zero, is private.
    pub fn page_plan(&self) -> Option<Plan> {
        let mut out = Plan {
            runs: [PlanRun::EMPTY; MAX_PLAN],
            count: 0,
        };
        for run in self.runs() {
            let mut p = run.start;
            while p < run.end {
                let mut covering = self
                    .segments()
                    .iter()
                    .filter(|s| s.page_start() <= p && p < s.page_end());
                let only = match (covering.next(), covering.next()) {
                    (Some(s), None) => Some(s),
                    _ => None,
                };
                let file_page = only.and_then(|s| s.file_page_at(p));
                match out.runs[..out.count].last_mut() {
                    Some(last)
                        if last.end == p
                            && last.perm == run.perm
                            && match (last.file_page, file_page) {
                                (None, None) => true,
                                (Some(a), Some(b)) => a + (p - last.start) / PAGE_SIZE == b,
                                _ => false,
                            } =>
                    {
                        last.end = p + PAGE_SIZE
                    }
                    _ => {
                        *out.runs.get_mut(out.count)? = PlanRun {
                            start: p,
                            end: p + PAGE_SIZE,
                            perm: run.perm,
                            file_page,
                        };
                        out.count += 1;
                    }
                }
                p += PAGE_SIZE;
            }
        }
        Some(out)
    }

    /// Total pages the segments need (a shared page counts once).
    pub fn pages(&self) -> u32 {
        self.runs()
            .iter()
            .map(|r| (r.end - r.start) / PAGE_SIZE)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One program header for [`image`]: `(type, offset, vaddr, filesz, memsz, flags)`.
    type Ph = (u32, u32, u32, u32, u32, u32);

    const RX: u32 = PF_R | PF_X;
    const RO: u32 = PF_R;
    const RW: u32 = PF_R | PF_W;

    /// A hand-made ELF: header, program headers right after it, then `body` at 0x1000 (so
    /// segments can point into it), every other header field as a linker would write it.
    fn image(entry: u32, phdrs: &[Ph], body: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 0x1000];
        b[0..4].copy_from_slice(b"\x7fELF");
        b[4] = ELFCLASS32;
        b[5] = ELFDATA2LSB;
        b[6] = EV_CURRENT;
        b[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        b[18..20].copy_from_slice(&EM_ARM.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[24..28].copy_from_slice(&entry.to_le_bytes());
        b[28..32].copy_from_slice(&(EHDR_SIZE as u32).to_le_bytes());
        b[36..40].copy_from_slice(&0x0500_0200u32.to_le_bytes()); // EABI 5, soft float
        b[40..42].copy_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
        b[42..44].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        b[44..46].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        b[46..48].copy_from_slice(&40u16.to_le_bytes());
        for (i, &(ty, off, va, filesz, memsz, flags)) in phdrs.iter().enumerate() {
            let p = EHDR_SIZE + i * PHDR_SIZE;
            for (j, v) in [ty, off, va, va, filesz, memsz, flags, PAGE_SIZE]
                .iter()
                .enumerate()
            {
                b[p + 4 * j..p + 4 * j + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        b.extend_from_slice(body);
        b
    }

    /// Text (RX, 0x10000, 0x100 bytes), rodata (R, 0x11000, 0x40 bytes), data+bss (RW, 0x12000,
    /// 0x20 file bytes of 0x2000).
    fn good_phdrs() -> Vec<Ph> {
        vec![
            (PT_LOAD, 0x1000, 0x1_0000, 0x100, 0x100, RX),
            (PT_LOAD, 0x1100, 0x1_1000, 0x40, 0x40, RO),
            (PT_LOAD, 0x1140, 0x1_2000, 0x20, 0x2000, RW),
        ]
    }

    fn body() -> Vec<u8> {
        (0..0x160u32).map(|i| i as u8).collect()
    }

    fn good() -> Vec<u8> {
        image(0x1_0000, &good_phdrs(), &body())
    }

    fn with_phdrs(phdrs: &[Ph]) -> Result<(), ElfError> {
        Elf::parse(&image(0x1_0000, phdrs, &body())).map(drop)
    }

    fn patched(off: usize, bytes: &[u8]) -> Vec<u8> {
        let mut b = good();
        b[off..off + bytes.len()].copy_from_slice(bytes);
        b
    }

    #[test]
    fn accepts_a_good_image() {
        let img = good();
        let elf = Elf::parse(&img).unwrap();
        assert_eq!(elf.entry, 0x1_0000);
        let s = elf.segments();
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].vaddr, s[0].memsz, s[0].perm),
            (0x1_0000, 0x100, SegPerm::RX)
        );
        assert_eq!(s[0].data, &img[0x1000..0x1100]);
        assert_eq!(
            (s[1].vaddr, s[1].perm, s[1].data.len()),
            (0x1_1000, SegPerm::R, 0x40)
        );
        assert_eq!(
            (s[2].vaddr, s[2].memsz, s[2].perm),
            (0x1_2000, 0x2000, SegPerm::RW)
        );
        assert_eq!(s[2].data, &img[0x1140..0x1160]);
        assert_eq!(
            (s[2].page_start(), s[2].page_end(), s[2].pages()),
            (0x1_2000, 0x1_4000, 2)
        );
        assert_eq!(elf.pages(), 4);
        assert!(s[2].perm.writable() && !s[2].perm.executable());
        assert!(s[0].perm.executable() && !s[0].perm.writable());
    }

    #[test]
    fn works_on_unaligned_slices() {
        let img = good();
        for shift in 1..4 {
            let mut buf = vec![0u8; shift];
            buf.extend_from_slice(&img);
            let elf = Elf::parse(&buf[shift..]).unwrap();
            assert_eq!(elf.segments()[0].data, &img[0x1000..0x1100]);
        }
    }

    #[test]
    fn unaligned_segments_in_distinct_pages_are_accepted() {
        let ph = [
            (PT_LOAD, 0x1000, 0x1_0010, 0x100, 0x100, RX),
            (PT_LOAD, 0x1100, 0x1_1234, 0x40, 0x1000, RW),
        ];
        let img = image(0x1_0010, &ph, &body());
        let elf = Elf::parse(&img).unwrap();
        let s = elf.segments();
        assert_eq!((s[0].page_start(), s[0].page_end()), (0x1_0000, 0x1_1000));
        assert_eq!(
            (s[1].page_start(), s[1].page_end(), s[1].pages()),
            (0x1_1000, 0x1_3000, 2)
        );
    }

    #[test]
    fn ignores_other_segment_types_and_empty_loads() {
        let mut ph = good_phdrs();
        ph.insert(0, (6, 0x34, 0x1_0034, 0x60, 0x60, RO)); // PT_PHDR
        ph.push((0x6474_e551, 0, 0, 0, 0, RW)); // PT_GNU_STACK
        ph.push((0x7000_0001, 0x1000, 0x1_0000, 8, 8, RO)); // PT_ARM_EXIDX
        ph.push((PT_LOAD, 0x1160, 0x5000_0000, 0, 0, RW | PF_X)); // empty: ignored
        let img = image(0x1_0000, &ph, &body());
        assert_eq!(Elf::parse(&img).unwrap().segments().len(), 3);
    }

    #[test]
    fn too_short() {
        assert_eq!(Elf::parse(&[]), Err(ElfError::TooShort));
        assert_eq!(Elf::parse(&good()[..51]), Err(ElfError::TooShort));
    }

    #[test]
    fn bad_magic() {
        assert_eq!(Elf::parse(&patched(0, b"\x7fELG")), Err(ElfError::BadMagic));
        assert_eq!(Elf::parse(&patched(1, b"el")), Err(ElfError::BadMagic));
    }

    #[test]
    fn not_arm32_le() {
        for (off, bytes) in [
            (4, &[2u8][..]),    // ELFCLASS64
            (5, &[2][..]),      // big endian
            (6, &[0][..]),      // EI_VERSION
            (18, &[62, 0][..]), // EM_X86_64
            (20, &[2, 0, 0, 0][..]),
            (40, &[64, 0][..]), // e_ehsize
        ] {
            assert_eq!(
                Elf::parse(&patched(off, bytes)),
                Err(ElfError::NotArm32Le),
                "{off}"
            );
        }
    }

    #[test]
    fn not_executable() {
        assert_eq!(
            Elf::parse(&patched(16, &[1, 0])),
            Err(ElfError::NotExecutable)
        ); // ET_REL
        assert_eq!(
            Elf::parse(&patched(16, &[3, 0])),
            Err(ElfError::NotExecutable)
        ); // ET_DYN
        for ty in [PT_INTERP, PT_DYNAMIC] {
            let mut ph = good_phdrs();
            ph.push((ty, 0x1000, 0x1_0000, 0x10, 0x10, RO));
            assert_eq!(with_phdrs(&ph), Err(ElfError::NotExecutable));
        }
    }

    #[test]
    fn bad_phdr() {
        assert_eq!(with_phdrs(&[]), Err(ElfError::BadPhdrTable)); // no table
                                                                  // Wrong entry size; a table beyond the end; a table whose offset + size wraps.
        assert_eq!(
            Elf::parse(&patched(42, &[40, 0])),
            Err(ElfError::BadPhdrTable)
        );
        let len = good().len() as u32;
        assert_eq!(
            Elf::parse(&patched(28, &(len - 64).to_le_bytes())),
            Err(ElfError::BadPhdrTable)
        );
        assert_eq!(
            Elf::parse(&patched(28, &u32::MAX.to_le_bytes())),
            Err(ElfError::BadPhdrTable)
        );
        assert_eq!(
            Elf::parse(&patched(44, &[0xff, 0xff])),
            Err(ElfError::BadPhdrTable)
        );
        // filesz > memsz; a load with no permission at all.
        let mut ph = good_phdrs();
        ph[1].3 = 0x41;
        assert_eq!(with_phdrs(&ph), Err(ElfError::FileSizeOverMemSize));
        let mut ph = good_phdrs();
        ph[1].5 = 0;
        assert_eq!(with_phdrs(&ph), Err(ElfError::NoPermission));
    }

    #[test]
    fn segment_outside_file() {
        let len = good().len() as u32;
        let mut ph = good_phdrs();
        ph[2].1 = len - 0x10; // 0x20 bytes from 0x10 before the end
        assert_eq!(with_phdrs(&ph), Err(ElfError::SegmentOutsideFile));
        let mut ph = good_phdrs();
        ph[2].1 = u32::MAX - 0x10; // offset + filesz wraps
        assert_eq!(with_phdrs(&ph), Err(ElfError::SegmentOutsideFile));
        // Without file bytes, the offset does not matter (a bss-only segment).
        let mut ph = good_phdrs();
        (ph[2].1, ph[2].3) = (u32::MAX, 0);
        let img = image(0x1_0000, &ph, &body());
        assert_eq!(Elf::parse(&img).unwrap().segments()[2].data, &[] as &[u8]);
    }

    #[test]
    fn segment_outside_user() {
        for (va, memsz) in [
            (0, 0x100),           // page 0
            (0xfff, 0x100),       // starts in page 0
            (0x8000_0000, 0x100), // kernel half
            (0x7fff_ff00, 0x101), // runs into it
            (0xffff_ff00, 0x200), // wraps
            (0x1_2000, u32::MAX), // wraps
        ] {
            let mut ph = good_phdrs();
            ph[2].2 = va;
            ph[2].4 = memsz;
            assert_eq!(
                with_phdrs(&ph),
                Err(ElfError::SegmentOutsideUser),
                "{va:#x}+{memsz:#x}"
            );
        }
        // The last byte of the user half is fine.
        let mut ph = good_phdrs();
        ph[2].2 = 0x7fff_e000;
        assert!(with_phdrs(&ph).is_ok());
    }

    #[test]
    fn write_and_execute() {
        let mut ph = good_phdrs();
        ph[2].5 = RW | PF_X;
        assert_eq!(with_phdrs(&ph), Err(ElfError::WriteAndExecute));
        let mut ph = good_phdrs();
        ph[0].5 = PF_W | PF_X; // without PF_R
        assert_eq!(with_phdrs(&ph), Err(ElfError::WriteAndExecute));
    }

    #[test]
    fn overlap() {
        // Same bytes; rodata running into the text's bytes; rodata inside the data range.
        for (i, va) in [(1, 0x1_0000), (1, 0x1_00f0), (1, 0x1_3000)] {
            let mut ph = good_phdrs();
            ph[i].2 = va;
            assert_eq!(with_phdrs(&ph), Err(ElfError::Overlap), "{va:#x}");
        }
        // Data placed below rodata, in the text's page, running into rodata's bytes.
        let mut ph = good_phdrs();
        ph[2].2 = 0x1_1000 - 0x800;
        ph[2].4 = 0x801;
        assert_eq!(with_phdrs(&ph), Err(ElfError::Overlap));
    }

    #[test]
    fn read_only_data_may_share_the_text_page() {
        // Rodata right after the text, in its page and the next: that page is RX, the next R.
        let mut ph = good_phdrs();
        ph[1].2 = 0x1_0100;
        ph[1].4 = 0x1000;
        let img = image(0x1_0000, &ph, &body());
        let elf = Elf::parse(&img).unwrap();
        let run = |start, end, perm| PageRun { start, end, perm };
        assert_eq!(
            elf.runs(),
            &[
                run(0x1_0000, 0x1_1000, SegPerm::RX),
                run(0x1_1000, 0x1_2000, SegPerm::R),
                run(0x1_2000, 0x1_4000, SegPerm::RW),
            ]
        );
        assert_eq!(elf.pages(), 4);
    }

    #[test]
    fn data_may_share_the_rodata_page() {
        // Rodata ends at 0x11040; data starts right after it, in the same page.
        let mut ph = good_phdrs();
        ph[2].2 = 0x1_1040;
        let img = image(0x1_0000, &ph, &body());
        let elf = Elf::parse(&img).unwrap();
        let run = |start, end, perm| PageRun { start, end, perm };
        assert_eq!(
            elf.runs(),
            &[
                run(0x1_0000, 0x1_1000, SegPerm::RX),
                run(0x1_1000, 0x1_4000, SegPerm::RW),
            ]
        );
    }

    #[test]
    fn data_sharing_a_page_with_text_is_refused() {
        // Data right after the text's bytes, in its page: that page would be W and X.
        let mut ph = good_phdrs();
        (ph[2].2, ph[2].4) = (0x1_0100, 0x100);
        assert_eq!(with_phdrs(&ph), Err(ElfError::SharedPageWriteExecute));
        // Text starting in the last page of the data.
        let ph = vec![
            (PT_LOAD, 0x1140, 0x1_0000, 0x20, 0x800, RW),
            (PT_LOAD, 0x1000, 0x1_0800, 0x100, 0x100, RX),
        ];
        assert_eq!(
            Elf::parse(&image(0x1_0800, &ph, &body())),
            Err(ElfError::SharedPageWriteExecute)
        );
    }

    /// What `arm-linux-gnueabihf-gcc -static -nostdlib` and GNU ld make: the text segment
    /// starts at file offset 0 (it holds the ELF and program headers), the entry has bit 0 set
    /// (Thumb), and the data segment's file offset is not page aligned (vaddr and offset agree
    /// modulo the page size only).
    #[test]
    fn gnu_ld_layout_with_a_thumb_entry() {
        let ph = vec![
            (PT_LOAD, 0, 0x1_0000, 0x1100, 0x1100, RX),
            (PT_LOAD, 0x1100, 0x2_1100, 0x40, 0x80, RW),
            (0x7000_0001, 0x10f0, 0x1_10f0, 0x8, 0x8, RO), // PT_ARM_EXIDX
        ];
        let img = image(0x1_1001, &ph, &body());
        let elf = Elf::parse(&img).unwrap();
        assert!(elf.thumb);
        assert_eq!(elf.entry, 0x1_1000);
        assert_eq!(elf.segments()[0].data, &img[..0x1100]);
        assert_eq!(elf.segments()[1].data, &img[0x1100..0x1140]);
        let run = |start, end, perm| PageRun { start, end, perm };
        assert_eq!(
            elf.runs(),
            &[
                run(0x1_0000, 0x1_2000, SegPerm::RX),
                run(0x2_1000, 0x2_2000, SegPerm::RW),
            ]
        );
    }

    /// `tests/data/thello`, built by Debian's `arm-linux-gnueabihf-gcc -static -nostdlib`
    /// (`tests/data/thello.sh`): Thumb entry, headers in the text segment at offset 0, data at an
    /// unaligned file offset.
    #[test]
    fn a_gcc_built_program_is_accepted() {
        let img = include_bytes!("../tests/data/thello");
        let elf = Elf::parse(img).unwrap();
        assert!(elf.thumb);
        assert!(elf.entry.is_multiple_of(2));
        let s = elf.segments();
        assert_eq!((s[0].vaddr, s[0].perm), (0x1_0000, SegPerm::RX));
        assert_eq!(s[0].data[..4], *b"\x7fELF");
        assert!(s.iter().any(|s| s.perm == SegPerm::RW));
        assert!(elf.runs().iter().all(|r| r.start.is_multiple_of(PAGE_SIZE)));
    }

    fn plan(elf: &Elf<'_>) -> Vec<(u32, u32, SegPerm, Option<u32>)> {
        let plan = elf.page_plan().unwrap();
        plan.runs()
            .iter()
            .map(|r| (r.start, r.end, r.perm, r.file_page))
            .collect()
    }

    #[test]
    fn page_plan_maps_whole_file_pages_and_copies_mixed_ones() {
        // Page-aligned offsets: text (two pages, the second partly past its end with no bss:
        // from the file), rodata (one page), data whose file bytes end mid-page before bss.
        let phdrs = vec![
            (PT_LOAD, 0x1000, 0x1_0000, 0x1100, 0x1100, RX),
            (PT_LOAD, 0x3000, 0x1_2000, 0x40, 0x40, RO),
            (PT_LOAD, 0x4000, 0x1_3000, 0x1010, 0x3000, RW),
        ];
        let mut img = image(0x1_0000, &phdrs, &[]);
        img.resize(0x5010, 0);
        let elf = Elf::parse(&img).unwrap();
        assert_eq!(
            plan(&elf),
            vec![
                (0x1_0000, 0x1_2000, SegPerm::RX, Some(1)),
                (0x1_2000, 0x1_3000, SegPerm::R, Some(3)),
                (0x1_3000, 0x1_4000, SegPerm::RW, Some(4)),
                // File bytes then bss in one page, then bss only: private.
                (0x1_4000, 0x1_6000, SegPerm::RW, None),
            ]
        );
    }

    #[test]
    fn page_plan_copies_pages_two_segments_share_or_unaligned_offsets() {
        // Rodata and data at offsets not congruent to their addresses (as --nmagic lays them
        // out): private; the text is congruent.
        let old = good();
        let elf = Elf::parse(&old).unwrap();
        let p = plan(&elf);
        assert_eq!(p[0], (0x1_0000, 0x1_1000, SegPerm::RX, Some(1)));
        assert!(p[1..].iter().all(|r| r.3.is_none()), "{p:x?}");
        // Rodata in the text's last page: that page is private, the text's first is not.
        let phdrs = vec![
            (PT_LOAD, 0x1000, 0x1_0000, 0x1100, 0x1100, RX),
            (PT_LOAD, 0x2100, 0x1_1100, 0x40, 0x40, RO),
        ];
        let mut img = image(0x1_0000, &phdrs, &[]);
        img.resize(0x2140, 0);
        let elf = Elf::parse(&img).unwrap();
        assert_eq!(
            plan(&elf),
            vec![
                (0x1_0000, 0x1_1000, SegPerm::RX, Some(1)),
                (0x1_1000, 0x1_2000, SegPerm::RX, None),
            ]
        );
    }

    #[test]
    fn page_plan_of_a_gcc_built_program() {
        // Text from offset 0 (the ELF headers in its first page); data at offset 0xfc mapped at
        // 0x110fc with bss after it: its page is private.
        let img = include_bytes!("../tests/data/thello");
        let elf = Elf::parse_headers(&img[..0x100], img.len() as u32).unwrap();
        assert_eq!(
            plan(&elf),
            vec![
                (0x1_0000, 0x1_1000, SegPerm::RX, Some(0)),
                (0x1_1000, 0x1_2000, SegPerm::RW, None),
            ]
        );
    }

    #[test]
    fn parse_headers_checks_segments_against_the_file_length() {
        let img = good();
        let head = &img[..0x200];
        let elf = Elf::parse_headers(head, img.len() as u32).unwrap();
        assert_eq!(elf.segments()[0].offset, 0x1000);
        assert_eq!(elf.segments()[0].filesz, 0x100);
        assert!(elf.segments()[0].data.is_empty());
        assert_eq!(
            Elf::parse_headers(head, 0x1100).map(drop),
            Err(ElfError::SegmentOutsideFile)
        );
        assert_eq!(headers_len(&img), Some(EHDR_SIZE + 3 * PHDR_SIZE));
        assert_eq!(headers_len(&img[..10]), None);
    }

    #[test]
    fn bad_entry() {
        // ARM state: word aligned.
        for entry in [0x1_0002, 0x1_00fe] {
            let img = image(entry, &good_phdrs(), &body());
            assert_eq!(
                Elf::parse(&img),
                Err(ElfError::EntryMisaligned),
                "{entry:#x}"
            );
        }
        // Outside the text, in either state.
        for entry in [0, 1, 0x1_0100, 0x1_0101, 0x1_1000, 0x1_2001] {
            let img = image(entry, &good_phdrs(), &body());
            assert_eq!(
                Elf::parse(&img),
                Err(ElfError::EntryNotExecutable),
                "{entry:#x}"
            );
        }
        assert!(Elf::parse(&image(0x1_00fc, &good_phdrs(), &body())).is_ok());
        // Thumb state: halfword aligned is enough.
        let elf_img = image(0x1_00ff, &good_phdrs(), &body());
        let elf = Elf::parse(&elf_img).unwrap();
        assert_eq!((elf.entry, elf.thumb), (0x1_00fe, true));
        // No executable segment at all.
        let ph = &good_phdrs()[1..];
        assert_eq!(
            Elf::parse(&image(0x1_1000, ph, &body())),
            Err(ElfError::EntryNotExecutable)
        );
    }

    #[test]
    fn too_many_segments() {
        let seg = |i: u32| (PT_LOAD, 0x1000, 0x1_0000 + i * PAGE_SIZE, 0x10, 0x10, RX);
        let ph: Vec<Ph> = (0..MAX_SEGMENTS as u32).map(seg).collect();
        assert_eq!(
            Elf::parse(&image(0x1_0000, &ph, &body()))
                .unwrap()
                .segments()
                .len(),
            8
        );
        let ph: Vec<Ph> = (0..=MAX_SEGMENTS as u32).map(seg).collect();
        assert_eq!(with_phdrs(&ph), Err(ElfError::TooManySegments));
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            ElfError::WriteAndExecute.to_string(),
            "segment both writable and executable"
        );
        assert_eq!(
            ElfError::TooShort.to_string(),
            "image shorter than an ELF header"
        );
    }

    #[test]
    fn limits_match_the_memory_map() {
        assert_eq!(USER_END, crate::mm::layout::USER_END.as_u32());
        assert_eq!(USER_MIN, crate::mm::uvm::USER_START.as_u32());
        assert_eq!(PAGE_SIZE as usize, crate::mm::PAGE_SIZE as usize);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Random byte changes (mostly in the headers) never make the parser panic, and what it
            /// accepts keeps every promise of the module documentation.
            #[test]
            fn mutated_images_are_refused_or_sound(
                edits in prop::collection::vec((0usize..0x200, any::<u8>()), 1..6),
                cut in prop::option::of(0usize..0x1200),
            ) {
                let mut img = good();
                for (off, byte) in edits {
                    let off = if off < 0x160 { off } else { 0x1000 + off - 0x160 };
                    img[off] = byte;
                }
                if let Some(cut) = cut {
                    img.truncate(cut);
                }
                if let Ok(elf) = Elf::parse(&img) {
                    let segs = elf.segments();
                    prop_assert!(!segs.is_empty() && segs.len() <= MAX_SEGMENTS);
                    for (i, s) in segs.iter().enumerate() {
                        prop_assert!(s.memsz > 0 && s.data.len() as u64 <= u64::from(s.memsz));
                        prop_assert!(s.vaddr >= USER_MIN && u64::from(s.vaddr) + u64::from(s.memsz) <= u64::from(USER_END));
                        prop_assert!(!(s.perm.writable() && s.perm.executable()));
                        if !s.data.is_empty() {
                            // (An empty slice may point anywhere.)
                            let start = (s.data.as_ptr() as usize).checked_sub(img.as_ptr() as usize);
                            prop_assert!(start.is_some_and(|st| st + s.data.len() <= img.len()));
                        }
                        for t in &segs[i + 1..] {
                            prop_assert!(s.end() <= t.vaddr || t.end() <= s.vaddr);
                        }
                        // Its pages are in runs that allow at least what it asks for.
                        let mut page = s.page_start();
                        while page < s.page_end() {
                            let run = elf.runs().iter().find(|r| r.start <= page && page < r.end);
                            prop_assert!(run.is_some_and(|r| r.perm == s.perm
                                || (s.perm == SegPerm::R && r.perm != SegPerm::R)));
                            page += PAGE_SIZE;
                        }
                    }
                    for w in elf.runs().windows(2) {
                        prop_assert!(w[0].end <= w[1].start);
                    }
                    prop_assert!(elf.thumb || elf.entry.is_multiple_of(4));
                    prop_assert!(segs.iter().any(|s| s.perm == SegPerm::RX && s.contains(elf.entry)));
                }
            }
        }
    }
}
