//! The embedded store: SQLite (bundled) in WAL mode with `synchronous = FULL`, so that a write is
//! on disk when its transaction commits, and an acknowledged write survives SIGKILL and power loss.
//!
//! # Layout (format version 3)
//!
//! * `meta(key, value)`: `format_version`, `point_count`, `dirty_epoch`. Versions 1 (no roll-ups)
//!   and 2 (no change records) are upgraded in place at open; any other version is refused with a
//!   message naming it.
//! * `series(id, meter, quantity)`: one row per (meter, quantity).
//! * `points(series, ts, value)`, `WITHOUT ROWID`, primary key (series, ts): one reading;
//!   `ts` in milliseconds since the Unix epoch.
//! * `gateway_seq(gateway, start, end)`: the ranges of sample sequence numbers stored per gateway,
//!   merged; used to drop duplicate samples by identity.
//! * `rollup_hour(series, hour, first_ts, first_v, last_ts, last_v, min, max, sum, count)`,
//!   `WITHOUT ROWID`, primary key (series, hour): the hourly roll-up of each series
//!   ([`crate::accounting::rollup::HourRollup`]), kept in the same transaction as the points:
//!   a new point is merged in, a duplicate changes nothing, a replaced value makes the writer
//!   recompute that hour from the raw points. Reports read these, never the raw points.
//! * `dirty_meters(meter, min_ts, seq)`: per meter, the earliest reading time written since the
//!   accounting cache last applied it, and a sequence number bumped by every write; kept in the
//!   same transaction as the points, so that a cache of figures built from the store is never
//!   stale after a crash. `dirty_epoch` (random, set when the table is created) ties such a cache
//!   to this store.
//!
//! # Threads
//!
//! One writer thread owns the write connection. Writes arrive on a channel; the writer takes all
//! that are waiting, commits them in one transaction (group commit), and only then answers each
//! request. Reads use separate connections (WAL readers never block the writer).
//!
//! # Duplicates
//!
//! A sample whose (gateway, sequence) is already stored is dropped. A point whose
//! (meter, quantity, time) is already stored with the same value is a no-op; with a different
//! value the new value replaces the old (last write wins, as in InfluxDB) and the conflict is
//! counted.

mod chunks;
pub mod codec;
mod sqlite;

pub use sqlite::{open, open_with, CounterRollups, Store, StoreError, StoreOptions, WriteOutcome};

/// One value to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub meter: String,
    pub quantity: energy_wire::Quantity,
    pub ts: i64,
    pub value: f64,
}

/// The storage format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 3;
