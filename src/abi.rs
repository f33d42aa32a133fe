//! The system-call ABI shared by the kernel and the user library (`src/user/src/lib.rs`
//! includes this file): call numbers, `sysinfo` selectors, `mmap` protection bits and error
//! numbers. The convention itself (`svc #0`, number in r7, arguments in r0-r3, result or
//! `-errno` in r0) is described in docs/syscalls.md.

/// System call numbers (in r7).
pub mod nr {
    /// `exit(code)`, never returns.
    pub const EXIT: u32 = 0;
    /// `write(fd, ptr, len) -> bytes written`.
    pub const WRITE: u32 = 1;
    /// `yield() -> 0`.
    pub const YIELD: u32 = 2;
    /// `getpid() -> pid`.
    pub const GETPID: u32 = 3;
    /// `sleep(ms) -> 0`.
    pub const SLEEP: u32 = 4;
    /// `mmap(hint, len, prot) -> address`.
    pub const MMAP: u32 = 5;
    /// `munmap(addr, len) -> 0`.
    pub const MUNMAP: u32 = 6;
    /// `fork() -> child pid` in the parent, 0 in the child.
    pub const FORK: u32 = 7;
    /// `shm(key, len) -> address`.
    pub const SHM: u32 = 8;
    /// `sysinfo(what) -> value`.
    pub const SYSINFO: u32 = 9;
    /// `wait(pid) -> exit code`.
    pub const WAIT: u32 = 10;
}

/// What `sysinfo` reports.
pub mod info {
    /// Free physical frames.
    pub const FREE_FRAMES: u32 = 0;
    /// Pages resident in the caller's address space.
    pub const RESIDENT_PAGES: u32 = 1;
    /// The caller's ASID.
    pub const ASID: u32 = 2;
    /// Frames shared copy-on-write, system-wide.
    pub const COW_SHARED_FRAMES: u32 = 3;
    /// Frequency of the timer, in Hz.
    pub const TIMER_HZ: u32 = 4;
}

/// `mmap` protection bits. There is no execute bit: the kernel refuses executable mappings.
pub mod prot {
    /// Readable.
    pub const READ: u32 = 1;
    /// Writable (implies readable).
    pub const WRITE: u32 = 2;
}

/// Error numbers; a failed call returns the negated value.
pub mod errno {
    /// No such process.
    pub const ESRCH: i32 = 3;
    /// Bad file descriptor.
    pub const EBADF: i32 = 9;
    /// Not a child of the caller (or already waited for).
    pub const ECHILD: i32 = 10;
    /// Out of memory or of free address space.
    pub const ENOMEM: i32 = 12;
    /// A buffer the caller may not access.
    pub const EFAULT: i32 = 14;
    /// An invalid argument.
    pub const EINVAL: i32 = 22;
    /// No such system call.
    pub const ENOSYS: i32 = 38;
}
