//! Writes: duplicates, conflicts, corrections, change records, sequence ranges, retention, a crash.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_idempotent_and_points_dedupe() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Metrics::new()).unwrap();
    let t = 1_764_288_000_000;
    let b = Batch::new("gw", 1, vec![sample("m", t, 1.0), sample("m", t + 1000, 2.0)]);
    let o = store.write_batch(b.clone()).await.unwrap();
    assert_eq!((o.samples_stored, o.points_written, o.acked_through), (2, 2, 2));
    let o = store.write_batch(b).await.unwrap();
    assert_eq!((o.samples_stored, o.samples_duplicate, o.acked_through), (0, 2, 2));
    // Re-batched differently after a restart: seq 2..3, only 3 is new.
    let b = Batch::new("gw", 2, vec![sample("m", t + 1000, 2.0), sample("m", t + 2000, 3.0)]);
    let o = store.write_batch(b).await.unwrap();
    assert_eq!((o.samples_stored, o.samples_duplicate, o.acked_through), (1, 1, 3));
    // A gap: 10..10 stored, acked_through stays at 3.
    let o = store.write_batch(Batch::new("gw", 10, vec![sample("m", t + 9000, 9.0)])).await.unwrap();
    assert_eq!(o.acked_through, 3);
    // Line-protocol style points: same value is unchanged, a different value is a conflict,
    // kept aside (offered twice: one open conflict), never stored.
    let p = |v| Point { meter: "m".into(), quantity: Quantity::ActiveEnergyImport, ts: t, value: v };
    let o = store.write_points_from(vec![p(1.0), p(1.5), p(1.5)], "line protocol (token lp)".into()).await.unwrap();
    assert_eq!((o.points_unchanged, o.points_conflicting, o.points_written), (1, 2, 0));
    assert_eq!(o.conflicts[0], Conflict { meter: "m".into(), quantity: Quantity::ActiveEnergyImport, ts: t, stored: 1.0, offered: 1.5, source: "line protocol (token lp)".into(), received_ms: o.conflicts[0].received_ms });
    let pts = store.points("m", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap();
    assert_eq!(pts, vec![(t, 1.0), (t + 1000, 2.0), (t + 2000, 3.0), (t + 9000, 9.0)]);
    // A batch sample offering another value at a stored time: a conflict naming the sample.
    let o = store.write_batch(Batch::new("gw2", 1, vec![sample("m", t + 1000, 2.5)])).await.unwrap();
    assert_eq!((o.samples_stored, o.points_conflicting), (1, 1));
    let c = store.conflicts("m", 100).await.unwrap();
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!((c[0].conflict.stored, c[0].conflict.offered, c[0].resolved_ms), (1.0, 1.5, None));
    assert_eq!((c[1].conflict.ts, c[1].conflict.source.as_str()), (t + 1000, "gateway gw2, sample 1"));
    // The engineer's correction sets the stored reading and settles the conflict there.
    let corr = |ts, value| Correction { meter: "m".into(), quantity: Quantity::ActiveEnergyImport, ts, value, by: "eng".into() };
    let o = store.correct(corr(t, 1.5)).await.unwrap();
    assert_eq!(o.corrected, Some(Corrected { previous: Some(1.0), conflicts_resolved: 1 }));
    let c = store.conflicts("m", 100).await.unwrap();
    assert_eq!((c[0].resolved_value, c[0].resolved_by.as_deref(), c[1].resolved_ms), (Some(1.5), Some("eng"), None));
    // Nothing stored at that time: nothing to change.
    assert_eq!(store.correct(corr(t + 5, 4.0)).await.unwrap().corrected, Some(Corrected { previous: None, conflicts_resolved: 0 }));
    let w = store.counter_window("m", Quantity::ActiveEnergyImport, t + 500, t + 2000).await.unwrap();
    assert_eq!(w, vec![(t, 1.5), (t + 1000, 2.0), (t + 2000, 3.0)]);
    assert_eq!(store.last_seen("m"), Some(t + 9000));
    store.close();
    // Reopen: state persists.
    let store = open(dir.path(), Metrics::new()).unwrap();
    assert_eq!(store.last_seen("m"), Some(t + 9000));
    let g = store.gateways().await.unwrap();
    let got: Vec<(String, Option<String>, Vec<(u64, u64)>)> = g.iter().flat_map(|(id, es)| es.iter().map(move |e| (id.clone(), e.epoch.clone(), e.ranges.clone()))).collect();
    assert_eq!(got, vec![("gw".to_string(), None, vec![(1, 3), (10, 10)]), ("gw2".to_string(), None, vec![(1, 1)])]);
}

/// Change records: the earliest time per meter, kept across reopening; a record written
/// again after it was read survives the clearing of the old one. A version 2 store is
/// upgraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_records_survive_and_clear_by_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let p = |m: &str, ts: i64| Point { meter: m.into(), quantity: Quantity::ActiveEnergyImport, ts, value: 1.0 };
    let store = open(dir.path(), Metrics::new()).unwrap();
    store.write_points(vec![p("a", 5_000), p("a", 2_000), p("b", 9_000)]).await.unwrap();
    store.write_points(vec![p("a", 7_000)]).await.unwrap();
    let epoch = store.change_epoch().await.unwrap();
    store.close();
    let store = open(dir.path(), Metrics::new()).unwrap();
    assert_eq!(store.change_epoch().await.unwrap(), epoch);
    let mut marks = store.change_records().await.unwrap();
    marks.sort();
    // The second write to `a` (later than its record, which nobody had read) left it as it was.
    assert_eq!(marks, vec![("a".to_string(), 2_000, 1), ("b".to_string(), 9_000, 1)]);
    // A write after reading the marks bumps a's sequence: clearing the old one keeps it.
    store.write_points(vec![p("a", 8_000)]).await.unwrap();
    store.forget_change_records(marks.into_iter().map(|(m, _, s)| (m, s)).collect()).await.unwrap();
    assert_eq!(store.change_records().await.unwrap(), vec![("a".to_string(), 2_000, 2)]);
    // Read again: the next write bumps it again, even a later one; an earlier one moves
    // the time back.
    store.write_points(vec![p("a", 9_000)]).await.unwrap();
    assert_eq!(store.change_records().await.unwrap(), vec![("a".to_string(), 2_000, 3)]);
    store.write_points(vec![p("a", 1_000)]).await.unwrap();
    assert_eq!(store.change_records().await.unwrap(), vec![("a".to_string(), 1_000, 4)]);
    // Cleared with the sequence read and not written since: gone.
    store.forget_change_records(vec![("a".to_string(), 4)]).await.unwrap();
    assert_eq!(store.change_records().await.unwrap(), vec![]);
    // A new record; a later write before anyone reads it leaves it as it was.
    store.write_points(vec![p("a", 9_600)]).await.unwrap();
    store.write_points(vec![p("a", 9_700)]).await.unwrap();
    assert_eq!(store.change_records().await.unwrap(), vec![("a".to_string(), 9_600, 1)]);
    store.close();
    // Versions 2 to 4 upgrade in place; a version 4 store left by a crash holds head_log
    // records of plain varints, which are read.
    for old in ["2", "3", "4"] {
        let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
        c.execute("UPDATE meta SET value = ?1 WHERE key = 'format_version'", [old]).unwrap();
        if old == "4" {
            let sid: i64 = c.query_row("SELECT id FROM series WHERE meter = 'a'", [], |r| r.get(0)).unwrap();
            let mut rec = Vec::new();
            put_varint(&mut rec, sid as u64);
            put_varint(&mut rec, 20_000);
            rec.extend_from_slice(&5.5f64.to_bits().to_le_bytes());
            c.execute("INSERT INTO head_log(data) VALUES (?1)", [rec]).unwrap();
        }
        drop(c);
        let store = open(dir.path(), Metrics::new()).unwrap();
        if old == "4" {
            let pts = store.points("a", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap();
            assert!(pts.contains(&(20_000, 5.5)), "{pts:?}");
        }
        store.close();
        let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
        let v: String = c.query_row("SELECT value FROM meta WHERE key = 'format_version'", [], |r| r.get(0)).unwrap();
        assert_eq!(v, FORMAT_VERSION.to_string());
    }
}

/// Sequence ranges per (gateway, queue epoch): a queue made again (new epoch, numbers from 1)
/// is stored, not taken for duplicates; each epoch keeps its own ranges; a new epoch is
/// flagged once, with the earlier ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_ranges_are_kept_per_queue_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Metrics::new()).unwrap();
    let t = 1_764_288_000_000i64;
    let b = |epoch: Option<&str>, seq: u64, n: usize, t0: i64| {
        Batch::new("gw", seq, (0..n).map(|i| sample("m", t0 + i as i64 * 1000, i as f64)).collect()).with_epoch(epoch.map(str::to_string))
    };
    let o = store.write_batch(b(Some("e1"), 1, 5, t)).await.unwrap();
    assert_eq!((o.samples_stored, o.new_epoch, o.earlier_epochs.clone(), o.epoch.clone()), (5, true, vec![], Some("e1".into())));
    let o = store.write_batch(b(Some("e1"), 1, 5, t)).await.unwrap();
    assert_eq!((o.samples_duplicate, o.new_epoch), (5, false));
    // The queue lost: numbers start at 1 again under e2; new readings, not duplicates.
    let o = store.write_batch(b(Some("e2"), 1, 3, t + 60_000)).await.unwrap();
    assert_eq!((o.samples_stored, o.samples_duplicate, o.new_epoch, o.earlier_epochs.clone()), (3, 0, true, vec!["e1".to_string()]));
    assert_eq!((o.acked_through, o.ranges.clone()), (3, vec![(1, 3)]));
    // An old gateway without an epoch has its own numbering too.
    let o = store.write_batch(b(None, 1, 2, t + 120_000)).await.unwrap();
    assert_eq!((o.samples_stored, o.epoch.clone(), o.earlier_epochs.len()), (2, None, 2));
    let g = store.gateways().await.unwrap();
    // Epochs are listed by when they were first stored; three batches can fall in one
    // millisecond, so compare them as a set.
    let mut got: Vec<EpochRanges> = g[0].1.iter().map(|e| (e.epoch.clone(), e.ranges.clone())).collect();
    got.sort();
    assert_eq!(got, vec![(None, vec![(1, 2)]), (Some("e1".into()), vec![(1, 5)]), (Some("e2".into()), vec![(1, 3)])]);
    assert!(g[0].1.iter().all(|e| e.first_ms.is_some() && e.last_ms >= e.first_ms));
    assert_eq!(store.points("m", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_raw_points_and_keeps_their_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let day = 86_400_000;
    let p = |ts, value| Point { meter: "m".into(), quantity: Quantity::ActiveEnergyImport, ts, value };
    let store = open(dir.path(), Metrics::new()).unwrap();
    store.write_points(vec![p(now - 3 * day, 1.0), p(now - 2 * day, 2.0), p(now, 3.0)]).await.unwrap();
    store.close();
    let metrics = Metrics::new();
    let options = StoreOptions { raw_retention_ms: Some(day), rollup_retention_ms: Some(2 * day + 2 * HOUR_MS), ..Default::default() };
    let store = open_with(dir.path(), metrics.clone(), options).unwrap();
    // The writer applies the retention before it takes this write.
    store.write_points(vec![p(now + 1, 4.0)]).await.unwrap();
    let raw = store.points("m", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap();
    assert_eq!(raw, vec![(now, 3.0), (now + 1, 4.0)]);
    let hours: Vec<f64> = store.rollups("m", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap().iter().map(|r| r.first_v).collect();
    assert_eq!(hours.first(), Some(&2.0), "the roll-up of 2 days ago outlives its raw point; 3 days ago is past its retention");
    assert_eq!(metrics.store_points.get(), 2);
    assert_eq!(metrics.points_pruned.get(), 2);
    store.close();
}

/// The head after a crash: the writer stopped without flushing (what a SIGKILL leaves)
/// holds the acknowledged points and gateway ranges in the store's log; opening the store
/// replays and flushes them, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_points_in_the_head_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_unhurried(dir.path());
    let q = Quantity::ActiveEnergyImport;
    let t0 = 1_764_288_000_000;
    let pts: Vec<(i64, f64)> = (0..500).map(|i| (t0 + i * 60_000, 100.0 + i as f64 / 4.0)).collect();
    let write = |v: &[(i64, f64)]| v.iter().map(|&(ts, value)| Point { meter: "m".into(), quantity: q, ts, value }).collect::<Vec<_>>();
    store.write_points(write(&pts[..300])).await.unwrap();
    // Flushed into a segment by a read; then more points stay in the head, and values
    // conflicting with the head and with the segment are kept aside.
    assert_eq!(store.points("m", q, 0, i64::MAX).await.unwrap().len(), 300);
    let o = store.write_points(write(&pts[300..])).await.unwrap();
    assert_eq!(o.points_written, 200);
    let o = store.write_points(write(&[(pts[450].0, 7.0), (pts[10].0, 8.0), pts[11]])).await.unwrap();
    assert_eq!((o.points_conflicting, o.points_unchanged), (2, 1));
    // A gateway's batches (a new meter, so a new series too), a resend of the first dropped.
    let batch = |seq: u64, from: i64, n: i64| Batch::new("gw", seq, (from..from + n).map(|i| sample("g", t0 + i * 60_000, i as f64 / 100.0)).collect()).with_epoch(Some("e1".into()));
    let o = store.write_batch(batch(1, 0, 5)).await.unwrap();
    assert_eq!((o.samples_stored, o.acked_through), (5, 5));
    assert_eq!(store.write_batch(batch(1, 0, 5)).await.unwrap().samples_duplicate, 5);
    store.write_batch(batch(6, 5, 3)).await.unwrap();
    // The writer stops as in a crash: the head in memory is gone, the log is on disk.
    store.write(WriteOp::Crash).await.unwrap();
    if let Some(h) = store.closer.writer.lock().unwrap().take() {
        h.join().unwrap();
    }
    drop(store);
    let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
    let position = schema::log_position(&c).unwrap();
    let logged = crate::store::log::scan(&dir.path().join("log"), position, false).unwrap();
    // Four groups since the flush: 200 points, 5 samples, the resend (its epoch's latest
    // batch time changed), 3 samples; the conflicts are rows of the groups' transactions.
    assert_eq!(logged.records.len(), 4, "the groups of new points and ranges since the flush are in the log");
    // As if the groups' transactions had not reached the disk while the log had (the kernel
    // writes files back in any order): the new series' catalog row and the change records
    // are gone; the log brings both back.
    c.execute_batch("DELETE FROM series WHERE meter = 'g'; DELETE FROM dirty_meters;").unwrap();
    drop(c);
    let want = pts.clone();
    let crashed = open(dir.path(), Metrics::new()).unwrap();
    let kept: Vec<(i64, f64, f64)> = crashed.conflicts("m", 10).await.unwrap().iter().map(|c| (c.conflict.ts, c.conflict.stored, c.conflict.offered)).collect();
    assert_eq!(kept, vec![(pts[10].0, pts[10].1, 8.0), (pts[450].0, pts[450].1, 7.0)]);
    assert_eq!(crashed.points("m", q, 0, i64::MAX).await.unwrap(), want);
    assert_eq!(crashed.rollups("m", q, 0, i64::MAX).await.unwrap(), crate::store::rollups_of(&want));
    assert_eq!(crashed.last_seen("m"), Some(pts[499].0));
    let g = crashed.points("g", q, 0, i64::MAX).await.unwrap();
    assert_eq!(g, (0..8).map(|i| (t0 + i * 60_000, i as f64 / 100.0)).collect::<Vec<_>>());
    let gws = crashed.gateways().await.unwrap();
    assert_eq!((gws[0].1[0].epoch.as_deref(), gws[0].1[0].ranges.clone()), (Some("e1"), vec![(1, 8)]));
    let mut changed: Vec<(String, i64)> = crashed.change_records().await.unwrap().into_iter().map(|r| (r.0, r.1)).collect();
    changed.sort();
    assert_eq!(changed, vec![("g".to_string(), t0), ("m".to_string(), pts[300].0)], "the points replayed are change records");
    // The log was flushed at open and its files deleted.
    let position = crashed.read(|c| schema::log_position(c)).await.unwrap();
    assert!(crate::store::log::scan(&dir.path().join("log"), position, false).unwrap().records.is_empty());
    // Sending everything again after the restart changes nothing: the ranges drop the
    // batches, the points are there.
    let o = crashed.write_points(write(&want)).await.unwrap();
    assert_eq!((o.points_written, o.points_unchanged, o.points_conflicting), (0, 500, 0));
    let o = crashed.write_batch(batch(1, 0, 8)).await.unwrap();
    assert_eq!((o.samples_duplicate, o.samples_stored, o.acked_through), (8, 0, 8));
    // A new series after the restart does not take the id of one known only from the log.
    crashed.write_points(vec![Point { meter: "h".into(), quantity: q, ts: t0, value: 1.0 }]).await.unwrap();
    let ids: Vec<i64> = crashed.read(|c| c.prepare("SELECT id FROM series ORDER BY id")?.query_map([], |r| r.get(0))?.collect()).await.unwrap();
    assert_eq!(ids, vec![1, 2, 3]);
    crashed.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_writes_a_store_and_others_read_it_beside() {
    // A second writer would replay the first one's log and delete it: it is refused, naming the
    // directory; a reader beside the writer sees what the writer flushed and cannot write.
    let dir = tempfile::tempdir().unwrap();
    let store = open_unhurried(dir.path());
    let q = Quantity::ActiveEnergyImport;
    let t0 = 1_764_288_000_000;
    let p = |ts: i64, value: f64| Point { meter: "m".into(), quantity: q, ts, value };
    store.write_points(vec![p(t0, 1.0), p(t0 + 60_000, 2.0)]).await.unwrap();
    let err = open(dir.path(), Metrics::new()).err().expect("a second writer is refused");
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
    // Flushed by the writer's own read; the reader sees both points.
    assert_eq!(store.points("m", q, 0, i64::MAX).await.unwrap().len(), 2);
    let reader = super::super::embedded::open_reader(dir.path(), Metrics::new()).unwrap();
    assert_eq!(reader.points("m", q, 0, i64::MAX).await.unwrap(), vec![(t0, 1.0), (t0 + 60_000, 2.0)]);
    // Points still in the writer's head are not seen by the reader (it cannot flush them), and
    // the reader refuses writes.
    store.write_points(vec![p(t0 + 120_000, 3.0)]).await.unwrap();
    assert_eq!(reader.points("m", q, 0, i64::MAX).await.unwrap().len(), 2);
    let refused = reader.write_points(vec![p(t0 + 180_000, 4.0)]).await.err().expect("the reader refuses writes");
    assert!(refused.to_string().contains("reading only"), "{refused}");
    reader.close();
    // Once the writer is closed, the store opens for writing again, with every point.
    store.close();
    let again = open(dir.path(), Metrics::new()).unwrap();
    assert_eq!(again.points("m", q, 0, i64::MAX).await.unwrap().len(), 3);
    again.close();
}
