//! The assembly boot stub (`boot/start.S`) and the first Rust code it calls.
//!
//! The stub takes every memory-map constant from [`crate::mm::layout`] through `const` operands,
//! so there is one definition; `link.ld` checks its own copies against the `__layout_*` symbols
//! the stub exports.

use crate::mm::layout;

/// CPSR mode field values.
pub mod mode {
    pub const USR: u32 = 0x10;
    pub const FIQ: u32 = 0x11;
    pub const IRQ: u32 = 0x12;
    pub const SVC: u32 = 0x13;
    pub const MON: u32 = 0x16;
    pub const ABT: u32 = 0x17;
    pub const HYP: u32 = 0x1a;
    pub const UND: u32 = 0x1b;
    pub const SYS: u32 = 0x1f;

    /// Name of a CPSR mode field.
    pub fn name(m: u32) -> &'static str {
        match m & 0x1f {
            USR => "USR",
            FIQ => "FIQ",
            IRQ => "IRQ",
            SVC => "SVC",
            MON => "MON",
            ABT => "ABT",
            HYP => "HYP",
            UND => "UND",
            SYS => "SYS",
            _ => "???",
        }
    }
}

/// Short-descriptor section attributes used by the boot map (ARM ARM B3.5.1): type 0b10,
/// B (bit 2), C (bit 3), XN (bit 4), AP\[1:0\] (bits 11:10), TEX (bits 14:12), S (bit 16).
const SECTION: u32 = 0b10;
const SECTION_NORMAL_WBWA: u32 = SECTION | 1 << 2 | 1 << 3 | 0b01 << 10 | 0b001 << 12 | 1 << 16;
const SECTION_DEVICE: u32 = SECTION | 1 << 2 | 1 << 4 | 0b01 << 10;
/// TTBR0/TTBR1 walk attributes (Multiprocessing Extensions encoding, ARM ARM B4.1.154):
/// IRGN = 0b01 (bit 6 set, bit 0 clear) inner WBWA, S (bit 1) shareable, RGN = 0b01 (bits 4:3)
/// outer WBWA, NOS (bit 5) inner shareable.
pub const TTBR_WALK_ATTRS: u32 = 1 << 6 | 1 << 1 | 0b01 << 3 | 1 << 5;

core::arch::global_asm!(
    include_str!("../../../boot/start.S"),
    KERNEL_OFFSET = const layout::KERNEL_OFFSET,
    KERNEL_LOAD = const layout::KERNEL_LOAD_PHYS.as_u32(),
    L1_PHYS = const layout::KERNEL_L1_PHYS.as_u32(),
    L1_SIZE = const layout::L1_TABLE_SIZE,
    TTBCR_N = const layout::TTBCR_N,
    TTBR_WALK = const TTBR_WALK_ATTRS,
    SECTION_NORMAL = const SECTION_NORMAL_WBWA,
    SECTION_DEVICE_PERIPH0 = const layout::PERIPHERAL_BASE.as_u32() | SECTION_DEVICE,
    SECTION_DEVICE_PERIPH2 = const (layout::PERIPHERAL_BASE.as_u32() + 0x20_0000) | SECTION_DEVICE,
    PERIPHERAL_BASE = const layout::PERIPHERAL_BASE.as_u32(),
    CORE0_MBOX3_RDCLR = const layout::LOCAL_PERIPHERAL_BASE.as_u32() + 0xcc,
    MODE_HYP = const mode::HYP,
    MODE_SVC = const mode::SVC,
    MODE_IRQ = const mode::IRQ,
    MODE_ABT = const mode::ABT,
    MODE_UND = const mode::UND,
    MODE_FIQ = const mode::FIQ,
    PSR_A = const 1 << 8,
    PSR_I = const 1 << 7,
    PSR_F = const 1 << 6,
    SCTLR_M = const 1 << 0,
    SCTLR_A = const 1 << 1,
    SCTLR_C = const 1 << 2,
    SCTLR_Z = const 1 << 11,
    SCTLR_I = const 1 << 12,
    SCTLR_V = const 1 << 13,
    SCTLR_TRE = const 1 << 28,
    SCTLR_AFE = const 1 << 29,
    SCTLR_TE = const 1 << 30,
    ACTLR_SMP = const 1 << 6,
    NSACR_NS_SMP = const 1 << 18,
    CNTKCTL_PL0VCTEN = const CNTKCTL_AT_BOOT,
    CORE_STACKS_SIZE = const CORE_STACKS_SIZE,
    DACR_KERNEL = const super::mmu::DACR_KERNEL,
    TTBCR_PD0 = const super::mmu::TTBCR_PD0,
    SMP_TRAMPOLINE_TTBR0_OFFSET = const super::smp::TRAMPOLINE_TTBR0_OFFSET,
);

/// Stack sizes, as link.ld has them (it checks [`CORE_STACKS_SIZE`] against its own).
pub const SVC_STACK_SIZE: u32 = 64 * 1024;
/// The IRQ, ABT and UND stacks (entries move to the SVC stack at once).
pub const EXC_STACK_SIZE: u32 = 4 * 1024;
/// One secondary core's block in `.stacks`: a guard page, the SVC stack, IRQ, ABT, UND.
pub const CORE_STACKS_SIZE: u32 = crate::mm::PAGE_SIZE + SVC_STACK_SIZE + 3 * EXC_STACK_SIZE;

/// The stack tops of secondary core `core` (1-3): SVC, IRQ, ABT, UND, in the order the boot stub
/// loads them.
pub fn core_stack_tops(core: usize) -> [u32; 4] {
    assert!((1..4).contains(&core), "cores 1-3 have stack blocks");
    let block = image_layout().core_stacks.0 + (core as u32 - 1) * CORE_STACKS_SIZE;
    let svc = block + crate::mm::PAGE_SIZE + SVC_STACK_SIZE;
    [
        svc,
        svc + EXC_STACK_SIZE,
        svc + 2 * EXC_STACK_SIZE,
        svc + 3 * EXC_STACK_SIZE,
    ]
}

/// CNTKCTL as the boot stub writes it: PL0VCTEN (bit 1) only, so PL0 may read the virtual
/// counter and CNTFRQ, and nothing else of the generic timer (ARM ARM B4.1, CNTKCTL).
pub const CNTKCTL_AT_BOOT: u32 = 1 << 1;

/// What the boot stub hands to Rust.
#[derive(Debug, Clone, Copy)]
pub struct BootArgs {
    /// r0 from the firmware (0).
    pub r0: u32,
    /// r1: machine type.
    pub machine: u32,
    /// r2: physical address of ATAGs or the device tree.
    pub atags: u32,
    /// CPSR when `_start` ran: tells whether the firmware entered in HYP or SVC.
    pub entry_cpsr: u32,
}

extern "C" {
    static __kernel_start: u8;
    static __text_start: u8;
    static __text_end_exclusive: u8;
    static __rodata_start: u8;
    static __rodata_end_exclusive: u8;
    static __data_start: u8;
    static __data_end_exclusive: u8;
    static __bss_start: u8;
    static __bss_end_exclusive: u8;
    static __stack_guard_start: u8;
    static __stack_guard_end_exclusive: u8;
    static __svc_stack_top: u8;
    static __core_stacks_start: u8;
    static __core_stacks_end_exclusive: u8;
    static __kernel_end_exclusive: u8;
}

/// The kernel image's parts, from the linker script (virtual addresses, half open).
#[derive(Debug, Clone, Copy)]
pub struct ImageLayout {
    pub text: (u32, u32),
    pub rodata: (u32, u32),
    pub data: (u32, u32),
    pub bss: (u32, u32),
    pub stack_guard: (u32, u32),
    /// Core 0's stacks.
    pub stacks: (u32, u32),
    /// The stack blocks of cores 1-3, each starting with its (unmapped) guard page.
    pub core_stacks: (u32, u32),
    pub end: u32,
}

impl ImageLayout {
    /// Whether `va` is in a stack guard page: core 0's, or the one at the bottom of a secondary
    /// core's block.
    pub fn is_stack_guard(&self, va: u32) -> bool {
        let within = |r: (u32, u32)| (r.0..r.1).contains(&va);
        within(self.stack_guard)
            || (within(self.core_stacks)
                && (va - self.core_stacks.0) % CORE_STACKS_SIZE < crate::mm::PAGE_SIZE)
    }
}

/// Reads the image layout from the linker symbols (their addresses only, never their contents).
pub fn image_layout() -> ImageLayout {
    macro_rules! addr {
        ($s:ident) => {
            core::ptr::addr_of!($s) as u32
        };
    }
    ImageLayout {
        text: (addr!(__text_start), addr!(__text_end_exclusive)),
        rodata: (addr!(__rodata_start), addr!(__rodata_end_exclusive)),
        data: (addr!(__data_start), addr!(__data_end_exclusive)),
        bss: (addr!(__bss_start), addr!(__bss_end_exclusive)),
        stack_guard: (
            addr!(__stack_guard_start),
            addr!(__stack_guard_end_exclusive),
        ),
        stacks: (
            addr!(__stack_guard_end_exclusive),
            addr!(__core_stacks_start),
        ),
        core_stacks: (
            addr!(__core_stacks_start),
            addr!(__core_stacks_end_exclusive),
        ),
        end: addr!(__kernel_end_exclusive),
    }
}

/// The first Rust code: called by the boot stub with the MMU, caches and stacks set up, on core 0
/// in SVC with interrupts masked.
#[no_mangle]
extern "C" fn kernel_entry(r0: u32, machine: u32, atags: u32, entry_cpsr: u32) -> ! {
    let args = BootArgs {
        r0,
        machine,
        atags,
        entry_cpsr,
    };
    crate::kernel_init(args)
}
