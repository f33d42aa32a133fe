//! The SD card through the EMMC driver and the FAT glue. `make test` runs these with the card
//! image attached (ELF and board runs) and without a card (image run): with a card they check
//! identification, the MBR, `/bin`, byte-exact file reads, multi-block reads and a write; without
//! one they check that identification fails with an error, promptly, instead of hanging.
//! (`tests/qemu-run.sh` checks from the boot log which case each run was.)

use super::Entry;
use crate::abi::errno;
use crate::block::{Block, BlockDevice, BlockIdx};
use crate::bsp::raspi2::emmc::EMMC;
use crate::elf::ElfError;
use crate::mm::file_object::CacheStats;
use crate::mm::{Frame, VirtAddr, PAGE_SIZE};
use crate::proc::{self, ExitStatus, SpawnError, KERNEL_PID};
use crate::{fs, programs, vm};
use alloc::string::ToString;

pub const ENTRIES: &[Entry] = &[
    Entry::Test("storage::card_identified_or_cleanly_absent", identify),
    Entry::Test("storage::mbr_has_the_fat32_partition", mbr),
    Entry::Test("storage::bin_lists_the_programs", ls_bin),
    Entry::Test("storage::bin_hello_is_the_embedded_elf", hello_bytes),
    Entry::Test("storage::multi_block_read_equals_single_reads", multi_block),
    Entry::Test("storage::scratch_write_reads_back", scratch_write),
    Entry::Test("storage::out_of_range_is_an_error", out_of_range),
    Entry::Test("storage::bin_hello_from_the_card_runs", card_hello_runs),
    Entry::Test("storage::missing_program_file_is_enoent", missing_file),
    Entry::Test("storage::a_file_that_is_not_elf_is_enoexec", not_elf),
    Entry::Test("storage::spawn_syscall_starts_and_waits", spawn_syscall),
    Entry::Test("storage::gcc_thumb_program_from_the_card_runs", gcc_thumb),
    Entry::Test("storage::two_processes_share_text_frames", shared_text),
    Entry::Test(
        "storage::file_mappings_private_shared_past_end_bad",
        file_mappings,
    ),
    Entry::Test(
        "storage::page_cache_shrinks_to_what_is_mapped",
        cache_shrink,
    ),
    Entry::Test(
        "storage::a_read_error_in_a_page_in_kills_only_that_process",
        read_error,
    ),
    Entry::Test(
        "storage::truncated_and_foreign_files_are_refused",
        bad_files,
    ),
    Entry::Test(
        "storage::card_waits_sleep_on_the_interrupt_while_processes_run",
        card_interrupts,
    ),
];

/// Free frames plus the frames the page cache holds: what must balance when programs from the
/// card come and go (their pages stay cached after them).
fn free_or_cached() -> u32 {
    vm::free_frames() + CacheStats::get(&proc::files::CACHE_STATS.pages)
}

/// The card image `tests/mksdcard.sh` makes: 128 MiB, FAT32 from block 2048 for 60 MiB, swap
/// after it for 64 MiB, the last 3 MiB unpartitioned.
const CARD_BLOCKS: u32 = 128 * 2048;
const PART_START: u32 = 2048;
const PART_BLOCKS: u32 = 60 * 2048;

fn identify() {
    // The report on lines of its own, as in the boot log.
    println!();
    let t0 = crate::arch::arm::timer::now();
    match crate::init::report_card() {
        Some(c) => {
            assert_eq!(c.blocks, CARD_BLOCKS, "the test card is 128 MiB");
            assert_eq!(c.bus_width, 4);
            assert!(c.data_clock <= 25_000_000 && c.data_clock > 0);
            assert_eq!(EMMC.num_blocks().0, CARD_BLOCKS);
        }
        None => {
            let hz = crate::arch::arm::timer::frequency().unwrap_or(62_500_000);
            let ms = (crate::arch::arm::timer::now() - t0) * 1000 / u64::from(hz);
            println!("(no card: the driver gave up after {ms} ms) ");
            assert!(ms < 5000, "finding no card took {ms} ms");
            let mut b = [Block::new()];
            assert!(EMMC.read_blocks(BlockIdx(0), &mut b).is_err());
            assert!(fs::list_dir(&EMMC, "/bin").is_err());
        }
    }
}

/// True (and says so) when there is no card: the remaining tests have nothing to check.
fn no_card() -> bool {
    let none = EMMC.card().is_none();
    if none {
        print!("(no card) ");
    }
    none
}

fn mbr() {
    if no_card() {
        return;
    }
    let p = fs::fat32_partition(&EMMC).expect("MBR with a FAT32 partition");
    assert_eq!(p.start.0, PART_START);
    assert_eq!(p.count.0, PART_BLOCKS);
    assert!(p.bootable);
}

fn ls_bin() {
    if no_card() {
        return;
    }
    let entries = fs::list_dir(&EMMC, "/bin").expect("ls /bin");
    for &(name, image) in programs::PROGRAMS {
        let e = entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("/bin has no {name}"));
        assert_eq!(e.size as usize, image.len(), "size of /bin/{name}");
    }
    // And `thello`, built by GCC (tests/data/).
    assert!(
        entries.iter().any(|e| e.name == "thello"),
        "/bin has no thello"
    );
    assert_eq!(entries.len(), programs::PROGRAMS.len() + 1);
}

fn hello_bytes() {
    if no_card() {
        return;
    }
    let data = fs::read_file(&EMMC, "/bin/hello").expect("read /bin/hello");
    assert!(data == programs::find("hello").expect("hello embedded"));
}

fn multi_block() {
    if no_card() {
        return;
    }
    // Across the FAT and into the data area of the partition.
    let start = PART_START + 30;
    let mut multi = alloc::vec![Block::new(); 40];
    EMMC.read_blocks(BlockIdx(start), &mut multi)
        .expect("multi-block read");
    for (i, m) in multi.iter().enumerate() {
        let mut one = [Block::new()];
        EMMC.read_blocks(BlockIdx(start + i as u32), &mut one)
            .expect("single-block read");
        assert!(
            one[0].contents == m.contents,
            "block {} differs",
            start + i as u32
        );
    }
}

fn scratch_write() {
    if no_card() {
        return;
    }
    // Past the partition: the card's last 3 MiB belong to no file system.
    // In the last 3 MiB, which no partition holds.
    let scratch = CARD_BLOCKS - 2048 + 100;
    let seed = crate::arch::arm::timer::now() as u32;
    let mut blocks = alloc::vec![Block::new(); 3];
    for (i, b) in blocks.iter_mut().enumerate() {
        for (j, byte) in b.contents.iter_mut().enumerate() {
            *byte = (seed as usize + i * 131 + j * 7) as u8;
        }
    }
    EMMC.write_blocks(BlockIdx(scratch), &blocks[..1])
        .expect("single-block write");
    EMMC.write_blocks(BlockIdx(scratch + 1), &blocks[1..])
        .expect("multi-block write");
    let mut back = alloc::vec![Block::new(); 3];
    EMMC.read_blocks(BlockIdx(scratch), &mut back)
        .expect("read back");
    for i in 0..3 {
        assert!(back[i].contents == blocks[i].contents, "scratch block {i}");
    }
    // The file system is untouched.
    assert!(fs::read_file(&EMMC, "/bin/hello").expect("hello") == programs::find("hello").unwrap());
}

fn out_of_range() {
    if no_card() {
        return;
    }
    let mut b = [Block::new(), Block::new()];
    assert!(EMMC.read_blocks(BlockIdx(CARD_BLOCKS - 1), &mut b).is_err());
}

fn card_hello_runs() {
    if no_card() {
        // Without a card a path gives a card error, not a crash.
        let e = proc::spawn_path("/bin/hello", 0).unwrap_err();
        assert!(matches!(e, SpawnError::Card(_)), "{e}");
        return;
    }
    // Once, so that the kernel heap has grown to hold the file; then frames must balance.
    let pid = proc::spawn_path("/bin/hello", 0).expect("spawn /bin/hello");
    assert_eq!(proc::wait(pid), ExitStatus::Exited(0));
    let free = vm::free_frames();
    let pid = proc::spawn_program("/bin/hello", 0, KERNEL_PID).expect("spawn /bin/hello");
    assert_eq!(proc::wait(pid), ExitStatus::Exited(0));
    assert_eq!(vm::free_frames(), free, "frames lost");
}

fn missing_file() {
    if no_card() {
        return;
    }
    let e = proc::spawn_path("/bin/nosuch", 0).unwrap_err();
    assert_eq!(e, SpawnError::NoSuchFile("/bin/nosuch".into()));
    assert!(e.to_string().contains("no such file"), "{e}");
    assert_eq!(e.errno(), errno::ENOENT);
    // A bare name that is neither embedded nor in /bin.
    let e = proc::spawn_program("nosuch", 0, KERNEL_PID).unwrap_err();
    assert_eq!(e.errno(), errno::ENOENT, "{e}");
    // A directory.
    let e = proc::spawn_path("/bin", 0).unwrap_err();
    assert!(matches!(e, SpawnError::NotAFile(_)), "{e}");
}

fn not_elf() {
    if no_card() {
        return;
    }
    let e = proc::spawn_path("/config.txt", 0).unwrap_err();
    assert_eq!(e, SpawnError::BadImage(ElfError::BadMagic));
    assert_eq!(e.errno(), errno::ENOEXEC);
}

fn spawn_syscall() {
    if no_card() {
        return;
    }
    let free = vm::free_frames();
    // spawner (embedded) spawns /bin/hello from the card with the system call, waits for it,
    // and checks ENOENT, ENOEXEC, EFAULT and EINVAL.
    let pid = proc::spawn("spawner", 0).expect("spawn spawner");
    assert_eq!(proc::wait(pid), ExitStatus::Exited(0));
    assert_eq!(vm::free_frames(), free, "frames lost");
}

/// `tests/data/thello`: built by Debian's arm-linux-gnueabihf-gcc (Thumb-2 entry, ELF headers in
/// the text segment, data at an unaligned file offset); it checks its data and bss itself.
fn gcc_thumb() {
    if no_card() {
        return;
    }
    let image = fs::read_file(&EMMC, "/bin/thello").expect("read /bin/thello");
    let elf = crate::elf::Elf::parse(&image).expect("thello accepted");
    assert!(elf.thumb);
    let free = free_or_cached();
    let pid = proc::spawn_path("/bin/thello", 0).expect("spawn /bin/thello");
    assert_eq!(proc::wait(pid), ExitStatus::Exited(0));
    assert_eq!(free_or_cached(), free, "frames lost");
}

/// The frame that `va` of process `pid` maps, if any.
fn frame_at(pid: proc::Pid, va: u32) -> Option<Frame> {
    proc::with_table(|t| {
        let space = t.get(pid)?.vm()?;
        let tr = space.space().translate(VirtAddr::new(va))?;
        Some(Frame::containing(tr.pa))
    })
}

/// Two processes of one program from the card: each text page they run is one frame, the page
/// cache's, mapped by both.
fn shared_text() {
    if no_card() {
        return;
    }
    // Two `shm` readers: each waits for a writer, sleeping, which lets the kernel task run.
    let file = proc::files::open("/bin/shm").expect("open /bin/shm");
    let head = fs::read_file(&EMMC, "/bin/shm").expect("read /bin/shm");
    let entry = crate::elf::Elf::parse(&head).expect("shm is an ELF").entry;
    let free = free_or_cached();
    let a = proc::spawn_path("/bin/shm", 2).expect("spawn shm");
    let b = proc::spawn_path("/bin/shm", 2).expect("spawn shm");
    // Let both run until their first text page is in.
    let mut rounds = 0;
    while frame_at(a, entry).is_none() || frame_at(b, entry).is_none() {
        rounds += 1;
        assert!(rounds < 1000, "the two readers never ran");
        proc::idle_wait();
    }
    let (fa, fb) = (frame_at(a, entry).unwrap(), frame_at(b, entry).unwrap());
    let index = (entry - 0x1_0000) / PAGE_SIZE + 1;
    let cached = file.cached_frame(index);
    println!();
    println!(
        "  text page {entry:#x}: pid {a} -> {:#x}, pid {b} -> {:#x}, page cache -> {:x?}; {} \
         of {} file pages cached",
        fa.start().as_u32(),
        fb.start().as_u32(),
        cached.map(|f| f.start().as_u32()),
        file.resident(),
        file.page_count()
    );
    assert_eq!(
        fa, fb,
        "two processes of one program have two copies of its text"
    );
    assert_eq!(cached, Some(fa), "the text is not the page cache's frame");
    // The cache and the two mappings.
    assert_eq!(proc::with_table(|t| t.refs.count(fa)), 3);
    assert!(proc::kill(a) && proc::kill(b));
    proc::wait(a);
    proc::wait(b);
    drop(file);
    assert_eq!(free_or_cached(), free, "frames lost");
}

/// `filemap` 1-4 (src/user/src/bin/filemap.rs): private and shared mappings of card files,
/// pages past the end, refused requests; then every frame is free or cached.
fn file_mappings() {
    if no_card() {
        return;
    }
    let free = free_or_cached();
    for case in 1..=4 {
        let pid = proc::spawn_path("/bin/filemap", case).expect("spawn filemap");
        assert_eq!(proc::wait(pid), ExitStatus::Exited(0), "filemap {case}");
    }
    assert_eq!(
        CacheStats::get(&proc::files::CACHE_STATS.dirty),
        0,
        "dirty pages left after every mapping went"
    );
    assert_eq!(free_or_cached(), free, "frames lost");
}

/// Shrinking the cache frees every page no process maps, and the files read back the same.
fn cache_shrink() {
    if no_card() {
        return;
    }
    let stats = &proc::files::CACHE_STATS;
    let before = CacheStats::get(&stats.pages);
    assert!(before > 0, "nothing cached after the programs ran");
    let free = vm::free_frames();
    // Twice: a page just read is kept once, for the lookup it was read for.
    let gone = proc::files::shrink(u32::MAX) + proc::files::shrink(u32::MAX);
    assert_eq!(gone, before, "a page nobody maps was kept");
    assert_eq!(CacheStats::get(&stats.pages), 0);
    assert_eq!(vm::free_frames(), free + gone);
    // Read again from the card: the same bytes.
    let pid = proc::spawn_path("/bin/filemap", 1).expect("spawn filemap");
    assert_eq!(proc::wait(pid), ExitStatus::Exited(0));
}

/// A read of the card that fails in the middle of a page-in (a data CRC error, injected at the
/// 1st..12th block read after the file left the cache) kills the faulting process with a bus
/// error, or, when it hits the file's look-up, fails `map_file` (EIO, or ENOENT where the FAT
/// crate reports a failed directory read as a missing entry: the program then says FAIL and
/// exits 1), or, for a read the FAT crate can do without (the FSInfo sector), changes nothing
/// (the program checks every word it reads). The kernel goes on, nothing leaks, and the next
/// try reads the file right.
fn read_error() {
    use crate::bsp::raspi2::emmc::inject_read_error;
    use crate::proc::fault::UserFaultKind;
    use crate::proc::KillReason;
    if no_card() {
        return;
    }
    // filemap itself cached first, so that only the data file's reads can fail.
    let pid = proc::spawn_path("/bin/filemap", 1).expect("spawn filemap");
    assert_eq!(proc::wait(pid), ExitStatus::Exited(0));
    let free = free_or_cached();
    let mut kills = 0;
    for k in 1..=12 {
        proc::files::forget("/data/words.bin");
        inject_read_error(k);
        let pid = proc::spawn_path("/bin/filemap", 1).expect("spawn filemap");
        match proc::wait(pid) {
            ExitStatus::Killed(KillReason::Fault(f)) => {
                assert_eq!(f.kind, UserFaultKind::FileRead, "{f}");
                assert!(f.is_bus_error());
                kills += 1;
            }
            // The look-up failed (map_file refused), or a read that was not needed failed.
            ExitStatus::Exited(1) | ExitStatus::Exited(0) => {}
            other => panic!("read error at block read {k}: {other}"),
        }
    }
    inject_read_error(0);
    println!();
    println!(
        "  {kills} of 12 injected read errors hit a page-in (the rest the file's look-up); card \
         interrupts so far: {}",
        crate::bsp::raspi2::emmc::interrupts()
    );
    assert!(kills > 0, "no injected error hit a page-in");
    let pid = proc::spawn_path("/bin/filemap", 1).expect("spawn filemap");
    assert_eq!(
        proc::wait(pid),
        ExitStatus::Exited(0),
        "the file reads right again"
    );
    assert_eq!(free_or_cached(), free, "frames lost");
}

/// A truncated program and files that are not ARM programs are refused with ENOEXEC; nothing
/// is left behind.
fn bad_files() {
    if no_card() {
        return;
    }
    let hello = programs::find("hello").unwrap();
    let free = free_or_cached();
    let cases: [(&str, &[u8], ElfError); 3] = [
        (
            "/data/trunc.elf",
            &hello[..hello.len() / 2],
            ElfError::SegmentOutsideFile,
        ),
        ("/data/short.elf", &hello[..40], ElfError::TooShort),
        (
            "/data/text.elf",
            b"#!/bin/sh\n# a shell script is not a program this kernel runs\necho hello\n",
            ElfError::BadMagic,
        ),
    ];
    for (path, bytes, want) in cases {
        proc::files::write_file(path, bytes).expect("write a test file");
        let e = proc::spawn_path(path, 0).unwrap_err();
        assert_eq!(e, SpawnError::BadImage(want), "{path}");
        assert_eq!(e.errno(), errno::ENOEXEC);
        proc::files::remove_file(path).expect("remove a test file");
        let e = proc::spawn_path(path, 0).unwrap_err();
        assert!(
            matches!(e, SpawnError::NoSuchFile(_)),
            "{path} still there: {e}"
        );
    }
    assert_eq!(free_or_cached(), free, "frames lost");
}

/// The card driver's interrupt path: with every wait made to sleep first (QEMU's card answers
/// at once), the kernel task serves a process's page-ins sleeping on the card's interrupt
/// while spinners keep every core busy: the interrupts arrive, core 0 runs a spinner during
/// some of the waits (its switches away from the kernel task and back; QEMU's card often has
/// its interrupt pending before the kernel task's WFI, and then there is no switch), the
/// page-ins complete and the process reads the right bytes.
fn card_interrupts() {
    use crate::bsp::raspi2::emmc;
    if no_card() {
        return;
    }
    let free = free_or_cached();
    let before = emmc::interrupts();
    let spinners: alloc::vec::Vec<proc::Pid> = (0..crate::arch::arm::smp::CORES)
        .map(|_| proc::spawn("spin", 0).expect("spawn spin"))
        .collect();
    let core0_switches = || proc::with_table(|t| t.cores[0].switches);
    proc::files::forget("/data/words.bin");
    emmc::sleep_first(true);
    let switches0 = core0_switches();
    let pid = proc::spawn_path("/bin/filemap", 1).expect("spawn filemap");
    let status = proc::wait(pid);
    emmc::sleep_first(false);
    let switches = core0_switches() - switches0;
    let irqs = emmc::interrupts() - before;
    for &s in &spinners {
        assert!(proc::kill(s));
        proc::wait(s);
    }
    println!();
    println!("  {irqs} card interrupts; core 0 switched {switches} times meanwhile");
    assert_eq!(status, ExitStatus::Exited(0));
    assert!(irqs > 0, "no card interrupt was taken");
    assert!(
        switches > 0,
        "core 0 did not run processes while the kernel task slept on the card"
    );
    assert_eq!(free_or_cached(), free, "frames lost");
}
