use super::*;
use crate::store::rollup::HourRollup;
use crate::store::rollup_codec::{decode_ends, decode_rollups, encode_rollups, encode_rollups_version};
use energy_wire::time::HOUR_MS;
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

/// The version 1 encoder of earlier builds (zigzag packing), kept to prove their chunks read.
fn encode_v1(points: &[(i64, f64)]) -> Vec<u8> {
    let mut w = BitWriter::new();
    w.put(1, 8);
    w.put(points.len() as u64, 32);
    let Some(&(t0, _)) = points.first() else { return w.finish() };
    let ts: Vec<i64> = points.iter().map(|p| p.0).collect();
    w.put(t0 as u64, 64);
    pack(&mut w, &delta_of_delta(&ts));
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    let (e, xs) = as_decimals(&values).expect("decimal test data");
    let (d1, d2) = (deltas(&xs), delta_of_delta(&xs));
    let (mode, zz) = if packed_bits(&d2) < packed_bits(&d1) { (1, d2) } else { (0, d1) };
    w.put(mode, 2);
    w.put(u64::from(e), 5);
    w.put(xs[0] as u64, 64);
    pack(&mut w, &zz);
    w.finish()
}

/// Radix groups worked out by hand: `k` the most digits with `R^k - 1` in 64 bits, each group
/// in the width of `R^k - 1`, a last partial group in the width of `R^g - 1`.
#[test]
fn radix_groups_take_log2_of_the_range() {
    // (R, k, bits of a full group, bits of 128 digits)
    let cases: &[(u64, usize, u32, u64)] = &[
        // 3^40 = 1.2e19 < 2^64 < 3^41; 128 = 3 x 40 + 8, 3^8 - 1 = 6560 takes 13 bits.
        (3, 40, 64, 3 * 64 + 13),
        // 40^12 = 1.7e19 < 2^64; 128 = 10 x 12 + 8, 40^8 = 6.6e12 takes 43 bits.
        (40, 12, 64, 10 * 64 + 43),
        // 200^8 = 2.56e18 (61.15 bits); 128 = 16 x 8.
        (200, 8, 62, 16 * 62),
        // 300^7 = 2.19e17 (57.6 bits); 128 = 18 x 7 + 2, 300^2 - 1 = 89,999 takes 17 bits.
        (300, 7, 58, 18 * 58 + 17),
        // 1500^6 = 1.14e19 (63.3 bits); 128 = 21 x 6 + 2, 1500^2 - 1 takes 22 bits.
        (1500, 6, 64, 21 * 64 + 22),
        // 2^32 + 1: one digit a group, 33 bits each (never chosen: plain is 33 bits too).
        ((1 << 32) + 1, 1, 33, 128 * 33),
    ];
    for &(r, k, group, bits) in cases {
        assert_eq!(radix_group(r), k, "R = {r}");
        assert_eq!(radix_group_bits(r, k), group, "R = {r}");
        assert_eq!(radix_bits(r, 128), bits, "R = {r}");
    }
    // A block of a range of 300 values: the sequence's flag, the block's header 7 + 7 + 1
    // bits, the minimum's zigzag, the range's 8 low bits, then the groups; plain would be
    // 128 x 9 = 1152 bits.
    let block: Vec<i64> = (0..128).map(|i| if i == 1 { 1299 } else { 1000 + (i * 7919) % 300 }).collect();
    assert_eq!((block.iter().min(), block.iter().max()), (Some(&1000), Some(&1299)));
    assert_eq!(for_bits(&block), 1 + 15 + 11 + 8 + 18 * 58 + 17);
    // Powers of two and two-value ranges stay plain: no gain to have.
    let pow2: Vec<i64> = (0..128).map(|i| if i == 127 { 255 } else { i * 2 }).collect();
    assert_eq!(for_bits(&pow2), 1 + 15 + 128 * 8);
    let flag: Vec<i64> = (0..128).map(|i| i % 2).collect();
    assert_eq!(for_bits(&flag), 1 + 14 + 128);
    // All equal: the flag and the number (zigzag of 60,000 in 17 bits), however many.
    assert_eq!(for_bits(&[60_000; 1439]), 1 + 7 + 17);
    assert_eq!(for_bits(&[]), 0);
}

#[test]
fn version_2_chunks_and_version_1_rollups_still_read() {
    let gauge: Vec<(i64, f64)> = (0..1440).map(|i| (i * 60_000, 230.0 + ((i * 7919) % 200) as f64 / 10.0)).collect();
    let counter: Vec<(i64, f64)> = (0..1440).map(|i| (i * 60_000, (100_000 + i * 20 + (i * i) % 37) as f64 / 100.0)).collect();
    for pts in [gauge.clone(), counter, vec![(5, 1.5)], vec![(1, 0.1 + 0.2), (2, 1.0 / 3.0)]] {
        let old = encode_version(&pts, 2);
        assert_eq!(old[0], 2);
        assert_eq!(decode(&old).unwrap(), pts);
    }
    // The gauge's 200-value blocks: 8 bits a reading in version 2, 7.75 in version 3.
    assert!(encode(&gauge).len() < encode_version(&gauge, 2).len() * 31 / 32 + 16);
    let day = 1_764_288_000_000i64;
    let hours = gauge_day(day, 300);
    let old = encode_rollups_version(day, &hours, 1);
    assert_eq!(old[0], 1);
    assert_eq!(decode_rollups(day, &old).unwrap(), hours);
}

#[test]
fn version_1_chunks_still_read() {
    let counter: Vec<(i64, f64)> = (0..300).map(|i| (1_000 + i * 60_000, (10_000 + i * 100 + i * 37 % 11) as f64 / 100.0)).collect();
    let gauge: Vec<(i64, f64)> = (0..300).map(|i| (i * 60_000 + (i % 3), 230.0 + ((i * 7919) % 200) as f64 / 10.0)).collect();
    for pts in [counter, gauge, vec![(5, 1.5)]] {
        let back = decode(&encode_v1(&pts)).unwrap();
        assert_eq!(back, pts);
    }
}

/// Bytes per reading for a day of one-minute data, worked out by hand from the packing:
/// timestamps ~0, values the bit width of each block's range (+ 14-30 bits a block).
#[test]
fn block_minimum_packing_takes_the_range_width() {
    let day = |f: &dyn Fn(i64) -> f64| -> Vec<(i64, f64)> { (0..1440).map(|i| (1_764_288_000_000 + i * 60_000, f(i))).collect() };
    // (name, data, most bits per reading): a 200-step gauge needs 7.75 bits in radix 200
    // (8 in plain bits), a counter whose steps vary over 40 values 5.34 (6), a flag 1 bit, a
    // constant nothing; each block of 128 adds 21-40 bits (0.16-0.31 a reading), a chunk's
    // header and regular timestamps 0.1.
    let cases: Vec<(&str, Vec<(i64, f64)>, f64)> = vec![
        ("voltage 220.0-239.9", day(&|i| (2200 + (i * 7919) % 200) as f64 / 10.0), 7.75 + 0.31 + 0.1),
        ("counter +0.20..+0.59 a minute", day(&|i| (100_000 + i * 20 + (0..i).map(|k| (k * 7919) % 40).sum::<i64>()) as f64 / 100.0), 5.34 + 0.2 + 0.1),
        ("0/1 flag", day(&|i| ((i * 7919) % 2) as f64), 1.0 + 0.16 + 0.1),
        ("constant", day(&|_| 49.95), 0.15),
    ];
    for (name, pts, max_bits) in cases {
        let data = roundtrips(&pts);
        let bits = data.len() as f64 * 8.0 / pts.len() as f64;
        assert!(bits <= max_bits, "{name}: {bits:.2} bits a reading, expected at most {max_bits}");
    }
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
    assert_eq!(decode(&[4, 0, 0, 0, 0]), Err(CodecError::Version(4)));
    assert_eq!(decode_rollups(0, &[3, 0, 0, 0]), Err(CodecError::RollupVersion(3)));
    assert_eq!(decode(&[]), Err(CodecError::Truncated));
}

/// The hourly roll-ups of a gauge (voltage from 220.0 V, one decimal, over `steps` values)
/// read every minute for the day starting at `day`: 24 hours of 60 readings.
fn gauge_day(day: i64, steps: i64) -> Vec<HourRollup> {
    (0..24)
        .map(|h| {
            let pts: Vec<(i64, f64)> = (0..60).map(|m| (day + h * HOUR_MS + m * 60_000, (2200 + (h * 60 + m) * 7919 % steps) as f64 / 10.0)).collect();
            HourRollup::of_points(&pts).unwrap()
        })
        .collect()
}

#[test]
fn a_days_rollups_take_a_tenth_of_a_byte_per_reading() {
    let day = 1_764_288_000_000i64;
    let hours = gauge_day(day, 200);
    let data = encode_rollups(day, &hours);
    assert_eq!(decode_rollups(day, &data).unwrap(), hours);
    assert!(data.len() < 1440 / 8, "{} bytes for a day's roll-ups of 1440 readings", data.len());
    // Some hours missing, odd values: still exact.
    let odd = vec![
        HourRollup { hour: day + 3 * HOUR_MS, first_ts: day + 3 * HOUR_MS + 5, first_v: f64::NAN, last_ts: day + 4 * HOUR_MS - 1, last_v: 1.0 / 3.0, min: -0.0, max: f64::INFINITY, sum: 1e300, count: 7 },
        HourRollup::of_point(day + 23 * HOUR_MS + 59 * 60_000, -12.5),
    ];
    let back = decode_rollups(day, &encode_rollups(day, &odd)).unwrap();
    let bits = |h: &[HourRollup]| h.iter().map(|h| (h.hour, h.first_ts, h.last_ts, h.count, [h.first_v, h.last_v, h.min, h.max, h.sum].map(f64::to_bits))).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&odd));
    assert_eq!(decode_rollups(day, &encode_rollups(day, &[])).unwrap(), vec![]);
    for cut in 0..data.len() {
        let _ = decode_rollups(day, &data[..cut]);
    }
}

/// Random hours of a day: (hour, (two offsets in it, three values, count, kind: 0 for values
/// with two decimals, else any bits)).
type AnyHours = std::collections::BTreeMap<i64, (i64, i64, [f64; 3], u64, u32)>;

fn any_hours() -> impl Strategy<Value = AnyHours> {
    proptest::collection::btree_map(0i64..24, (0i64..3_600_000, 0i64..3_600_000, any::<[f64; 3]>(), 1u64..10_000, 0u32..3), 0..24)
}

/// The roll-ups of the day starting at `day` from [`any_hours`].
fn any_day(day: i64, hours: AnyHours) -> Vec<HourRollup> {
    hours
        .into_iter()
        .map(|(h, (a, b, v, count, kind))| {
            let hour = day + h * HOUR_MS;
            let v = if kind == 0 { v.map(|x| (x.fract() * 1e4).round() / 100.0) } else { v };
            HourRollup { hour, first_ts: hour + a.min(b), first_v: v[0], last_ts: hour + a.max(b), last_v: v[1], min: v[0].min(v[1]), max: v[2], sum: v[0] + v[2], count }
        })
        .collect()
}

proptest! {
    #[test]
    fn any_rollups_round_trip(hours in any_hours()) {
        let day = 1_764_288_000_000i64;
        let rs = any_day(day, hours);
        let back = decode_rollups(day, &encode_rollups(day, &rs)).unwrap();
        let bits = |h: &[HourRollup]| h.iter().map(|h| (h.hour, h.first_ts, h.last_ts, h.count, [h.first_v, h.last_v, h.min, h.max, h.sum].map(f64::to_bits))).collect::<Vec<_>>();
        prop_assert_eq!(bits(&back), bits(&rs));
    }

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
    fn any_blocks_round_trip(
        base in any::<i64>(),
        range in prop_oneof![1u64..5, 5u64..1000, Just(1 << 20), (1u64 << 31)..(1 << 33), 1u64..],
        picks in proptest::collection::vec(any::<u64>(), 0..400),
    ) {
        // Numbers spread over a range (its bounds hit), packed and read back.
        let vals: Vec<i64> = picks.iter().enumerate().map(|(i, p)| match i {
            0 => base,
            1 => base.wrapping_add((range - 1) as i64),
            _ => base.wrapping_add((p % range) as i64),
        }).collect();
        let mut w = BitWriter::new();
        pack_for(&mut w, &vals);
        w.put(0b101, 3);
        let data = w.finish();
        prop_assert_eq!(data.len() as u64, (for_bits(&vals) + 3).div_ceil(8));
        let mut r = BitReader { b: &data, pos: 0, radix: true };
        prop_assert_eq!(unpack_for(&mut r, vals.len()).unwrap(), vals);
        prop_assert_eq!(r.get(3).unwrap(), 0b101);
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&data);
        let _ = decode_rollups(0, &data);
    }
}

/// An hour's first and last reading, the values as bits: (hour, first time, first value, last
/// time, last value).
type EndsBits = (i64, i64, u64, i64, u64);

/// The first and last readings as [`decode_rollups`] gives them, to the bit.
fn ends_bits(hours: &[HourRollup]) -> Vec<EndsBits> {
    hours.iter().map(|h| (h.hour, h.first_ts, h.first_v.to_bits(), h.last_ts, h.last_v.to_bits())).collect()
}

/// What [`decode_ends`] hands over, to the bit.
fn decoded_ends(day: i64, data: &[u8]) -> Result<Vec<EndsBits>, CodecError> {
    let mut out = Vec::new();
    decode_ends(day, data, |h| out.push((h.hour, h.first_ts, h.first_v.to_bits(), h.last_ts, h.last_v.to_bits())))?;
    Ok(out)
}

/// The first values of a day packed each way the encoder chooses among (as they are, deltas,
/// deltas of deltas), decimals and binary fractions, version 1 and 2, hours missing: the
/// ends-only decoder reads what the full one reads.
#[test]
fn the_hours_ends_decode_as_the_whole_rollups_do() {
    let day = 1_764_288_000_000i64;
    let counter = |per_hour: &dyn Fn(i64) -> f64, every: i64| -> Vec<HourRollup> {
        (0..24)
            .filter(|h| h % every == 0)
            .map(|h| {
                let pts: Vec<(i64, f64)> = (0..60).map(|m| (day + h * HOUR_MS + m * 60_000 + 7, ((per_hour(h) + m as f64 * 0.37) * 100.0).round() / 100.0)).collect();
                HourRollup::of_points(&pts).unwrap()
            })
            .collect()
    };
    let cases: Vec<(&str, Vec<HourRollup>)> = vec![
        ("a gauge", gauge_day(day, 300)),
        ("a steady counter (deltas of deltas)", counter(&|h| 1000.0 + h as f64 * 22.2, 1)),
        ("a counter by the hour of day (deltas)", counter(&|h| 1000.0 + (h * h) as f64 * 3.1, 1)),
        ("a counter with hours missing", counter(&|h| 50_000.0 + (h * 7919 % 97) as f64 * 40.0 + h as f64 * 4000.0, 5)),
        ("one hour", counter(&|_| 12.34, 24)),
        ("binary fractions", vec![HourRollup::of_points(&[(day + 5, 0.1 + 0.2), (day + 9, 1.0 / 3.0)]).unwrap(), HourRollup::of_point(day + 23 * HOUR_MS, f64::NAN)]),
        ("nothing", vec![]),
    ];
    for (name, hours) in &cases {
        for version in [1, 2] {
            let data = encode_rollups_version(day, hours, version);
            assert_eq!(decoded_ends(day, &data), Ok(ends_bits(&decode_rollups(day, &data).unwrap())), "{name}, version {version}");
            assert_eq!(decoded_ends(day, &data).unwrap(), ends_bits(hours), "{name}, version {version}");
            for cut in 0..data.len() {
                let _ = decoded_ends(day, &data[..cut]);
            }
        }
    }
    assert_eq!(decoded_ends(0, &[3, 0, 0, 0]), Err(CodecError::RollupVersion(3)));
    assert_eq!(decoded_ends(0, &[2, 0, 0]), Err(CodecError::Truncated));
}

/// Bit `i` of `b`, most significant first: the reference the reader's word-at-a-time reads are
/// checked against.
fn bit(b: &[u8], i: usize) -> u64 {
    u64::from(b[i / 8] >> (7 - i % 8) & 1)
}

proptest! {
    #[test]
    fn any_rollups_ends_decode_as_the_whole_rollups_do(hours in any_hours()) {
        let day = 1_764_288_000_000i64;
        let rs = any_day(day, hours);
        for version in [1, 2] {
            let data = encode_rollups_version(day, &rs, version);
            prop_assert_eq!(decoded_ends(day, &data).unwrap(), ends_bits(&rs));
        }
    }

    /// Reads of any widths at any bit position give the bits there, near the end of the data
    /// too, and a read past the end is an error.
    #[test]
    fn reads_of_any_width_give_the_bits_there(data in proptest::collection::vec(any::<u8>(), 0..40), widths in proptest::collection::vec(0u32..=64, 0..60)) {
        let mut r = BitReader { b: &data, pos: 0, radix: true };
        let mut pos = 0usize;
        for w in widths {
            if pos + w as usize > data.len() * 8 {
                prop_assert_eq!(r.get(w), Err(CodecError::Truncated));
                prop_assert_eq!(r.pos, pos);
                continue;
            }
            let want = (pos..pos + w as usize).fold(0u64, |acc, i| acc << 1 | bit(&data, i));
            prop_assert_eq!(r.get(w), Ok(want));
            pos += w as usize;
            prop_assert_eq!(r.pos, pos);
        }
    }

    #[test]
    fn random_bytes_never_panic_the_ends(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decoded_ends(0, &data);
    }
}
