//! Change records: per meter, the earliest reading time written since the accounting cache last
//! applied the record, and a sequence number that grows with every write after the record may
//! have been read. Kept in table `dirty_meters(meter, min_ts, seq)` (its name, and the `meta` key
//! `dirty_epoch` of the epoch that ties a cache to this store, are the format's) by a per-commit
//! hook, in the same transaction as the points, so that a cache of figures built from the store
//! is never stale after a crash.

use std::sync::Arc;

use rusqlite::{params, Connection};

use super::fxmap::FxMap;
use super::hooks::CommitHook;
use super::requests::{WriteOp, WriteReq};

/// One change record: (meter, earliest reading time written in ms, sequence number).
pub type ChangeRecord = (String, i64, i64);

/// The writer's copy of the change records (`dirty_meters`: meter, earliest time written,
/// sequence) with, per record, whether it may have been read since it was last written. A
/// group rewrites a record only when it must: its time is earlier than the record's, or the
/// record may have been read (the sequence then changes, so that clearing what was read keeps
/// the record). Readers announce a read through the writer ([`WriteOp::ChangesRead`]) before
/// they look, so a group that skipped a record committed before the read saw the table. One
/// row write per meter per group was a tenth of the writer's time at a thousand meters.
#[derive(Default)]
pub(super) struct ChangeRecords {
    /// `None`: unknown (the table could not be read); every record is then written.
    pub(super) rows: Option<FxMap<String, (i64, i64, bool)>>,
}

impl ChangeRecords {
    pub(super) fn load(conn: &Connection) -> ChangeRecords {
        let rows = (|| -> rusqlite::Result<FxMap<String, (i64, i64, bool)>> {
            let mut st = conn.prepare("SELECT meter, min_ts, seq FROM dirty_meters")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, true))))?;
            rows.collect()
        })();
        match rows {
            Ok(rows) => ChangeRecords { rows: Some(rows) },
            Err(e) => {
                tracing::warn!("reading the change records failed ({e}); every write rewrites them");
                ChangeRecords { rows: None }
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

impl CommitHook for ChangeRecords {
    /// Forgets the records the group asked to forget, notes a read announced, then writes the
    /// record of every meter the group wrote to that needs it (see [`ChangeRecords`]).
    fn before_commit(&mut self, tx: &Connection, group: &[WriteReq]) -> rusqlite::Result<()> {
        for req in group {
            match &req.op {
                WriteOp::ForgetChanges(records) => {
                    let mut st = tx.prepare_cached("DELETE FROM dirty_meters WHERE meter = ?1 AND seq = ?2")?;
                    for (m, seq) in records {
                        st.execute(params![m, seq])?;
                        self.cleared(m, *seq);
                    }
                }
                WriteOp::ChangesRead => self.all_read(),
                _ => {}
            }
        }
        let mut st = tx.prepare_cached(
            "INSERT INTO dirty_meters(meter, min_ts, seq) VALUES (?1, ?2, 1)
             ON CONFLICT(meter) DO UPDATE SET min_ts = min(min_ts, excluded.min_ts), seq = seq + 1",
        )?;
        for (m, t) in &earliest_per_meter(group) {
            if self.covers(m, *t) {
                continue;
            }
            st.execute(params![m, t])?;
            self.wrote(m, *t);
        }
        Ok(())
    }

    /// What the writer holds is read again from what is committed.
    fn rolled_back(&mut self, conn: &Connection) {
        *self = ChangeRecords::load(conn);
    }
}

/// Earliest time per meter written to by a group (whatever each write then did).
fn earliest_per_meter(group: &[WriteReq]) -> FxMap<&str, i64> {
    let mut earliest: FxMap<&str, i64> = FxMap::default();
    for req in group {
        match &req.op {
            WriteOp::Batch(b) => {
                for smp in &b.samples {
                    let e = earliest.entry(smp.meter.as_str()).or_insert(smp.t);
                    *e = (*e).min(smp.t);
                }
            }
            WriteOp::Points(ps, _) => {
                // Points come in runs of one meter (a line's fields): one lookup per run.
                for run in ps.chunk_by(|a, b| Arc::ptr_eq(&a.meter, &b.meter) || a.meter == b.meter) {
                    let t = run.iter().map(|p| p.ts).min().unwrap_or(i64::MAX);
                    let e = earliest.entry(&*run[0].meter).or_insert(t);
                    *e = (*e).min(t);
                }
            }
            WriteOp::Correct(c) => {
                let e = earliest.entry(c.meter.as_str()).or_insert(c.ts);
                *e = (*e).min(c.ts);
            }
            WriteOp::Compact | WriteOp::ForgetChanges(_) | WriteOp::Forwarded(_) | WriteOp::Flush | WriteOp::ChangesRead => {}
            #[cfg(test)]
            WriteOp::Crash => {}
        }
    }
    earliest
}

/// The change records, as the accounting cache reads them.
pub(super) fn read_change_records(c: &Connection) -> rusqlite::Result<Vec<ChangeRecord>> {
    let mut st = c.prepare_cached("SELECT meter, min_ts, seq FROM dirty_meters")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// The epoch of the change records: a cache of figures computed from this store is valid only
/// for the epoch it was built in.
pub(super) fn read_change_epoch(c: &Connection) -> rusqlite::Result<String> {
    c.query_row("SELECT value FROM meta WHERE key = 'dirty_epoch'", [], |r| r.get(0))
}
