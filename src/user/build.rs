//! Links every program with `user.ld` (for the target only; nothing here runs on a host).

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=user.ld");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-T{dir}/user.ld");
    // Segments are laid out in 4 KiB pages, whatever lld's default maximum page size is, and
    // each starts in the file at an offset equal to its address modulo 4 KiB (no --nmagic): the
    // kernel maps a program's pages straight from the page cache.
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
}
