// Boot stub: the first code the kernel runs, at physical 0x8000 with the MMU and caches off.
//
// Assembled by rustc through `global_asm!` (src/arch/arm/boot.rs), which supplies the memory-map
// constants as named `const` operands from src/mm/layout.rs; braces that belong to the assembler are
// therefore written doubled. Until the MMU is on, every address this code uses is physical: it
// is linked at 0x8000_8000 but runs at 0x8000, so it reaches its own code with `adr`
// (PC-relative) and other symbols by subtracting {KERNEL_OFFSET}.
//
// Register use until Rust is called:
//   r9  = CPSR at entry (reported in the boot log)
//   r10 = r0 from the firmware (0), r11 = r1 (machine type), r12 = r2 (ATAGs/DTB address)

    .section .text.boot, "ax"
    .arm
    .arch_extension virt            // ERET, ELR_hyp and SPSR_hyp (Virtualization Extensions)
    .arch_extension mp              // Multiprocessing Extensions

    // Absolute symbols that link.ld ASSERTs against its own constants.
    .globl __layout_kernel_offset
    .set   __layout_kernel_offset, {KERNEL_OFFSET}
    .globl __layout_kernel_load
    .set   __layout_kernel_load, {KERNEL_LOAD}
    .globl __layout_l1_phys
    .set   __layout_l1_phys, {L1_PHYS}
    .globl __layout_core_stacks_size
    .set   __layout_core_stacks_size, {CORE_STACKS_SIZE}

    .globl _start
_start:
    mov     r10, r0
    mov     r11, r1
    mov     r12, r2
    mrs     r9, cpsr

    // QEMU starts all four cores here; the Pi firmware holds cores 1-3 itself. Park the others.
    mrc     p15, 0, r4, c0, c0, 5           // MPIDR
    ands    r4, r4, #3                      // Aff0 = core number in the cluster
    bne     park_secondary

    // Leave HYP for SVC, stop the timers, MMU and caches off, ACTLR.SMP, then invalidate TLBs,
    // instruction cache and branch predictor (ARM ARM B3.10.1, B2.2.7: their contents are
    // UNKNOWN at reset) and the data and unified caches by set/way up to the Level of Coherence
    // (only core 0 runs: nothing else can hold dirty lines in the shared L2). The secondary
    // cores run the same subroutines (`secondary_entry`).
    bl      leave_hyp
    bl      reset_cpu_state
    bl      set_actlr_smp
    mov     r4, #0
    mcr     p15, 0, r4, c8, c7, 0           // TLBIALL
    mcr     p15, 0, r4, c7, c5, 0           // ICIALLU
    mcr     p15, 0, r4, c7, c5, 6           // BPIALL
    bl      dcache_invalidate_all
    dsb
    isb

    // Build the boot L1 table at {L1_PHYS}: zero all 4096 entries, then map, with 1 MiB
    // sections, the RAM from 0 to the end of the image twice: identity (so this code survives
    // turning on the MMU) and at {KERNEL_OFFSET} (where the kernel is linked).
    ldr     r0, ={L1_PHYS}
    mov     r1, #0
    add     r2, r0, #{L1_SIZE}
2:  str     r1, [r0], #4
    cmp     r0, r2
    blo     2b

    ldr     r0, ={L1_PHYS}
    ldr     r1, =__kernel_end_exclusive
    sub     r1, r1, #{KERNEL_OFFSET}        // physical end of the image (stacks included)
    ldr     r2, =0xfffff
    add     r1, r1, r2
    lsr     r1, r1, #20                     // MiB to map
    ldr     r2, ={SECTION_NORMAL}           // Normal WBWA, shareable, privileged RW, global
    mov     r3, #0
3:  orr     r4, r2, r3, lsl #20
    str     r4, [r0, r3, lsl #2]            // identity
    add     r5, r3, #({KERNEL_OFFSET} >> 20)
    str     r4, [r0, r5, lsl #2]            // high remap
    add     r3, r3, #1
    cmp     r3, r1
    blo     3b

    // Boot-time device mapping for the console and the mailbox, at their physical addresses (so
    // in the identity half that vm2_start removes): Device, XN, privileged.
    ldr     r4, ={SECTION_DEVICE_PERIPH0}
    str     r4, [r0, #(({PERIPHERAL_BASE} >> 20) << 2)]
    ldr     r4, ={SECTION_DEVICE_PERIPH2}
    str     r4, [r0, #((({PERIPHERAL_BASE} >> 20) + 2) << 2)]

    // The table was written with the MMU and caches off, so it is in memory; DSB completes the
    // writes before the walker can use them (ARM ARM B3.10.1).
    dsb

    // DACR: all 16 domains client (permissions checked). TTBCR.N = 1: TTBR0 walks 0..2 GiB,
    // TTBR1 2..4 GiB. Both point at {L1_PHYS} (a physical address) with inner/outer write-back
    // write-allocate, inner-shareable walks. ASID 0.
    ldr     r0, =0x55555555
    ldr     r1, =({L1_PHYS} | {TTBR_WALK})
    mov     r2, #0
    bl      mmu_on

    // Continue at the linked (high) address.
    ldr     pc, =boot_high

// leave_hyp: called with r9 = the CPSR at entry, MMU off. Returns in SVC with A, I and F
// masked, whatever the entry mode; clobbers r4, r5. Core 0 and the secondary cores share it.
// The Pi firmware enters in non-secure HYP (PL2); the kernel runs at PL1 (SVC). QEMU enters in
// Secure SVC, which is accepted as is.
leave_hyp:
    and     r4, r9, #0x1f
    cmp     r4, #{MODE_HYP}
    bne     1f
    // Before leaving HYP, give PL1 what only PL2 can grant, and trap nothing to HYP (ARM ARM
    // B4.1, the CNTHCTL, HCR, HCPTR, HDCR and HSTR register descriptions):
    // CNTHCTL.PL1PCEN | PL1PCTEN lets SVC use the physical timer and counter; CNTVOFF = 0 makes
    // the virtual counter equal the physical one; HCR = 0 (no stage 2, no traps, no virtual
    // interrupts); HCPTR = 0 (no coprocessor traps); HDCR keeps only HPMN (all counters to PL1);
    // HSTR = 0 traps no CP15 access. The firmware leaves most at reset values, a chain-loader
    // may not.
    mrc     p15, 4, r4, c14, c1, 0          // CNTHCTL
    orr     r4, r4, #3
    mcr     p15, 4, r4, c14, c1, 0
    mov     r4, #0
    mov     r5, #0
    mcrr    p15, 4, r4, r5, c14             // CNTVOFF
    mcr     p15, 4, r4, c1, c1, 0           // HCR
    mcr     p15, 4, r4, c1, c1, 2           // HCPTR
    mcr     p15, 4, r4, c1, c1, 3           // HSTR
    mrc     p15, 4, r5, c1, c1, 1           // HDCR
    and     r5, r5, #0x1f                   // keep HPMN only
    mcr     p15, 4, r5, c1, c1, 1
    // Non-secure PL1 reads of MIDR and MPIDR return VPIDR and VMPIDR instead (ARM ARM B4.1, the
    // MIDR, MPIDR, VPIDR and VMPIDR descriptions). The kernel takes its core number from
    // MPIDR, so PL1 gets the real values, whatever a previous owner of HYP left in the copies.
    mrc     p15, 0, r5, c0, c0, 0           // MIDR
    mcr     p15, 4, r5, c0, c0, 0           // VPIDR
    mrc     p15, 0, r5, c0, c0, 5           // MPIDR
    mcr     p15, 4, r5, c0, c0, 5           // VMPIDR
    // Return to SVC with A, I and F masked: ERET from HYP restores CPSR from SPSR_hyp and
    // branches to ELR_hyp (ARM ARM B9.3, ERET), here the caller's return address (in HYP, LR is
    // the User-mode LR, which BL wrote). In HYP, SPSR_hyp is the current mode's SPSR, so it is
    // written as `spsr_cxsf`: the banked form `MSR SPSR_hyp` is UNPREDICTABLE from HYP mode
    // (B9.3, MSR (Banked register)), while ELR_hyp may be written from HYP. Writing CPSR.M
    // from HYP with MSR/CPS is UNPREDICTABLE, hence the ERET.
    ldr     r4, =({MODE_SVC} | {PSR_A} | {PSR_I} | {PSR_F})
    msr     spsr_cxsf, r4
    msr     elr_hyp, lr
    eret
1:
    // Secure SVC (QEMU), or another PL1 mode: make sure of SVC with everything masked. LR is
    // banked per mode, so the return address is kept in r4 across the mode change.
    mov     r4, lr
    cpsid   aif, #{MODE_SVC}
    bx      r4

// reset_cpu_state: timers stopped, CNTKCTL as the kernel wants it, MMU, caches, alignment checks
// and high vectors off. Clobbers r4.
reset_cpu_state:
    // The Pi firmware leaves the virtual timer enabled with its interrupt unmasked (CNTV_CTL is
    // not banked): stop it, and the physical one, until the kernel programs them.
    mov     r4, #0
    mcr     p15, 0, r4, c14, c3, 1          // CNTV_CTL
    mcr     p15, 0, r4, c14, c2, 1          // CNTP_CTL
    // CNTKCTL (ARM ARM B4.1, CNTKCTL) decides what PL0 may do with the generic timer; its
    // fields are UNKNOWN at reset. PL0 may read the virtual counter (PL0VCTEN: CNTVCT and
    // CNTFRQ) and nothing else: not the physical counter (PL0PCTEN), not the timers' registers
    // (PL0VTEN, PL0PTEN), no event stream (EVNTEN).
    mov     r4, #{CNTKCTL_PL0VCTEN}
    mcr     p15, 0, r4, c14, c1, 0          // CNTKCTL
    isb

    // MMU, caches, alignment checks and high vectors off, whatever the previous owner left.
    mrc     p15, 0, r4, c1, c0, 0           // SCTLR
    bic     r4, r4, #{SCTLR_M}
    bic     r4, r4, #{SCTLR_C}
    bic     r4, r4, #{SCTLR_A}
    bic     r4, r4, #{SCTLR_I}
    bic     r4, r4, #{SCTLR_Z}
    bic     r4, r4, #{SCTLR_V}
    mcr     p15, 0, r4, c1, c0, 0
    isb
    bx      lr

// set_actlr_smp: called with r9 = the CPSR at entry (before leave_hyp). Clobbers r4, r5.
    //
    // ACTLR.SMP: Cortex-A7 TRM 4.3.31 requires it set before the caches and MMU are enabled and
    // before any cache or TLB maintenance, so that the L1 data cache takes part in coherency
    // and broadcast maintenance works. It is written only when it is clear (as Linux's
    // __v7_ca7mp_setup does), and in Non-secure state (the board: entered in HYP) only when the
    // Secure firmware allows it: on the Cortex-A7, Non-secure software may write ACTLR only if
    // NSACR.NS_SMP (bit 18) is 1 (TRM 4.3.31 ACTLR, 4.3.33 NSACR; NSACR itself is readable from
    // Non-secure PL1, ARM ARM B4.1, NSACR). The Pi's stub sets ACTLR.SMP itself, and NS_SMP.
    // Entered in Secure SVC (QEMU's -kernel) the kernel may write it. (HCR.TAC, which would trap
    // the access to HYP, was cleared above.) QEMU models ACTLR as RAZ/WI: it always reads clear.
set_actlr_smp:
    mrc     p15, 0, r4, c1, c0, 1           // ACTLR
    tst     r4, #{ACTLR_SMP}
    bne     2f
    and     r5, r9, #0x1f
    cmp     r5, #{MODE_HYP}
    bne     1f
    mrc     p15, 0, r5, c1, c1, 2           // NSACR
    tst     r5, #{NSACR_NS_SMP}
    beq     2f                              // not ours to write
1:  orr     r4, r4, #{ACTLR_SMP}
    mcr     p15, 0, r4, c1, c0, 1
    isb
2:  bx      lr

// Loads the translation registers and turns the MMU and caches on; shared by core 0 and the
// secondaries. r0 = DACR, r1 = TTBR0 (physical, with walk attributes), r2 = SCTLR bits to set
// beyond M, C, I and Z. TTBCR.N = 1, TTBR1 = the kernel L1 at {L1_PHYS}, ASID 0. Clobbers r4.
// Called and returning at an identity-mapped address: the instruction that enables the MMU and
// the ones after it must translate to where they are (ARM ARM B3.2.1).
mmu_on:
    mcr     p15, 0, r0, c3, c0, 0           // DACR
    mov     r4, #{TTBCR_N}
    mcr     p15, 0, r4, c2, c0, 2           // TTBCR
    mcr     p15, 0, r1, c2, c0, 0           // TTBR0
    ldr     r4, =({L1_PHYS} | {TTBR_WALK})
    mcr     p15, 0, r4, c2, c0, 1           // TTBR1
    mov     r4, #0
    mcr     p15, 0, r4, c13, c0, 1          // CONTEXTIDR: ASID 0
    isb
    mcr     p15, 0, r4, c8, c7, 0           // TLBIALL
    dsb
    isb
    // MMU, D-cache, I-cache and branch prediction on in one write; the ISB makes the following
    // fetches use the new translation. AFE = 0 and TRE = 0: AP[2:0] permission model, no TEX
    // remap.
    mrc     p15, 0, r4, c1, c0, 0
    orr     r4, r4, #{SCTLR_M}
    orr     r4, r4, #{SCTLR_C}
    orr     r4, r4, #{SCTLR_I}
    orr     r4, r4, #{SCTLR_Z}
    orr     r4, r4, r2
    bic     r4, r4, #{SCTLR_TRE}
    bic     r4, r4, #{SCTLR_AFE}
    bic     r4, r4, #{SCTLR_TE}
    mcr     p15, 0, r4, c1, c0, 0
    isb
    bx      lr

// Invalidate data/unified caches by set/way (ARM ARM B4.2.1, CLIDR/CCSIDR/CSSELR; B2.2.6
// set/way operand format), with the caches off: it discards contents, it does not clean them.
// Clobbers r0-r8.
// dcache_invalidate_all: every level up to the Level of Coherence, for core 0 at boot, when no
// other core runs.
// dcache_invalidate_l1: the core's own level 1 only, for a secondary core joining a running
// kernel: invalidating the shared L2 by set/way would throw away lines that core 0 has dirtied
// (Linux's v7_invalidate_l1 does the same for its secondaries).
dcache_invalidate_all:
    mrc     p15, 1, r0, c0, c0, 1           // CLIDR
    and     r3, r0, #0x07000000             // LoC
    lsr     r3, r3, #23                     // LoC * 2
    b       dcache_invalidate_levels
dcache_invalidate_l1:
    mrc     p15, 1, r0, c0, c0, 1           // CLIDR
    mov     r3, #2                          // level 1 only (level * 2 limit)
dcache_invalidate_levels:
    cmp     r3, #0
    beq     5f
    mov     r4, #0                          // level * 2 (the CSSELR / set-way level field)
4:  add     r5, r4, r4, lsr #1              // level * 3
    lsr     r6, r0, r5
    and     r6, r6, #7                      // cache type at this level
    cmp     r6, #2
    blt     8f                              // none, or instruction only
    mcr     p15, 2, r4, c0, c0, 0           // CSSELR: this level, data/unified
    isb
    mrc     p15, 1, r6, c0, c0, 0           // CCSIDR
    and     r7, r6, #7
    add     r7, r7, #4                      // log2(line bytes): set field shift
    ldr     r8, =0x3ff
    ands    r8, r8, r6, lsr #3              // ways - 1
    clz     r5, r8                          // way field shift (32 - log2(ways))
    ldr     r1, =0x7fff
    ands    r1, r1, r6, lsr #13             // sets - 1
6:  mov     r6, r8                          // for each set, each way
7:  orr     r2, r4, r6, lsl r5
    orr     r2, r2, r1, lsl r7
    mcr     p15, 0, r2, c7, c6, 2           // DCISW
    subs    r6, r6, #1
    bge     7b
    subs    r1, r1, #1
    bge     6b
8:  add     r4, r4, #2
    cmp     r3, r4
    bgt     4b
5:  mov     r4, #0
    mcr     p15, 2, r4, c0, c0, 0           // CSSELR back to level 1
    dsb
    isb
    bx      lr

// Cores 1-3 wait here, as the firmware's spin table does: WFE until their ARM-local mailbox 3
// holds an entry address (write-set by core 0 followed by SEV), clear it, jump there. A later
// SMP bring-up releases them the same way on QEMU and on the board.
park_secondary:
    ldr     r5, ={CORE0_MBOX3_RDCLR}
    add     r5, r5, r4, lsl #4
1:  wfe
    ldr     r6, [r5]
    cmp     r6, #0
    beq     1b
    str     r6, [r5]                        // write-1-to-clear
    bx      r6

// A secondary core released by core 0 (`crate::smp::start_secondaries`) through its mailbox 3
// enters here, at the physical address, MMU off: from the loop above (QEMU's -kernel), from the
// firmware's spin table in non-secure HYP (the board), or from QEMU's own boot code. Core 0 has
// finished vm2_start: the kernel L1 at {L1_PHYS} is final and has no identity map any more.
//
// Register use: r9 = CPSR at entry, r10 = core number; r0-r8 scratch.
//
// Turning the MMU on needs the instruction that does it, and the ones after it until the jump
// to the high address, at the same address before and after (ARM ARM B3.2.1: with the MMU off
// the address is physical, with it on the same address must translate to the same place). The
// kernel L1 no longer maps the low half, so this core first walks a trampoline table: an 8 KiB
// TTBR0 table of its own (`SMP_TRAMPOLINE_L1`, in .bss) that maps only the MiB holding this
// code, identity, while TTBR1 is already the kernel L1. Core 0 never changes its live table for
// this and never points its own TTBR0 at the trampoline, so the only TLB that can hold the
// identity entry is this core's, and a local TLBIALL once it runs high removes it (B3.10.2: TLB
// maintenance is needed only where an entry can be cached; a global entry is used even with
// TTBR0 walks off, TTBCR.PD0 = 1, so it must go). Nothing is ever broadcast, and the table is
// never freed: a core that answers late finds it intact.
    .globl secondary_entry
secondary_entry:
    mrs     r9, cpsr
    bl      leave_hyp                       // as core 0: SVC, A, I, F masked
    bl      reset_cpu_state
    bl      set_actlr_smp                   // before any cache or TLB maintenance (TRM 4.3.31)
    mrc     p15, 0, r10, c0, c0, 5          // MPIDR (VMPIDR set to it by leave_hyp)
    and     r10, r10, #3

    // This core's TLB, I-cache, branch predictor and L1 D-cache only: L2 is shared with core 0.
    mov     r4, #0
    mcr     p15, 0, r4, c8, c7, 0           // TLBIALL
    mcr     p15, 0, r4, c7, c5, 0           // ICIALLU
    mcr     p15, 0, r4, c7, c5, 6           // BPIALL
    bl      dcache_invalidate_l1
    dsb
    isb

    // Core 0 cleaned the parameters and the trampoline table to the point of coherency, so
    // these non-cacheable reads (MMU off) see them.
    ldr     r0, =SMP_BOOT_PARAMS
    sub     r0, r0, #{KERNEL_OFFSET}
    ldr     r1, [r0, #{SMP_TRAMPOLINE_TTBR0_OFFSET}]

    // The kernel's DACR (user domain closed), TTBCR.N = 1 with TTBR0 walks on (for the
    // trampoline), TTBR0 = the trampoline table (r1), TTBR1 = the kernel L1, ASID 0; high
    // vectors on too (the vector page at 0xFFFF0000 is in the kernel half, mapped by
    // vm2_start). With C set in the same write as M, the first table walks are cacheable and
    // snoop core 0's D-cache.
    ldr     r0, ={DACR_KERNEL}
    mov     r2, #{SCTLR_V}
    bl      mmu_on
    ldr     pc, =secondary_high

    .ltorg

// From here on the MMU is on and the code runs at its linked address.
    .section .text.boot.high, "ax"
boot_high:
    // One stack per exception mode; the handlers move to the SVC stack at once (SRS), so the
    // others are small. The stacks are NOLOAD, below each top is memory nobody else uses.
    cps     #{MODE_IRQ}
    ldr     sp, =__irq_stack_top
    cps     #{MODE_ABT}
    ldr     sp, =__abt_stack_top
    cps     #{MODE_UND}
    ldr     sp, =__und_stack_top
    cps     #{MODE_FIQ}
    ldr     sp, =__fiq_stack_top
    cps     #{MODE_SVC}
    ldr     sp, =__svc_stack_top

    // Exceptions go to the kernel's vector table (low-vector mode, VBAR) until vm2_start moves
    // them to the high vector page.
    ldr     r4, =exception_vectors
    mcr     p15, 0, r4, c12, c0, 0          // VBAR
    isb

    // Zero .bss (word aligned by link.ld).
    ldr     r4, =__bss_start
    ldr     r5, =__bss_end_exclusive
    mov     r6, #0
1:  cmp     r4, r5
    strlo   r6, [r4], #4
    blo     1b

    mov     r0, r10
    mov     r1, r11
    mov     r2, r12
    mov     r3, r9
    bl      kernel_entry                    // never returns
2:  wfe
    b       2b

// A secondary core, now at its linked address with the MMU on (r9 = entry CPSR, r10 = core).
secondary_high:
    // Off the trampoline: TTBR0 walks off (TTBCR.PD0, no user space on this core yet), TTBR0 =
    // the kernel L1 like core 0's, then drop the identity entry this core may have cached.
    ldr     r4, =({TTBCR_N} | {TTBCR_PD0})
    mcr     p15, 0, r4, c2, c0, 2           // TTBCR
    isb
    ldr     r4, =({L1_PHYS} | {TTBR_WALK})
    mcr     p15, 0, r4, c2, c0, 0           // TTBR0
    isb
    mov     r4, #0
    mcr     p15, 0, r4, c8, c7, 0           // TLBIALL (this core only: see secondary_entry)
    mcr     p15, 0, r4, c7, c5, 6           // BPIALL
    dsb
    isb

    // This core's stacks: the tops core 0 wrote for it (SVC, IRQ, ABT, UND), each in its own
    // block of the image's .stacks with an unmapped guard page below the SVC stack.
    ldr     r0, =SMP_BOOT_PARAMS
    add     r0, r0, r10, lsl #4
    ldmia   r0, {{r1-r4}}
    cps     #{MODE_IRQ}
    mov     sp, r2
    cps     #{MODE_ABT}
    mov     sp, r3
    cps     #{MODE_UND}
    mov     sp, r4
    cps     #{MODE_SVC}
    mov     sp, r1

    // VBAR as core 0's (SCTLR.V selects the high vector page; VBAR is kept consistent).
    ldr     r4, =exception_vectors
    mcr     p15, 0, r4, c12, c0, 0          // VBAR
    isb

    mov     r0, r10
    mov     r1, r9
    bl      secondary_main_entry            // never returns
3:  wfi
    b       3b

    .ltorg
