//! The spool for InfluxDB (table `outbox`): every point newly written (or replaced) is also
//! written, as line protocol, into `outbox` in the same transaction; the forwarder
//! ([`super::forward`]) sends the rows in id order and deletes them once the database has
//! accepted them.

use std::collections::HashMap;
use std::sync::Arc;

use energy_wire::Quantity;
use rusqlite::{params, Connection};

use super::hooks::CommitHook;
use super::influx::encode::LineBuilder;
use super::requests::{WriteOp, WriteReq};
use crate::metrics::Metrics;

/// Forwarding to InfluxDB: every point newly written (or replaced) is also written, as line
/// protocol, into table `outbox` in the same transaction; the forwarder sends the rows in id
/// order and deletes them once the database has accepted them.
pub struct Forwarding {
    /// The measurement of every line.
    pub measurement: String,
    /// Per meter, its tag suffix (`,building=..,carrier=..`, escaped); other meters get only
    /// the `meter` tag.
    pub tags: HashMap<String, String>,
    /// At or above this many bytes in the spool, writes are refused ([`super::StoreError::SpoolFull`]).
    pub max_bytes: u64,
}

/// What the spool holds, shared by the writer, the forwarder and ingest.
#[derive(Debug, Default)]
pub struct Spool {
    pub bytes: std::sync::atomic::AtomicU64,
    pub points: std::sync::atomic::AtomicU64,
    pub max_bytes: u64,
    /// Woken after each commit that added to the spool.
    pub added: tokio::sync::Notify,
}

impl Spool {
    /// Counts what a commit added (+) and removed (-), as (bytes, points); wakes the forwarder
    /// when something was added. Only the writer calls this.
    pub(super) fn apply(&self, delta: (i64, i64), metrics: &Metrics) {
        use std::sync::atomic::Ordering::Relaxed;
        let bytes = (self.bytes.load(Relaxed) as i64 + delta.0).max(0);
        let points = (self.points.load(Relaxed) as i64 + delta.1).max(0);
        self.bytes.store(bytes as u64, Relaxed);
        self.points.store(points as u64, Relaxed);
        metrics.spool_bytes.set(bytes);
        metrics.spool_points.set(points);
        if delta.0 > 0 {
            self.added.notify_one();
        }
    }
}

/// One spool row: line protocol of the points of one commit.
#[derive(Debug, Clone)]
pub struct SpoolRow {
    pub id: i64,
    pub created_ms: i64,
    pub points: u64,
    pub data: String,
}

/// The writer's side of the spool, a per-commit hook: the lines of the points stored by the open
/// group, written as one `outbox` row in its transaction; the rows forwarded deleted.
pub(super) struct Outbox {
    builder: LineBuilder,
    /// Per meter, its tag suffix.
    tags: HashMap<String, String>,
    /// Points in `builder`.
    points: u64,
    spool: Arc<Spool>,
    /// Spool bytes and points added (+) and removed (-) by the open group.
    delta: (i64, i64),
    metrics: Metrics,
}

impl Outbox {
    /// The hook of `forwarding`, counting what the spool holds (rows left from before a restart
    /// are sent first).
    pub(super) fn open(conn: &Connection, forwarding: Forwarding, metrics: Metrics) -> rusqlite::Result<Outbox> {
        let (bytes, points): (i64, i64) = conn.query_row("SELECT coalesce(sum(length(data)), 0), coalesce(sum(points), 0) FROM outbox", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let spool = Spool { bytes: (bytes.max(0) as u64).into(), points: (points.max(0) as u64).into(), max_bytes: forwarding.max_bytes, added: Default::default() };
        metrics.spool_bytes.set(bytes);
        metrics.spool_points.set(points);
        Ok(Outbox { builder: LineBuilder::new(&forwarding.measurement), tags: forwarding.tags, points: 0, spool: Arc::new(spool), delta: (0, 0), metrics })
    }

    /// The spool it fills, shared with the forwarder and ingest.
    pub(super) fn spool(&self) -> Arc<Spool> {
        self.spool.clone()
    }
}

impl CommitHook for Outbox {
    fn wants_points(&self) -> bool {
        true
    }

    fn stored(&mut self, meter: &str, q: Quantity, ts: i64, value: f64) {
        let tags = self.tags.get(meter).map_or("", String::as_str);
        self.builder.add(meter, tags, q, ts, value);
        self.points += 1;
    }

    fn before_commit(&mut self, tx: &Connection, group: &[WriteReq]) -> rusqlite::Result<()> {
        for req in group {
            if let WriteOp::Forwarded(id) = req.op {
                let (b, p): (i64, i64) = tx
                    .prepare_cached("SELECT coalesce(sum(length(data)), 0), coalesce(sum(points), 0) FROM outbox WHERE id <= ?1")?
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                tx.prepare_cached("DELETE FROM outbox WHERE id <= ?1")?.execute([id])?;
                self.delta.0 -= b;
                self.delta.1 -= p;
            }
        }
        if !self.builder.is_empty() {
            let (data, _) = self.builder.take();
            let points = std::mem::take(&mut self.points);
            tx.prepare_cached("INSERT INTO outbox(created_ms, points, data) VALUES (?1, ?2, ?3)")?
                .execute(params![chrono::Utc::now().timestamp_millis(), points as i64, data])?;
            self.delta.0 += data.len() as i64;
            self.delta.1 += points as i64;
        }
        Ok(())
    }

    fn committed(&mut self) {
        self.spool.apply(std::mem::take(&mut self.delta), &self.metrics);
    }

    fn rolled_back(&mut self, _conn: &Connection) {
        self.builder.clear();
        self.points = 0;
        self.delta = (0, 0);
    }
}

/// Spool rows after `after`, in order, until they hold at least `max_points` points (at least one
/// row when there is one).
pub(super) fn read_spool_rows(c: &Connection, after: i64, max_points: u64) -> rusqlite::Result<Vec<SpoolRow>> {
    let mut st = c.prepare_cached("SELECT id, created_ms, points, data FROM outbox WHERE id > ?1 ORDER BY id")?;
    let mut rows = st.query([after])?;
    let (mut out, mut n) = (Vec::new(), 0u64);
    while let Some(r) = rows.next()? {
        let row = SpoolRow { id: r.get(0)?, created_ms: r.get(1)?, points: r.get::<_, i64>(2)?.max(0) as u64, data: r.get(3)? };
        n += row.points;
        out.push(row);
        if n >= max_points {
            break;
        }
    }
    Ok(out)
}
