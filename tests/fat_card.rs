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
