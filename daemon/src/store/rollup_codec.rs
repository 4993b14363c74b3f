//! The roll-up codec: the hourly roll-ups of one series and sealed UTC day in one blob (table
//! `rollup_day`), built on the chunk codec's packing ([`super::codec`]): times as offsets in the
//! hour, counts, and the five value columns as decimal integers, each less the column that makes
//! it smallest, sums rounded with their difference in ulps kept (lossless).

use super::codec::{
    as_decimals, dod, dod_bits, for_bits, get_dod_into, get_values, pack_for, plain_deltas, put_dod, put_values, unpack_for, unpack_for_into, BitReader,
    BitWriter, CodecError, ROLLUP_CODEC_VERSION,
};
use super::rollup::{HourEnds, HourRollup};
use energy_wire::time::HOUR_MS;

/// Transforms tried for a roll-up column (2 bits): the column as it is, or less another column.
#[derive(Clone, Copy)]
enum Base {
    None = 0,
    First = 1,
    Last = 2,
    /// The count times the first value (for sums).
    CountFirst = 3,
}

/// Bits of a column packed after one of its transforms, and the transformed numbers.
fn best_transform(col: &[i64], bases: &[(Base, Vec<i64>)]) -> (Base, Vec<i64>) {
    let mut best = (Base::None, col.to_vec());
    let mut bits = for_bits(col);
    for (b, base) in bases {
        let t: Vec<i64> = col.iter().zip(base).map(|(x, y)| x.wrapping_sub(*y)).collect();
        let tb = for_bits(&t);
        if tb < bits {
            (best, bits) = ((*b, t), tb);
        }
    }
    best
}

/// A sum as decimal integer `x` (at exponent `e`, rounded) and the difference in units in the
/// last place between the sum and `x / 10^e`: float sums of decimal readings are rarely exact
/// decimals, but they are within a few ulps of one, so both numbers are small. `None` when the
/// sum is too large or not finite.
fn decimal_with_ulps(v: f64, e: u32) -> Option<(i64, i64)> {
    let p = 10f64.powi(e as i32);
    let x = (v * p).round();
    if !x.is_finite() || x.abs() >= 9.0e15 {
        return None;
    }
    let d = (v.to_bits() as i64).wrapping_sub(((x as i64) as f64 / p).to_bits() as i64);
    Some((x as i64, d))
}

/// Encodes the hourly roll-ups of one series in one UTC day (`day` its start; each roll-up's hour
/// inside it, sorted, distinct). Format: 8 bits version, 24 bits mask of the hours present, then
/// packed (as above) the first and last reading times as offsets within their hour and the
/// counts; then 1 bit: 0, the first values, last values, minimums, maximums and sums as value
/// runs; or 1 (the readings are decimals at one exponent), 5 bits exponent `e` and the five
/// columns as integers at `e` (sums rounded, with their ulp differences packed after them),
/// each column with 2 bits naming what was subtracted from it before packing: nothing, the first
/// value, the last value or count x first value (the first values' own 2 bits: packed as they
/// are, their deltas, or their deltas of deltas). A counter's minimum is its first value and its
/// maximum its last, so those columns cost nothing. Version 2 packs blocks as codec version 3
/// does (with the radix flag); version 1, packed as codec version 2, is still read.
pub fn encode_rollups(day: i64, hours: &[HourRollup]) -> Vec<u8> {
    encode_rollups_version(day, hours, ROLLUP_CODEC_VERSION)
}

/// Encodes roll-ups in version 2 or (for tests of reading old ones) 1.
pub(super) fn encode_rollups_version(day: i64, hours: &[HourRollup], version: u8) -> Vec<u8> {
    let mut w = BitWriter::new();
    w.radix = version >= 2;
    w.put(u64::from(version), 8);
    let mask = hours.iter().fold(0u64, |m, h| m | 1 << ((h.hour - day) / HOUR_MS).clamp(0, 23));
    w.put(mask, 24);
    if hours.is_empty() {
        return w.finish();
    }
    pack_for(&mut w, &hours.iter().map(|h| h.first_ts.wrapping_sub(h.hour)).collect::<Vec<_>>());
    pack_for(&mut w, &hours.iter().map(|h| h.last_ts.wrapping_sub(h.hour)).collect::<Vec<_>>());
    let counts: Vec<i64> = hours.iter().map(|h| h.count as i64).collect();
    pack_for(&mut w, &counts);
    let readings: Vec<f64> = hours.iter().flat_map(|h| [h.first_v, h.last_v, h.min, h.max]).collect();
    let decimal = as_decimals(&readings).and_then(|(e, xs)| {
        let sums: Option<Vec<(i64, i64)>> = hours.iter().map(|h| decimal_with_ulps(h.sum, e)).collect();
        Some((e, xs, sums?))
    });
    let Some((e, xs, sums)) = decimal else {
        w.put(0, 1);
        let columns: [fn(&HourRollup) -> f64; 5] = [|h| h.first_v, |h| h.last_v, |h| h.min, |h| h.max, |h| h.sum];
        for f in columns {
            put_values(&mut w, &hours.iter().map(f).collect::<Vec<_>>());
        }
        return w.finish();
    };
    w.put(1, 1);
    w.put(u64::from(e), 5);
    let col = |k: usize| -> Vec<i64> { xs.iter().skip(k).step_by(4).copied().collect() };
    let (first, last, min, max) = (col(0), col(1), col(2), col(3));
    // The first values: as they are (0), deltas (1) or deltas of deltas (2).
    let (d1, d2) = (plain_deltas(&first), dod(&first));
    let options = [(0u64, for_bits(&first)), (1, 64 + for_bits(&d1)), (2, 64 + dod_bits(&d2))];
    let mode = options.iter().min_by_key(|o| o.1).map_or(0, |o| o.0);
    w.put(mode, 2);
    match mode {
        0 => pack_for(&mut w, &first),
        1 => {
            w.put(first[0] as u64, 64);
            pack_for(&mut w, &d1);
        }
        _ => {
            w.put(first[0] as u64, 64);
            put_dod(&mut w, &d2);
        }
    }
    let count_first: Vec<i64> = counts.iter().zip(&first).map(|(c, f)| c.wrapping_mul(*f)).collect();
    let sum_x: Vec<i64> = sums.iter().map(|s| s.0).collect();
    for (column, bases) in [
        (&last, vec![(Base::First, first.clone())]),
        (&min, vec![(Base::First, first.clone()), (Base::Last, last.clone())]),
        (&max, vec![(Base::First, first.clone()), (Base::Last, last.clone())]),
        (&sum_x, vec![(Base::CountFirst, count_first)]),
    ] {
        let (base, t) = best_transform(column, &bases);
        w.put(base as u64, 2);
        pack_for(&mut w, &t);
    }
    pack_for(&mut w, &sums.iter().map(|s| s.1).collect::<Vec<_>>());
    w.finish()
}

/// Decodes roll-ups made by [`encode_rollups`] for the day starting at `day`.
pub fn decode_rollups(day: i64, data: &[u8]) -> Result<Vec<HourRollup>, CodecError> {
    let (mut r, mask) = open_blob(data)?;
    let hours: Vec<i64> = (0..24).filter(|i| mask >> i & 1 == 1).map(|i| day + i * HOUR_MS).collect();
    let n = hours.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let first_off = unpack_for(&mut r, n)?;
    let last_off = unpack_for(&mut r, n)?;
    let counts = unpack_for(&mut r, n)?;
    let mut cols: Vec<Vec<f64>> = Vec::with_capacity(5);
    if r.get(1)? == 0 {
        for _ in 0..5 {
            cols.push(get_values(&mut r, n, false)?);
        }
    } else {
        let e = r.get(5)? as i32;
        let p = 10f64.powi(e);
        let mut first = vec![0i64; n];
        get_first_values(&mut r, &mut first)?;
        let mut ints = vec![first.clone()];
        for _ in 0..4 {
            let base = r.get(2)?;
            let t = unpack_for(&mut r, n)?;
            let col: Vec<i64> = (0..n)
                .map(|i| {
                    let b = match base {
                        1 => first[i],
                        2 => ints.get(1).map_or(0, |l: &Vec<i64>| l[i]),
                        3 => counts[i].wrapping_mul(first[i]),
                        _ => 0,
                    };
                    t[i].wrapping_add(b)
                })
                .collect();
            ints.push(col);
        }
        let ulps = unpack_for(&mut r, n)?;
        for (k, col) in ints.iter().enumerate() {
            cols.push(
                col.iter()
                    .zip(&ulps)
                    .map(|(&x, &d)| {
                        let v = x as f64 / p;
                        if k == 4 {
                            f64::from_bits((v.to_bits() as i64).wrapping_add(d) as u64)
                        } else {
                            v
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok((0..n)
        .map(|i| HourRollup {
            hour: hours[i],
            first_ts: hours[i].wrapping_add(first_off[i]),
            first_v: cols[0][i],
            last_ts: hours[i].wrapping_add(last_off[i]),
            last_v: cols[1][i],
            min: cols[2][i],
            max: cols[3][i],
            sum: cols[4][i],
            count: counts[i] as u64,
        })
        .collect())
}

/// A blob's version checked and the mask of the hours it holds; the reader after them.
fn open_blob(data: &[u8]) -> Result<(BitReader<'_>, u64), CodecError> {
    let mut r = BitReader { b: data, pos: 0, radix: false };
    let version = r.get(8)? as u8;
    if !(1..=ROLLUP_CODEC_VERSION).contains(&version) {
        return Err(CodecError::RollupVersion(version));
    }
    r.radix = version == ROLLUP_CODEC_VERSION;
    let mask = r.get(24)?;
    Ok((r, mask))
}

/// The decimal first values into `first` (one per hour, at least one): their 2 bits of mode,
/// then as they are (0), the first and its deltas (1), or the first and its deltas of deltas (2).
fn get_first_values(r: &mut BitReader<'_>, first: &mut [i64]) -> Result<(), CodecError> {
    match r.get(2)? {
        0 => unpack_for_into(r, first)?,
        mode @ (1 | 2) => {
            let Some((x0, rest)) = first.split_first_mut() else { return Ok(()) };
            *x0 = r.get(64)? as i64;
            let (mut x, mut d) = (*x0, 0i64);
            if mode == 1 {
                unpack_for_into(r, rest)?;
                for v in rest.iter_mut() {
                    x = x.wrapping_add(*v);
                    *v = x;
                }
            } else {
                get_dod_into(r, rest)?;
                for v in rest.iter_mut() {
                    d = d.wrapping_add(*v);
                    x = x.wrapping_add(d);
                    *v = x;
                }
            }
        }
        m => return Err(CodecError::Mode(m)),
    }
    Ok(())
}

/// The hours a day's blob holds: at most 24.
const DAY_HOURS: usize = 24;

/// Decodes only the first and last readings of the roll-ups made by [`encode_rollups`] for the
/// day starting at `day`, hour by hour in order, each to `each`: the same numbers, bit for bit,
/// as [`decode_rollups`] gives, without building the roll-ups (the columns after the last
/// values are not read) and, for decimal readings, without allocating.
pub fn decode_ends(day: i64, data: &[u8], mut each: impl FnMut(HourEnds)) -> Result<(), CodecError> {
    let (mut r, mask) = open_blob(data)?;
    let n = mask.count_ones() as usize;
    if n == 0 {
        return Ok(());
    }
    let [mut first_off, mut last_off, mut counts, mut first, mut last] = [[0i64; DAY_HOURS]; 5];
    unpack_for_into(&mut r, &mut first_off[..n])?;
    unpack_for_into(&mut r, &mut last_off[..n])?;
    unpack_for_into(&mut r, &mut counts[..n])?;
    let hours = (0..DAY_HOURS as i64).filter(|i| mask >> i & 1 == 1).map(|i| day + i * HOUR_MS);
    let at = |i: usize, hour: i64, first_v: f64, last_v: f64| HourEnds {
        hour,
        first_ts: hour.wrapping_add(first_off[i]),
        first_v,
        last_ts: hour.wrapping_add(last_off[i]),
        last_v,
    };
    if r.get(1)? == 0 {
        // Values that are not decimals at one exponent: as decode_rollups reads them.
        let (first_v, last_v) = (get_values(&mut r, n, false)?, get_values(&mut r, n, false)?);
        for (i, hour) in hours.enumerate() {
            each(at(i, hour, first_v[i], last_v[i]));
        }
        return Ok(());
    }
    let p = 10f64.powi(r.get(5)? as i32);
    get_first_values(&mut r, &mut first[..n])?;
    // The last values, less what their 2 bits name (as in decode_rollups, where no column is
    // decoded yet for "the last values" to be subtracted: 0).
    let base = r.get(2)?;
    unpack_for_into(&mut r, &mut last[..n])?;
    for (i, hour) in hours.enumerate() {
        let b = match base {
            1 => first[i],
            3 => counts[i].wrapping_mul(first[i]),
            _ => 0,
        };
        each(at(i, hour, first[i] as f64 / p, last[i].wrapping_add(b) as f64 / p));
    }
    Ok(())
}
