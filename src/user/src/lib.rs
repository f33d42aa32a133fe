//! `ulib`: what every user program of the pi2-vm kernel links against.
//!
//! - `_start` (in `.text.start`, the first byte of the text segment and the ELF entry) calls the
//!   program's `main(arg: u32) -> i32`, named with [`entry!`], then [`exit`]s with its result;
//! - a panic prints its message and location and exits with 101;
//! - one wrapper per system call (`svc #0`, the ABI of `docs/syscalls.md`);
//! - [`print!`]/[`println!`] on the console, one `write` call per invocation (up to
//!   [`LINE_MAX`] bytes), so lines of concurrent programs do not mix.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use core::arch::{asm, global_asm};
use core::fmt::{self, Write};

// The ABI constants are the kernel's own file, so both sides always agree.
#[path = "../../abi.rs"]
mod abi;
pub use abi::{info, map, nr, prot, status};

/// The console's file descriptor.
pub const CONSOLE: u32 = 1;

/// A system call error: the kernel returned `-errno`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// No such file or program.
    pub const ENOENT: Errno = Errno(abi::errno::ENOENT);
    /// The card could not be read.
    pub const EIO: Errno = Errno(abi::errno::EIO);
    /// Not an executable the kernel runs.
    pub const ENOEXEC: Errno = Errno(abi::errno::ENOEXEC);
    /// Permission denied (a directory given as a program).
    pub const EACCES: Errno = Errno(abi::errno::EACCES);
    /// No such process.
    pub const ESRCH: Errno = Errno(abi::errno::ESRCH);
    /// Bad file descriptor.
    pub const EBADF: Errno = Errno(abi::errno::EBADF);
    /// Not a child of the caller.
    pub const ECHILD: Errno = Errno(abi::errno::ECHILD);
    /// Out of memory or address space.
    pub const ENOMEM: Errno = Errno(abi::errno::ENOMEM);
    /// A pointer argument the caller cannot access.
    pub const EFAULT: Errno = Errno(abi::errno::EFAULT);
    /// An invalid argument.
    pub const EINVAL: Errno = Errno(abi::errno::EINVAL);
    /// No such system call.
    pub const ENOSYS: Errno = Errno(abi::errno::ENOSYS);
    /// No space left on the card.
    pub const ENOSPC: Errno = Errno(abi::errno::ENOSPC);

    /// The symbolic name, if the error is one the kernel uses.
    pub const fn name(self) -> Option<&'static str> {
        use abi::errno::*;
        Some(match self.0 {
            ENOENT => "ENOENT",
            EIO => "EIO",
            ENOEXEC => "ENOEXEC",
            EACCES => "EACCES",
            ESRCH => "ESRCH",
            EBADF => "EBADF",
            ECHILD => "ECHILD",
            ENOMEM => "ENOMEM",
            EFAULT => "EFAULT",
            EINVAL => "EINVAL",
            ENOSYS => "ENOSYS",
            ENOSPC => "ENOSPC",
            _ => return None,
        })
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "errno {}", self.0),
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Splits a raw result: values in `-4095..=-1` are `-errno`, anything else is a value. Addresses
/// are below 2 GiB and counts are small, so no valid result looks like an error.
pub fn check(raw: i32) -> Result<u32, Errno> {
    if (-4095..0).contains(&raw) {
        Err(Errno(-raw))
    } else {
        Ok(raw as u32)
    }
}

/// A raw system call: number `nr` in r7, arguments in r0..r3, result from r0.
///
/// # Safety
///
/// The kernel checks every argument, so no value can harm it or another process, but some
/// calls change this program's memory (`munmap` takes pages away, `mmap`/`shm` add some) in ways
/// the compiler cannot see; the safe wrappers below are the intended way in.
#[inline(always)]
pub unsafe fn syscall(nr: u32, args: [u32; 4]) -> i32 {
    let r0: u32;
    // SAFETY: `svc #0` enters the kernel, which returns to the next instruction with the result
    // in r0. The ABI allows it to change r1-r3, r12 and the flags; everything else, the stack
    // included, is preserved. Memory the kernel writes for a call (none today) is covered by not
    // claiming `nomem`.
    unsafe {
        asm!(
            "svc #0",
            inlateout("r0") args[0] => r0,
            inlateout("r1") args[1] => _,
            inlateout("r2") args[2] => _,
            inlateout("r3") args[3] => _,
            in("r7") nr,
            out("r12") _,
            options(nostack),
        );
    }
    r0 as i32
}

/// Ends the program with `code`; its parent collects `code` with [`wait`].
pub fn exit(code: i32) -> ! {
    // SAFETY: exit never returns (the `udf` after it would be killed if it did); it touches no
    // memory of this program.
    unsafe {
        asm!("svc #0", "udf #0", in("r0") code, in("r7") nr::EXIT, options(noreturn, nostack));
    }
}

/// Writes `buf` to `fd` (1, [`CONSOLE`], is the console); returns how many bytes were written.
pub fn write(fd: u32, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel only reads `buf`, which is valid for `buf.len()` bytes.
    let r = unsafe { syscall(nr::WRITE, [fd, buf.as_ptr() as u32, buf.len() as u32, 0]) };
    check(r).map(|n| n as usize)
}

/// Gives up the rest of the time slice.
pub fn yield_now() {
    // SAFETY: yield has no memory effects.
    unsafe { syscall(nr::YIELD, [0; 4]) };
}

/// The caller's process id.
pub fn getpid() -> u32 {
    // SAFETY: getpid has no memory effects.
    unsafe { syscall(nr::GETPID, [0; 4]) as u32 }
}

/// Sleeps for at least `ms` milliseconds.
pub fn sleep(ms: u32) {
    // SAFETY: sleep has no memory effects.
    unsafe { syscall(nr::SLEEP, [ms, 0, 0, 0]) };
}

/// Maps `len` bytes (rounded up to pages) of private, demand-zero anonymous memory with `prot`
/// ([`prot`] bits), at `hint` if it is free (0: the kernel chooses); returns its address.
pub fn mmap(hint: usize, len: usize, prot: u32) -> Result<*mut u8, Errno> {
    // SAFETY: a new mapping only adds memory; it never replaces a mapping this program uses.
    let r = unsafe { syscall(nr::MMAP, [hint as u32, len as u32, prot, 0]) };
    check(r).map(|a| a as usize as *mut u8)
}

/// Unmaps `len` bytes (rounded up to pages) at the page-aligned `addr`.
///
/// # Safety
///
/// Nothing may use the memory afterwards: touching it kills the program.
pub unsafe fn munmap(addr: *mut u8, len: usize) -> Result<(), Errno> {
    // SAFETY: the caller promises the range is no longer used.
    let r = unsafe { syscall(nr::MUNMAP, [addr as u32, len as u32, 0, 0]) };
    check(r).map(drop)
}

/// Duplicates the process (its memory copy-on-write): returns the child's pid in the parent and
/// 0 in the child.
pub fn fork() -> Result<u32, Errno> {
    // SAFETY: both processes continue here with identical memory and registers except r0; the
    // compiler already assumes memory may have changed across the call.
    check(unsafe { syscall(nr::FORK, [0; 4]) })
}

/// Maps the shared memory object named `key` (created zero-filled with `len` bytes on first
/// use; later users pass the same `len`, or 0) and returns its address.
pub fn shm(key: u32, len: usize) -> Result<*mut u8, Errno> {
    // SAFETY: like mmap, it only adds memory.
    let r = unsafe { syscall(nr::SHM, [key, len as u32, 0, 0]) };
    check(r).map(|a| a as usize as *mut u8)
}

/// A system figure, `what` being one of [`info`].
pub fn sysinfo(what: u32) -> Result<u32, Errno> {
    // SAFETY: sysinfo has no memory effects.
    check(unsafe { syscall(nr::SYSINFO, [what, 0, 0, 0]) })
}

/// How a child ended, as [`wait`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// It called `exit(code)`: the low 8 bits of `code`.
    Exited(u8),
    /// The kernel killed it, for one of the reasons in [`status`] (`SEGV`, `UNDEFINED`, ...).
    Killed(u32),
}

impl WaitStatus {
    /// Decodes the value the `wait` system call returns.
    pub const fn from_raw(raw: u32) -> Self {
        if raw >= status::KILLED {
            Self::Killed(raw - status::KILLED)
        } else {
            Self::Exited(raw as u8)
        }
    }
}

/// Waits until the child `pid` has ended and returns how.
pub fn wait(pid: u32) -> Result<WaitStatus, Errno> {
    // SAFETY: wait has no memory effects.
    check(unsafe { syscall(nr::WAIT, [pid, 0, 0, 0]) }).map(WaitStatus::from_raw)
}

/// Starts the program at `path` (a file on the card such as `/bin/hello`, or a bare name: an
/// embedded program, else `/bin/NAME`) with `arg` in its r0, as a child of the caller (so
/// [`wait`] works on it); returns its pid. The caller holds the CPU while the card is read.
pub fn spawn(path: &str, arg: u32) -> Result<u32, Errno> {
    // SAFETY: the kernel only reads `path`, which is valid for `path.len()` bytes.
    let r = unsafe { syscall(nr::SPAWN, [path.as_ptr() as u32, path.len() as u32, arg, 0]) };
    check(r)
}

/// Maps `len` bytes (0: the rest of the file) of the card file at `path` from the page-aligned
/// byte `offset`, with `flags` from [`map`] (`READ`, `WRITE`, `SHARED`); returns the address.
pub fn map_file(path: &str, len: usize, offset: u32, flags: u32) -> Result<*mut u8, Errno> {
    if offset & map::FLAGS != 0 || flags & !map::FLAGS != 0 {
        return Err(Errno::EINVAL);
    }
    // SAFETY: the kernel only reads `path`; a new mapping never replaces one the program uses.
    let r = unsafe {
        syscall(
            nr::MAP_FILE,
            [
                path.as_ptr() as u32,
                path.len() as u32,
                len as u32,
                offset | flags,
            ],
        )
    };
    check(r).map(|a| a as usize as *mut u8)
}

/// Writes back what the caller's shared file mappings of `[addr, addr + len)` changed; the
/// number of pages written.
pub fn msync(addr: *mut u8, len: usize) -> Result<u32, Errno> {
    // SAFETY: msync changes no memory of the caller (only the write permission of its shared
    // file pages, which the next write restores).
    check(unsafe { syscall(nr::MSYNC, [addr as u32, len as u32, 0, 0]) })
}

/// Writes back every changed page of every cached file; the number of pages written.
pub fn sync() -> Result<u32, Errno> {
    // SAFETY: no memory effects on the caller.
    check(unsafe { syscall(nr::SYNC, [0; 4]) })
}

/// The caller's ASID (`sysinfo(2)`); panics if the kernel does not report it.
pub fn asid() -> u32 {
    sysinfo(info::ASID).unwrap_or_else(|e| panic!("sysinfo(ASID): {e}"))
}

/// The cycle counter, PMCCNTR. Only where the kernel grants user access (PMUSERENR.EN, bench
/// builds); anywhere else the read is an undefined instruction and the program is killed.
#[inline(always)]
pub fn cycles() -> u32 {
    let c: u32;
    // SAFETY: reads a counter; the ISB keeps earlier instructions from being counted after it.
    unsafe {
        asm!("isb", "mrc p15, 0, {}, c9, c13, 0", out(reg) c, options(nostack, preserves_flags));
    }
    c
}

/// Longest text [`print!`] sends in one `write`; longer output is split into several.
pub const LINE_MAX: usize = 256;

/// A formatter that collects output and writes it to the console in as few calls as it can.
pub struct LineWriter {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl LineWriter {
    /// An empty buffer.
    pub const fn new() -> Self {
        LineWriter {
            buf: [0; LINE_MAX],
            len: 0,
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        let mut rest = &self.buf[..self.len];
        while !rest.is_empty() {
            match write(CONSOLE, rest) {
                Ok(n) if n > 0 => rest = &rest[n.min(rest.len())..],
                _ => break,
            }
        }
        self.len = 0;
    }
}

impl Default for LineWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for LineWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut s = s.as_bytes();
        while !s.is_empty() {
            if self.len == LINE_MAX {
                self.flush();
            }
            let n = s.len().min(LINE_MAX - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
            self.len += n;
            s = &s[n..];
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let mut w = LineWriter::new();
    let _ = w.write_fmt(args);
    w.flush();
}

/// Prints to the console; one `write` call for up to [`LINE_MAX`] bytes.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::_print(format_args!($($arg)*)) };
}

/// Prints a line to the console; one `write` call, newline included, for up to [`LINE_MAX`] bytes.
#[macro_export]
macro_rules! println {
    () => { $crate::_print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::_print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Names the program's `main(arg: u32) -> i32`: `_start` calls it with the argument the kernel
/// passed in r0 and exits with what it returns.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        fn __ulib_main(arg: u32) -> i32 {
            let main: fn(u32) -> i32 = $main;
            main(arg)
        }
    };
}

extern "Rust" {
    /// Defined by [`entry!`] in the program.
    fn __ulib_main(arg: u32) -> i32;
}

/// The Rust side of `_start`.
extern "C" fn ulib_start(arg: u32) -> ! {
    // SAFETY: `entry!` defines `__ulib_main` with exactly this signature; a program without it
    // does not link.
    let code = unsafe { __ulib_main(arg) };
    exit(code)
}

// The entry point. The kernel starts a program in User mode, ARM state, with r0 = its argument
// and sp = the top of its stack, 8-byte aligned. Clearing fp and lr ends backtraces here.
global_asm!(
    ".pushsection .text.start, \"ax\", %progbits",
    ".global _start",
    ".type _start, %function",
    ".arm",
    "_start:",
    "    mov r11, #0",
    "    mov lr, #0",
    "    bl {start}",
    "    udf #0",
    ".size _start, . - _start",
    ".popsection",
    start = sym ulib_start,
);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(loc) => println!("[pid {}] panicked at {}: {}", getpid(), loc, info.message()),
        None => println!("[pid {}] panicked: {}", getpid(), info.message()),
    }
    exit(101)
}
