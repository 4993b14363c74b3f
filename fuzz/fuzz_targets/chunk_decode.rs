//! The embedded store's chunk and roll-up decoders, which read what is on disk (a corrupt or
//! truncated file must give an error, never a panic or a huge allocation). Whatever decodes is
//! encoded again and must come back bit for bit: the codec is lossless for any readings.
#![no_main]

use energyd::store::codec::{decode, encode};
use energyd::store::rollup_codec::{decode_rollups, encode_rollups};
use libfuzzer_sys::fuzz_target;

/// 2026-11-28T00:00:00Z, the day the roll-ups are decoded for.
const DAY: i64 = 1_764_288_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(points) = decode(data) {
        let again = decode(&encode(&points)).expect("a chunk just encoded decodes");
        let bits = |p: &[(i64, f64)]| p.iter().map(|(t, v)| (*t, v.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&again), bits(&points));
    }
    if let Ok(hours) = decode_rollups(DAY, data) {
        // Decoded hours are distinct and inside the day, as `encode_rollups` wants them.
        let again = decode_rollups(DAY, &encode_rollups(DAY, &hours)).expect("roll-ups just encoded decode");
        let bits = |h: &[energyd::store::HourRollup]| {
            h.iter().map(|h| (h.hour, h.first_ts, h.last_ts, h.count, [h.first_v, h.last_v, h.min, h.max, h.sum].map(f64::to_bits))).collect::<Vec<_>>()
        };
        assert_eq!(bits(&again), bits(&hours));
    }
});
