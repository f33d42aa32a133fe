//! Interrupt masking, and a spin lock that masks IRQs while held so that an IRQ handler taking the
//! same lock cannot deadlock against the code it interrupted.

use core::ops::{Deref, DerefMut};

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

/// A `spin::Mutex` that keeps IRQs masked while it is held.
pub struct IrqSafeMutex<T> {
    inner: spin::Mutex<T>,
}

/// Guard of an [`IrqSafeMutex`]; unmasks IRQs (if they were on) after unlocking.
pub struct IrqSafeGuard<'a, T> {
    guard: Option<spin::MutexGuard<'a, T>>,
    was_enabled: bool,
}

impl<T> IrqSafeMutex<T> {
    /// A new unlocked mutex.
    pub const fn new(value: T) -> Self {
        Self {
            inner: spin::Mutex::new(value),
        }
    }

    /// Masks IRQs, then takes the lock.
    pub fn lock(&self) -> IrqSafeGuard<'_, T> {
        let was_enabled = disable();
        IrqSafeGuard {
            guard: Some(self.inner.lock()),
            was_enabled,
        }
    }

    /// Takes the lock from code that runs with IRQs masked already (exception handlers, the
    /// kernel task outside its idle wait): the same lock without masking and unmasking again.
    #[inline]
    pub fn lock_masked(&self) -> spin::MutexGuard<'_, T> {
        debug_assert!(
            crate::arch::arm::cpsr() & (1 << 7) != 0,
            "lock_masked with IRQs enabled"
        );
        self.inner.lock()
    }

    /// Takes the lock if it is free (IRQs masked while held).
    pub fn try_lock(&self) -> Option<IrqSafeGuard<'_, T>> {
        let was_enabled = disable();
        match self.inner.try_lock() {
            Some(g) => Some(IrqSafeGuard {
                guard: Some(g),
                was_enabled,
            }),
            None => {
                restore(was_enabled);
                None
            }
        }
    }
}

impl<T> Deref for IrqSafeGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("guard is live until drop")
    }
}

impl<T> DerefMut for IrqSafeGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("guard is live until drop")
    }
}

impl<T> Drop for IrqSafeGuard<'_, T> {
    fn drop(&mut self) {
        drop(self.guard.take());
        restore(self.was_enabled);
    }
}
