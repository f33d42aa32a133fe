// A stand-in for the Raspberry Pi 2 firmware's ARM stub, for the tests only: it reproduces the
// state in which the board enters kernel7.img, which QEMU's `-kernel` and `-bios` do not.
//
// On the board, the GPU firmware loads kernel7.img at 0x8000 and an ARM stub at 0, then releases
// the four Cortex-A7 cores from reset in Secure SVC at address 0. The stub, on every core, sets
// up what non-secure software needs, drops to non-secure HYP through Monitor mode, and then:
//   - core 0 jumps to 0x8000 with r0 = 0, r1 = 0xC42 (machine type), r2 = 0x100 (ATAGs: CORE, MEM, CMDLINE, NONE);
//   - cores 1-3 wait, still in non-secure HYP, on their ARM-local mailbox 3 (the spin table):
//     WFE until the mailbox's read-clear register at 0x4000_00CC + 0x10 * core holds an
//     address, write that value back to clear it, and branch there.
//
// QEMU's raspi2b (7.2) without `-kernel`/`-bios` keeps EL3, starts all four cores from reset at
// address 0 in Secure SVC (no boot code of its own), and its cortex-a7 has the Security and
// Virtualization Extensions, so this file, loaded at 0 with the generic loader (and the kernel's
// raw image at 0x8000 with another), gives the kernel the board's entry.
//
// It deviates from the board on purpose in what it leaves in HYP's registers, as earlier
// software (a chain-loader, or reset values the architecture calls UNKNOWN) might: CNTVOFF is
// non-zero, VMPIDR says core 3 on core 0 and VPIDR is 0 (non-secure PL1 reads these as its
// MPIDR and MIDR). The tests then show that the kernel sets them itself before it leaves HYP.
//
// Assembled by rustc (`global_asm!` in armstub.rs), linked at 0 by armstub.ld.

    .section .text.armstub, "ax"
    .arm
    .arch_extension sec                 // SMC-era system registers (SCR, NSACR, Monitor mode)
    .arch_extension virt                // CNTVOFF from HYP

    .equ MODE_SVC,      0x13
    .equ MODE_MON,      0x16
    .equ MODE_HYP,      0x1a
    .equ PSR_AIF,       0x1c0           // A, I, F masked

    // SCR (ARM ARM B4.1.129): NS (bit 0) = the levels below Monitor are non-secure; FW (4) and
    // AW (5) = non-secure software may mask FIQs and asynchronous aborts (CPSR.F, CPSR.A);
    // HCE (8) = HVC is enabled. IRQ/FIQ/EA (1-3) stay 0: interrupts are taken in IRQ/FIQ mode of
    // the current security state, not in Monitor mode.
    .equ SCR_VALUE,     (1 << 0) | (1 << 4) | (1 << 5) | (1 << 8)
    // NSACR (B4.1.111): CP10 and CP11 (bits 10, 11) = non-secure may use VFP/Advanced SIMD;
    // NS_SMP (bit 18, Cortex-A7) = non-secure PL1/PL2 may write ACTLR.SMP.
    .equ NSACR_VALUE,   (1 << 10) | (1 << 11) | (1 << 18)
    .equ ACTLR_SMP,     1 << 6
    .equ CNTFRQ_PI,     19200000        // the Pi 2's crystal, as its firmware programs it

    .equ KERNEL_ENTRY,  0x8000
    .equ MACHINE_TYPE,  0xc42           // BCM2709 (the Pi 2) in Linux's machine registry
    .equ ATAGS_ADDR,    0x100
    .equ MBOX3_RDCLR,   0x400000cc      // ARM-local mailbox 3 read-clear, core 0; + 0x10 per core
    .equ ARM_MEM_SIZE,  0x3c000000      // 960 MiB: QEMU raspi2b -m 1G keeps 64 MiB for the GPU

    .globl _armstub
_armstub:
    b       reset

    // ATAGs (the Linux ARM boot protocol's tagged list) at 0x100, as the firmware leaves them:
    // each tag is (size in words, tag, data...), the list ends with ATAG_NONE.
    .org    ATAGS_ADDR
atags:
    .word   2, 0x54410001               // ATAG_CORE without data (allowed by the protocol)
    .word   4, 0x54410002, ARM_MEM_SIZE, 0  // ATAG_MEM: size, start
    // ATAG_CMDLINE, as the firmware passes cmdline.txt: `mem=512M` makes this run use 512 MiB.
    .word   (atag_cmdline_end - atag_cmdline) / 4 + 2, 0x54410009
atag_cmdline:
    .asciz  "console=serial0,115200 mem=512M"
    .balign 4
atag_cmdline_end:
    .word   0, 0                        // ATAG_NONE

reset:
    // Every core, Secure SVC, MMU and caches off, nothing masked yet.
    cpsid   aif

    // ACTLR.SMP before any cache is used (Cortex-A7 TRM 4.3.31); only Secure state may write it
    // unless NSACR.NS_SMP is set, which is done next for the kernel's sake.
    mrc     p15, 0, r4, c1, c0, 1
    orr     r4, r4, #ACTLR_SMP
    mcr     p15, 0, r4, c1, c0, 1

    ldr     r4, =NSACR_VALUE
    mcr     p15, 0, r4, c1, c1, 2       // NSACR

    // CNTFRQ is writable only at the highest implemented privilege (Secure PL1 here, ARM ARM
    // B4.1.21); set it if nobody did (QEMU's reset value is its own counter rate, kept).
    mrc     p15, 0, r4, c14, c0, 0
    cmp     r4, #0
    ldreq   r4, =CNTFRQ_PI
    mcreq   p15, 0, r4, c14, c0, 0
    isb

    // To Monitor mode (a CPS to Monitor is permitted from Secure PL1), set SCR, then an
    // exception return to HYP: returning from Monitor to HYP is permitted only with SCR.NS = 1
    // (ARM ARM B1.8.3, B9.3), which makes it non-secure HYP.
    cps     #MODE_MON
    ldr     r4, =SCR_VALUE
    mcr     p15, 0, r4, c1, c1, 0       // SCR
    isb
    mov     r4, #(MODE_HYP | PSR_AIF)
    msr     spsr_cxsf, r4
    adr     lr, in_hyp
    movs    pc, lr

in_hyp:
    // Non-secure HYP, where CNTVOFF, VMPIDR and VPIDR are writable; see the header for why they
    // are left wrong.
    ldr     r4, =0x00badbad
    mov     r5, #0
    mcrr    p15, 4, r4, r5, c14         // CNTVOFF
    mrc     p15, 0, r4, c0, c0, 5       // MPIDR (the real one, in HYP)
    eor     r5, r4, #3
    mcr     p15, 4, r5, c0, c0, 5       // VMPIDR: Aff0 flipped
    mov     r5, #0
    mcr     p15, 4, r5, c0, c0, 0       // VPIDR
    isb

    ands    r4, r4, #3                  // Aff0: the core number
    bne     spin_table

    mov     r0, #0
    ldr     r1, =MACHINE_TYPE
    ldr     r2, =ATAGS_ADDR
    ldr     pc, =KERNEL_ENTRY

spin_table:
    ldr     r5, =MBOX3_RDCLR
    add     r5, r5, r4, lsl #4
1:  wfe
    ldr     r6, [r5]
    cmp     r6, #0
    beq     1b
    str     r6, [r5]                    // write-1-to-clear
    bx      r6

    .ltorg
