//! ARMv7-A (Cortex-A7) specifics: the boot stub, CP15, cache and TLB maintenance, exceptions,
//! the generic timer.

pub mod barrier;
pub mod boot;
pub mod cache;
pub mod cp15;
pub mod direct_map;
pub mod exception;
pub mod fpu;
pub mod irq;
pub mod mmu;
pub mod pmu;
pub mod semihosting;
pub mod smp;
pub mod timer;
pub mod tlb;

/// Core number in the cluster (MPIDR.Aff0).
pub fn core_id() -> u32 {
    aarch32_cpu::register::Mpidr::read().0 & 0x3
}

/// Current CPSR.
pub fn cpsr() -> u32 {
    let v: u32;
    // SAFETY: reading CPSR has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, cpsr", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Current stack pointer.
pub fn sp() -> u32 {
    let v: u32;
    // SAFETY: copying SP has no side effects.
    unsafe { core::arch::asm!("mov {}, sp", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Current program counter (approximately: the address of this code).
pub fn pc() -> u32 {
    let v: u32;
    // SAFETY: reading PC has no side effects.
    unsafe { core::arch::asm!("mov {}, pc", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Waits for an event forever.
pub fn halt() -> ! {
    loop {
        aarch32_cpu::asm::wfe();
    }
}
