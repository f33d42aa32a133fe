//! How `mm` reads and writes physical memory: translation tables, their bookkeeping, fresh frames.
//!
//! The address-space code never forms a pointer. It hands a [`PhysAddr`] to a [`PhysMem`], which
//! the kernel implements with the direct map (`arch::arm::direct_map::DirectMap`: VA = PA + 0x8000_0000, see
//! [`layout`](super::layout)) and host tests with [`HostRam`], a `Vec` of words that also watches
//! descriptor writes for break-before-make violations (see [`tlb`](super::tlb)).
//!
//! Writing a descriptor through `PhysMem` is only half of updating a translation: the table walk
//! must then see the write ([`Tlb::publish`](super::tlb::Tlb::publish)) and stale TLB entries must
//! be invalidated. That is the job of the [`tlb`](super::tlb) trait.

use super::addr::{Frame, PhysAddr, PAGE_SIZE};

/// Access to physical memory by physical address. All addresses are naturally aligned.
pub trait PhysMem {
    /// Reads the 32-bit word at `pa`.
    fn read_u32(&self, pa: PhysAddr) -> u32;
    /// Writes the 32-bit word at `pa`.
    fn write_u32(&mut self, pa: PhysAddr, value: u32);
    /// Reads the 16-bit half-word at `pa`.
    fn read_u16(&self, pa: PhysAddr) -> u16;
    /// Writes the 16-bit half-word at `pa`.
    fn write_u16(&mut self, pa: PhysAddr, value: u16);
    /// Fills the 4 KiB of `frame` with zeroes.
    fn zero_frame(&mut self, frame: Frame) {
        let mut pa = frame.start();
        for _ in 0..PAGE_SIZE / 4 {
            self.write_u32(pa, 0);
            pa = PhysAddr::new(pa.as_u32() + 4);
        }
    }
    /// Writes `data` at `pa` (any alignment), by word writes (read-modify-write at the ends).
    /// For data frames, not descriptors.
    fn write_bytes(&mut self, pa: PhysAddr, data: &[u8]) {
        let mut addr = pa.as_u32();
        let mut rest = data;
        while !rest.is_empty() {
            let word = PhysAddr::new(addr & !3);
            let offset = (addr & 3) as usize;
            let n = (4 - offset).min(rest.len());
            let mut bytes = if offset == 0 && n == 4 {
                [0; 4]
            } else {
                self.read_u32(word).to_le_bytes()
            };
            bytes[offset..offset + n].copy_from_slice(&rest[..n]);
            self.write_u32(word, u32::from_le_bytes(bytes));
            rest = &rest[n..];
            addr += n as u32;
        }
    }
    /// Reads `buf.len()` bytes at `pa` (any alignment) into `buf`.
    fn read_bytes(&self, pa: PhysAddr, buf: &mut [u8]) {
        let mut addr = pa.as_u32();
        let mut filled = 0;
        while filled < buf.len() {
            let offset = (addr & 3) as usize;
            let n = (4 - offset).min(buf.len() - filled);
            let bytes = self.read_u32(PhysAddr::new(addr & !3)).to_le_bytes();
            buf[filled..filled + n].copy_from_slice(&bytes[offset..offset + n]);
            filled += n;
            addr += n as u32;
        }
    }
    /// Makes what was written to `frame` through this view visible to instruction fetch (clean
    /// the data cache to the point of unification, invalidate the instruction cache: ARM ARM
    /// B2.2.9). Nothing to do where there are no caches (host tests).
    fn sync_instructions(&mut self, _frame: Frame) {}
    /// Copies the 4 KiB of `src` to `dst`.
    fn copy_frame(&mut self, dst: Frame, src: Frame) {
        for i in 0..PAGE_SIZE / 4 {
            let v = self.read_u32(PhysAddr::new(src.start().as_u32() + 4 * i));
            self.write_u32(PhysAddr::new(dst.start().as_u32() + 4 * i), v);
        }
    }
}

#[cfg(not(target_os = "none"))]
pub use host::{HostFrames, HostRam};

#[cfg(not(target_os = "none"))]
pub(crate) use host::Machine;

#[cfg(not(target_os = "none"))]
mod host {
    extern crate alloc;

    use super::PhysMem;
    use crate::mm::addr::{Frame, PhysAddr, PAGE_SIZE};
    use crate::mm::frame::{FrameAllocator, PmmError};
    use crate::mm::tlb::TlbState;
    use alloc::collections::{BTreeMap, BTreeSet};
    use alloc::rc::Rc;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    /// The emulated machine shared by [`HostRam`] and [`EmulatedTlb`](crate::mm::tlb::EmulatedTlb).
    pub(crate) struct Machine {
        /// RAM as the CPU sees it.
        pub(crate) words: Vec<u32>,
        /// Words written but not yet published to the table walker: index -> what the walker sees.
        pub(crate) unpublished: BTreeMap<usize, u32>,
        /// The emulated TLB and walk cache.
        pub(crate) tlb: TlbState,
    }

    impl Machine {
        /// The word as the table walker sees it.
        pub(crate) fn walker_read(&self, pa: u32) -> u32 {
            let i = (pa / 4) as usize;
            match self.unpublished.get(&i) {
                Some(&v) => v,
                None => self.words[i],
            }
        }

        fn write(&mut self, i: usize, value: u32, track: bool) {
            let old = self.words[i];
            if old == value {
                return;
            }
            if track {
                self.tlb.check_write(i as u32 * 4, old, value);
                self.unpublished.entry(i).or_insert(old);
            }
            self.words[i] = value;
        }
    }

    /// Host "RAM" starting at physical 0: a `Vec` of words, shared with an
    /// [`EmulatedTlb`](crate::mm::tlb::EmulatedTlb).
    ///
    /// Word writes (descriptors) are invisible to the emulated table walk until published, and
    /// are checked for break-before-make against what the emulated TLB holds. Half-word writes
    /// are bookkeeping, never descriptors, and are not tracked.
    #[derive(Clone)]
    pub struct HostRam {
        pub(crate) machine: Rc<RefCell<Machine>>,
    }

    impl HostRam {
        /// `bytes` of zeroed RAM at physical 0.
        pub fn new(bytes: u32) -> Self {
            Self {
                machine: Rc::new(RefCell::new(Machine {
                    words: vec![0; (bytes / 4) as usize],
                    unpublished: BTreeMap::new(),
                    tlb: TlbState::default(),
                })),
            }
        }

        /// Size in bytes.
        pub fn size(&self) -> u32 {
            self.machine.borrow().words.len() as u32 * 4
        }
    }

    impl PhysMem for HostRam {
        fn read_u32(&self, pa: PhysAddr) -> u32 {
            assert!(pa.is_aligned(4));
            self.machine.borrow().words[pa.as_usize() / 4]
        }

        fn write_u32(&mut self, pa: PhysAddr, value: u32) {
            assert!(pa.is_aligned(4));
            self.machine
                .borrow_mut()
                .write(pa.as_usize() / 4, value, true);
        }

        fn read_u16(&self, pa: PhysAddr) -> u16 {
            assert!(pa.is_aligned(2));
            let w = self.machine.borrow().words[pa.as_usize() / 4];
            (w >> (8 * (pa.as_u32() & 2))) as u16
        }

        fn write_u16(&mut self, pa: PhysAddr, value: u16) {
            assert!(pa.is_aligned(2));
            let mut m = self.machine.borrow_mut();
            let i = pa.as_usize() / 4;
            let shift = 8 * (pa.as_u32() & 2);
            let w = (m.words[i] & !(0xffff << shift)) | (value as u32) << shift;
            m.write(i, w, false);
        }

        fn zero_frame(&mut self, frame: Frame) {
            let mut m = self.machine.borrow_mut();
            let first = frame.start().as_usize() / 4;
            for i in first..first + (PAGE_SIZE / 4) as usize {
                m.write(i, 0, true);
            }
        }
    }

    /// A plain frame allocator for host tests: a set of free frames, lowest first.
    ///
    /// `set_budget` makes it run out after a number of further allocations, to test that a
    /// refused operation changes nothing.
    #[derive(Debug, Clone)]
    pub struct HostFrames {
        free: BTreeSet<u32>,
        first: u32,
        end: u32,
        budget: Option<u32>,
    }

    impl HostFrames {
        /// Manages `count` frames starting at `first`, all free.
        pub fn new(first: Frame, count: u32) -> Self {
            let f = first.number();
            Self {
                free: (f..f + count).collect(),
                first: f,
                end: f + count,
                budget: None,
            }
        }

        /// Number of free frames.
        pub fn free_count(&self) -> usize {
            self.free.len()
        }

        /// Allow only `n` more successful allocations (`None`: no limit).
        pub fn set_budget(&mut self, n: Option<u32>) {
            self.budget = n;
        }

        fn take_budget(&mut self) -> Result<(), PmmError> {
            match &mut self.budget {
                Some(0) => Err(PmmError::OutOfMemory),
                Some(n) => {
                    *n -= 1;
                    Ok(())
                }
                None => Ok(()),
            }
        }
    }

    impl FrameAllocator for HostFrames {
        fn alloc_frame(&mut self) -> Result<Frame, PmmError> {
            let f = *self.free.first().ok_or(PmmError::OutOfMemory)?;
            self.take_budget()?;
            self.free.remove(&f);
            Ok(Frame::from_number(f))
        }

        fn alloc_contiguous(
            &mut self,
            count: u32,
            align: u32,
            limit: Option<PhysAddr>,
        ) -> Result<Frame, PmmError> {
            if count == 0 {
                return Err(PmmError::ZeroCount);
            }
            if !align.is_power_of_two() {
                return Err(PmmError::BadAlignment);
            }
            let end = limit
                .map_or(self.end, |l| l.as_u32() / PAGE_SIZE)
                .min(self.end);
            let mut start = self.first.next_multiple_of(align);
            while start + count <= end {
                if (start..start + count).all(|f| self.free.contains(&f)) {
                    self.take_budget()?;
                    for f in start..start + count {
                        self.free.remove(&f);
                    }
                    return Ok(Frame::from_number(start));
                }
                start += align;
            }
            Err(PmmError::OutOfMemory)
        }

        fn free_frame(&mut self, frame: Frame) -> Result<(), PmmError> {
            let f = frame.number();
            if f < self.first || f >= self.end {
                return Err(PmmError::OutOfRange);
            }
            if !self.free.insert(f) {
                return Err(PmmError::DoubleFree);
            }
            Ok(())
        }

        fn free_contiguous(&mut self, first: Frame, count: u32) -> Result<(), PmmError> {
            for i in 0..count {
                self.free_frame(Frame::from_number(first.number() + i))?;
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn half_words_share_a_word_little_endian() {
            let mut ram = HostRam::new(0x1000);
            ram.write_u16(PhysAddr::new(0x10), 0x1234);
            ram.write_u16(PhysAddr::new(0x12), 0xabcd);
            assert_eq!(ram.read_u32(PhysAddr::new(0x10)), 0xabcd_1234);
            assert_eq!(ram.read_u16(PhysAddr::new(0x12)), 0xabcd);
        }

        #[test]
        fn byte_writes_and_reads_at_any_alignment_keep_the_neighbours() {
            let mut ram = HostRam::new(0x1000);
            ram.write_u32(PhysAddr::new(0x10), 0x4433_2211);
            ram.write_u32(PhysAddr::new(0x14), 0x8877_6655);
            ram.write_u32(PhysAddr::new(0x18), 0xccbb_aa99);
            ram.write_bytes(PhysAddr::new(0x13), &[1, 2, 3, 4, 5, 6]);
            assert_eq!(ram.read_u32(PhysAddr::new(0x10)), 0x0133_2211);
            assert_eq!(ram.read_u32(PhysAddr::new(0x14)), 0x0504_0302);
            assert_eq!(ram.read_u32(PhysAddr::new(0x18)), 0xccbb_aa06);
            let mut buf = [0u8; 7];
            ram.read_bytes(PhysAddr::new(0x12), &mut buf);
            assert_eq!(buf, [0x33, 1, 2, 3, 4, 5, 6]);
            ram.write_bytes(PhysAddr::new(0x11), &[]);
            ram.read_bytes(PhysAddr::new(0x11), &mut []);
        }

        #[test]
        fn word_writes_stay_invisible_to_the_walker_until_published() {
            let mut ram = HostRam::new(0x1000);
            ram.write_u32(PhysAddr::new(0x20), 7);
            assert_eq!(ram.machine.borrow().walker_read(0x20), 0);
            assert_eq!(ram.read_u32(PhysAddr::new(0x20)), 7);
        }

        #[test]
        fn host_frames_hand_out_aligned_runs_and_catch_double_frees() {
            let mut a = HostFrames::new(Frame::from_number(0x101), 8);
            let f = a.alloc_contiguous(2, 2, None).unwrap();
            assert_eq!(f.number(), 0x102);
            assert_eq!(a.free_count(), 6);
            assert_eq!(a.free_frame(f), Ok(()));
            assert_eq!(a.free_frame(f), Err(PmmError::DoubleFree));
            a.set_budget(Some(0));
            assert_eq!(a.alloc_frame(), Err(PmmError::OutOfMemory));
        }
    }
}
