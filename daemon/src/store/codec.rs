//! The chunk codec: a run of readings of one series, `(ms, f64)` sorted by time, encoded
//! losslessly (every value comes back bit for bit).
//!
//! # Format (codec version 1)
//!
//! A bit stream, most significant bit first:
//!
//! * 8 bits codec version, 32 bits count `n`; nothing more when `n = 0`.
//! * Timestamps: the first as 64 bits; then the zigzag of the first delta followed by the
//!   zigzag of each delta-of-delta (`n - 1` numbers), bit-packed.
//! * Values, 2 bits of mode, then:
//!   * mode 0 or 1 (decimal): 5 bits exponent `e`; every value is `x / 10^e` for an integer `x`
//!     (checked exactly at encoding); the first `x` as 64 bits, then the zigzag of the deltas
//!     (mode 0) or of the first delta and the deltas-of-deltas (mode 1), bit-packed. Counters
//!     rising at a steady rate take mode 1, gauges mode 0; the encoder takes the shorter.
//!   * mode 2 (binary): the first value's 64 bits, then for each next value the XOR with the
//!     previous one: `0` when equal, else `1`, 6 bits of leading zeros, 6 bits of length - 1 and
//!     the meaningful bits.
//!
//! Bit packing: blocks of up to 128 numbers, each block a 7-bit width `w` then each number in
//! `w` bits. A regular one-minute series costs 7 bits per 128 timestamps.

/// The codec version written in each chunk.
pub const CODEC_VERSION: u8 = 1;

const BLOCK: usize = 128;
const MAX_EXPONENT: u32 = 18;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CodecError {
    #[error("chunk ends early (truncated or corrupt)")]
    Truncated,
    #[error("chunk has codec version {0}; this build reads version {CODEC_VERSION}")]
    Version(u8),
    #[error("chunk has an unknown value mode {0}")]
    Mode(u64),
}

struct BitWriter {
    buf: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn new() -> Self {
        BitWriter { buf: Vec::new(), acc: 0, n: 0 }
    }

    /// Writes the low `width` bits of `v` (width <= 64).
    fn put(&mut self, v: u64, width: u32) {
        if width > 32 {
            self.put(v >> 32, width - 32);
            self.put(v & 0xffff_ffff, 32);
            return;
        }
        if width == 0 {
            return;
        }
        let v = v & ((1u64 << width) - 1);
        self.acc = (self.acc << width) | v;
        self.n += width;
        while self.n >= 8 {
            self.n -= 8;
            self.buf.push((self.acc >> self.n) as u8);
        }
        self.acc &= (1u64 << self.n) - 1;
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.buf.push((self.acc << (8 - self.n)) as u8);
        }
        self.buf
    }
}

struct BitReader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn get(&mut self, width: u32) -> Result<u64, CodecError> {
        if width > 32 {
            let hi = self.get(width - 32)?;
            return Ok((hi << 32) | self.get(32)?);
        }
        if self.pos + width as usize > self.b.len() * 8 {
            return Err(CodecError::Truncated);
        }
        let mut v = 0u64;
        for _ in 0..width {
            let bit = (self.b[self.pos / 8] >> (7 - self.pos % 8)) & 1;
            v = (v << 1) | u64::from(bit);
            self.pos += 1;
        }
        Ok(v)
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn width(v: u64) -> u32 {
    64 - v.leading_zeros()
}

/// Bits that [`pack`] takes for these numbers.
fn packed_bits(vals: &[u64]) -> u64 {
    vals.chunks(BLOCK).map(|b| 7 + b.len() as u64 * u64::from(b.iter().map(|&v| width(v)).max().unwrap_or(0))).sum()
}

fn pack(w: &mut BitWriter, vals: &[u64]) {
    for b in vals.chunks(BLOCK) {
        let bw = b.iter().map(|&v| width(v)).max().unwrap_or(0);
        w.put(u64::from(bw), 7);
        for &v in b {
            w.put(v, bw);
        }
    }
}

fn unpack(r: &mut BitReader<'_>, n: usize) -> Result<Vec<u64>, CodecError> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let bw = r.get(7)? as u32;
        if bw > 64 {
            return Err(CodecError::Truncated);
        }
        for _ in 0..(n - out.len()).min(BLOCK) {
            out.push(r.get(bw)?);
        }
    }
    Ok(out)
}

/// Zigzag of the first delta, then of each delta of delta (wrapping: lossless for any input).
fn delta_of_delta(xs: &[i64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(xs.len());
    let mut prev_d = 0i64;
    for w in xs.windows(2) {
        let d = w[1].wrapping_sub(w[0]);
        out.push(zigzag(d.wrapping_sub(prev_d)));
        prev_d = d;
    }
    out
}

fn undo_delta_of_delta(first: i64, zz: &[u64]) -> Vec<i64> {
    let mut out = Vec::with_capacity(zz.len() + 1);
    out.push(first);
    let (mut x, mut d) = (first, 0i64);
    for &z in zz {
        d = d.wrapping_add(unzigzag(z));
        x = x.wrapping_add(d);
        out.push(x);
    }
    out
}

fn deltas(xs: &[i64]) -> Vec<u64> {
    xs.windows(2).map(|w| zigzag(w[1].wrapping_sub(w[0]))).collect()
}

fn undo_deltas(first: i64, zz: &[u64]) -> Vec<i64> {
    let mut out = Vec::with_capacity(zz.len() + 1);
    out.push(first);
    let mut x = first;
    for &z in zz {
        x = x.wrapping_add(unzigzag(z));
        out.push(x);
    }
    out
}

/// The smallest exponent `e` with every value exactly `x / 10^e` for an integer `x`, and the
/// integers; `None` when there is none (binary fractions, huge or non-finite values).
fn as_decimals(values: &[f64]) -> Option<(u32, Vec<i64>)> {
    'e: for e in 0..=MAX_EXPONENT {
        let p = 10f64.powi(e as i32);
        let mut xs = Vec::with_capacity(values.len());
        for &v in values {
            let x = (v * p).round();
            // Checked on the integer, as decoding computes it (so -0.0 is not taken for 0).
            if !x.is_finite() || x.abs() >= 9.0e15 || ((x as i64) as f64 / p).to_bits() != v.to_bits() {
                continue 'e;
            }
            xs.push(x as i64);
        }
        return Some((e, xs));
    }
    None
}

/// Encodes readings sorted by time.
pub fn encode(points: &[(i64, f64)]) -> Vec<u8> {
    let mut w = BitWriter::new();
    w.put(u64::from(CODEC_VERSION), 8);
    w.put(points.len() as u64, 32);
    let Some(&(t0, v0)) = points.first() else { return w.finish() };
    let ts: Vec<i64> = points.iter().map(|p| p.0).collect();
    w.put(t0 as u64, 64);
    pack(&mut w, &delta_of_delta(&ts));
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    match as_decimals(&values) {
        Some((e, xs)) => {
            let (d1, d2) = (deltas(&xs), delta_of_delta(&xs));
            let (mode, zz) = if packed_bits(&d2) < packed_bits(&d1) { (1, d2) } else { (0, d1) };
            w.put(mode, 2);
            w.put(u64::from(e), 5);
            w.put(xs[0] as u64, 64);
            pack(&mut w, &zz);
        }
        None => {
            w.put(2, 2);
            let mut prev = v0.to_bits();
            w.put(prev, 64);
            for &v in &values[1..] {
                let x = v.to_bits() ^ prev;
                prev = v.to_bits();
                if x == 0 {
                    w.put(0, 1);
                } else {
                    let (lz, tz) = (x.leading_zeros(), x.trailing_zeros());
                    let len = 64 - lz - tz;
                    w.put(1, 1);
                    w.put(u64::from(lz), 6);
                    w.put(u64::from(len - 1), 6);
                    w.put(x >> tz, len);
                }
            }
        }
    }
    w.finish()
}

/// Decodes a chunk made by [`encode`].
pub fn decode(data: &[u8]) -> Result<Vec<(i64, f64)>, CodecError> {
    let mut r = BitReader { b: data, pos: 0 };
    let version = r.get(8)? as u8;
    if version != CODEC_VERSION {
        return Err(CodecError::Version(version));
    }
    let n = r.get(32)? as usize;
    if n == 0 {
        return Ok(Vec::new());
    }
    // Every block of up to 128 numbers takes at least its 7-bit width: a bound on `n` that keeps
    // corrupt input from allocating much.
    if n > (data.len() * 8 / 7 + 1) * BLOCK + 1 {
        return Err(CodecError::Truncated);
    }
    let t0 = r.get(64)? as i64;
    let ts = undo_delta_of_delta(t0, &unpack(&mut r, n - 1)?);
    let values: Vec<f64> = match r.get(2)? {
        mode @ (0 | 1) => {
            let e = r.get(5)? as i32;
            let x0 = r.get(64)? as i64;
            let zz = unpack(&mut r, n - 1)?;
            let xs = if mode == 1 { undo_delta_of_delta(x0, &zz) } else { undo_deltas(x0, &zz) };
            let p = 10f64.powi(e);
            xs.into_iter().map(|x| x as f64 / p).collect()
        }
        2 => {
            let mut prev = r.get(64)?;
            let mut out = Vec::with_capacity(n);
            out.push(f64::from_bits(prev));
            for _ in 1..n {
                if r.get(1)? == 1 {
                    let lz = r.get(6)? as u32;
                    let len = r.get(6)? as u32 + 1;
                    if lz + len > 64 {
                        return Err(CodecError::Truncated);
                    }
                    prev ^= r.get(len)? << (64 - lz - len);
                }
                out.push(f64::from_bits(prev));
            }
            out
        }
        m => return Err(CodecError::Mode(m)),
    };
    Ok(ts.into_iter().zip(values).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrips(points: &[(i64, f64)]) -> Vec<u8> {
        let data = encode(points);
        let back = decode(&data).unwrap();
        assert_eq!(back.len(), points.len());
        for (a, b) in points.iter().zip(&back) {
            assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()), "{a:?} came back as {b:?}");
        }
        data
    }

    #[test]
    fn meter_data_takes_about_a_byte_per_reading() {
        // A day of one-minute readings of a counter with two decimals, rising unevenly.
        let mut v = 12_345.67f64;
        let counter: Vec<(i64, f64)> = (0..1440)
            .map(|i| {
                v = ((v + 0.37 + f64::from(i % 7) * 0.01) * 100.0).round() / 100.0;
                (1_764_288_000_000 + i64::from(i) * 60_000, v)
            })
            .collect();
        let bytes = roundtrips(&counter).len();
        assert!(bytes < 1440 * 2, "{bytes} bytes for 1440 counter readings");
        // A gauge (voltage with one decimal).
        let gauge: Vec<(i64, f64)> = (0..1440).map(|i| (i64::from(i) * 60_000, 2300.0 / 10.0 + f64::from((i * 37) % 50) / 10.0)).collect();
        let bytes = roundtrips(&gauge).len();
        assert!(bytes < 1440 * 2, "{bytes} bytes for 1440 gauge readings");
    }

    #[test]
    fn odd_values_round_trip_bit_for_bit() {
        let cases: &[(&str, Vec<(i64, f64)>)] = &[
            ("empty", vec![]),
            ("one", vec![(5, 1.5)]),
            ("binary fractions", vec![(1, 0.1 + 0.2), (2, 1.0 / 3.0), (3, 1e-300)]),
            ("signed zeros", vec![(1, 0.0), (2, -0.0), (3, 0.0)]),
            ("non-finite", vec![(1, f64::NAN), (2, f64::INFINITY), (3, f64::NEG_INFINITY), (4, f64::MAX)]),
            ("extreme times", vec![(i64::MIN, 1.0), (0, 2.0), (i64::MAX, 3.0)]),
            ("large integers", vec![(1, 8.9e15), (2, -8.9e15), (3, 1e300)]),
            ("perfectly regular, a few bytes for thousands", (0..20_000).map(|i| (i * 1000, 1000.0 + i as f64 * 0.5)).collect()),
            ("constant", (0..5000).map(|i| (i * 60_000, 7.0)).collect()),
        ];
        for (name, pts) in cases {
            let data = encode(pts);
            let back = decode(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
            let bits = |p: &[(i64, f64)]| p.iter().map(|(t, v)| (*t, v.to_bits())).collect::<Vec<_>>();
            assert_eq!(bits(&back), bits(pts), "{name}");
        }
    }

    #[test]
    fn corrupt_chunks_are_errors_not_panics() {
        let data = encode(&[(1, 1.5), (2, 2.5), (3, 3.25)]);
        for cut in 0..data.len() {
            let _ = decode(&data[..cut]);
        }
        assert_eq!(decode(&[9, 0, 0, 0, 0]), Err(CodecError::Version(9)));
        assert_eq!(decode(&[]), Err(CodecError::Truncated));
    }

    proptest! {
        #[test]
        fn any_readings_round_trip(
            start in any::<i64>(),
            steps in proptest::collection::vec((0i64..10_000_000, any::<u64>(), 0u8..4), 0..400),
        ) {
            let mut t = start;
            let mut pts = Vec::new();
            let mut v = 100.0f64;
            for (dt, bits, kind) in steps {
                t = t.wrapping_add(dt);
                v = match kind {
                    0 => f64::from_bits(bits),
                    1 => v,
                    2 => ((v + (bits % 1000) as f64 / 100.0) * 100.0).round() / 100.0,
                    _ => (bits % 100_000) as f64 / 10.0,
                };
                pts.push((t, v));
            }
            roundtrips(&pts);
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&data);
        }
    }
}
