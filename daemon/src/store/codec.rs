//! The chunk codec: a run of readings of one series, `(ms, f64)` sorted by time, encoded
//! losslessly (every value comes back bit for bit).
//!
//! # Format (codec version 3)
//!
//! A bit stream, most significant bit first:
//!
//! * 8 bits codec version, 32 bits count `n`; nothing more when `n = 0`.
//! * Timestamps: the first as 64 bits; then the first delta (7 bits giving the bit length of
//!   its zigzag, then the zigzag) and the `n - 2` deltas-of-deltas, packed.
//! * Values, 2 bits of mode, then:
//!   * mode 0, 1 or 3 (decimal): 5 bits exponent `e`; every value is `x / 10^e` for an integer
//!     `x` (checked exactly at encoding). Mode 3 packs the `n` integers themselves (gauges);
//!     modes 0 and 1 write the first `x` as 64 bits and pack the deltas (mode 0) or write the
//!     first delta like the timestamps' and pack the deltas-of-deltas (mode 1; counters rising
//!     at a steady rate). The encoder
//!     takes the shortest.
//!   * mode 2 (binary): the first value's 64 bits, then for each next value the XOR with the
//!     previous one: `0` when equal, else `1`, 6 bits of leading zeros, 6 bits of length - 1 and
//!     the meaningful bits.
//!
//! Packing (frame of reference): blocks of up to 128 signed numbers; each block writes its
//! minimum (7 bits giving the bit length of its zigzag, then the zigzag), a 7-bit width `w` of
//! its range, and the numbers minus the minimum. For `w` from 2 to 32 one more bit says how:
//! 0, each in `w` bits; 1, the range's size `R` (its `w - 1` low bits: the top bit is implied)
//! and the numbers as digits of radix `R`, as many to a 64-bit group as fit, each group written
//! in the bits its largest value needs. A block of a range of 200 values then costs 7.75 bits a
//! number instead of 8, of 300 values 8.29 instead of 9: within a few hundredths of a bit of
//! log2(R), what any code needs for numbers spread evenly over the range. The encoder takes the
//! radix only when it is shorter. Before its blocks, a sequence has 1 bit set when its numbers
//! are all equal, and then that number alone (7 bits of length and its zigzag): the timestamps
//! of a regular series cost a few bytes per chunk, however long.
//!
//! Version 2 (no radix flag) and version 1 (zigzag instead of the block minimum, no mode 3) are
//! still read: chunks sealed by earlier builds stay readable and are rewritten in version 3 when
//! their day is sealed again.


/// The codec version written in each chunk.
pub const CODEC_VERSION: u8 = 3;

const BLOCK: usize = 128;
const MAX_EXPONENT: u32 = 18;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CodecError {
    #[error("roll-ups have format version {0}; this build reads versions 1 to {ROLLUP_CODEC_VERSION}")]
    RollupVersion(u8),
    #[error("chunk ends early (truncated or corrupt)")]
    Truncated,
    #[error("chunk has codec version {0}; this build reads versions 1 to {CODEC_VERSION}")]
    Version(u8),
    #[error("chunk has an unknown value mode {0}")]
    Mode(u64),
}

pub(super) struct BitWriter {
    pub(super) buf: Vec<u8>,
    pub(super) acc: u64,
    pub(super) n: u32,
    /// Blocks carry the radix flag (codec version 3, roll-up version 2; off only to write the
    /// earlier versions in tests).
    pub(super) radix: bool,
    /// With `radix`: a sequence of equal numbers may be written as one.
    pub(super) runs: bool,
}

impl BitWriter {
    pub(super) fn new() -> Self {
        BitWriter { buf: Vec::new(), acc: 0, n: 0, radix: true, runs: true }
    }

    /// Writes the low `width` bits of `v` (width <= 64).
    pub(super) fn put(&mut self, v: u64, width: u32) {
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

    pub(super) fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.buf.push((self.acc << (8 - self.n)) as u8);
        }
        self.buf
    }
}

pub(super) struct BitReader<'a> {
    pub(super) b: &'a [u8],
    pub(super) pos: usize,
    /// Blocks carry the radix flag (codec version 3, roll-up version 2).
    pub(super) radix: bool,
}

impl BitReader<'_> {
    pub(super) fn get(&mut self, width: u32) -> Result<u64, CodecError> {
        if width > 64 || self.pos + width as usize > self.b.len() * 8 {
            return Err(CodecError::Truncated);
        }
        if width == 0 {
            return Ok(0);
        }
        // Most reads: the 8 bytes from the current one hold all the bits asked for.
        let (byte, off) = (self.pos / 8, (self.pos % 8) as u32);
        if off + width <= 64 {
            if let Some(word) = self.b.get(byte..byte + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
                self.pos += width as usize;
                return Ok((u64::from_be_bytes(word) << off) >> (64 - width));
            }
        }
        let mut v = 0u64;
        let mut need = width;
        while need > 0 {
            let off = (self.pos % 8) as u32;
            let avail = 8 - off;
            let take = avail.min(need);
            let bits = (u64::from(self.b[self.pos / 8]) >> (avail - take)) & ((1u64 << take) - 1);
            v = if take == 64 { bits } else { (v << take) | bits };
            self.pos += take as usize;
            need -= take;
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

#[cfg(test)]
/// Bits that [`pack`] takes for these numbers.
fn packed_bits(vals: &[u64]) -> u64 {
    vals.chunks(BLOCK).map(|b| 7 + b.len() as u64 * u64::from(b.iter().map(|&v| width(v)).max().unwrap_or(0))).sum()
}

#[cfg(test)]
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

/// How one block of numbers is packed: its minimum, the bit width of its range, and for a range
/// of `span + 1` values that is not a power of two (and at most 2^32), whether the offsets are
/// written in radix `span + 1` (groups of digits, each group one binary number: about
/// log2(span + 1) bits an offset instead of the next whole number of bits).
struct Block {
    lo: i64,
    span: u64,
    width: u32,
    radix: bool,
}

impl Block {
    fn plan(b: &[i64], flags: bool) -> Block {
        let (lo, hi) = b.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let span = hi.wrapping_sub(lo) as u64;
        let width = width(span);
        let plain = b.len() as u64 * u64::from(width);
        let radix = flags && Block::has_flag(width) && radix_bits(span + 1, b.len()) + u64::from(width - 1) < plain;
        Block { lo, span, width, radix }
    }

    /// Widths whose blocks carry the radix flag (a range of 3 to 2^32 values).
    fn has_flag(width: u32) -> bool {
        (2..=32).contains(&width)
    }

    /// Bits the block takes, header included (`flags`: as [`Block::plan`]'s).
    fn bits(&self, n: usize, flags: bool) -> u64 {
        let header = 14 + u64::from(width(zigzag(self.lo))) + u64::from(flags && Block::has_flag(self.width));
        header
            + if self.radix { u64::from(self.width - 1) + radix_bits(self.span + 1, n) } else { n as u64 * u64::from(self.width) }
    }
}

/// Digits of radix `r` (3 to 2^32) that one group holds: the most with `r^k - 1` in 64 bits.
fn radix_group(r: u64) -> usize {
    let (mut k, mut p) = (0, 1u64);
    while let Some(q) = p.checked_mul(r) {
        (k, p) = (k + 1, q);
    }
    k
}

/// Bits of a group of `g` digits of radix `r`: the width of `r^g - 1`.
fn radix_group_bits(r: u64, g: usize) -> u32 {
    width((0..g).fold(1u64, |p, _| p.wrapping_mul(r)).wrapping_sub(1))
}

/// Bits that `n` digits of radix `r` take in groups.
fn radix_bits(r: u64, n: usize) -> u64 {
    let k = radix_group(r);
    (n / k) as u64 * u64::from(radix_group_bits(r, k)) + u64::from(radix_group_bits(r, n % k))
}

/// Bits that [`pack_for`] takes for these numbers (as written with the radix flag).
pub(super) fn for_bits(vals: &[i64]) -> u64 {
    match vals.first() {
        None => 0,
        Some(&v) if vals.iter().all(|&x| x == v) => 1 + 7 + u64::from(width(zigzag(v))),
        Some(_) => 1 + vals.chunks(BLOCK).map(|b| Block::plan(b, true).bits(b.len(), true)).sum::<u64>(),
    }
}

/// Frame-of-reference packing: (version 3) 1 bit set when all numbers are equal, then that number
/// alone; else per block its minimum, a width, (version 3, widths 2 to 32) a flag, and the
/// offsets from the minimum, either in `width` bits each or, with the flag, the range's
/// `width - 1` low bits and the offsets as groups of radix digits (the first offset the least
/// significant digit of its group).
pub(super) fn pack_for(w: &mut BitWriter, vals: &[i64]) {
    if w.radix {
        // Version 3: first 1 bit, set when all the numbers are one (regular timestamps, a
        // counter that did not move): then that number alone.
        match vals.first() {
            None => return,
            Some(&v) if w.runs && vals.iter().all(|&x| x == v) => {
                w.put(1, 1);
                put_signed(w, v);
                return;
            }
            Some(_) => w.put(0, 1),
        }
    }
    for b in vals.chunks(BLOCK) {
        let plan = Block::plan(b, w.radix);
        let z = zigzag(plan.lo);
        w.put(u64::from(width(z)), 7);
        w.put(z, width(z));
        w.put(u64::from(plan.width), 7);
        if w.radix && Block::has_flag(plan.width) {
            w.put(u64::from(plan.radix), 1);
        }
        if plan.radix {
            w.put(plan.span, plan.width - 1);
            let r = plan.span + 1;
            let k = radix_group(r);
            for g in b.chunks(k) {
                let acc = g.iter().rev().fold(0u64, |acc, &v| acc * r + v.wrapping_sub(plan.lo) as u64);
                w.put(acc, radix_group_bits(r, g.len()));
            }
        } else {
            for &v in b {
                w.put(v.wrapping_sub(plan.lo) as u64, plan.width);
            }
        }
    }
}

/// Reads `n` numbers written by [`pack_for`] (without the flag and radix groups when the
/// reader's `radix` is off: codec version 2, roll-up version 1).
pub(super) fn unpack_for(r: &mut BitReader<'_>, n: usize) -> Result<Vec<i64>, CodecError> {
    let mut out = vec![0; n];
    unpack_for_into(r, &mut out)?;
    Ok(out)
}

/// [`unpack_for`] into `out`, as many numbers as it holds (without allocating).
pub(super) fn unpack_for_into(r: &mut BitReader<'_>, out: &mut [i64]) -> Result<(), CodecError> {
    let n = out.len();
    if r.radix && n > 0 && r.get(1)? == 1 {
        out.fill(get_signed(r)?);
        return Ok(());
    }
    let mut at = 0;
    while at < n {
        let zw = r.get(7)? as u32;
        if zw > 64 {
            return Err(CodecError::Truncated);
        }
        let lo = unzigzag(r.get(zw)?);
        let bw = r.get(7)? as u32;
        if bw > 64 {
            return Err(CodecError::Truncated);
        }
        let len = (n - at).min(BLOCK);
        if r.radix && Block::has_flag(bw) && r.get(1)? == 1 {
            let radix = (r.get(bw - 1)? | 1 << (bw - 1)) + 1;
            let k = radix_group(radix);
            let mut left = len;
            while left > 0 {
                let g = left.min(k);
                let mut acc = r.get(radix_group_bits(radix, g))?;
                for x in &mut out[at..at + g] {
                    *x = lo.wrapping_add((acc % radix) as i64);
                    acc /= radix;
                }
                at += g;
                left -= g;
            }
        } else {
            for x in &mut out[at..at + len] {
                *x = lo.wrapping_add(r.get(bw)? as i64);
            }
            at += len;
        }
    }
    Ok(())
}

/// A signed number alone: 7 bits giving the bit length of its zigzag, then the zigzag.
pub(super) fn put_signed(w: &mut BitWriter, v: i64) {
    let z = zigzag(v);
    w.put(u64::from(width(z)), 7);
    w.put(z, width(z));
}

pub(super) fn get_signed(r: &mut BitReader<'_>) -> Result<i64, CodecError> {
    let zw = r.get(7)? as u32;
    Ok(unzigzag(r.get(zw)?))
}

/// Bits that [`put_dod`] takes.
pub(super) fn dod_bits(ds: &[i64]) -> u64 {
    match ds.split_first() {
        Some((first, rest)) => 7 + u64::from(width(zigzag(*first))) + for_bits(rest),
        None => 0,
    }
}

/// The output of [`dod`]: the first delta alone (it is as large as the step, the others are
/// near zero), then the deltas of deltas packed.
pub(super) fn put_dod(w: &mut BitWriter, ds: &[i64]) {
    if let Some((first, rest)) = ds.split_first() {
        put_signed(w, *first);
        pack_for(w, rest);
    }
}

/// [`get_dod`] into `out`, as many numbers as it holds (without allocating).
pub(super) fn get_dod_into(r: &mut BitReader<'_>, out: &mut [i64]) -> Result<(), CodecError> {
    if let Some((first, rest)) = out.split_first_mut() {
        *first = get_signed(r)?;
        unpack_for_into(r, rest)?;
    }
    Ok(())
}

pub(super) fn get_dod(r: &mut BitReader<'_>, n: usize) -> Result<Vec<i64>, CodecError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(n);
    out.push(get_signed(r)?);
    out.extend(unpack_for(r, n - 1)?);
    Ok(out)
}

/// The first delta, then each delta of delta (wrapping: lossless for any input).
pub(super) fn dod(xs: &[i64]) -> Vec<i64> {
    let mut out = Vec::with_capacity(xs.len());
    let mut prev_d = 0i64;
    for w in xs.windows(2) {
        let d = w[1].wrapping_sub(w[0]);
        out.push(d.wrapping_sub(prev_d));
        prev_d = d;
    }
    out
}

pub(super) fn undo_dod(first: i64, ds: &[i64]) -> Vec<i64> {
    let mut out = Vec::with_capacity(ds.len() + 1);
    out.push(first);
    let (mut x, mut d) = (first, 0i64);
    for &dd in ds {
        d = d.wrapping_add(dd);
        x = x.wrapping_add(d);
        out.push(x);
    }
    out
}

pub(super) fn plain_deltas(xs: &[i64]) -> Vec<i64> {
    xs.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect()
}

pub(super) fn undo_plain_deltas(first: i64, ds: &[i64]) -> Vec<i64> {
    let mut out = Vec::with_capacity(ds.len() + 1);
    out.push(first);
    let mut x = first;
    for &d in ds {
        x = x.wrapping_add(d);
        out.push(x);
    }
    out
}

#[cfg(test)]
/// Version 1: the zigzag of the first delta, then of each delta of delta.
fn delta_of_delta(xs: &[i64]) -> Vec<u64> {
    dod(xs).into_iter().map(zigzag).collect()
}

fn undo_delta_of_delta(first: i64, zz: &[u64]) -> Vec<i64> {
    undo_dod(first, &zz.iter().map(|&z| unzigzag(z)).collect::<Vec<_>>())
}

#[cfg(test)]
fn deltas(xs: &[i64]) -> Vec<u64> {
    plain_deltas(xs).into_iter().map(zigzag).collect()
}

fn undo_deltas(first: i64, zz: &[u64]) -> Vec<i64> {
    undo_plain_deltas(first, &zz.iter().map(|&z| unzigzag(z)).collect::<Vec<_>>())
}

/// The smallest exponent `e` with every value exactly `x / 10^e` for an integer `x`, and the
/// integers; `None` when there is none (binary fractions, huge or non-finite values).
pub(super) fn as_decimals(values: &[f64]) -> Option<(u32, Vec<i64>)> {
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
    encode_version(points, CODEC_VERSION)
}

/// Encodes in codec version 3 or (for tests of reading old chunks) 2.
pub(super) fn encode_version(points: &[(i64, f64)], version: u8) -> Vec<u8> {
    let data = encode_with(points, version, true);
    // A chunk of many readings all alike could come out shorter than the decoder's bound on the
    // count allows (see `max_count`): then it is written without the runs of equal numbers.
    if points.len() > max_count(data.len()) {
        return encode_with(points, version, false);
    }
    data
}

fn encode_with(points: &[(i64, f64)], version: u8, runs: bool) -> Vec<u8> {
    let mut w = BitWriter::new();
    w.radix = version >= 3;
    w.runs = runs;
    w.put(u64::from(version), 8);
    w.put(points.len() as u64, 32);
    let Some(&(t0, _)) = points.first() else { return w.finish() };
    let ts: Vec<i64> = points.iter().map(|p| p.0).collect();
    w.put(t0 as u64, 64);
    put_dod(&mut w, &dod(&ts));
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    put_values(&mut w, &values);
    w.finish()
}

/// The most readings a chunk of `len` bytes may hold: every block of up to 128 numbers takes at
/// least its 7-bit width, a bound that keeps corrupt input from allocating much.
pub(super) fn max_count(len: usize) -> usize {
    (len * 8 / 7 + 1) * BLOCK + 1
}

/// A non-empty run of values: 2 bits of mode and the mode's encoding (see the module's notes).
pub(super) fn put_values(w: &mut BitWriter, values: &[f64]) {
    match as_decimals(values) {
        Some((e, xs)) => {
            let (d1, d2) = (plain_deltas(&xs), dod(&xs));
            // Modes 0 and 1 also write the first value's 64 bits.
            let candidates = [(3u64, for_bits(&xs)), (0, 64 + for_bits(&d1)), (1, 64 + dod_bits(&d2))];
            let mode = candidates.iter().min_by_key(|c| c.1).map_or(3, |c| c.0);
            w.put(mode, 2);
            w.put(u64::from(e), 5);
            match mode {
                3 => pack_for(w, &xs),
                0 => {
                    w.put(xs[0] as u64, 64);
                    pack_for(w, &d1);
                }
                _ => {
                    w.put(xs[0] as u64, 64);
                    put_dod(w, &d2);
                }
            }
        }
        None => {
            w.put(2, 2);
            let mut prev = values[0].to_bits();
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
}

/// Reads `n` (> 0) values written by [`put_values`] (or by version 1, `v1`).
pub(super) fn get_values(r: &mut BitReader<'_>, n: usize, v1: bool) -> Result<Vec<f64>, CodecError> {
    Ok(match r.get(2)? {
        mode @ (0 | 1) => {
            let e = r.get(5)? as i32;
            let x0 = r.get(64)? as i64;
            let xs = match (v1, mode) {
                (true, 1) => undo_delta_of_delta(x0, &unpack(r, n - 1)?),
                (true, _) => undo_deltas(x0, &unpack(r, n - 1)?),
                (false, 1) => undo_dod(x0, &get_dod(r, n - 1)?),
                (false, _) => undo_plain_deltas(x0, &unpack_for(r, n - 1)?),
            };
            let p = 10f64.powi(e);
            xs.into_iter().map(|x| x as f64 / p).collect()
        }
        3 if !v1 => {
            let e = r.get(5)? as i32;
            let p = 10f64.powi(e);
            unpack_for(r, n)?.into_iter().map(|x| x as f64 / p).collect()
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
    })
}

/// Decodes a chunk made by [`encode`] (codec version 1, 2 or 3).
pub fn decode(data: &[u8]) -> Result<Vec<(i64, f64)>, CodecError> {
    let mut r = BitReader { b: data, pos: 0, radix: false };
    let version = r.get(8)? as u8;
    if !(1..=CODEC_VERSION).contains(&version) {
        return Err(CodecError::Version(version));
    }
    r.radix = version == CODEC_VERSION;
    let v1 = version == 1;
    let n = r.get(32)? as usize;
    if n == 0 {
        return Ok(Vec::new());
    }
    if n > max_count(data.len()) {
        return Err(CodecError::Truncated);
    }
    let t0 = r.get(64)? as i64;
    let ts = if v1 { undo_delta_of_delta(t0, &unpack(&mut r, n - 1)?) } else { undo_dod(t0, &get_dod(&mut r, n - 1)?) };
    let values = get_values(&mut r, n, v1)?;
    Ok(ts.into_iter().zip(values).collect())
}

/// The roll-up format version written by [`super::rollup_codec::encode_rollups`].
pub const ROLLUP_CODEC_VERSION: u8 = 2;

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
