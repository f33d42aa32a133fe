//! The BCM2835 EMMC controller (an Arasan SDHCI; BCM2835 ARM Peripherals ch. 5, SD Host
//! Controller Simplified Specification 3.00), the Pi 2's SD card slot: card identification
//! (SDSC, SDHC/SDXC), 4-bit bus at 25 MHz, 512-byte block reads and writes, single and multiple
//! (auto-CMD12).
//!
//! Data moves by PIO through the DATA register. Each wait (a command's response, a block's
//! data, the end of a transfer) has a deadline on the generic timer. How the driver waits
//! depends on who called it: when the [`Waiter`] the process layer installs ([`set_waiter`])
//! says the caller may sleep (the kernel task, holding no lock a process could need), the
//! driver signals the interrupt it waits for (IRPT_EN; GPU IRQ 62 at the interrupt controller)
//! and sleeps, and processes run until the card interrupts ([`on_interrupt`] withdraws the
//! signal, the process layer wakes the kernel task); anywhere else (at boot, before the
//! scheduler) it polls the status. The SD protocol's arithmetic is in [`crate::block::sd`],
//! host-tested.
//!
//! The controller is only accessed with 32-bit reads and writes (the BCM2835 requires it).

use super::mmio::Mmio;
use crate::arch::arm::timer;
use crate::block::sd::{self, cmd};
use crate::block::{check_range, Block, BlockCount, BlockDevice, BlockError, BlockIdx};
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_bitfields! {
    u32,
    CMDTM [
        /// Command index.
        CMD_INDEX OFFSET(24) NUMBITS(6) [],
        /// The command transfers data.
        CMD_ISDATA OFFSET(21) NUMBITS(1) [],
        /// Check the response's index field.
        CMD_IXCHK_EN OFFSET(20) NUMBITS(1) [],
        /// Check the response's CRC.
        CMD_CRCCHK_EN OFFSET(19) NUMBITS(1) [],
        CMD_RSPNS_TYPE OFFSET(16) NUMBITS(2) [None = 0, R136 = 1, R48 = 2, R48Busy = 3],
        TM_MULTI_BLOCK OFFSET(5) NUMBITS(1) [],
        /// 1: card to host.
        TM_DAT_DIR OFFSET(4) NUMBITS(1) [Write = 0, Read = 1],
        TM_AUTO_CMD_EN OFFSET(2) NUMBITS(2) [None = 0, Cmd12 = 1],
        TM_BLKCNT_EN OFFSET(1) NUMBITS(1) []
    ],
    STATUS [
        /// A card is in the slot (SDHCI present state; QEMU models it).
        CARD_INSERTED OFFSET(16) NUMBITS(1) [],
        DAT_INHIBIT OFFSET(1) NUMBITS(1) [],
        CMD_INHIBIT OFFSET(0) NUMBITS(1) []
    ],
    CONTROL0 [
        /// SD bus power (bit 8) at 3.3 V (bits 11:9 = 0b111), as SDHCI's power control.
        POWER OFFSET(8) NUMBITS(4) [Off = 0, On3V3 = 0xF],
        /// 4-bit data bus.
        HCTL_DWIDTH OFFSET(1) NUMBITS(1) []
    ],
    CONTROL1 [
        SRST_DATA OFFSET(26) NUMBITS(1) [],
        SRST_CMD OFFSET(25) NUMBITS(1) [],
        SRST_HC OFFSET(24) NUMBITS(1) [],
        /// Data timeout: TMCLK * 2^(13 + n).
        DATA_TOUNIT OFFSET(16) NUMBITS(4) [],
        /// Divider bits 7:0 (15:8) and 9:8 (7:6), see `sd::divider_field`.
        CLK_DIV OFFSET(6) NUMBITS(10) [],
        CLK_EN OFFSET(2) NUMBITS(1) [],
        CLK_STABLE OFFSET(1) NUMBITS(1) [],
        CLK_INTLEN OFFSET(0) NUMBITS(1) []
    ]
}

register_structs! {
    pub EmmcRegs {
        (0x00 => arg2: ReadWrite<u32>),
        (0x04 => blksizecnt: ReadWrite<u32>),
        (0x08 => arg1: ReadWrite<u32>),
        (0x0c => cmdtm: ReadWrite<u32, CMDTM::Register>),
        (0x10 => resp: [ReadOnly<u32>; 4]),
        (0x20 => data: ReadWrite<u32>),
        (0x24 => status: ReadOnly<u32, STATUS::Register>),
        (0x28 => control0: ReadWrite<u32, CONTROL0::Register>),
        (0x2c => control1: ReadWrite<u32, CONTROL1::Register>),
        (0x30 => interrupt: ReadWrite<u32>),
        (0x34 => irpt_mask: ReadWrite<u32>),
        (0x38 => irpt_en: ReadWrite<u32>),
        (0x3c => control2: ReadWrite<u32>),
        (0x40 => _reserved),
        (0xfc => slotisr_ver: ReadOnly<u32>),
        (0x100 => @END),
    }
}

/// Bytes of registers to map.
pub const EMMC_REGS_SIZE: u32 = 0x100;

// INTERRUPT bits (the same in IRPT_MASK and IRPT_EN).
const INT_CMD_DONE: u32 = 1 << 0;
const INT_DATA_DONE: u32 = 1 << 1;
const INT_WRITE_RDY: u32 = 1 << 4;
const INT_READ_RDY: u32 = 1 << 5;
const INT_ERR: u32 = 1 << 15;
const INT_CTO_ERR: u32 = 1 << 16;
/// Every error bit (16..=24) and the summary bit.
const INT_ERRORS: u32 = 0x01FF_8000;

/// Identification clock.
const ID_CLOCK_HZ: u32 = 400_000;
/// Data transfer clock (default speed).
const DATA_CLOCK_HZ: u32 = 25_000_000;
/// EMMC base clock if the firmware does not say.
const DEFAULT_BASE_CLOCK: u32 = 50_000_000;
/// ACMD41 tries before the card counts as not powering up (the spec allows 1 s).
const OP_COND_TRIES: u32 = 200;

/// Sleeps the caller until an interrupt (or `deadline`, in generic-timer ticks) may have changed
/// the controller's status; returns `false`, without waiting, when the caller may not sleep
/// (the driver then polls).
pub type Waiter = fn(deadline: Option<u64>) -> bool;

/// The installed [`Waiter`] (a `Waiter` cast to a pointer; null: always poll).
static WAITER: core::sync::atomic::AtomicPtr<()> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// The controller's registers for [`on_interrupt`], which must not take the driver's lock
/// (0 until [`Emmc::init`] mapped them).
static REGS_VA: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Interrupts the controller raised since boot.
static INTERRUPTS: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Installs the process layer's way of sleeping while the card works.
pub fn set_waiter(w: Waiter) {
    WAITER.store(w as *mut (), core::sync::atomic::Ordering::Release);
}

fn waiter() -> Option<Waiter> {
    let p = WAITER.load(core::sync::atomic::Ordering::Acquire);
    // SAFETY: the only non-null value stored is a `Waiter` cast by `set_waiter`; a fn pointer
    // survives the round trip through a data pointer on this target (both 32 bits).
    (!p.is_null()).then(|| unsafe { core::mem::transmute::<*mut (), Waiter>(p) })
}

/// The controller's interrupt (GPU IRQ 62): withdraws the signal (IRPT_EN = 0; the status bits
/// stay latched in INTERRUPT for the waiting driver to read). Called by the IRQ handler.
pub fn on_interrupt() {
    INTERRUPTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    let va = REGS_VA.load(core::sync::atomic::Ordering::Acquire);
    if va != 0 {
        // SAFETY: REGS_VA is the controller's register page, mapped Device for the kernel's
        // lifetime by `Emmc::init`; IRPT_EN is a plain 32-bit register, and writing it while the
        // driver runs elsewhere only stops the signal it will set again before it next sleeps.
        let regs: Mmio<EmmcRegs> = unsafe { Mmio::new(crate::mm::VirtAddr::new(va as u32)) };
        regs.irpt_en.set(0);
    }
}

/// Interrupts the controller raised since boot.
pub fn interrupts() -> u32 {
    INTERRUPTS.load(core::sync::atomic::Ordering::Relaxed)
}

/// How long a wait may take: a deadline on the generic timer, and a bound on the number of
/// polls in case the timer does not run.
struct Deadline {
    end: Option<u64>,
    polls_left: u32,
}

impl Deadline {
    fn after_ms(ms: u32) -> Self {
        let end = timer::frequency()
            .ok()
            .map(|hz| timer::now() + u64::from(hz) / 1000 * u64::from(ms));
        Self {
            end,
            polls_left: ms.saturating_mul(20_000),
        }
    }

    fn expired(&mut self) -> bool {
        self.polls_left = self.polls_left.saturating_sub(1);
        self.polls_left == 0 || self.end.is_some_and(|end| timer::now() >= end)
    }
}

/// How the response of a command looks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resp {
    None,
    /// R2: 136 bits, CRC checked.
    R136,
    /// R1, R6, R7: 48 bits, CRC and index checked.
    R48,
    /// R3 (OCR): 48 bits, no CRC or index.
    R48NoCrc,
    /// R1b: 48 bits, then busy on DAT0.
    R48Busy,
}

/// What the card told during identification.
#[derive(Debug, Clone, Copy)]
pub struct CardInfo {
    /// Capacity in 512-byte blocks.
    pub blocks: u32,
    /// SDHC/SDXC (block addresses) rather than SDSC (byte addresses).
    pub high_capacity: bool,
    /// It answered CMD8 (physical layer 2.00 or later).
    pub v2: bool,
    pub rca: u16,
    /// Manufacturer id and product name from the CID.
    pub manufacturer: u8,
    pub product: [u8; 5],
    pub bus_width: u8,
    pub base_clock: u32,
    pub data_clock: u32,
    /// The controller's SDHCI specification version (0 = 1.0, 2 = 3.0).
    pub host_version: u8,
}

/// The controller and, once identified, the card.
struct EmmcInner {
    regs: Mmio<EmmcRegs>,
    card: Option<CardInfo>,
}

/// The EMMC controller, behind a lock. Only tasks use it (no interrupt handler), so the lock
/// leaves IRQs enabled.
pub struct Emmc {
    inner: spin::Mutex<Option<EmmcInner>>,
}

/// The card slot.
pub static EMMC: Emmc = Emmc {
    inner: spin::Mutex::new(None),
};

impl Emmc {
    /// Maps the controller (first call only), routes the pins, resets the controller and
    /// identifies the card. Needs the VM (MMIO window) and the firmware mailbox.
    pub fn init(&self) -> Result<CardInfo, BlockError> {
        let mut guard = self.inner.lock();
        if guard.is_none() {
            let va = crate::vm::map_mmio("emmc", super::EMMC_PHYS, EMMC_REGS_SIZE)
                .map_err(|_| BlockError::Unsupported("the EMMC registers could not be mapped"))?;
            // SAFETY: `map_mmio` mapped the EMMC register page Device, XN, for the kernel's
            // lifetime (the mapping is never removed), and `EmmcRegs` is its layout.
            let regs = unsafe { Mmio::new(va) };
            *guard = Some(EmmcInner { regs, card: None });
            REGS_VA.store(va.as_usize(), core::sync::atomic::Ordering::Release);
        }
        let inner = guard.as_mut().expect("set above");
        inner.card = None;
        let devices = crate::vm::devices().ok_or(BlockError::NotReady)?;
        // SAFETY: `devices.gpio` is the GPIO block's mapping in the MMIO window, made by
        // vm2_start and kept for the kernel's lifetime.
        super::gpio::route_emmc(&unsafe { Mmio::new(devices.gpio) });
        let base_clock = match crate::init::MAILBOX.lock().as_ref() {
            Some(m) => match m.clock_rate(super::mailbox::CLOCK_EMMC) {
                Ok(hz) if hz != 0 => hz,
                _ => DEFAULT_BASE_CLOCK,
            },
            None => DEFAULT_BASE_CLOCK,
        };
        let info = inner.identify(base_clock)?;
        inner.card = Some(info);
        Ok(info)
    }

    /// The card found by the last successful [`Emmc::init`].
    pub fn card(&self) -> Option<CardInfo> {
        self.inner.lock().as_ref().and_then(|i| i.card)
    }

    fn with_card<R>(
        &self,
        f: impl FnOnce(&mut EmmcInner, CardInfo) -> Result<R, BlockError>,
    ) -> Result<R, BlockError> {
        let mut guard = self.inner.lock();
        let inner = guard.as_mut().ok_or(BlockError::NotReady)?;
        let card = inner.card.ok_or(BlockError::NotReady)?;
        f(inner, card)
    }
}

/// Test builds: the read command this many reads from now fails as a data CRC error would
/// (0: none pending). See [`inject_read_error`].
#[cfg(feature = "ktest")]
static FAIL_READ_IN: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Test builds: makes the `n`-th read from now (1: the next) fail with the error a data CRC
/// error gives, so the tests can see what a read error in the middle of a page-in does; 0
/// cancels a pending one.
#[cfg(feature = "ktest")]
pub fn inject_read_error(n: u32) {
    FAIL_READ_IN.store(n, core::sync::atomic::Ordering::Relaxed);
}

/// Test builds: every driver wait that may sleep sleeps once before it first looks at the
/// status (see [`sleep_first`]).
#[cfg(feature = "ktest")]
static SLEEP_FIRST: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Test builds: makes every wait that may sleep sleep on the controller's interrupt at least
/// once, even when the card has already answered (QEMU's card answers before the driver
/// looks), so the tests run the interrupt path.
#[cfg(feature = "ktest")]
pub fn sleep_first(on: bool) {
    SLEEP_FIRST.store(on, core::sync::atomic::Ordering::Relaxed);
}

/// Test builds: whether this read is the one [`inject_read_error`] asked to fail.
#[cfg(feature = "ktest")]
fn injected_failure() -> bool {
    use core::sync::atomic::Ordering::Relaxed;
    match FAIL_READ_IN.load(Relaxed) {
        0 => false,
        n => {
            FAIL_READ_IN.store(n - 1, Relaxed);
            n == 1
        }
    }
}

impl BlockDevice for Emmc {
    fn read_blocks(&self, start: BlockIdx, blocks: &mut [Block]) -> Result<(), BlockError> {
        self.with_card(|inner, card| {
            check_range(start, blocks.len(), BlockCount(card.blocks))?;
            #[cfg(feature = "ktest")]
            if injected_failure() {
                // DATA_CRC_ERR in INTERRUPT, as a CMD17 with a corrupted block reports it.
                return Err(BlockError::Command {
                    cmd: cmd::READ_SINGLE_BLOCK,
                    status: 1 << 21,
                });
            }
            // At most 65535 blocks per command (BLKSIZECNT's count field).
            for (i, chunk) in blocks.chunks_mut(0xFFFF).enumerate() {
                inner.read(card, start.0 + (i * 0xFFFF) as u32, chunk)?;
            }
            Ok(())
        })
    }

    fn write_blocks(&self, start: BlockIdx, blocks: &[Block]) -> Result<(), BlockError> {
        self.with_card(|inner, card| {
            check_range(start, blocks.len(), BlockCount(card.blocks))?;
            for (i, chunk) in blocks.chunks(0xFFFF).enumerate() {
                inner.write(card, start.0 + (i * 0xFFFF) as u32, chunk)?;
            }
            Ok(())
        })
    }

    fn num_blocks(&self) -> BlockCount {
        BlockCount(self.card().map_or(0, |c| c.blocks))
    }
}

impl EmmcInner {
    /// Reset, clocks, power, then the identification sequence of the SD physical layer
    /// specification (4.2): CMD0, CMD8, ACMD41 until ready, CMD2, CMD3, CMD9, CMD7, then the
    /// block length (SDSC), the 4-bit bus and the data clock.
    fn identify(&mut self, base_clock: u32) -> Result<CardInfo, BlockError> {
        let r = &self.regs;
        let host_version = ((r.slotisr_ver.get() >> 16) & 0xFF) as u8;
        let v3 = host_version >= 2;
        r.control0.set(0);
        r.control1.write(CONTROL1::SRST_HC::SET);
        self.wait_control1_clear(CONTROL1::SRST_HC::SET.value, "controller reset")?;
        let r = &self.regs;
        r.control2.set(0);
        r.control0.write(CONTROL0::POWER::On3V3);
        self.set_clock(base_clock, ID_CLOCK_HZ, v3)?;
        let r = &self.regs;
        // Status bits latched, none signalled until a wait asks for its interrupt.
        r.irpt_en.set(0);
        r.irpt_mask.set(0xFFFF_FFFF);
        r.interrupt.set(0xFFFF_FFFF);
        let inserted = r.status.is_set(STATUS::CARD_INSERTED);

        self.command(cmd::GO_IDLE_STATE, 0, Resp::None)?;
        let v2 = match self.command(cmd::SEND_IF_COND, sd::IF_COND_ARG, Resp::R48) {
            Ok(resp) if resp[0] & 0xFFF == sd::IF_COND_ARG => true,
            Ok(_) => return Err(BlockError::Unsupported("CMD8 check pattern not echoed")),
            // A version 1 card (or no card) does not answer CMD8.
            Err(BlockError::Timeout { .. }) => false,
            Err(e) => return Err(e),
        };
        let mut ocr = 0;
        for attempt in 0..OP_COND_TRIES {
            match self.app_command(0, cmd::SD_SEND_OP_COND, sd::op_cond_arg(v2), Resp::R48NoCrc) {
                Ok(resp) => ocr = resp[0],
                Err(BlockError::Timeout { .. }) if attempt == 0 && (!v2 || !inserted) => {
                    return Err(BlockError::NoCard)
                }
                Err(e) => return Err(e),
            }
            if ocr & sd::OCR_READY != 0 {
                break;
            }
            delay_ms(5);
        }
        if ocr & sd::OCR_READY == 0 {
            return Err(BlockError::Timeout {
                what: "the card did not finish powering up (ACMD41)",
                cmd: cmd::SD_SEND_OP_COND,
            });
        }
        let high_capacity = ocr & sd::OCR_HCS != 0;
        let cid = self.command(cmd::ALL_SEND_CID, 0, Resp::R136)?;
        let rca = (self.command(cmd::SEND_RELATIVE_ADDR, 0, Resp::R48)?[0] >> 16) as u16;
        let rca_arg = u32::from(rca) << 16;
        let csd = self.command(cmd::SEND_CSD, rca_arg, Resp::R136)?;
        let blocks = sd::csd_capacity_blocks(&csd).map_err(BlockError::Unsupported)?;
        let blocks =
            u32::try_from(blocks).map_err(|_| BlockError::Unsupported("more than 2 TiB"))?;
        self.command(cmd::SELECT_CARD, rca_arg, Resp::R48Busy)?;
        if !high_capacity {
            self.command(cmd::SET_BLOCKLEN, 512, Resp::R48)?;
        }
        // Every SD card supports the 4-bit bus (SD physical layer 3.6.1.1).
        self.app_command(rca_arg, cmd::SET_BUS_WIDTH, 2, Resp::R48)?;
        self.regs.control0.modify(CONTROL0::HCTL_DWIDTH::SET);
        let data_clock = self.set_clock(base_clock, DATA_CLOCK_HZ, v3)?;
        self.regs.blksizecnt.set(512);

        // CID (bits shifted down by 8 as for the CSD): MID at CID 127:120, PNM at 103:64.
        let cid128 = u128::from(cid[0])
            | u128::from(cid[1]) << 32
            | u128::from(cid[2]) << 64
            | u128::from(cid[3]) << 96;
        let mut product = [0u8; 5];
        for (i, p) in product.iter_mut().enumerate() {
            *p = (cid128 >> (56 + 8 * (4 - i))) as u8;
        }
        Ok(CardInfo {
            blocks,
            high_capacity,
            v2,
            rca,
            manufacturer: (cid128 >> 112) as u8,
            product,
            bus_width: 4,
            base_clock,
            data_clock,
            host_version,
        })
    }

    /// Waits until CONTROL1 has none of `bits` set.
    fn wait_control1_clear(&self, bits: u32, what: &'static str) -> Result<(), BlockError> {
        let mut d = Deadline::after_ms(100);
        while self.regs.control1.get() & bits != 0 {
            if d.expired() {
                return Err(BlockError::Timeout { what, cmd: 0 });
            }
        }
        Ok(())
    }

    /// Stops the SD clock, sets the divider for `hz`, waits for the internal clock to be stable,
    /// starts the SD clock. Returns the rate set.
    fn set_clock(&mut self, base: u32, hz: u32, v3: bool) -> Result<u32, BlockError> {
        let (n, actual) = sd::clock_divider(base, hz, v3);
        let r = &self.regs;
        r.control1.modify(CONTROL1::CLK_EN::CLEAR);
        r.control1.modify(
            CONTROL1::CLK_DIV.val(0) + CONTROL1::DATA_TOUNIT.val(0xE) + CONTROL1::CLK_INTLEN::SET,
        );
        let v = r.control1.get() & !(0x3FF << 6);
        r.control1.set(v | sd::divider_field(n));
        let mut d = Deadline::after_ms(100);
        while !self.regs.control1.is_set(CONTROL1::CLK_STABLE) {
            if d.expired() {
                return Err(BlockError::Timeout {
                    what: "the controller's clock did not become stable",
                    cmd: 0,
                });
            }
        }
        self.regs.control1.modify(CONTROL1::CLK_EN::SET);
        delay_ms(1);
        Ok(actual)
    }

    /// CMD55 then the application command `index`.
    fn app_command(
        &mut self,
        rca_arg: u32,
        index: u8,
        arg: u32,
        resp: Resp,
    ) -> Result<[u32; 4], BlockError> {
        self.command(cmd::APP_CMD, rca_arg, Resp::R48)?;
        self.command(index, arg, resp)
    }

    /// A command without data.
    fn command(&mut self, index: u8, arg: u32, resp: Resp) -> Result<[u32; 4], BlockError> {
        let tm = cmd_bits(index, resp);
        self.issue(index, arg, tm)?;
        let out = self.response();
        if resp == Resp::R48Busy {
            self.wait_interrupt(INT_DATA_DONE, index, "busy after the command", 500)?;
        }
        Ok(out)
    }

    fn response(&self) -> [u32; 4] {
        [
            self.regs.resp[0].get(),
            self.regs.resp[1].get(),
            self.regs.resp[2].get(),
            self.regs.resp[3].get(),
        ]
    }

    /// Writes the argument and command, waits for command complete.
    fn issue(&mut self, index: u8, arg: u32, tm: u32) -> Result<(), BlockError> {
        let data = tm & CMDTM::CMD_ISDATA::SET.value != 0;
        let busy = (tm >> 16) & 3 == 3;
        let mut d = Deadline::after_ms(100);
        loop {
            let s = self.regs.status.get();
            let inhibit = s & 1 != 0 || ((data || busy) && s & 2 != 0);
            if !inhibit {
                break;
            }
            if d.expired() {
                self.reset_lines();
                return Err(BlockError::Timeout {
                    what: "the command line stayed busy",
                    cmd: index,
                });
            }
        }
        self.regs.interrupt.set(0xFFFF_FFFF);
        self.regs.arg1.set(arg);
        self.regs.cmdtm.set(tm);
        self.wait_interrupt(INT_CMD_DONE, index, "no response to the command", 100)
    }

    /// Waits for `bit` in INTERRUPT (and clears it) or an error (cleared, lines reset).
    fn wait_interrupt(
        &mut self,
        bit: u32,
        index: u8,
        what: &'static str,
        ms: u32,
    ) -> Result<(), BlockError> {
        let mut d = Deadline::after_ms(ms);
        let mut sleep = waiter();
        // Test builds may make each wait sleep once before its first look at the status, so
        // that the interrupt path runs even where the card answers at once (QEMU).
        #[cfg(feature = "ktest")]
        let mut look =
            !(sleep.is_some() && SLEEP_FIRST.load(core::sync::atomic::Ordering::Relaxed));
        #[cfg(not(feature = "ktest"))]
        let mut look = true;
        loop {
            let s = if look { self.regs.interrupt.get() } else { 0 };
            look = true;
            if s & (INT_ERR | INT_ERRORS) != 0 {
                self.regs.interrupt.set(s);
                self.reset_lines();
                return Err(
                    if s & (INT_CTO_ERR | 1 << 20) != 0 && s & 0x00EE_0000 == 0 {
                        BlockError::Timeout { what, cmd: index }
                    } else {
                        BlockError::Command {
                            cmd: index,
                            status: s,
                        }
                    },
                );
            }
            if s & bit != 0 {
                self.regs.interrupt.set(bit);
                return Ok(());
            }
            if d.expired() {
                self.regs.irpt_en.set(0);
                self.reset_lines();
                return Err(BlockError::Timeout { what, cmd: index });
            }
            if let Some(w) = sleep {
                // Signal what we wait for; a status bit that is already set raises the
                // interrupt at once, so no completion is lost between the read above and the
                // sleep.
                self.regs.irpt_en.set(bit | INT_ERR | INT_ERRORS);
                let slept = w(d.end);
                self.regs.irpt_en.set(0);
                if slept {
                    // The poll bound counts polls, not sleeps.
                    d.polls_left = d.polls_left.saturating_add(1);
                } else {
                    // The caller may not sleep: poll for the rest of this wait.
                    sleep = None;
                }
            }
        }
    }

    /// Resets the command and data lines after an error (SDHCI 3.10).
    fn reset_lines(&mut self) {
        self.regs
            .control1
            .modify(CONTROL1::SRST_CMD::SET + CONTROL1::SRST_DATA::SET);
        let _ = self.wait_control1_clear(
            (CONTROL1::SRST_CMD::SET + CONTROL1::SRST_DATA::SET).value,
            "line reset",
        );
        self.regs.interrupt.set(0xFFFF_FFFF);
    }

    /// The data command for `count` blocks at `block`.
    fn data_command(
        &mut self,
        card: CardInfo,
        block: u32,
        count: usize,
        write: bool,
    ) -> Result<u8, BlockError> {
        let addr = sd::data_address(block, card.high_capacity).ok_or(BlockError::OutOfRange {
            start: block,
            count: count as u32,
            capacity: card.blocks,
        })?;
        let multi = count > 1;
        let index = match (write, multi) {
            (false, false) => cmd::READ_SINGLE_BLOCK,
            (false, true) => cmd::READ_MULTIPLE_BLOCK,
            (true, false) => cmd::WRITE_BLOCK,
            (true, true) => cmd::WRITE_MULTIPLE_BLOCK,
        };
        let mut tm = cmd_bits(index, Resp::R48) | CMDTM::CMD_ISDATA::SET.value;
        if !write {
            tm |= CMDTM::TM_DAT_DIR::Read.value;
        }
        if multi {
            tm |= (CMDTM::TM_MULTI_BLOCK::SET
                + CMDTM::TM_BLKCNT_EN::SET
                + CMDTM::TM_AUTO_CMD_EN::Cmd12)
                .value;
        }
        self.regs.blksizecnt.set(((count as u32) << 16) | 512);
        self.issue(index, addr, tm)?;
        Ok(index)
    }

    /// Reads `blocks.len()` (at most 65535) blocks by PIO.
    fn read(&mut self, card: CardInfo, block: u32, blocks: &mut [Block]) -> Result<(), BlockError> {
        let index = self.data_command(card, block, blocks.len(), false)?;
        for b in blocks.iter_mut() {
            self.wait_interrupt(INT_READ_RDY, index, "no data from the card", 500)?;
            for w in b.contents.chunks_exact_mut(4) {
                w.copy_from_slice(&self.regs.data.get().to_le_bytes());
            }
        }
        self.wait_interrupt(INT_DATA_DONE, index, "the read did not complete", 500)
    }

    /// Writes `blocks.len()` (at most 65535) blocks by PIO; returns when the card is no longer
    /// busy programming them.
    fn write(&mut self, card: CardInfo, block: u32, blocks: &[Block]) -> Result<(), BlockError> {
        let index = self.data_command(card, block, blocks.len(), true)?;
        for b in blocks {
            self.wait_interrupt(INT_WRITE_RDY, index, "the card took no data", 500)?;
            for w in b.contents.chunks_exact(4) {
                self.regs
                    .data
                    .set(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
            }
        }
        self.wait_interrupt(INT_DATA_DONE, index, "the write did not complete", 1000)
    }
}

/// CMDTM for command `index` with response kind `resp` (no data bits).
fn cmd_bits(index: u8, resp: Resp) -> u32 {
    let v = CMDTM::CMD_INDEX.val(u32::from(index))
        + match resp {
            Resp::None => CMDTM::CMD_RSPNS_TYPE::None,
            Resp::R136 => CMDTM::CMD_RSPNS_TYPE::R136 + CMDTM::CMD_CRCCHK_EN::SET,
            Resp::R48 => {
                CMDTM::CMD_RSPNS_TYPE::R48 + CMDTM::CMD_CRCCHK_EN::SET + CMDTM::CMD_IXCHK_EN::SET
            }
            Resp::R48NoCrc => CMDTM::CMD_RSPNS_TYPE::R48,
            Resp::R48Busy => {
                CMDTM::CMD_RSPNS_TYPE::R48Busy
                    + CMDTM::CMD_CRCCHK_EN::SET
                    + CMDTM::CMD_IXCHK_EN::SET
            }
        };
    v.value
}

/// Waits about `ms` milliseconds (the generic timer, or a bounded loop if it does not run).
fn delay_ms(ms: u32) {
    let mut d = Deadline::after_ms(ms);
    while !d.expired() {
        core::hint::spin_loop();
    }
}
