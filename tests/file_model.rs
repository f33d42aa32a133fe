//! File-backed memory (the page cache, private and shared file mappings) on the host: fixed
//! cases for sharing, demand paging, copy on write, write-back and errors, then random runs
//! against a byte model with frames and owner counts checked at the end.

use pi2vm::mm::addr::{Frame, VirtAddr, PAGE_SIZE};
use pi2vm::mm::desc::{Access as Ap, Translation};
use pi2vm::mm::file_object::{CacheStats, FileObject, IoError, PageSource};
use pi2vm::mm::kmem::KmemBudget;
use pi2vm::mm::layout::KERNEL_L1_PHYS;
use pi2vm::mm::page_cache::PageCache;
use pi2vm::mm::phys::{HostFrames, HostRam, PhysMem};
use pi2vm::mm::tlb::{Asid, EmulatedTlb};
use pi2vm::mm::uvm::{Access, FaultError, FrameRefs, Perm, RegionKind, UserVm};
use proptest::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

type Vm = UserVm<HostRam, EmulatedTlb>;

const RAM: u32 = 2 << 20;
const FIRST_FRAME: u32 = 0x100;
/// A file of five and a half pages.
const FILE_LEN: usize = 5 * PAGE_SIZE as usize + 0x800;
const BASE: u32 = 0x0040_0000;

/// A file in host memory that can be made to fail.
#[derive(Default)]
struct MemFile {
    bytes: Mutex<Vec<u8>>,
    fail_reads: AtomicBool,
    fail_writes: AtomicBool,
    reads: AtomicU32,
}

struct Source(Arc<MemFile>);

impl PageSource for Source {
    fn read_page(&self, index: u32, buf: &mut [u8]) -> Result<(), IoError> {
        let f = &self.0;
        if f.fail_reads.load(Ordering::Relaxed) {
            return Err(IoError::Failed);
        }
        f.reads.fetch_add(1, Ordering::Relaxed);
        let bytes = f.bytes.lock().unwrap();
        let start = index as usize * PAGE_SIZE as usize;
        let n = bytes.len().saturating_sub(start).min(buf.len());
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        // Garbage past the end: the object must zero it.
        buf[n..].fill(0xee);
        Ok(())
    }

    fn write_page(&self, index: u32, data: &[u8]) -> Result<(), IoError> {
        let f = &self.0;
        if f.fail_writes.load(Ordering::Relaxed) {
            return Err(IoError::NoSpace);
        }
        let mut bytes = f.bytes.lock().unwrap();
        let start = index as usize * PAGE_SIZE as usize;
        assert!(
            start + data.len() <= bytes.len(),
            "a write-back grew the file"
        );
        bytes[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

fn pattern(i: usize) -> u8 {
    (i * 7 + i / 4096) as u8 | 1
}

struct Rig {
    ram: HostRam,
    tlb: EmulatedTlb,
    alloc: HostFrames,
    refs: FrameRefs,
    file: Arc<MemFile>,
    object: Arc<FileObject>,
    stats: &'static CacheStats,
}

static BUDGET: KmemBudget = KmemBudget::new(u32::MAX);

impl Rig {
    fn new() -> Self {
        let ram = HostRam::new(RAM);
        let tlb = EmulatedTlb::new(&ram);
        let alloc = HostFrames::new(Frame::from_number(FIRST_FRAME), (RAM >> 12) - FIRST_FRAME);
        let file = Arc::new(MemFile::default());
        *file.bytes.lock().unwrap() = (0..FILE_LEN).map(pattern).collect();
        let stats: &'static CacheStats = Box::leak(Box::new(CacheStats::new()));
        let object = FileObject::new(
            Box::new(Source(file.clone())),
            FILE_LEN as u32,
            stats,
            &BUDGET,
        );
        Self {
            ram,
            tlb,
            alloc,
            refs: FrameRefs::new(),
            file,
            object,
            stats,
        }
    }

    fn vm(&mut self, asid: u8) -> Vm {
        Vm::new(
            self.ram.clone(),
            self.tlb.clone(),
            Asid::new(asid),
            &mut self.alloc,
        )
        .unwrap()
    }

    /// Maps the whole file (six pages, the last one half past the end, plus one page wholly
    /// past it) at BASE.
    fn map(&mut self, vm: &mut Vm, perm: Perm, shared: bool) {
        vm.add_file_region(
            VirtAddr::new(BASE),
            7 * PAGE_SIZE,
            perm,
            RegionKind::Anon,
            self.object.clone(),
            0,
            shared,
        )
        .unwrap();
    }

    fn mmu(&mut self, vm: &Vm, v: u32) -> Option<Translation> {
        self.tlb
            .translate(vm.l1_phys(), vm.asid(), KERNEL_L1_PHYS, VirtAddr::new(v))
    }

    fn access(&mut self, vm: &mut Vm, v: u32, access: Access) -> Result<Translation, FaultError> {
        let ok = |t: &Translation| match access {
            Access::Write => t.flags.unwrap().access == Ap::UserReadWrite,
            _ => true,
        };
        match self.mmu(vm, v) {
            Some(t) if ok(&t) => Ok(t),
            _ => {
                let va = VirtAddr::new(v);
                match vm.handle_fault(va, access, &mut self.alloc, &mut self.refs) {
                    // Read the page, as the kernel does for a process, and fault again.
                    Err(FaultError::NotCached) => {
                        let (object, index) = vm.file_page_at(va).expect("a file page");
                        object
                            .load(index, &mut self.ram, &mut self.alloc)
                            .map_err(FaultError::from)?;
                        vm.handle_fault(va, access, &mut self.alloc, &mut self.refs)?;
                    }
                    r => {
                        r?;
                    }
                }
                let t = self.mmu(vm, v).expect("resolved");
                assert!(ok(&t), "fault resolved without the access");
                Ok(t)
            }
        }
    }

    fn load(&mut self, vm: &mut Vm, v: u32) -> Result<u8, FaultError> {
        let t = self.access(vm, v, Access::Read)?;
        let mut b = [0];
        self.ram.read_bytes(t.pa, &mut b);
        Ok(b[0])
    }

    fn store(&mut self, vm: &mut Vm, v: u32, byte: u8) -> Result<(), FaultError> {
        let t = self.access(vm, v, Access::Write)?;
        self.ram.write_bytes(t.pa, &[byte]);
        Ok(())
    }

    fn frame_of(&mut self, vm: &Vm, v: u32) -> Frame {
        Frame::containing(self.mmu(vm, v).unwrap().pa)
    }

    fn disk(&self, i: usize) -> u8 {
        self.file.bytes.lock().unwrap()[i]
    }

    fn write_back(&self) -> Result<u32, IoError> {
        self.object.write_back_all(&self.ram)
    }

    /// Destroys the spaces, writes everything back, evicts the cache: every frame is back.
    fn finish(mut self, vms: Vec<Vm>) {
        for vm in vms {
            vm.destroy(&mut self.alloc, &mut self.refs).unwrap();
        }
        self.write_back().unwrap();
        let cached = self.object.resident();
        let gone = self
            .object
            .evict(u32::MAX, &self.refs, &self.ram, &mut self.alloc);
        assert_eq!(gone, cached, "an unmapped page was kept");
        assert_eq!(self.object.resident(), 0);
        assert_eq!(self.refs.shared_frames(), 0, "owner counts left behind");
        assert_eq!(
            self.alloc.free_count() as u32,
            (RAM >> 12) - FIRST_FRAME,
            "frames leaked"
        );
        assert_eq!(CacheStats::get(&self.stats.pages), 0);
        assert_eq!(CacheStats::get(&self.stats.dirty), 0);
        assert!(
            self.tlb.violations().is_empty(),
            "{:?}",
            self.tlb.violations()
        );
    }
}

#[test]
fn two_spaces_share_one_frame_per_page_of_a_program() {
    let mut r = Rig::new();
    let mut a = r.vm(1);
    let mut b = r.vm(2);
    r.map(&mut a, Perm::RX, false);
    r.map(&mut b, Perm::RX, false);
    r.access(&mut a, BASE + 0x10, Access::Execute).unwrap();
    r.access(&mut b, BASE + 0x20, Access::Execute).unwrap();
    assert_eq!(r.frame_of(&a, BASE), r.frame_of(&b, BASE));
    // The object and two mappings.
    let f = r.frame_of(&a, BASE);
    assert_eq!(r.refs.count(f), 3);
    assert_eq!(CacheStats::get(&r.stats.misses), 1);
    assert_eq!(CacheStats::get(&r.stats.hits), 1);
    assert_eq!(
        r.file.reads.load(Ordering::Relaxed),
        1,
        "one read for two processes"
    );
    r.finish(vec![a, b]);
}

#[test]
fn demand_paging_reads_only_the_pages_touched() {
    let mut r = Rig::new();
    let mut a = r.vm(1);
    r.map(&mut a, Perm::R, false);
    assert_eq!(
        r.load(&mut a, BASE + 3 * PAGE_SIZE + 5).unwrap(),
        pattern(3 * 4096 + 5)
    );
    assert_eq!(r.load(&mut a, BASE + 5).unwrap(), pattern(5));
    assert_eq!(r.file.reads.load(Ordering::Relaxed), 2);
    assert_eq!(r.object.resident(), 2);
    assert_eq!(a.resident_pages(), 2);
    r.finish(vec![a]);
}

#[test]
fn the_tail_of_the_last_page_reads_zero_and_a_page_past_the_end_is_beyond_end() {
    let mut r = Rig::new();
    let mut a = r.vm(1);
    r.map(&mut a, Perm::R, false);
    let last = BASE + 5 * PAGE_SIZE;
    assert_eq!(r.load(&mut a, last + 0x7ff).unwrap(), pattern(FILE_LEN - 1));
    assert_eq!(r.load(&mut a, last + 0x800).unwrap(), 0);
    assert_eq!(r.load(&mut a, last + 0xfff).unwrap(), 0);
    assert_eq!(r.load(&mut a, last + PAGE_SIZE), Err(FaultError::BeyondEnd));
    r.finish(vec![a]);
}

#[test]
fn a_private_write_copies_and_never_reaches_the_file() {
    let mut r = Rig::new();
    let mut a = r.vm(1);
    let mut b = r.vm(2);
    r.map(&mut a, Perm::RW, false);
    r.map(&mut b, Perm::RW, false);
    assert_eq!(r.load(&mut a, BASE + 1).unwrap(), pattern(1));
    let cached = r.frame_of(&a, BASE);
    r.store(&mut a, BASE + 1, 0x55).unwrap();
    assert_ne!(r.frame_of(&a, BASE), cached, "the cached frame was written");
    assert_eq!(
        r.refs.count(cached),
        1,
        "the copy's owner count was not dropped"
    );
    assert_eq!(r.load(&mut b, BASE + 1).unwrap(), pattern(1));
    // A write to a page not mapped yet copies at once.
    r.store(&mut b, BASE + PAGE_SIZE, 0x66).unwrap();
    assert_eq!(r.object.dirty_pages(), 0);
    assert_eq!(r.write_back().unwrap(), 0);
    assert_eq!(r.disk(1), pattern(1));
    assert_eq!(r.disk(4096), pattern(4096));
    r.finish(vec![a, b]);
}

#[test]
fn a_private_mapping_forks_copy_on_write() {
    let mut r = Rig::new();
    let mut a = r.vm(1);
    r.map(&mut a, Perm::RW, false);
    r.load(&mut a, BASE).unwrap();
    r.store(&mut a, BASE + PAGE_SIZE, 9).unwrap();
    let mut c = a
        .fork(
            Asid::new(2),
            r.ram.clone(),
            r.tlb.clone(),
            &mut r.alloc,
            &mut r.refs,
        )
        .unwrap();
    assert_eq!(r.frame_of(&a, BASE), r.frame_of(&c, BASE));
    let f = r.frame_of(&a, BASE);
    assert_eq!(r.refs.count(f), 3);
    r.store(&mut c, BASE + PAGE_SIZE, 10).unwrap();
    assert_eq!(r.load(&mut a, BASE + PAGE_SIZE).unwrap(), 9);
    assert_eq!(r.load(&mut c, BASE + PAGE_SIZE).unwrap(), 10);
    r.finish(vec![a, c]);
}

#[test]
fn shared_writes_reach_the_file_on_write_back_and_stay_dirty_while_writable() {
    let mut r = Rig::new();
    let mut a = r.vm(1);
    let mut b = r.vm(2);
    r.map(&mut a, Perm::RW, true);
    r.map(&mut b, Perm::RW, true);
    assert_eq!(r.load(&mut a, BASE + 2).unwrap(), pattern(2));
    assert_eq!(r.object.dirty_pages(), 0, "a read dirtied the page");
    r.store(&mut a, BASE + 2, 0x42).unwrap();
    assert_eq!(
        r.load(&mut b, BASE + 2).unwrap(),
        0x42,
        "b does not see a's write"
    );
    assert_eq!(r.frame_of(&a, BASE), r.frame_of(&b, BASE));
    assert_eq!(r.object.dirty_pages(), 1);
    assert_eq!(r.write_back().unwrap(), 1);
    assert_eq!(r.disk(2), 0x42);
    // `a` still maps it writable: still dirty, and a later write is not lost.
    assert_eq!(r.object.dirty_pages(), 1);
    r.store(&mut a, BASE + 3, 0x43).unwrap();
    // A write into the tail past the end of the file stays in memory only.
    r.store(&mut a, BASE + 5 * PAGE_SIZE + 0x900, 0x44).unwrap();
    a.remove(
        VirtAddr::new(BASE),
        7 * PAGE_SIZE,
        &mut r.alloc,
        &mut r.refs,
    )
    .unwrap();
    // The pages stay dirty in the cache (no I/O at munmap); the flusher writes them back.
    assert_eq!(r.object.dirty_pages(), 2);
    assert!(r.object.has_settled_dirt());
    assert_eq!(r.write_back().unwrap(), 2);
    assert_eq!(r.disk(3), 0x43, "the write after msync was lost");
    assert_eq!(r.file.bytes.lock().unwrap().len(), FILE_LEN);
    assert_eq!(r.object.dirty_pages(), 0);
    r.finish(vec![a, b]);
}

#[test]
fn what_a_process_wrote_is_dirty_after_it_exits_and_written_back_once() {
    let mut r = Rig::new();
    let mut a = r.vm(1);
    r.map(&mut a, Perm::RW, true);
    r.store(&mut a, BASE + 4 * PAGE_SIZE, 0x77).unwrap();
    a.destroy(&mut r.alloc, &mut r.refs).unwrap();
    // Not mapped writable any more: the next write-back leaves it clean.
    assert!(r.object.has_settled_dirt());
    assert_eq!(r.write_back().unwrap(), 1);
    assert_eq!(r.disk(4 * 4096), 0x77);
    assert!(!r.object.has_settled_dirt());
    r.finish(vec![]);
}

#[test]
fn a_read_error_maps_nothing_and_a_retry_succeeds() {
    let mut r = Rig::new();
    let mut a = r.vm(1);
    r.map(&mut a, Perm::R, false);
    let free = r.alloc.free_count();
    r.file.fail_reads.store(true, Ordering::Relaxed);
    assert_eq!(r.load(&mut a, BASE), Err(FaultError::Io));
    assert_eq!(r.alloc.free_count(), free, "a frame leaked on a read error");
    assert_eq!(a.resident_pages(), 0);
    assert_eq!(CacheStats::get(&r.stats.read_errors), 1);
    r.file.fail_reads.store(false, Ordering::Relaxed);
    assert_eq!(r.load(&mut a, BASE).unwrap(), pattern(0));
    r.finish(vec![a]);
}

#[test]
fn a_failed_write_back_keeps_the_page_dirty_and_loses_nothing() {
    let mut r = Rig::new();
    let mut a = r.vm(1);
    r.map(&mut a, Perm::RW, true);
    r.store(&mut a, BASE, 0x11).unwrap();
    r.file.fail_writes.store(true, Ordering::Relaxed);
    assert_eq!(
        a.sync(VirtAddr::new(BASE), PAGE_SIZE),
        Err(pi2vm::mm::uvm::UvmError::Io(IoError::NoSpace))
    );
    a.remove(VirtAddr::new(BASE), PAGE_SIZE, &mut r.alloc, &mut r.refs)
        .unwrap();
    assert_eq!(r.write_back(), Err(IoError::NoSpace));
    assert_eq!(r.object.dirty_pages(), 1);
    // Not evicted while dirty and unwritable.
    assert_eq!(r.object.evict(u32::MAX, &r.refs, &r.ram, &mut r.alloc), 0);
    r.file.fail_writes.store(false, Ordering::Relaxed);
    assert_eq!(r.write_back().unwrap(), 1);
    assert_eq!(r.disk(0), 0x11);
    r.finish(vec![a]);
}

#[test]
fn eviction_skips_mapped_pages_and_a_detached_file_lets_its_mappers_keep_their_pages() {
    let mut r = Rig::new();
    let mut a = r.vm(1);
    r.map(&mut a, Perm::R, false);
    r.load(&mut a, BASE).unwrap();
    let mut buf = [0u8; 16];
    r.object
        .read(2 * PAGE_SIZE, &mut buf, &mut r.ram, &mut r.alloc)
        .unwrap();
    assert_eq!(buf[3], pattern(2 * 4096 + 3));
    assert_eq!(r.object.resident(), 2);
    assert_eq!(r.object.evict(u32::MAX, &r.refs, &r.ram, &mut r.alloc), 1);
    assert_eq!(r.object.resident(), 1);
    let frame = r.frame_of(&a, BASE);
    r.object.detach(&mut r.refs, &mut r.alloc);
    assert_eq!(
        r.load(&mut a, BASE).unwrap(),
        pattern(0),
        "a mapped page went"
    );
    assert_eq!(r.refs.count(frame), 1);
    assert_eq!(r.load(&mut a, BASE + PAGE_SIZE), Err(FaultError::BeyondEnd));
    r.finish(vec![a]);
}

#[test]
fn the_cache_drops_objects_nobody_holds_once_their_pages_are_gone() {
    let r = Rig::new();
    let stats: &'static CacheStats = Box::leak(Box::new(CacheStats::new()));
    let mut cache = PageCache::new(stats);
    let mut alloc = r.alloc;
    let obj = cache.open::<()>("/bin/x", || Ok(r.object.clone())).unwrap();
    let mut ram = r.ram.clone();
    obj.page(0, false, &mut ram, &mut alloc).unwrap();
    drop(obj);
    let again = cache.open::<()>("/bin/x", || panic!("not cached")).unwrap();
    assert_eq!(again.resident(), 1);
    drop(again);
    let refs = FrameRefs::new();
    // Rig's own reference keeps the object alive: only its page goes.
    assert_eq!(cache.shrink(10, &refs, &ram, &mut alloc), 1);
    assert_eq!(cache.files(), 1);
    drop(r.object);
    assert_eq!(cache.shrink(10, &refs, &ram, &mut alloc), 0);
    assert_eq!(cache.files(), 0);
}

// ----- random runs against a model ------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// space, shared, writable
    Map(usize, bool, bool),
    /// space, byte offset in the file
    Read(usize, usize),
    /// space, byte offset, value
    Write(usize, usize, u8),
    /// parent, child
    Fork(usize, usize),
    WriteBack,
    Evict,
    Unmap(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let sp = 0..3usize;
    let off = 0..FILE_LEN;
    prop_oneof![
        1 => (sp.clone(), any::<bool>(), any::<bool>()).prop_map(|(s, sh, w)| Op::Map(s, sh, w)),
        4 => (sp.clone(), off.clone()).prop_map(|(s, o)| Op::Read(s, o)),
        4 => (sp.clone(), off, 1..=255u8).prop_map(|(s, o, b)| Op::Write(s, o, b)),
        1 => (sp.clone(), sp.clone()).prop_map(|(a, b)| Op::Fork(a, b)),
        1 => Just(Op::WriteBack),
        1 => Just(Op::Evict),
        1 => sp.prop_map(Op::Unmap),
    ]
}

/// What a space maps at BASE in the model.
#[derive(Clone)]
struct MSpace {
    shared: bool,
    writable: bool,
    /// Private copies: page -> bytes.
    copies: std::collections::BTreeMap<usize, Vec<u8>>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn file_mappings_match_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let mut r = Rig::new();
        let mut vms: Vec<Option<Vm>> = vec![None, None, None];
        let mut model: Vec<Option<MSpace>> = vec![None, None, None];
        // The bytes every shared mapping and every uncopied private page sees.
        let mut content: Vec<u8> = r.file.bytes.lock().unwrap().clone();
        let mut next_asid = 1u8;
        for op in ops {
            match op {
                Op::Map(s, shared, writable) => {
                    if vms[s].is_none() {
                        let mut vm = r.vm(next_asid);
                        next_asid += 1;
                        let perm = if writable { Perm::RW } else { Perm::R };
                        r.map(&mut vm, perm, shared);
                        vms[s] = Some(vm);
                        model[s] = Some(MSpace { shared, writable, copies: Default::default() });
                    }
                }
                Op::Read(s, o) => {
                    if let (Some(vm), Some(m)) = (vms[s].as_mut(), model[s].as_ref()) {
                        let want = match m.copies.get(&(o / 4096)) {
                            Some(c) => c[o % 4096],
                            None => content[o],
                        };
                        let got = r.load(vm, BASE + o as u32).unwrap();
                        prop_assert_eq!(got, want, "read at {:#x}", o);
                    }
                }
                Op::Write(s, o, b) => {
                    if let (Some(vm), Some(m)) = (vms[s].as_mut(), model[s].as_mut()) {
                        let res = r.store(vm, BASE + o as u32, b);
                        if !m.writable {
                            prop_assert_eq!(res, Err(FaultError::Protection));
                        } else if m.shared {
                            res.unwrap();
                            content[o] = b;
                        } else {
                            res.unwrap();
                            let p = o / 4096;
                            let page = m.copies.entry(p).or_insert_with(|| {
                                let mut v = vec![0u8; 4096];
                                let end = ((p + 1) * 4096).min(FILE_LEN);
                                v[..end - p * 4096].copy_from_slice(&content[p * 4096..end]);
                                v
                            });
                            page[o % 4096] = b;
                        }
                    }
                }
                Op::Fork(a, b) => {
                    if a != b && vms[b].is_none() {
                        if let Some(vm) = vms[a].as_mut() {
                            let child = vm.fork(Asid::new(next_asid), r.ram.clone(), r.tlb.clone(), &mut r.alloc, &mut r.refs).unwrap();
                            next_asid += 1;
                            vms[b] = Some(child);
                            model[b] = model[a].clone();
                        }
                    }
                }
                Op::WriteBack => {
                    r.write_back().unwrap();
                    let disk = r.file.bytes.lock().unwrap().clone();
                    prop_assert!(disk == content, "the file differs from what was written");
                }
                Op::Evict => {
                    r.object.evict(u32::MAX, &r.refs, &r.ram, &mut r.alloc);
                }
                Op::Unmap(s) => {
                    if let Some(vm) = vms[s].take() {
                        model[s] = None;
                        vm.destroy(&mut r.alloc, &mut r.refs).unwrap();
                    }
                }
            }
            prop_assert!(r.tlb.violations().is_empty());
        }
        let spaces: Vec<Vm> = vms.into_iter().flatten().collect();
        let file = r.file.clone();
        r.finish(spaces);
        prop_assert!(*file.bytes.lock().unwrap() == content, "shared writes were lost");
    }
}

#[test]
fn the_clock_unmaps_shared_file_pages_and_the_cache_can_then_write_them_back_and_let_them_go() {
    let mut r = Rig::new();
    let mut a = r.vm(1);
    r.map(&mut a, Perm::RW, true);
    r.store(&mut a, BASE + 9, 0x5a).unwrap();
    assert_eq!(r.load(&mut a, BASE + PAGE_SIZE).unwrap(), pattern(4096));
    let c = a.clock(VirtAddr::new(BASE), 16, 16, &mut r.refs, &mut r.alloc);
    assert_eq!(c.dropped, 2, "both mappings dropped");
    assert!(
        c.victims.is_empty(),
        "a shared file page is the cache's, never a swap victim"
    );
    assert_eq!(a.resident_pages(), 0);
    // Nobody writes it any more: written back, then the cache may let both pages go.
    assert!(r.object.has_settled_dirt());
    assert_eq!(r.write_back().unwrap(), 1);
    assert_eq!(r.disk(9), 0x5a);
    assert_eq!(r.object.evict(u32::MAX, &r.refs, &r.ram, &mut r.alloc), 2);
    // A later use reads the file again and sees the write.
    assert_eq!(r.load(&mut a, BASE + 9).unwrap(), 0x5a);
    r.finish(vec![a]);
}
