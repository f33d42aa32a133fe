//! A typed view of a register block at a virtual address: the one place where an address becomes
//! a reference to device registers.

use crate::mm::VirtAddr;
use core::marker::PhantomData;
use core::ops::Deref;

/// Registers of type `T` at a virtual address mapped with device attributes.
pub struct Mmio<T> {
    base: VirtAddr,
    _regs: PhantomData<fn() -> T>,
}

impl<T> Mmio<T> {
    /// # Safety
    /// `base` must map the device's registers with Device or Strongly-ordered attributes for as
    /// long as this value (or a copy) is used, and `T` must describe that device's layout.
    pub const unsafe fn new(base: VirtAddr) -> Self {
        Self {
            base,
            _regs: PhantomData,
        }
    }

    /// The virtual base address.
    pub fn base(&self) -> VirtAddr {
        self.base
    }
}

impl<T> Deref for Mmio<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `new` made the caller promise a live device mapping of `T` at `base`.
        unsafe { &*(self.base.as_usize() as *const T) }
    }
}
