//! Address-space identifiers (ASIDs) with generation-based rollover.
//!
//! ARMv7 tags non-global TLB entries with an 8-bit ASID (CONTEXTIDR), so switching between user
//! address spaces needs no TLB flush as long as no two live spaces share an ASID. There are only
//! 255 of them (ASID 0 is kept for the kernel, which runs with it while TTBR0 and the ASID change),
//! so they are recycled in *generations*, in the manner of Linux's ARM context code:
//!
//! - An address space holds a [`ContextId`]: a 56-bit generation above its 8-bit ASID. A context
//!   whose generation is the current one owns its ASID; any other context is *stale*. Generations
//!   only grow (a `u64`; at one rollover per microsecond the 56 bits last 2000 years), so a stale
//!   context can never look current again (no ABA).
//! - [`AsidAllocator::switch_to`] is called with the lock held, for the CPU that is about to run a
//!   space. A current context keeps its ASID (fast path). A stale one gets an ASID of the current
//!   generation: the one it was reserved (see below), else its old ASID if nobody took it in this
//!   generation, else the next free one.
//! - When all 255 are taken, the generation advances (*rollover*): the bitmap is cleared and only
//!   the ASIDs that are *running* on some CPU right now are kept, *reserved* for the space that runs
//!   there, so it keeps its ASID when switched in again. Every CPU must then flush its whole local
//!   TLB before it next uses an ASID, because entries of the old generation may carry ASIDs that are
//!   now handed to other spaces; `switch_to` says so once per CPU ([`AsidSwitch::flush_tlb`]).
//!   A CPU that has not switched since the last rollover keeps its reserved ASID over the next one:
//!   it is the only trace of the space it is still running.
//! - [`AsidAllocator::release`], on address-space destruction, returns the ASID to the pool if the
//!   context is current, so it may be handed out again in this very generation: the caller must have
//!   invalidated that ASID's TLB entries on every CPU first (`TLBIASIDIS`).
//!
//! The allocator is plain data behind `&mut self` (the kernel wraps it in a lock), allocates nothing
//! and does not touch the hardware: the caller programs CONTEXTIDR and flushes the TLB.

/// Number of ASID values (8 bits).
pub const ASID_COUNT: usize = 256;
const WORDS: usize = ASID_COUNT / 32;
const ASID_MASK: u64 = 0xff;
const ASID_BITS: u32 = 8;

/// A hardware ASID, the value for CONTEXTIDR.ASID.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Asid(u8);

impl Asid {
    /// The ASID with this value (0 is the kernel's reserved ASID).
    pub const fn new(value: u8) -> Self {
        Self(value)
    }

    /// The ASID the kernel runs with while switching; never given to an address space.
    pub const KERNEL: Asid = Asid(0);

    /// Its value.
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// What an address space remembers of its ASID: generation and ASID. Starts as [`ContextId::NEW`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct ContextId(u64);

impl ContextId {
    /// An address space that has never run.
    pub const NEW: ContextId = ContextId(0);

    const fn from_parts(generation: u64, asid: u64) -> Self {
        Self((generation << ASID_BITS) | asid)
    }

    /// The generation its ASID belongs to (0 for [`ContextId::NEW`]).
    pub const fn generation(self) -> u64 {
        self.0 >> ASID_BITS
    }

    /// Its ASID, or `None` for [`ContextId::NEW`].
    pub const fn asid(self) -> Option<Asid> {
        if self.0 == 0 {
            None
        } else {
            Some(Asid((self.0 & ASID_MASK) as u8))
        }
    }

    /// The raw value (generation << 8 | ASID).
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

/// The result of [`AsidAllocator::switch_to`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use]
pub struct AsidSwitch {
    /// The ASID to program with the space's TTBR0.
    pub asid: Asid,
    /// The whole local TLB must be invalidated (`TLBIALL`) before this ASID is used: a rollover
    /// happened since this CPU last switched.
    pub flush_tlb: bool,
}

/// Why the ASID allocator refused a request. A refused call changes nothing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AsidError {
    /// The CPU number is not below the allocator's CPU count.
    NoSuchCpu,
    /// Releasing an address space that some CPU is still running.
    Running,
}

impl core::fmt::Display for AsidError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NoSuchCpu => "no such CPU",
            Self::Running => "address space is still running",
        })
    }
}

/// ASID allocator for `CPUS` CPUs (1 to 127). See the [module documentation](self).
#[derive(Debug)]
pub struct AsidAllocator<const CPUS: usize> {
    /// The current generation, from 1 on.
    generation: u64,
    /// ASIDs taken in the current generation; bit 0 (the kernel's) always set.
    map: [u32; WORDS],
    /// Where the search for a free ASID starts (1..=255).
    next: usize,
    /// Raw context each CPU switched to since the last rollover, or 0 if none.
    active: [u64; CPUS],
    /// Raw context each CPU was running at the last rollover (kept while `active` is 0).
    reserved: [u64; CPUS],
    /// The CPU has to flush its TLB before its next switch completes.
    flush_pending: [bool; CPUS],
    /// The ASIDs the last rollover took for the reserved contexts (0: none). One whose space
    /// ended, or whose CPU left it, before it switched in again stays taken until the next
    /// rollover (as in Linux): at most one per CPU.
    kept: [u8; CPUS],
}

impl<const CPUS: usize> Default for AsidAllocator<CPUS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CPUS: usize> AsidAllocator<CPUS> {
    /// The reserved ASIDs must leave room for new ones after a rollover.
    const VALID_CPU_COUNT: () = assert!(CPUS >= 1 && CPUS < 128, "1 to 127 CPUs");

    /// An allocator in generation 1 with every ASID but 0 free.
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID_CPU_COUNT;
        let mut map = [0; WORDS];
        map[0] = 1;
        Self {
            generation: 1,
            map,
            next: 1,
            active: [0; CPUS],
            reserved: [0; CPUS],
            flush_pending: [false; CPUS],
            kept: [0; CPUS],
        }
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many ASIDs (other than the kernel's) are taken in the current generation.
    pub fn asids_in_use(&self) -> u32 {
        self.map.iter().map(|w| w.count_ones()).sum::<u32>() - 1
    }

    /// The ASIDs taken other than those the last rollover kept: once every space has ended, 0
    /// unless one leaked (a kept ASID waits for the next rollover by design, see `kept`).
    pub fn asids_in_use_beyond_kept(&self) -> u32 {
        let mut kept = [0u32; WORDS];
        for &a in &self.kept {
            let a = usize::from(a);
            if a != 0 && self.is_taken(a) {
                kept[a / 32] |= 1 << (a % 32);
            }
        }
        self.asids_in_use() - kept.iter().map(|w| w.count_ones()).sum::<u32>()
    }

    /// Whether some CPU is running the space with this context (switched to it and not away since,
    /// across rollovers included).
    pub fn is_running(&self, ctx: ContextId) -> bool {
        ctx != ContextId::NEW
            && (0..CPUS).any(|c| {
                self.active[c] == ctx.0 || (self.active[c] == 0 && self.reserved[c] == ctx.0)
            })
    }

    /// CPU `cpu` is about to run the address space whose context is `ctx`: returns the ASID to
    /// use (updating `ctx` if it was stale or new) and whether the local TLB must be flushed first.
    pub fn switch_to(&mut self, cpu: usize, ctx: &mut ContextId) -> Result<AsidSwitch, AsidError> {
        if cpu >= CPUS {
            return Err(AsidError::NoSuchCpu);
        }
        let mut id = ctx.0;
        let current = id != 0 && id >> ASID_BITS == self.generation;
        if !current {
            id = self.new_context(id);
            *ctx = ContextId(id);
        }
        let flush_tlb = core::mem::replace(&mut self.flush_pending[cpu], false);
        self.active[cpu] = id;
        Ok(AsidSwitch {
            asid: Asid((id & ASID_MASK) as u8),
            flush_tlb,
        })
    }

    /// CPU `cpu` runs no user address space any more (TTBR0 walks off, the reserved ASID 0
    /// current): nothing of it has to survive a rollover, and the space it ran may be released.
    pub fn leave(&mut self, cpu: usize) -> Result<(), AsidError> {
        if cpu >= CPUS {
            return Err(AsidError::NoSuchCpu);
        }
        self.active[cpu] = 0;
        self.reserved[cpu] = 0;
        Ok(())
    }

    /// The address space with context `ctx` is being destroyed. Frees its ASID if the context is
    /// current and returns it: the caller must already have invalidated the TLB entries tagged
    /// with it on every CPU, for it may be handed out by the next `switch_to`. `ctx` is reset to
    /// [`ContextId::NEW`], so releasing twice frees nothing twice.
    ///
    /// Refused with [`AsidError::Running`] while a CPU still runs the space.
    pub fn release(&mut self, ctx: &mut ContextId) -> Result<Option<Asid>, AsidError> {
        let id = ctx.0;
        if id == 0 {
            return Ok(None);
        }
        if self.is_running(*ctx) {
            return Err(AsidError::Running);
        }
        *ctx = ContextId::NEW;
        for r in &mut self.reserved {
            if *r == id {
                *r = 0;
            }
        }
        if id >> ASID_BITS != self.generation {
            return Ok(None);
        }
        let asid = (id & ASID_MASK) as usize;
        debug_assert!(self.is_taken(asid));
        self.map[asid / 32] &= !(1 << (asid % 32));
        Ok(Some(Asid(asid as u8)))
    }

    /// An ASID of the current generation for a new or stale context.
    fn new_context(&mut self, old: u64) -> u64 {
        if old != 0 {
            let asid = old & ASID_MASK;
            let new = ContextId::from_parts(self.generation, asid).0;
            // Running somewhere at the last rollover: its ASID was kept for it.
            if self.update_reserved(old, new) {
                return new;
            }
            // Nobody took its old ASID in this generation: keep it.
            if !self.is_taken(asid as usize) {
                self.take(asid as usize);
                return new;
            }
        }
        let asid = match self.find_free() {
            Some(a) => a,
            None => {
                self.rollover();
                // At most CPUS (< 128) ASIDs survive a rollover.
                self.find_free().unwrap_or(ASID_COUNT - 1)
            }
        };
        self.take(asid);
        self.next = if asid + 1 == ASID_COUNT { 1 } else { asid + 1 };
        ContextId::from_parts(self.generation, asid as u64).0
    }

    /// Moves every reserved entry equal to `old` to `new`; whether there was one.
    fn update_reserved(&mut self, old: u64, new: u64) -> bool {
        let mut hit = false;
        for r in &mut self.reserved {
            if *r == old {
                *r = new;
                hit = true;
            }
        }
        hit
    }

    /// Starts a new generation, keeping the ASIDs running on each CPU.
    fn rollover(&mut self) {
        self.generation += 1;
        self.map = [0; WORDS];
        self.map[0] = 1;
        for cpu in 0..CPUS {
            let mut id = core::mem::replace(&mut self.active[cpu], 0);
            if id == 0 {
                // No switch since the last rollover: still running what it reserved then.
                id = self.reserved[cpu];
            }
            if id != 0 {
                self.take((id & ASID_MASK) as usize);
            }
            self.reserved[cpu] = id;
            self.kept[cpu] = (id & ASID_MASK) as u8;
        }
        self.flush_pending = [true; CPUS];
        self.next = 1;
    }

    fn is_taken(&self, asid: usize) -> bool {
        self.map[asid / 32] & (1 << (asid % 32)) != 0
    }

    fn take(&mut self, asid: usize) {
        self.map[asid / 32] |= 1 << (asid % 32);
    }

    /// The first free ASID from `next` on, wrapping around once.
    fn find_free(&self) -> Option<usize> {
        let first = self.next / 32;
        let low = u32::MAX << (self.next % 32);
        for k in 0..=WORDS {
            let w = (first + k) % WORDS;
            let mask = match k {
                0 => low,
                WORDS => !low,
                _ => u32::MAX,
            };
            let free = !self.map[w] & mask;
            if free != 0 {
                return Some(w * 32 + free.trailing_zeros() as usize);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    fn switch<const C: usize>(
        a: &mut AsidAllocator<C>,
        cpu: usize,
        ctx: &mut ContextId,
    ) -> (u8, bool) {
        let s = a.switch_to(cpu, ctx).unwrap();
        assert_eq!(Some(s.asid), ctx.asid());
        (s.asid.get(), s.flush_tlb)
    }

    /// Runs 255 new spaces on CPU 0 (the last one stays running there).
    fn fill<const C: usize>(a: &mut AsidAllocator<C>) -> Vec<ContextId> {
        (0..255)
            .map(|_| {
                let mut c = ContextId::NEW;
                switch(a, 0, &mut c);
                c
            })
            .collect()
    }

    #[test]
    fn a_new_space_gets_an_asid_of_generation_1_without_a_flush() {
        let mut a = AsidAllocator::<1>::new();
        let mut c = ContextId::NEW;
        assert_eq!(c.asid(), None);
        assert_eq!(switch(&mut a, 0, &mut c), (1, false));
        assert_eq!(c.generation(), 1);
        assert_eq!(a.asids_in_use(), 1);
    }

    #[test]
    fn the_255_asids_go_to_255_spaces_and_asid_0_to_none() {
        let mut a = AsidAllocator::<1>::new();
        let asids: BTreeSet<u8> = fill(&mut a)
            .iter()
            .map(|c| c.asid().unwrap().get())
            .collect();
        assert_eq!(asids.len(), 255);
        assert!(!asids.contains(&Asid::KERNEL.get()));
        assert_eq!(a.generation(), 1);
        assert_eq!(a.asids_in_use(), 255);
    }

    #[test]
    fn switching_back_to_a_current_space_keeps_its_asid_and_needs_no_flush() {
        let mut a = AsidAllocator::<1>::new();
        let mut x = ContextId::NEW;
        let mut y = ContextId::NEW;
        let (ax, _) = switch(&mut a, 0, &mut x);
        switch(&mut a, 0, &mut y);
        let before = x;
        assert_eq!(switch(&mut a, 0, &mut x), (ax, false));
        assert_eq!(x, before);
    }

    #[test]
    fn the_256th_space_starts_a_new_generation_and_every_cpu_flushes_exactly_once() {
        let mut a = AsidAllocator::<2>::new();
        let spaces = fill(&mut a);
        let mut last = ContextId::NEW;
        let (_, flush) = switch(&mut a, 1, &mut last);
        assert!(flush, "the CPU that rolled over flushes");
        assert_eq!(a.generation(), 2);
        assert_eq!(last.generation(), 2);
        let (_, flush) = switch(&mut a, 1, &mut last);
        assert!(!flush, "only once");
        let mut other = spaces[3];
        let (_, flush) = switch(&mut a, 0, &mut other);
        assert!(
            flush,
            "CPU 0 flushes on its first switch after the rollover"
        );
        let (_, flush) = switch(&mut a, 0, &mut other);
        assert!(!flush);
    }

    #[test]
    fn a_rollover_on_four_cpus_keeps_the_four_running_asids_and_each_cpu_flushes_once() {
        let mut a = AsidAllocator::<4>::new();
        let mut running = [ContextId::NEW; 4];
        for (cpu, ctx) in running.iter_mut().enumerate() {
            switch(&mut a, cpu, ctx);
        }
        let kept: Vec<_> = running.iter().map(|c| c.asid()).collect();
        // CPU 3 goes round new spaces until one of them rolls over; CPUs 0-2 do not switch.
        let mut c3 = running[3];
        while a.generation() == 1 {
            c3 = ContextId::NEW;
            let (_, flush) = switch(&mut a, 3, &mut c3);
            assert_eq!(
                flush,
                a.generation() == 2,
                "CPU 3 flushes at the rollover only"
            );
        }
        assert!(!kept[..3].contains(&c3.asid()), "a running ASID handed out");
        for cpu in 0..3 {
            assert!(a.is_running(running[cpu]));
            let (asid, flush) = switch(&mut a, cpu, &mut running[cpu]);
            assert!(
                flush,
                "CPU {cpu} flushes before its first switch after the rollover"
            );
            assert_eq!(
                Some(Asid(asid)),
                kept[cpu],
                "CPU {cpu}'s space keeps its ASID"
            );
            let (_, flush) = switch(&mut a, cpu, &mut running[cpu]);
            assert!(!flush, "CPU {cpu} flushes once");
        }
        let (_, flush) = switch(&mut a, 3, &mut c3);
        assert!(!flush, "CPU 3 flushed already");
    }

    #[test]
    fn a_space_running_during_a_rollover_keeps_its_asid() {
        let mut a = AsidAllocator::<2>::new();
        let spaces = fill(&mut a);
        let mut running = spaces[254]; // still running on CPU 0
        let asid = running.asid();
        let mut newcomer = ContextId::NEW;
        switch(&mut a, 1, &mut newcomer); // rollover
        assert_ne!(newcomer.asid(), asid);
        assert!(a.is_running(running));
        let (_, flush) = switch(&mut a, 0, &mut running);
        assert!(flush);
        assert_eq!(running.asid(), asid);
        assert_eq!(running.generation(), 2);
    }

    #[test]
    fn a_space_reserved_on_one_cpu_keeps_its_asid_when_switched_in_on_another() {
        let mut a = AsidAllocator::<2>::new();
        let spaces = fill(&mut a);
        let mut running = spaces[254];
        let asid = running.asid();
        let mut newcomer = ContextId::NEW;
        switch(&mut a, 1, &mut newcomer); // rollover
        switch(&mut a, 1, &mut running);
        assert_eq!(running.asid(), asid);
        // Its ASID stays out of the pool for the rest of the generation.
        let mut others = Vec::new();
        while a.generation() == 2 {
            let mut c = ContextId::NEW;
            switch(&mut a, 1, &mut c);
            if a.generation() == 2 {
                assert_ne!(c.asid(), asid);
                others.push(c);
            }
        }
        assert_eq!(others.len(), 255 - 2);
    }

    #[test]
    fn a_stale_space_gets_its_old_asid_back_when_nobody_took_it() {
        let mut a = AsidAllocator::<1>::new();
        let spaces = fill(&mut a);
        let mut newcomer = ContextId::NEW;
        switch(&mut a, 0, &mut newcomer); // rollover: gets ASID 1
        let mut old = spaces[10];
        let asid = old.asid();
        switch(&mut a, 0, &mut old);
        assert_eq!(old.asid(), asid);
        assert_eq!(old.generation(), 2);
    }

    #[test]
    fn a_stale_space_gets_a_fresh_asid_when_its_old_one_was_taken() {
        let mut a = AsidAllocator::<1>::new();
        let spaces = fill(&mut a);
        let mut newcomer = ContextId::NEW;
        switch(&mut a, 0, &mut newcomer);
        let mut old = spaces[newcomer.asid().unwrap().get() as usize - 1];
        assert_eq!(old.asid(), newcomer.asid());
        switch(&mut a, 0, &mut old);
        assert_ne!(old.asid(), newcomer.asid());
    }

    #[test]
    fn a_cpu_idle_across_two_rollovers_keeps_its_reserved_asid() {
        let mut a = AsidAllocator::<2>::new();
        let mut idle = ContextId::NEW;
        switch(&mut a, 0, &mut idle);
        let asid = idle.asid();
        for _ in 0..600 {
            let mut c = ContextId::NEW;
            switch(&mut a, 1, &mut c);
            assert_ne!(c.asid(), asid);
        }
        assert!(a.generation() >= 3);
        assert!(a.is_running(idle));
        let (_, flush) = switch(&mut a, 0, &mut idle);
        assert!(flush);
        assert_eq!(idle.asid(), asid);
    }

    #[test]
    fn releasing_a_current_space_frees_its_asid_and_resets_the_context() {
        let mut a = AsidAllocator::<1>::new();
        let mut x = ContextId::NEW;
        let mut y = ContextId::NEW;
        switch(&mut a, 0, &mut x);
        switch(&mut a, 0, &mut y);
        let asid = x.asid();
        assert_eq!(a.release(&mut x), Ok(asid));
        assert_eq!(x, ContextId::NEW);
        assert_eq!(a.asids_in_use(), 1);
        assert_eq!(
            a.release(&mut x),
            Ok(None),
            "a second release frees nothing"
        );
        assert_eq!(a.asids_in_use(), 1);
    }

    #[test]
    fn a_released_asid_is_handed_out_again_before_any_rollover() {
        let mut a = AsidAllocator::<1>::new();
        let mut spaces = fill(&mut a);
        let freed = a.release(&mut spaces[7]).unwrap();
        let mut c = ContextId::NEW;
        switch(&mut a, 0, &mut c);
        assert_eq!(c.asid(), freed);
        assert_eq!(a.generation(), 1);
    }

    #[test]
    fn releasing_a_stale_or_new_space_frees_nothing() {
        let mut a = AsidAllocator::<1>::new();
        let mut spaces = fill(&mut a);
        let mut c = ContextId::NEW;
        assert_eq!(a.release(&mut c), Ok(None));
        switch(&mut a, 0, &mut c); // rollover
        let in_use = a.asids_in_use();
        assert_eq!(a.release(&mut spaces[0]), Ok(None));
        assert_eq!(a.asids_in_use(), in_use);
    }

    #[test]
    fn an_asid_kept_for_a_space_that_then_ends_waits_for_the_next_rollover() {
        let mut a = AsidAllocator::<2>::new();
        let mut x = ContextId::NEW;
        switch(&mut a, 1, &mut x);
        let mut spaces: Vec<ContextId> = (0..254).map(|_| ContextId::NEW).collect();
        for c in &mut spaces {
            switch(&mut a, 0, c);
        }
        let mut c = ContextId::NEW;
        // Rollover: CPU 1's ASID is kept for x, CPU 0's for the last of `spaces`.
        switch(&mut a, 0, &mut c);
        for s in spaces.iter_mut().chain([&mut c]) {
            a.leave(0).unwrap();
            a.release(s).unwrap();
        }
        a.leave(1).unwrap();
        assert_eq!(a.release(&mut x), Ok(None), "x is of the old generation");
        assert_eq!(a.asids_in_use(), 2, "the kept ASIDs stay taken");
        assert_eq!(a.asids_in_use_beyond_kept(), 0, "and nothing else");
    }

    #[test]
    fn releasing_a_running_space_is_refused_and_changes_nothing() {
        let mut a = AsidAllocator::<2>::new();
        let mut x = ContextId::NEW;
        switch(&mut a, 1, &mut x);
        let before = x;
        assert_eq!(a.release(&mut x), Err(AsidError::Running));
        assert_eq!(x, before);
        assert_eq!(a.asids_in_use(), 1);
        let mut y = ContextId::NEW;
        switch(&mut a, 1, &mut y);
        assert_eq!(a.release(&mut x), Ok(before.asid()));
    }

    #[test]
    fn an_unknown_cpu_is_refused_and_changes_nothing() {
        let mut a = AsidAllocator::<2>::new();
        let mut x = ContextId::NEW;
        assert_eq!(a.switch_to(2, &mut x), Err(AsidError::NoSuchCpu));
        assert_eq!(x, ContextId::NEW);
        assert_eq!(a.asids_in_use(), 0);
    }

    #[test]
    fn generations_only_grow() {
        let mut a = AsidAllocator::<1>::new();
        let mut last = a.generation();
        for _ in 0..2000 {
            let mut c = ContextId::NEW;
            switch(&mut a, 0, &mut c);
            assert!(a.generation() >= last);
            last = a.generation();
        }
        assert!(last >= 8);
    }

    #[test]
    fn a_space_can_be_released_once_its_cpu_has_left_it() {
        let mut a = AsidAllocator::<1>::new();
        let mut ctx = ContextId::NEW;
        let asid = a.switch_to(0, &mut ctx).unwrap().asid;
        let before = ctx;
        assert_eq!(a.release(&mut ctx), Err(AsidError::Running));
        assert_eq!(ctx, before, "a refused release changes nothing");
        a.leave(0).unwrap();
        assert!(!a.is_running(ctx));
        assert_eq!(a.release(&mut ctx), Ok(Some(asid)));
        assert_eq!(a.asids_in_use(), 0);
        assert_eq!(a.leave(1), Err(AsidError::NoSuchCpu));
    }
}
