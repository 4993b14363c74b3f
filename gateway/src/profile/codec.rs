//! Register value types and byte/word orders: decoding what a meter sends and encoding what a
//! simulated meter serves.
//!
//! Orders name the position of bytes A (most significant) .. D in the registers as they arrive:
//! `ABCD` is big-endian words, big-endian bytes (the Modbus default); `CDAB` swaps the words;
//! `BADC` swaps the bytes within each word; `DCBA` is fully little-endian. For 64-bit values the
//! same rule is applied to the four words (`ABCD` = words 0,1,2,3 most significant first).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl ValueType {
    /// Number of 16-bit registers the value occupies.
    pub fn registers(self) -> u16 {
        match self {
            ValueType::U16 | ValueType::I16 => 1,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            ValueType::U64 | ValueType::I64 | ValueType::F64 => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Order {
    #[default]
    ABCD,
    DCBA,
    BADC,
    CDAB,
}

/// Puts the registers' bytes into big-endian order (most significant byte first).
fn to_big_endian(regs: &[u16], order: Order) -> Vec<u8> {
    let n = regs.len();
    let mut words: Vec<u16> = regs.to_vec();
    if matches!(order, Order::CDAB | Order::DCBA) {
        words.reverse();
    }
    let mut out = Vec::with_capacity(n * 2);
    for w in words {
        let [hi, lo] = w.to_be_bytes();
        if matches!(order, Order::BADC | Order::DCBA) {
            out.extend_from_slice(&[lo, hi]);
        } else {
            out.extend_from_slice(&[hi, lo]);
        }
    }
    out
}

/// The inverse of [`to_big_endian`].
fn from_big_endian(bytes: &[u8], order: Order) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| {
            if matches!(order, Order::BADC | Order::DCBA) {
                u16::from_be_bytes([c[1], c[0]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        })
        .collect();
    if matches!(order, Order::CDAB | Order::DCBA) {
        words.reverse();
    }
    words
}

/// A raw decoded value before scaling, kept as integer or float so that sentinel values can be
/// compared exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Raw {
    Int(i128),
    Float(f64),
}

impl Raw {
    pub fn as_f64(self) -> f64 {
        match self {
            Raw::Int(i) => i as f64,
            Raw::Float(f) => f,
        }
    }
}

/// Decodes `ty` from exactly `ty.registers()` registers.
pub fn decode(regs: &[u16], ty: ValueType, order: Order) -> Raw {
    debug_assert_eq!(regs.len(), usize::from(ty.registers()));
    let b = to_big_endian(regs, order);
    match ty {
        ValueType::U16 => Raw::Int(u16::from_be_bytes([b[0], b[1]]).into()),
        ValueType::I16 => Raw::Int(i16::from_be_bytes([b[0], b[1]]).into()),
        ValueType::U32 => Raw::Int(u32::from_be_bytes([b[0], b[1], b[2], b[3]]).into()),
        ValueType::I32 => Raw::Int(i32::from_be_bytes([b[0], b[1], b[2], b[3]]).into()),
        ValueType::F32 => Raw::Float(f32::from_be_bytes([b[0], b[1], b[2], b[3]]).into()),
        ValueType::U64 => Raw::Int(u64::from_be_bytes(b[..8].try_into().unwrap_or_default()).into()),
        ValueType::I64 => Raw::Int(i64::from_be_bytes(b[..8].try_into().unwrap_or_default()).into()),
        ValueType::F64 => Raw::Float(f64::from_be_bytes(b[..8].try_into().unwrap_or_default())),
    }
}

/// Encodes a raw value (already divided by the register's scale) into registers. Integers are
/// rounded to nearest and saturated at the type's range.
pub fn encode(raw: f64, ty: ValueType, order: Order) -> Vec<u16> {
    let r = raw.round();
    let be: Vec<u8> = match ty {
        ValueType::U16 => (r.clamp(0.0, f64::from(u16::MAX)) as u16).to_be_bytes().to_vec(),
        ValueType::I16 => (r.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16).to_be_bytes().to_vec(),
        ValueType::U32 => (r.clamp(0.0, f64::from(u32::MAX)) as u32).to_be_bytes().to_vec(),
        ValueType::I32 => (r.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32).to_be_bytes().to_vec(),
        ValueType::U64 => (r.max(0.0) as u64).to_be_bytes().to_vec(),
        ValueType::I64 => (r as i64).to_be_bytes().to_vec(),
        ValueType::F32 => (raw as f32).to_be_bytes().to_vec(),
        ValueType::F64 => raw.to_be_bytes().to_vec(),
    };
    from_big_endian(&be, order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_of_a_32_bit_value() {
        // 0x11223344 laid out by each order, worked out by hand.
        let cases = [
            (Order::ABCD, [0x1122, 0x3344]),
            (Order::CDAB, [0x3344, 0x1122]),
            (Order::BADC, [0x2211, 0x4433]),
            (Order::DCBA, [0x4433, 0x2211]),
        ];
        for (order, regs) in cases {
            assert_eq!(decode(&regs, ValueType::U32, order), Raw::Int(0x1122_3344), "{order:?}");
            assert_eq!(encode(f64::from(0x1122_3344u32), ValueType::U32, order), regs.to_vec(), "{order:?}");
        }
    }

    #[test]
    fn orders_of_a_64_bit_value() {
        let v: u64 = 0x0102_0304_0506_0708;
        let cases = [
            (Order::ABCD, [0x0102, 0x0304, 0x0506, 0x0708]),
            (Order::CDAB, [0x0708, 0x0506, 0x0304, 0x0102]),
            (Order::BADC, [0x0201, 0x0403, 0x0605, 0x0807]),
            (Order::DCBA, [0x0807, 0x0605, 0x0403, 0x0201]),
        ];
        for (order, regs) in cases {
            assert_eq!(decode(&regs, ValueType::U64, order), Raw::Int(i128::from(v)), "{order:?}");
        }
    }

    #[test]
    fn every_type_in_every_order_round_trips() {
        let values: &[(ValueType, f64)] = &[
            (ValueType::U16, 65_535.0),
            (ValueType::I16, -1234.0),
            (ValueType::U32, 4_000_000_000.0),
            (ValueType::I32, -2_000_000_000.0),
            (ValueType::U64, 9_007_199_254_740_000.0),
            (ValueType::I64, -9_007_199_254_740_000.0),
            (ValueType::F32, 230.5),
            (ValueType::F64, 123_456_789.123_456),
        ];
        for order in [Order::ABCD, Order::DCBA, Order::BADC, Order::CDAB] {
            for &(ty, v) in values {
                let regs = encode(v, ty, order);
                assert_eq!(regs.len(), usize::from(ty.registers()));
                assert_eq!(decode(&regs, ty, order).as_f64(), v, "{ty:?} {order:?}");
            }
        }
    }

    #[test]
    fn known_float_bit_patterns() {
        // 230.0f32 = 0x43660000; 1.0f64 = 0x3FF0000000000000.
        assert_eq!(decode(&[0x4366, 0x0000], ValueType::F32, Order::ABCD), Raw::Float(230.0));
        assert_eq!(decode(&[0x0000, 0x4366], ValueType::F32, Order::CDAB), Raw::Float(230.0));
        assert_eq!(decode(&[0x3FF0, 0, 0, 0], ValueType::F64, Order::ABCD), Raw::Float(1.0));
        assert_eq!(decode(&[0xFFFF], ValueType::I16, Order::ABCD), Raw::Int(-1));
        assert_eq!(decode(&[0xFFFF], ValueType::U16, Order::ABCD), Raw::Int(65535));
    }
}
