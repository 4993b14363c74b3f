//! The embedded store: a write-ahead log of compressed group records ([`log`], outside SQLite)
//! and SQLite (bundled) in WAL mode; a write is answered only after its group's log record (and,
//! when the group's transaction changed rows, the WAL) was fsynced, so an acknowledged write
//! survives SIGKILL and power loss.
//!
//! # Layout (format version 9)
//!
//! * `<data_dir>/log/<first id>.log` ([`log`]): one record per group commit: its new points
//!   compressed per series, the gateway ranges it changed, the series it added; deleted once a
//!   flush covers them.
//! * `meta(key, value)`: `format_version`, `point_count`, `dirty_epoch`, `log_position` (the last
//!   log record a flush covered), `log_committed` (with a spool only). Versions 1 (no roll-ups),
//!   2 (no change records), 3 (no sealed roll-ups), 4 (`head_log` records without differences,
//!   still read), 5 (a catalog of names, chunks in codec version 2, still read), 6 (no
//!   `conflicts`; sequence ranges per gateway, not per queue epoch) and 7 (`head_log` rows, no
//!   log) and 8 (each flush's roll-ups merged into `rollup_hour` rows) are upgraded in place at open; any other version is refused with a message naming it.
//! * `quantities(name, code)`, `WITHOUT ROWID`: a small code per quantity name.
//! * `series(meter, quantity, id)`, `WITHOUT ROWID`, primary key (meter, quantity code): one row
//!   per (meter, quantity) and its id, which every other table uses.
//! * `head_log(id, data)`: up to format 7, the writer's head made durable: one row per group
//!   commit with the (series, time, value) of every point the group added to the head. Rows a
//!   version 7 store left are loaded and flushed at open; empty since.
//! * `segments(id, series, day, count, data, rollups)`, indexed by (series, day, id): a flushed
//!   head, one row per series and UTC day holding the readings compressed ([`codec`]); since
//!   format 9 their roll-ups per hour (partial roll-ups) are computed from them when read and
//!   merged into the hour's stored roll-up (`rollup_rows.rs`; `rollups` holds them written out
//!   once a correction took an hour out of them); sealed into `chunks` and `rollup_day` with
//!   their day.
//! * `points(series, ts, value)`, `WITHOUT ROWID`, primary key (series, ts): a corrected reading
//!   (it wins over segments and chunks), and readings of stores written before format 4; `ts` in milliseconds since the Unix epoch.
//! * `gateway_seq(gateway, epoch, start, end)`, `WITHOUT ROWID`: the ranges of sample sequence
//!   numbers stored per gateway and queue epoch ('' for batches without one), merged; used to
//!   drop duplicate samples by identity. `gateway_epochs(gateway, epoch, first_ms, last_ms)`:
//!   when each epoch's first and latest batch were stored (a new epoch is a new queue at the
//!   gateway: logged and counted). Version 6 kept ranges per gateway only (upgraded in place).
//! * `rollup_hour(series, hour, first_ts, first_v, last_ts, last_v, min, max, sum, count)`,
//!   `WITHOUT ROWID`, primary key (series, hour): the hourly roll-up ([`HourRollup`]) of an hour
//!   a replaced value made the writer recompute from the stored points (in the replacing
//!   transaction, taking the hour out of the segments' partials), of the days a compaction's
//!   flush writes straight as chunks, of segments deleted by the retention, and of every open
//!   hour in stores written before format 9. An hour's roll-up is its row (else its sealed
//!   day's entry) merged with the partials of its segments; a duplicate changes nothing.
//!   Reports read roll-ups, never the raw points.
//! * `chunks(series, day, count, data)`: the readings of one series and sealed UTC day, compressed
//!   ([`codec`]); see `chunks.rs`. Days older than `seal_after` are sealed by the writer.
//! * `rollup_day(series, day, data)`, `WITHOUT ROWID`: when a day is sealed, its hourly roll-ups
//!   leave `rollup_hour` for one compressed blob ([`rollup_codec::encode_rollups`], about 0.1 byte per
//!   one-minute reading instead of 1.4). A late reading for a sealed day is a segment of that
//!   day with its partial; a row wins over the blob's entry for the same hour until the day is
//!   resealed.
//! * `conflicts(id, meter, quantity, ts, stored, offered, source, received_ms, resolved_ms,
//!   resolved_value, resolved_by)`: values offered by ingest that differ from the stored reading
//!   (see below); unique while open per (meter, quantity, ts, offered).
//! * `dirty_meters(meter, min_ts, seq)`: per meter, the earliest reading time written since the
//!   accounting cache last applied it, and a sequence number bumped by every write after the
//!   record may have been read (readers announce it to the writer first); kept in the
//!   same transaction as the points, so that a cache of figures built from the store is never
//!   stale after a crash. `dirty_epoch` (random, set when the table is created) ties such a cache
//!   to this store.
//!
//! # Threads and the head
//!
//! One writer thread owns the write connection. Writes arrive on a channel; the writer takes all
//! that are waiting and commits them in one transaction (group commit): their new points go to
//! the in-memory head and, as one compressed record, to the log; the gateway ranges to the
//! writer's memory and the same record; change records, conflicts, replaced values and spool
//! rows to their tables. Neither the append nor the commit waits for the disk (`synchronous =
//! NORMAL`); a syncer thread fdatasyncs the log file (and the WAL, when the transaction changed
//! rows) and only then answers the requests of the groups before, while the writer goes on with
//! the next group. The head is flushed (one transaction: segments, gateway rows,
//! the log position; then the WAL synced and the log files deleted) when it holds 2.5 million
//! points, when its oldest point is 5 s old, before sealing and retention, at shutdown, and
//! whenever a read comes: every read first waits for the head to be flushed, so reads see every
//! acknowledged point and never look at the head. After a crash the head is rebuilt from the
//! log's records after the position and flushed at open.
//! Reads use separate connections (WAL readers never block the writer).
//!
//! # Duplicates and conflicts
//!
//! A sample whose (gateway, sequence) is already stored is dropped. A point whose
//! (meter, quantity, time) is already stored (or in the head) with the same value is a no-op;
//! with a different value it is a **conflict**: the stored reading stays, the offered value is
//! kept aside as a row of `conflicts` (both values, who sent it, when) in the same transaction,
//! and counted (`energyd_points_conflicting_total`). Ingest never replaces a stored reading;
//! only an engineer's correction ([`Store::correct`], from a `reading` meter event) does, as a
//! row of `points`, settling the conflicts at that time. The writer keeps, per series, the newest time stored and the newest in the head: a
//! point later than both (nearly every point) is new without a lookup; an older one is checked
//! against the head, then against the stored readings of its day.

//!
//! # Backends
//!
//! [`Store`] is what the API uses. It is the embedded store, plus, with `[storage] backend =
//! "influxdb"`, an InfluxDB client ([`influx`]): the embedded store still takes every write
//! (it is the durable log and keeps the roll-ups) and spools it for InfluxDB; raw-point reads
//! (`points`, `counter_window`, stepped series) go to InfluxDB over InfluxQL unless its
//! `read = "local"`. Roll-up reads always stay local.

mod apply;
mod changes;
mod chunks;
pub mod codec;
mod config;
mod conflicts;
pub mod disk;
mod embedded;
mod error;
mod format;
mod forward;
mod fxmap;
mod gateways;
mod group_commit;
mod head;
mod hooks;
pub mod influx;
pub mod log;
mod outbox;
mod reads;
mod requests;
mod retention;
mod rollup;
pub mod rollup_codec;
mod rollup_rows;
mod schema;
mod syncer;
#[cfg(test)]
mod tests;
mod writer;

use std::sync::Arc;

use energy_wire::{Batch, Quantity};

use crate::metrics::Metrics;

pub use changes::ChangeRecord;
pub use config::{Backend, InfluxApi, InfluxConfig, InfluxRead, RetentionConfig, SecretError, StorageConfig, StoreOptions, DEFAULT_MIN_FREE_BYTES};
pub use conflicts::{Conflict, ConflictRecord, Corrected, Correction, MAX_CONFLICTS_SHOWN};
pub use embedded::{open_forwarding, Embedded};
pub use error::{StoreError, WriteError};
pub use format::FORMAT_VERSION;
pub use forward::run as forward;
pub use gateways::GatewayEpoch;
pub use outbox::{Forwarding, Spool, SpoolRow};
pub use reads::CounterRollups;
pub use requests::{Point, WriteOutcome};
pub use rollup::{rollups_of, HourColumns, HourEnds, HourRollup};

/// Opens (creating if needed) the embedded store in `dir`, keeping everything forever.
pub fn open(dir: &std::path::Path, metrics: Metrics) -> Result<Store, StoreError> {
    Ok(Store::embedded(embedded::open(dir, metrics)?))
}

/// Opens the embedded store in `dir` to read it: for writing when no other process has it,
/// otherwise beside that process (a running daemon) for reading only, seeing what it has flushed
/// (`energyd report`).
pub fn open_or_read(dir: &std::path::Path, metrics: Metrics) -> Result<Store, StoreError> {
    match embedded::open(dir, metrics.clone()) {
        Ok(e) => Ok(Store::embedded(e)),
        Err(StoreError::InUse { .. }) => {
            tracing::info!(dir = %dir.display(), "the store is open in another process (the daemon): reading what it has flushed");
            Ok(Store::embedded(embedded::open_reader(dir, metrics)?))
        }
        Err(e) => Err(e),
    }
}

/// Opens (creating if needed) the embedded store in `dir`.
pub fn open_with(dir: &std::path::Path, metrics: Metrics, options: StoreOptions) -> Result<Store, StoreError> {
    Ok(Store::embedded(embedded::open_with(dir, metrics, options)?))
}

/// The store the API uses: the embedded store, and InfluxDB when configured. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    local: Embedded,
    /// Set when raw-point reads go to InfluxDB.
    remote: Option<Arc<influx::Influx>>,
}

impl Store {
    /// Only the embedded store.
    pub fn embedded(local: Embedded) -> Store {
        Store { local, remote: None }
    }

    /// The embedded store (opened with [`open_forwarding`]) and InfluxDB.
    pub fn with_influx(local: Embedded, influx: Arc<influx::Influx>) -> Store {
        let remote = (influx.config().read == InfluxRead::Influxql).then_some(influx);
        Store { local, remote }
    }

    /// The embedded store.
    pub fn local(&self) -> &Embedded {
        &self.local
    }

    /// Stores a gateway batch; returns after the local commit. [`StoreError::SpoolFull`] when
    /// InfluxDB is behind by more than the spool's bound.
    pub async fn write_batch(&self, batch: Batch) -> Result<WriteOutcome, StoreError> {
        self.local.write_batch(batch).await
    }

    /// Stores loose points (line protocol); returns after the local commit.
    pub async fn write_points(&self, points: Vec<Point>) -> Result<WriteOutcome, StoreError> {
        self.local.write_points(points).await
    }

    /// [`Store::write_points`] naming who sent them (kept with any conflict they cause).
    pub async fn write_points_from(&self, points: Vec<Point>, source: String) -> Result<WriteOutcome, StoreError> {
        self.local.write_points_from(points, source).await
    }

    /// An engineer's correction of a stored reading (see [`Embedded::correct`]).
    pub async fn correct(&self, c: Correction) -> Result<WriteOutcome, StoreError> {
        self.local.correct(c).await
    }

    /// A meter's conflicts, open and settled, oldest first.
    pub async fn conflicts(&self, meter: &str, limit: usize) -> Result<Vec<ConflictRecord>, StoreError> {
        self.local.conflicts(meter, limit).await
    }

    pub async fn compact(&self) -> Result<WriteOutcome, StoreError> {
        self.local.compact().await
    }

    /// Runs `f` on a local read connection.
    pub async fn read<T: Send + 'static>(&self, f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static) -> Result<T, StoreError> {
        self.local.read(f).await
    }

    /// Readings of one series in `[from, to)`, by time, from the backend holding raw points.
    pub async fn points(&self, meter: &str, q: Quantity, from: i64, to: i64) -> Result<Vec<(i64, f64)>, StoreError> {
        match &self.remote {
            Some(r) => r.points(meter, q, from, to).await.map_err(StoreError::Remote),
            None => self.local.points(meter, q, from, to).await,
        }
    }

    /// `agg` per `step` computed by the backend, when it does that itself (InfluxDB); `None`:
    /// the caller aggregates [`Store::points`].
    pub async fn aggregate(&self, meter: &str, q: Quantity, from: i64, to: i64, step: i64, agg: &str) -> Result<Option<Vec<(i64, f64)>>, StoreError> {
        match &self.remote {
            Some(r) => r.aggregate(meter, q, from, to, step, agg).await.map(Some).map_err(StoreError::Remote),
            None => Ok(None),
        }
    }

    /// Readings of a counter covering `[from, to)` (see [`Embedded::counter_window`]), from the
    /// backend holding raw points.
    pub async fn counter_window(&self, meter: &str, q: Quantity, from: i64, to: i64) -> Result<Vec<(i64, f64)>, StoreError> {
        match &self.remote {
            Some(r) => r.counter_window(meter, q, from, to).await.map_err(StoreError::Remote),
            None => self.local.counter_window(meter, q, from, to).await,
        }
    }

    /// Hourly roll-ups (always local).
    pub async fn rollups(&self, meter: &str, q: Quantity, from: i64, to: i64) -> Result<Vec<HourRollup>, StoreError> {
        self.local.rollups(meter, q, from, to).await
    }

    /// Hourly roll-ups as of the head's last flush (always local; see
    /// [`Embedded::rollups_settled`]).
    pub async fn rollups_settled(&self, meter: &str, q: Quantity, from: i64, to: i64) -> Result<Vec<HourRollup>, StoreError> {
        self.local.rollups_settled(meter, q, from, to).await
    }

    /// Counter roll-ups of many series (always local).
    pub async fn counter_rollups_many(&self, series: Vec<(String, Quantity)>, from: i64, to: i64) -> Result<Vec<CounterRollups>, StoreError> {
        self.local.counter_rollups_many(series, from, to).await
    }

    /// Counter roll-ups of many series as of the head's last flush (see
    /// [`Embedded::counter_rollups_many_settled`]).
    pub async fn counter_rollups_many_settled(&self, series: Vec<(String, Quantity)>, from: i64, to: i64) -> Result<Vec<CounterRollups>, StoreError> {
        self.local.counter_rollups_many_settled(series, from, to).await
    }

    /// Flushes the embedded store's head: what was acknowledged before is readable by the
    /// `_settled` reads.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.local.flush().await
    }

    pub async fn gateways(&self) -> Result<Vec<(String, Vec<GatewayEpoch>)>, StoreError> {
        self.local.gateways().await
    }

    pub async fn stored_meters(&self) -> Result<Vec<String>, StoreError> {
        self.local.stored_meters().await
    }

    pub fn last_seen(&self, meter: &str) -> Option<i64> {
        self.local.last_seen(meter)
    }

    /// Change records for the accounting cache (kept locally whatever the backend).
    pub async fn change_records(&self) -> Result<Vec<ChangeRecord>, StoreError> {
        self.local.change_records().await
    }

    /// Forgets the change records the cache applied, as (meter, sequence).
    pub async fn forget_change_records(&self, applied: Vec<(String, i64)>) -> Result<(), StoreError> {
        self.local.forget_change_records(applied).await
    }

    /// The epoch of the change records: a cache built in another epoch is discarded.
    pub async fn change_epoch(&self) -> Result<String, StoreError> {
        self.local.change_epoch().await
    }

    /// Time of the last counter reading of a series before `t`, from the local roll-ups.
    pub async fn reading_before(&self, meter: &str, q: Quantity, t: i64) -> Result<Option<i64>, StoreError> {
        self.local.reading_before(meter, q, t).await
    }

    /// Size of the embedded store's files (spool included).
    pub fn bytes(&self) -> u64 {
        self.local.bytes()
    }

    pub fn close(&self) {
        self.local.close();
    }
}

