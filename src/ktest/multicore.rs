//! Processes on all four cores: they really run at once, fork, copy on write, exit and are
//! reaped on every core, survive ASID rollovers made on any core, never see a stale
//! translation after moving between cores, add up shared counters with LDREX/STREX exactly,
//! and can be killed from another core.

use super::{spawn, Entry, Resources};
use crate::arch::arm::smp::CORES;
use crate::proc::{self, CoreStats, ExitStatus, KillReason, Pid};
use crate::vm;
use alloc::vec::Vec;

pub const ENTRIES: &[Entry] = &[
    Entry::Test(
        "multicore::every_online_core_schedules",
        every_online_core_schedules,
    ),
    Entry::Test(
        "multicore::four_spinners_run_at_once",
        four_spinners_run_at_once,
    ),
    Entry::Test(
        "multicore::fork_cow_exit_and_reap_on_all_cores",
        fork_cow_exit_on_all_cores,
    ),
    Entry::Test(
        "multicore::asid_rollovers_while_all_cores_switch",
        asid_rollovers_while_all_cores_switch,
    ),
    Entry::Test(
        "multicore::a_migrating_process_never_sees_a_stale_translation",
        no_stale_translation_after_migration,
    ),
    Entry::Test(
        "multicore::shared_counters_add_up_across_cores",
        shared_counters_add_up,
    ),
    Entry::Test(
        "multicore::a_process_running_on_another_core_is_killed_there",
        kill_on_another_core,
    ),
];

/// Cores that take part in scheduling: core 0 and the secondaries that came online.
fn cores_online() -> Vec<usize> {
    core::iter::once(0).chain(crate::smp::online()).collect()
}

fn stats() -> [CoreStats; CORES] {
    proc::with_table(|t| t.cores)
}

fn wait_all(pids: &[Pid]) -> Vec<ExitStatus> {
    pids.iter().map(|&p| proc::wait(p)).collect()
}

fn every_online_core_schedules() {
    let online = cores_online();
    print!("({} cores) ", online.len());
    assert_eq!(online.len(), CORES, "the test runs start all four cores");
    // Each core's own tick has run.
    proc::kernel_sleep_ms(50);
    let s = stats();
    for &c in &online {
        assert!(s[c].ticks > 0, "core {c} takes no ticks: {:?}", s[c]);
    }
}

fn four_spinners_run_at_once() {
    let before = stats();
    let spinners: Vec<Pid> = (0..CORES).map(|_| spawn("spin", 0)).collect();
    proc::kernel_sleep_ms(400);
    let after = stats();
    // Where they are right now.
    let on: Vec<Option<Pid>> = proc::with_table(|t| (0..CORES).map(|c| t.running_on(c)).collect());
    let ticks: Vec<u64> = proc::with_table(|t| {
        spinners
            .iter()
            .map(|&p| t.get(p).map_or(0, |p| p.ticks))
            .collect()
    });
    for &p in &spinners {
        assert!(proc::kill(p));
    }
    for s in wait_all(&spinners) {
        assert_eq!(s, ExitStatus::Killed(KillReason::Killed));
    }
    let busy: Vec<u64> = (0..CORES)
        .map(|c| after[c].busy_ticks - before[c].busy_ticks)
        .collect();
    let elapsed: Vec<u64> = (0..CORES)
        .map(|c| after[c].ticks - before[c].ticks)
        .collect();
    println!(
        "(busy ticks per core {busy:?} of {elapsed:?}; spinner ticks {ticks:?}; on cores {on:?}) "
    );
    for c in cores_online() {
        // Core 0 gives some time to the kernel task (this test); the others none.
        assert!(
            busy[c] * 2 >= elapsed[c],
            "core {c} was busy {} of {} ticks",
            busy[c],
            elapsed[c]
        );
    }
    for (i, t) in ticks.iter().enumerate() {
        assert!(*t > 0, "spinner {i} never ran");
    }
}

fn fork_cow_exit_on_all_cores() {
    let base = Resources::now();
    let before = stats();
    // (`cow` checks the system-wide count of shared frames, so it runs alone elsewhere; `smp 2`
    // checks copy on write within each process.)
    for _ in 0..4 {
        let pids: Vec<Pid> = [("forktest", 0), ("smp", 2), ("forktest", 0), ("smp", 2)]
            .iter()
            .map(|&(n, a)| spawn(n, a))
            .collect();
        for s in wait_all(&pids) {
            assert_eq!(s, ExitStatus::Exited(0));
        }
    }
    let after = stats();
    base.assert_back("multicore");
    for c in cores_online() {
        assert!(
            after[c].switches > before[c].switches,
            "core {c} ran none of them"
        );
    }
}

fn asid_rollovers_while_all_cores_switch() {
    let base = Resources::now();
    let generation = vm::ASIDS.lock().generation();
    let before = stats();
    // Pattern keepers check their memory every 5 ms: they are switched in and out on every
    // core while the ASIDs roll over under them, and after each rollover the first core to
    // switch one in gives it a new ASID (a rollover of its own when none is free).
    let keepers: Vec<Pid> = (1..=6).map(|i| spawn("pattern", i)).collect();
    // 300 live spaces entered again and again take every ASID, pass after pass.
    let mut spaces = super::proc::rollover_spaces(300);
    for _ in 0..3 {
        for (i, (space, ctx)) in spaces.iter_mut().enumerate() {
            assert_eq!(super::proc::read_through_asid(space, ctx), i as u32);
        }
        proc::kernel_sleep_ms(20);
    }
    super::proc::destroy_spaces(spaces);
    let after_gen = vm::ASIDS.lock().generation();
    let after = stats();
    for &k in &keepers {
        assert!(proc::kill(k), "pattern keeper {k} ended early");
    }
    for (k, s) in keepers.iter().zip(wait_all(&keepers)) {
        assert_eq!(
            s,
            ExitStatus::Killed(KillReason::Killed),
            "pattern keeper {k}"
        );
    }
    println!("(generation {generation} -> {after_gen}) ");
    assert!(
        after_gen >= generation + 3,
        "three passes over 300 spaces roll over thrice"
    );
    for c in cores_online() {
        assert!(
            after[c].switches > before[c].switches,
            "core {c} did not switch"
        );
    }
    base.assert_back("multicore");
}

fn no_stale_translation_after_migration() {
    let base = Resources::now();
    let moved = || stats().iter().map(|s| s.migrations).sum::<u64>();
    let before = moved();
    // More processes than cores, yielding all the time: they move between cores.
    let pids: Vec<Pid> = (0..6).map(|_| spawn("smp", 2)).collect();
    for s in wait_all(&pids) {
        assert_eq!(s, ExitStatus::Exited(0));
    }
    let migrations = moved() - before;
    println!("({migrations} migrations) ");
    assert!(migrations > 0, "no process changed core");
    base.assert_back("multicore");
}

fn shared_counters_add_up() {
    let base = Resources::now();
    let k = CORES as u32;
    let pids: Vec<Pid> = (0..k).map(|_| spawn("smp", 1 | k << 8 | 7 << 16)).collect();
    for s in wait_all(&pids) {
        assert_eq!(s, ExitStatus::Exited(0), "the counter must be exact");
    }
    base.assert_back("multicore");
}

fn kill_on_another_core() {
    let base = Resources::now();
    // Three spinners and the kernel task's sleep: at least one spinner runs on a core other
    // than 0 when the kill comes.
    let spinners: Vec<Pid> = (0..3).map(|_| spawn("spin", 0)).collect();
    proc::kernel_sleep_ms(50);
    let elsewhere = proc::with_table(|t| {
        (1..CORES).find_map(|c| t.running_on(c).filter(|p| spinners.contains(p)))
    })
    .expect("a spinner runs on a secondary core");
    assert!(proc::kill(elsewhere));
    assert_eq!(
        proc::wait(elsewhere),
        ExitStatus::Killed(KillReason::Killed)
    );
    for &p in spinners.iter().filter(|&&p| p != elsewhere) {
        assert!(proc::kill(p));
        assert_eq!(proc::wait(p), ExitStatus::Killed(KillReason::Killed));
    }
    base.assert_back("multicore");
}
