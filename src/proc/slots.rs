//! The process records: one slot per possible process, found by pid in constant time.
//!
//! A pid lives in slot `pid % MAX_PROCESSES`, and a new pid is only handed out when its slot is
//! free, so finding a process is one index and one compare: every system call, fault and
//! switch looks up the current process, and a search tree made each of them pay a descent. The
//! slots are allocated once, when the process layer starts: no process record grows the heap.

use super::{Pid, Process, MAX_PROCESSES};
use alloc::vec::Vec;

/// The process records, by pid.
pub struct Slots {
    slots: Vec<Option<Process>>,
    len: usize,
}

impl Slots {
    /// No slots yet: [`Slots::allocate`] makes them.
    pub const fn new() -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
        }
    }

    /// Makes the [`MAX_PROCESSES`] empty slots (once, at start-up).
    pub fn allocate(&mut self) {
        if self.slots.is_empty() {
            self.slots.resize_with(MAX_PROCESSES, || None);
        }
    }

    fn index(pid: Pid) -> usize {
        pid as usize % MAX_PROCESSES
    }

    /// Whether `pid` could be given to a new process (its slot is free).
    pub fn slot_free(&self, pid: Pid) -> bool {
        self.slots
            .get(Self::index(pid))
            .is_some_and(Option::is_none)
    }

    /// Process `pid`.
    #[inline]
    pub fn get(&self, pid: &Pid) -> Option<&Process> {
        match self.slots.get(Self::index(*pid)) {
            Some(Some(p)) if p.pid == *pid => Some(p),
            _ => None,
        }
    }

    /// Process `pid`, to change.
    #[inline]
    pub fn get_mut(&mut self, pid: &Pid) -> Option<&mut Process> {
        match self.slots.get_mut(Self::index(*pid)) {
            Some(Some(p)) if p.pid == *pid => Some(p),
            _ => None,
        }
    }

    /// Puts `p` in its slot, which must be free (pids are handed out only for free slots).
    pub fn insert(&mut self, pid: Pid, p: Process) {
        debug_assert_eq!(pid, p.pid);
        let slot = &mut self.slots[Self::index(pid)];
        assert!(slot.is_none(), "pid {pid}: its slot is taken");
        *slot = Some(p);
        self.len += 1;
    }

    /// Takes process `pid` out.
    pub fn remove(&mut self, pid: &Pid) -> Option<Process> {
        let slot = self.slots.get_mut(Self::index(*pid))?;
        if slot.as_ref().is_some_and(|p| p.pid == *pid) {
            self.len -= 1;
            slot.take()
        } else {
            None
        }
    }

    /// Number of processes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Every process, by slot.
    pub fn values(&self) -> impl Iterator<Item = &Process> {
        self.slots.iter().flatten()
    }

    /// Every process, by slot, to change.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Process> {
        self.slots.iter_mut().flatten()
    }
}
