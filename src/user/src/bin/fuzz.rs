//! A system-call fuzzer: random call numbers and arguments, seeded by `arg`, with pointers into
//! the kernel half, ranges across 2 GiB, wrapping lengths, page 0 and its own memory. Every
//! answer must be one docs/syscalls.md allows for that call; the kernel must survive it all and
//! give every frame back afterwards (the on-target test checks that). Exits 0 when every answer
//! was allowed, otherwise 1.
//!
//! What it does not do, to stay alive and quiet: `exit` (only its children call it), `munmap` of
//! its own image and stack, `write` of readable memory to the console, long sleeps, `spawn` of
//! a path that exists, touching a file it mapped (each `map_file` mapping is removed at once).
#![no_std]
#![no_main]

use ulib::{exit, getpid, nr, println, syscall, Errno};

ulib::entry!(main);

const PAGE: u32 = 4096;
/// Calls per run.
const CALLS: u32 = 3000;
/// Children forked at most (each is waited for at the end).
const MAX_CHILDREN: usize = 8;
/// Where `mmap` and `shm` put what the kernel chooses: the only range it `munmap`s wholesale.
const MMAP_WINDOW: (u32, u32) = (0x2000_0000, 0x4000_0000);

/// xorshift32: small, and no allocation.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u32) as usize]
    }
}

/// An address no call may accept as a buffer: the kernel half, across 2 GiB (nothing is mapped
/// above the stack top, 0x7fff_0000), the first 64 KiB, the unused range above the mmap window.
fn bad_address(r: &mut Rng) -> u32 {
    match r.below(5) {
        0 => 0x8000_0000 + r.below(0x8000_0000),
        1 => 0x7fff_f000 + r.below(0x1000),
        2 => r.below(0x1_0000),
        3 => 0xffff_0000 + r.below(0x1_0000),
        _ => MMAP_WINDOW.1 + r.below(0x3000_0000),
    }
}

/// A length a hostile program would try: zero, one, small, huge, wrapping.
fn length(r: &mut Rng) -> u32 {
    match r.below(6) {
        0 => 0,
        1 => 1 + r.below(64),
        2 => PAGE * (1 + r.below(16)),
        3 => 0xffff_f000,
        4 => 0x8000_0000 + r.below(0x1000),
        _ => r.next(),
    }
}

/// A raw call; the result split as the ABI says.
fn call(nr: u32, args: [u32; 4]) -> Result<u32, Errno> {
    // SAFETY: the arguments never name memory this program uses (see `main`): the calls either
    // fail or add or remove memory only in the mmap window, which it touches only to check
    // fresh mappings.
    ulib::check(unsafe { syscall(nr, args) })
}

fn in_user(addr: u32, len: u32) -> bool {
    addr >= 0x1_0000 && addr.is_multiple_of(PAGE) && u64::from(addr) + u64::from(len) <= 0x8000_0000
}

fn main(seed: u32) -> i32 {
    let pid = getpid();
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9) | 1);
    let mut children = [0u32; MAX_CHILDREN];
    let mut forked = 0;
    let mut bad = 0u32;
    for i in 0..CALLS {
        let (what, allowed) = one_call(&mut r, pid, &mut children, &mut forked);
        if !allowed {
            bad += 1;
            if bad <= 5 {
                println!("[pid {pid}] fuzz: call {i}: {what}: answer not allowed");
            }
        }
    }
    // Give back the mmap window and collect every child.
    let _ = call(
        nr::MUNMAP,
        [MMAP_WINDOW.0, MMAP_WINDOW.1 - MMAP_WINDOW.0, 0, 0],
    );
    for &child in &children[..forked] {
        if call(nr::WAIT, [child, 0, 0, 0]).is_err() {
            bad += 1;
        }
    }
    println!("[pid {pid}] fuzz: seed {seed}: {CALLS} calls, {bad} answers not allowed, {forked} children");
    i32::from(bad != 0)
}

/// Makes one random call and says whether the answer is one the ABI allows.
fn one_call(
    r: &mut Rng,
    pid: u32,
    children: &mut [u32; MAX_CHILDREN],
    forked: &mut usize,
) -> (&'static str, bool) {
    use Errno as E;
    let bad = bad_address(r);
    let len = length(r);
    match r.below(17) {
        0 => {
            // The console with a buffer it may not read: EFAULT, and nothing printed (0 bytes
            // written by a zero length).
            let got = call(nr::WRITE, [1, bad, len, 0]);
            let ok = match got {
                Ok(n) => n == 0 && len == 0,
                Err(e) => e == E::EFAULT,
            };
            if !ok {
                println!("write(1, {bad:#x}, {len:#x}) = {got:?}");
            }
            ("write(1, bad)", ok)
        }
        1 => {
            let fd = r.pick(&[0, 2, 3, 7, u32::MAX]);
            (
                "write(bad fd)",
                call(nr::WRITE, [fd, bad, len, 0]) == Err(E::EBADF),
            )
        }
        2 => ("yield", call(nr::YIELD, [r.next(); 4]) == Ok(0)),
        3 => ("getpid", call(nr::GETPID, [r.next(); 4]) == Ok(pid)),
        4 => (
            "sleep",
            call(nr::SLEEP, [r.below(3), r.next(), 0, 0]) == Ok(0),
        ),
        5 => {
            // Hints the kernel must refuse (then it chooses, in the window) or take in the
            // window: nothing gets mapped where `bad_address` points.
            let low_or_kernel = if !(0x1_0000..0x8000_0000).contains(&bad) {
                bad
            } else {
                0
            };
            let hint = {
                let o = [0, low_or_kernel, MMAP_WINDOW.0 + PAGE * r.below(64)];
                r.pick(&o)
            };
            let prot = {
                let o = [0, 1, 2, 3, 4, 7, r.next()];
                r.pick(&o)
            };
            // A hint in the window is taken if the whole range is free: keep such a range
            // inside the window (unless it is past 2 GiB anyway), so that nothing is ever
            // mapped where `bad_address` points.
            let len = if hint >= MMAP_WINDOW.0 && len < 0x8000_0000 {
                len.min(MMAP_WINDOW.1 - hint)
            } else {
                len
            };
            match call(nr::MMAP, [hint, len, prot, r.next()]) {
                Ok(a) => {
                    // A fresh private mapping, user memory, reads zero.
                    let fits = in_user(a, len) && len != 0 && matches!(prot, 1..=3);
                    // SAFETY: the kernel just mapped [a, a + len) readable.
                    let zero = fits && unsafe { core::ptr::read_volatile(a as *const u8) } == 0;
                    ("mmap", fits && zero)
                }
                Err(e) => ("mmap", e == E::EINVAL || e == E::ENOMEM),
            }
        }
        6 => {
            // Only the mmap window (lengths kept inside it unless they are past 2 GiB anyway),
            // the kernel half, page 0 and above the stack: never its own image or stack.
            let (at, len) = match r.below(4) {
                0 => (0x8000_0000 + PAGE * r.below(0x8_0000), len),
                1 => (0, len),
                2 => (0x7fff_f000, len.min(PAGE)),
                _ => {
                    let at = MMAP_WINDOW.0 + PAGE * r.below(1024);
                    let len = if len < 0x8000_0000 {
                        len.min(MMAP_WINDOW.1 - at)
                    } else {
                        len
                    };
                    (at, len)
                }
            };
            let got = call(nr::MUNMAP, [at, len, 0, 0]);
            (
                "munmap",
                matches!(got, Ok(0) | Err(E::EINVAL) | Err(E::ENOMEM)),
            )
        }
        7 if *forked < MAX_CHILDREN => match call(nr::FORK, [0; 4]) {
            Ok(0) => {
                // The child: a few calls of its own, then an exit code of any size.
                let (mut none, mut full) = ([0; MAX_CHILDREN], MAX_CHILDREN);
                for _ in 0..r.below(20) {
                    one_call(r, getpid(), &mut none, &mut full);
                }
                exit(r.next() as i32)
            }
            Ok(child) => {
                children[*forked] = child;
                *forked += 1;
                ("fork", child != pid && child != 0)
            }
            Err(e) => ("fork", e == E::ENOMEM),
        },
        8 => {
            let key = {
                let o = [r.below(4), r.next()];
                r.pick(&o)
            };
            let got = call(nr::SHM, [key, r.pick(&[0, PAGE, len]), r.next(), 0]);
            let ok = match got {
                Ok(a) => in_user(a, PAGE),
                Err(e) => e == E::EINVAL || e == E::ENOMEM,
            };
            ("shm", ok)
        }
        9 => {
            let got = call(
                nr::SYSINFO,
                [
                    {
                        let o = [0, 1, 2, 3, 4, r.next()];
                        r.pick(&o)
                    },
                    bad,
                    0,
                    0,
                ],
            );
            ("sysinfo", matches!(got, Ok(_) | Err(E::EINVAL)))
        }
        10 => {
            // Anyone but its own children (those are collected at the end): never waits.
            let who = r.pick(&[0, pid, bad, 1, pid.wrapping_add(1000)]);
            if children.contains(&who) {
                return ("wait", true);
            }
            ("wait", call(nr::WAIT, [who, 0, 0, 0]) == Err(E::ECHILD))
        }
        11 => {
            // Numbers well past today's calls.
            let n = {
                let o = [64, 99, 0x1000, r.next() | 0x100];
                r.pick(&o)
            };
            (
                "unknown call",
                call(n, [bad, len, r.next(), r.next()]) == Err(E::ENOSYS),
            )
        }
        12 => {
            // A path it may not read, or a length out of range: never a program started.
            let got = call(nr::SPAWN, [bad, len, r.next(), 0]);
            ("spawn(bad)", matches!(got, Err(E::EFAULT) | Err(E::EINVAL)))
        }
        13 => {
            // A readable path that names nothing (random letters under a directory that does
            // not exist), or is not UTF-8: refused, with or without a card.
            let mut path = *b"/nosuch/................";
            for b in path[8..].iter_mut() {
                *b = b'a' + r.below(26) as u8;
            }
            if r.below(4) == 0 {
                path[9] = 0xff;
            }
            let n = 9 + r.below(16);
            let got = call(nr::SPAWN, [path.as_ptr() as u32, n, r.next(), 0]);
            let refused = [E::ENOENT, E::EIO, E::EINVAL, E::EACCES];
            ("spawn(missing)", got.is_err_and(|e| refused.contains(&e)))
        }
        14 => {
            // map_file: a path it may not read, or a real file with any length, offset and
            // flags. Either refused, or a mapping inside user space (removed again at once: the
            // program never touches it, so nothing is read or written back).
            let words = "/data/words.bin";
            let (path, n) = match r.below(3) {
                0 => (bad, len),
                _ => (words.as_ptr() as u32, words.len() as u32),
            };
            let want = r.pick(&[0, PAGE, 16 * PAGE, len]);
            let any = r.next();
            let offset_flags = r.pick(&[any, 1, 3, 7, 4, PAGE | 1, 0x10_0000 | 7]);
            match call(nr::MAP_FILE, [path, n, want, offset_flags]) {
                Ok(at) => {
                    let ok = in_user(at, PAGE);
                    // The whole file (17 pages) when no length was given.
                    let _ = call(
                        nr::MUNMAP,
                        [at, if want == 0 { 17 * PAGE } else { want }, 0, 0],
                    );
                    ("map_file", ok)
                }
                Err(e) => {
                    let refused = [
                        E::EFAULT,
                        E::EINVAL,
                        E::ENOENT,
                        E::EACCES,
                        E::EIO,
                        E::ENOMEM,
                    ];
                    ("map_file(refused)", refused.contains(&e))
                }
            }
        }
        15 => {
            // msync of any range (nothing shared and dirty is mapped: nothing to write), or sync.
            if r.below(2) == 0 {
                let got = call(nr::MSYNC, [r.pick(&[bad, MMAP_WINDOW.0]), len, 0, 0]);
                ("msync", matches!(got, Ok(0) | Err(E::EINVAL)))
            } else {
                let got = call(nr::SYNC, [r.next(); 4]);
                ("sync", matches!(got, Ok(_) | Err(E::EIO)))
            }
        }
        _ => ("getpid", call(nr::GETPID, [0; 4]) == Ok(pid)),
    }
}
