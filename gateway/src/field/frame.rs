//! What DL/T 645 and CJ/T 188 frames share: the `68 ... 16` envelope with a length byte and an
//! additive checksum, the `FE` wake-up preamble, and packed BCD values sent least significant
//! byte first.
//!
//! Sources: DL/T 645-2007 section 4 (frame format) as summarised in
//! `shared/reference/china-field-protocols.md`, checked against the open implementations
//! wangjianghua/DLMR-PDA `APP/DL645.h` (frame struct, control codes of both editions) and, for
//! CJ/T 188, xijunzhou/sdqr_energy_node_class `Src/meter/cj188.h` (field offsets) and the worked
//! frame example at hftangyu.com/563.html (checksum `80` of `68 10 44 33 22 11 00 33 78 01 03 1F
//! 90 00`).

/// Sum mod 256 of `bytes` (the checksum of both protocols: every byte from the first `68`
/// through the data).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

/// Where the fixed parts of a frame are, per protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the control byte from the first `68`.
    pub control_at: usize,
    /// Whether a second `68` follows the address (DL/T 645: at offset 7).
    pub second_start: Option<usize>,
}

impl Layout {
    /// Offset of the length byte.
    pub fn length_at(self) -> usize {
        self.control_at + 1
    }
    /// Bytes of a frame around `len` bytes of data.
    pub fn frame_len(self, len: usize) -> usize {
        self.control_at + 2 + len + 2
    }
}

/// The result of looking for one frame at the start of a receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// More bytes are needed.
    Incomplete,
    /// A well-formed frame spans `start..end` of the buffer (anything before `start` was
    /// preamble or line noise).
    Frame { start: usize, end: usize },
    /// A frame whose checksum or end byte is wrong spans `..end`: discard it, count it, never
    /// decode it.
    Bad { end: usize, reason: String },
}

/// Finds the first frame in `buf`: skips `FE` preamble bytes and any noise before a `68` that
/// starts a plausible header, then checks length, checksum and end byte.
pub fn scan(buf: &[u8], layout: Layout) -> Scan {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] != 0x68 {
            i += 1;
            continue;
        }
        let head = &buf[i..];
        if let Some(s) = layout.second_start {
            match head.get(s) {
                None => return Scan::Incomplete,
                Some(&b) if b != 0x68 => {
                    i += 1;
                    continue;
                }
                Some(_) => {}
            }
        }
        let Some(&len) = head.get(layout.length_at()) else { return Scan::Incomplete };
        let total = layout.frame_len(usize::from(len));
        if head.len() < total {
            return Scan::Incomplete;
        }
        let (cs, end) = (head[total - 2], head[total - 1]);
        let want = checksum(&head[..total - 2]);
        if end != 0x16 {
            return Scan::Bad { end: i + total, reason: format!("frame does not end with 16 (got {end:02X})") };
        }
        if cs != want {
            return Scan::Bad { end: i + total, reason: format!("checksum {cs:02X}, expected {want:02X}") };
        }
        return Scan::Frame { start: i, end: i + total };
    }
    Scan::Incomplete
}

/// Packed BCD, least significant byte first, as an integer; `None` when a nibble is not a
/// decimal digit (meters send `FF`/`EE` bytes for values they do not have). With `signed`, bit 7
/// of the most significant byte is the sign (DL/T 645-2007 appendix A: currents, powers and
/// power factors).
pub fn bcd_le(bytes: &[u8], signed: bool) -> Option<i64> {
    let mut v: i64 = 0;
    let mut negative = false;
    for (i, &b) in bytes.iter().enumerate().rev() {
        let b = if signed && i + 1 == bytes.len() {
            negative = b & 0x80 != 0;
            b & 0x7F
        } else {
            b
        };
        let (hi, lo) = (b >> 4, b & 0x0F);
        if hi > 9 || lo > 9 {
            return None;
        }
        v = v.checked_mul(100)?.checked_add(i64::from(hi * 10 + lo))?;
    }
    Some(if negative { -v } else { v })
}

/// The inverse of [`bcd_le`] for `bytes` bytes: `None` when `v` does not fit.
pub fn to_bcd_le(v: i64, bytes: usize, signed: bool) -> Option<Vec<u8>> {
    if v < 0 && !signed {
        return None;
    }
    let mut m = v.unsigned_abs();
    let mut out = Vec::with_capacity(bytes);
    for _ in 0..bytes {
        let d = (m % 100) as u8;
        out.push((d / 10) << 4 | (d % 10));
        m /= 100;
    }
    if m != 0 {
        return None;
    }
    if signed {
        let top = out.last_mut()?;
        if *top & 0x80 != 0 {
            return None;
        }
        if v < 0 {
            *top |= 0x80;
        }
    }
    Some(out)
}

/// Parses hex bytes written as manuals write them (`00 01 00 00`, `0x901F`, `901F`).
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let t: String = s.trim().trim_start_matches("0x").trim_start_matches("0X").chars().filter(|c| !c.is_whitespace()).collect();
    if t.is_empty() || t.len() % 2 != 0 {
        return Err(format!("`{s}` is not whole hex bytes"));
    }
    (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&t[i..i + 2], 16).map_err(|_| format!("`{s}` is not hex")))
        .collect()
}

/// Bytes in hex, space separated (`00 01 00 00`).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(" ")
}

/// A meter address: `digits` decimal digits, sent as BCD least significant byte first.
/// `AA` bytes are the wildcard.
pub fn parse_address(s: &str, bytes: usize) -> Result<Vec<u8>, String> {
    let t: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if t.len() != bytes * 2 {
        return Err(format!("address `{s}` must have {} digits", bytes * 2));
    }
    if t.eq_ignore_ascii_case(&"A".repeat(bytes * 2)) {
        return Ok(vec![0xAA; bytes]);
    }
    if !t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("address `{s}` must be decimal digits (or all A for the wildcard)"));
    }
    let mut out: Vec<u8> = (0..bytes).map(|i| u8::from_str_radix(&t[i * 2..i * 2 + 2], 16).unwrap_or(0)).collect();
    out.reverse();
    Ok(out)
}

/// An address as printed on the meter's name plate (most significant digits first).
pub fn format_address(wire: &[u8]) -> String {
    wire.iter().rev().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DLT: Layout = Layout { control_at: 8, second_start: Some(7) };

    #[test]
    fn bcd_worked_examples() {
        // 12 34 56 00 (LSB first) = 00563412; 0x85 0x12 signed = -(12 05) = -1205.
        let cases: &[(&[u8], bool, Option<i64>)] = &[
            (&[0x12, 0x34, 0x56, 0x00], false, Some(563_412)),
            (&[0x05, 0x92], true, Some(-1205)),
            (&[0x05, 0x12], true, Some(1205)),
            (&[0x99, 0x99], false, Some(9999)),
            (&[0x1A, 0x00], false, None),
            (&[0xFF, 0xFF], true, None),
            (&[], false, Some(0)),
        ];
        for &(b, signed, want) in cases {
            assert_eq!(bcd_le(b, signed), want, "{b:02X?} signed {signed}");
            if let Some(v) = want {
                assert_eq!(to_bcd_le(v, b.len(), signed).as_deref(), Some(b), "{v}");
            }
        }
        assert_eq!(to_bcd_le(10_000, 2, false), None);
        assert_eq!(to_bcd_le(-1, 2, false), None);
        assert_eq!(to_bcd_le(8000, 2, true), None, "8000 needs bit 7 of the top byte");
    }

    #[test]
    fn addresses_are_reversed_on_the_wire() {
        assert_eq!(parse_address("000012345678", 6).unwrap(), vec![0x78, 0x56, 0x34, 0x12, 0x00, 0x00]);
        assert_eq!(parse_address("AAAAAAAAAAAA", 6).unwrap(), vec![0xAA; 6]);
        assert_eq!(format_address(&[0x78, 0x56, 0x34, 0x12, 0x00, 0x00]), "000012345678");
        assert!(parse_address("12345", 6).is_err());
        assert!(parse_address("00001234567x", 6).is_err());
        assert_eq!(parse_hex("00 01 FF 00").unwrap(), vec![0, 1, 0xFF, 0]);
        assert_eq!(parse_hex("0x901F").unwrap(), vec![0x90, 0x1F]);
        assert!(parse_hex("12G4").is_err());
    }

    #[test]
    fn scan_skips_preamble_and_noise_and_refuses_bad_checksums() {
        // 68 AA*6 68 13 00 -> sum 68+6*AA+68+13 = 0x68+0x3FC+0x68+0x13 = 0x4DF -> DF.
        let mut f = vec![0x68, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0x68, 0x13, 0x00, 0xDF, 0x16];
        let mut buf = vec![0xFE, 0xFE, 0x00, 0xFE];
        buf.extend_from_slice(&f);
        assert_eq!(scan(&buf, DLT), Scan::Frame { start: 4, end: 16 });
        assert_eq!(scan(&buf[..10], DLT), Scan::Incomplete);
        f[10] = 0xDE;
        assert!(matches!(scan(&f, DLT), Scan::Bad { end: 12, ref reason } if reason.contains("checksum DE, expected DF")));
        f[10] = 0xDF;
        f[11] = 0x17;
        assert!(matches!(scan(&f, DLT), Scan::Bad { .. }));
        // A 68 without the second 68 seven bytes on is noise.
        assert_eq!(scan(&[0x68, 0, 0, 0, 0, 0, 0, 0x00, 0x68], DLT), Scan::Incomplete);
    }
}
