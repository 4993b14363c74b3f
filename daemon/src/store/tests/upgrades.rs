//! Stores of older format versions, upgraded in place; unknown versions refused.

use super::*;

/// A version 5 store (catalog of names and a unique index, chunks of codec version 2,
/// roll-ups of format 1): upgraded in place with the same series ids, its data read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_5_store_is_upgraded_with_its_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let t = 1_764_288_000_000i64;
    let pts: Vec<(i64, f64)> = (0..120).map(|i| (t + i * 60_000, 100.0 + i as f64 * 0.25)).collect();
    {
        let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
        c.execute_batch(
            "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('format_version', '5');
             CREATE TABLE series(id INTEGER PRIMARY KEY, meter TEXT NOT NULL, quantity TEXT NOT NULL, UNIQUE(meter, quantity));
             INSERT INTO series VALUES (7, 'm', 'active_energy_import'), (9, 'm', 'voltage_l1'), (12, 'n', 'active_energy_import');
             CREATE TABLE chunks(series INTEGER NOT NULL, day INTEGER NOT NULL, count INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(series, day));
             CREATE TABLE rollup_day(series INTEGER NOT NULL, day INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(series, day)) WITHOUT ROWID;",
        )
        .unwrap();
        let day = t - t.rem_euclid(DAY_MS);
        c.execute("INSERT INTO chunks VALUES (7, ?1, 120, ?2)", params![day, codec::encode_version(&pts, 2)]).unwrap();
        let hours = [HourRollup::of_points(&pts[..60]).unwrap(), HourRollup::of_points(&pts[60..]).unwrap()];
        c.execute("INSERT INTO rollup_day VALUES (7, ?1, ?2)", params![day, rollup_codec::encode_rollups_version(day, &hours, 1)]).unwrap();
    }
    let store = open(dir.path(), Metrics::new()).unwrap();
    assert_eq!(store.points("m", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap(), pts);
    let r = store.rollups("m", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap();
    assert_eq!((r.len(), r[0].count, r[1].last_v), (2, 60, 129.75));
    // A new series takes the next id after the old ones; the old ids are kept.
    store.write_points(vec![Point { meter: "n".into(), quantity: Quantity::VoltageL1, ts: t, value: 230.0 }]).await.unwrap();
    store.close();
    let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
    let rows: Vec<(String, String, i64)> = c
        .prepare("SELECT s.meter, q.name, s.id FROM series s JOIN quantities q ON q.code = s.quantity ORDER BY s.id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let want = [("m", "active_energy_import", 7), ("m", "voltage_l1", 9), ("n", "active_energy_import", 12), ("n", "voltage_l1", 13)];
    assert_eq!(rows, want.map(|(m, q, id)| (m.to_string(), q.to_string(), id)));
    let v: String = c.query_row("SELECT value FROM meta WHERE key = 'format_version'", [], |r| r.get(0)).unwrap();
    assert_eq!(v, FORMAT_VERSION.to_string());
    let old: i64 = c.query_row("SELECT count(*) FROM sqlite_schema WHERE name LIKE 'series_old%' OR name LIKE 'sqlite_autoindex_series%'", [], |r| r.get(0)).unwrap();
    assert_eq!(old, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_6_store_is_upgraded_in_place_with_an_empty_conflicts_table() {
    let dir = tempfile::tempdir().unwrap();
    let t = 1_764_288_000_000i64;
    let q = Quantity::ActiveEnergyImport;
    let pts: Vec<Point> = (0..10).map(|i| Point { meter: "m".into(), quantity: q, ts: t + i * 60_000, value: 10.0 + i as f64 }).collect();
    {
        // A version 6 store: this layout without `conflicts`.
        let store = open(dir.path(), Metrics::new()).unwrap();
        store.write_points(pts.clone()).await.unwrap();
        store.close();
        let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
        c.execute_batch("DROP TABLE conflicts; UPDATE meta SET value = '6' WHERE key = 'format_version';").unwrap();
    }
    let store = open(dir.path(), Metrics::new()).unwrap();
    let want: Vec<(i64, f64)> = pts.iter().map(|p| (p.ts, p.value)).collect();
    assert_eq!(store.points("m", q, 0, i64::MAX).await.unwrap(), want);
    let o = store.write_points(vec![Point { value: 99.0, ..pts[3].clone() }]).await.unwrap();
    assert_eq!(o.points_conflicting, 1);
    assert_eq!(store.conflicts("m", 10).await.unwrap().len(), 1);
    store.close();
    let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
    let v: String = c.query_row("SELECT value FROM meta WHERE key = 'format_version'", [], |r| r.get(0)).unwrap();
    assert_eq!(v, FORMAT_VERSION.to_string());
    let idx: i64 = c.query_row("SELECT count(*) FROM sqlite_schema WHERE name IN ('conflicts_meter', 'conflicts_open')", [], |r| r.get(0)).unwrap();
    assert_eq!(idx, 2);
}

/// A version 6 store (ranges per gateway, no epochs): upgraded in place, its ranges kept as
/// the gateway's epoch-less numbering (an old gateway's resend is still a duplicate), a
/// new epoch stored beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_6_store_keeps_its_ranges_under_no_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let t = 1_764_288_000_000i64;
    {
        let store = open(dir.path(), Metrics::new()).unwrap();
        store.write_batch(Batch::new("gw", 1, (0..4).map(|i| sample("m", t + i * 1000, i as f64)).collect())).await.unwrap();
        store.close();
        // Back to the version 6 layout of the table, with the same ranges plus a gap.
        let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
        c.execute_batch(
            "DROP TABLE gateway_epochs; DROP TABLE gateway_seq;
             CREATE TABLE gateway_seq(gateway TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL, PRIMARY KEY(gateway, start)) WITHOUT ROWID;
             INSERT INTO gateway_seq VALUES ('gw', 1, 4), ('gw', 9, 12), ('gw-b', 1, 100);
             UPDATE meta SET value = '6' WHERE key = 'format_version';",
        )
        .unwrap();
    }
    let store = open(dir.path(), Metrics::new()).unwrap();
    let g = store.gateways().await.unwrap();
    let got: Vec<(String, Vec<EpochRanges>, Vec<Option<i64>>)> =
        g.into_iter().map(|(id, es)| (id, es.iter().map(|e| (e.epoch.clone(), e.ranges.clone())).collect(), es.iter().map(|e| e.first_ms).collect())).collect();
    assert_eq!(got, vec![("gw".into(), vec![(None, vec![(1, 4), (9, 12)])], vec![None]), ("gw-b".into(), vec![(None, vec![(1, 100)])], vec![None])]);
    // Sequence numbers 4 (stored before the upgrade) and 5 (new).
    let o = store.write_batch(Batch::new("gw", 4, vec![sample("m", t + 3000, 3.0), sample("m", t + 4000, 4.0)])).await.unwrap();
    assert_eq!((o.samples_duplicate, o.samples_stored, o.new_epoch, o.acked_through), (1, 1, false, 5));
    let o = store.write_batch(Batch::new("gw", 1, vec![sample("m", t + 9000, 9.0)]).with_epoch(Some("ab12".into()))).await.unwrap();
    assert_eq!((o.samples_stored, o.new_epoch, o.earlier_epochs.clone()), (1, true, vec![String::new()]));
    store.close();
    let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
    let v: String = c.query_row("SELECT value FROM meta WHERE key = 'format_version'", [], |r| r.get(0)).unwrap();
    assert_eq!(v, FORMAT_VERSION.to_string());
    let old: i64 = c.query_row("SELECT count(*) FROM sqlite_schema WHERE name LIKE 'gateway_seq_old%'", [], |r| r.get(0)).unwrap();
    assert_eq!(old, 0);
}

#[test]
fn a_store_of_another_format_version_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), Metrics::new()).unwrap());
    let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
    c.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'", []).unwrap();
    drop(c);
    let e = open(dir.path(), Metrics::new()).err().unwrap().to_string();
    assert!(e.contains("format version 99") && e.contains(&format!("reads version {FORMAT_VERSION}")), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_store_is_upgraded_with_its_rollups() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The version 1 layout, as that release wrote it.
        let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
        c.execute_batch(
            "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('format_version', '1');
             CREATE TABLE series(id INTEGER PRIMARY KEY, meter TEXT NOT NULL, quantity TEXT NOT NULL, UNIQUE(meter, quantity));
             CREATE TABLE points(series INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY(series, ts)) WITHOUT ROWID;
             CREATE TABLE gateway_seq(gateway TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL, PRIMARY KEY(gateway, start)) WITHOUT ROWID;
             INSERT INTO series VALUES (1, 'm', 'active_energy_import');
             INSERT INTO points VALUES (1, 1764288000000, 1.0), (1, 1764288600000, 3.0), (1, 1764291600000, 4.0);",
        )
        .unwrap();
    }
    let store = open(dir.path(), Metrics::new()).unwrap();
    let r = store.rollups("m", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].first_v, r[0].last_v, r[0].count, r[1].sum), (1.0, 3.0, 2, 4.0));
    store.close();
    let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
    let v: String = c.query_row("SELECT value FROM meta WHERE key = 'format_version'", [], |r| r.get(0)).unwrap();
    assert_eq!(v, FORMAT_VERSION.to_string());
}

/// A version 7 store left by a crash: the acknowledged points of its last groups are rows of
/// `head_log` (not flushed), its gateway ranges in their tables. Opened by this build: every
/// point is kept (flushed at open, `head_log` emptied), the ranges still drop a resend, the
/// version is 8, and later groups go to the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_7_store_with_rows_in_head_log_keeps_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let q = Quantity::ActiveEnergyImport;
    let t = 1_764_288_000_000i64;
    let flushed: Vec<Point> = (0..10).map(|i| Point { meter: "m".into(), quantity: q, ts: t + i * 60_000, value: 1.0 + i as f64 / 100.0 }).collect();
    {
        let store = open(dir.path(), Metrics::new()).unwrap();
        store.write_points(flushed.clone()).await.unwrap();
        store.write_batch(Batch::new("gw", 1, vec![sample("g", t, 5.0), sample("g", t + 60_000, 6.0)])).await.unwrap();
        store.close();
    }
    // As version 7 left it: two groups' records in head_log (series 1 is m's; a later time
    // and one between two flushed readings), and the log directory absent.
    let sid: i64;
    {
        let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
        sid = c.query_row("SELECT id FROM series WHERE meter = 'm'", [], |r| r.get(0)).unwrap();
        c.execute("UPDATE meta SET value = '7' WHERE key = 'format_version'", []).unwrap();
        c.execute("DELETE FROM meta WHERE key = 'log_position'", []).unwrap();
        let rows = [encode_head_log(&[(sid, t + 600_000, 1.25), (sid, t + 660_000, 1.5)]), encode_head_log(&[(sid, t + 30_000, 1.005)])];
        for r in rows {
            c.execute("INSERT INTO head_log(data) VALUES (?1)", [r]).unwrap();
        }
    }
    std::fs::remove_dir_all(dir.path().join("log")).unwrap();
    let store = open(dir.path(), Metrics::new()).unwrap();
    let mut want: Vec<(i64, f64)> = flushed.iter().map(|p| (p.ts, p.value)).collect();
    want.extend([(t + 600_000, 1.25), (t + 660_000, 1.5), (t + 30_000, 1.005)]);
    want.sort_by_key(|p| p.0);
    assert_eq!(store.points("m", q, 0, i64::MAX).await.unwrap(), want);
    // The late reading is merged into the hour's sum after the others (a last bit may differ).
    let (got, of) = (store.rollups("m", q, 0, i64::MAX).await.unwrap(), crate::store::rollups_of(&want));
    assert_eq!(got.iter().map(|r| (r.hour, r.first_ts, r.last_ts, r.count, r.min, r.max)).collect::<Vec<_>>(), of.iter().map(|r| (r.hour, r.first_ts, r.last_ts, r.count, r.min, r.max)).collect::<Vec<_>>());
    assert!(got.iter().zip(&of).all(|(a, b)| (a.sum - b.sum).abs() < 1e-9));
    let o = store.write_batch(Batch::new("gw", 1, vec![sample("g", t, 5.0), sample("g", t + 60_000, 6.0)])).await.unwrap();
    assert_eq!((o.samples_duplicate, o.samples_stored), (2, 0));
    let o = store.write_points(vec![Point { meter: "m".into(), quantity: q, ts: t + 720_000, value: 2.0 }]).await.unwrap();
    assert_eq!(o.points_written, 1);
    store.close();
    let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
    let v: String = c.query_row("SELECT value FROM meta WHERE key = 'format_version'", [], |r| r.get(0)).unwrap();
    assert_eq!(v, FORMAT_VERSION.to_string());
    let left: i64 = c.query_row("SELECT count(*) FROM head_log", [], |r| r.get(0)).unwrap();
    assert_eq!(left, 0);
    let count: i64 = c.query_row("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'point_count'", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 13 + 2 + 1, "m's 13 and the new one, g's 2");
}

/// A version 8 store: each flush had merged its roll-ups into `rollup_hour` rows and its
/// segments have no `rollups` column. Opened by this build, it gets the column (its segments
/// marked as having no partial: their readings are in the rows already), reads as before, and later readings of an hour it holds a row for are
/// merged over that row; sealing ends with the same roll-ups as the readings give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_8_store_keeps_its_rollup_rows_and_takes_partials_over_them() {
    let dir = tempfile::tempdir().unwrap();
    let q = Quantity::ActiveEnergyImport;
    let day0 = day_of(1_764_288_000_000);
    // A counter read every minute from 00:00 to 02:29, then to 04:00.
    let pts: Vec<(i64, f64)> = (0..240).map(|i| (day0 + i * 60_000, 100.0 + i as f64 * 0.25)).collect();
    let write = |v: &[(i64, f64)]| v.iter().map(|&(ts, value)| Point { meter: "m".into(), quantity: q, ts, value }).collect::<Vec<_>>();
    {
        let store = open(dir.path(), Metrics::new()).unwrap();
        store.write_points(write(&pts[..150])).await.unwrap();
        store.close();
        // What a version 8 build left: the hours as rows, segments without the column.
        let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
        let sid: i64 = c.query_row("SELECT id FROM series", [], |r| r.get(0)).unwrap();
        for r in crate::store::rollups_of(&pts[..150]) {
            c.execute(
                "INSERT INTO rollup_hour VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![sid, r.hour, r.first_ts, r.first_v, r.last_ts, r.last_v, r.min, r.max, r.sum, r.count as i64],
            )
            .unwrap();
        }
        c.execute_batch("ALTER TABLE segments DROP COLUMN rollups; UPDATE meta SET value = '8' WHERE key = 'format_version';").unwrap();
    }
    // Not sealed in the background meanwhile (the rows must stay rows until `compact`).
    let unsealed = StoreOptions { seal_after_ms: i64::MAX / 4, head_max_age_ms: 3_600_000, ..Default::default() };
    let store = open_with(dir.path(), Metrics::new(), unsealed).unwrap();
    assert_eq!(store.rollups("m", q, 0, i64::MAX).await.unwrap(), crate::store::rollups_of(&pts[..150]));
    // 02:30 to 04:00: the rest of the hour held as a row, and new hours.
    store.write_points(write(&pts[150..])).await.unwrap();
    store.flush().await.unwrap();
    let r = store.rollups("m", q, 0, i64::MAX).await.unwrap();
    assert_eq!(r, crate::store::rollups_of(&pts));
    assert_eq!((r[2].count, r[2].first_v, r[2].last_v), (60, pts[120].1, pts[179].1), "row 02:00 and the partial of 02:30-02:59 merged");
    let w = store.counter_rollups_many(vec![("m".into(), q)], day0 + HOUR_MS, day0 + 3 * HOUR_MS).await.unwrap();
    assert_eq!((w[0].before, w[0].after), (Some(pts[59]), Some(pts[180])));
    let counts: (i64, i64, i64) = store
        .read(|c| c.query_row("SELECT (SELECT count(*) FROM rollup_hour), (SELECT count(*) FROM segments WHERE rollups IS NOT NULL), (SELECT count(*) FROM segments WHERE rollups IS NULL)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
        .await
        .unwrap();
    assert_eq!(counts, (3, 1, 1), "the old rows stay, the old segment is marked as having no partial, the new one is rolled up when read");
    store.close();
    let store = open(dir.path(), Metrics::new()).unwrap();
    store.compact().await.unwrap();
    let (rows, segments): (i64, i64) = store.read(|c| c.query_row("SELECT (SELECT count(*) FROM rollup_hour), (SELECT count(*) FROM segments)", [], |r| Ok((r.get(0)?, r.get(1)?)))).await.unwrap();
    assert_eq!((rows, segments), (0, 0), "sealed");
    assert_eq!(store.rollups("m", q, 0, i64::MAX).await.unwrap(), crate::store::rollups_of(&pts));
    store.close();
    let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
    let v: String = c.query_row("SELECT value FROM meta WHERE key = 'format_version'", [], |r| r.get(0)).unwrap();
    assert_eq!(v, FORMAT_VERSION.to_string());
}
