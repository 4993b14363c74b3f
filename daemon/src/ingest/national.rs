//! Readings of national-protocol collectors (issue 21, `crate::collector`): the same store write
//! as every other ingest (one group commit, durable before the answer, a stored value never
//! replaced, a different one kept aside as a conflict), with the same time checks, counting and
//! list of meters not in the registry.
//! The one exception: a lower data centre's restated period replaces its stored value
//! ([`Ingest::centre_restated`]).

use super::check_time;
use super::service::Ingest;
use crate::store::{Point, StoreError, WriteOutcome};

/// What storing a collector's packet did.
#[derive(Debug, Default)]
pub struct CollectorWritten {
    pub outcome: WriteOutcome,
    /// Points refused for their time (before 2000, too far ahead, older than the raw
    /// retention), each with the reason.
    pub refused: Vec<(Point, String)>,
}

impl Ingest {
    /// Stores a collector's readings as points. `unassigned` are the meters among them that the
    /// registry does not have (they are stored and listed, never dropped); `source` names the
    /// collector in the store's records (conflicts).
    pub async fn collector_points(&self, points: Vec<Point>, unassigned: &[String], source: String, now_ms: i64) -> Result<CollectorWritten, StoreError> {
        let mut refused = Vec::new();
        let mut keep = Vec::with_capacity(points.len());
        for p in points {
            match check_time(p.ts, now_ms, self.raw_ms()) {
                Ok(()) => keep.push(p),
                Err(e) => {
                    self.metrics.rejected.with_label_values(&["collector", e.label]).inc();
                    refused.push((p, e.reason));
                }
            }
        }
        if !unassigned.is_empty() {
            self.note_unassigned(unassigned);
        }
        let outcome = if keep.is_empty() { WriteOutcome::default() } else { self.store.write_points_from(keep, source).await? };
        Ok(CollectorWritten { outcome, refused })
    }

    /// A lower data centre's restated periods (issue 21): the values it reported again for a
    /// time already stored (kept aside as conflicts by the write) replace the stored ones, as
    /// an engineer's correction would, so that the figures above follow the level below.
    /// Returns how many values were replaced.
    pub async fn centre_restated(&self, conflicts: &[crate::store::Conflict], by: &str) -> Result<u64, StoreError> {
        let mut n = 0;
        for c in conflicts {
            let fix = crate::store::Correction { meter: c.meter.clone(), quantity: c.quantity, ts: c.ts, value: c.offered, by: by.to_string() };
            self.store.correct(fix).await?;
            n += 1;
        }
        Ok(n)
    }
}
