//! The roll-up tables: `rollup_hour` (one row per series and open hour) and `rollup_day` (the
//! hours of a sealed day in one compressed blob); a row wins over a blob's entry for its hour.

use rusqlite::{params, Connection, OptionalExtension};

use super::chunks;
use super::rollup_codec;
use super::rollup::{HourColumns, HourEnds, HourRollup};
use energy_wire::time::{day_of, hour_of, DAY_MS, HOUR_MS};

pub(super) const PUT_ROLLUP: &str = "INSERT OR REPLACE INTO rollup_hour(series, hour, first_ts, first_v, last_ts, last_v, min, max, sum, count)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

pub(super) fn put_rollup(conn: &Connection, sid: i64, r: &HourRollup) -> rusqlite::Result<()> {
    put_rollup_with(&mut conn.prepare_cached(PUT_ROLLUP)?, sid, r)
}

/// [`put_rollup`] with the statement prepared by the caller (a flush writes thousands).
pub(super) fn put_rollup_with(st: &mut rusqlite::CachedStatement<'_>, sid: i64, r: &HourRollup) -> rusqlite::Result<()> {
    st.execute(params![sid, r.hour, r.first_ts, r.first_v, r.last_ts, r.last_v, r.min, r.max, r.sum, r.count as i64])?;
    Ok(())
}

pub(super) const ROLLUP_COLUMNS: &str = "hour, first_ts, first_v, last_ts, last_v, min, max, sum, count";

pub(super) fn rollup_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HourRollup> {
    Ok(HourRollup {
        hour: r.get(0)?,
        first_ts: r.get(1)?,
        first_v: r.get(2)?,
        last_ts: r.get(3)?,
        last_v: r.get(4)?,
        min: r.get(5)?,
        max: r.get(6)?,
        sum: r.get(7)?,
        count: r.get::<_, i64>(8)? as u64,
    })
}

/// Hourly roll-ups of a series in `[from, to)`: the rows of open hours and the sealed days'
/// blobs; a row wins over a blob's entry for the same hour (it was written after the sealing).
pub(super) fn read_rollups(c: &Connection, sid: i64, from: i64, to: i64) -> rusqlite::Result<Vec<HourRollup>> {
    let from = hour_of(from);
    let mut st = c.prepare_cached(&format!("SELECT {ROLLUP_COLUMNS} FROM rollup_hour WHERE series = ?1 AND hour >= ?2 AND hour < ?3 ORDER BY hour"))?;
    let rows: Vec<HourRollup> = st.query_map(params![sid, from, to], rollup_row)?.collect::<Result<_, _>>()?;
    let mut sealed = Vec::new();
    let mut st = c.prepare_cached("SELECT day, data FROM rollup_day WHERE series = ?1 AND day >= ?2 AND day < ?3 ORDER BY day")?;
    let mut blobs = st.query(params![sid, day_of(from), to])?;
    while let Some(b) = blobs.next()? {
        let (day, data): (i64, Vec<u8>) = (b.get(0)?, b.get(1)?);
        sealed.extend(rollup_codec::decode_rollups(day, &data).map_err(chunks::corrupt)?.into_iter().filter(|h| h.hour >= from && h.hour < to));
    }
    if sealed.is_empty() {
        return Ok(rows);
    }
    Ok(merge_rollups(sealed, rows))
}

/// The first and last reading of each hour of a series in `[from, to)`, in columns: what
/// [`read_rollups`] gives of them, to the bit, with the sealed days' blobs decoded straight into
/// the columns (no roll-up built per hour, no copy of a blob) and of the open hours' rows only
/// the five columns needed.
pub(super) fn read_hour_ends(c: &Connection, sid: i64, from: i64, to: i64) -> rusqlite::Result<HourColumns> {
    let from = hour_of(from);
    let mut st = c.prepare_cached("SELECT hour, first_ts, first_v, last_ts, last_v FROM rollup_hour WHERE series = ?1 AND hour >= ?2 AND hour < ?3 ORDER BY hour")?;
    let mut rows: Vec<HourEnds> = Vec::new();
    let mut q = st.query(params![sid, from, to])?;
    while let Some(r) = q.next()? {
        rows.push(HourEnds { hour: r.get(0)?, first_ts: r.get(1)?, first_v: r.get(2)?, last_ts: r.get(3)?, last_v: r.get(4)? });
    }
    let hours = usize::try_from(to.saturating_sub(from) / HOUR_MS).unwrap_or(0).min(MAX_PRESIZED_HOURS);
    let mut out = HourColumns::with_capacity(hours.max(rows.len()));
    let mut rows = rows.into_iter().peekable();
    // The blob's hours and the rows merged by hour as they come; on the same hour the row wins.
    let mut take = |h: HourEnds| {
        while let Some(r) = rows.next_if(|r| r.hour <= h.hour) {
            if r.hour == h.hour {
                out.push(r);
                return;
            }
            out.push(r);
        }
        out.push(h);
    };
    let mut st = c.prepare_cached("SELECT day, data FROM rollup_day WHERE series = ?1 AND day >= ?2 AND day < ?3 ORDER BY day")?;
    let mut blobs = st.query(params![sid, day_of(from), to])?;
    while let Some(b) = blobs.next()? {
        let day: i64 = b.get(0)?;
        let data = b.get_ref(1)?.as_blob().map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Blob, Box::new(e)))?;
        rollup_codec::decode_ends(day, data, |h| {
            if h.hour >= from && h.hour < to {
                take(h);
            }
        })
        .map_err(chunks::corrupt)?;
    }
    rows.for_each(|r| out.push(r));
    Ok(out)
}

/// Hours presized for at most (a year and a day): a longer window grows as it is read.
const MAX_PRESIZED_HOURS: usize = 367 * 24;

/// Both sorted by hour into one; on the same hour the row wins.
pub(super) fn merge_rollups(sealed: Vec<HourRollup>, rows: Vec<HourRollup>) -> Vec<HourRollup> {
    let mut out = Vec::with_capacity(sealed.len() + rows.len());
    let (mut a, mut b) = (sealed.into_iter().peekable(), rows.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.hour < y.hour => out.extend(a.next()),
            (Some(x), Some(y)) if x.hour == y.hour => {
                a.next();
                out.extend(b.next());
            }
            (_, Some(_)) => out.extend(b.next()),
            (Some(_), None) => out.extend(a.next()),
            (None, None) => return out,
        }
    }
}

/// The roll-up of the newest hour before `t` (hour-aligned), rows and sealed days.
pub(super) fn rollup_before(c: &Connection, sid: i64, t: i64) -> rusqlite::Result<Option<HourRollup>> {
    let row = c
        .prepare_cached(&format!("SELECT {ROLLUP_COLUMNS} FROM rollup_hour WHERE series = ?1 AND hour < ?2 ORDER BY hour DESC LIMIT 1"))?
        .query_row(params![sid, t], rollup_row)
        .optional()?;
    // The blob of the day holding `t` may have nothing before it; then the one before does.
    let mut sealed = None;
    let mut st = c.prepare_cached("SELECT day, data FROM rollup_day WHERE series = ?1 AND day < ?2 ORDER BY day DESC LIMIT 2")?;
    let mut blobs = st.query(params![sid, t])?;
    while let Some(b) = blobs.next()? {
        let (day, data): (i64, Vec<u8>) = (b.get(0)?, b.get(1)?);
        if let Some(h) = rollup_codec::decode_rollups(day, &data).map_err(chunks::corrupt)?.into_iter().rev().find(|h| h.hour < t) {
            sealed = Some(h);
            break;
        }
    }
    Ok(match (sealed, row) {
        (Some(s), Some(r)) => Some(if s.hour > r.hour { s } else { r }),
        (s, r) => r.or(s),
    })
}

/// The roll-up of the oldest hour at or after `t` (hour-aligned), rows and sealed days.
pub(super) fn rollup_from(c: &Connection, sid: i64, t: i64) -> rusqlite::Result<Option<HourRollup>> {
    let row = c
        .prepare_cached(&format!("SELECT {ROLLUP_COLUMNS} FROM rollup_hour WHERE series = ?1 AND hour >= ?2 ORDER BY hour LIMIT 1"))?
        .query_row(params![sid, t], rollup_row)
        .optional()?;
    let mut sealed = None;
    let mut st = c.prepare_cached("SELECT day, data FROM rollup_day WHERE series = ?1 AND day >= ?2 ORDER BY day LIMIT 2")?;
    let mut blobs = st.query(params![sid, day_of(t)])?;
    while let Some(b) = blobs.next()? {
        let (day, data): (i64, Vec<u8>) = (b.get(0)?, b.get(1)?);
        if let Some(h) = rollup_codec::decode_rollups(day, &data).map_err(chunks::corrupt)?.into_iter().find(|h| h.hour >= t) {
            sealed = Some(h);
            break;
        }
    }
    Ok(match (sealed, row) {
        (Some(s), Some(r)) => Some(if s.hour < r.hour { s } else { r }),
        (s, r) => r.or(s),
    })
}

/// The stored roll-up of one hour: its row, else its sealed day's entry.
pub(super) fn stored_rollup(c: &Connection, sid: i64, hour: i64) -> rusqlite::Result<Option<HourRollup>> {
    let row = c
        .prepare_cached(&format!("SELECT {ROLLUP_COLUMNS} FROM rollup_hour WHERE series = ?1 AND hour = ?2"))?
        .query_row(params![sid, hour], rollup_row)
        .optional()?;
    if row.is_some() {
        return Ok(row);
    }
    let day = day_of(hour);
    let data: Option<Vec<u8>> = c.prepare_cached("SELECT data FROM rollup_day WHERE series = ?1 AND day = ?2")?.query_row(params![sid, day], |r| r.get(0)).optional()?;
    match data {
        Some(d) => Ok(rollup_codec::decode_rollups(day, &d).map_err(chunks::corrupt)?.into_iter().find(|h| h.hour == hour)),
        None => Ok(None),
    }
}

/// Seals the roll-up rows of a series and day into the day's blob (merged with the blob already
/// there, rows winning), inside the caller's transaction.
pub(super) fn seal_rollups(c: &Connection, sid: i64, day: i64) -> rusqlite::Result<()> {
    let all = read_rollups(c, sid, day, day + DAY_MS)?;
    if all.is_empty() {
        return Ok(());
    }
    c.prepare_cached("INSERT OR REPLACE INTO rollup_day(series, day, data) VALUES (?1, ?2, ?3)")?.execute(params![sid, day, rollup_codec::encode_rollups(day, &all)])?;
    c.prepare_cached("DELETE FROM rollup_hour WHERE series = ?1 AND hour >= ?2 AND hour < ?3")?.execute(params![sid, day, day + DAY_MS])?;
    Ok(())
}
