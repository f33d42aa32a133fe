//! Processes on the real MMU: each kind of bad access kills only the offender, demand-zero
//! memory costs nothing until touched, fork shares frames copy-on-write, shared memory is
//! shared, ASIDs roll over under live processes, and nothing leaks.

use super::{spawn, Entry, Resources};
use crate::init::BootInfo;
use crate::mm::asid::ContextId;
use crate::mm::uvm::{Backing, Perm, RegionKind};
use crate::mm::{VirtAddr, PAGE_SIZE};
use crate::proc::fault::UserFaultKind;
use crate::proc::KernelFrames;
use crate::proc::{self, ExitStatus, KillReason, Pid};
use crate::vm;
use alloc::vec::Vec;

pub const ENTRIES: &[Entry] = &[
    Entry::Step("proc::init (scheduler, timer tick)", start),
    Entry::Test("proc::hello_runs_and_exits_0", hello_runs),
    Entry::Test(
        "proc::preemption_lets_others_run_past_a_spinner",
        preemption,
    ),
    Entry::Test(
        "proc::reading_kernel_memory_kills_only_the_offender",
        fault_kernel_read,
    ),
    Entry::Test(
        "proc::touching_unmapped_memory_kills_only_the_offender",
        fault_unmapped,
    ),
    Entry::Test(
        "proc::writing_own_text_kills_only_the_offender",
        fault_text_write,
    ),
    Entry::Test(
        "proc::stack_overflow_into_guard_kills_only_the_offender",
        fault_stack,
    ),
    Entry::Test("proc::page_0_is_never_mapped", fault_null),
    Entry::Test(
        "proc::undefined_instruction_kills_only_the_offender",
        fault_undefined,
    ),
    Entry::Test(
        "proc::executing_data_kills_only_the_offender",
        fault_exec_data,
    ),
    Entry::Test(
        "proc::a_breakpoint_kills_only_the_offender_as_a_breakpoint",
        fault_breakpoint,
    ),
    Entry::Test(
        "proc::a_fetch_fault_is_reported_as_an_instruction_fetch",
        fault_fetch_report,
    ),
    Entry::Test("proc::bad_system_call_arguments_get_errors", bad_syscalls),
    Entry::Test(
        "proc::hostile_requests_get_the_documented_answers",
        hostile_requests,
    ),
    Entry::Test(
        "proc::a_partly_mapped_write_prints_nothing",
        partial_write_prints_nothing,
    ),
    Entry::Test(
        "proc::system_call_fuzzer_gets_only_allowed_answers_and_leaks_nothing",
        fuzzer,
    ),
    Entry::Test(
        "proc::kernel_heap_for_regions_is_budgeted_near_the_frame_reserve",
        regions_near_the_reserve,
    ),
    Entry::Test(
        "proc::user_code_may_read_only_the_virtual_counter",
        user_timer_access,
    ),
    Entry::Test(
        "proc::demand_zero_64_mib_costs_nothing_until_touched",
        demand_zero,
    ),
    Entry::Test(
        "proc::frames_zeroed_while_idle_serve_demand_zero_faults",
        zero_pool,
    ),
    Entry::Test("proc::fork_is_copy_on_write", copy_on_write),
    Entry::Test("proc::fork_and_wait_collect_every_child", fork_wait),
    Entry::Test(
        "proc::shared_memory_is_seen_by_both_processes",
        shared_memory,
    ),
    Entry::Test(
        "proc::asid_rollover_keeps_live_spaces_correct",
        asid_rollover,
    ),
    Entry::Test("proc::kill_returns_every_frame", kill_returns_frames),
    Entry::Test("proc::no_frame_leaks_after_many_processes", no_leaks),
];

fn start(_: &BootInfo) {
    proc::init();
}

/// Runs `name` with `arg` to its end.
fn run(name: &str, arg: u32) -> ExitStatus {
    let pid = proc::spawn(name, arg).unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    proc::wait(pid)
}

fn hello_runs() {
    assert_eq!(run("hello", 0), ExitStatus::Exited(0));
}

fn preemption() {
    let spinner = spawn("spin", 0);
    // `hello` sleeps between lines; it can only finish if the spinner is preempted.
    assert_eq!(run("hello", 0), ExitStatus::Exited(0));
    assert!(proc::kill(spinner));
    assert_eq!(proc::wait(spinner), ExitStatus::Killed(KillReason::Killed));
}

/// Runs `fault <which>` next to `hello`: the first must be killed with `kind`, the second must
/// end normally, and every frame must come back.
fn fault_kills_only_offender(which: u32, kind: Option<UserFaultKind>) {
    let free = vm::free_frames();
    let bystander = spawn("hello", 0);
    let status = run("fault", which);
    match (status, kind) {
        (ExitStatus::Killed(KillReason::Fault(f)), Some(k)) => assert_eq!(f.kind, k, "{f}"),
        (ExitStatus::Killed(KillReason::Undefined { .. }), None) => {}
        (s, _) => panic!("fault {which}: expected a kill, got {s}"),
    }
    assert_eq!(proc::wait(bystander), ExitStatus::Exited(0));
    assert_eq!(vm::free_frames(), free, "frames lost");
}

fn fault_kernel_read() {
    fault_kills_only_offender(1, Some(UserFaultKind::KernelMemory));
}

fn fault_unmapped() {
    fault_kills_only_offender(2, Some(UserFaultKind::Unmapped));
}

fn fault_text_write() {
    fault_kills_only_offender(3, Some(UserFaultKind::Protection));
}

fn fault_stack() {
    fault_kills_only_offender(4, Some(UserFaultKind::StackOverflow));
}

fn fault_null() {
    fault_kills_only_offender(5, Some(UserFaultKind::Unmapped));
}

fn fault_undefined() {
    fault_kills_only_offender(6, None);
}

fn fault_exec_data() {
    fault_kills_only_offender(7, Some(UserFaultKind::Protection));
}

fn fault_breakpoint() {
    let free = vm::free_frames();
    let bystander = spawn("hello", 0);
    match run("fault", 9) {
        ExitStatus::Killed(KillReason::Breakpoint { pc }) => assert!(pc >= 0x1_0000, "{pc:#x}"),
        s => panic!("bkpt: expected a breakpoint kill, got {s}"),
    }
    assert_eq!(proc::wait(bystander), ExitStatus::Exited(0));
    assert_eq!(vm::free_frames(), free, "frames lost");
}

fn fault_fetch_report() {
    match run("fault", 7) {
        ExitStatus::Killed(KillReason::Fault(f)) => {
            assert!(f.status.fetch && !f.status.write, "{f}");
            let text = alloc::format!("{f}");
            assert!(
                text.contains("execute at") && text.contains("instruction fetch"),
                "{text}"
            );
            assert!(!text.contains("read"), "{text}");
        }
        s => panic!("exec data: expected a fault kill, got {s}"),
    }
}

/// Items 2-6 of `hostile`, each next to a bystander.
fn hostile_requests() {
    // A first round grows the heap to what these processes need.
    for case in [2, 4, 5, 6] {
        assert_eq!(
            run("hostile", case),
            ExitStatus::Exited(0),
            "hostile {case}"
        );
    }
    let before = Resources::now();
    for case in [2, 4, 5, 6] {
        let bystander = spawn("hello", 0);
        assert_eq!(
            run("hostile", case),
            ExitStatus::Exited(0),
            "hostile {case}"
        );
        assert_eq!(proc::wait(bystander), ExitStatus::Exited(0));
    }
    before.assert_back("hostile");
}

/// `write(1, buf, 300)` with 200 bytes mapped: EFAULT in the program; the bytes it would have
/// printed spell NEVER-PRINTED, which `tests/qemu-run.sh` refuses to see in the output.
fn partial_write_prints_nothing() {
    assert_eq!(run("hostile", 3), ExitStatus::Exited(0));
}

/// The fuzzer, three seeds, next to a bystander: every answer allowed, everything given back.
fn fuzzer() {
    assert_eq!(run("fuzz", 99), ExitStatus::Exited(0), "warm-up");
    let before = Resources::now();
    for seed in 1..=3 {
        let bystander = spawn("hello", 0);
        assert_eq!(run("fuzz", seed), ExitStatus::Exited(0), "seed {seed}");
        assert_eq!(proc::wait(bystander), ExitStatus::Exited(0));
    }
    before.assert_back("fuzz");
}

/// Processes adding shared objects and regions (which cost kernel heap, not frames) while user
/// memory is down near the kernel's frame reserve: the budget refuses them with ENOMEM before
/// the heap can run out; the kernel used to panic here ("memory allocation of 272 bytes
/// failed").
fn regions_near_the_reserve() {
    const PROCESSES: u32 = 40;
    let before = Resources::now();
    // Room for 40 small processes above the reserve, and no more: less than what 40 x 1024
    // regions would take of heap without a budget.
    let threshold = proc::reserve_frames() + 1200;
    let hog = spawn("hostile", 7 | threshold << 8);
    // If a check below fails, the hog must not starve the tests after it.
    HOG.store(hog, core::sync::atomic::Ordering::Relaxed);
    super::clean_up_after_panic(kill_the_hog);
    // Until it holds what it wanted (then it sleeps), at most two minutes: it touches a page
    // per fault, most of RAM.
    let asleep = || {
        proc::with_table(|t| {
            t.get(hog)
                .is_some_and(|p| matches!(p.state, proc::State::Sleeping { .. }))
        })
    };
    for _ in 0..12_000 {
        if vm::free_frames() <= threshold + 64 || asleep() {
            break;
        }
        proc::kernel_sleep_ms(10);
    }
    assert!(
        vm::free_frames() <= threshold + 64,
        "the hog took the memory"
    );
    let bystander = spawn("hello", 0);
    // The first ones run on the other cores while the later ones are spawned: once they have
    // spent the budget, a spawn is refused the same way (its address space needs kernel
    // memory), which is the budget working too.
    let mut refused = 0;
    let takers: Vec<Pid> = (0..PROCESSES)
        .filter_map(|_| match proc::spawn("hostile", 1) {
            Ok(pid) => Some(pid),
            Err(proc::SpawnError::Memory(crate::mm::uvm::UvmError::NoKernelMemory)) => {
                refused += 1;
                None
            }
            Err(e) => panic!("spawn hostile: {e}"),
        })
        .collect();
    print!(
        "({} spawned, {refused} refused for the budget) ",
        takers.len()
    );
    assert!(!takers.is_empty(), "no taker could start");
    // They all hold their regions for a while: the budget must be spent by then.
    let limit = proc::KMEM.limit();
    // A process is refused when its next object (or region array) does not fit.
    let entry = crate::mm::uvm::shared_object_cost(16384)
        .max(crate::mm::uvm::regions_cost(crate::mm::uvm::MAX_REGIONS) / 2);
    let mut peak = 0;
    for _ in 0..500 {
        peak = peak.max(proc::KMEM.used());
        if peak + 2 * entry > limit {
            break;
        }
        proc::kernel_sleep_ms(10);
    }
    assert!(peak <= limit);
    assert!(
        peak + 2 * entry > limit,
        "the budget was reached ({peak} of {limit})"
    );
    for pid in takers {
        assert_eq!(
            proc::wait(pid),
            ExitStatus::Exited(0),
            "pid {pid}: ENOMEM, no kill"
        );
    }
    assert_eq!(proc::wait(bystander), ExitStatus::Exited(0));
    HOG.store(0, core::sync::atomic::Ordering::Relaxed);
    assert!(proc::kill(hog));
    assert_eq!(proc::wait(hog), ExitStatus::Killed(KillReason::Killed));
    before.assert_back("regions");
}

/// The memory hog of `regions_near_the_reserve`, while it lives.
static HOG: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

fn kill_the_hog() {
    let hog = HOG.swap(0, core::sync::atomic::Ordering::Relaxed);
    if hog != 0 && proc::kill(hog) {
        proc::wait(hog);
    }
}

/// The idle loop fills the zero pool; demand-zero faults take their frames from it (and those
/// read zero: `demand` checks); the pool's frames count as free.
fn zero_pool() {
    use crate::mm::zero_pool::ZERO_POOL_FRAMES;
    for _ in 0..200 {
        if vm::ZERO_POOL.lock().len() == ZERO_POOL_FRAMES {
            break;
        }
        proc::kernel_sleep_ms(5);
    }
    assert_eq!(
        vm::ZERO_POOL.lock().len(),
        ZERO_POOL_FRAMES,
        "the idle loop fills it"
    );
    let pmm_free = vm::with_pmm(|p| p.free_frames());
    assert_eq!(
        vm::free_frames(),
        pmm_free + ZERO_POOL_FRAMES as u32 + vm::cached_frames(),
        "pooled (and cached) frames count as free"
    );
    let taken = vm::ZERO_POOL.lock().taken;
    assert_eq!(run("demand", 0), ExitStatus::Exited(0));
    assert!(
        vm::ZERO_POOL.lock().taken > taken,
        "demand-zero faults took zeroed frames"
    );
}

fn bad_syscalls() {
    assert_eq!(run("syscheck", 0), ExitStatus::Exited(0));
}

/// CNTKCTL as the boot stub sets it: `timers` reads CNTVCT and CNTFRQ, and its children that
/// read CNTPCT and CNTV_CTL are killed.
fn user_timer_access() {
    assert_eq!(run("timers", 0), ExitStatus::Exited(0));
}

fn demand_zero() {
    let free = vm::free_frames();
    // The program checks that its 64 MiB mmap costs no frame and that touched pages read 0.
    assert_eq!(run("demand", 0), ExitStatus::Exited(0));
    assert_eq!(vm::free_frames(), free);
}

fn copy_on_write() {
    let free = vm::free_frames();
    // The program counts shared frames before and after fork and after each side writes.
    assert_eq!(run("cow", 0), ExitStatus::Exited(0));
    assert_eq!(proc::shared_frames(), 0);
    assert_eq!(vm::free_frames(), free);
}

fn fork_wait() {
    assert_eq!(run("forktest", 0), ExitStatus::Exited(0));
}

fn shared_memory() {
    let free = vm::free_frames();
    let writer = spawn("shm", 1);
    let reader = spawn("shm", 2);
    assert_eq!(proc::wait(writer), ExitStatus::Exited(0));
    assert_eq!(proc::wait(reader), ExitStatus::Exited(0));
    assert_eq!(
        vm::free_frames(),
        free,
        "the shared object's frames are freed with it"
    );
}

/// Address spaces kept alive at once: more than the 255 ASIDs, so one generation cannot hold
/// them all.
const ROLLOVER_SPACES: u32 = 300;
/// Where each space of the rollover test keeps its word.
const ROLLOVER_VA: u32 = 0x1000_0000;

/// Enters `space`, reads its word through TTBR0 and the ASID the allocator gives, leaves.
pub(super) fn read_through_asid(space: &mut proc::UserSpace, ctx: &mut ContextId) -> u32 {
    let asid = vm::enter_user(space.l1_phys(), ctx).expect("CPU 0");
    space.set_asid(asid);
    // SAFETY: the space maps ROLLOVER_VA to a frame holding one word written by the test, and
    // it is current in TTBR0 with its ASID until `leave_user`; the user domain is opened for
    // the read.
    let v = crate::arch::arm::mmu::with_user_access(|| unsafe {
        core::ptr::read_volatile(ROLLOVER_VA as *const u32)
    });
    vm::leave_user();
    v
}

/// `n` address spaces, each with one page at [`ROLLOVER_VA`] holding its number, each
/// entered once (so each took an ASID), all alive; the kernel task sleeps now and then so
/// that processes run meanwhile.
pub(super) fn rollover_spaces(n: u32) -> Vec<(proc::UserSpace, ContextId)> {
    let mut spaces = Vec::new();
    for i in 0..n {
        let mut space = proc::new_space().expect("memory for a space");
        let va = VirtAddr::new(ROLLOVER_VA);
        space
            .add_region(va, PAGE_SIZE, Perm::RW, RegionKind::Anon, Backing::Private)
            .unwrap();
        space
            .populate(
                va,
                &i.to_le_bytes(),
                &mut KernelFrames,
                &mut crate::proc::frame_refs(),
            )
            .unwrap();
        let mut ctx = ContextId::NEW;
        assert_eq!(read_through_asid(&mut space, &mut ctx), i);
        spaces.push((space, ctx));
        if i % 32 == 0 {
            proc::kernel_sleep_ms(10); // let the pattern processes run and check
        }
    }
    spaces
}

/// Destroys the spaces of [`rollover_spaces`] and gives their ASIDs back.
pub(super) fn destroy_spaces(spaces: Vec<(proc::UserSpace, ContextId)>) {
    let mut refs = crate::proc::frame_refs();
    for (space, mut ctx) in spaces {
        // destroy invalidates the space's ASID in the TLB; then the ASID may go back.
        space.destroy(&mut KernelFrames, &mut refs).unwrap();
        vm::ASIDS.lock().release(&mut ctx).unwrap();
    }
}

fn asid_rollover() {
    let generation = vm::ASIDS.lock().generation();
    // Three processes keep patterns in memory and check them every 5 ms while the ASIDs roll
    // over under them (they are switched in with a stale generation and get new ASIDs).
    let keepers: Vec<Pid> = (1..=3).map(|i| spawn("pattern", i)).collect();
    // 300 address spaces, each with one page holding its number, all alive at the same time.
    let mut spaces = rollover_spaces(ROLLOVER_SPACES);
    let after = vm::ASIDS.lock().generation();
    assert!(
        after > generation,
        "{ROLLOVER_SPACES} live address spaces must roll the ASIDs over"
    );
    proc::kernel_sleep_ms(50);
    // Every kept space still reads its own word (those of the old generation with a new ASID).
    for (i, (space, ctx)) in spaces.iter_mut().enumerate() {
        assert_eq!(read_through_asid(space, ctx), i as u32, "space {i}");
    }
    destroy_spaces(spaces);
    println!("(generation {generation} -> {after})");
    for k in keepers {
        let alive = proc::kill(k);
        let s = proc::wait(k);
        assert!(
            alive && s == ExitStatus::Killed(KillReason::Killed),
            "pattern process {k} ended with {s}"
        );
    }
}

fn kill_returns_frames() {
    let free = vm::free_frames();
    let pid = spawn("demand", 1); // arg 1: touches its 64 MiB then waits to be killed
    crate::proc::kernel_sleep_ms(200);
    assert!(vm::free_frames() < free, "it holds frames");
    assert!(proc::kill(pid));
    assert_eq!(proc::wait(pid), ExitStatus::Killed(KillReason::Killed));
    assert_eq!(vm::free_frames(), free);
    let in_use = vm::ASIDS.lock().asids_in_use_beyond_kept();
    assert_eq!(in_use, 0, "its ASID is released");
}

fn mixed_round() {
    for round in 0..4 {
        assert_eq!(run("hello", 0), ExitStatus::Exited(0));
        assert_eq!(run("cow", 0), ExitStatus::Exited(0));
        assert_eq!(run("forktest", 0), ExitStatus::Exited(0));
        assert!(matches!(run("fault", 1 + round % 7), ExitStatus::Killed(_)));
        let s = spawn("spin", 0);
        assert!(proc::kill(s));
        proc::wait(s);
    }
}

fn no_leaks() {
    // One round first: the kernel heap grows to what the process table needs and keeps it.
    mixed_round();
    let free = vm::free_frames();
    let heap = vm::heap_size();
    mixed_round();
    let grown = (vm::heap_size() - heap) / crate::mm::PAGE_SIZE;
    assert_eq!(vm::free_frames() + grown, free, "frames lost");
    let in_use = vm::ASIDS.lock().asids_in_use_beyond_kept();
    assert_eq!(in_use, 0);
    assert_eq!(proc::shared_frames(), 0);
}
