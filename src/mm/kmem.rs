//! Kernel memory that user programs cause: counted against a budget, refused when it is spent.
//!
//! Some of what a process asks for costs the kernel heap rather than frames: the array of its
//! address space's regions, a shared-memory object's table of pages. Left alone, a few
//! processes adding regions or objects would exhaust the heap and the kernel would die on a
//! failed allocation. So every such object is *charged* before it is made: a [`Charge`] taken from a
//! [`KmemBudget`] of a fixed number of bytes. When the budget is spent the request fails (the
//! system call returns `ENOMEM`) and nothing was allocated. The kernel keeps enough frames out
//! of user reach to grow its heap by the whole budget (see `proc::KernelFrames`), so a charged
//! allocation always finds memory.
//!
//! A charge is the heap the object takes, counted the way the kernel's buddy heap hands memory
//! out (every block rounded up to a power of two): see [`slice_cost`]. A
//! [`Charge`] gives its bytes back when dropped, so an object that holds its charge cannot leak
//! it. The budget is two atomics, so it serves every core without a lock.

use core::fmt;
use core::mem::size_of;
use core::sync::atomic::{AtomicU32, Ordering};

/// A number of bytes of kernel heap that user requests may take at once.
#[derive(Debug)]
pub struct KmemBudget {
    limit: AtomicU32,
    used: AtomicU32,
}

/// The budget is spent: the request that needed it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget;

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("kernel memory budget for user requests exhausted")
    }
}

impl KmemBudget {
    /// A budget of `limit` bytes, none of them used.
    pub const fn new(limit: u32) -> Self {
        Self {
            limit: AtomicU32::new(limit),
            used: AtomicU32::new(0),
        }
    }

    /// Sets the limit (at boot, once the size of RAM is known). Charges already taken stay.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes charged now.
    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the budget, or refuses (nothing taken) if that would pass the limit.
    fn take(&self, bytes: u32) -> Result<(), OverBudget> {
        if bytes == 0 {
            return Ok(());
        }
        let limit = self.limit();
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&u| u <= limit)
            })
            .map(|_| ())
            .map_err(|_| OverBudget)
    }

    /// Gives `bytes` back.
    fn give(&self, bytes: u32) {
        if bytes == 0 {
            return;
        }
        let before = self.used.fetch_sub(bytes, Ordering::Relaxed);
        debug_assert!(before >= bytes, "kernel memory budget given back twice");
    }

    /// A charge of `bytes` against this budget, or `OverBudget` (nothing charged).
    pub fn charge(&'static self, bytes: u32) -> Result<Charge, OverBudget> {
        self.take(bytes)?;
        Ok(Charge {
            budget: self,
            bytes,
        })
    }

    /// A charge of nothing, to be grown with [`Charge::resize`].
    pub const fn empty(&'static self) -> Charge {
        Charge {
            budget: self,
            bytes: 0,
        }
    }
}

/// A budget without a limit, for address spaces and objects whose heap the caller does not
/// need to bound (the host tests, the kernel's own use).
pub static UNLIMITED: KmemBudget = KmemBudget::new(u32::MAX);

/// Bytes taken from a [`KmemBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: &'static KmemBudget,
    bytes: u32,
}

impl Charge {
    /// The bytes held.
    pub fn bytes(&self) -> u32 {
        self.bytes
    }

    /// The budget it is taken from.
    pub fn budget(&self) -> &'static KmemBudget {
        self.budget
    }

    /// Grows or shrinks the charge to `bytes`. Growing may be refused (the charge is then
    /// unchanged); shrinking always succeeds.
    pub fn resize(&mut self, bytes: u32) -> Result<(), OverBudget> {
        if bytes > self.bytes {
            self.budget.take(bytes - self.bytes)?;
        } else {
            self.budget.give(self.bytes - bytes);
        }
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}

/// What the buddy heap hands out for a request of `bytes`: the next power of two.
const fn block(bytes: usize) -> u32 {
    bytes.next_power_of_two() as u32
}

/// Heap bytes of one allocation of `T` (rounded as the buddy heap rounds it).
pub const fn object_cost<T>() -> u32 {
    block(size_of::<T>())
}

/// Heap bytes of a slice of `n` values of `T` allocated at once.
pub const fn slice_cost<T>(n: usize) -> u32 {
    block(n * size_of::<T>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_refused_past_the_limit_and_given_back_on_drop() {
        static B: KmemBudget = KmemBudget::new(1000);
        let a = B.charge(600).unwrap();
        assert_eq!(B.used(), 600);
        assert_eq!(B.charge(401).unwrap_err(), OverBudget);
        assert_eq!(B.used(), 600, "a refused charge takes nothing");
        let b = B.charge(400).unwrap();
        assert_eq!(B.used(), 1000);
        drop(a);
        assert_eq!(B.used(), 400);
        drop(b);
        assert_eq!(B.used(), 0);
    }

    #[test]
    fn a_charge_grows_only_within_the_limit_and_always_shrinks() {
        static B: KmemBudget = KmemBudget::new(100);
        let mut c = B.empty();
        c.resize(60).unwrap();
        assert_eq!(c.resize(101), Err(OverBudget));
        assert_eq!(
            (c.bytes(), B.used()),
            (60, 60),
            "a refused resize changes nothing"
        );
        c.resize(100).unwrap();
        c.resize(10).unwrap();
        assert_eq!(B.used(), 10);
        drop(c);
        assert_eq!(B.used(), 0);
    }

    #[test]
    fn an_overflowing_charge_is_refused() {
        static B: KmemBudget = KmemBudget::new(u32::MAX);
        let _a = B.charge(u32::MAX - 1).unwrap();
        assert_eq!(B.charge(2).unwrap_err(), OverBudget);
    }

    #[test]
    fn costs_round_like_the_buddy_heap() {
        assert_eq!(object_cost::<[u8; 100]>(), 128);
        assert_eq!(slice_cost::<u64>(3), 32);
    }
}
