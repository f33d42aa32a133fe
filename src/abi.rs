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
    /// `spawn(path, path_len, arg) -> child pid`: starts a program (a card path, or a bare
    /// name: embedded, else `/bin/NAME`) as a child of the caller.
    pub const SPAWN: u32 = 11;
    /// `map_file(path, path_len, len, offset | flags) -> address`: maps a file of the card.
    pub const MAP_FILE: u32 = 12;
    /// `msync(addr, len) -> pages written`: writes back what the caller's shared file
    /// mappings of the range changed.
    pub const MSYNC: u32 = 13;
    /// `sync() -> pages written`: writes back every changed page of every cached file.
    pub const SYNC: u32 = 14;
}

/// The low bits of `map_file`'s last argument (the rest is the page-aligned file offset).
pub mod map {
    /// Readable.
    pub const READ: u32 = 1;
    /// Writable (implies readable).
    pub const WRITE: u32 = 2;
    /// Shared: writes reach the file (when written back) and every process mapping it sees
    /// them. Without it the mapping is private: the first write to a page copies it.
    pub const SHARED: u32 = 4;
    /// Bits that are flags; the others are the offset.
    pub const FLAGS: u32 = 0xfff;
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
    /// Page-cache lookups that had to read the card, system-wide.
    pub const CACHE_MISSES: u32 = 5;
    /// Pages in the page cache, system-wide.
    pub const CACHE_PAGES: u32 = 6;
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
    /// No such file or program.
    pub const ENOENT: i32 = 2;
    /// No such process.
    pub const ESRCH: i32 = 3;
    /// The card could not be read.
    pub const EIO: i32 = 5;
    /// Not an executable this kernel runs (not an ELF, or an ELF it refuses).
    pub const ENOEXEC: i32 = 8;
    /// Bad file descriptor.
    pub const EBADF: i32 = 9;
    /// Not a child of the caller (or already waited for).
    pub const ECHILD: i32 = 10;
    /// Out of memory or of free address space.
    pub const ENOMEM: i32 = 12;
    /// Permission denied (e.g. a directory given as a program).
    pub const EACCES: i32 = 13;
    /// A buffer the caller may not access.
    pub const EFAULT: i32 = 14;
    /// An invalid argument.
    pub const EINVAL: i32 = 22;
    /// No space left on the card.
    pub const ENOSPC: i32 = 28;
    /// No such system call.
    pub const ENOSYS: i32 = 38;
}

/// How `wait` reports the end of a child: a value that says both whether it exited or was
/// killed and why, never in the error range.
pub mod status {
    /// Values from this up are kills: `KILLED + reason`.
    pub const KILLED: u32 = 256;
    /// Reason: an undefined instruction (as SIGILL).
    pub const UNDEFINED: u32 = 4;
    /// Reason: a breakpoint instruction (`bkpt`; as SIGTRAP).
    pub const BREAKPOINT: u32 = 5;
    /// Reason: an external abort, the memory system reported an error (as SIGBUS).
    pub const BUS_ERROR: u32 = 7;
    /// Reason: killed on request (the shell's `kill`; as SIGKILL).
    pub const KILL: u32 = 9;
    /// Reason: a memory access the process may not make (as SIGSEGV).
    pub const SEGV: u32 = 11;

    /// The status of a process that called `exit(code)`: the low 8 bits of `code`, as POSIX
    /// keeps them (`exit(-1)` is 255, `exit(267)` is 11).
    pub const fn exited(code: i32) -> u32 {
        code as u32 & 0xff
    }

    /// The status of a process killed for `reason`.
    pub const fn killed(reason: u32) -> u32 {
        KILLED + reason
    }
}
