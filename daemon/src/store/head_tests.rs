use super::*;

#[test]
fn head_log_records_decode_in_both_layouts() {
    let points = [(3i64, 1_764_288_000_000i64, 1.5f64), (4, 1_764_288_000_000, -0.0), (2, 1_764_287_940_000, f64::MAX), (900, 0, 7.25), (1, i64::MAX, 1e-300)];
    let log = encode_head_log(&points);
    assert_eq!(log[0], HEAD_LOG_DELTAS);
    // A line's neighbours take a byte each for series and time, and 8 for the value.
    // (i64::MAX from 0 zigzags to 64 bits: a 10-byte varint.)
    assert_eq!(log.len(), 1 + (1 + 6 + 8) + (1 + 1 + 8) + (1 + 3 + 8) + (2 + 6 + 8) + (2 + 10 + 8));
    let decoded = decode_head_log(&log).unwrap();
    assert_eq!(decoded.len(), points.len());
    for (d, p) in decoded.iter().zip(&points) {
        assert_eq!((d.0, d.1, d.2.to_bits()), (p.0, p.1, p.2.to_bits()));
    }
    // The layout written before (plain varints, no leading 0) still decodes.
    let mut old = Vec::new();
    for &(sid, ts, v) in &points[..4] {
        put_varint(&mut old, sid as u64);
        put_varint(&mut old, ts as u64);
        old.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    let decoded = decode_head_log(&old).unwrap();
    for (d, p) in decoded.iter().zip(&points[..4]) {
        assert_eq!((d.0, d.1, d.2.to_bits()), (p.0, p.1, p.2.to_bits()));
    }
    // A cut record is refused, not misread.
    assert!(decode_head_log(&log[..log.len() - 3]).is_none());
}

#[test]
fn locate_searches_from_the_newest_end() {
    let pts: Vec<(i64, f64)> = [10, 20, 30, 40, 50, 60, 70].iter().map(|&t| (t, t as f64)).collect();
    // (time, expected): Ok(index) when present, Err(insertion index) when not.
    let table: [(i64, Result<usize, usize>); 12] =
        [(5, Err(0)), (10, Ok(0)), (15, Err(1)), (20, Ok(1)), (35, Err(3)), (40, Ok(3)), (60, Ok(5)), (65, Err(6)), (70, Ok(6)), (75, Err(7)), (i64::MIN, Err(0)), (i64::MAX, Err(7))];
    for (ts, want) in table {
        assert_eq!(locate(&pts, ts), want, "time {ts}");
    }
    assert_eq!(locate(&[], 1), Err(0));
    assert_eq!(locate(&[(1, 0.0)], 1), Ok(0));
    assert_eq!(locate(&[(1, 0.0)], 0), Err(0));
    assert_eq!(locate(&[(1, 0.0)], 2), Err(1));
    // Against the plain binary search, every time around every length up to 40.
    for n in 0..40i64 {
        let pts: Vec<(i64, f64)> = (0..n).map(|i| (i * 3, 0.0)).collect();
        for ts in -2..n * 3 + 2 {
            assert_eq!(locate(&pts, ts), pts.binary_search_by_key(&ts, |p| p.0), "{n} points, time {ts}");
        }
    }
}
