//! Reads of points and roll-ups, on the read connections.

use energy_wire::Quantity;
use rusqlite::Connection;

use super::chunks;
use super::embedded::Embedded;
use super::error::StoreError;
use super::rollup::HourRollup;
use super::rollup_rows::{read_rollups, rollup_before, rollup_from};
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
    /// the last reading before `from`, the roll-ups of the hours inside, and the first reading at
    /// or after `to`; one entry per series, in order, the work split over the read connections.
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

/// The last reading before a window, the roll-ups inside, the first reading after it.
pub type CounterRollups = (Option<(i64, f64)>, Vec<HourRollup>, Option<(i64, f64)>);

pub(super) fn counter_rollups_of(c: &Connection, meter: &str, q: Quantity, from: i64, to: i64) -> rusqlite::Result<CounterRollups> {
    let Some(sid) = series_id(c, meter, q)? else { return Ok((None, Vec::new(), None)) };
    let before = rollup_before(c, sid, hour_of(from))?.map(|h| (h.last_ts, h.last_v));
    let hours = read_rollups(c, sid, from, to)?;
    let after = rollup_from(c, sid, to)?.map(|h| (h.first_ts, h.first_v));
    Ok((before, hours, after))
}
