//! VideoCore mailbox, property channel (8): how the ARM asks the firmware for facts (memory
//! split, clock rates).
//!
//! The request buffer lives in cacheable RAM while the VideoCore reads and writes memory without
//! looking at the ARM caches, so the buffer is 64-byte aligned (a whole number of Cortex-A7 cache
//! lines, nothing else shares them), cleaned to the Point of Coherency before the request and
//! invalidated after the reply.

use super::mmio::Mmio;
use super::BUS_RAM_ALIAS;
use crate::arch::arm::{barrier, cache};
use crate::mm::{layout, PhysAddr, VirtAddr};
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, WriteOnly};

register_structs! {
    pub MailboxRegs {
        (0x00 => read: ReadOnly<u32>),
        (0x04 => _r0),
        (0x18 => status0: ReadOnly<u32>),
        (0x1c => _r1),
        (0x20 => write: WriteOnly<u32>),
        (0x24 => _r2),
        (0x38 => status1: ReadOnly<u32>),
        (0x3c => @END),
    }
}

const FULL: u32 = 1 << 31;
const EMPTY: u32 = 1 << 30;
const CHANNEL_PROPERTY: u32 = 8;
const REQUEST: u32 = 0;
const RESPONSE_OK: u32 = 0x8000_0000;
const TAG_GET_ARM_MEMORY: u32 = 0x0001_0005;
const TAG_GET_CLOCK_RATE: u32 = 0x0003_0002;
/// Clock id of the UART in GET_CLOCK_RATE.
pub const CLOCK_UART: u32 = 2;
/// Clock id of the EMMC controller's base clock in GET_CLOCK_RATE.
pub const CLOCK_EMMC: u32 = 1;

/// Why a property call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxError {
    /// The firmware did not answer with the "request successful" code.
    Failed(u32),
    /// The tag came back without its response bit or with a short value.
    BadTag(u32),
    /// No answer after many polls.
    Timeout,
}

#[repr(C, align(64))]
struct Buffer([u32; 16]);

static BUFFER: spin::Mutex<Buffer> = spin::Mutex::new(Buffer([0; 16]));

/// The mailbox at a mapped base.
pub struct Mailbox {
    regs: Mmio<MailboxRegs>,
}

impl Mailbox {
    /// Wraps the registers.
    pub const fn new(regs: Mmio<MailboxRegs>) -> Self {
        Self { regs }
    }

    /// One property request carrying one tag with `words` of value buffer; returns the value.
    fn call<const N: usize>(&self, tag: u32, request: [u32; N]) -> Result<[u32; N], MailboxError> {
        let mut buf = BUFFER.lock();
        let b = &mut buf.0;
        let size = (6 + N) * 4;
        b[0] = size as u32;
        b[1] = REQUEST;
        b[2] = tag;
        b[3] = (N * 4) as u32;
        b[4] = 0;
        b[5..5 + N].copy_from_slice(&request);
        b[5 + N] = 0; // end tag
        let va = VirtAddr::new(b.as_ptr() as u32);
        let pa: PhysAddr = layout::virt_to_phys(va).expect("mailbox buffer is in the kernel image");
        cache::clean_to_poc(va, 64);

        let mut polls = 0u32;
        while self.regs.status1.get() & FULL != 0 {
            polls += 1;
            if polls > 10_000_000 {
                return Err(MailboxError::Timeout);
            }
        }
        self.regs
            .write
            .set((pa.as_u32() | BUS_RAM_ALIAS) | CHANNEL_PROPERTY);
        loop {
            while self.regs.status0.get() & EMPTY != 0 {
                polls += 1;
                if polls > 10_000_000 {
                    return Err(MailboxError::Timeout);
                }
            }
            if self.regs.read.get() & 0xf == CHANNEL_PROPERTY {
                break;
            }
        }
        barrier::dmb();
        cache::invalidate_to_poc(va, 64);
        // The compiler must not reuse values it read before the invalidation.
        let b: &[u32; 16] = &buf.0;
        let code = volatile_read(&b[1]);
        if code != RESPONSE_OK {
            return Err(MailboxError::Failed(code));
        }
        let status = volatile_read(&b[4]);
        if status & 0x8000_0000 == 0 || (status & 0x7fff_ffff) < (N * 4) as u32 {
            return Err(MailboxError::BadTag(status));
        }
        let mut out = [0; N];
        for (i, o) in out.iter_mut().enumerate() {
            *o = volatile_read(&b[5 + i]);
        }
        Ok(out)
    }

    /// Base and size of the ARM's part of RAM (the rest belongs to the GPU).
    pub fn arm_memory(&self) -> Result<(PhysAddr, u32), MailboxError> {
        let [base, size] = self.call(TAG_GET_ARM_MEMORY, [0, 0])?;
        Ok((PhysAddr::new(base), size))
    }

    /// Rate of one of the firmware's clocks, in Hz.
    pub fn clock_rate(&self, clock: u32) -> Result<u32, MailboxError> {
        let [_, rate] = self.call(TAG_GET_CLOCK_RATE, [clock, 0])?;
        Ok(rate)
    }

    /// Moves the driver to another mapping of the same registers.
    pub fn rebase(&mut self, regs: Mmio<MailboxRegs>) {
        self.regs = regs;
    }
}

/// A volatile read: the VideoCore changed this memory behind the compiler's back.
fn volatile_read(w: &u32) -> u32 {
    // SAFETY: `w` is a valid, aligned reference.
    unsafe { core::ptr::read_volatile(w) }
}
