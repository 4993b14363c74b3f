//! The spool for InfluxDB, written in the commit.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_replaced_points_are_spooled_in_the_commit_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let p = |meter: &str, quantity, ts, value| Point { meter: meter.into(), quantity, ts, value };
    let t = 1_764_288_000_000;
    let store = open_forwarding(dir.path(), metrics.clone(), StoreOptions::default(), forwarding(1 << 20)).unwrap();
    store
        .write_points(vec![p("m", Quantity::ActiveEnergyImport, t, 1.5), p("m", Quantity::ActivePower, t, 2.0), p("x", Quantity::WaterVolume, t, 3.0)])
        .await
        .unwrap();
    // Unchanged: nothing to forward; a conflict: nothing either; a correction: forwarded
    // again (last write wins there).
    let o = store.write_points(vec![p("m", Quantity::ActiveEnergyImport, t, 1.5), p("m", Quantity::ActivePower, t, 2.5)]).await.unwrap();
    assert_eq!(o.points_conflicting, 1);
    assert_eq!(store.spool_rows(0, 1000).await.unwrap().len(), 1);
    store.correct(Correction { meter: "m".into(), quantity: Quantity::ActivePower, ts: t, value: 2.5, by: "eng".into() }).await.unwrap();
    let rows = store.spool_rows(0, 1000).await.unwrap();
    let text: String = rows.iter().map(|r| r.data.as_str()).collect();
    assert_eq!(
        text,
        format!(
            "energy,meter=m,building=b\\ 1,carrier=electricity active_energy_import=1.5,active_power=2 {t}\nenergy,meter=x water_volume=3 {t}\n\
             energy,meter=m,building=b\\ 1,carrier=electricity active_power=2.5 {t}\n"
        )
    );
    assert_eq!(rows.iter().map(|r| r.points).sum::<u64>(), 4);
    let spool = store.spool().unwrap();
    assert_eq!(spool.bytes.load(std::sync::atomic::Ordering::Relaxed), text.len() as u64);
    assert_eq!(metrics.spool_points.get(), 4);
    store.close();
    // After a restart the spool is still there, counted again; forwarding removes it.
    let store = open_forwarding(dir.path(), metrics.clone(), StoreOptions::default(), forwarding(1 << 20)).unwrap();
    let rows = store.spool_rows(0, 3).await.unwrap();
    assert_eq!(rows.len(), 1, "stops once the rows hold enough points");
    store.spool_forwarded(rows[0].id).await.unwrap();
    assert_eq!(metrics.spool_points.get(), 1);
    let rest = store.spool_rows(0, 1000).await.unwrap();
    store.spool_forwarded(rest[0].id).await.unwrap();
    assert!(store.spool_rows(0, 1000).await.unwrap().is_empty());
    assert_eq!((metrics.spool_points.get(), metrics.spool_bytes.get()), (0, 0));
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_writes_until_forwarding_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_forwarding(dir.path(), Metrics::new(), StoreOptions::default(), forwarding(100)).unwrap();
    let p = |ts| Point { meter: "m".into(), quantity: Quantity::ActivePower, ts, value: 1.0 };
    let t = 1_764_288_000_000;
    store.write_points((0..5).map(|i| p(t + i)).collect()).await.unwrap();
    let e = store.write_points(vec![p(t + 10)]).await.unwrap_err();
    assert!(matches!(e, StoreError::SpoolFull { max: 100, .. }), "{e}");
    assert!(e.to_string().contains("spool"), "{e}");
    assert!(store.points("m", Quantity::ActivePower, t + 10, t + 11).await.unwrap().is_empty(), "a refused write stores nothing");
    let rows = store.spool_rows(0, 1000).await.unwrap();
    store.spool_forwarded(rows[rows.len() - 1].id).await.unwrap();
    store.write_points(vec![p(t + 10)]).await.unwrap();
    // Ids keep growing after the spool was emptied: the forwarder's cursor stays valid.
    let next = store.spool_rows(rows[rows.len() - 1].id, 1000).await.unwrap();
    assert_eq!(next.len(), 1);
    store.close();
}
