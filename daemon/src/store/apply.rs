//! The requests of a group as the writer applies them, inside the group's transaction: gateway
//! batches (duplicates dropped by sequence number), loose points, an engineer's correction, and
//! the conflicts they meet.

use std::sync::Arc;

use energy_wire::{Batch, Quantity};

use super::chunks;
use super::conflicts::{self, Conflict, Corrected, Correction, MAX_CONFLICTS_SHOWN};
use super::fxmap::FxMap;
use super::gateways;
use super::requests::{WriteOp, WriteOutcome};
use super::schema::series_id;
use super::writer::Writer;

impl Writer<'_> {
    /// Applies one request of the group; `last` gets the newest time written per meter. The
    /// requests the per-commit hooks handle (change records, spool rows) are theirs.
    pub(super) fn apply(&mut self, op: &WriteOp, out: &mut WriteOutcome, last: &mut FxMap<String, i64>) -> rusqlite::Result<()> {
        match op {
            WriteOp::Batch(b) => self.write_batch(b, out, last),
            WriteOp::Points(ps, source) => {
                self.source.clone_from(source);
                for run in ps.chunk_by(|a, b| Arc::ptr_eq(&a.meter, &b.meter) || a.meter == b.meter) {
                    for p in run {
                        self.put(&p.meter, p.quantity, p.ts, p.value, out)?;
                    }
                    let t = run.iter().map(|p| p.ts).max().unwrap_or(i64::MIN);
                    match last.get_mut(&*run[0].meter) {
                        Some(e) => *e = (*e).max(t),
                        None => {
                            last.insert(run[0].meter.to_string(), t);
                        }
                    }
                }
                Ok(())
            }
            WriteOp::Correct(c) => self.correct(c, out),
            WriteOp::Compact | WriteOp::Flush | WriteOp::ForgetChanges(_) | WriteOp::ChangesRead | WriteOp::Forwarded(_) => Ok(()),
            #[cfg(test)]
            WriteOp::Crash => Ok(()),
        }
    }

    /// A gateway batch: samples whose sequence number is stored already are dropped; the others'
    /// points are stored, and the stored ranges of the batch's queue epoch grow (in the writer's
    /// overlay, carried by the group's log record, written to the tables by the next flush).
    fn write_batch(&mut self, b: &Batch, out: &mut WriteOutcome, last: &mut FxMap<String, i64>) -> rusqlite::Result<()> {
        self.source.clear();
        self.source.push_str("gateway ");
        self.source.push_str(&b.gateway);
        let epoch = b.epoch.as_deref().unwrap_or("");
        let mut ranges = self.gateways.ranges(self.conn, &b.gateway, epoch)?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        if let Some(earlier) = self.gateways.note_epoch(self.conn, &b.gateway, epoch, now_ms)? {
            out.earlier_epochs = earlier;
            out.new_epoch = true;
        }
        out.epoch.clone_from(&b.epoch);
        for (i, s) in b.samples.iter().enumerate() {
            let seq = b.seq + i as u64;
            if ranges.iter().any(|&(a, z)| a <= seq && seq <= z) {
                out.samples_duplicate += 1;
                continue;
            }
            self.seq = Some(seq);
            for (q, v) in &s.v {
                self.put(&s.meter, *q, s.t, *v, out)?;
            }
            let e = last.entry(s.meter.clone()).or_insert(s.t);
            *e = (*e).max(s.t);
            out.samples_stored += 1;
        }
        self.seq = None;
        if !b.samples.is_empty() {
            ranges.push((b.seq, b.last_seq()));
            let merged = gateways::merge_ranges(ranges);
            self.gateways.put_ranges(self.conn, &b.gateway, epoch, merged.clone())?;
            ranges = merged;
        }
        out.acked_through = ranges.first().map_or(0, |r| r.1);
        out.ranges = ranges;
        Ok(())
    }

    /// Keeps an offered value aside: a row of `conflicts` in the group's transaction (the same
    /// offer made again while the conflict is open is not added twice).
    #[cold]
    #[inline(never)]
    pub(super) fn conflict(&mut self, meter: &str, q: Quantity, ts: i64, stored: f64, offered: f64, out: &mut WriteOutcome) -> rusqlite::Result<()> {
        out.points_conflicting += 1;
        let source = match self.seq {
            Some(seq) => format!("{}, sample {seq}", self.source),
            None => self.source.clone(),
        };
        let conflict = Conflict { meter: meter.to_string(), quantity: q, ts, stored, offered, source, received_ms: self.now_ms };
        conflicts::keep(self.conn, &conflict)?;
        if out.conflicts.len() < MAX_CONFLICTS_SHOWN {
            out.conflicts.push(conflict);
        }
        Ok(())
    }

    /// An engineer's correction (the head was flushed before the group): the stored reading at
    /// that time, if any, takes the value; the open conflicts there are settled.
    fn correct(&mut self, c: &Correction, out: &mut WriteOutcome) -> rusqlite::Result<()> {
        let mut previous = None;
        if let Some(sid) = series_id(self.conn, &c.meter, c.quantity)? {
            previous = chunks::read_series(self.conn, sid, c.ts, c.ts.saturating_add(1))?.first().map(|p| p.1);
            if previous.is_some_and(|p| p.to_bits() != c.value.to_bits()) {
                self.replace_stored(sid, c.ts, c.value)?;
                self.stored(&c.meter, c.quantity, c.ts, c.value);
            }
        }
        let resolved = conflicts::settle(self.conn, c, self.now_ms)?;
        out.corrected = Some(Corrected { previous, conflicts_resolved: resolved });
        Ok(())
    }
}
