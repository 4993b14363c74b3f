//! The roll-ups: `rollup_day` (the hours of a sealed day in one compressed blob), `rollup_hour`
//! (one row per series and hour: an hour an engineer's correction rolled up again, a day sealed
//! by a compaction's flush before its blob, and the open hours of stores written before format
//! 9), and the partial roll-ups of the segments (format 9): per hour, the roll-up of a
//! segment's own readings, computed from them when read, or written out in `segments.rollups`
//! (encoded as a sealed day's blob) once a correction took an hour out of them; a segment of a
//! version 8 store has an empty blob there (its hours are rows).
//!
//! An hour's roll-up is its base, the row if there is one (it was written after the sealing and
//! holds what was stored then), else the sealed day's entry, merged with the partials of the
//! segments written after it, in the order they were written. The readings of the segments are
//! distinct from each other and from what was stored before them (the writer flushes only
//! points that were new), so the merge adds them up; a correction rolls its hour up again from
//! every stored reading into a row and takes that hour out of the segments' partials
//! ([`strip_partials`]). Why partials and not rows merged at each flush: a flush of a time slice
//! of every series rewrote most leaf pages of `rollup_hour` (keyed by series and hour), several
//! bytes per point ingested, into the WAL and again at the checkpoint (issue 19); a partial
//! costs no write at all (the segment holds its readings), only the decoding of an open day's
//! segments when its roll-ups are read.

use rusqlite::{params, Connection, OptionalExtension};

use super::chunks;
use super::codec;
use super::rollup_codec;
use super::rollup::{rollups_of, HourColumns, HourEnds, HourRollup};
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
    let base = if sealed.is_empty() { rows } else { merge_rollups(sealed, rows) };
    Ok(apply_partials(base, partials(c, sid, from, to)?))
}

/// The partial roll-ups of one segment row (`day`, `rollups`, `data` at columns `at`..): its
/// `rollups` blob when it has one (hours a correction took out, or none for a segment of a
/// version 8 store, whose hours are rows), else the roll-ups of its own readings.
fn segment_partials(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Vec<HourRollup>> {
    let day: i64 = r.get(at)?;
    let blob = |i: usize| r.get_ref(i)?.as_blob().map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Blob, Box::new(e)));
    if r.get_ref(at + 1)? != rusqlite::types::ValueRef::Null {
        return rollup_codec::decode_rollups(day, blob(at + 1)?).map_err(chunks::corrupt);
    }
    Ok(rollups_of(&codec::decode(blob(at + 2)?).map_err(chunks::corrupt)?))
}

/// The `rollups` blob that says "no partial": a segment of a version 8 store (its hours are
/// rows), or one whose every hour a correction took out.
pub(super) fn no_partials() -> Vec<u8> {
    rollup_codec::encode_rollups(0, &[])
}

/// The partial roll-ups of the segments of a series (days from `day_of(from)`,
/// hours in `[from, to)`), sorted by hour, those of one hour in the order they were written.
pub(super) fn partials(c: &Connection, sid: i64, from: i64, to: i64) -> rusqlite::Result<Vec<HourRollup>> {
    let mut st = c.prepare_cached("SELECT day, rollups, data FROM segments WHERE series = ?1 AND day >= ?2 AND day < ?3 ORDER BY day, id")?;
    let mut q = st.query(params![sid, day_of(from), to])?;
    let mut out: Vec<HourRollup> = Vec::new();
    let mut sorted = true;
    while let Some(r) = q.next()? {
        for h in segment_partials(r, 0)?.into_iter().filter(|h| h.hour >= from && h.hour < to) {
            sorted &= out.last().is_none_or(|l| l.hour <= h.hour);
            out.push(h);
        }
    }
    if !sorted {
        // Stable: the partials of one hour stay in the order they were written.
        out.sort_by_key(|h| h.hour);
    }
    Ok(out)
}

/// `base` (by hour, one per hour) with `partials` (by hour) merged in: an hour's base first,
/// then its partials in order, as the rows were merged at each flush before format 9.
pub(super) fn apply_partials(base: Vec<HourRollup>, partials: Vec<HourRollup>) -> Vec<HourRollup> {
    if partials.is_empty() {
        return base;
    }
    let mut out: Vec<HourRollup> = Vec::with_capacity(base.len() + partials.len());
    let mut b = base.into_iter().peekable();
    for p in partials {
        while let Some(x) = b.next_if(|x| x.hour < p.hour) {
            out.push(x);
        }
        match out.last_mut() {
            Some(l) if l.hour == p.hour => *l = l.merge(&p),
            _ => match b.next_if(|x| x.hour == p.hour) {
                Some(x) => out.push(x.merge(&p)),
                None => out.push(p),
            },
        }
    }
    out.extend(b);
    out
}

/// [`apply_partials`] for the first and last readings in columns.
fn apply_partial_ends(base: HourColumns, partials: &[HourRollup]) -> HourColumns {
    fn at(c: &HourColumns, i: usize) -> HourEnds {
        HourEnds { hour: c.hour[i], first_ts: c.first_ts[i], first_v: c.first_v[i], last_ts: c.last_ts[i], last_v: c.last_v[i] }
    }
    let mut out = HourColumns::with_capacity(base.len() + partials.len());
    let mut i = 0;
    for p in partials.iter().map(HourEnds::from) {
        while i < base.len() && base.hour[i] < p.hour {
            out.push(at(&base, i));
            i += 1;
        }
        let n = out.len();
        if n > 0 && out.hour[n - 1] == p.hour {
            let m = at(&out, n - 1).merge(&p);
            (out.first_ts[n - 1], out.first_v[n - 1], out.last_ts[n - 1], out.last_v[n - 1]) = (m.first_ts, m.first_v, m.last_ts, m.last_v);
        } else if i < base.len() && base.hour[i] == p.hour {
            out.push(at(&base, i).merge(&p));
            i += 1;
        } else {
            out.push(p);
        }
    }
    while i < base.len() {
        out.push(at(&base, i));
        i += 1;
    }
    out
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
    let partials = partials(c, sid, from, to)?;
    if partials.is_empty() {
        return Ok(out);
    }
    Ok(apply_partial_ends(out, &partials))
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

/// The roll-up of the newest hour before `t` (hour-aligned): rows, sealed days and partials.
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
    let base = match (sealed, row) {
        (Some(s), Some(r)) => Some(if s.hour > r.hour { s } else { r }),
        (s, r) => r.or(s),
    };
    // The newest hour with a partial: if it is not older than the base's, that hour is read
    // whole (its base and partials); if older, the base's hour has no partial.
    let mut newest: Option<i64> = None;
    let mut st = c.prepare_cached("SELECT day, rollups, data FROM segments WHERE series = ?1 AND day < ?2 ORDER BY day DESC, id DESC")?;
    let mut q = st.query(params![sid, t])?;
    while let Some(r) = q.next()? {
        let day: i64 = r.get(0)?;
        if newest.is_some_and(|h| day_of(h) > day) {
            break;
        }
        if let Some(h) = segment_partials(r, 0)?.into_iter().rev().find(|h| h.hour < t) {
            newest = Some(newest.map_or(h.hour, |n| n.max(h.hour)));
        }
    }
    match newest {
        Some(h) if base.is_none_or(|b| b.hour <= h) => Ok(read_rollups(c, sid, h, h + HOUR_MS)?.pop()),
        _ => Ok(base),
    }
}

/// The roll-up of the oldest hour at or after `t` (hour-aligned): rows, sealed days and partials.
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
    let base = match (sealed, row) {
        (Some(s), Some(r)) => Some(if s.hour < r.hour { s } else { r }),
        (s, r) => r.or(s),
    };
    let mut oldest: Option<i64> = None;
    let mut st = c.prepare_cached("SELECT day, rollups, data FROM segments WHERE series = ?1 AND day >= ?2 ORDER BY day, id")?;
    let mut q = st.query(params![sid, day_of(t)])?;
    while let Some(r) = q.next()? {
        let day: i64 = r.get(0)?;
        if oldest.is_some_and(|h| day_of(h) < day) {
            break;
        }
        if let Some(h) = segment_partials(r, 0)?.into_iter().find(|h| h.hour >= t) {
            oldest = Some(oldest.map_or(h.hour, |n| n.min(h.hour)));
        }
    }
    match oldest {
        Some(h) if base.is_none_or(|b| b.hour >= h) => Ok(read_rollups(c, sid, h, h + HOUR_MS)?.into_iter().next()),
        _ => Ok(base),
    }
}

/// Takes the hour out of the partials of its day's segments: a correction has just rolled it
/// up again, from every stored reading, into its row.
pub(super) fn strip_partials(c: &Connection, sid: i64, hour: i64) -> rusqlite::Result<()> {
    let day = day_of(hour);
    let mut st = c.prepare_cached("SELECT id, day, rollups, data FROM segments WHERE series = ?1 AND day = ?2")?;
    let found: Vec<(i64, Vec<HourRollup>)> = st.query_map(params![sid, day], |r| Ok((r.get(0)?, segment_partials(r, 1)?)))?.collect::<Result<_, _>>()?;
    for (id, hours) in found {
        if hours.iter().all(|h| h.hour != hour) {
            continue;
        }
        // From now on the segment's partials are written out: its readings less that hour.
        let rest: Vec<HourRollup> = hours.into_iter().filter(|h| h.hour != hour).collect();
        c.prepare_cached("UPDATE segments SET rollups = ?1 WHERE id = ?2")?.execute(params![rollup_codec::encode_rollups(day, &rest), id])?;
    }
    Ok(())
}

/// Turns the partials of a series' segments of days before `before` into rows (whole hours,
/// base and partials merged), so that deleting those segments (past the raw points' retention)
/// keeps their roll-ups, which may be kept longer.
pub(super) fn settle_partials(c: &Connection, sid: i64, before: i64) -> rusqlite::Result<()> {
    let days: Vec<i64> = c
        .prepare_cached("SELECT DISTINCT day FROM segments WHERE series = ?1 AND day < ?2")?
        .query_map(params![sid, before], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for day in days {
        for r in read_rollups(c, sid, day, day + DAY_MS)? {
            put_rollup(c, sid, &r)?;
        }
        c.prepare_cached("UPDATE segments SET rollups = ?3 WHERE series = ?1 AND day = ?2")?.execute(params![sid, day, no_partials()])?;
    }
    Ok(())
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
