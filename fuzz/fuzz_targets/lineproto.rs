//! The InfluxDB line-protocol parser and the ingest checks behind `/write` and `/api/v2/write`:
//! every line is either a point or a refusal with a reason, never a panic; whatever the parser
//! accepts writes back to a line that parses to the same point (round trip), and no accepted
//! line has a tag key twice.
#![no_main]

use energyd::ingest::lineproto::{entries, parse_line, Precision};
use energyd::ingest::lines_to_points;
use libfuzzer_sys::fuzz_target;

/// 2026-11-28T00:00:00Z: a fixed clock, so that a failure replays the same way.
const NOW_MS: i64 = 1_764_288_000_000;

fuzz_target!(|data: &[u8]| {
    for entry in entries(data) {
        let Ok(line) = entry.parsed else { continue };
        for (i, (k, _)) in line.tags.iter().enumerate() {
            assert!(line.tags[..i].iter().all(|(k2, _)| k2 != k), "accepted a duplicate tag key `{k}`: {line:?}");
        }
        let text = line.to_text().unwrap_or_else(|| panic!("an accepted line cannot be written back: {line:?}"));
        match parse_line(&text) {
            Ok(Some(again)) => assert_eq!(again, line, "`{text}` reads back differently"),
            other => panic!("`{text}` (written from {line:?}) reads back as {other:?}"),
        }
    }
    for precision in [Precision::Nanoseconds, Precision::Seconds] {
        let report = lines_to_points(data, precision, NOW_MS, 1096 * 86_400_000, &|m: &str| m.starts_with('b'), false);
        for p in &report.points {
            assert!(p.value.is_finite(), "a stored value must be a finite number: {p:?}");
        }
    }
});
