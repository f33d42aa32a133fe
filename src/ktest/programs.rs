//! The user programs are embedded in the image, and the loader's ELF parser, running on the
//! target itself, accepts every one of them with the layout `src/user/user.ld` promises.

use super::Entry;
use crate::elf::{Elf, SegPerm};
use crate::programs::{self, PROGRAMS};

pub const ENTRIES: &[Entry] = &[
    Entry::Test("programs::all_embedded", all_embedded),
    Entry::Test(
        "programs::parse_with_the_user_layout",
        parse_with_the_user_layout,
    ),
];

const EXPECTED: &[&str] = &[
    "bench", "cow", "demand", "demo", "fault", "filemap", "forktest", "fpu", "fuzz", "hello",
    "hostile", "pattern", "pressure", "shm", "smp", "spin", "spawner", "syscheck", "timers", "tls",
    "true",
];

fn all_embedded() {
    for name in EXPECTED {
        assert!(
            programs::find(name).is_some(),
            "program {name} is not embedded"
        );
    }
    assert!(programs::find("no-such-program").is_none());
    assert_eq!(
        PROGRAMS.len(),
        EXPECTED.len(),
        "programs embedded but not checked here"
    );
}

fn parse_with_the_user_layout() {
    for &(name, image) in PROGRAMS {
        assert_eq!(
            image.as_ptr() as usize % 8,
            0,
            "{name}: image not 8-byte aligned"
        );
        let elf = Elf::parse(image).unwrap_or_else(|e| panic!("{name}: {e}"));
        let segs = elf.segments();
        // Text first, at 0x1_0000, starting with the entry point (`_start` in `.text.start`).
        assert_eq!(
            (elf.entry, segs[0].vaddr, segs[0].perm),
            (0x1_0000, 0x1_0000, SegPerm::RX)
        );
        // `_start`: mov r11, #0.
        assert_eq!(
            segs[0].data[..4],
            0xe3a0_b000u32.to_le_bytes(),
            "{name}: _start"
        );
        for s in segs {
            assert_eq!(
                s.vaddr % 4096,
                0,
                "{name}: segment at {:#x} not page aligned",
                s.vaddr
            );
        }
        // At most one each of text, rodata, data, in that order.
        let rank = |p: SegPerm| match p {
            SegPerm::RX => 0,
            SegPerm::R => 1,
            SegPerm::RW => 2,
        };
        assert!(
            segs.windows(2).all(|w| rank(w[0].perm) < rank(w[1].perm)),
            "{name}: segments are not text, rodata, data"
        );
    }
}
