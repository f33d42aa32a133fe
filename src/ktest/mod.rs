//! On-target tests: built into the kernel with `--features ktest`, run under QEMU by `make test`.
//!
//! The tests run in order on core 0; a few list entries are steps (such as `vm2_start`) that the
//! later tests build on. A failing test panics: the panic handler prints the failure and resumes
//! the runner at the next entry on a fresh stack. The run ends with `N passed, N failed` and
//! QEMU exits through semihosting with status 0 only if nothing failed. (`make test` also puts a
//! timeout around QEMU, so a hang fails too.)

mod boot;
mod cpu_state;
mod irq;
mod multicore;
mod proc;
mod programs;
mod smp;
mod storage;
mod vm;

use crate::arch::arm::semihosting;
use crate::init::BootInfo;
use core::sync::atomic::{AtomicUsize, Ordering};

/// One entry of the run.
pub enum Entry {
    /// A test: passes unless it panics.
    Test(&'static str, fn()),
    /// A step the following tests need; a failing step fails the run.
    Step(&'static str, fn(&BootInfo)),
    /// A test that passes only if it panics with a message containing the given text (a kernel
    /// fault must end in a panic that reports it).
    ShouldPanic(&'static str, fn(), &'static str),
}

/// Every entry, in order: the boot tests see the machine as the boot stub left it, the VM tests
/// run after the `vm2_start` step, the interrupt tests after the `irq::init` step, the SMP tests
/// after cores 1-3 are released (and the later tests with them online, idle).
fn entries() -> impl Iterator<Item = &'static Entry> {
    boot::ENTRIES
        .iter()
        .chain(vm::ENTRIES)
        .chain(irq::ENTRIES)
        .chain(smp::ENTRIES)
        .chain(programs::ENTRIES)
        .chain(proc::ENTRIES)
        .chain(cpu_state::ENTRIES)
        .chain(multicore::ENTRIES)
        .chain(storage::ENTRIES)
        .filter(|e| selected(e))
}

#[cfg(not(feature = "plant-stale-icache"))]
fn selected(_: &Entry) -> bool {
    true
}

/// The kernel with the planted cache-maintenance bug (`plant-stale-icache`, see
/// `arch::arm::cache`) is run only for tests/icache-check to report it: the steps, and the two
/// tests that load its first three programs (`hello`, then `spin` and `hello` side by side).
#[cfg(feature = "plant-stale-icache")]
fn selected(e: &Entry) -> bool {
    match e {
        Entry::Step(..) => true,
        Entry::Test(name, _) => [
            "proc::hello_runs_and_exits_0",
            "proc::preemption_lets_others_run_past_a_spinner",
        ]
        .contains(name),
        Entry::ShouldPanic(..) => false,
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);
static PASSED: AtomicUsize = AtomicUsize::new(0);
static FAILED: AtomicUsize = AtomicUsize::new(0);
static INFO: spin::Once<BootInfo> = spin::Once::new();

/// Runs every entry and exits QEMU.
pub fn run(info: &BootInfo) -> ! {
    INFO.call_once(|| *info);
    println!("running on-target tests");
    resume()
}

fn resume() -> ! {
    let info = INFO.get().expect("set by run");
    loop {
        let i = NEXT.fetch_add(1, Ordering::SeqCst);
        let Some(entry) = entries().nth(i) else { break };
        match entry {
            Entry::Test(name, f) => {
                print!("test {name} ... ");
                f();
                println!("ok");
                PASSED.fetch_add(1, Ordering::SeqCst);
            }
            Entry::Step(name, f) => {
                println!("step {name}");
                f(info);
            }
            Entry::ShouldPanic(name, f, _) => {
                print!("test {name} ... ");
                f();
                println!("did not panic");
                FAILED.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let (p, f) = (PASSED.load(Ordering::SeqCst), FAILED.load(Ordering::SeqCst));
    println!("target: {p} passed, {f} failed");
    crate::console::flush();
    semihosting::exit(if f == 0 { 0 } else { 1 })
}

/// Clean-up for a `ShouldPanic` test that must leave the machine as it found it (a user space
/// made current, say): run by `after_panic`, once.
static CLEANUP: spin::Mutex<Option<fn()>> = spin::Mutex::new(None);

/// Has `f` run after the current test panics.
pub fn clean_up_after_panic(f: fn()) {
    *CLEANUP.lock() = Some(f);
}

/// Called by the panic handler in test builds: counts the failure and resumes the runner on a
/// fresh SVC stack (the panicking frames are abandoned, never returned to).
pub fn after_panic() -> ! {
    if let Some(f) = CLEANUP.try_lock().and_then(|mut c| c.take()) {
        f();
    }
    let i = NEXT.load(Ordering::SeqCst).saturating_sub(1);
    let expected = match entries().nth(i) {
        Some(Entry::ShouldPanic(_, _, needle)) => Some(*needle),
        _ => None,
    };
    let message = PANIC_MESSAGE.lock();
    match expected {
        Some(needle) if message.as_str().contains(needle) => {
            println!("ok (panicked as expected)");
            PASSED.fetch_add(1, Ordering::SeqCst);
        }
        Some(needle) => {
            println!("FAILED: the panic did not say {needle:?}");
            FAILED.fetch_add(1, Ordering::SeqCst);
        }
        None => {
            println!("FAILED");
            FAILED.fetch_add(1, Ordering::SeqCst);
        }
    }
    drop(message);
    if matches!(entries().nth(i), Some(Entry::Step(..))) {
        println!("a step failed: the remaining tests cannot run");
        NEXT.store(entries().count(), Ordering::SeqCst);
    }
    extern "C" {
        static __svc_stack_top: u8;
    }
    // SAFETY: the runner never returns into the frames of the panicked test, so the whole SVC
    // stack is free; `resume` starts from its top with the same mode and masks.
    unsafe {
        core::arch::asm!(
            "mov sp, {top}",
            "b {resume}",
            top = in(reg) core::ptr::addr_of!(__svc_stack_top),
            resume = sym resume_trampoline,
            options(noreturn)
        )
    }
}

extern "C" fn resume_trampoline() -> ! {
    resume()
}

/// The start of the last panic message, kept so `ShouldPanic` entries can check it.
static PANIC_MESSAGE: spin::Mutex<MessageBuf> = spin::Mutex::new(MessageBuf {
    len: 0,
    bytes: [0; 512],
});

struct MessageBuf {
    len: usize,
    bytes: [u8; 512],
}

impl MessageBuf {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl core::fmt::Write for MessageBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.bytes.len() {
                break;
            }
            self.bytes[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Called by the panic handler: keeps the message for `after_panic`.
pub fn record_panic(args: core::fmt::Arguments) {
    // The panic may have happened with this lock held (it never is: only this function and
    // `after_panic` take it, neither panics); use it without waiting.
    if let Some(mut m) = PANIC_MESSAGE.try_lock() {
        m.len = 0;
        let _ = core::fmt::Write::write_fmt(&mut *m, args);
    }
}

/// Starts embedded program `name` with `arg`, as a child of the kernel task; a test fails if
/// it cannot.
pub(super) fn spawn(name: &str, arg: u32) -> crate::proc::Pid {
    crate::proc::spawn(name, arg).unwrap_or_else(|e| panic!("spawn {name}: {e}"))
}

/// Frames, kernel heap (counted as frames it took from the PMM), charged kernel memory and
/// ASIDs as they are now, to compare after a test.
pub(super) struct Resources {
    free: u32,
    heap: u32,
    kmem: u32,
}

impl Resources {
    pub(super) fn now() -> Self {
        Self {
            free: crate::vm::free_frames(),
            heap: crate::vm::heap_size(),
            kmem: crate::proc::KMEM.used(),
        }
    }

    /// Everything is back: frames (less what the heap grew by and keeps), the budget, ASIDs.
    pub(super) fn assert_back(&self, what: &str) {
        let grown = (crate::vm::heap_size() - self.heap) / crate::mm::PAGE_SIZE;
        assert_eq!(
            crate::vm::free_frames() + grown,
            self.free,
            "{what}: frames lost"
        );
        assert_eq!(
            crate::proc::KMEM.used(),
            self.kmem,
            "{what}: kernel memory charge lost"
        );
        assert_eq!(
            crate::vm::ASIDS.lock().asids_in_use_beyond_kept(),
            0,
            "{what}: ASIDs left in use"
        );
        assert_eq!(
            crate::proc::shared_frames(),
            0,
            "{what}: shared frames left"
        );
    }
}
