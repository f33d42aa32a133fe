//! The user programs, embedded in the image as ELF files.
//!
//! `build.rs` builds them from `src/user` (one per file under `src/user/src/bin`), checks each
//! with [`crate::elf::Elf::parse`], and generates the table included here.

include!(concat!(env!("OUT_DIR"), "/programs.rs"));

/// The ELF image of the program called `name`.
pub fn find(name: &str) -> Option<&'static [u8]> {
    PROGRAMS
        .iter()
        .find(|&&(n, _)| n == name)
        .map(|&(_, image)| image)
}
