//! Sealed days and roll-ups.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_days_read_like_raw_points_and_take_late_data() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let store = open(dir.path(), metrics.clone()).unwrap();
    let q = Quantity::ActiveEnergyImport;
    let day0 = day_of(1_764_288_000_000);
    // Three days of one-minute counter readings with two decimals.
    let pts: Vec<(i64, f64)> = (0..3 * 1440).map(|i| (day0 + i * 60_000, 1000.0 + (i as f64 * 0.37 * 100.0).round() / 100.0)).collect();
    let write = |v: &[(i64, f64)]| v.iter().map(|&(ts, value)| Point { meter: "m".into(), quantity: q, ts, value }).collect::<Vec<_>>();
    for c in pts.chunks(1000) {
        store.write_points(write(c)).await.unwrap();
    }
    let before_bytes = store.bytes();
    let all = |s: &Embedded| {
        let s = s.clone();
        async move {
            let r = s.rollups("m", q, 0, i64::MAX).await.unwrap();
            let c = s.counter_rollups_many(vec![("m".into(), q), ("m".into(), q)], day0 + DAY_MS + 2 * HOUR_MS, day0 + DAY_MS + 5 * HOUR_MS).await.unwrap();
            let b = s.reading_before("m", q, day0 + DAY_MS + 90 * 60_000).await.unwrap();
            (r, c, b)
        }
    };
    let open_rollups = all(&store).await;
    assert_eq!(open_rollups.0.len(), 72);
    let o = store.compact().await.unwrap();
    assert_eq!(o.points_sealed, pts.len() as u64);
    // Sealed roll-ups (one blob per day) read exactly like the hourly rows they replace.
    assert_eq!(all(&store).await, open_rollups);
    let rows: i64 = store.read(|c| c.query_row("SELECT count(*) FROM rollup_hour", [], |r| r.get(0))).await.unwrap();
    let blobs: i64 = store.read(|c| c.query_row("SELECT count(*) FROM rollup_day", [], |r| r.get(0))).await.unwrap();
    assert_eq!((rows, blobs), (0, 3));
    assert_eq!(store.points("m", q, 0, i64::MAX).await.unwrap(), pts);
    let w = store.counter_window("m", q, day0 + DAY_MS + 30_000, day0 + 2 * DAY_MS).await.unwrap();
    assert_eq!(w.first(), Some(&pts[1440]), "the reading before the window comes from the previous chunk");
    assert_eq!(w.last(), Some(&pts[2880]), "and the one after from the next");
    assert_eq!(w.len(), 1440 + 1);
    // Late data for a sealed day: the same value is a no-op, a new time is new, a different
    // value is a conflict (the chunk's stays); a correction replaces the chunk's and its
    // hour is rolled up again.
    let o = store.write_points(write(&[pts[10], (pts[10].0 + 1, pts[10].1), (pts[20].0, 5000.0)])).await.unwrap();
    assert_eq!((o.points_unchanged, o.points_written, o.points_conflicting), (1, 1, 1));
    let mut want = pts.clone();
    want.insert(11, (pts[10].0 + 1, pts[10].1));
    assert_eq!(store.points("m", q, 0, i64::MAX).await.unwrap(), want);
    let o = store.correct(Correction { meter: "m".into(), quantity: q, ts: pts[20].0, value: 5000.0, by: "eng".into() }).await.unwrap();
    assert_eq!(o.corrected, Some(Corrected { previous: Some(pts[20].1), conflicts_resolved: 1 }));
    want[21].1 = 5000.0;
    assert_eq!(store.points("m", q, 0, i64::MAX).await.unwrap(), want);
    let r = store.rollups("m", q, day0, day0 + HOUR_MS).await.unwrap();
    assert_eq!((r[0].count, r[0].max), (61, 5000.0));
    // The late hour is a row again, read over its sealed day's entry; the others are unchanged.
    let r = store.rollups("m", q, 0, i64::MAX).await.unwrap();
    assert_eq!(r.len(), 72);
    assert_eq!(r[0], HourRollup::of_points(&want[..61]).unwrap());
    assert_eq!(r[1..], open_rollups.0[1..]);
    // Compacting again merges the late points into the chunk; a restart reads it all back.
    assert_eq!(store.compact().await.unwrap().points_sealed, 2);
    store.close();
    let store = open(dir.path(), Metrics::new()).unwrap();
    assert_eq!(store.points("m", q, 0, i64::MAX).await.unwrap(), want);
    assert_eq!(store.rollups("m", q, 0, i64::MAX).await.unwrap(), r);
    assert_eq!(store.last_seen("m"), Some(pts.last().unwrap().0));
    assert!(store.bytes() < before_bytes, "{} bytes after sealing, {before_bytes} before", store.bytes());
    store.close();
}

/// The windows of a counter, as the accounting reads them ([`Embedded::counter_rollups_many`]),
/// against what the readings give: the last reading before, each hour's first and last reading
/// ([`crate::store::rollups_of`]), the first reading at or after; a meter without readings gets
/// nothing.
async fn check_windows(store: &Embedded, q: Quantity, pts: &[(i64, f64)], windows: &[(i64, i64)], when: &str) {
    for &(from, to) in windows {
        let got = store.counter_rollups_many(vec![("m".into(), q), ("none".into(), q)], from, to).await.unwrap();
        let inside: Vec<(i64, f64)> = pts.iter().filter(|p| p.0 >= from && p.0 < to).copied().collect();
        let want = crate::store::CounterRollups {
            before: pts.iter().rev().find(|p| p.0 < from).copied(),
            hours: crate::store::rollups_of(&inside).iter().collect(),
            after: pts.iter().find(|p| p.0 >= to).copied(),
        };
        assert_eq!(got, vec![want, crate::store::CounterRollups::default()], "{when}, window [{from}, {to})");
    }
}

/// Open hours, sealed days, late rows over sealed days and the days sealed again all read as
/// the readings say, for windows over whole days, parts of days, and before and after the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_windows_read_the_hours_ends_over_rows_and_sealed_days() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Metrics::new()).unwrap();
    let q = Quantity::ActiveEnergyImport;
    let day0 = day_of(1_764_288_000_000);
    // Two days of a counter read every 10 minutes from 00:05, two decimals.
    let mut pts: Vec<(i64, f64)> = (0..2 * 144).map(|i| (day0 + 5 * 60_000 + i * 600_000, 500.0 + (i as f64 * 137.0).round() / 100.0)).collect();
    let write = |v: &[(i64, f64)]| v.iter().map(|&(ts, value)| Point { meter: "m".into(), quantity: q, ts, value }).collect::<Vec<_>>();
    store.write_points(write(&pts)).await.unwrap();
    let windows = [
        (day0, day0 + 2 * DAY_MS),
        (day0 + 5 * HOUR_MS, day0 + DAY_MS + 3 * HOUR_MS),
        (day0 - DAY_MS, day0 + HOUR_MS),
        (day0 + 3 * HOUR_MS, day0 + 4 * HOUR_MS),
        (day0 + 2 * DAY_MS, day0 + 3 * DAY_MS),
        (0, i64::MAX),
    ];
    check_windows(&store, q, &pts, &windows, "open hours").await;
    store.compact().await.unwrap();
    check_windows(&store, q, &pts, &windows, "sealed days").await;
    // Late readings for sealed hours: after the last of 00:00-01:00 and before the first of
    // 03:00-04:00, so that the rows for those hours differ from their sealed entries.
    let late = [(day0 + 58 * 60_000, 503.0), (day0 + 3 * HOUR_MS + 60_000, 520.0)];
    store.write_points(write(&late)).await.unwrap();
    pts.extend(late);
    pts.sort_by_key(|p| p.0);
    check_windows(&store, q, &pts, &windows, "late rows over sealed days").await;
    store.compact().await.unwrap();
    check_windows(&store, q, &pts, &windows, "sealed again").await;
    store.close();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
    /// The stored roll-ups depend only on the distinct points stored, whatever the order,
    /// the duplication and the grouping into writes; a different value offered for a stored
    /// time is one conflict (however often offered), and a corrected value is rolled up as
    /// the value that corrected it.
    #[test]
    fn stored_rollups_ignore_order_and_duplication(
        points in proptest::collection::btree_map(0i64..5 * HOUR_MS, -400i32..400, 1..40),
        dups in proptest::collection::vec(0usize..40, 0..20),
        cut in 1usize..9, seed in proptest::prelude::any::<u64>(),
    ) {
        let t0 = 1_764_288_000_000;
        let pts: Vec<(i64, f64)> = points.into_iter().map(|(t, v)| (t0 + t, f64::from(v) / 4.0)).collect();
        let mut sent: Vec<(i64, f64)> = pts.clone();
        sent.extend(dups.iter().map(|&i| pts[i % pts.len()]));
        let mut s = seed | 1;
        for i in (1..sent.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            sent.swap(i, (s % (i as u64 + 1)) as usize);
        }
        // A wrong value first for one point: the right one conflicts with it, and a correction
        // sets it.
        let wrong = Point { meter: "m".into(), quantity: Quantity::ActivePower, ts: pts[0].0, value: pts[0].1 + 1000.0 };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let got = rt.block_on(async {
            let store = open(dir.path(), Metrics::new()).unwrap();
            store.write_points(vec![wrong]).await.unwrap();
            for (i, group) in sent.chunks(cut).enumerate() {
                let ps = group.iter().map(|&(ts, value)| Point { meter: "m".into(), quantity: Quantity::ActivePower, ts, value }).collect();
                store.write_points(ps).await.unwrap();
                // Some groups are followed by a read, which flushes the head into a segment:
                // later points then meet their duplicates in the segments, not in the head.
                if (seed >> (i % 64)) & 1 == 1 {
                    store.points("m", Quantity::ActivePower, 0, 1).await.unwrap();
                }
            }
            let open = store.conflicts("m", 100).await.unwrap().len();
            let c = Correction { meter: "m".into(), quantity: Quantity::ActivePower, ts: pts[0].0, value: pts[0].1, by: "eng".into() };
            let corrected = store.correct(c).await.unwrap().corrected;
            let r = store.rollups("m", Quantity::ActivePower, 0, i64::MAX).await.unwrap();
            let p = store.points("m", Quantity::ActivePower, 0, i64::MAX).await.unwrap();
            store.close();
            (r, p, open, corrected)
        });
        proptest::prop_assert_eq!(got.0, crate::store::rollups_of(&pts));
        proptest::prop_assert_eq!(got.1, pts.clone());
        proptest::prop_assert_eq!(got.2, 1);
        proptest::prop_assert_eq!(got.3, Some(Corrected { previous: Some(pts[0].1 + 1000.0), conflicts_resolved: 1 }));
    }
}

/// A compaction whose head holds days with nothing stored yet (a backfill of old days) writes
/// them straight as chunks and roll-up blobs: no segment, no roll-up row written and deleted.
/// A day with stored readings takes the segment and is sealed as before; both read the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_writes_days_with_nothing_stored_straight_as_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_unhurried(dir.path());
    let q = Quantity::ActiveEnergyImport;
    let day0 = day_of(1_764_288_000_000);
    let pts: Vec<(i64, f64)> = (0..2 * 1440).map(|i| (day0 + i * 60_000, 50.0 + i as f64 / 100.0)).collect();
    let write = |m: &str, v: &[(i64, f64)]| v.iter().map(|&(ts, value)| Point { meter: m.into(), quantity: q, ts, value }).collect::<Vec<_>>();
    // Meter "s": two whole days only in the head. Meter "t": its first day's morning flushed
    // (stored) before the rest arrives.
    store.write_points(write("s", &pts)).await.unwrap();
    store.write_points(write("t", &pts[..300])).await.unwrap();
    store.flush().await.unwrap();
    store.write_points(write("t", &pts[300..])).await.unwrap();
    let o = store.compact().await.unwrap();
    assert_eq!(o.points_sealed, 2 * pts.len() as u64);
    for m in ["s", "t"] {
        assert_eq!(store.points(m, q, 0, i64::MAX).await.unwrap(), pts, "{m}");
        assert_eq!(store.rollups(m, q, 0, i64::MAX).await.unwrap(), crate::store::rollups_of(&pts), "{m}");
    }
    let counts: (i64, i64, i64, i64) = store
        .read(|c| c.query_row("SELECT (SELECT count(*) FROM segments), (SELECT count(*) FROM chunks), (SELECT count(*) FROM rollup_hour), (SELECT count(*) FROM rollup_day)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))))
        .await
        .unwrap();
    assert_eq!(counts, (0, 4, 0, 4));
    // A late reading for a sealed day still goes through a segment and is sealed again.
    let late = (day0 + 30, 1.0);
    store.write_points(write("s", &[late])).await.unwrap();
    store.compact().await.unwrap();
    let mut want = pts.clone();
    want.insert(1, late);
    assert_eq!(store.points("s", q, 0, i64::MAX).await.unwrap(), want);
    store.close();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
    /// The roll-ups of readings over three days, written in any order and grouping, flushed
    /// between groups (each flush writes its roll-ups beside its segments), with a compaction
    /// in the middle or not (days sealed, later readings of sealed days merged over their blob),
    /// a correction (its hour rolled up again into a row, taken out of the partials), a restart
    /// and a last compaction: every read of roll-ups (all hours, and the windows the accounting
    /// reads: the reading before, each hour's ends, the reading after) gives what the readings
    /// give, and the flushes themselves write no roll-up row.
    #[test]
    fn rollups_read_the_same_from_partials_rows_and_sealed_days(
        minutes in proptest::collection::btree_map(0i64..3 * 1440, -400i32..400, 1..150),
        cut in 1usize..40, seed in proptest::prelude::any::<u64>(), mid_compaction in proptest::prelude::any::<bool>(),
        hours in proptest::collection::vec((0i64..72, 1i64..30), 3),
    ) {
        let q = Quantity::ActivePower;
        let day0 = day_of(1_764_288_000_000);
        let mut pts: Vec<(i64, f64)> = minutes.into_iter().map(|(m, v)| (day0 + m * 60_000 + 7_000, f64::from(v) / 4.0)).collect();
        let mut sent = pts.clone();
        let mut s = seed | 1;
        for i in (1..sent.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            sent.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let mut windows: Vec<(i64, i64)> = hours.iter().map(|&(h, n)| (day0 + h * HOUR_MS, day0 + (h + n) * HOUR_MS)).collect();
        windows.push((0, i64::MAX));
        let write = |v: &[(i64, f64)]| v.iter().map(|&(ts, value)| Point { meter: "m".into(), quantity: q, ts, value }).collect::<Vec<_>>();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fixed = pts[pts.len() / 2];
        rt.block_on(async {
            let store = open(dir.path(), Metrics::new()).unwrap();
            let groups: Vec<&[(i64, f64)]> = sent.chunks(cut).collect();
            for (i, g) in groups.iter().enumerate() {
                store.write_points(write(g)).await.unwrap();
                if (seed >> (i % 64)) & 1 == 1 {
                    store.flush().await.unwrap();
                }
                if mid_compaction && i == groups.len() / 2 {
                    store.compact().await.unwrap();
                }
            }
            store.flush().await.unwrap();
            let rows: i64 = store.read(|c| c.query_row("SELECT count(*) FROM rollup_hour", [], |r| r.get(0))).await.unwrap();
            assert_eq!(rows, 0, "a flush writes its roll-ups beside its segments, not as rows");
            assert_eq!(store.rollups("m", q, 0, i64::MAX).await.unwrap(), crate::store::rollups_of(&pts));
            check_windows(&store, q, &pts, &windows, "written").await;
            // A correction: its hour is a row holding every stored reading of the hour.
            store.correct(Correction { meter: "m".into(), quantity: q, ts: fixed.0, value: fixed.1 + 0.5, by: "eng".into() }).await.unwrap();
            for p in pts.iter_mut().filter(|p| p.0 == fixed.0) {
                p.1 += 0.5;
            }
            assert_eq!(store.rollups("m", q, 0, i64::MAX).await.unwrap(), crate::store::rollups_of(&pts));
            check_windows(&store, q, &pts, &windows, "corrected").await;
            store.close();
            let store = open(dir.path(), Metrics::new()).unwrap();
            assert_eq!(store.rollups("m", q, 0, i64::MAX).await.unwrap(), crate::store::rollups_of(&pts));
            check_windows(&store, q, &pts, &windows, "restarted").await;
            store.compact().await.unwrap();
            assert_eq!(store.rollups("m", q, 0, i64::MAX).await.unwrap(), crate::store::rollups_of(&pts));
            check_windows(&store, q, &pts, &windows, "sealed").await;
            let left: (i64, i64) = store.read(|c| c.query_row("SELECT (SELECT count(*) FROM rollup_hour), (SELECT count(*) FROM segments)", [], |r| Ok((r.get(0)?, r.get(1)?)))).await.unwrap();
            assert_eq!(left, (0, 0));
            store.close();
        });
    }
}
