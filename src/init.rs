//! From the boot stub to a running kernel: early console, boot log, then the VM.

use crate::arch::arm::boot::{image_layout, mode, BootArgs};
use crate::arch::arm::{self, irq::IrqSafeMutex};
use crate::bsp::raspi2::mailbox::{Mailbox, MailboxRegs, CLOCK_UART};
use crate::bsp::raspi2::mmio::Mmio;
use crate::bsp::raspi2::{gpio, GPIO_PHYS, MAILBOX_PHYS, UART0_PHYS};
use crate::mm::{PhysAddr, VirtAddr};
use core::panic::PanicInfo;

/// The firmware mailbox, once reachable.
pub static MAILBOX: IrqSafeMutex<Option<Mailbox>> = IrqSafeMutex::new(None);

/// UART clock when the firmware cannot tell (config.txt sets `init_uart_clock=48000000`).
const DEFAULT_UART_CLOCK: u32 = 48_000_000;

/// Facts learnt during boot.
#[derive(Debug, Clone, Copy)]
pub struct BootInfo {
    pub args: BootArgs,
    /// ARM RAM as the firmware reports it: base and size.
    pub arm_memory: (PhysAddr, u32),
    pub uart_clock: u32,
}

/// Identity-mapped virtual address of a peripheral during boot (the stub's device sections).
fn boot_va(pa: PhysAddr) -> VirtAddr {
    VirtAddr::new(pa.as_u32())
}

/// Called by `kernel_entry` on core 0: brings up the console through the boot-time device
/// mapping, prints the boot log, then hands over to the kernel proper.
pub fn kernel_init(args: BootArgs) -> ! {
    // SAFETY: the boot stub maps the peripheral sections holding the mailbox and GPIO at their
    // physical addresses, Device and XN, until vm2_start moves the drivers to the MMIO window.
    let mbox = Mailbox::new(unsafe { Mmio::<MailboxRegs>::new(boot_va(MAILBOX_PHYS)) });
    let uart_clock = match mbox.clock_rate(CLOCK_UART) {
        Ok(hz) if hz != 0 => hz,
        _ => DEFAULT_UART_CLOCK,
    };
    // SAFETY: as above, for the GPIO block.
    gpio::route_uart0(&unsafe { Mmio::new(boot_va(GPIO_PHYS)) });
    // SAFETY: as above, for UART0.
    unsafe { crate::console::init(boot_va(UART0_PHYS), uart_clock) };

    // The stub installed the vectors (VBAR): from here an asynchronous abort is reported where
    // it happens.
    crate::arch::arm::irq::unmask_async_aborts();
    println!();
    println!("pi2-vm {} booting", env!("CARGO_PKG_VERSION"));
    let entry_mode = args.entry_cpsr & 0x1f;
    let how = match entry_mode {
        mode::HYP => "non-secure HYP, left for SVC with ERET",
        mode::SVC => "kept; QEMU enters in Secure SVC",
        _ => "switched to SVC",
    };
    println!("  entry mode   : {} ({how})", mode::name(entry_mode));
    println!(
        "  now          : {} on core {} (MPIDR {:#010x})",
        mode::name(arm::cpsr()),
        arm::core_id(),
        aarch32_cpu::register::Mpidr::read().0
    );
    // VFP/NEON for user programs: access granted, the unit off until a process uses it.
    if arm::fpu::init() {
        println!(
            "  FP unit      : FPSID {:#010x}, cp10/cp11 open, switched lazily per process",
            arm::fpu::fpsid()
        );
    } else {
        println!("  FP unit      : not granted by the firmware (NSACR): user programs get none");
    }
    println!(
        "  firmware     : r0={:#x} machine={:#x} atags/dtb={:#x}",
        args.r0, args.machine, args.atags
    );
    let arm_memory = match mbox.arm_memory() {
        Ok(m) => m,
        Err(e) => panic!("the firmware did not report the ARM memory size: {e:?}"),
    };
    println!(
        "  ARM memory   : {:#010x}..{:#010x} ({} MiB, mailbox tag 0x00010005)",
        arm_memory.0,
        arm_memory.0.as_u32() as u64 + arm_memory.1 as u64,
        arm_memory.1 >> 20
    );
    println!(
        "  UART clock   : {uart_clock} Hz, {} baud",
        crate::console::BAUD
    );
    let img = image_layout();
    println!("  kernel image :");
    for (name, (s, e), perm) in [
        (".text", img.text, "RX"),
        (".rodata", img.rodata, "R"),
        (".data", img.data, "RW"),
        (".bss", img.bss, "RW"),
        ("guard", img.stack_guard, "--"),
        ("stacks", img.stacks, "RW"),
        ("core1-3", img.core_stacks, "RW"),
    ] {
        println!(
            "    {name:<8} {s:#010x}..{e:#010x} {:>6} KiB  {perm:<2}  (phys {:#010x})",
            (e - s) / 1024,
            s - crate::mm::layout::KERNEL_OFFSET
        );
    }
    *MAILBOX.lock() = Some(mbox);

    let info = BootInfo {
        args,
        arm_memory,
        uart_clock,
    };

    #[cfg(feature = "ktest")]
    crate::ktest::run(&info);

    #[cfg(feature = "kbench")]
    crate::kbench::run(&info);

    #[cfg(not(any(feature = "ktest", feature = "kbench")))]
    {
        crate::vm::vm2_start();
        crate::irq::init();
        print_interrupts();
        crate::smp::print(&crate::smp::start_secondaries());
        report_card();
        println!("kernel up: {} MiB of ARM RAM", info.arm_memory.1 >> 20);
        extern "Rust" {
            fn kernel_main(info: &BootInfo) -> !;
        }
        // SAFETY: `kernel_main` is defined by the kernel binary with exactly this signature.
        unsafe { kernel_main(&info) }
    }
}

/// Identifies the SD card and prints what was found: capacity, addressing, bus, clocks and the
/// FAT32 partition, or the error (the kernel goes on without a card).
pub fn report_card() -> Option<crate::bsp::raspi2::emmc::CardInfo> {
    use crate::bsp::raspi2::emmc::EMMC;
    match EMMC.init() {
        Ok(c) => {
            println!(
                "card: {} blocks ({} MiB), {}, {}-bit bus at {} Hz (EMMC base clock {} Hz)",
                c.blocks,
                c.blocks / 2048,
                if c.high_capacity {
                    "SDHC/SDXC, block addresses"
                } else {
                    "SDSC, byte addresses"
                },
                c.bus_width,
                c.data_clock,
                c.base_clock
            );
            println!(
                "  card id      : manufacturer {:#04x}, product {}, RCA {:#06x}, {}",
                c.manufacturer,
                core::str::from_utf8(&c.product).unwrap_or("?"),
                c.rca,
                if c.v2 { "SD 2.00 or later" } else { "SD 1.x" }
            );
            match crate::fs::fat32_partition(&EMMC) {
                Ok(p) => println!(
                    "  partition    : slot {}, type {:#04x}, blocks {}..{} (FAT32{})",
                    p.slot,
                    p.kind,
                    p.start.0,
                    p.end().0,
                    if p.bootable { ", bootable" } else { "" }
                ),
                Err(e) => println!("  partition    : {e}"),
            }
            Some(c)
        }
        Err(e) => {
            println!("card: none ({e})");
            None
        }
    }
}

/// The interrupt set-up `irq::init` made, and the timer's frequency (or why there is none).
#[cfg(not(any(feature = "ktest", feature = "kbench")))]
fn print_interrupts() {
    println!("interrupts: all to core 0, masked until the scheduler starts");
    match arm::timer::frequency() {
        Ok(hz) => println!("  timer        : virtual timer (CNTV), CNTFRQ {hz} Hz, stopped"),
        Err(e) => println!("  timer        : unusable: {e}"),
    }
    println!("  IPI          : ARM-local mailbox 0 of core 0");
    println!("  UART0 RX     : GPU IRQ 57 via the GPU interrupt routing, into the console queue");
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    // IRQs, FIQs and asynchronous aborts masked: a device error that keeps signalling must not
    // panic again inside the report, without end.
    arm::irq::mask_all();
    let loc = info.location();
    crate::console::panic_print(format_args!(
        "\n*** kernel panic at {}:{}: {}\n",
        loc.map_or("?", |l| l.file()),
        loc.map_or(0, |l| l.line()),
        info.message()
    ));
    // A secondary core stops here: the test runner's recovery belongs to core 0's stack.
    if arm::core_id() != 0 {
        arm::halt()
    }
    #[cfg(feature = "ktest")]
    {
        crate::ktest::record_panic(format_args!("{}", info.message()));
        crate::ktest::after_panic();
    }
    #[cfg(not(feature = "ktest"))]
    arm::halt()
}
