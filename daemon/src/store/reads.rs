//! The embedded store's reads, on the read connections: points and roll-ups (after the head is
//! flushed, or as of its last flush), and what the group commits write directly (conflicts,
//! gateway ranges, the spool, change records).

use energy_wire::Quantity;
use rusqlite::Connection;

use std::sync::Arc;

use super::changes::{read_change_epoch, read_change_records, ChangeRecord};
use super::chunks;
use super::conflicts::{read_conflicts, ConflictRecord};
use super::embedded::Embedded;
use super::error::StoreError;
use super::gateways::{read_gateways, GatewayEpoch};
use super::outbox::{read_spool_rows, Spool, SpoolRow};
use super::requests::WriteOp;
use super::rollup::{HourColumns, HourRollup};
use super::rollup_rows::{read_hour_ends, read_rollups, rollup_before, rollup_from};
use super::schema::series_id;
use energy_wire::time::hour_of;

impl Embedded {
    /// Readings of one series in `[from, to)`, by time.
    pub async fn points(&self, meter: &str, q: Quantity, from: i64, to: i64) -> Result<Vec<(i64, f64)>, StoreError> {
        let meter = meter.to_string();
        self.read(move |c| {
            let Some(sid) = series_id(c, &meter, q)? else { return Ok(Vec::new()) };
            chunks::read_series(c, sid, from, to)
        })
        .await
    }

    /// Readings of a counter covering `[from, to)`: those inside, plus the nearest one before and
    /// the nearest one at or after the end, so that boundary values can be interpolated.
    pub async fn counter_window(&self, meter: &str, q: Quantity, from: i64, to: i64) -> Result<Vec<(i64, f64)>, StoreError> {
        let meter = meter.to_string();
        self.read(move |c| {
            let Some(sid) = series_id(c, &meter, q)? else { return Ok(Vec::new()) };
            let mut out: Vec<(i64, f64)> = chunks::last_before(c, sid, from)?.into_iter().collect();
            out.extend(chunks::read_series(c, sid, from, to)?);
            out.extend(chunks::first_from(c, sid, to)?);
            Ok(out)
        })
        .await
    }

    /// Hourly roll-ups of one series for the hours in `[from, to)`.
    pub async fn rollups(&self, meter: &str, q: Quantity, from: i64, to: i64) -> Result<Vec<HourRollup>, StoreError> {
        self.flush().await?;
        self.rollups_settled(meter, q, from, to).await
    }

    /// Like [`Embedded::rollups`], as of the last flush of the head (at most
    /// `head_max_age_ms` behind) instead of flushing it: for background evaluators that read
    /// meter after meter (alerts), where a flush per read would take the writer's time.
    pub async fn rollups_settled(&self, meter: &str, q: Quantity, from: i64, to: i64) -> Result<Vec<HourRollup>, StoreError> {
        let meter = meter.to_string();
        self.read_committed(move |c| {
            let Some(sid) = series_id(c, &meter, q)? else { return Ok(Vec::new()) };
            read_rollups(c, sid, from, to)
        })
        .await
    }

    /// What consumption over `[from, to)` needs, from the roll-ups (`from`, `to` hour-aligned):
    /// the last reading before `from`, the first and last reading of each hour inside, and the
    /// first reading at or after `to` ([`CounterRollups`]); one entry per series, in order, the
    /// work split over the read connections.
    pub async fn counter_rollups_many(&self, series: Vec<(String, Quantity)>, from: i64, to: i64) -> Result<Vec<CounterRollups>, StoreError> {
        self.flush().await?;
        self.counter_rollups_many_settled(series, from, to).await
    }

    /// [`Self::counter_rollups_many`] as of the head's last flush: a caller reading in batches
    /// flushes once ([`Self::flush`]) and then reads every batch as of that flush.
    pub async fn counter_rollups_many_settled(&self, series: Vec<(String, Quantity)>, from: i64, to: i64) -> Result<Vec<CounterRollups>, StoreError> {
        let per = series.len().div_ceil(self.readers.len()).max(1);
        let mut reads = tokio::task::JoinSet::new();
        for (i, part) in series.chunks(per).enumerate() {
            let (store, part) = (self.clone(), part.to_vec());
            reads.spawn(async move {
                let r = store.read_committed(move |c| part.iter().map(|(m, q)| counter_rollups_of(c, m, *q, from, to)).collect::<rusqlite::Result<Vec<_>>>()).await;
                (i, r)
            });
        }
        let mut parts: Vec<Option<Vec<CounterRollups>>> = vec![None; reads.len()];
        while let Some(done) = reads.join_next().await {
            let (i, r) = done.map_err(|e| StoreError::Task(e.to_string()))?;
            parts[i] = Some(r?);
        }
        Ok(parts.into_iter().flatten().flatten().collect())
    }

    /// Meters that have stored readings, with the count of series.
    pub async fn stored_meters(&self) -> Result<Vec<String>, StoreError> {
        self.read_committed(|c| {
            let mut st = c.prepare_cached("SELECT DISTINCT meter FROM series ORDER BY meter")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// Time of the last counter reading of a series before `t`, from the roll-ups.
    /// As of the last flush of the head: the accounting cache uses it to decide from which year
    /// to drop a meter's figures, where a reading still in the head could only make that year
    /// later (an older answer drops more, never less).
    pub async fn reading_before(&self, meter: &str, q: Quantity, t: i64) -> Result<Option<i64>, StoreError> {
        let meter = meter.to_string();
        self.read_committed(move |c| {
            let Some(sid) = series_id(c, &meter, q)? else { return Ok(None) };
            Ok(rollup_before(c, sid, hour_of(t))?.map(|h| h.last_ts))
        })
        .await
    }
}

impl Embedded {
    /// The conflicts of a meter (open and settled), oldest first, at most `limit`.
    pub async fn conflicts(&self, meter: &str, limit: usize) -> Result<Vec<ConflictRecord>, StoreError> {
        let meter = meter.to_string();
        // Conflicts are written in the group commits: no need to flush the head.
        self.read_committed(move |c| read_conflicts(c, &meter, limit)).await
    }

    /// Per gateway, its queue epochs, oldest batch first (the current one last), with their
    /// stored sequence ranges.
    pub async fn gateways(&self) -> Result<Vec<(String, Vec<GatewayEpoch>)>, StoreError> {
        // The ranges of the groups since the last flush are in the writer's log and memory.
        if !self.disk.is_full() {
            self.write(super::requests::WriteOp::Flush).await?;
        }
        self.read_committed(read_gateways).await
    }

    /// The spool, when forwarding to InfluxDB.
    pub fn spool(&self) -> Option<Arc<Spool>> {
        self.spool.clone()
    }

    /// Spool rows after `after`, in order, until they hold at least `max_points` points (at
    /// least one row when there is one).
    pub async fn spool_rows(&self, after: i64, max_points: u64) -> Result<Vec<SpoolRow>, StoreError> {
        // The spool rows are written in the group commits: no need to flush the head.
        self.read_committed(move |c| read_spool_rows(c, after, max_points)).await
    }

    /// The spool rows up to `id` are in InfluxDB: deletes them (in the writer's next commit).
    pub async fn spool_forwarded(&self, id: i64) -> Result<(), StoreError> {
        self.write(WriteOp::Forwarded(id)).await.map(|_| ())
    }

    /// What changed since the accounting cache last looked: per meter, the earliest reading
    /// time written and a sequence number that grows with every write. Recorded in the
    /// transaction that stores the points, so it survives a crash with them.
    pub async fn change_records(&self) -> Result<Vec<ChangeRecord>, StoreError> {
        // Announced to the writer first: its next write to any of them bumps the sequence.
        self.write(WriteOp::ChangesRead).await?;
        self.read_committed(read_change_records).await
    }

    /// Forgets change records the cache has applied, given as (meter, sequence); a record
    /// written again since (another sequence number) stays.
    pub async fn forget_change_records(&self, applied: Vec<(String, i64)>) -> Result<(), StoreError> {
        self.write(WriteOp::ForgetChanges(applied)).await.map(|_| ())
    }

    /// The epoch of the change records (see [`Embedded::change_records`]).
    pub async fn change_epoch(&self) -> Result<String, StoreError> {
        self.read_committed(read_change_epoch).await
    }
}

/// What consumption over a window needs of a counter's roll-ups: the last reading before the
/// window, the first and last reading of each hour inside (in columns), the first reading at or
/// after its end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CounterRollups {
    pub before: Option<(i64, f64)>,
    pub hours: HourColumns,
    pub after: Option<(i64, f64)>,
}

pub(super) fn counter_rollups_of(c: &Connection, meter: &str, q: Quantity, from: i64, to: i64) -> rusqlite::Result<CounterRollups> {
    let Some(sid) = series_id(c, meter, q)? else { return Ok(CounterRollups::default()) };
    let before = rollup_before(c, sid, hour_of(from))?.map(|h| (h.last_ts, h.last_v));
    let hours = read_hour_ends(c, sid, from, to)?;
    let after = rollup_from(c, sid, to)?.map(|h| (h.first_ts, h.first_v));
    Ok(CounterRollups { before, hours, after })
}
