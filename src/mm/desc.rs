//! ARMv7 short-descriptor translation table entries (ARM ARM B3.5.1), as typed values.
//!
//! With the short-descriptor format the MMU walks at most two levels:
//!
//! ```text
//!  VA[31:20] -> L1 table (4096 x 32-bit words, 16 KiB; for TTBR0 with TTBCR.N = 1 only 2048)
//!               bits[1:0] = 00 fault, 01 page table (-> L2), 1x section (1 MiB, bit 18 = 0)
//!  VA[19:12] -> L2 table (256 x 32-bit words, 1 KiB)
//!               bits[1:0] = 00 fault, 01 large page (64 KiB, unused here), 1x small page (4 KiB)
//! ```
//!
//! Each layout is declared once with `register_bitfields!`, and the values that the address-space
//! code writes are built from a [`MapFlags`] so that no shift or mask is repeated elsewhere.
//!
//! The kernel runs with TEX remap off (SCTLR.TRE = 0) and the access flag off (SCTLR.AFE = 0), so:
//!
//! * the memory type comes straight from TEX[2:0], C and B (ARM ARM B3.8.2, table B3-10), and
//! * the permissions from AP[2:0] (B3.7.1, table B3-8): `001` privileged RW, `011` privileged and
//!   user RW, `101` privileged read-only, `111` privileged and user read-only. The encoding `010`
//!   (user read-only but kernel writable) and anything giving user write without kernel write are
//!   never produced.
//!
//! Kernel entries use domain [`KERNEL_DOMAIN`] and user entries (non-global sections, and the
//! L1 entries of user page tables) domain [`USER_DOMAIN`]. The kernel keeps the kernel domain a
//! *client* (AP bits checked) in DACR and the user domain *no access* except while it copies
//! user memory on purpose, so that any other kernel access to user memory faults (a software
//! PAN, as Linux does on ARMv7; see `arch::arm::mmu`).
//!
//! PXN (privileged execute-never) exists only in L1 entries: bit 0 of a section and bit 2 of a
//! page-table entry, which then covers all 256 pages of its L2 table. A small page therefore
//! inherits PXN from the L1 entry that points at its table (see [`SmallPageDesc::flags`]).

use super::addr::PhysAddr;
use tock_registers::{register_bitfields, LocalRegisterCopy};

/// The domain of every kernel entry.
pub const KERNEL_DOMAIN: u32 = 0;
/// The domain of every user entry.
pub const USER_DOMAIN: u32 = 1;

register_bitfields![u32,
    /// L1 section descriptor: maps 1 MiB (ARM ARM B3.5.1, figure B3-4).
    pub L1_SECTION [
        /// Privileged execute-never (only with the PXN extension, which the Cortex-A7 has).
        PXN OFFSET(0) NUMBITS(1) [],
        /// Must be 1 for a section (bits[1:0] = 0b1x).
        TYPE OFFSET(1) NUMBITS(1) [],
        /// Bufferable: memory type bit B.
        B OFFSET(2) NUMBITS(1) [],
        /// Cacheable: memory type bit C.
        C OFFSET(3) NUMBITS(1) [],
        /// Execute-never.
        XN OFFSET(4) NUMBITS(1) [],
        /// Domain (DACR index).
        DOMAIN OFFSET(5) NUMBITS(4) [],
        /// Access permissions AP[1:0].
        AP OFFSET(10) NUMBITS(2) [],
        /// Memory type extension TEX[2:0].
        TEX OFFSET(12) NUMBITS(3) [],
        /// Access permission AP[2]: read-only when set.
        AP2 OFFSET(15) NUMBITS(1) [],
        /// Shareable (Normal memory only).
        S OFFSET(16) NUMBITS(1) [],
        /// Not global: the TLB entry is tagged with the current ASID.
        NG OFFSET(17) NUMBITS(1) [],
        /// 0 for a section, 1 for a 16 MiB supersection.
        SUPERSECTION OFFSET(18) NUMBITS(1) [],
        /// Non-secure (ignored by a non-secure walk).
        NS OFFSET(19) NUMBITS(1) [],
        /// Section base address PA[31:20].
        BASE OFFSET(20) NUMBITS(12) []
    ],
    /// L1 page-table descriptor: points at a 1 KiB L2 table (ARM ARM B3.5.1, figure B3-4).
    pub L1_TABLE [
        /// Must be 0b01 for a page-table entry.
        TYPE OFFSET(0) NUMBITS(2) [],
        /// Privileged execute-never for every page of the L2 table.
        PXN OFFSET(2) NUMBITS(1) [],
        /// Non-secure (ignored by a non-secure walk).
        NS OFFSET(3) NUMBITS(1) [],
        /// Domain (DACR index).
        DOMAIN OFFSET(5) NUMBITS(4) [],
        /// L2 table base address PA[31:10].
        BASE OFFSET(10) NUMBITS(22) []
    ],
    /// L2 small-page descriptor: maps 4 KiB (ARM ARM B3.5.1, figure B3-5).
    pub L2_SMALL [
        /// Execute-never.
        XN OFFSET(0) NUMBITS(1) [],
        /// Must be 1 for a small page (bits[1:0] = 0b1x).
        TYPE OFFSET(1) NUMBITS(1) [],
        /// Bufferable: memory type bit B.
        B OFFSET(2) NUMBITS(1) [],
        /// Cacheable: memory type bit C.
        C OFFSET(3) NUMBITS(1) [],
        /// Access permissions AP[1:0].
        AP OFFSET(4) NUMBITS(2) [],
        /// Memory type extension TEX[2:0].
        TEX OFFSET(6) NUMBITS(3) [],
        /// Access permission AP[2]: read-only when set.
        AP2 OFFSET(9) NUMBITS(1) [],
        /// Shareable (Normal memory only).
        S OFFSET(10) NUMBITS(1) [],
        /// Not global: the TLB entry is tagged with the current ASID.
        NG OFFSET(11) NUMBITS(1) [],
        /// Page base address PA[31:12].
        BASE OFFSET(12) NUMBITS(20) []
    ]
];

/// Who may access a mapping and how (AP[2:0] with SCTLR.AFE = 0, ARM ARM B3.7.1).
///
/// User access always implies the same kernel access: the model cannot express a page the user
/// may write but the kernel may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Privileged read-only (AP\[2:0\] = 0b101).
    KernelRead,
    /// Privileged read/write (AP\[2:0\] = 0b001).
    KernelReadWrite,
    /// Privileged and user read-only (AP\[2:0\] = 0b111).
    UserRead,
    /// Privileged and user read/write (AP\[2:0\] = 0b011).
    UserReadWrite,
}

impl Access {
    /// Whether user mode (PL0) may access the mapping.
    pub const fn is_user(self) -> bool {
        matches!(self, Self::UserRead | Self::UserReadWrite)
    }

    /// Whether the mapping may be written.
    pub const fn is_writable(self) -> bool {
        matches!(self, Self::KernelReadWrite | Self::UserReadWrite)
    }

    /// (AP\[2\], AP\[1:0\]).
    const fn encode(self) -> (u32, u32) {
        match self {
            Self::KernelReadWrite => (0, 0b01),
            Self::UserReadWrite => (0, 0b11),
            Self::KernelRead => (1, 0b01),
            Self::UserRead => (1, 0b11),
        }
    }

    const fn decode(ap2: u32, ap: u32) -> Option<Self> {
        match (ap2, ap) {
            (0, 0b01) => Some(Self::KernelReadWrite),
            (0, 0b11) => Some(Self::UserReadWrite),
            (1, 0b01) => Some(Self::KernelRead),
            (1, 0b11) => Some(Self::UserRead),
            _ => None,
        }
    }
}

/// Memory type and cacheability (TEX remap off, ARM ARM B3.8.2, table B3-10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemoryType {
    /// Normal, inner and outer write-back write-allocate, shareable (TEX=001 C=1 B=1 S=1): RAM.
    NormalWriteBack,
    /// Normal, inner and outer non-cacheable, shareable (TEX=001 C=0 B=0 S=1): DMA buffers.
    NormalNonCacheable,
    /// Shareable Device (TEX=000 C=0 B=1): peripheral registers.
    Device,
    /// Strongly-ordered (TEX=000 C=0 B=0): registers that need every access to complete in order.
    StronglyOrdered,
}

impl MemoryType {
    /// (TEX, C, B, S).
    const fn encode(self) -> (u32, u32, u32, u32) {
        match self {
            Self::NormalWriteBack => (0b001, 1, 1, 1),
            Self::NormalNonCacheable => (0b001, 0, 0, 1),
            Self::Device => (0b000, 0, 1, 0),
            Self::StronglyOrdered => (0b000, 0, 0, 0),
        }
    }

    /// The inverse of `encode`; Normal memory must be shareable (the kernel is SMP), S is ignored
    /// for Device and Strongly-ordered as the architecture does.
    const fn decode(tex: u32, c: u32, b: u32, s: u32) -> Option<Self> {
        match (tex, c, b, s) {
            (0b001, 1, 1, 1) => Some(Self::NormalWriteBack),
            (0b001, 0, 0, 1) => Some(Self::NormalNonCacheable),
            (0b000, 0, 1, _) => Some(Self::Device),
            (0b000, 0, 0, _) => Some(Self::StronglyOrdered),
            _ => None,
        }
    }

    /// Whether this is Device or Strongly-ordered memory, which must never be executable
    /// (ARM ARM B3.7.2: speculative instruction fetches could touch the registers).
    pub const fn is_device(self) -> bool {
        matches!(self, Self::Device | Self::StronglyOrdered)
    }
}

/// The attributes of one mapping, independent of its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapFlags {
    /// Permissions.
    pub access: Access,
    /// Executable (XN clear) or execute-never.
    pub executable: bool,
    /// Privileged execute-never. Only L1 entries have it: a small page takes it from its L1
    /// page-table entry, so an address space sets it per half (user half: PXN, kernel: not).
    pub pxn: bool,
    /// Memory type.
    pub memory: MemoryType,
    /// Global (kernel) or non-global (tagged with the ASID, user).
    pub global: bool,
}

impl MapFlags {
    /// Kernel data: RW, execute-never, Normal write-back, global.
    pub const KERNEL_DATA: Self = Self {
        access: Access::KernelReadWrite,
        executable: false,
        pxn: false,
        memory: MemoryType::NormalWriteBack,
        global: true,
    };
    /// Kernel text: read-only, executable.
    pub const KERNEL_TEXT: Self = Self {
        access: Access::KernelRead,
        executable: true,
        ..Self::KERNEL_DATA
    };
    /// Kernel read-only data: read-only, execute-never.
    pub const KERNEL_RODATA: Self = Self {
        access: Access::KernelRead,
        ..Self::KERNEL_DATA
    };
    /// Kernel device registers: RW, execute-never, shareable Device.
    pub const KERNEL_DEVICE: Self = Self {
        memory: MemoryType::Device,
        ..Self::KERNEL_DATA
    };
    /// Kernel DMA buffer: RW, execute-never, Normal non-cacheable.
    pub const KERNEL_DMA: Self = Self {
        memory: MemoryType::NormalNonCacheable,
        ..Self::KERNEL_DATA
    };
    /// User data: user RW, execute-never, PXN, Normal write-back, non-global.
    pub const USER_DATA: Self = Self {
        access: Access::UserReadWrite,
        executable: false,
        pxn: true,
        memory: MemoryType::NormalWriteBack,
        global: false,
    };
    /// User text: user read-only, executable at PL0 only.
    pub const USER_TEXT: Self = Self {
        access: Access::UserRead,
        executable: true,
        ..Self::USER_DATA
    };
    /// User read-only data.
    pub const USER_RODATA: Self = Self {
        access: Access::UserRead,
        ..Self::USER_DATA
    };

    /// The same attributes with another access.
    pub const fn with_access(self, access: Access) -> Self {
        Self { access, ..self }
    }

    /// The same attributes with another memory type.
    pub const fn with_memory(self, memory: MemoryType) -> Self {
        Self { memory, ..self }
    }

    /// The same attributes, executable or not.
    pub const fn with_executable(self, executable: bool) -> Self {
        Self { executable, ..self }
    }

    /// Whether the attributes obey the kernel's rules: writable and executable never together
    /// (W^X), and Device/Strongly-ordered memory never executable.
    pub const fn is_sane(self) -> bool {
        !(self.executable && (self.access.is_writable() || self.memory.is_device()))
    }
}

/// The size of one mapping: what a single descriptor covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapSize {
    /// 4 KiB small page (L2).
    Page,
    /// 1 MiB section (L1).
    Section,
}

impl MapSize {
    /// Bytes covered.
    pub const fn bytes(self) -> u32 {
        match self {
            Self::Page => super::addr::PAGE_SIZE,
            Self::Section => super::addr::SECTION_SIZE,
        }
    }
}

/// Where a virtual address leads: the result of a table walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The physical address of the byte (base of the mapping plus the offset inside it).
    pub pa: PhysAddr,
    /// Size of the mapping that translated it.
    pub size: MapSize,
    /// Its attributes, `None` when they are outside [`MapFlags`]'s model.
    pub flags: Option<MapFlags>,
}

/// An L1 section descriptor.
#[derive(Clone, Copy)]
pub struct SectionDesc(LocalRegisterCopy<u32, L1_SECTION::Register>);

impl SectionDesc {
    /// A section mapping the 1 MiB at `base` (its low 20 bits are ignored) with `flags`; in
    /// the user domain when not global (a user mapping), in the kernel domain otherwise.
    pub fn new(base: PhysAddr, flags: MapFlags) -> Self {
        let (ap2, ap) = flags.access.encode();
        let (tex, c, b, s) = flags.memory.encode();
        let mut d = LocalRegisterCopy::new(0);
        d.write(
            L1_SECTION::BASE.val(base.as_u32() >> 20)
                + L1_SECTION::TYPE::SET
                + L1_SECTION::PXN.val(flags.pxn as u32)
                + L1_SECTION::XN.val(!flags.executable as u32)
                + L1_SECTION::AP2.val(ap2)
                + L1_SECTION::AP.val(ap)
                + L1_SECTION::TEX.val(tex)
                + L1_SECTION::C.val(c)
                + L1_SECTION::B.val(b)
                + L1_SECTION::S.val(s)
                + L1_SECTION::NG.val(!flags.global as u32)
                + L1_SECTION::DOMAIN.val(if flags.global {
                    KERNEL_DOMAIN
                } else {
                    USER_DOMAIN
                }),
        );
        Self(d)
    }

    /// The domain (DACR index) of the section.
    pub fn domain(self) -> u32 {
        self.0.read(L1_SECTION::DOMAIN)
    }

    /// The raw descriptor word.
    pub fn raw(self) -> u32 {
        self.0.get()
    }

    /// Base physical address of the 1 MiB.
    pub fn base(self) -> PhysAddr {
        PhysAddr::new(self.0.read(L1_SECTION::BASE) << 20)
    }

    /// The attributes, or `None` when they are outside [`MapFlags`]'s model.
    pub fn flags(self) -> Option<MapFlags> {
        let r = &self.0;
        Some(MapFlags {
            access: Access::decode(r.read(L1_SECTION::AP2), r.read(L1_SECTION::AP))?,
            executable: !r.is_set(L1_SECTION::XN),
            pxn: r.is_set(L1_SECTION::PXN),
            memory: MemoryType::decode(
                r.read(L1_SECTION::TEX),
                r.read(L1_SECTION::C),
                r.read(L1_SECTION::B),
                r.read(L1_SECTION::S),
            )?,
            global: !r.is_set(L1_SECTION::NG),
        })
    }

    /// Bits that change the output of the translation other than permissions: base, memory type
    /// and shareability. Changing these in a live entry needs break-before-make (ARM ARM B3.10.1).
    pub fn output_bits(self) -> u32 {
        let m = L1_SECTION::BASE.mask << L1_SECTION::BASE.shift
            | L1_SECTION::TEX.mask << L1_SECTION::TEX.shift
            | L1_SECTION::C.mask << L1_SECTION::C.shift
            | L1_SECTION::B.mask << L1_SECTION::B.shift
            | L1_SECTION::S.mask << L1_SECTION::S.shift;
        self.raw() & m
    }
}

/// An L1 page-table descriptor.
#[derive(Clone, Copy)]
pub struct TableDesc(LocalRegisterCopy<u32, L1_TABLE::Register>);

impl TableDesc {
    /// An entry pointing at the 1 KiB L2 table at `l2` (1 KiB aligned). A `user` table is
    /// privileged execute-never (PXN) and in the user domain; a kernel one in the kernel domain.
    pub fn new(l2: PhysAddr, user: bool) -> Self {
        debug_assert!(l2.is_aligned(1024));
        let mut d = LocalRegisterCopy::new(0);
        d.write(
            L1_TABLE::BASE.val(l2.as_u32() >> 10)
                + L1_TABLE::TYPE.val(0b01)
                + L1_TABLE::PXN.val(user as u32)
                + L1_TABLE::DOMAIN.val(if user { USER_DOMAIN } else { KERNEL_DOMAIN }),
        );
        Self(d)
    }

    /// The domain (DACR index) of every page of the table.
    pub fn domain(self) -> u32 {
        self.0.read(L1_TABLE::DOMAIN)
    }

    /// The raw descriptor word.
    pub fn raw(self) -> u32 {
        self.0.get()
    }

    /// Physical address of the L2 table.
    pub fn base(self) -> PhysAddr {
        PhysAddr::new(self.0.read(L1_TABLE::BASE) << 10)
    }

    /// Whether every page of the L2 table is privileged execute-never.
    pub fn pxn(self) -> bool {
        self.0.is_set(L1_TABLE::PXN)
    }
}

/// An L2 small-page descriptor.
#[derive(Clone, Copy)]
pub struct SmallPageDesc(LocalRegisterCopy<u32, L2_SMALL::Register>);

impl SmallPageDesc {
    /// A small page mapping the 4 KiB at `base` (its low 12 bits are ignored) with `flags`.
    /// `flags.pxn` is not encoded: it belongs to the L1 page-table entry.
    pub fn new(base: PhysAddr, flags: MapFlags) -> Self {
        let (ap2, ap) = flags.access.encode();
        let (tex, c, b, s) = flags.memory.encode();
        let mut d = LocalRegisterCopy::new(0);
        d.write(
            L2_SMALL::BASE.val(base.as_u32() >> 12)
                + L2_SMALL::TYPE::SET
                + L2_SMALL::XN.val(!flags.executable as u32)
                + L2_SMALL::AP2.val(ap2)
                + L2_SMALL::AP.val(ap)
                + L2_SMALL::TEX.val(tex)
                + L2_SMALL::C.val(c)
                + L2_SMALL::B.val(b)
                + L2_SMALL::S.val(s)
                + L2_SMALL::NG.val(!flags.global as u32),
        );
        Self(d)
    }

    /// The raw descriptor word.
    pub fn raw(self) -> u32 {
        self.0.get()
    }

    /// Base physical address of the 4 KiB.
    pub fn base(self) -> PhysAddr {
        PhysAddr::new(self.0.read(L2_SMALL::BASE) << 12)
    }

    /// The attributes, with PXN taken from the L1 entry of the table (`table_pxn`), or `None`
    /// when they are outside [`MapFlags`]'s model.
    pub fn flags(self, table_pxn: bool) -> Option<MapFlags> {
        let r = &self.0;
        Some(MapFlags {
            access: Access::decode(r.read(L2_SMALL::AP2), r.read(L2_SMALL::AP))?,
            executable: !r.is_set(L2_SMALL::XN),
            pxn: table_pxn,
            memory: MemoryType::decode(
                r.read(L2_SMALL::TEX),
                r.read(L2_SMALL::C),
                r.read(L2_SMALL::B),
                r.read(L2_SMALL::S),
            )?,
            global: !r.is_set(L2_SMALL::NG),
        })
    }

    /// Base, memory type and shareability bits: see [`SectionDesc::output_bits`].
    pub fn output_bits(self) -> u32 {
        let m = L2_SMALL::BASE.mask << L2_SMALL::BASE.shift
            | L2_SMALL::TEX.mask << L2_SMALL::TEX.shift
            | L2_SMALL::C.mask << L2_SMALL::C.shift
            | L2_SMALL::B.mask << L2_SMALL::B.shift
            | L2_SMALL::S.mask << L2_SMALL::S.shift;
        self.raw() & m
    }
}

/// What an L1 word describes.
#[derive(Clone, Copy)]
pub enum L1Entry {
    /// Translation fault (bits\[1:0\] = 00).
    Fault,
    /// Page-table entry (bits\[1:0\] = 01).
    Table(TableDesc),
    /// 1 MiB section (bits\[1:0\] = 1x, bit 18 = 0).
    Section(SectionDesc),
    /// 16 MiB supersection: valid for the hardware but never produced or handled here.
    Supersection(u32),
}

impl L1Entry {
    /// Classifies a raw L1 word.
    #[inline]
    pub fn decode(raw: u32) -> Self {
        if raw & 0b10 != 0 {
            if raw & (1 << 18) == 0 {
                Self::Section(SectionDesc(LocalRegisterCopy::new(raw)))
            } else {
                Self::Supersection(raw)
            }
        } else if raw & 0b11 == 0b01 {
            Self::Table(TableDesc(LocalRegisterCopy::new(raw)))
        } else {
            Self::Fault
        }
    }
}

/// What an L2 word describes.
#[derive(Clone, Copy)]
pub enum L2Entry {
    /// Translation fault (bits\[1:0\] = 00).
    Fault,
    /// 64 KiB large page (bits\[1:0\] = 01): never produced or handled here.
    LargePage(u32),
    /// 4 KiB small page (bits\[1:0\] = 1x).
    SmallPage(SmallPageDesc),
}

impl L2Entry {
    /// Classifies a raw L2 word.
    #[inline]
    pub fn decode(raw: u32) -> Self {
        match raw & 0b11 {
            0b00 => Self::Fault,
            0b01 => Self::LargePage(raw),
            _ => Self::SmallPage(SmallPageDesc(LocalRegisterCopy::new(raw))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PA: PhysAddr = PhysAddr::new(0x1230_0000);

    #[test]
    fn kernel_rw_normal_write_back_section_is_pa_or_0x1140e() {
        // TEX=001 (bit 12), C (bit 3), B (bit 2), AP=01 (bit 10), S (bit 16), section (bit 1).
        assert_eq!(
            SectionDesc::new(PA, MapFlags::KERNEL_DATA.with_executable(true)).raw(),
            0x1230_0000 | 0x1_140E
        );
        // XN is bit 4.
        assert_eq!(
            SectionDesc::new(PA, MapFlags::KERNEL_DATA).raw(),
            0x1230_0000 | 0x1_141E
        );
    }

    #[test]
    fn kernel_rw_device_xn_section_is_pa_or_0x416() {
        // Shareable Device is TEX=000 C=0 B=1; S is left clear; XN (bit 4), AP=01 (bit 10).
        let d = SectionDesc::new(PhysAddr::new(0x3F20_0000), MapFlags::KERNEL_DEVICE);
        assert_eq!(d.raw(), 0x3F20_0000 | 0x416);
    }

    #[test]
    fn section_permissions_follow_ap2_ap() {
        let bits = |f: MapFlags| SectionDesc::new(PA, f).raw() & (1 << 15 | 0b11 << 10);
        assert_eq!(bits(MapFlags::KERNEL_DATA), 0b01 << 10);
        assert_eq!(bits(MapFlags::KERNEL_RODATA), 1 << 15 | 0b01 << 10);
        assert_eq!(bits(MapFlags::USER_DATA), 0b11 << 10);
        assert_eq!(bits(MapFlags::USER_RODATA), 1 << 15 | 0b11 << 10);
    }

    #[test]
    fn user_section_is_not_global_and_pxn() {
        let raw = SectionDesc::new(PA, MapFlags::USER_TEXT).raw();
        assert_eq!(raw & 1, 1, "PXN is bit 0");
        assert_eq!(raw & (1 << 17), 1 << 17, "nG is bit 17");
        assert_eq!(raw & (1 << 4), 0, "executable at PL0");
        assert_eq!((raw >> 5) & 0xf, USER_DOMAIN, "domain is bits 8:5");
        assert_eq!(raw, 0x1230_0000 | 0x3_9C0F | USER_DOMAIN << 5);
        let kernel = SectionDesc::new(PA, MapFlags::KERNEL_DATA);
        assert_eq!(kernel.domain(), KERNEL_DOMAIN);
    }

    #[test]
    fn section_memory_types_encode_tex_c_b_s() {
        let bits = |m: MemoryType| {
            SectionDesc::new(PA, MapFlags::KERNEL_DATA.with_memory(m)).raw()
                & (0b111 << 12 | 1 << 3 | 1 << 2 | 1 << 16)
        };
        assert_eq!(bits(MemoryType::NormalWriteBack), 0x1_100C);
        assert_eq!(bits(MemoryType::NormalNonCacheable), 0x1_1000);
        assert_eq!(bits(MemoryType::Device), 0x4);
        assert_eq!(bits(MemoryType::StronglyOrdered), 0);
    }

    #[test]
    fn small_page_bits_match_the_l2_layout() {
        let pa = PhysAddr::new(0x0012_3000);
        // Kernel data: XN bit 0, type bit 1, B bit 2, C bit 3, AP=01 bits 5:4, TEX=001 bits 8:6,
        // AP2 bit 9 clear, S bit 10, nG bit 11 clear.
        let d = SmallPageDesc::new(pa, MapFlags::KERNEL_DATA).raw();
        assert_eq!(
            d,
            0x0012_3000 | 1 | 1 << 1 | 1 << 2 | 1 << 3 | 0b01 << 4 | 0b001 << 6 | 1 << 10
        );
        assert_eq!(d, 0x0012_345F);
        // User text: executable, AP2=1 AP=11, nG.
        let d = SmallPageDesc::new(pa, MapFlags::USER_TEXT).raw();
        assert_eq!(
            d,
            0x0012_3000 | 1 << 1 | 0b1100 | 0b11 << 4 | 0b001 << 6 | 1 << 9 | 1 << 10 | 1 << 11
        );
        // Device: TEX=000 C=0 B=1, no S.
        let d = SmallPageDesc::new(pa, MapFlags::KERNEL_DEVICE).raw();
        assert_eq!(d, 0x0012_3000 | 1 | 1 << 1 | 1 << 2 | 0b01 << 4);
        // Strongly-ordered: TEX=000 C=0 B=0; kernel read-only: AP2=1 AP=01.
        let d = SmallPageDesc::new(
            pa,
            MapFlags::KERNEL_RODATA.with_memory(MemoryType::StronglyOrdered),
        )
        .raw();
        assert_eq!(d, 0x0012_3000 | 1 | 1 << 1 | 0b01 << 4 | 1 << 9);
        // Non-cacheable Normal: TEX=001 C=0 B=0 S=1, user RW.
        let d = SmallPageDesc::new(
            pa,
            MapFlags::USER_DATA.with_memory(MemoryType::NormalNonCacheable),
        )
        .raw();
        assert_eq!(
            d,
            0x0012_3000 | 1 | 1 << 1 | 0b11 << 4 | 0b001 << 6 | 1 << 10 | 1 << 11
        );
    }

    #[test]
    fn table_descriptor_holds_base_pxn_and_type_01() {
        let t = TableDesc::new(PhysAddr::new(0x0040_0C00), true);
        assert_eq!(t.raw(), 0x0040_0C00 | USER_DOMAIN << 5 | 1 << 2 | 0b01);
        assert_eq!(t.base(), PhysAddr::new(0x0040_0C00));
        assert!(t.pxn());
        assert_eq!(t.domain(), USER_DOMAIN);
        let k = TableDesc::new(PhysAddr::new(0x400), false);
        assert_eq!(k.raw(), 0x401);
        assert_eq!(k.domain(), KERNEL_DOMAIN);
    }

    fn all_flags() -> impl Iterator<Item = MapFlags> {
        let accesses = [
            Access::KernelRead,
            Access::KernelReadWrite,
            Access::UserRead,
            Access::UserReadWrite,
        ];
        let mems = [
            MemoryType::NormalWriteBack,
            MemoryType::NormalNonCacheable,
            MemoryType::Device,
            MemoryType::StronglyOrdered,
        ];
        accesses.into_iter().flat_map(move |access| {
            mems.into_iter().flat_map(move |memory| {
                (0..8).map(move |bits| MapFlags {
                    access,
                    memory,
                    executable: bits & 1 != 0,
                    pxn: bits & 2 != 0,
                    global: bits & 4 != 0,
                })
            })
        })
    }

    #[test]
    fn every_modelled_attribute_round_trips_through_both_descriptors() {
        for f in all_flags() {
            let s = SectionDesc::new(PA, f);
            assert_eq!(s.flags(), Some(f));
            assert_eq!(s.base(), PA);
            assert!(matches!(L1Entry::decode(s.raw()), L1Entry::Section(_)));
            let p = SmallPageDesc::new(PhysAddr::new(0xFFFF_F000), f);
            assert_eq!(p.flags(f.pxn), Some(f));
            assert_eq!(p.base(), PhysAddr::new(0xFFFF_F000));
            assert!(matches!(L2Entry::decode(p.raw()), L2Entry::SmallPage(_)));
        }
    }

    #[test]
    fn user_writable_kernel_read_only_and_no_access_are_not_decoded() {
        let base = SectionDesc::new(PA, MapFlags::KERNEL_DATA).raw() & !(1 << 15 | 0b11 << 10);
        for ap in [0b000u32, 0b010, 0b100, 0b110] {
            let raw = base | (ap >> 2) << 15 | (ap & 3) << 10;
            assert!(matches!(L1Entry::decode(raw), L1Entry::Section(s) if s.flags().is_none()));
        }
    }

    #[test]
    fn fault_table_and_supersection_are_told_apart() {
        assert!(matches!(L1Entry::decode(0), L1Entry::Fault));
        assert!(matches!(L1Entry::decode(0x1234_5000), L1Entry::Fault));
        assert!(matches!(L1Entry::decode(0x401), L1Entry::Table(_)));
        assert!(matches!(
            L1Entry::decode(0x4_0002),
            L1Entry::Supersection(_)
        ));
        assert!(matches!(L2Entry::decode(0x1001), L2Entry::LargePage(_)));
        assert!(matches!(L2Entry::decode(0x1003), L2Entry::SmallPage(_)));
        assert!(matches!(L2Entry::decode(0), L2Entry::Fault));
    }

    #[test]
    fn output_bits_ignore_permissions_but_not_memory_type() {
        let a = SmallPageDesc::new(PA, MapFlags::KERNEL_DATA);
        let b = SmallPageDesc::new(PA, MapFlags::USER_RODATA);
        let c = SmallPageDesc::new(PA, MapFlags::KERNEL_DMA);
        assert_eq!(a.output_bits(), b.output_bits());
        assert_ne!(a.output_bits(), c.output_bits());
        let s = SectionDesc::new(PA, MapFlags::KERNEL_DATA);
        let t = SectionDesc::new(PA, MapFlags::USER_TEXT);
        assert_eq!(s.output_bits(), t.output_bits());
    }

    #[test]
    fn w_x_and_executable_device_memory_are_not_sane() {
        assert!(MapFlags::KERNEL_TEXT.is_sane());
        assert!(!MapFlags::KERNEL_DATA.with_executable(true).is_sane());
        assert!(!MapFlags::KERNEL_RODATA
            .with_memory(MemoryType::Device)
            .with_executable(true)
            .is_sane());
    }
}
