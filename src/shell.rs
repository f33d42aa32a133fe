//! The UART shell: the kernel task's loop in the normal kernel. It reads a line at a time
//! (waiting in [`proc::idle_wait`], so processes run meanwhile) and answers commands about
//! processes and memory.

use crate::bsp::raspi2::emmc::EMMC;
use crate::mm::desc::{Access, MapFlags, MemoryType};
use crate::mm::file_object::CacheStats;
use crate::mm::uvm::{Backing, Perm, RegionKind};
use crate::mm::vas::Mapping;
use crate::proc::{self, Pid};
use crate::{console, vm};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

const PROMPT: &str = "pi2> ";
const MAX_LINE: usize = 120;

/// One command: name, argument synopsis, help text, handler.
struct Command {
    name: &'static str,
    args: &'static str,
    help: &'static str,
    run: fn(&mut Args<'_>),
}

type Args<'a> = core::str::SplitWhitespace<'a>;

const COMMANDS: &[Command] = &[
    Command {
        name: "help",
        args: "",
        help: "this list",
        run: help,
    },
    Command {
        name: "ls",
        args: "[path]",
        help: "programs built in; with a path, a directory of the SD card (ls /bin)",
        run: ls,
    },
    Command {
        name: "cat",
        args: "<file>",
        help: "print a file of the SD card",
        run: cat,
    },
    Command {
        name: "ps",
        args: "",
        help: "processes: pid, parent, state, ASID, ticks, pages",
        run: ps,
    },
    Command {
        name: "run",
        args: "<program|/path> [arg]",
        help: "start a program (arg in r0): embedded, else from /bin or the path on the card",
        run,
    },
    Command {
        name: "kill",
        args: "<pid>",
        help: "end a process, freeing all it holds",
        run: kill,
    },
    Command {
        name: "meminfo",
        args: "",
        help: "frames, heap, MMIO window, ASIDs, shared frames, page cache",
        run: meminfo,
    },
    Command {
        name: "sync",
        args: "",
        help: "write the page cache's dirty pages back to the card",
        run: sync,
    },
    Command {
        name: "vmmap",
        args: "[pid]",
        help: "regions and mappings of a process (none: the kernel half)",
        run: vmmap,
    },
    Command {
        name: "kmap",
        args: "",
        help: "the kernel's memory map",
        run: kmap,
    },
    Command {
        name: "exits",
        args: "",
        help: "recent ends of processes started here",
        run: exits,
    },
    Command {
        name: "demo",
        args: "[n]",
        help: "two demo processes printing pid and ASID n times",
        run: demo,
    },
    Command {
        name: "uptime",
        args: "",
        help: "time since boot, ticks, context switches",
        run: uptime,
    },
];

/// Runs the shell forever.
pub fn run_shell() -> ! {
    println!("type `help` for the commands");
    let mut line = String::new();
    loop {
        print!("{PROMPT}");
        read_line(&mut line);
        execute(&line);
    }
}

/// Runs one command line.
pub fn execute(line: &str) {
    let mut args = line.split_whitespace();
    let Some(name) = args.next() else { return };
    match COMMANDS.iter().find(|c| c.name == name) {
        Some(c) => (c.run)(&mut args),
        None => println!("unknown command `{name}`: type `help` for the list"),
    }
}

fn read_byte() -> u8 {
    loop {
        if let Some(b) = console::read_byte() {
            return b;
        }
        proc::idle_wait();
    }
}

fn read_line(line: &mut String) {
    line.clear();
    loop {
        match read_byte() {
            b'\r' | b'\n' => {
                println!();
                return;
            }
            0x08 | 0x7f if line.pop().is_some() => print!("\x08 \x08"),
            0x03 => {
                println!("^C");
                line.clear();
                return;
            }
            b if (0x20..0x7f).contains(&b) && line.len() < MAX_LINE => {
                line.push(b as char);
                print!("{}", b as char);
            }
            _ => {}
        }
    }
}

fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn help(_: &mut Args<'_>) {
    for c in COMMANDS {
        let usage = alloc::format!("{} {}", c.name, c.args);
        println!("  {usage:<22} {}", c.help);
    }
}

fn ls(args: &mut Args<'_>) {
    let Some(path) = args.next() else {
        for (name, image) in crate::programs::PROGRAMS {
            println!("  {name:<10} {:>6} bytes", image.len());
        }
        return;
    };
    match crate::fs::list_dir(&EMMC, path) {
        Ok(entries) => {
            for e in entries {
                if e.is_dir {
                    println!("  {:<12} <dir>", e.name);
                } else {
                    println!("  {:<12} {:>6} bytes", e.name, e.size);
                }
            }
        }
        Err(e) => println!("ls {path}: {e}"),
    }
}

/// Largest file `cat` prints.
const CAT_MAX: usize = 64 * 1024;

fn cat(args: &mut Args<'_>) {
    let Some(path) = args.next() else {
        return println!("usage: cat <file>");
    };
    // Only what is shown is read: a file as large as the card costs the heap 64 KiB at most.
    match crate::fs::read_head(&EMMC, path, CAT_MAX) {
        Ok((data, length)) => {
            for &b in &data {
                match b {
                    b'\n' => println!(),
                    b'\t' | 0x20..=0x7e => print!("{}", b as char),
                    _ => print!("."),
                }
            }
            if (length as usize) > data.len() {
                println!("... ({length} bytes in all)");
            } else if data.last() != Some(&b'\n') {
                println!();
            }
        }
        Err(e) => println!("cat {path}: {e}"),
    }
}

fn ps(_: &mut Args<'_>) {
    // Written into a buffer under the process table's lock, printed after it: every core's
    // scheduler needs the table.
    let out = proc::with_table(|t| {
        let mut out = String::from("  PID  PPID  STATE     CPU  ASID  TICKS  PAGES  NAME\n");
        for p in t.processes() {
            let asid = p
                .asid
                .map_or(String::from("-"), |a| alloc::format!("{}", a.get()));
            let pages = p.vm().map_or(0, |v| v.resident_pages());
            // The core it runs on; for a process off the CPU, the one it last ran on.
            let cpu = if p.core == proc::NO_CORE {
                String::from("-")
            } else {
                alloc::format!("{}", p.core)
            };
            let _ = writeln!(
                out,
                "  {:>3}  {:>4}  {:<8}  {:>3}  {:>4}  {:>5}  {:>5}  {}",
                p.pid,
                p.parent,
                p.state.name(),
                cpu,
                asid,
                p.ticks,
                pages,
                p.name
            );
        }
        let on: alloc::vec::Vec<String> = (0..crate::arch::arm::smp::CORES)
            .map(|c| {
                t.running_on(c)
                    .map_or(String::from(if c == 0 { "kernel" } else { "idle" }), |p| {
                        alloc::format!("pid {p}")
                    })
            })
            .collect();
        let _ = writeln!(
            out,
            "  {} processes; on cores 0-3: {}",
            t.live(),
            on.join(", ")
        );
        out
    });
    print!("{out}");
}

fn run(args: &mut Args<'_>) {
    let Some(name) = args.next() else {
        return println!("usage: run <program|/path> [arg]");
    };
    let arg = match args.next().map(parse_u32) {
        None => 0,
        Some(Some(a)) => a,
        Some(None) => return println!("run: the argument must be a number"),
    };
    match proc::spawn_program(name, arg, proc::KERNEL_PID) {
        Ok(pid) => println!("started {name} as pid {pid}"),
        Err(e) => println!("run {name}: {e}"),
    }
}

fn kill(args: &mut Args<'_>) {
    match args.next().and_then(parse_u32) {
        Some(pid) if proc::kill(pid) => println!("pid {pid} killed"),
        Some(pid) => println!("kill: no live process with pid {pid}"),
        None => println!("usage: kill <pid>"),
    }
}

fn meminfo(_: &mut Args<'_>) {
    let (total, free, reserved, allocated) = vm::with_pmm(|p| {
        (
            p.total_frames(),
            p.free_frames(),
            p.reserved_frames(),
            p.allocated_frames(),
        )
    });
    let cached = vm::cached_frames();
    println!(
        "frames  : {total} total, {free} free, {reserved} reserved, {} in use (4 KiB each); \
         {cached} more free in the cores' caches",
        allocated.saturating_sub(cached)
    );
    println!(
        "heap    : {} KiB mapped at {:#010x}..{:#010x}",
        vm::heap_size() / 1024,
        crate::mm::layout::HEAP_BASE.as_u32(),
        vm::heap_top().as_u32()
    );
    let (heap_top, bottom, n) = vm::with_kernel_vm(|k, _| {
        (
            k.window.heap().end.as_u32(),
            k.window.mmio_bottom().as_u32(),
            k.window.mmio_mappings().count(),
        )
    });
    println!(
        "mmio    : {:#010x}..{:#010x}, {} mappings, {} KiB free between heap and MMIO",
        bottom,
        crate::mm::layout::MMIO_TOP.as_u32(),
        n,
        (bottom - heap_top) / 1024
    );
    let (asids, generation) = {
        let a = vm::ASIDS.lock();
        (a.asids_in_use(), a.generation())
    };
    println!("asids   : {asids} of 255 in use, generation {generation}");
    println!(
        "cow     : {} frames shared copy-on-write",
        proc::shared_frames()
    );
    println!("procs   : {} live", proc::with_table(|t| t.live()));
    let (pooled, taken, filled) = {
        let z = vm::ZERO_POOL.lock();
        (z.len(), z.taken, z.filled)
    };
    println!(
        "zeroed  : {pooled} of {} frames ready (counted free), {taken} taken by faults, {filled} \
         zeroed while idle",
        crate::mm::zero_pool::ZERO_POOL_FRAMES
    );
    let c = &proc::files::CACHE_STATS;
    let get = CacheStats::get;
    println!(
        "cache   : {} pages of {} files, {} dirty; {} hits, {} misses, {} written back, {} \
         evicted, {} read errors, {} write errors",
        get(&c.pages),
        proc::files::PAGE_CACHE.lock().files(),
        get(&c.dirty),
        get(&c.hits),
        get(&c.misses),
        get(&c.writebacks),
        get(&c.evictions),
        get(&c.read_errors),
        get(&c.write_errors)
    );
    swap_line();
}

fn swap_line() {
    let (total, used) = proc::swap::usage();
    let get = |c: &core::sync::atomic::AtomicU32| c.load(core::sync::atomic::Ordering::Relaxed);
    if total == 0 {
        println!("swap    : none");
        return;
    }
    println!(
        "swap    : {used} of {total} slots used ({} of {} KiB); {} pages out ({} of shared \
         objects), {} in; {} scanned by the clock; {} out-of-memory kills",
        used * 4,
        total * 4,
        get(&proc::swap::SWAPPED_OUT),
        get(&proc::swap::OBJECT_PAGES_OUT),
        get(&proc::swap::SWAPPED_IN),
        get(&proc::swap::SCANNED),
        get(&proc::swap::OOM_KILLS)
    );
}

fn sync(_: &mut Args<'_>) {
    match proc::files::sync() {
        Ok(n) => println!("sync: {n} pages written back"),
        Err(e) => println!("sync: {e} (the pages stay dirty; try again)"),
    }
}

fn access_str(a: Access, executable: bool) -> &'static str {
    match (a, executable) {
        (Access::KernelRead, false) => "k:r--",
        (Access::KernelRead, true) => "k:r-x",
        (Access::KernelReadWrite, _) => "k:rw-",
        (Access::UserRead, false) => "u:r--",
        (Access::UserRead, true) => "u:r-x",
        (Access::UserReadWrite, _) => "u:rw-",
    }
}

fn memory_str(m: MemoryType) -> &'static str {
    match m {
        MemoryType::NormalWriteBack => "WB",
        MemoryType::NormalNonCacheable => "NC",
        MemoryType::Device => "Device",
        MemoryType::StronglyOrdered => "SO",
        #[allow(unreachable_patterns)]
        _ => "?",
    }
}

fn flags_str(f: Option<MapFlags>) -> String {
    let Some(f) = f else {
        return String::from("(other)");
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "{} {}{}{}{}",
        access_str(f.access, f.executable),
        memory_str(f.memory),
        if f.executable { "" } else { " XN" },
        if f.pxn { " PXN" } else { "" },
        if f.global { "" } else { " nG" }
    );
    s
}

fn mapping_line(m: &Mapping) -> String {
    alloc::format!(
        "  {:#010x}..{:#010x} -> {:#010x}  {:>7} KiB  {:?}  {}",
        m.va.as_u32(),
        m.va.as_u32() as u64 + m.len as u64,
        m.pa.as_u32(),
        m.len / 1024,
        m.size,
        flags_str(m.flags)
    )
}

/// Most kernel-half mappings `vmmap` lists: they are gathered into a buffer allocated before
/// the kernel space's lock is taken (code holding it may not allocate), and printed after.
const KERNEL_MAPPINGS_MAX: usize = 1024;

fn vmmap(args: &mut Args<'_>) {
    let Some(arg) = args.next() else {
        // Gathered under the locks, printed after them: the UART is slow, and the PMM's lock
        // (held with the kernel space's) stops every core's frame allocation meanwhile.
        let mut maps: Vec<Mapping> = Vec::with_capacity(KERNEL_MAPPINGS_MAX);
        let mut more = 0usize;
        vm::with_kernel_vm(|k, _| {
            k.space.for_each_mapping(|m| {
                if maps.len() < maps.capacity() {
                    maps.push(m);
                } else {
                    more += 1;
                }
            })
        });
        println!("kernel half (TTBR1):");
        for m in &maps {
            println!("{}", mapping_line(m));
        }
        if more > 0 {
            println!("  ... and {more} more");
        }
        return;
    };
    let Some(pid) = parse_u32(arg) else {
        return println!("usage: vmmap [pid]");
    };
    // Written into a buffer under the process table's lock, printed after it: every core's
    // scheduler needs the table.
    let out = proc::with_table(|t| {
        let mut out = String::new();
        let Some(p) = t.get(pid as Pid) else {
            return alloc::format!("vmmap: no process with pid {pid}\n");
        };
        let Some(space) = p.vm() else {
            return alloc::format!("vmmap: pid {pid} has ended\n");
        };
        let _ = writeln!(
            out,
            "pid {pid} ({}): L1 table at {:#010x}, ASID {}, {} pages resident",
            p.name,
            space.l1_phys().as_u32(),
            p.asid.map_or(0, |a| a.get()),
            space.resident_pages()
        );
        out.push_str("regions:\n");
        for r in space.regions() {
            let perm = match r.perm {
                Perm::R => "r--",
                Perm::RW => "rw-",
                Perm::RX => "r-x",
            };
            let kind = match r.kind {
                RegionKind::Text => "text",
                RegionKind::Data => "data",
                RegionKind::Stack => "stack",
                RegionKind::Anon => "anonymous",
                RegionKind::Shared => "shared",
                RegionKind::Guard => "guard",
            };
            let backing = match &r.backing {
                Backing::Private => String::from("private"),
                Backing::Shared(o) => {
                    alloc::format!("shared object, {} of {} pages", o.resident(), o.pages())
                }
                Backing::File(o) | Backing::SharedFile(o) => alloc::format!(
                    "{} file from page {}, {} of {} pages cached",
                    if matches!(r.backing, Backing::File(_)) {
                        "private"
                    } else {
                        "shared"
                    },
                    r.offset,
                    o.resident(),
                    o.page_count()
                ),
            };
            let _ = writeln!(
                out,
                "  {:#010x}..{:#010x}  {perm}  {kind:<9}  {backing}",
                r.start.as_u32(),
                r.start.as_u32() + r.len
            );
        }
        out.push_str("mappings (VA range -> PA, size, attributes):\n");
        space.space().for_each_mapping(|m| {
            out.push_str(&mapping_line(&m));
            out.push('\n');
        });
        out
    });
    print!("{out}");
}

fn kmap(_: &mut Args<'_>) {
    vm::print_memory_map();
}

fn exits(_: &mut Args<'_>) {
    proc::with_table(|t| {
        for r in t.exits() {
            println!("  pid {:>3} {:<8} {}", r.pid, r.name, r.status);
        }
    });
}

fn demo(args: &mut Args<'_>) {
    let n = args.next().and_then(parse_u32).unwrap_or(5);
    start_demo(n);
}

/// Starts two `demo` processes that print `n` lines each.
pub fn start_demo(n: u32) {
    for _ in 0..2 {
        match proc::spawn("demo", n) {
            Ok(pid) => println!("started demo as pid {pid}"),
            Err(e) => println!("demo: {e}"),
        }
    }
}

fn uptime(_: &mut Args<'_>) {
    let hz = crate::arch::arm::timer::frequency().unwrap_or(1).max(1);
    let now = crate::arch::arm::timer::now();
    let cores = proc::with_table(|t| t.cores);
    println!(
        "up {}.{:03} s, timer {hz} Hz, tick {} ms",
        now / u64::from(hz),
        (now % u64::from(hz)) * 1000 / u64::from(hz),
        proc::TICK_MS
    );
    println!("  CPU   TICKS   BUSY   IDLE  SWITCHES");
    for (c, s) in cores.iter().enumerate() {
        if s.ticks == 0 {
            println!("  {c:>3}  (not scheduling)");
            continue;
        }
        println!(
            "  {c:>3}  {:>6}  {:>4}%  {:>4}%  {:>8}",
            s.ticks,
            s.busy_ticks * 100 / s.ticks,
            s.idle_ticks * 100 / s.ticks,
            s.switches
        );
    }
}
