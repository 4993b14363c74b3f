//! The InfluxDB line-protocol parser and the ingest checks behind `/write` and `/api/v2/write`:
//! every line is either a point or a refusal with a reason, never a panic.
#![no_main]

use energyd::ingest::lineproto::{parse_line, Precision};
use energyd::ingest::lines_to_points;
use libfuzzer_sys::fuzz_target;

/// 2026-11-28T00:00:00Z: a fixed clock, so that a failure replays the same way.
const NOW_MS: i64 = 1_764_288_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    for line in body.lines() {
        let _ = parse_line(line);
    }
    for precision in [Precision::Nanoseconds, Precision::Seconds] {
        let report = lines_to_points(body, precision, NOW_MS, 1096 * 86_400_000, &|m: &str| m.starts_with('b'), false);
        for p in &report.points {
            assert!(p.value.is_finite(), "a stored value must be a finite number: {p:?}");
        }
    }
});
