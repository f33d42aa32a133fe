//! On-target tests: built into the kernel with `--features ktest`, run under QEMU by `make test`.
//!
//! The tests run in order on core 0; a few list entries are steps (such as `vm2_start`) that the
//! later tests build on. A failing test panics: the panic handler prints the failure and resumes
//! the runner at the next entry on a fresh stack. The run ends with `N passed, N failed` and
//! QEMU exits through semihosting with status 0 only if nothing failed. (`make test` also puts a
//! timeout around QEMU, so a hang fails too.)

mod boot;
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
}

/// Every entry, in order: the boot tests see the machine as the boot stub left it, the VM tests
/// run after the `vm2_start` step.
fn entries() -> impl Iterator<Item = &'static Entry> {
    boot::ENTRIES.iter().chain(vm::ENTRIES)
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
        }
    }
    let (p, f) = (PASSED.load(Ordering::SeqCst), FAILED.load(Ordering::SeqCst));
    println!("target: {p} passed, {f} failed");
    crate::console::flush();
    semihosting::exit(if f == 0 { 0 } else { 1 })
}

/// Called by the panic handler in test builds: counts the failure and resumes the runner on a
/// fresh SVC stack (the panicking frames are abandoned, never returned to).
pub fn after_panic() -> ! {
    println!("FAILED");
    FAILED.fetch_add(1, Ordering::SeqCst);
    let i = NEXT.load(Ordering::SeqCst).saturating_sub(1);
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
