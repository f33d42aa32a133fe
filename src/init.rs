//! From the boot stub to a running kernel: early console, boot log, then the VM.

use crate::arch::arm::boot::{image_layout, mode, BootArgs};
use crate::arch::arm::{self, irq::IrqSafeMutex};
use crate::bsp::raspi2::mailbox::{Mailbox, MailboxRegs, CLOCK_UART};
use crate::bsp::raspi2::mmio::Mmio;
use crate::bsp::raspi2::{gpio, GPIO_PHYS, MAILBOX_PHYS, UART0_PHYS};
use crate::mm::{PhysAddr, VirtAddr};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU32, Ordering};

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
    ATAGS_PA.store(args.atags, Ordering::Relaxed);
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
        apply_card_cmdline();
        let in_use = card_ram_limit()
            .or_else(|| crate::vm::info().map(|i| i.ram_end.as_u32()))
            .unwrap_or(0);
        println!(
            "kernel up: {} MiB of RAM in use ({} MiB of ARM RAM)",
            in_use >> 20,
            info.arm_memory.1 >> 20
        );
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
            report_swap();
            Some(c)
        }
        Err(e) => {
            println!("card: none ({e})");
            None
        }
    }
}

/// Finds the swap partition (MBR type 0x82) on the card, says so, and pages to it.
fn report_swap() {
    use crate::block::{Block, BlockDevice, BlockIdx};
    let mut b = [Block::new()];
    if crate::bsp::raspi2::emmc::EMMC
        .read_blocks(BlockIdx(0), &mut b)
        .is_err()
    {
        return;
    }
    let Ok(entries) = crate::block::mbr::parse(&b[0]) else {
        return;
    };
    let swap = entries.iter().find(|e| e.kind == 0x82).copied();
    match swap {
        Some(e) => {
            crate::proc::swap::enable(e.start.0, e.count.0);
            println!(
                "  swap         : slot {}, type 0x82, blocks {}..{} ({} MiB, {} page slots)",
                e.slot,
                e.start.0,
                e.end().0,
                e.count.0 / 2048,
                e.count.0 / 8
            );
        }
        None => println!("  swap         : none (no partition of type 0x82)"),
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
    // A secondary core stops here: the test runner's recovery belongs to core 0's stack. It may
    // hold a lock core 0 then waits for, so a test run ends at once, failed.
    if arm::core_id() != 0 {
        #[cfg(feature = "ktest")]
        {
            crate::console::panic_print(format_args!(
                "target: a panic on core {}, 1 failed\n",
                arm::core_id()
            ));
            crate::arch::arm::semihosting::exit(1);
        }
        #[cfg(not(feature = "ktest"))]
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

/// Physical address of the ATAG list or device tree the firmware passed in r2, saved by
/// `kernel_init` for `vm2_start` (which reads it while the boot map is still in place).
static ATAGS_PA: AtomicU32 = AtomicU32::new(u32::MAX);

/// The longest command line kept (a longer one is cut here; `mem=` is parsed from all of it).
const CMDLINE_MAX: usize = 1024;

/// The kernel command line and where it came from.
pub struct Cmdline {
    buf: [u8; CMDLINE_MAX],
    len: usize,
    /// Where it came from ("ATAGs at 0x100"), or why there is none.
    pub source: &'static str,
    /// Whether the firmware passed one (in the ATAGs).
    pub from_firmware: bool,
    /// Its `mem=` option in bytes, `None` without one; `Err` when it is malformed (ignored).
    pub mem: Result<Option<u64>, crate::cmdline::MemError>,
}

impl Cmdline {
    fn new(text: &[u8], source: &'static str, from_firmware: bool) -> Self {
        let mem = match core::str::from_utf8(text) {
            Ok(s) => crate::cmdline::mem_limit(s),
            Err(_) => Err(crate::cmdline::MemError::Garbage),
        };
        let len = text.len().min(CMDLINE_MAX);
        let mut buf = [0; CMDLINE_MAX];
        buf[..len].copy_from_slice(&text[..len]);
        Cmdline {
            buf,
            len,
            source,
            from_firmware,
            mem,
        }
    }

    /// The text (cut at [`CMDLINE_MAX`] bytes; non-UTF-8 shown as "?").
    pub fn text(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }

    /// The `mem=` limit, if there is a valid one.
    pub fn limit(&self) -> Option<u64> {
        self.mem.ok().flatten()
    }
}

static CMDLINE: spin::Once<Cmdline> = spin::Once::new();

/// The command line the firmware passed in its ATAG list, read once (by `vm2_start`, before it
/// sizes the RAM) and printed. Only a list inside the first MiB, clear of the kernel's L1 table
/// and image, and starting with ATAG_CORE is read; a device tree counts as no command line.
pub fn firmware_cmdline() -> &'static Cmdline {
    CMDLINE.call_once(|| {
        let pa = ATAGS_PA.load(Ordering::Relaxed);
        let image_end_pa = image_layout().end - crate::mm::layout::KERNEL_OFFSET;
        let l1 = crate::mm::layout::KERNEL_L1_PHYS.as_u32();
        let end = if pa < l1 {
            Some(l1)
        } else if pa >= image_end_pa && pa < 0x10_0000 {
            Some(0x10_0000)
        } else {
            None
        };
        let c = match end {
            _ if !pa.is_multiple_of(4) => {
                Cmdline::new(b"", "none (r2 is not a word address)", false)
            }
            None => Cmdline::new(
                b"",
                "none (r2 is not in the first MiB, below the kernel)",
                false,
            ),
            Some(end) => {
                // SAFETY: [pa, end) lies in the first MiB outside the L1 table and the kernel image;
                // the boot map covers it at KERNEL_OFFSET + pa (read-only use, nothing writes it).
                let bytes = unsafe {
                    core::slice::from_raw_parts(
                        (crate::mm::layout::KERNEL_OFFSET + pa) as usize as *const u8,
                        (end - pa) as usize,
                    )
                };
                match crate::cmdline::parse_atags(bytes) {
                    Ok(crate::cmdline::Atags {
                        cmdline: Some(text),
                        ..
                    }) => Cmdline::new(text, "ATAGs", true),
                    Ok(_) => Cmdline::new(b"", "none (ATAGs without ATAG_CMDLINE)", false),
                    Err(crate::cmdline::AtagError::DeviceTree) => {
                        Cmdline::new(b"", "none (a device tree, not read)", false)
                    }
                    Err(_) => Cmdline::new(b"", "none (no valid ATAG list)", false),
                }
            }
        };
        if c.from_firmware {
            println!("  command line : \"{}\" (ATAGs at {pa:#x})", c.text());
        } else {
            println!("  command line : {} (r2={pa:#x})", c.source);
        }
        if let Err(e) = c.mem {
            println!("  mem=         : ignored, malformed ({e:?})");
        }
        c
    })
}

/// RAM the kernel uses after `mem=` from the card's `cmdline.txt` (0 until applied).
static CARD_LIMIT: AtomicU32 = AtomicU32::new(0);

/// The limit `cmdline.txt` on the card set, in bytes, if it was applied.
pub fn card_ram_limit() -> Option<u32> {
    match CARD_LIMIT.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// When the firmware passed no command line (QEMU's `-kernel`), reads `cmdline.txt` from the
/// card's FAT partition, prints it, and applies its `mem=` by reserving the frames above the
/// limit in the PMM (they are still free this early; a failure is reported and the RAM left as
/// it was). Call after `vm2_start` and `report_card`.
pub fn apply_card_cmdline() {
    if firmware_cmdline().from_firmware {
        return;
    }
    let text = match crate::fs::read_file_max(
        &crate::bsp::raspi2::emmc::EMMC,
        "/cmdline.txt",
        CMDLINE_MAX,
    ) {
        Ok(t) => t,
        Err(e) => {
            println!("  cmdline.txt  : none ({e})");
            return;
        }
    };
    let c = Cmdline::new(text.trim_ascii(), "card", false);
    println!(
        "  command line : \"{}\" (cmdline.txt on the card)",
        c.text()
    );
    let ram_end = crate::vm::info().expect("vm2_start ran").ram_end.as_u32();
    let limit = match c.mem {
        Ok(Some(l)) => crate::cmdline::limited_ram(ram_end, Some(l)),
        Ok(None) => return,
        Err(e) => {
            println!("  mem=         : ignored, malformed ({e:?})");
            return;
        }
    };
    if limit >= ram_end {
        println!("  RAM in use   : {} MiB (mem= is no less)", ram_end >> 20);
        return;
    }
    let r = crate::vm::PMM
        .lock()
        .as_mut()
        .map(|pmm| pmm.reserve_region(PhysAddr::new(limit), PhysAddr::new(ram_end)));
    match r {
        Some(Ok(())) => {
            CARD_LIMIT.store(limit, Ordering::Relaxed);
            println!(
                "  RAM in use   : {} MiB of {} MiB (mem= from cmdline.txt, frames above reserved)",
                limit >> 20,
                ram_end >> 20
            );
        }
        Some(Err(e)) => println!(
            "  RAM in use   : {} MiB: reserving above {} MiB failed ({e:?})",
            ram_end >> 20,
            limit >> 20
        ),
        None => println!("  RAM in use   : no PMM"),
    }
}
