//! The spool for InfluxDB (table `outbox`): every point newly written (or replaced) is also
//! written, as line protocol, into `outbox` in the same transaction; the forwarder
//! ([`super::influx::forward`]) sends the rows in id order and deletes them once the database has
//! accepted them.

use std::collections::HashMap;
use std::sync::Arc;

use super::embedded::Embedded;
use super::error::StoreError;
use super::requests::WriteOp;
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
    /// At or above this many bytes in the spool, writes are refused ([`StoreError::SpoolFull`]).
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

/// The writer's side of the spool: the lines of the open transaction.
pub(super) struct Outbox {
    pub(super) builder: super::influx::encode::LineBuilder,
    pub(super) tags: HashMap<String, String>,
    pub(super) points: u64,
    pub(super) spool: Arc<Spool>,
}

impl Embedded {
    /// The spool, when forwarding to InfluxDB.
    pub fn spool(&self) -> Option<Arc<Spool>> {
        self.spool.clone()
    }

    /// Spool rows after `after`, in order, until they hold at least `max_points` points (at
    /// least one row when there is one).
    pub async fn spool_rows(&self, after: i64, max_points: u64) -> Result<Vec<SpoolRow>, StoreError> {
        // The spool rows are written in the group commits: no need to flush the head.
        self.read_committed(move |c| {
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
        })
        .await
    }

    /// The spool rows up to `id` are in InfluxDB: deletes them (in the writer's next commit).
    pub async fn spool_forwarded(&self, id: i64) -> Result<(), StoreError> {
        self.write(WriteOp::Forwarded(id)).await.map(|_| ())
    }
}
