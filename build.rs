//! Build script of the kernel. For the target (`target_os = "none"`) only: links the `kernel`
//! binary with `link.ld` (the image layout: VMA 0x8000_8000, LMA 0x8000).
//!
//! Host builds (`cargo test`, the benchmarks) need none of this.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=link.ld");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));

    // The kernel's link arguments live here rather than in a `.cargo/config.toml`: cargo
    // configuration applies to every build started below the package root, so a separate
    // workspace inside it (such as user programs) would inherit them. Static relocations are the
    // target's default.
    println!(
        "cargo:rustc-link-arg-bin=kernel=-T{}",
        root.join("link.ld").display()
    );
    println!("cargo:rustc-link-arg-bin=kernel=--no-rosegment");
}
