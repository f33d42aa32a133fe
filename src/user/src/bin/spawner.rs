//! Starts programs from the card with the `spawn` system call and waits for them.
//!
//! arg 0: spawns `/bin/hello`, waits, and checks it exited 0; then checks the refusals: a
//! missing file (`ENOENT`), a file that is not an ELF (`ENOEXEC`), a bad pointer (`EFAULT`)
//! and an empty path (`EINVAL`). Exits 0 when everything matched.
#![no_std]
#![no_main]

use ulib::{println, spawn, wait, Errno, WaitStatus};

ulib::entry!(main);

fn expect_err(what: &str, r: Result<u32, Errno>, want: Errno) -> bool {
    match r {
        Err(e) if e == want => true,
        other => {
            println!("spawner: {what}: {other:?}, expected {want}");
            false
        }
    }
}

fn main(_arg: u32) -> i32 {
    let pid = match spawn("/bin/hello", 0) {
        Ok(pid) => pid,
        Err(e) => {
            println!("spawner: spawn /bin/hello: {e}");
            return 1;
        }
    };
    match wait(pid) {
        Ok(WaitStatus::Exited(0)) => println!("spawner: /bin/hello (pid {pid}) exited 0"),
        other => {
            println!("spawner: wait {pid}: {other:?}");
            return 2;
        }
    }
    let mut ok = expect_err("missing", spawn("/bin/nosuch", 0), Errno::ENOENT);
    ok &= expect_err("not an ELF", spawn("/config.txt", 0), Errno::ENOEXEC);
    // SAFETY: a deliberately bad pointer; the kernel checks it and touches nothing.
    let bad = unsafe { ulib::syscall(ulib::nr::SPAWN, [0x10, 8, 0, 0]) };
    ok &= expect_err("bad pointer", ulib::check(bad), Errno::EFAULT);
    ok &= expect_err("empty path", spawn("", 0), Errno::EINVAL);
    if ok {
        println!("spawner: refusals ok");
        0
    } else {
        3
    }
}
