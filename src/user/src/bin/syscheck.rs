//! Checks that system calls refuse bad arguments with the documented errors
//! (`docs/syscalls.md`), and survive them. Exits with the number of the first failed check,
//! 0 if all pass.
#![no_std]
#![no_main]

use ulib::{getpid, mmap, munmap, nr, println, prot, syscall, sysinfo, wait, write, Errno};

ulib::entry!(main);

/// What a call returned, or what it should have.
type Outcome = Result<u32, Errno>;

/// A raw call, for arguments the safe wrappers cannot express.
fn raw(nr: u32, args: [u32; 4]) -> Outcome {
    // SAFETY: every call made through this refers to memory the program does not use (kernel
    // addresses, unmapped or bad ranges) or to nothing, and is meant to fail.
    ulib::check(unsafe { syscall(nr, args) })
}

struct Checks {
    pid: u32,
    count: i32,
    first_failed: i32,
}

impl Checks {
    fn check(&mut self, what: &str, got: Outcome, want: Outcome) {
        self.count += 1;
        let verdict = if got == want { "ok" } else { "FAIL" };
        println!(
            "[pid {}] syscheck {:2} {what}: {got:?} ({verdict})",
            self.pid, self.count
        );
        if got != want && self.first_failed == 0 {
            self.first_failed = self.count;
        }
    }
}

fn main(_arg: u32) -> i32 {
    let pid = getpid();
    let mut c = Checks {
        pid,
        count: 0,
        first_failed: 0,
    };
    let msg = b"syscheck: write works\n";
    let len = msg.len() as u32;
    c.check(
        "write to the console",
        write(1, msg).map(|n| n as u32),
        Ok(len),
    );
    let efault = Err(Errno::EFAULT);
    c.check(
        "write from kernel memory",
        raw(nr::WRITE, [1, 0x8000_8000, 16, 0]),
        efault,
    );
    c.check(
        "write from unmapped memory",
        raw(nr::WRITE, [1, 0x4000_0000, 16, 0]),
        efault,
    );
    let wrapping = raw(nr::WRITE, [1, 0x7fff_fff0, 0x8000_0020, 0]);
    c.check("write range wrapping around", wrapping, efault);
    c.check(
        "write to fd 7",
        write(7, b"x").map(|n| n as u32),
        Err(Errno::EBADF),
    );
    c.check("system call 99", raw(99, [0; 4]), Err(Errno::ENOSYS));
    let exec = mmap(0, 4096, prot::READ | 4).map(|p| p as u32);
    c.check("mmap executable", exec, Err(Errno::EINVAL));
    let empty = mmap(0, 0, prot::READ).map(|p| p as u32);
    c.check("mmap of 0 bytes", empty, Err(Errno::EINVAL));
    let huge = raw(nr::MMAP, [0, 0x8000_0000, prot::READ | prot::WRITE, 0]);
    c.check("mmap of 2 GiB", huge, Err(Errno::ENOMEM));
    // SAFETY: the address is not page aligned, and nothing is mapped there anyway.
    let unaligned = unsafe { munmap(0x4000_0001 as *mut u8, 4096) }.map(|()| 0);
    c.check("munmap unaligned", unaligned, Err(Errno::EINVAL));
    c.check("sysinfo 99", sysinfo(99), Err(Errno::EINVAL));
    c.check("wait for itself", wait(pid).map(|_| 0), Err(Errno::ECHILD));
    if c.first_failed == 0 {
        println!("[pid {pid}] syscheck: all {} passed", c.count);
    }
    c.first_failed
}
