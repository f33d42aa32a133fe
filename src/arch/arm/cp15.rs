//! CP15 registers and operations that `aarch32-cpu` does not provide, written in the style of its
//! `SysReg` traits: TTBR1, TTBCR, CONTEXTIDR as an ASID, and the TLB/branch-predictor maintenance
//! operations the VM needs.
//!
//! The crate's `SysRegWrite::write_raw` is `nomem`, so the compiler may move ordinary memory
//! accesses across it. Every operation here that must be ordered against memory (TLB
//! maintenance after a descriptor store) is therefore preceded by a barrier from
//! [`aarch32_cpu::asm`], which is also a compiler fence.

use aarch32_cpu::register::{SysReg, SysRegRead, SysRegWrite};

macro_rules! cp15_reg {
    (@decl $(#[$doc:meta])* $name:ident, $crn:literal, $op1:literal, $crm:literal, $op2:literal) => {
        $(#[$doc])*
        pub struct $name;
        impl SysReg for $name {
            const CP: u32 = 15;
            const CRN: u32 = $crn;
            const OP1: u32 = $op1;
            const CRM: u32 = $crm;
            const OP2: u32 = $op2;
        }
    };
    (@read $name:ident) => {
        impl SysRegRead for $name {}
        impl $name {
            /// Reads the register.
            #[inline]
            pub fn read() -> u32 {
                <Self as SysRegRead>::read_raw()
            }
        }
    };
    (@write $name:ident) => {
        impl SysRegWrite for $name {}
        impl $name {
            /// Writes the register (or performs the operation with this operand).
            ///
            /// # Safety
            /// The value must be valid for the register as the ARM ARM defines it, and the caller
            /// provides the barriers the operation needs.
            #[inline]
            pub unsafe fn write(value: u32) {
                // SAFETY: forwarded to the caller.
                unsafe { <Self as SysRegWrite>::write_raw(value) }
            }
        }
    };
    ($(#[$doc:meta])* $name:ident, $crn:literal, $op1:literal, $crm:literal, $op2:literal, r) => {
        cp15_reg!(@decl $(#[$doc])* $name, $crn, $op1, $crm, $op2);
        cp15_reg!(@read $name);
    };
    ($(#[$doc:meta])* $name:ident, $crn:literal, $op1:literal, $crm:literal, $op2:literal, w) => {
        cp15_reg!(@decl $(#[$doc])* $name, $crn, $op1, $crm, $op2);
        cp15_reg!(@write $name);
    };
    ($(#[$doc:meta])* $name:ident, $crn:literal, $op1:literal, $crm:literal, $op2:literal, rw) => {
        cp15_reg!(@decl $(#[$doc])* $name, $crn, $op1, $crm, $op2);
        cp15_reg!(@read $name);
        cp15_reg!(@write $name);
    };
}

cp15_reg!(
    /// TTBR0: translation table base for VA below 2 GiB (TTBCR.N = 1). Holds a physical address.
    Ttbr0, 2, 0, 0, 0, rw
);
cp15_reg!(
    /// TTBR1: translation table base for VA from 2 GiB. Holds a physical address.
    Ttbr1, 2, 0, 0, 1, rw
);
cp15_reg!(
    /// TTBCR: N (split), PD0/PD1 (disable walks through TTBR0/TTBR1).
    Ttbcr, 2, 0, 0, 2, rw
);
cp15_reg!(
    /// DACR: two bits of access control per domain (0 no access, 1 client, 3 manager).
    Dacr, 3, 0, 0, 0, rw
);
cp15_reg!(
    /// CONTEXTIDR: PROCID and the current ASID (bits 7:0).
    Contextidr, 13, 0, 0, 1, rw
);
cp15_reg!(
    /// TLBIALL: invalidate the entire local unified TLB.
    TlbiAll, 8, 0, 7, 0, w
);
cp15_reg!(
    /// TLBIALLIS: invalidate the entire unified TLB, Inner Shareable.
    TlbiAllIs, 8, 0, 3, 0, w
);
cp15_reg!(
    /// TLBIMVAIS: invalidate by MVA and ASID (operand = VA\[31:12\] | ASID), Inner Shareable.
    TlbiMvaIs, 8, 0, 3, 1, w
);
cp15_reg!(
    /// TLBIASIDIS: invalidate all non-global entries of an ASID, Inner Shareable.
    TlbiAsidIs, 8, 0, 3, 2, w
);
cp15_reg!(
    /// TLBIMVAAIS: invalidate by MVA for all ASIDs (global entries too), Inner Shareable.
    TlbiMvaaIs, 8, 0, 3, 3, w
);
cp15_reg!(
    /// BPIALLIS: invalidate all branch predictors, Inner Shareable.
    BpiAllIs, 7, 0, 1, 6, w
);
cp15_reg!(
    /// ICIALLUIS: invalidate all instruction caches to PoU, Inner Shareable.
    IciAlluIs, 7, 0, 1, 0, w
);
cp15_reg!(
    /// DCCMVAU: clean data cache line by VA to the Point of Unification.
    DcCmvau, 7, 0, 11, 1, w
);
cp15_reg!(
    /// ATS1CPR: stage 1 translation of a VA for a privileged read; the result lands in PAR.
    Ats1Cpr, 7, 0, 8, 0, w
);
cp15_reg!(
    /// PAR: the result of an ATS* address translation.
    Par, 7, 0, 4, 0, rw
);
cp15_reg!(
    /// VBAR: low-vector base address (when SCTLR.V = 0).
    Vbar, 12, 0, 0, 0, rw
);
cp15_reg!(
    /// ID_MMFR3: bits 23:20 (CohWalk) say whether table walks are coherent with the D-cache.
    IdMmfr3, 0, 0, 1, 7, r
);
cp15_reg!(
    /// CTR: cache type (minimum D-cache and I-cache line sizes).
    Ctr, 0, 0, 0, 1, r
);
cp15_reg!(
    /// PMCR: performance monitors control (E enables, C resets the cycle counter, D divides by 64).
    Pmcr, 9, 0, 12, 0, rw
);
cp15_reg!(
    /// PMCNTENSET: counter enable set (bit 31: the cycle counter).
    Pmcntenset, 9, 0, 12, 1, rw
);
cp15_reg!(
    /// PMCCNTR: the cycle counter (instructions under `qemu -icount shift=0`).
    Pmccntr, 9, 0, 13, 0, rw
);
