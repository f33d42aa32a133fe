//! The FAT glue (`pi2vm::fs`) and the MBR parser over a RAM disk laid out like the card
//! `tests/mksdcard.sh` makes: an MBR, a FAT32 partition at 1 MiB with `/bin` and a few files. The
//! FAT itself is made by `mkfs.fat` and filled by `mcopy`/`mmd` (dosfstools and mtools, installed
//! by `tests/deps.sh`) at test time.

use pi2vm::block::{mbr, Block, BlockCount, BlockDevice, BlockIdx, Partition, RamDisk};
use pi2vm::fs;
use std::path::PathBuf;
use std::process::Command;

const PART_START: u32 = 2048;
/// 34 MiB: enough clusters of one sector for FAT32 (at least 65525).
const PART_BLOCKS: u32 = 34 * 2048;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (install dosfstools and mtools: tests/deps.sh build)")
    });
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Files put on the test card: path and contents.
fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "/bin/hello",
            (0..3000u32).map(|i| (i * 7 + 3) as u8).collect(),
        ),
        ("/bin/true", b"\x7fELF tiny".to_vec()),
        ("/config.txt", b"kernel=kernel7.img\n".to_vec()),
    ]
}

fn card() -> RamDisk {
    let dir = std::env::temp_dir().join(format!(
        "pi2vm-fat-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let part: PathBuf = dir.join("part.img");
    let _ = std::fs::remove_file(&part);
    run(Command::new("mkfs.fat")
        .args(["-F", "32", "-s", "1", "-n", "TESTCARD", "-C"])
        .arg(&part)
        .arg((PART_BLOCKS / 2).to_string()));
    let img = part.to_str().unwrap();
    run(Command::new("mmd").args(["-i", img, "::bin"]));
    for (path, data) in files() {
        let src = dir.join(path.trim_start_matches('/').replace('/', "_"));
        std::fs::write(&src, data).unwrap();
        run(Command::new("mcopy")
            .args(["-i", img])
            .arg(&src)
            .arg(format!("::{path}")));
    }
    let fat = std::fs::read(&part).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let total = PART_START + PART_BLOCKS + 16;
    let disk = RamDisk::new(total);
    let mut b0 = Block::new();
    mbr::write_entry(&mut b0, 0, true, 0x0C, PART_START, PART_BLOCKS);
    disk.write_blocks(BlockIdx(0), &[b0]).unwrap();
    let blocks: Vec<Block> = fat
        .chunks(512)
        .map(|c| {
            let mut b = Block::new();
            b.contents[..c.len()].copy_from_slice(c);
            b
        })
        .collect();
    disk.write_blocks(BlockIdx(PART_START), &blocks).unwrap();
    disk
}

#[test]
fn the_mbr_of_the_card_has_its_fat32_partition() {
    let d = card();
    let p = fs::fat32_partition(&d).unwrap();
    assert_eq!(
        (p.start, p.count, p.bootable),
        (BlockIdx(PART_START), BlockCount(PART_BLOCKS), true)
    );
    // The partition's first block is a FAT32 boot sector.
    let part = Partition::new(&d, p.start, p.count).unwrap();
    let mut b = [Block::new()];
    part.read_blocks(BlockIdx(0), &mut b).unwrap();
    assert_eq!(&b[0].contents[82..87], b"FAT32");
}

#[test]
fn ls_of_bin_lists_the_programs_with_their_sizes() {
    let d = card();
    let mut names: Vec<_> = fs::list_dir(&d, "/bin")
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.size, e.is_dir))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("hello".to_string(), 3000, false),
            ("true".to_string(), 9, false)
        ]
    );
    let root = fs::list_dir(&d, "/").unwrap();
    assert!(root.iter().any(|e| e.name == "bin" && e.is_dir));
    assert!(root.iter().any(|e| e.name == "config.txt" && e.size == 19));
}

#[test]
fn files_read_back_byte_for_byte() {
    let d = card();
    for (path, data) in files() {
        assert_eq!(fs::read_file(&d, path).unwrap(), data, "{path}");
    }
}

#[test]
fn missing_paths_and_wrong_kinds_are_errors() {
    let d = card();
    assert!(matches!(
        fs::read_file(&d, "/bin/nosuch"),
        Err(fs::FsError::NotFound(_))
    ));
    assert!(matches!(
        fs::list_dir(&d, "/nodir"),
        Err(fs::FsError::NotFound(_))
    ));
    assert!(fs::read_file(&d, "/bin").is_err());
    assert!(fs::list_dir(&d, "/config.txt").is_err());
}

#[test]
fn a_file_over_the_limit_is_refused_with_its_size() {
    let d = card();
    let (path, data) = files().into_iter().next().unwrap();
    let len = data.len();
    assert!(matches!(
        fs::read_file_max(&d, path, len - 1),
        Err(fs::FsError::TooBig(n)) if n as usize == len
    ));
    assert_eq!(fs::read_file_max(&d, path, len).unwrap(), data);
}

#[test]
fn the_head_of_a_file_reads_only_what_was_asked() {
    let d = card();
    let (path, data) = files().into_iter().next().unwrap();
    let (head, length) = fs::read_head(&d, path, 100).unwrap();
    assert_eq!(
        (head.as_slice(), length as usize),
        (&data[..100], data.len())
    );
    let (all, length) = fs::read_head(&d, path, 1 << 20).unwrap();
    assert_eq!((all, length as usize), (data.clone(), data.len()));
    let (none, _) = fs::read_head(&d, path, 0).unwrap();
    assert!(none.is_empty());
}

#[test]
fn a_written_file_reads_back() {
    let d = card();
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    fs::write_file(&d, "/scratch.bin", &data).unwrap();
    assert_eq!(fs::read_file(&d, "/scratch.bin").unwrap(), data);
    assert_eq!(fs::read_file(&d, "/bin/hello").unwrap(), files()[0].1);
}

#[test]
fn a_disk_without_an_mbr_is_an_error_not_a_panic() {
    let d = RamDisk::new(64);
    assert!(fs::fat32_partition(&d).is_err());
    assert!(fs::list_dir(&d, "/").is_err());
}

// ----- the page cache over the FAT crate --------------------------------------------------------

mod page_cache {
    use super::*;
    use pi2vm::fs::page_source::FatPageSource;
    use pi2vm::mm::addr::{Frame, VirtAddr, PAGE_SIZE};
    use pi2vm::mm::file_object::{CacheStats, FileObject};
    use pi2vm::mm::kmem::KmemBudget;
    use pi2vm::mm::layout::KERNEL_L1_PHYS;
    use pi2vm::mm::phys::{HostFrames, HostRam, PhysMem};
    use pi2vm::mm::tlb::{Asid, EmulatedTlb};
    use pi2vm::mm::uvm::{Access, FrameRefs, Perm, RegionKind, UserVm};

    static BUDGET: KmemBudget = KmemBudget::new(u32::MAX);
    const RAM: u32 = 2 << 20;
    const BASE: u32 = 0x40_0000;

    /// A file of the card as a page-cache object, through the FAT crate.
    fn object(disk: &'static RamDisk, path: &str, len: u32) -> std::sync::Arc<FileObject> {
        let stats: &'static CacheStats = Box::leak(Box::new(CacheStats::new()));
        let source = FatPageSource::new(disk, path.to_string());
        FileObject::new(Box::new(source), len, stats, &BUDGET)
    }

    #[test]
    fn two_spaces_share_a_card_file_and_a_shared_write_reaches_the_card() {
        let disk: &'static RamDisk = Box::leak(Box::new(card()));
        let hello = files()[0].1.clone();
        let obj = object(disk, "/bin/hello", hello.len() as u32);
        let ram = HostRam::new(RAM);
        let tlb = EmulatedTlb::new(&ram);
        let mut alloc = HostFrames::new(Frame::from_number(0x100), (RAM >> 12) - 0x100);
        let mut refs = FrameRefs::new();
        let mut spaces: Vec<UserVm<HostRam, EmulatedTlb>> = (1..=2)
            .map(|a| UserVm::new(ram.clone(), tlb.clone(), Asid::new(a), &mut alloc).unwrap())
            .collect();
        for vm in &mut spaces {
            vm.add_file_region(
                VirtAddr::new(BASE),
                PAGE_SIZE,
                Perm::RW,
                RegionKind::Anon,
                obj.clone(),
                0,
                true,
            )
            .unwrap();
            // The first fault finds the page not cached: it is read, and the fault resolved.
            let va = VirtAddr::new(BASE + 9);
            if vm.handle_fault(va, Access::Write, &mut alloc, &mut refs)
                == Err(pi2vm::mm::uvm::FaultError::NotCached)
            {
                let (o, index) = vm.file_page_at(va).unwrap();
                o.load(index, &mut ram.clone(), &mut alloc).unwrap();
                vm.handle_fault(va, Access::Write, &mut alloc, &mut refs)
                    .unwrap();
            }
        }
        let mut tlb2 = tlb.clone();
        let pa = |vm: &UserVm<HostRam, EmulatedTlb>, tlb: &mut EmulatedTlb| {
            tlb.translate(vm.l1_phys(), vm.asid(), KERNEL_L1_PHYS, VirtAddr::new(BASE))
                .unwrap()
                .pa
        };
        let (a, b) = (pa(&spaces[0], &mut tlb2), pa(&spaces[1], &mut tlb2));
        assert_eq!(a, b, "two frames for one page of one file");
        assert_eq!(
            refs.count(Frame::containing(a)),
            3,
            "the cache and two mappings"
        );
        let mut first = [0u8; 16];
        ram.read_bytes(a, &mut first);
        assert_eq!(first[..], hello[..16], "the page is not the file's");
        // A write through the shared mapping, written back through the FAT crate.
        let mut ram2 = ram.clone();
        ram2.write_bytes(pi2vm::mm::addr::PhysAddr::new(a.as_u32() + 9), &[0xAB]);
        assert_eq!(obj.write_back_all(&ram).unwrap(), 1);
        let on_card = fs::read_file(disk, "/bin/hello").unwrap();
        assert_eq!(
            on_card.len(),
            hello.len(),
            "a write-back changed the file's length"
        );
        assert_eq!(on_card[9], 0xAB);
        assert_eq!(on_card[..9], hello[..9]);
        assert_eq!(on_card[10..], hello[10..]);
        for vm in spaces {
            vm.destroy(&mut alloc, &mut refs).unwrap();
        }
        // Written while writable mappings remained: dirty until a write-back after they went.
        assert_eq!(obj.evict(u32::MAX, &refs, &ram, &mut alloc), 0);
        assert_eq!(obj.write_back_all(&ram).unwrap(), 1);
        assert_eq!(obj.evict(u32::MAX, &refs, &ram, &mut alloc), 1);
        assert_eq!(refs.shared_frames(), 0);
        assert_eq!(
            alloc.free_count() as u32,
            (RAM >> 12) - 0x100,
            "frames leaked"
        );
    }

    #[test]
    fn a_page_past_the_end_and_a_missing_file_are_errors() {
        let disk: &'static RamDisk = Box::leak(Box::new(card()));
        let ram = HostRam::new(RAM);
        let mut ram2 = ram.clone();
        let mut alloc = HostFrames::new(Frame::from_number(0x100), (RAM >> 12) - 0x100);
        let obj = object(disk, "/bin/hello", 3000);
        assert!(obj.page(1, false, &mut ram2, &mut alloc).is_err());
        let gone = object(disk, "/bin/nosuch", 3000);
        let e = gone.page(0, false, &mut ram2, &mut alloc).unwrap_err();
        assert!(
            matches!(e, pi2vm::mm::file_object::FileError::Io(_)),
            "{e:?}"
        );
        assert_eq!(
            alloc.free_count() as u32,
            (RAM >> 12) - 0x100,
            "a frame leaked"
        );
    }
}

#[test]
fn a_full_volume_refuses_a_write_and_keeps_the_other_files() {
    let d = card();
    let chunk = vec![0x5Au8; 1 << 20];
    let mut full = None;
    for i in 0..64 {
        match fs::write_file(&d, &format!("/fill{i}.bin"), &chunk) {
            Ok(()) => {}
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let e = full.expect("34 MiB never filled up");
    // Either the crate says the disk is full, or it tried to put the last cluster past the end
    // of the partition (embedded-sdmmc 0.10 does, with this layout) and the fence in
    // `fs::FatDisk` refused the write: an error either way, and nothing outside the partition
    // was touched.
    match &e {
        fs::FsError::Full => assert_eq!(e.to_string(), "no space left on the card"),
        fs::FsError::Block(pi2vm::block::BlockError::OutOfRange { start, .. }) => {
            assert_eq!(*start, PART_START + PART_BLOCKS, "{e}")
        }
        e => panic!("filling the card: {e}"),
    }
    let mut tail = vec![Block::new(); 16];
    d.read_blocks(BlockIdx(PART_START + PART_BLOCKS), &mut tail)
        .unwrap();
    assert!(
        tail.iter().all(|b| b.contents.iter().all(|&x| x == 0)),
        "blocks past the partition were written"
    );
    for (path, data) in files() {
        assert_eq!(fs::read_file(&d, path).unwrap(), data, "{path} changed");
    }
    // In-place writes need no new cluster: they still work on the full card.
    fs::write_at(&d, "/bin/hello", 10, b"xyz").unwrap();
    assert_eq!(&fs::read_file(&d, "/bin/hello").unwrap()[10..13], b"xyz");
    // But they never make a file longer.
    let e = fs::write_at(&d, "/bin/hello", 2999, b"ab").unwrap_err();
    assert!(matches!(e, fs::FsError::TooBig(3000)), "{e}");
}

#[test]
fn a_corrupt_fat_is_an_error_not_a_panic() {
    // The boot sector's signature (0x55AA) gone: no volume.
    let d = card();
    let mut b = [Block::new()];
    d.read_blocks(BlockIdx(PART_START), &mut b).unwrap();
    b[0].contents[510] = 0;
    b[0].contents[511] = 0;
    d.write_blocks(BlockIdx(PART_START), &b).unwrap();
    assert!(fs::list_dir(&d, "/bin").is_err());
    assert!(fs::read_file(&d, "/config.txt").is_err());
    // Every FAT entry of the first FAT sectors set to a cluster far past the end: reading a file
    // whose chain goes through them fails (or reads what it can), it never panics or hangs.
    let d = card();
    d.read_blocks(BlockIdx(PART_START), &mut b).unwrap();
    let reserved = u32::from(u16::from_le_bytes([b[0].contents[14], b[0].contents[15]]));
    for s in 0..4 {
        let mut fat = [Block::new()];
        let idx = BlockIdx(PART_START + reserved + s);
        d.read_blocks(idx, &mut fat).unwrap();
        for (i, w) in fat[0].contents.chunks_mut(4).enumerate() {
            if s > 0 || i > 2 {
                w.copy_from_slice(&0x0FFF_FFF0u32.to_le_bytes());
            }
        }
        d.write_blocks(idx, &fat).unwrap();
    }
    let _ = fs::list_dir(&d, "/bin");
    let _ = fs::read_file(&d, "/bin/hello");
    let _ = fs::read_at(&d, "/bin/hello", 2048, &mut [0u8; 512]);
}
