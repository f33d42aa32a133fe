//! The SD protocol's arithmetic, apart from any controller (SD Physical Layer Simplified
//! Specification 9.00; SD Host Controller Simplified Specification 4.20): command numbers, OCR
//! bits, the CSD's capacity as an SDHCI controller delivers it, block vs byte addressing, clock
//! dividers.

/// Commands (CMDn) and application commands (ACMDn, after CMD55) the driver sends.
pub mod cmd {
    pub const GO_IDLE_STATE: u8 = 0;
    pub const ALL_SEND_CID: u8 = 2;
    pub const SEND_RELATIVE_ADDR: u8 = 3;
    pub const SET_BUS_WIDTH: u8 = 6; // ACMD6
    pub const SELECT_CARD: u8 = 7;
    pub const SEND_IF_COND: u8 = 8;
    pub const SEND_CSD: u8 = 9;
    pub const STOP_TRANSMISSION: u8 = 12;
    pub const SET_BLOCKLEN: u8 = 16;
    pub const READ_SINGLE_BLOCK: u8 = 17;
    pub const READ_MULTIPLE_BLOCK: u8 = 18;
    pub const WRITE_BLOCK: u8 = 24;
    pub const WRITE_MULTIPLE_BLOCK: u8 = 25;
    pub const SD_SEND_OP_COND: u8 = 41; // ACMD41
    pub const APP_CMD: u8 = 55;
}

/// CMD8 argument: 2.7-3.6 V, check pattern 0xAA; a v2 card echoes it.
pub const IF_COND_ARG: u32 = 0x1AA;
/// ACMD41 argument: the 3.2-3.4 V window (OCR bits 20-21) and more, plus HCS if the card
/// answered CMD8.
pub fn op_cond_arg(v2: bool) -> u32 {
    0x00FF_8000 | if v2 { OCR_HCS } else { 0 }
}
/// OCR bit 31: power-up finished (the card is ready).
pub const OCR_READY: u32 = 1 << 31;
/// OCR bit 30: HCS in the request, CCS in the reply (high capacity: block addressing).
pub const OCR_HCS: u32 = 1 << 30;

/// The data argument of a read or write: block number on SDHC/SDXC, byte address on SDSC.
pub fn data_address(block: u32, high_capacity: bool) -> Option<u32> {
    if high_capacity {
        Some(block)
    } else {
        block.checked_mul(512)
    }
}

/// A CSD field: `width` bits from CSD bit `lsb`, read from an SDHCI R2 response (RESP0..RESP3 hold
/// CSD bits 127..8 shifted down by 8: the CRC byte is not kept).
fn csd_bits(resp: &[u32; 4], lsb: u32, width: u32) -> u32 {
    let r = u128::from(resp[0])
        | u128::from(resp[1]) << 32
        | u128::from(resp[2]) << 64
        | u128::from(resp[3]) << 96;
    ((r >> (lsb - 8)) & ((1u128 << width) - 1)) as u32
}

/// Capacity in 512-byte blocks from the CSD (versions 1.0 and 2.0), or why not.
pub fn csd_capacity_blocks(resp: &[u32; 4]) -> Result<u64, &'static str> {
    match csd_bits(resp, 126, 2) {
        0 => {
            // (C_SIZE + 1) * 2^(C_SIZE_MULT + 2) blocks of 2^READ_BL_LEN bytes.
            let c_size = u64::from(csd_bits(resp, 62, 12));
            let mult = csd_bits(resp, 47, 3);
            let bl_len = csd_bits(resp, 80, 4);
            if !(9..=11).contains(&bl_len) {
                return Err("CSD 1.0 with a block length outside 512..2048");
            }
            Ok(((c_size + 1) << (mult + 2)) << (bl_len - 9))
        }
        // (C_SIZE + 1) * 512 KiB.
        1 => Ok((u64::from(csd_bits(resp, 48, 22)) + 1) * 1024),
        _ => Err("CSD structure version 3 or reserved"),
    }
}

/// SDHCI clock divider for `target` Hz from `base` Hz: the register value N and the rate it
/// gives. Version 3 hosts divide by 2N (N = 0: undivided, 10 bits); older ones by a power of two
/// (8 bits, N = divisor / 2). Never faster than `target`.
pub fn clock_divider(base: u32, target: u32, v3: bool) -> (u32, u32) {
    if target >= base {
        return (0, base);
    }
    if v3 {
        let n = base.div_ceil(2 * target).min(0x3FF);
        (n, base / (2 * n))
    } else {
        let mut div = 2;
        while div < 256 && base / div > target {
            div *= 2;
        }
        (div / 2, base / div)
    }
}

/// CONTROL1 bits 15:6 for divider N: bits 7:0 of N at 15:8, bits 9:8 at 7:6.
pub fn divider_field(n: u32) -> u32 {
    ((n & 0xFF) << 8) | (((n >> 8) & 0x3) << 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SDHCI R2 response from a CSD written as 32 hex digits (CRC byte last).
    fn resp_of(csd_hex: &str) -> [u32; 4] {
        let csd = u128::from_str_radix(csd_hex, 16).unwrap() >> 8;
        [
            csd as u32,
            (csd >> 32) as u32,
            (csd >> 64) as u32,
            (csd >> 96) as u32,
        ]
    }

    #[test]
    fn a_csd_2_0_gives_c_size_plus_one_times_512_kib() {
        // An 8 GB SDHC card: C_SIZE 0x3B37.
        let r = resp_of("400e00325b5900003b377f800a4040af");
        assert_eq!(csd_capacity_blocks(&r), Ok((0x3B37 + 1) * 1024));
    }

    #[test]
    fn a_csd_1_0_gives_c_size_mult_and_block_length() {
        // C_SIZE 0xF7F (bits 73:62), C_SIZE_MULT 3 (49:47), READ_BL_LEN 9 (83:80): 64 MiB.
        let csd: u128 = (9u128 << 80) | (0xF7Fu128 << 62) | (3u128 << 47) | 0x01;
        let r = resp_of(&alloc::format!("{csd:032x}"));
        assert_eq!(csd_capacity_blocks(&r), Ok((0xF7F + 1) << 5));
        let big: u128 = (10u128 << 80) | (0xFFFu128 << 62) | (7u128 << 47);
        let r = resp_of(&alloc::format!("{big:032x}"));
        assert_eq!(csd_capacity_blocks(&r), Ok(4096 * 512 * 2));
    }

    #[test]
    fn a_reserved_csd_version_is_refused() {
        let r = resp_of(&alloc::format!("{:032x}", 3u128 << 126));
        assert!(csd_capacity_blocks(&r).is_err());
    }

    #[test]
    fn standard_capacity_cards_take_byte_addresses() {
        assert_eq!(data_address(3, true), Some(3));
        assert_eq!(data_address(3, false), Some(1536));
        assert_eq!(data_address(u32::MAX / 256, false), None);
    }

    #[test]
    fn the_op_cond_argument_asks_for_high_capacity_only_of_v2_cards() {
        assert_eq!(op_cond_arg(true) & OCR_HCS, OCR_HCS);
        assert_eq!(op_cond_arg(false) & OCR_HCS, 0);
    }

    #[test]
    fn clock_dividers_never_exceed_the_target() {
        assert_eq!(clock_divider(50_000_000, 400_000, true), (63, 396_825));
        assert_eq!(clock_divider(50_000_000, 25_000_000, true), (1, 25_000_000));
        assert_eq!(
            clock_divider(250_000_000, 25_000_000, true),
            (5, 25_000_000)
        );
        assert_eq!(clock_divider(250_000_000, 400_000, true), (313, 399_361));
        assert_eq!(clock_divider(25_000_000, 50_000_000, true), (0, 25_000_000));
        assert_eq!(clock_divider(50_000_000, 400_000, false), (64, 390_625));
        assert_eq!(divider_field(313), (0x39 << 8) | (1 << 6));
    }
}
