//! Interrupt masking, and a spin lock that masks IRQs while held so that an IRQ handler taking the
//! same lock cannot deadlock against the code it interrupted.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

/// Masks IRQs and returns whether they were enabled before.
#[inline]
pub fn disable() -> bool {
    let cpsr: u32;
    // SAFETY: reads CPSR and sets the I bit; no memory is touched, but it is ordered as a
    // compiler barrier so no access moves out of the critical section.
    unsafe {
        core::arch::asm!("mrs {0}, cpsr", "cpsid i", out(reg) cpsr, options(nostack, preserves_flags));
    }
    cpsr & (1 << 7) == 0
}

/// Unmasks IRQs.
#[inline]
pub fn enable() {
    // SAFETY: clears the I bit; a compiler barrier like `disable`.
    unsafe { core::arch::asm!("cpsie i", options(nostack, preserves_flags)) }
}

/// Unmasks asynchronous aborts (CPSR.A), so that one is taken as soon as it is signalled:
/// masked, it would wait for the next return to User mode and be blamed on that process.
/// Needs the exception vectors in place.
#[inline]
pub fn unmask_async_aborts() {
    // SAFETY: clears the A bit; the abort vector is installed, and the handler reports an
    // asynchronous abort as such.
    unsafe { core::arch::asm!("cpsie a", options(nostack, preserves_flags)) }
}

/// Masks IRQs, FIQs and asynchronous aborts (for the panic handler).
#[inline]
pub fn mask_all() {
    // SAFETY: sets the A, I and F bits; a compiler barrier like `disable`.
    unsafe { core::arch::asm!("cpsid aif", options(nostack, preserves_flags)) }
}

/// Whether asynchronous aborts are masked (CPSR.A).
pub fn async_aborts_masked() -> bool {
    crate::arch::arm::cpsr() & (1 << 8) != 0
}

/// Restores the mask state `disable` returned.
#[inline]
pub fn restore(was_enabled: bool) {
    if was_enabled {
        enable();
    }
}

/// A spin lock that keeps IRQs masked on its core while it is held.
///
/// - **Masking**: a handler that takes the lock can never interrupt, on the same core, code
///   that holds it (which would spin for ever).
/// - **The lock word** is 0 when free and 1 + the holding core otherwise, set by LDREX/STREX
///   (compare and swap) and cleared by a release store that publishes the protected data. So
///   code can tell "this core holds it" (a bug, where it would deadlock) from "another core
///   holds it" (wait) without a recursive lock. Waiters read the word until it is 0 before
///   they try the exclusive store (test and test-and-set), so a held lock costs its waiters
///   only cache reads.
/// - **Not a ticket lock**, on purpose: a ticket lock serves cores in order, but then every
///   handoff waits for the next waiter to run; under QEMU with more vCPUs than host cores
///   (two-core CI machines) that made the on-target suite 20 times slower. The kernel's hold
///   times are short (the process table is the busiest), and a waiter takes the lock as soon
///   as it is free; `make bench` measures the contended case.
///
/// Needs the MMU and D-cache on (LDREX/STREX on Normal cacheable memory).
#[repr(C)]
pub struct IrqSafeMutex<T> {
    /// 0: free; 1 + the core that holds it.
    word: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and a guard exists for one holder at a
// time (the lock word); moving `T` between cores needs `T: Send`.
unsafe impl<T: Send> Sync for IrqSafeMutex<T> {}
// SAFETY: as above: the mutex owns its `T`.
unsafe impl<T: Send> Send for IrqSafeMutex<T> {}

/// Guard of an [`IrqSafeMutex`]; unmasks IRQs (if they were on) after unlocking.
pub struct IrqSafeGuard<'a, T> {
    lock: &'a IrqSafeMutex<T>,
    was_enabled: bool,
}

impl<T> IrqSafeMutex<T> {
    /// A new unlocked mutex.
    pub const fn new(value: T) -> Self {
        Self {
            word: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Masks IRQs, then takes the lock.
    pub fn lock(&self) -> IrqSafeGuard<'_, T> {
        let was_enabled = disable();
        self.acquire(was_enabled)
    }

    /// Takes the lock from code that runs with IRQs masked already (exception handlers, the
    /// kernel task outside its idle wait): the same lock without masking and unmasking again.
    #[inline]
    pub fn lock_masked(&self) -> IrqSafeGuard<'_, T> {
        debug_assert!(
            crate::arch::arm::cpsr() & (1 << 7) != 0,
            "lock_masked with IRQs enabled"
        );
        self.acquire(false)
    }

    #[inline]
    fn acquire(&self, was_enabled: bool) -> IrqSafeGuard<'_, T> {
        let me = super::core_id() + 1;
        while self
            .word
            .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.word.load(Ordering::Relaxed) != 0 {
                core::hint::spin_loop();
            }
        }
        IrqSafeGuard {
            lock: self,
            was_enabled,
        }
    }

    /// Takes the lock if it is free (IRQs masked while held).
    pub fn try_lock(&self) -> Option<IrqSafeGuard<'_, T>> {
        let was_enabled = disable();
        let me = super::core_id() + 1;
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            Some(IrqSafeGuard {
                lock: self,
                was_enabled,
            })
        } else {
            restore(was_enabled);
            None
        }
    }

    /// Whether this core holds the lock (a lock taken again on the same core would never be
    /// granted). Exact for this core: only this core sets or clears its own mark.
    pub fn held_here(&self) -> bool {
        self.word.load(Ordering::Relaxed) == super::core_id() + 1
    }
}

impl<T> Deref for IrqSafeGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the lock's only holder until it drops.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for IrqSafeGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard is the lock's only holder until it drops, and `&mut self` makes
        // this the only reference through it.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for IrqSafeGuard<'_, T> {
    fn drop(&mut self) {
        // Release: the holder's writes are visible to the next holder's acquiring CAS.
        self.lock.word.store(0, Ordering::Release);
        restore(self.was_enabled);
    }
}
