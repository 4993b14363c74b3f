//! Retention: raw points and roll-ups older than configured are deleted by the writer.

use rusqlite::{params, Connection};

use super::config::StoreOptions;
use super::rollup_rows::settle_partials;
use super::schema::add_point_count;
use energy_wire::time::{hour_of, DAY_MS};

/// How often the writer applies the retention.
pub(super) const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes raw points and roll-ups older than the retention, whole hours only, in one
/// transaction. Returns the number of raw points deleted.
pub(super) fn prune(conn: &Connection, options: StoreOptions, now_ms: i64) -> rusqlite::Result<u64> {
    if options.raw_retention_ms.is_none() && options.rollup_retention_ms.is_none() {
        return Ok(0);
    }
    let tx = conn.unchecked_transaction()?;
    let ids: Vec<i64> = tx.prepare("SELECT id FROM series")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let mut deleted = 0u64;
    for id in ids {
        if let Some(r) = options.raw_retention_ms {
            deleted += tx.prepare_cached("DELETE FROM points WHERE series = ?1 AND ts < ?2")?.execute(params![id, hour_of(now_ms - r)])? as u64;
        }
        if let Some(r) = options.raw_retention_ms {
            // Whole days only: a chunk or segment goes when all of its day is past the retention.
            let before = hour_of(now_ms - r) - DAY_MS + 1;
            let n: i64 = tx
                .prepare_cached("SELECT coalesce(sum(count), 0) FROM chunks WHERE series = ?1 AND day < ?2")?
                .query_row(params![id, before], |r| r.get(0))?;
            tx.prepare_cached("DELETE FROM chunks WHERE series = ?1 AND day < ?2")?.execute(params![id, before])?;
            deleted += n as u64;
            // The roll-ups written beside those segments outlive them as rows (the roll-ups'
            // retention may be longer).
            settle_partials(&tx, id, before)?;
            let n: i64 = tx
                .prepare_cached("SELECT coalesce(sum(count), 0) FROM segments WHERE series = ?1 AND day < ?2")?
                .query_row(params![id, before], |r| r.get(0))?;
            tx.prepare_cached("DELETE FROM segments WHERE series = ?1 AND day < ?2")?.execute(params![id, before])?;
            deleted += n as u64;
        }
        if let Some(r) = options.rollup_retention_ms {
            tx.prepare_cached("DELETE FROM rollup_hour WHERE series = ?1 AND hour < ?2")?.execute(params![id, hour_of(now_ms - r)])?;
            // Sealed roll-ups go by whole days, like chunks.
            tx.prepare_cached("DELETE FROM rollup_day WHERE series = ?1 AND day < ?2")?.execute(params![id, hour_of(now_ms - r) - DAY_MS + 1])?;
        }
    }
    add_point_count(&tx, -(deleted as i64))?;
    tx.commit()?;
    Ok(deleted)
}
