//! The frame around a national-protocol message, as data: header and tail bytes, the length
//! field (width, byte order, what it counts), a command sequence number, an optional type byte,
//! and a check (CRC-16/MODBUS, or none).
//!
//! The framing differs between provinces and vendors (shared reference,
//! china-field-protocols.md, "The national building-energy monitoring protocol"): the guideline
//! layout of 数据传输技术导则 as a Java implementation carries it (header `68 68 16 16`, a 4-byte
//! length, a 4-byte command sequence, the payload, a CRC, tail `55 AA 55 AA`), and the layout of
//! an open-source Node collector server (header `8B AE 9B`, a type byte, a little-endian 4-byte
//! length, the payload, no check, no tail). Both are [`FrameSpec`] presets; a site with another
//! layout writes its own in `[collector.frame]`.

use serde::{Deserialize, Serialize};

/// Byte order of the length, sequence and check fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ByteOrder {
    Big,
    Little,
}

/// The check after the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    None,
    /// CRC-16/MODBUS (polynomial 0x8005 reflected, initial 0xFFFF) over the sequence and the
    /// payload, 2 bytes in the frame's byte order.
    Crc16Modbus,
}

/// What the length field counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LengthCounts {
    /// The payload only.
    Payload,
    /// The command sequence and the payload (the guideline's "有效数据长度").
    SequenceAndPayload,
}

/// A frame layout.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FrameSpec {
    /// Header bytes, as hex (`"68681616"`).
    #[serde(deserialize_with = "hex_bytes", serialize_with = "to_hex")]
    pub header: Vec<u8>,
    /// One byte after the header naming the message type (echoed in the answers).
    #[serde(default)]
    pub type_byte: bool,
    /// Width of the length field: 2 or 4 bytes.
    pub length_bytes: u8,
    pub byte_order: ByteOrder,
    pub length_counts: LengthCounts,
    /// Width of the command sequence number: 0 (none) or 4 bytes.
    #[serde(default)]
    pub sequence_bytes: u8,
    pub check: Check,
    /// Tail bytes, as hex; empty for none.
    #[serde(default, deserialize_with = "hex_bytes", serialize_with = "to_hex")]
    pub tail: Vec<u8>,
}

fn hex_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    parse_hex(&s).map_err(serde::de::Error::custom)
}

fn to_hex<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&b.iter().map(|x| format!("{x:02X}")).collect::<String>())
}

/// Hex digits (spaces allowed between bytes) as bytes.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err(format!("`{s}`: an odd number of hex digits"));
    }
    digits
        .chunks(2)
        .map(|p| {
            let h = std::str::from_utf8(p).map_err(|_| format!("`{s}`: not hex"))?;
            u8::from_str_radix(h, 16).map_err(|_| format!("`{s}`: `{h}` is not a hex byte"))
        })
        .collect()
}

impl FrameSpec {
    /// The guideline layout (`68 68 16 16`, 4-byte big-endian length of sequence and payload,
    /// 4-byte sequence, CRC-16/MODBUS, `55 AA 55 AA`).
    pub fn guideline() -> FrameSpec {
        FrameSpec {
            header: vec![0x68, 0x68, 0x16, 0x16],
            type_byte: false,
            length_bytes: 4,
            byte_order: ByteOrder::Big,
            length_counts: LengthCounts::SequenceAndPayload,
            sequence_bytes: 4,
            check: Check::Crc16Modbus,
            tail: vec![0x55, 0xAA, 0x55, 0xAA],
        }
    }

    /// The `8B AE 9B <type>` layout with a little-endian 4-byte payload length, no sequence, no
    /// check and no tail.
    pub fn node_8bae9b() -> FrameSpec {
        FrameSpec {
            header: vec![0x8B, 0xAE, 0x9B],
            type_byte: true,
            length_bytes: 4,
            byte_order: ByteOrder::Little,
            length_counts: LengthCounts::Payload,
            sequence_bytes: 0,
            check: Check::None,
            tail: Vec::new(),
        }
    }

    /// A preset by name: `guideline` or `8bae9b`.
    pub fn preset(name: &str) -> Option<FrameSpec> {
        match name {
            "guideline" => Some(FrameSpec::guideline()),
            "8bae9b" => Some(FrameSpec::node_8bae9b()),
            _ => None,
        }
    }

    /// The names of the presets.
    pub const PRESETS: [&'static str; 2] = ["guideline", "8bae9b"];

    /// A layout that can frame anything: a header, a length of 2 or 4 bytes, a sequence of 0 or 4.
    pub fn check(&self) -> Result<(), String> {
        if self.header.is_empty() {
            return Err("the frame header must have at least one byte".into());
        }
        if !matches!(self.length_bytes, 2 | 4) {
            return Err(format!("length_bytes must be 2 or 4, not {}", self.length_bytes));
        }
        if !matches!(self.sequence_bytes, 0 | 4) {
            return Err(format!("sequence_bytes must be 0 or 4, not {}", self.sequence_bytes));
        }
        if self.sequence_bytes == 0 && self.length_counts == LengthCounts::SequenceAndPayload {
            return Err("length_counts = \"sequence_and_payload\" needs sequence_bytes = 4".into());
        }
        Ok(())
    }

    fn check_len(&self) -> usize {
        match self.check {
            Check::None => 0,
            Check::Crc16Modbus => 2,
        }
    }

    fn prefix_len(&self) -> usize {
        self.header.len() + usize::from(self.type_byte) + usize::from(self.length_bytes)
    }
}

/// One frame: the message type byte (where the layout has one), the command sequence number
/// (0 where it has none) and the payload (XML, or AES ciphertext of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub type_byte: u8,
    pub sequence: u32,
    pub payload: Vec<u8>,
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the frame does not start with the header {expected} (got {got})")]
    BadHeader { expected: String, got: String },
    #[error("the frame announces {len} bytes, more than the largest accepted ({max})")]
    TooLong { len: usize, max: usize },
    #[error("the frame's length field ({len}) is shorter than its sequence number")]
    TooShort { len: usize },
    #[error("the frame's check is {got:04X}, its bytes give {want:04X}")]
    BadCheck { got: u16, want: u16 },
    #[error("the frame does not end with the tail {expected} (got {got})")]
    BadTail { expected: String, got: String },
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect::<Vec<_>>().join(" ")
}

/// CRC-16/MODBUS: reflected polynomial 0xA001, initial 0xFFFF, no final XOR. The check value of
/// `123456789` is 0x4B37 (the CRC catalogue's check value for CRC-16/MODBUS).
pub fn crc16_modbus(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
        }
    }
    crc
}

fn read_uint(b: &[u8], order: ByteOrder) -> u64 {
    let it: Box<dyn Iterator<Item = &u8>> = match order {
        ByteOrder::Big => Box::new(b.iter()),
        ByteOrder::Little => Box::new(b.iter().rev()),
    };
    it.fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

fn write_uint(out: &mut Vec<u8>, v: u64, width: usize, order: ByteOrder) {
    let be: Vec<u8> = (0..width).rev().map(|i| (v >> (8 * i)) as u8).collect();
    match order {
        ByteOrder::Big => out.extend_from_slice(&be),
        ByteOrder::Little => out.extend(be.iter().rev()),
    }
}

/// The bytes of a frame.
pub fn encode(spec: &FrameSpec, frame: &Frame) -> Vec<u8> {
    let seq_len = usize::from(spec.sequence_bytes);
    let mut out = Vec::with_capacity(spec.prefix_len() + seq_len + frame.payload.len() + spec.check_len() + spec.tail.len());
    out.extend_from_slice(&spec.header);
    if spec.type_byte {
        out.push(frame.type_byte);
    }
    let len = match spec.length_counts {
        LengthCounts::Payload => frame.payload.len(),
        LengthCounts::SequenceAndPayload => seq_len + frame.payload.len(),
    };
    write_uint(&mut out, len as u64, usize::from(spec.length_bytes), spec.byte_order);
    let body_start = out.len();
    if seq_len > 0 {
        write_uint(&mut out, u64::from(frame.sequence), seq_len, spec.byte_order);
    }
    out.extend_from_slice(&frame.payload);
    if spec.check == Check::Crc16Modbus {
        let crc = crc16_modbus(&out[body_start..]);
        write_uint(&mut out, u64::from(crc), 2, spec.byte_order);
    }
    out.extend_from_slice(&spec.tail);
    out
}

/// Decodes the frame at the start of `buf`: `Ok(None)` when more bytes are needed, else the
/// frame and the number of bytes it took. `max_payload` bounds the payload before anything is
/// allocated for it. Bytes before a header are an error (the caller closes the connection: a
/// stream out of step is not guessed back into step).
pub fn decode(spec: &FrameSpec, buf: &[u8], max_payload: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    let hl = spec.header.len();
    let have = buf.len().min(hl);
    if buf[..have] != spec.header[..have] {
        return Err(FrameError::BadHeader { expected: hex(&spec.header), got: hex(&buf[..have]) });
    }
    let prefix = spec.prefix_len();
    if buf.len() < prefix {
        return Ok(None);
    }
    let type_byte = if spec.type_byte { buf[hl] } else { 0 };
    let len = read_uint(&buf[prefix - usize::from(spec.length_bytes)..prefix], spec.byte_order) as usize;
    let seq_len = usize::from(spec.sequence_bytes);
    let payload_len = match spec.length_counts {
        LengthCounts::Payload => len,
        LengthCounts::SequenceAndPayload => len.checked_sub(seq_len).ok_or(FrameError::TooShort { len })?,
    };
    if payload_len > max_payload {
        return Err(FrameError::TooLong { len: payload_len, max: max_payload });
    }
    let total = prefix + seq_len + payload_len + spec.check_len() + spec.tail.len();
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[prefix..prefix + seq_len + payload_len];
    let sequence = if seq_len > 0 { read_uint(&body[..seq_len], spec.byte_order) as u32 } else { 0 };
    let mut at = prefix + seq_len + payload_len;
    if spec.check == Check::Crc16Modbus {
        let got = read_uint(&buf[at..at + 2], spec.byte_order) as u16;
        let want = crc16_modbus(body);
        if got != want {
            return Err(FrameError::BadCheck { got, want });
        }
        at += 2;
    }
    let tail = &buf[at..at + spec.tail.len()];
    if tail != spec.tail.as_slice() {
        return Err(FrameError::BadTail { expected: hex(&spec.tail), got: hex(tail) });
    }
    Ok(Some((Frame { type_byte, sequence, payload: body[seq_len..].to_vec() }, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_modbus_check_value() {
        // The catalogue's check value for CRC-16/MODBUS over ASCII "123456789".
        assert_eq!(crc16_modbus(b"123456789"), 0x4B37);
        // One byte 0x01, worked by hand: FFFF ^ 01 = FFFE; eight shifts with 0xA001 where the low
        // bit is 1 give 0x807E.
        assert_eq!(crc16_modbus(&[0x01]), 0x807E);
    }

    #[test]
    fn guideline_frame_by_hand() {
        // Payload "<a/>" (3C 61 2F 3E), sequence 7. Length counts sequence + payload: 4 + 4 = 8.
        // CRC-16/MODBUS over 00 00 00 07 3C 61 2F 3E, written big-endian.
        let f = Frame { type_byte: 0, sequence: 7, payload: b"<a/>".to_vec() };
        let bytes = encode(&FrameSpec::guideline(), &f);
        let crc = crc16_modbus(&[0, 0, 0, 7, 0x3C, 0x61, 0x2F, 0x3E]);
        let mut want = vec![0x68, 0x68, 0x16, 0x16, 0, 0, 0, 8, 0, 0, 0, 7, 0x3C, 0x61, 0x2F, 0x3E, (crc >> 8) as u8, crc as u8];
        want.extend_from_slice(&[0x55, 0xAA, 0x55, 0xAA]);
        assert_eq!(bytes, want);
        assert_eq!(decode(&FrameSpec::guideline(), &bytes, 1024).unwrap(), Some((f, want.len())));
    }

    #[test]
    fn node_frame_by_hand() {
        // 8B AE 9B, type 0x02, length 4 little-endian (04 00 00 00), payload, nothing after.
        let f = Frame { type_byte: 2, sequence: 0, payload: b"<a/>".to_vec() };
        let bytes = encode(&FrameSpec::node_8bae9b(), &f);
        assert_eq!(bytes, vec![0x8B, 0xAE, 0x9B, 0x02, 4, 0, 0, 0, 0x3C, 0x61, 0x2F, 0x3E]);
        assert_eq!(decode(&FrameSpec::node_8bae9b(), &bytes, 1024).unwrap(), Some((f, 12)));
    }

    #[test]
    fn partial_bad_and_oversized_frames() {
        let spec = FrameSpec::guideline();
        let bytes = encode(&spec, &Frame { type_byte: 0, sequence: 1, payload: b"<root/>".to_vec() });
        // Every strict prefix asks for more bytes.
        for n in 0..bytes.len() {
            assert_eq!(decode(&spec, &bytes[..n], 1024), Ok(None), "prefix of {n} bytes");
        }
        // Two frames back to back: the first is taken, its length returned.
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        assert_eq!(decode(&spec, &two, 1024).unwrap().unwrap().1, bytes.len());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0x68, 0x69], "header"),
            ({ let mut b = bytes.clone(); b[14] ^= 1; b }, "check"),
            ({ let mut b = bytes.clone(); let n = b.len(); b[n - 1] = 0; b }, "tail"),
            (vec![0x68, 0x68, 0x16, 0x16, 0xFF, 0xFF, 0xFF, 0xFF], "more than the largest"),
            (vec![0x68, 0x68, 0x16, 0x16, 0, 0, 0, 2], "shorter than its sequence"),
        ];
        for (b, want) in cases {
            let e = decode(&spec, &b, 1024).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should name {want}");
        }
    }

    use proptest::prelude::*;

    proptest! {
        // The fuzz target's properties (fuzz/fuzz_targets/collector_frame.rs), on arbitrary
        // bytes: a frame, more needed, or a refusal; a frame read encodes back to its bytes; any
        // payload framed decodes back.
        #[test]
        fn any_bytes_decode_or_refuse_and_frames_round_trip(data in proptest::collection::vec(any::<u8>(), 0..300), seq in any::<u32>(), ty in any::<u8>()) {
            for spec in [FrameSpec::guideline(), FrameSpec::node_8bae9b()] {
                if let Ok(Some((f, used))) = decode(&spec, &data, 256) {
                    prop_assert!(f.payload.len() <= 256);
                    prop_assert_eq!(encode(&spec, &f), data[..used].to_vec());
                }
                let f = Frame { type_byte: if spec.type_byte { ty } else { 0 }, sequence: if spec.sequence_bytes > 0 { seq } else { 0 }, payload: data.clone() };
                let b = encode(&spec, &f);
                prop_assert_eq!(decode(&spec, &b, 1024).unwrap(), Some((f, b.len())));
            }
        }
    }

    #[test]
    fn custom_layouts_from_toml() {
        let spec: FrameSpec = toml::from_str(
            "header = \"AA 55\"\nlength_bytes = 2\nbyte_order = \"little\"\nlength_counts = \"payload\"\ncheck = \"crc16_modbus\"\ntail = \"0D0A\"",
        )
        .unwrap();
        spec.check().unwrap();
        let f = Frame { type_byte: 0, sequence: 0, payload: b"xyz".to_vec() };
        let b = encode(&spec, &f);
        // AA 55, length 3 little-endian (03 00), payload, CRC little-endian, 0D 0A.
        let crc = crc16_modbus(b"xyz");
        assert_eq!(b, vec![0xAA, 0x55, 3, 0, b'x', b'y', b'z', crc as u8, (crc >> 8) as u8, 0x0D, 0x0A]);
        assert_eq!(decode(&spec, &b, 16).unwrap().unwrap().0, f);
        assert!(toml::from_str::<FrameSpec>("header = \"6\"\nlength_bytes = 2\nbyte_order = \"big\"\nlength_counts = \"payload\"\ncheck = \"none\"").is_err());
        let bad = FrameSpec { length_bytes: 3, ..FrameSpec::guideline() };
        assert!(bad.check().unwrap_err().contains("length_bytes"));
    }
}
