//! Build script of the kernel. For the target (`target_os = "none"`) only:
//!
//! - links the `kernel` binary with `link.ld` (the image layout: VMA 0x8000_8000, LMA 0x8000);
//! - builds the user programs (`src/user`, a Cargo workspace of its own) with a nested
//!   `cargo build --release` into `OUT_DIR`, checks every program with the loader's ELF parser
//!   (`src/elf.rs`), and writes `OUT_DIR/programs.rs`, which `src/programs.rs` includes so that
//!   the programs are embedded in the kernel image.
//!
//! Host builds (`cargo test`, the benchmarks) need none of this.

use std::env;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "src/elf.rs"]
#[allow(dead_code)]
mod elf;

/// What the nested build depends on (relative to the package root).
const USER_INPUTS: &[&str] = &[
    "src/user/Cargo.toml",
    "src/user/Cargo.lock",
    "src/user/build.rs",
    "src/user/user.ld",
    "src/user/.cargo",
    "src/user/src",
];

fn main() {
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=src/elf.rs");
    println!("cargo:rerun-if-changed=src/abi.rs");
    for input in USER_INPUTS {
        println!("cargo:rerun-if-changed={input}");
    }
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }

    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let target = env::var("TARGET").expect("TARGET");

    // The kernel's link arguments live here rather than in a `.cargo/config.toml`: cargo
    // configuration applies to every build started below the package root, so a separate
    // workspace inside it (such as user programs) would inherit them. Static relocations are the
    // target's default.
    println!(
        "cargo:rustc-link-arg-bin=kernel=-T{}",
        root.join("link.ld").display()
    );
    println!("cargo:rustc-link-arg-bin=kernel=--no-rosegment");

    let programs = build_user_programs(&root.join("src/user"), &out_dir.join("user"), &target);
    fs::write(out_dir.join("programs.rs"), programs_rs(&programs)).expect("write programs.rs");
}

/// Runs the nested `cargo build` and returns each program's name and ELF path, sorted by name.
fn build_user_programs(user_dir: &Path, target_dir: &Path, target: &str) -> Vec<(String, PathBuf)> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(user_dir)
        .args(["build", "--release", "--target", target, "--target-dir"])
        .arg(target_dir)
        // Cargo's stdout is reserved for `cargo:` directives: send the nested build's to stderr.
        .stdout(Stdio::from(std::io::stderr()));
    // What cargo hands this script describes the kernel's build (its flags, target directory,
    // wrappers such as clippy-driver, features); none of it applies to the user programs.
    for (key, _) in env::vars_os() {
        if leaks_into_nested_build(&key) {
            cmd.env_remove(key);
        }
    }
    let status = cmd
        .status()
        .expect("run cargo for the user programs (src/user)");
    assert!(
        status.success(),
        "building the user programs (src/user) failed: {status}"
    );

    let release = target_dir.join(target).join("release");
    let mut programs = Vec::new();
    for entry in fs::read_dir(user_dir.join("src/bin")).expect("read src/user/src/bin") {
        let path = entry.expect("read src/user/src/bin").path();
        if path.extension() != Some(OsStr::new("rs")) {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(OsStr::to_str)
            .expect("UTF-8 program name");
        let elf_path = release.join(name);
        let image = fs::read(&elf_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (is `{name}` a [[bin]] in src/user/Cargo.toml?)",
                elf_path.display()
            )
        });
        if let Err(e) = elf::Elf::parse(&image) {
            panic!("user program `{name}` would be refused by the loader: {e}");
        }
        programs.push((name.to_owned(), elf_path));
    }
    programs.sort();
    programs
}

fn leaks_into_nested_build(key: &OsStr) -> bool {
    let Some(key) = key.to_str() else {
        return false;
    };
    // Kept: where cargo lives, the jobserver, terminal and network settings.
    let kept = ["CARGO_HOME", "CARGO_MAKEFLAGS"];
    let kept_prefixes = ["CARGO_TERM_", "CARGO_NET_", "CARGO_HTTP_"];
    matches!(
        key,
        "RUSTFLAGS" | "RUSTDOCFLAGS" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER"
    ) || (key.starts_with("CARGO")
        && !kept.contains(&key)
        && !kept_prefixes.iter().any(|p| key.starts_with(p)))
}

/// The generated module: one 8-byte aligned ELF image per program, and the table.
fn programs_rs(programs: &[(String, PathBuf)]) -> String {
    let mut s = String::from(
        "// Generated by build.rs from the programs of src/user.\n\n\
         #[repr(C, align(8))]\n\
         struct Aligned<B: ?Sized>(B);\n\n",
    );
    for (i, (_, path)) in programs.iter().enumerate() {
        let path = path.to_str().expect("UTF-8 OUT_DIR");
        writeln!(
            s,
            "const IMAGE_{i}: &Aligned<[u8]> = &Aligned(*include_bytes!({path:?}));"
        )
        .unwrap();
    }
    s.push_str(
        "\n/// Every user program: its name (the file name under `src/user/src/bin`) and its ELF\n\
         /// image (8-byte aligned, already accepted by `elf::Elf::parse` at build time).\n\
         pub static PROGRAMS: &[(&str, &[u8])] = &[\n",
    );
    for (i, (name, _)) in programs.iter().enumerate() {
        writeln!(s, "    ({name:?}, &IMAGE_{i}.0),").unwrap();
    }
    s.push_str("];\n");
    s
}
