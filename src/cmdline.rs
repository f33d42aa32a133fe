//! The kernel command line: found in the ATAG list the firmware passes (r2), or read from the
//! card's `cmdline.txt`, and its `mem=<N>[K|M|G]` option, which limits the RAM the kernel uses.
//!
//! Portable and host-tested: the ATAG walk works on a byte slice and refuses a malformed list
//! (a size that runs off the slice, a tag smaller than its header, no ATAG_NONE within the
//! slice, more than [`MAX_TAGS`] tags) instead of panicking.

/// ATAG_NONE ends the list.
pub const ATAG_NONE: u32 = 0;
/// ATAG_CORE starts the list.
pub const ATAG_CORE: u32 = 0x5441_0001;
/// ATAG_MEM: size, start of a RAM bank.
pub const ATAG_MEM: u32 = 0x5441_0002;
/// ATAG_CMDLINE: a NUL-terminated command line.
pub const ATAG_CMDLINE: u32 = 0x5441_0009;
/// A flattened device tree starts with this (big-endian) word instead of ATAG_CORE.
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// The walk gives up after this many tags.
pub const MAX_TAGS: usize = 64;

/// Why an ATAG list was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtagError {
    /// A flattened device tree, not an ATAG list (no command line taken from it).
    DeviceTree,
    /// The first tag is not ATAG_CORE.
    NoCore,
    /// A tag's header or size runs off the end of the memory given.
    Truncated,
    /// A tag's size is smaller than its two-word header.
    BadSize,
    /// More than [`MAX_TAGS`] tags before ATAG_NONE.
    TooManyTags,
}

impl core::fmt::Display for AtagError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AtagError::DeviceTree => "a device tree, not ATAGs",
            AtagError::NoCore => "does not start with ATAG_CORE",
            AtagError::Truncated => "a tag runs off the end",
            AtagError::BadSize => "a tag smaller than its header",
            AtagError::TooManyTags => "too many tags",
        })
    }
}

/// What the ATAG list holds that the kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Atags<'a> {
    /// The command line (up to its NUL), if the list has one.
    pub cmdline: Option<&'a [u8]>,
    /// The first ATAG_MEM: (start, size).
    pub mem: Option<(u32, u32)>,
}

fn word(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Walks the ATAG list at the start of `bytes` (little-endian words).
pub fn parse_atags(bytes: &[u8]) -> Result<Atags<'_>, AtagError> {
    let first_tag = word(bytes, 4);
    if word(bytes, 0).map(u32::from_be) == Some(FDT_MAGIC) {
        return Err(AtagError::DeviceTree);
    }
    if first_tag != Some(ATAG_CORE) {
        return Err(AtagError::NoCore);
    }
    let mut out = Atags::default();
    let mut at = 0usize;
    for _ in 0..MAX_TAGS {
        let size = word(bytes, at).ok_or(AtagError::Truncated)? as usize;
        let tag = word(bytes, at + 4).ok_or(AtagError::Truncated)?;
        if tag == ATAG_NONE {
            return Ok(out);
        }
        if size < 2 {
            return Err(AtagError::BadSize);
        }
        let len = size.checked_mul(4).ok_or(AtagError::Truncated)?;
        let end = at.checked_add(len).ok_or(AtagError::Truncated)?;
        let payload = bytes.get(at + 8..end).ok_or(AtagError::Truncated)?;
        match tag {
            ATAG_MEM if out.mem.is_none() && payload.len() >= 8 => {
                let size = word(payload, 0).unwrap_or(0);
                let start = word(payload, 4).unwrap_or(0);
                out.mem = Some((start, size));
            }
            ATAG_CMDLINE => {
                let n = payload
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(payload.len());
                out.cmdline = Some(&payload[..n]);
            }
            _ => {}
        }
        at = end;
    }
    Err(AtagError::TooManyTags)
}

/// Why a `mem=` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// Not `<digits>[K|M|G]`.
    Garbage,
    /// More than 2^64 bytes.
    Overflow,
}

/// Parses one `mem=` value: decimal digits and an optional K, M or G suffix (either case), in
/// bytes.
pub fn parse_size(s: &str) -> Result<u64, MemError> {
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MemError::Garbage);
    }
    let mut n: u64 = 0;
    for b in digits.bytes() {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(MemError::Overflow)?;
    }
    n.checked_mul(1 << shift)
        .filter(|v| v >> shift == n)
        .ok_or(MemError::Overflow)
}

/// The `mem=` option of a command line, in bytes: the last one wins (as in Linux); `Ok(None)`
/// when there is none, an error when the last one is malformed.
pub fn mem_limit(cmdline: &str) -> Result<Option<u64>, MemError> {
    let mut last = None;
    for arg in cmdline.split_ascii_whitespace() {
        if let Some(v) = arg.strip_prefix("mem=") {
            last = Some(v);
        }
    }
    last.map(parse_size).transpose()
}

/// The smallest RAM `mem=` may leave the kernel: a smaller value is raised to this (the kernel
/// image, its stacks and tables, and the PMM bitmap for all of RAM take about 5 MiB).
pub const MIN_RAM: u32 = 16 << 20;

/// The RAM size the kernel uses, in bytes: `mem=` rounded down to whole MiB, never more than the
/// firmware's `reported` size, never less than [`MIN_RAM`] (nor than `reported` when that is
/// smaller still).
pub fn limited_ram(reported: u32, limit: Option<u64>) -> u32 {
    match limit {
        None => reported,
        Some(l) => {
            let l = (l.min(u64::from(u32::MAX)) as u32) & !((1 << 20) - 1);
            l.max(MIN_RAM).min(reported)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn with_cmdline(s: &str) -> Vec<u8> {
        let mut payload = s.as_bytes().to_vec();
        payload.push(0);
        while !payload.len().is_multiple_of(4) {
            payload.push(0);
        }
        let mut v = words(&[2, ATAG_CORE, 4, ATAG_MEM, 0x3c00_0000, 0]);
        v.extend(words(&[2 + payload.len() as u32 / 4, ATAG_CMDLINE]));
        v.extend(payload);
        v.extend(words(&[0, ATAG_NONE]));
        v
    }

    #[test]
    fn firmware_stand_in_list() {
        let v = words(&[2, ATAG_CORE, 4, ATAG_MEM, 0x3c00_0000, 0, 0, 0]);
        let a = parse_atags(&v).unwrap();
        assert_eq!(a.cmdline, None);
        assert_eq!(a.mem, Some((0, 0x3c00_0000)));
        // Trailing memory after ATAG_NONE is ignored.
        let mut longer = v.clone();
        longer.extend([0xff; 64]);
        assert_eq!(parse_atags(&longer).unwrap(), a);
    }

    #[test]
    fn cmdline_found() {
        let v = with_cmdline("console=ttyAMA0 mem=512M");
        let a = parse_atags(&v).unwrap();
        assert_eq!(a.cmdline, Some(&b"console=ttyAMA0 mem=512M"[..]));
        assert_eq!(a.mem, Some((0, 0x3c00_0000)));
        // No NUL inside the tag: the whole payload.
        let mut v = words(&[2, ATAG_CORE, 3, ATAG_CMDLINE]);
        v.extend(b"abcd");
        v.extend(words(&[0, 0]));
        assert_eq!(parse_atags(&v).unwrap().cmdline, Some(&b"abcd"[..]));
    }

    #[test]
    fn hostile_lists_refused() {
        assert_eq!(parse_atags(&[]), Err(AtagError::NoCore));
        assert_eq!(parse_atags(&[1, 2, 3]), Err(AtagError::NoCore));
        let dtb = [0xd0, 0x0d, 0xfe, 0xed, 0, 0, 0, 0x38];
        assert_eq!(parse_atags(&dtb), Err(AtagError::DeviceTree));
        assert_eq!(
            parse_atags(&words(&[2, ATAG_MEM, 0, 0])),
            Err(AtagError::NoCore)
        );
        // No ATAG_NONE.
        assert_eq!(
            parse_atags(&words(&[2, ATAG_CORE])),
            Err(AtagError::Truncated)
        );
        // Size zero or one on a tag that is not ATAG_NONE: would loop forever.
        assert_eq!(
            parse_atags(&words(&[0, ATAG_CORE, 0, 0])),
            Err(AtagError::BadSize)
        );
        assert_eq!(
            parse_atags(&words(&[2, ATAG_CORE, 1, ATAG_MEM, 0, 0])),
            Err(AtagError::BadSize)
        );
        // Sizes that run off the end or overflow.
        assert_eq!(
            parse_atags(&words(&[2, ATAG_CORE, 100, ATAG_CMDLINE, 0, 0])),
            Err(AtagError::Truncated)
        );
        assert_eq!(
            parse_atags(&words(&[2, ATAG_CORE, u32::MAX, ATAG_CMDLINE, 0, 0])),
            Err(AtagError::Truncated)
        );
        assert_eq!(
            parse_atags(&words(&[0x4000_0000, ATAG_CORE, 0, 0])),
            Err(AtagError::Truncated)
        );
        // Endless chain of small tags.
        let mut v = words(&[2, ATAG_CORE]);
        for _ in 0..100 {
            v.extend(words(&[2, 0x1234_5678]));
        }
        v.extend(words(&[0, 0]));
        assert_eq!(parse_atags(&v), Err(AtagError::TooManyTags));
        // Short ATAG_MEM is ignored, not read past.
        let v = words(&[2, ATAG_CORE, 3, ATAG_MEM, 7, 0, 0]);
        assert_eq!(parse_atags(&v).unwrap().mem, None);
    }

    #[test]
    fn every_prefix_of_a_list_is_handled() {
        let v = with_cmdline("mem=128M foo=bar");
        for n in 0..v.len() {
            let _ = parse_atags(&v[..n]);
        }
        // Random bytes after a valid core tag never panic.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut v = words(&[2, ATAG_CORE]);
            for _ in 0..16 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                v.extend(words(&[x % 8, x]));
            }
            let _ = parse_atags(&v);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("65536k"), Ok(64 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "M", "12X", "-1M", "1.5G", "0x100M", "12 M", "1MM", "+5"] {
            assert_eq!(parse_size(bad), Err(MemError::Garbage), "{bad:?}");
        }
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_size("18446744073709551616"), Err(MemError::Overflow));
        assert_eq!(parse_size("17179869184G"), Err(MemError::Overflow));
        assert_eq!(parse_size("17179869183G"), Ok(17179869183 << 30));
    }

    #[test]
    fn mem_option() {
        assert_eq!(mem_limit(""), Ok(None));
        assert_eq!(mem_limit("console=ttyAMA0 root=/dev/mmcblk0p2"), Ok(None));
        assert_eq!(mem_limit("mem=512M"), Ok(Some(512 << 20)));
        assert_eq!(mem_limit("a mem=256M b mem=512M\n"), Ok(Some(512 << 20)));
        assert_eq!(mem_limit("xmem=1M nomem=2M"), Ok(None));
        assert_eq!(mem_limit("mem=512M mem=lots"), Err(MemError::Garbage));
        assert_eq!(mem_limit("mem="), Err(MemError::Garbage));
        assert_eq!(
            mem_limit("mem=99999999999999999999G"),
            Err(MemError::Overflow)
        );
    }

    #[test]
    fn limits() {
        let fw = 960 << 20;
        assert_eq!(limited_ram(fw, None), fw);
        assert_eq!(limited_ram(fw, Some(512 << 20)), 512 << 20);
        assert_eq!(limited_ram(fw, Some((512 << 20) + 12345)), 512 << 20);
        assert_eq!(limited_ram(fw, Some(4 << 30)), fw);
        assert_eq!(limited_ram(fw, Some(u64::MAX)), fw);
        assert_eq!(limited_ram(fw, Some(1 << 20)), MIN_RAM);
        assert_eq!(limited_ram(fw, Some(0)), MIN_RAM);
        assert_eq!(limited_ram(32 << 20, Some(128 << 20)), 32 << 20);
    }
}
