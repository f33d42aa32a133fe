//! Asks the kernel for things a careless or hostile program would, one case per `arg`, and
//! checks that each answer is the one docs/syscalls.md promises. Exits 0 when every check of
//! the case holds, otherwise the number of the first that failed (64 for an unknown case).
//!
//! 1 shared objects and regions until the kernel says ENOMEM (then holds them `HOLD_MS`), 2 `mmap` hints in the
//! first 64 KiB and across 2 GiB, 3 a `write` whose buffer is only partly mapped, 4 `munmap` of
//! ranges with nothing (or only some pages) mapped, 5 `shm` of an object whose mapping lost its
//! first page, 6 exit codes that look like errors or like kills, 7 (a helper, not a check)
//! touch memory until at most `arg >> 8` frames are free, then wait to be killed.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use ulib::{
    exit, fork, getpid, mmap, munmap, nr, println, prot, shm, sleep, status, syscall, wait, write,
    Errno, WaitStatus,
};

ulib::entry!(main);

const PAGE: usize = 4096;
const RW: u32 = prot::READ | prot::WRITE;
/// How long case 1 holds its regions, so that many processes hold theirs at once.
const HOLD_MS: u32 = 1500;

/// The number of the first failed check, or 0.
struct Checks {
    pid: u32,
    case: u32,
    n: i32,
    failed: i32,
}

impl Checks {
    fn check(&mut self, what: &str, ok: bool) {
        self.n += 1;
        if !ok {
            println!(
                "[pid {}] hostile {}: FAIL {}: {what}",
                self.pid, self.case, self.n
            );
            if self.failed == 0 {
                self.failed = self.n;
            }
        }
    }
}

fn main(arg: u32) -> i32 {
    let mut c = Checks {
        pid: getpid(),
        case: arg & 0xff,
        n: 0,
        failed: 0,
    };
    match arg & 0xff {
        1 => regions_until_enomem(&mut c),
        2 => low_and_straddling_hints(&mut c),
        3 => partial_write(&mut c),
        4 => munmap_of_nothing(&mut c),
        5 => shm_after_losing_the_first_page(&mut c),
        6 => exit_codes(&mut c),
        7 => hog(&mut c, arg >> 8),
        _ => return 64,
    }
    if c.failed == 0 {
        println!(
            "[pid {}] hostile {}: all {} checks passed",
            c.pid, c.case, c.n
        );
    }
    c.failed
}

/// Kernel memory until the kernel refuses with ENOMEM: shared-memory objects of 64 MiB (each
/// costs the kernel a 128 KiB table of its pages), then one-page regions, one `mmap` each. What
/// they cost the kernel heap is charged, so the kernel must say no before its heap runs out (it
/// used to panic); then it holds them `HOLD_MS`, so that many processes hold theirs at once.
fn regions_until_enomem(c: &mut Checks) {
    let mut objects = 0u32;
    let last = loop {
        match shm(c.pid << 16 | objects, 64 << 20) {
            Ok(_) => objects += 1,
            Err(e) => break e,
        }
        if objects > 1000 {
            break Errno(0);
        }
    };
    c.check("shm: the kernel refused with ENOMEM", last == Errno::ENOMEM);
    let mut got = 0u32;
    // Above the mmap window, which the objects filled.
    let last = loop {
        match mmap(0x4000_0000 + got as usize * PAGE, PAGE, prot::READ) {
            Ok(_) => got += 1,
            Err(e) => break e,
        }
        if got > 100_000 {
            break Errno(0);
        }
    };
    println!(
        "[pid {}] hostile 1: {objects} shared objects and {got} regions, then {last}",
        c.pid
    );
    c.check(
        "mmap: the kernel refused with ENOMEM",
        last == Errno::ENOMEM,
    );
    sleep(HOLD_MS);
    // Still alive and served after being refused.
    c.check("getpid after ENOMEM", getpid() == c.pid);
}

/// Hints in the first 64 KiB are never taken (nothing is mapped there, so that null pointers
/// and small offsets from them fault); a hint whose range crosses 2 GiB neither.
fn low_and_straddling_hints(c: &mut Checks) {
    for hint in [0x1000usize, 0x8000, 0xf000] {
        let got = mmap(hint, PAGE, RW);
        c.check("a low hint still maps", got.is_ok());
        if let Ok(p) = got {
            c.check("not at the low hint", p as usize >= 0x1_0000);
            // SAFETY: just mapped, read-write, one page.
            unsafe { write_volatile(p, 7) };
            // SAFETY: as above.
            c.check("usable", unsafe { read_volatile(p) } == 7);
        }
    }
    let got = mmap(0x7fff_f000, 2 * PAGE, RW);
    c.check("a range across 2 GiB maps elsewhere", got.is_ok());
    if let Ok(p) = got {
        let a = p as usize;
        c.check("below 2 GiB", a >= 0x1_0000 && a + 2 * PAGE <= 0x8000_0000);
    }
    // SAFETY: nothing is mapped there; the calls are meant to fail.
    let huge = unsafe { syscall(nr::MMAP, [0x1_0000, 0xffff_f000, RW, 0]) };
    c.check("a wrapping length", ulib::check(huge) == Err(Errno::ENOMEM));
}

/// `write` of 300 bytes of which only the first 200 are mapped: EFAULT, and nothing printed
/// (the bytes spell a marker that the test harness looks for in the console output).
fn partial_write(c: &mut Checks) {
    let Ok(p) = mmap(0, 2 * PAGE, RW) else {
        return c.check("mmap", false);
    };
    // SAFETY: the second page is not used from here on.
    let gone = unsafe { munmap(p.wrapping_add(PAGE), PAGE) };
    c.check("munmap of the second page", gone.is_ok());
    let buf = p.wrapping_add(PAGE - 200);
    // The marker, built at run time so that no copy of it is ever printed by this program.
    let marker: [u8; 13] = *b"NEVER-PRINTED";
    for i in 0..200 {
        let b = if i % 16 < 13 { marker[i % 16] } else { b'\n' };
        // SAFETY: buf..buf + 200 lies in the first page, mapped read-write.
        unsafe { write_volatile(buf.add(i), b) };
    }
    // SAFETY: the kernel only reads the buffer; most of it is unmapped on purpose.
    let r = unsafe { syscall(nr::WRITE, [1, buf as u32, 300, 0]) };
    c.check(
        "EFAULT for a partly mapped buffer",
        ulib::check(r) == Err(Errno::EFAULT),
    );
    // The mapped part alone is fine (written to fd 2, which is refused before any copy).
    let ok = write(2, b"x");
    c.check("fd 2 is EBADF", ok == Err(Errno::EBADF));
}

/// `munmap` skips what is not mapped: a range with nothing in it succeeds.
fn munmap_of_nothing(c: &mut Checks) {
    // SAFETY (all below): the ranges hold nothing this program uses.
    let empty = unsafe { munmap(0x3000_0000 as *mut u8, 16 * PAGE) };
    c.check("nothing mapped: success", empty.is_ok());
    let Ok(p) = mmap(0, PAGE, RW) else {
        return c.check("mmap", false);
    };
    // SAFETY: as above; the range covers the page just mapped and pages around it.
    let around = unsafe { munmap(p.wrapping_sub(4 * PAGE), 9 * PAGE) };
    c.check("a range partly mapped: success", around.is_ok());
    let again = mmap(p as usize, PAGE, RW);
    c.check(
        "the page is gone (its address is free again)",
        again == Ok(p),
    );
    // SAFETY: as above.
    let kernel = unsafe { munmap(0x8000_0000 as *mut u8, PAGE) };
    c.check("the kernel half: EINVAL", kernel == Err(Errno::EINVAL));
    // SAFETY: as above.
    let across = unsafe { munmap(0x7fff_f000 as *mut u8, 2 * PAGE) };
    c.check("across 2 GiB: EINVAL", across == Err(Errno::EINVAL));
}

/// After the first page of an object's mapping is unmapped, `shm` of the key must give an
/// address where page 0 of the object is, not the start of what is left.
fn shm_after_losing_the_first_page(c: &mut Checks) {
    const KEY: u32 = 0x0b5e_55ed;
    let Ok(a) = shm(KEY, 3 * PAGE) else {
        return c.check("shm", false);
    };
    // SAFETY (the writes and reads): a..a + 3 pages is the object's mapping, read-write.
    unsafe {
        write_volatile(a, 0xa0);
        write_volatile(a.add(PAGE), 0xa1);
        write_volatile(a.add(2 * PAGE), 0xa2);
    }
    c.check(
        "shm of a key mapped whole: same address",
        shm(KEY, 0) == Ok(a),
    );
    // SAFETY: page 0 of the mapping is not used any more.
    let cut = unsafe { munmap(a, PAGE) };
    c.check("munmap of the first page", cut.is_ok());
    let Ok(b) = shm(KEY, 0) else {
        return c.check("shm again", false);
    };
    c.check("not the start of what is left", b != a.wrapping_add(PAGE));
    // SAFETY: b..b + 3 pages is a mapping of the whole object.
    let pages = unsafe {
        [
            read_volatile(b),
            read_volatile(b.add(PAGE)),
            read_volatile(b.add(2 * PAGE)),
        ]
    };
    c.check(
        "page 0 of the object at the address returned",
        pages == [0xa0, 0xa1, 0xa2],
    );
    // SAFETY: the rest of the first mapping is still the same object.
    c.check(
        "the rest still shared",
        unsafe { read_volatile(a.add(PAGE)) } == 0xa1,
    );
}

/// Exit codes keep their low 8 bits, as POSIX does; a kill is reported apart, always.
fn exit_codes(c: &mut Checks) {
    let cases: [(i32, WaitStatus); 4] = [
        (0, WaitStatus::Exited(0)),
        (-14, WaitStatus::Exited(242)),
        (267, WaitStatus::Exited(11)),
        (-1, WaitStatus::Exited(255)),
    ];
    for (code, want) in cases {
        match fork() {
            Ok(0) => exit(code),
            Ok(child) => c.check("wait reports the low 8 bits", wait(child) == Ok(want)),
            Err(_) => c.check("fork", false),
        }
    }
    match fork() {
        Ok(0) => {
            // SAFETY: a breakpoint with no debugger: the kernel kills this child.
            unsafe { core::arch::asm!("bkpt #0", options(nomem, nostack)) };
            exit(0)
        }
        Ok(child) => c.check(
            "a breakpoint is a kill (SIGTRAP), not an exit",
            wait(child) == Ok(WaitStatus::Killed(status::BREAKPOINT)),
        ),
        Err(_) => c.check("fork", false),
    }
    match fork() {
        Ok(0) => {
            // SAFETY: reads kernel memory: the kernel kills this child.
            let v = unsafe { read_volatile(0x8000_8000 as *const u32) };
            exit(v as i32)
        }
        Ok(child) => c.check(
            "a fault is a kill (SIGSEGV)",
            wait(child) == Ok(WaitStatus::Killed(status::SEGV)),
        ),
        Err(_) => c.check("fork", false),
    }
}

/// Takes memory until at most `free` frames are left (so that other processes work near the
/// kernel's reserve), then holds it until killed. 64 MiB regions from 0x2000_0000 up.
fn hog(c: &mut Checks, free: u32) {
    const CHUNK: usize = 64 << 20;
    let mut touched = 0u32;
    'outer: for k in 0..(0x5000_0000 / CHUNK) {
        let Ok(p) = mmap(0x2000_0000 + k * CHUNK, CHUNK, RW) else {
            break;
        };
        for page in 0..CHUNK / PAGE {
            if page % 64 == 0 && ulib::sysinfo(ulib::info::FREE_FRAMES).is_ok_and(|f| f <= free) {
                break 'outer;
            }
            // SAFETY: inside the region just mapped read-write.
            unsafe { write_volatile(p.add(page * PAGE), 1) };
            touched += 1;
        }
    }
    println!("[pid {}] hostile 7: holding {touched} pages", c.pid);
    loop {
        sleep(1000);
    }
}
