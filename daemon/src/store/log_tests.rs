use super::*;

const T0: i64 = 1_764_288_000_000;

fn bits(p: &[(i64, i64, f64)]) -> Vec<(i64, i64, u64)> {
    p.iter().map(|&(s, t, v)| (s, t, v.to_bits())).collect()
}

fn gw(gateway: &str, epoch: &str, ranges: Vec<(u64, u64)>) -> GatewayState {
    GatewayState { gateway: gateway.into(), epoch: epoch.into(), first_ms: Some(T0), last_ms: Some(T0 + 5), ranges }
}

/// A group as ingest makes it: `series` series, `minutes` readings each, one a minute, counters
/// rising by a few hundredths and gauges jumping about, two decimals.
fn group(series: i64, minutes: i64) -> Vec<(i64, i64, f64)> {
    let mut out = Vec::new();
    let mut x = 12345u64;
    for s in 1..=series {
        let mut counter = 1000.0 * s as f64;
        for m in 0..minutes {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = if s % 2 == 0 {
                counter += ((x >> 33) % 40) as f64;
                (counter * 100.0).round() / 100.0 / 100.0
            } else {
                (22_000 + ((x >> 33) % 900) as i64) as f64 / 100.0
            };
            out.push((s, T0 + m * 60_000, v));
        }
    }
    out
}

#[test]
fn bodies_come_back_bit_for_bit() {
    // Several series, one of a single point, values that are not decimals, -0.0, NaN,
    // infinities, irregular times; gateway states with and without times; new series.
    let points = vec![
        (1, T0, 1.5),
        (1, T0 + 60_000, 1.75),
        (1, T0 + 119_000, -0.0),
        (3, T0 - 5, f64::NAN),
        (3, T0, f64::INFINITY),
        (3, T0 + 1, 0.1 + 0.2),
        (900, 0, 7.25),
        (901, i64::MAX, 1e-300),
        (1 << 40, i64::MIN, f64::MIN_POSITIVE),
    ];
    let gateways = vec![gw("gw-1", "", vec![(1, 5), (9, 9)]), GatewayState { gateway: "网关".into(), epoch: "e".repeat(32), first_ms: None, last_ms: Some(-3), ranges: vec![] }];
    let new_series = vec![(900, "meter 9".to_string(), "active_power".to_string())];
    let body = decode_body(&encode_body(&points, &gateways, &new_series)).unwrap();
    assert_eq!(bits(&body.points), bits(&points));
    assert_eq!(body.gateways, gateways);
    assert_eq!(body.new_series, new_series);
    // Nothing at all, and ranges only.
    assert_eq!(decode_body(&encode_body(&[], &[], &[])).unwrap(), Body::default());
    let only = decode_body(&encode_body(&[], &gateways[..1], &[])).unwrap();
    assert_eq!((only.points.len(), only.gateways.len()), (0, 1));
    // A long run of equal readings (the bound on the count holds).
    let flat: Vec<(i64, i64, f64)> = (0..100_000).map(|i| (7, T0 + i * 1000, 5.0)).collect();
    assert_eq!(bits(&decode_body(&encode_body(&flat, &[], &[])).unwrap().points), bits(&flat));
}

#[test]
fn a_group_of_minutes_takes_a_few_bytes_per_point() {
    // 3000 series x 16 minutes (a group of 48,000 points): 1.38 bytes per point measured
    // (the gauges' range of 900 hundredths alone needs log2(900) = 9.8 bits a reading; the
    // counters' increments of under 40 hundredths about 5.3 bits); a head_log row took 10.
    let points = group(3000, 16);
    let body = encode_body(&points, &[], &[]);
    let per_point = body.len() as f64 / points.len() as f64;
    assert!(per_point < 1.6, "{per_point:.2} bytes per point");
    assert_eq!(bits(&decode_body(&body).unwrap().points), bits(&points));
}

#[test]
fn corrupt_bodies_are_errors() {
    let points = group(20, 30);
    let body = encode_body(&points, &[gw("g", "", vec![(1, 2)])], &[(3, "m".into(), "voltage_l1".into())]);
    assert_eq!(decode_body(&[]), Err(BodyError::Truncated));
    assert_eq!(decode_body(&[9, 0, 0, 0]), Err(BodyError::Version(9)));
    // Every cut is refused, never misread or a panic.
    for cut in 0..body.len() {
        assert!(decode_body(&body[..cut]).is_err(), "cut at {cut}");
    }
    // Random bytes after the version byte: an error or a body, never a panic; a body decoded
    // encodes and decodes to itself (what the fuzz target `log_decode` checks at length).
    let mut x = 99u64;
    let mut decoded = 0;
    for _ in 0..20_000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let n = ((x >> 40) % 48) as usize;
        let mut b = vec![BODY_VERSION, 0, 0];
        for _ in 0..n {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            b.push((x >> 56) as u8);
        }
        if let Ok(body) = decode_body(&b) {
            decoded += 1;
            let back = decode_body(&encode_body(&body.points, &body.gateways, &body.new_series)).unwrap();
            assert_eq!((bits(&back.points), &back.gateways, &back.new_series), (bits(&body.points), &body.gateways, &body.new_series));
        }
    }
    assert!(decoded > 0);
    // Times at the ends of the range.
    let edge = [GatewayState { gateway: "g".into(), epoch: String::new(), first_ms: Some(i64::MIN), last_ms: Some(i64::MAX), ranges: vec![(0, u64::MAX)] }];
    assert_eq!(decode_body(&encode_body(&[], &edge, &[])).unwrap().gateways, edge);
}

#[test]
fn records_are_framed_and_checked() {
    let body = encode_body(&group(2, 3), &[], &[]);
    let rec = frame(42, &body);
    assert_eq!(rec.len(), HEADER + body.len());
    let (id, got, n) = read_record(&rec).unwrap();
    assert_eq!((id, got, n), (42, body.as_slice(), rec.len()));
    // Any byte changed, or the record cut, and it is not read.
    for i in 0..rec.len() {
        let mut bad = rec.clone();
        bad[i] ^= 0x10;
        assert!(read_record(&bad).is_none(), "byte {i} changed");
    }
    assert!(read_record(&rec[..rec.len() - 1]).is_none());
    assert!(read_record(&[]).is_none());
}

/// Appends `n` records of a small group to a new log in `dir`; returns the log.
fn log_with(dir: &Path, n: u64) -> Log {
    let mut log = Log::open(dir, 0).unwrap();
    for i in 0..n {
        let id = log.append(&encode_body(&group(3, 2 + i as i64), &[], &[])).unwrap();
        assert_eq!(id, i + 1);
    }
    log
}

/// A log of three records in `dir`, closed: its file and bytes.
fn three_records(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = log_with(dir, 3).path().to_path_buf();
    let data = std::fs::read(&path).unwrap();
    (path, data)
}

#[test]
fn a_torn_tail_is_cut_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (path, full) = three_records(dir.path());
    let third = scan(dir.path(), 0, false).unwrap();
    assert_eq!((third.records.len(), third.last_id), (3, 3));
    // The third record half written (a crash during its append).
    let (_, _, n1) = read_record(&full).unwrap();
    let (_, _, n2) = read_record(&full[n1..]).unwrap();
    let cut = n1 + n2 + (full.len() - n1 - n2) / 2;
    std::fs::write(&path, &full[..cut]).unwrap();
    let s = scan(dir.path(), 0, true).unwrap();
    assert_eq!((s.records.len(), s.last_id, s.truncated_bytes), (2, 2, (cut - n1 - n2) as u64));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), (n1 + n2) as u64, "the torn record is cut off");
    // Appending goes on after the last good record.
    let mut log = Log::open(dir.path(), s.last_id).unwrap();
    assert_eq!(log.append(&encode_body(&group(1, 1), &[], &[])).unwrap(), 3);
    drop(log);
    let s = scan(dir.path(), 0, true).unwrap();
    assert_eq!((s.records.len(), s.last_id, s.truncated_bytes), (3, 3, 0));
    // A tail of zeros (the file grown, its data not written) is torn too.
    let mut z = std::fs::read(&path).unwrap();
    z.extend([0u8; 100]);
    std::fs::write(&path, &z).unwrap();
    assert_eq!(scan(dir.path(), 0, true).unwrap().truncated_bytes, 100);
}

#[test]
fn a_damaged_record_before_valid_ones_is_an_error_naming_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut data) = three_records(dir.path());
    let (_, _, n1) = read_record(&data).unwrap();
    data[n1 + HEADER + 2] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    let err = scan(dir.path(), 0, true).unwrap_err();
    match &err {
        LogError::Corrupt { path: p, offset, .. } => assert_eq!((p, *offset), (&path, n1 as u64)),
        e => panic!("{e}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()) && msg.contains(&format!("byte {n1}")), "{msg}");
    // Nothing was cut.
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn records_before_the_position_are_skipped_and_missing_ones_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with(dir.path(), 3);
    let s = scan(dir.path(), 2, false).unwrap();
    assert_eq!(s.records.iter().map(|r| r.0).collect::<Vec<_>>(), vec![3]);
    // A flush covered them: a new file, the old one deleted.
    log.rotate().unwrap();
    assert_eq!(log.append(&encode_body(&group(1, 1), &[], &[])).unwrap(), 4);
    let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, vec![format!("{:020}.log", 4)]);
    assert_eq!(scan(dir.path(), 3, false).unwrap().records.iter().map(|r| r.0).collect::<Vec<_>>(), vec![4]);
    // A position before the file's first record: records were lost.
    let err = scan(dir.path(), 1, false).unwrap_err().to_string();
    assert!(err.contains("record 4 after 1"), "{err}");
    // A record taken back (its group's commit failed) is gone; the next takes its id.
    let mut log = Log::open(dir.path(), 4).unwrap();
    let body = encode_body(&group(2, 2), &[], &[]);
    assert_eq!(log.append(&body).unwrap(), 5);
    log.undo_last((HEADER + body.len()) as u64).unwrap();
    assert_eq!(log.append(&body).unwrap(), 5);
    assert_eq!(scan(dir.path(), 3, false).unwrap().last_id, 5);
}

#[test]
fn a_group_is_sorted_by_series_then_time() {
    // (series, time, value) as a group collects them: line by line (time, then series), a
    // late point of series 2, and a sparse id that takes the comparison sort.
    let group = vec![(2, 60, 1.0), (1, 60, 2.0), (3, 60, 3.0), (2, 120, 4.0), (1, 120, 5.0), (2, 30, 6.0)];
    let want = vec![(1, 60, 2.0), (1, 120, 5.0), (2, 30, 6.0), (2, 60, 1.0), (2, 120, 4.0), (3, 60, 3.0)];
    assert_eq!(crate::store::writer::sort_by_series(group.clone()), want);
    let mut sparse = group;
    sparse.push((1 << 40, 0, 9.0));
    let mut want_sparse = want;
    want_sparse.push((1 << 40, 0, 9.0));
    assert_eq!(crate::store::writer::sort_by_series(sparse), want_sparse);
    assert_eq!(crate::store::writer::sort_by_series(Vec::new()), vec![]);
}
