//! Starting a program: the embedded ELF image is checked, its segments mapped into a new
//! address space with their own permissions (text RX, read-only data R, data RW, all XN but
//! text, PXN everywhere), a demand-zero stack with a guard page below it, and the process is
//! queued to run from the ELF entry point in User mode.

use super::{KernelFrames, Pid, Process, State, UserSpace, KMEM, TABLE};
use crate::arch::arm::boot::mode;
use crate::arch::arm::cache;
use crate::arch::arm::direct_map::DirectMap;
use crate::arch::arm::exception::TrapFrame;
use crate::arch::arm::mmu::CpuTlb;
use crate::elf::{self, ElfError, SegPerm};
use crate::mm::asid::{Asid, ContextId};
use crate::mm::layout::{self, USER_STACK_SIZE, USER_STACK_TOP};
use crate::mm::uvm::{Backing, Perm, RegionKind, UvmError};
use crate::mm::{VirtAddr, PAGE_SIZE};
use core::fmt;

/// Why a program could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    /// No embedded program has that name.
    NoSuchProgram,
    /// The image is not a valid program.
    BadImage(ElfError),
    /// Building its address space failed (out of memory, most likely).
    Memory(UvmError),
    /// The process table is full.
    TooManyProcesses,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchProgram => f.write_str("no such program (try `ls`)"),
            Self::BadImage(e) => write!(f, "bad program image: {e}"),
            Self::Memory(e) => write!(f, "cannot build its address space: {e:?}"),
            Self::TooManyProcesses => f.write_str("too many processes"),
        }
    }
}

impl From<UvmError> for SpawnError {
    fn from(e: UvmError) -> Self {
        Self::Memory(e)
    }
}

/// CPSR a process starts with: User mode, ARM state, IRQs enabled, FIQs masked.
const USER_CPSR: u32 = mode::USR | 1 << 6;

/// A new user address space (its ASID comes when it first runs).
pub fn new_space() -> Result<UserSpace, UvmError> {
    // SAFETY: the direct map is live after vm2_start and the space only hands it frames it
    // owns.
    let mem = unsafe { DirectMap::new() };
    UserSpace::new_in(mem, CpuTlb, Asid::KERNEL, &mut KernelFrames, &KMEM)
}

/// Builds the address space of the program in `image`; returns it with the entry point.
fn load(image: &[u8]) -> Result<(UserSpace, u32), SpawnError> {
    let elf = elf::Elf::parse(image).map_err(SpawnError::BadImage)?;
    let mut space = new_space()?;
    match map_image(&mut space, &elf) {
        Ok(()) => Ok((space, elf.entry)),
        Err(e) => {
            let _ = space.destroy(&mut KernelFrames, &mut crate::proc::frame_refs());
            Err(e)
        }
    }
}

fn map_image(space: &mut UserSpace, elf: &elf::Elf<'_>) -> Result<(), SpawnError> {
    let mut refs = crate::proc::frame_refs();
    for seg in elf.segments() {
        let start = seg.vaddr & !(PAGE_SIZE - 1);
        let end = (seg.vaddr + seg.memsz).next_multiple_of(PAGE_SIZE);
        let (perm, kind) = match seg.perm {
            SegPerm::RX => (Perm::RX, RegionKind::Text),
            SegPerm::R => (Perm::R, RegionKind::Data),
            SegPerm::RW => (Perm::RW, RegionKind::Data),
        };
        space.add_region(
            VirtAddr::new(start),
            end - start,
            perm,
            kind,
            Backing::Private,
        )?;
        // File bytes now; the rest of the region (.bss) is demand-zero.
        space.populate(
            VirtAddr::new(seg.vaddr),
            seg.data,
            &mut KernelFrames,
            &mut refs,
        )?;
        if perm == Perm::RX {
            // No demand-zero page in a text region: a zero tail is filled now, so that every
            // executable page goes through the maintenance below.
            let tail = seg.memsz as usize - seg.data.len();
            if tail > 0 {
                let zeros = alloc::vec![0u8; tail];
                let at = VirtAddr::new(seg.vaddr + seg.data.len() as u32);
                space.populate(at, &zeros, &mut KernelFrames, &mut refs)?;
            }
            // The code was written through the direct map (D-cache): clean it to the Point of
            // Unification, page by page; the I-cache is invalidated once, below.
            let mut va = start;
            while va < end {
                if let Some(t) = space.space().translate(VirtAddr::new(va)) {
                    if let Some(kva) = layout::phys_to_virt(t.pa) {
                        cache::clean_to_pou(kva, PAGE_SIZE);
                    }
                }
                va += PAGE_SIZE;
            }
        }
    }
    // Make the cleaned code visible to instruction fetch before it can run (ARM ARM B2.2.9).
    cache::invalidate_instructions();
    let stack_bottom = USER_STACK_TOP.as_u32() - USER_STACK_SIZE;
    space.add_region(
        VirtAddr::new(stack_bottom),
        USER_STACK_SIZE,
        Perm::RW,
        RegionKind::Stack,
        Backing::Private,
    )?;
    space.add_region(
        VirtAddr::new(stack_bottom - PAGE_SIZE),
        PAGE_SIZE,
        Perm::R,
        RegionKind::Guard,
        Backing::Private,
    )?;
    Ok(())
}

/// Starts `name` with `arg` in r0 as a child of `parent`.
pub(super) fn spawn(name: &str, arg: u32, parent: Pid) -> Result<Pid, SpawnError> {
    let &(name, image) = crate::programs::PROGRAMS
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or(SpawnError::NoSuchProgram)?;
    let (space, entry) = load(image)?;
    let mut ctx = TrapFrame {
        sp_usr: USER_STACK_TOP.as_u32(),
        pc: entry,
        cpsr: USER_CPSR,
        ..TrapFrame::default()
    };
    ctx.r[0] = arg;
    let mut t = TABLE.lock();
    let Some(pid) = t.alloc_pid() else {
        drop(t);
        let _ = space.destroy(&mut KernelFrames, &mut crate::proc::frame_refs());
        return Err(SpawnError::TooManyProcesses);
    };
    t.procs.insert(
        pid,
        Process {
            pid,
            parent,
            name,
            state: State::Ready,
            ctx,
            cpu: super::cpu_state::CpuState::new(),
            vm: Some(space),
            context: ContextId::NEW,
            asid: None,
            ticks: 0,
        },
    );
    t.ready.push_back(pid);
    Ok(pid)
}
