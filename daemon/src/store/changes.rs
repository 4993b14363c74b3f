//! Change records (table `dirty_meters`): per meter, the earliest reading time written since the
//! accounting cache last applied the record, and a sequence number; kept in the same
//! transaction as the points.

use rusqlite::Connection;

use super::embedded::Embedded;
use super::error::StoreError;
use super::fxmap::FxMap;
use super::requests::WriteOp;

/// The writer's copy of the change records (`dirty_meters`: meter, earliest time written,
/// sequence) with, per record, whether it may have been read since it was last written. A
/// group rewrites a record only when it must: its time is earlier than the record's, or the
/// record may have been read (the sequence then changes, so that clearing what was read keeps
/// the record). Readers announce a read through the writer ([`WriteOp::MarksRead`]) before
/// they look, so a group that skipped a record committed before the read saw the table. One
/// row write per meter per group was a tenth of the writer's time at a thousand meters.
#[derive(Default)]
pub(super) struct Marks {
    /// `None`: unknown (the table could not be read); every record is then written.
    pub(super) rows: Option<FxMap<String, (i64, i64, bool)>>,
}

impl Marks {
    pub(super) fn load(conn: &Connection) -> Marks {
        let rows = (|| -> rusqlite::Result<FxMap<String, (i64, i64, bool)>> {
            let mut st = conn.prepare("SELECT meter, min_ts, seq FROM dirty_meters")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, true))))?;
            rows.collect()
        })();
        match rows {
            Ok(rows) => Marks { rows: Some(rows) },
            Err(e) => {
                tracing::warn!("reading the change records failed ({e}); every write rewrites them");
                Marks { rows: None }
            }
        }
    }

    /// Whether the stored record of `meter` already covers a write at `t`.
    pub(super) fn covers(&self, meter: &str, t: i64) -> bool {
        matches!(self.rows.as_ref().and_then(|r| r.get(meter)), Some(&(min, _, false)) if min <= t)
    }

    /// The record was written as the upsert does: earliest time kept, sequence bumped.
    pub(super) fn wrote(&mut self, meter: &str, t: i64) {
        if let Some(rows) = &mut self.rows {
            match rows.get_mut(meter) {
                Some(r) => *r = (r.0.min(t), r.1 + 1, false),
                None => {
                    rows.insert(meter.to_string(), (t, 1, false));
                }
            }
        }
    }

    pub(super) fn cleared(&mut self, meter: &str, seq: i64) {
        if let Some(rows) = &mut self.rows {
            if rows.get(meter).is_some_and(|r| r.1 == seq) {
                rows.remove(meter);
            }
        }
    }

    pub(super) fn all_read(&mut self) {
        for r in self.rows.iter_mut().flat_map(|rows| rows.values_mut()) {
            r.2 = true;
        }
    }
}

impl Embedded {
    /// Newest reading time per meter.
    /// What changed since the accounting cache last looked: per meter, the earliest reading
    /// time written and a sequence number that grows with every write. Recorded in the
    /// transaction that stores the points, so it survives a crash with them.
    pub async fn dirty_marks(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        // Announced to the writer first: its next write to any of them bumps the sequence.
        self.write(WriteOp::MarksRead).await?;
        self.read_committed(|c| {
            let mut st = c.prepare_cached("SELECT meter, min_ts, seq FROM dirty_meters")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
        .await
    }

    /// Forgets marks the cache has applied; a mark written again since (another sequence
    /// number) stays.
    pub async fn clear_dirty(&self, marks: Vec<(String, i64)>) -> Result<(), StoreError> {
        self.write(WriteOp::ClearDirty(marks)).await.map(|_| ())
    }

    /// The epoch of the change records (see [`Store::dirty_marks`]).
    pub async fn dirty_epoch(&self) -> Result<String, StoreError> {
        self.read_committed(|c| c.query_row("SELECT value FROM meta WHERE key = 'dirty_epoch'", [], |r| r.get(0))).await
    }
}
