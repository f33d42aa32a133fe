//! Decoding of the short-descriptor fault status registers DFSR and IFSR (ARM ARM B3.13.3,
//! table B3-23), so that a fault report says what went wrong and where in words.

use core::fmt;

/// What kind of fault the FS field reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Alignment,
    DebugEvent,
    /// No valid descriptor for the address.
    Translation,
    AccessFlag,
    Domain,
    /// The descriptor forbids the access (write to read-only, user to privileged, execute XN).
    Permission,
    /// External abort on the translation table walk.
    WalkExternalAbort,
    WalkParity,
    SyncExternalAbort,
    AsyncExternalAbort,
    SyncParity,
    AsyncParity,
    CacheMaintenance,
    TlbConflict,
    Lockdown,
    CoprocessorAbort,
    Unknown(u8),
}

/// Translation level the fault was found at, where the FS code tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultLevel {
    /// First level: a section, or the L1 entry of a page table.
    Section,
    /// Second level: a small or large page.
    Page,
}

/// A decoded DFSR or IFSR value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultStatus {
    pub raw: u32,
    pub kind: FaultKind,
    pub level: Option<FaultLevel>,
    /// DFSR.WnR: the access was a write (always false for IFSR).
    pub write: bool,
    /// Decoded from IFSR: the access was an instruction fetch.
    pub fetch: bool,
    /// DFSR.ExT: external abort type, implementation defined.
    pub external: bool,
    /// Domain field (bits 7:4); valid for translation-related faults on ARMv7 only in some cases.
    pub domain: u8,
}

impl FaultStatus {
    /// Decodes a DFSR value.
    pub const fn from_dfsr(raw: u32) -> Self {
        Self::decode(raw, raw & (1 << 11) != 0, false)
    }

    /// Decodes an IFSR value (an instruction fetch, which never writes).
    pub const fn from_ifsr(raw: u32) -> Self {
        Self::decode(raw, false, true)
    }

    /// An asynchronous abort (ARM ARM B3.13.3): reported some time after the access that
    /// caused it, so the faulting address (DFAR), WnR and the PC do not describe that access.
    pub const fn is_async(&self) -> bool {
        matches!(
            self.kind,
            FaultKind::AsyncExternalAbort | FaultKind::AsyncParity
        )
    }

    /// An error reported by the memory system (external abort or parity error), not by the
    /// MMU: the access was allowed, the memory behind it failed.
    pub const fn is_external(&self) -> bool {
        matches!(
            self.kind,
            FaultKind::SyncExternalAbort
                | FaultKind::AsyncExternalAbort
                | FaultKind::SyncParity
                | FaultKind::AsyncParity
                | FaultKind::WalkExternalAbort
                | FaultKind::WalkParity
        )
    }

    const fn decode(raw: u32, write: bool, fetch: bool) -> Self {
        let fs = (((raw >> 10) & 1) << 4 | (raw & 0xf)) as u8;
        use FaultKind::*;
        use FaultLevel::*;
        let (kind, level) = match fs {
            0b00001 => (Alignment, None),
            0b00010 => (DebugEvent, None),
            0b00100 => (CacheMaintenance, None),
            0b00101 => (Translation, Some(Section)),
            0b00111 => (Translation, Some(Page)),
            0b00011 => (AccessFlag, Some(Section)),
            0b00110 => (AccessFlag, Some(Page)),
            0b01001 => (Domain, Some(Section)),
            0b01011 => (Domain, Some(Page)),
            0b01101 => (Permission, Some(Section)),
            0b01111 => (Permission, Some(Page)),
            0b01100 => (WalkExternalAbort, Some(Section)),
            0b01110 => (WalkExternalAbort, Some(Page)),
            0b11100 => (WalkParity, Some(Section)),
            0b11110 => (WalkParity, Some(Page)),
            0b01000 => (SyncExternalAbort, None),
            0b10110 => (AsyncExternalAbort, None),
            0b11001 => (SyncParity, None),
            0b11000 => (AsyncParity, None),
            0b10000 => (TlbConflict, None),
            0b10100 => (Lockdown, None),
            0b11010 => (CoprocessorAbort, None),
            other => (Unknown(other), None),
        };
        Self {
            raw,
            kind,
            level,
            write,
            fetch,
            external: raw & (1 << 12) != 0,
            domain: ((raw >> 4) & 0xf) as u8,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Alignment => "alignment fault",
            Self::DebugEvent => "debug event",
            Self::Translation => "translation fault",
            Self::AccessFlag => "access flag fault",
            Self::Domain => "domain fault",
            Self::Permission => "permission fault",
            Self::WalkExternalAbort => "external abort on table walk",
            Self::WalkParity => "parity error on table walk",
            Self::SyncExternalAbort => "synchronous external abort",
            Self::AsyncExternalAbort => "asynchronous external abort",
            Self::SyncParity => "synchronous parity error",
            Self::AsyncParity => "asynchronous parity error",
            Self::CacheMaintenance => "cache maintenance fault",
            Self::TlbConflict => "TLB conflict abort",
            Self::Lockdown => "lockdown abort",
            Self::CoprocessorAbort => "coprocessor abort",
            Self::Unknown(fs) => return write!(f, "unknown fault (FS={fs:#07b})"),
        };
        f.write_str(s)
    }
}

impl fmt::Display for FaultStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        match self.level {
            Some(FaultLevel::Section) => f.write_str(" (section / L1)")?,
            Some(FaultLevel::Page) => f.write_str(" (page / L2)")?,
            None => {}
        }
        if self.is_async() {
            f.write_str(", imprecise: the access that caused it is unknown")?;
        } else if self.fetch {
            f.write_str(", instruction fetch")?;
        } else if self.write {
            f.write_str(", write")?;
        } else {
            f.write_str(", read")?;
        }
        if self.external {
            f.write_str(", ExT")?;
        }
        write!(f, " [FSR={:#x}]", self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_faults_tell_section_from_page() {
        let s = FaultStatus::from_dfsr(0b0101);
        assert_eq!(s.kind, FaultKind::Translation);
        assert_eq!(s.level, Some(FaultLevel::Section));
        assert!(!s.write);
        let p = FaultStatus::from_dfsr(0b0111 | 1 << 11);
        assert_eq!(p.kind, FaultKind::Translation);
        assert_eq!(p.level, Some(FaultLevel::Page));
        assert!(p.write);
    }

    #[test]
    fn permission_fault_on_a_write_to_a_read_only_page() {
        let s = FaultStatus::from_dfsr(0x80f);
        assert_eq!(s.kind, FaultKind::Permission);
        assert_eq!(s.level, Some(FaultLevel::Page));
        assert!(s.write);
        assert_eq!(
            format!("{s}"),
            "permission fault (page / L2), write [FSR=0x80f]"
        );
    }

    #[test]
    fn fs_bit_4_comes_from_bit_10() {
        assert_eq!(
            FaultStatus::from_dfsr(1 << 10 | 0b0110).kind,
            FaultKind::AsyncExternalAbort
        );
        assert_eq!(FaultStatus::from_dfsr(0b0001).kind, FaultKind::Alignment);
        assert!(!FaultStatus::from_ifsr(0x80d).write);
        assert_eq!(FaultStatus::from_dfsr(0b1001 | 3 << 4).domain, 3);
    }

    #[test]
    fn an_instruction_fetch_is_reported_as_one() {
        let s = FaultStatus::from_ifsr(0x00f);
        assert!(s.fetch && !s.write);
        assert_eq!(
            format!("{s}"),
            "permission fault (page / L2), instruction fetch [FSR=0xf]"
        );
        assert_eq!(
            format!("{}", FaultStatus::from_ifsr(0x002)),
            "debug event, instruction fetch [FSR=0x2]"
        );
    }

    #[test]
    fn asynchronous_aborts_are_reported_as_imprecise() {
        let s = FaultStatus::from_dfsr(1 << 10 | 0b0110 | 1 << 11);
        assert!(s.is_async() && s.is_external());
        assert_eq!(
            format!("{s}"),
            "asynchronous external abort, imprecise: the access that caused it is unknown \
             [FSR=0xc06]"
        );
        assert!(
            FaultStatus::from_dfsr(1 << 10 | 0b1000).is_async(),
            "async parity"
        );
        assert!(!FaultStatus::from_dfsr(0b1000).is_async());
        assert!(FaultStatus::from_dfsr(0b1000).is_external());
        assert!(!FaultStatus::from_dfsr(0b0111).is_external());
    }
}
