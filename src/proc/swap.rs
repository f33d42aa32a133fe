//! Paging to swap: the swap partition of the card, the reclaim clock over the processes, and
//! the rule for when both RAM and swap are exhausted.
//!
//! The portable parts are in `mm`: the clock's work on one address space
//! (`UserVm::clock`, `swapped_out`, `swap_in`), the pages that are away (`mm::nonresident`) and
//! the slots (`mm::swap_slots`, in the frame owner counts of the process table). What is here
//! runs in the kernel task, the only context that uses the card (see `files`):
//!
//! * **Watermarks.** When free frames fall below [`low_watermark`], the kernel task reclaims
//!   until [`high_watermark`]; a fault that finds no frame files a `Reclaim` request and sleeps
//!   until it has run.
//! * **Reclaim** first gives back the page cache's clean pages that nobody maps, then turns the
//!   clock over the processes, round robin from where it stopped: each step ages mapped private
//!   pages (unmaps them, so that their next use faults and tells the MMU's story) and writes the
//!   pages still aged since the last turn to swap, freeing their frames.
//! * **Out of memory.** When a reclaim that was asked for frees nothing (no swap, swap full, or
//!   every page in use), the process with the most pages (resident and in swap) is killed, with
//!   that reason; the kernel itself never runs out (its reserve is apart).

use super::{ExitStatus, KernelFrames, KillReason, Pid, TABLE};
use crate::arch::arm::direct_map::DirectMap;
use crate::block::{Block, BlockDevice, BlockIdx};
use crate::bsp::raspi2::emmc::EMMC;
use crate::mm::phys::PhysMem;
use crate::mm::swap_slots::{Slot, SwapSlots};
use crate::mm::uvm::SharedObject;
use crate::mm::FrameAllocator;
use crate::mm::{Frame, VirtAddr, PAGE_SIZE};
use crate::vm;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

/// Blocks of one slot (a page).
const SLOT_BLOCKS: usize = (PAGE_SIZE / 512) as usize;

/// The swap partition: first block and number of slots (0: none).
static DEVICE_START: AtomicU32 = AtomicU32::new(0);
static DEVICE_SLOTS: AtomicU32 = AtomicU32::new(0);

/// Pages written to swap since boot.
pub static SWAPPED_OUT: AtomicU32 = AtomicU32::new(0);
/// Pages of shared memory objects among them.
pub static OBJECT_PAGES_OUT: AtomicU32 = AtomicU32::new(0);
/// Pages read back from swap since boot.
pub static SWAPPED_IN: AtomicU32 = AtomicU32::new(0);
/// Pages the clock looked at since boot.
pub static SCANNED: AtomicU32 = AtomicU32::new(0);
/// Processes killed because RAM and swap were both exhausted.
pub static OOM_KILLS: AtomicU32 = AtomicU32::new(0);

/// Uses the `count` blocks from `start` of the card as swap: `count / 8` slots.
pub fn enable(start: u32, count: u32) {
    let slots = count / SLOT_BLOCKS as u32;
    DEVICE_START.store(start, Ordering::Relaxed);
    DEVICE_SLOTS.store(slots, Ordering::Relaxed);
    TABLE.lock().refs.swap = SwapSlots::new(slots);
    // The record of pages away: as many in swap as there are slots, and as many aged.
    crate::mm::nonresident::AWAY_BUDGET.set_limit(2 * slots * crate::mm::nonresident::ENTRY_COST);
    super::update_reserve();
}

/// Swap slots in all and in use.
pub fn usage() -> (u32, u32) {
    let t = TABLE.lock();
    (t.refs.swap.total(), t.refs.swap.used())
}

/// Below this many free frames the kernel task reclaims: the frames user memory may not take,
/// and 256 more.
pub fn low_watermark() -> u32 {
    super::reserve_frames() + 256
}

/// Reclaim stops at this many free frames.
pub fn high_watermark() -> u32 {
    super::reserve_frames() + 512
}

fn block_of(slot: Slot) -> BlockIdx {
    BlockIdx(DEVICE_START.load(Ordering::Relaxed) + slot.0 * SLOT_BLOCKS as u32)
}

fn direct_map() -> DirectMap {
    // SAFETY: the direct map is live once processes exist; the frames handed to it here are
    // owned by the address spaces this module works for, held while it reads or writes them.
    unsafe { DirectMap::new() }
}

/// Reads `slot` into `frame`. The kernel task only.
pub fn read_slot(slot: Slot, frame: Frame) -> Result<(), crate::block::BlockError> {
    let mut blocks = alloc::vec![Block::new(); SLOT_BLOCKS];
    EMMC.read_blocks(block_of(slot), &mut blocks)?;
    let mut mem = direct_map();
    for (i, b) in blocks.iter().enumerate() {
        let pa = crate::mm::PhysAddr::new(frame.start().as_u32() + (i * 512) as u32);
        mem.write_bytes(pa, &b.contents);
    }
    SWAPPED_IN.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Writes the page in `frame` to `slot`. The kernel task only.
pub fn write_slot(slot: Slot, frame: Frame) -> Result<(), crate::block::BlockError> {
    let mut blocks = alloc::vec![Block::new(); SLOT_BLOCKS];
    let mem = direct_map();
    for (i, b) in blocks.iter_mut().enumerate() {
        let pa = crate::mm::PhysAddr::new(frame.start().as_u32() + (i * 512) as u32);
        mem.read_bytes(pa, &mut b.contents);
    }
    EMMC.write_blocks(block_of(slot), &blocks)
}

/// The clock's hand: the process and the address it looks at next.
static HAND_PID: AtomicU32 = AtomicU32::new(0);
static HAND_VA: AtomicU32 = AtomicU32::new(0);

/// A clock step had victims but no free slot.
static SWAP_FULL: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Pages one clock step looks at, and victims it takes at most.
const SCAN: u32 = 64;
const VICTIMS: usize = 16;

/// Reclaims until `target` free frames or nothing more can go; returns the frames freed.
/// The kernel task only (it writes to the card).
pub fn reclaim(target: u32) -> u32 {
    let start = vm::free_frames();
    let want = target.saturating_sub(start);
    // A page is freed on the clock's second visit at the earliest: two whole turns over every
    // page in use without a frame freed mean there is nothing more to get.
    let in_use = vm::with_pmm(|p| p.allocated_frames());
    let limit = 2 * (in_use / SCAN) + 2 * super::MAX_PROCESSES as u32 + 16;
    let mut fruitless = 0;
    // Progress is what this loop freed itself (cache pages dropped, pages sent to swap), never
    // a change of the free count: processes on the other cores take frames meanwhile.
    let mut freed = 0;
    while freed < want && vm::free_frames() < target && fruitless < limit {
        // Cached file pages nobody maps: the dirty ones written back first, then given back.
        super::files::flush_settled();
        let dropped = super::files::shrink(want - freed);
        let out = SWAPPED_OUT.load(Ordering::Relaxed);
        if dropped == 0 && step_all() + step_objects() == 0 {
            break;
        }
        let progress = dropped + SWAPPED_OUT.load(Ordering::Relaxed).wrapping_sub(out);
        if SWAP_FULL.swap(false, Ordering::Relaxed) && progress == 0 {
            // Victims, but nowhere to put them.
            break;
        }
        if progress > 0 {
            freed += progress;
            fruitless = 0;
        } else {
            fruitless += 1;
        }
    }
    freed
}

/// What a process waiting for a frame gets: a reclaim up to the high watermark, and if that
/// frees nothing while user memory is still down to the reserve, the out-of-memory rule
/// ([`oom_kill`]). (A reclaim that finds the high watermark met has nothing to do: frames came
/// back since the request was filed, from an earlier reclaim that ran while processes on other
/// cores went on, or from a process that ended.)
pub fn make_room() {
    if reclaim(high_watermark()) == 0 && vm::free_frames() <= super::reserve_frames() {
        oom_kill();
    }
}

/// Whether there is swap to page to.
pub fn enabled() -> bool {
    DEVICE_SLOTS.load(Ordering::Relaxed) != 0
}

/// One clock step in the process the hand is at (then the hand moves on); returns the pages
/// looked at (0 when there is no process).
fn step_all() -> u32 {
    let (pid, victims, scanned) = {
        let mut t = TABLE.lock();
        let Some(pid) = next_process(&t, HAND_PID.load(Ordering::Relaxed)) else {
            return 0;
        };
        if pid != HAND_PID.load(Ordering::Relaxed) {
            HAND_VA.store(0, Ordering::Relaxed);
        }
        let hand = VirtAddr::new(HAND_VA.load(Ordering::Relaxed));
        let super::Table { procs, refs, .. } = &mut *t;
        let Some(space) = procs.get_mut(&pid).and_then(|p| p.vm.as_mut()) else {
            return 0;
        };
        let c = space.clock(hand, SCAN, VICTIMS, refs, &mut KernelFrames);
        match c.next {
            Some(v) => {
                HAND_PID.store(pid, Ordering::Relaxed);
                HAND_VA.store(v.as_u32(), Ordering::Relaxed);
            }
            None => {
                // This space is done: the next process from its start.
                HAND_PID.store(pid.wrapping_add(1), Ordering::Relaxed);
                HAND_VA.store(0, Ordering::Relaxed);
            }
        }
        (pid, c.victims, c.scanned.max(1))
    };
    SCANNED.fetch_add(scanned, Ordering::Relaxed);
    for (va, frame) in victims {
        let slot = {
            let mut t = TABLE.lock();
            // Still aged in that frame? (An earlier victim's write slept: the process may have
            // used the page, unmapped it or ended, and the frame gone to someone else.)
            let aged = t
                .procs
                .get(&pid)
                .and_then(|p| p.vm.as_ref())
                .is_some_and(|space| space.is_aged(va, frame));
            if !aged {
                continue;
            }
            match t.refs.swap.alloc() {
                Ok(slot) => slot,
                Err(_) => {
                    SWAP_FULL.store(true, Ordering::Relaxed);
                    break;
                }
            }
        };
        // The frame stays the space's while it is aged, and its contents cannot change (the
        // space does not map it, and any other owner maps it read-only, copy on write). The
        // copy below is made before the write can sleep, and the kernel task is not switched
        // out between the check above and it.
        let written = write_slot(slot, frame).is_ok();
        let mut t = TABLE.lock();
        let super::Table { procs, refs, .. } = &mut *t;
        let kept = written
            && procs
                .get_mut(&pid)
                .and_then(|p| p.vm.as_mut())
                .is_some_and(|space| space.swapped_out(va, frame, slot, refs, &mut KernelFrames));
        if kept {
            SWAPPED_OUT.fetch_add(1, Ordering::Relaxed);
        } else {
            // Used again (or gone) meanwhile, or the write failed: the page stays.
            let _ = refs.swap.release(slot);
        }
    }
    scanned
}

/// The clock's hand over the shared memory objects: which object (by position in the
/// registry) and which page.
static OBJECT_HAND: AtomicU32 = AtomicU32::new(0);
static OBJECT_PAGE: AtomicU32 = AtomicU32::new(0);

/// One clock step over the pages of one shared memory object (see `SharedObject::clock`): a
/// page is aged by unmapping it from every process that maps it, and a page still aged a turn
/// later is written to swap and its frame freed. Returns the pages looked at.
fn step_objects() -> u32 {
    let objects: Vec<Arc<SharedObject>> = super::SHARED
        .lock()
        .values()
        .filter_map(|w| w.upgrade())
        .collect();
    let mut scanned = 0;
    if !objects.is_empty() {
        let i = OBJECT_HAND.load(Ordering::Relaxed) as usize % objects.len();
        let object = &objects[i];
        let (next, victims) = {
            let mut t = TABLE.lock();
            let hand = OBJECT_PAGE.load(Ordering::Relaxed);
            object.clock(hand, SCAN, VICTIMS, |index| {
                scanned += 1;
                for p in t.procs.values_mut() {
                    if let Some(space) = p.vm.as_mut() {
                        space.unmap_object_page(object, index, &mut KernelFrames);
                    }
                }
            })
        };
        scanned += victims.len() as u32;
        match next {
            Some(page) => OBJECT_PAGE.store(page, Ordering::Relaxed),
            None => {
                OBJECT_HAND.store(i as u32 + 1, Ordering::Relaxed);
                OBJECT_PAGE.store(0, Ordering::Relaxed);
            }
        }
        for (index, frame) in victims {
            let Ok(slot) = TABLE.lock().refs.swap.alloc() else {
                SWAP_FULL.store(true, Ordering::Relaxed);
                break;
            };
            // Aged: mapped nowhere, so nobody writes it while it goes out (a process that maps
            // it again meanwhile makes `swapped_out` refuse).
            let written = write_slot(slot, frame).is_ok();
            if written && object.swapped_out(index, frame, slot) {
                SWAPPED_OUT.fetch_add(1, Ordering::Relaxed);
                OBJECT_PAGES_OUT.fetch_add(1, Ordering::Relaxed);
                let _ = KernelFrames.free_frame(frame);
            } else {
                let _ = TABLE.lock().refs.swap.release(slot);
            }
        }
        SCANNED.fetch_add(scanned, Ordering::Relaxed);
    }
    // The references taken here go the way every outside reference must (the object's pages
    // and slots go back if the last mapping went meanwhile).
    for o in objects {
        let _ = SharedObject::release(o, &mut KernelFrames, &mut super::frame_refs());
    }
    scanned
}

/// The first live process with an address space at or after `from` (wrapping around).
fn next_process(t: &super::Table, from: Pid) -> Option<Pid> {
    let mut pids: Vec<Pid> = t
        .procs
        .values()
        .filter(|p| p.vm.is_some() && p.is_alive())
        .map(|p| p.pid)
        .collect();
    pids.sort_unstable();
    pids.iter()
        .copied()
        .find(|&p| p >= from)
        .or_else(|| pids.first().copied())
}

/// RAM and swap are exhausted: kills the process with the most pages, resident and away
/// (ties: the highest pid, the youngest); returns it.
pub fn oom_kill() -> Option<Pid> {
    let mut t = TABLE.lock();
    let victim = t
        .procs
        .values()
        .filter(|p| p.is_alive())
        .filter_map(|p| {
            let vm = p.vm.as_ref()?;
            Some((vm.resident_pages() as usize + vm.away_pages().0, p.pid))
        })
        .max()?;
    OOM_KILLS.fetch_add(1, Ordering::Relaxed);
    t.terminate(victim.1, ExitStatus::Killed(KillReason::OutOfMemory));
    Some(victim.1)
}
