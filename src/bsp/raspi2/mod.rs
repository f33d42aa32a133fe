//! Raspberry Pi 2 (BCM2836): peripheral addresses and drivers.
//!
//! Drivers hold the *virtual* base of their registers: the boot-time device mapping at first,
//! then the MMIO window once `vm2_start` has made it ([`crate::vm`]).

pub mod emmc;
pub mod gpio;
pub mod intc;
pub mod local_ic;
pub mod mailbox;
pub mod mmio;
pub mod uart;

use crate::mm::PhysAddr;

/// GPIO block.
pub const GPIO_PHYS: PhysAddr = PhysAddr::new(0x3F20_0000);
/// PL011 UART0.
pub const UART0_PHYS: PhysAddr = PhysAddr::new(0x3F20_1000);
/// EMMC controller (Arasan SDHCI), the SD card slot of the Pi 2.
pub const EMMC_PHYS: PhysAddr = PhysAddr::new(0x3F30_0000);
/// BCM2835 ARM interrupt controller (GPU and ARM-side peripheral interrupts); the same 4 KiB page
/// as the mailbox.
pub const INTC_PHYS: PhysAddr = PhysAddr::new(0x3F00_B200);
/// VideoCore mailbox 0/1.
pub const MAILBOX_PHYS: PhysAddr = PhysAddr::new(0x3F00_B880);
/// System timer.
pub const SYSTEM_TIMER_PHYS: PhysAddr = PhysAddr::new(0x3F00_3000);
/// ARM-local peripherals (BCM2836 "QA7"): core timers, mailboxes, interrupt routing
/// ([`local_ic`]).
pub const LOCAL_PHYS: PhysAddr = PhysAddr::new(0x4000_0000);

/// The VideoCore sees ARM RAM at this bus alias (L2-uncached on BCM2836).
pub const BUS_RAM_ALIAS: u32 = 0xC000_0000;
