//! Compressed chunks: the readings of one series in one UTC day, encoded by [`super::codec`],
//! in table `chunks(series, day, count, data)`. Recent readings are in `segments(id, series,
//! day, count, data)`: the writer's head, flushed as one encoded run per series and day (see
//! `writer.rs`); a reading that replaces a stored value is a row of `points`. The writer seals
//! whole days older than `seal_after` into chunks: chunk, segments and raw rows of the day merged
//! into one chunk, in one transaction. Every read merges the three; on equal times `points` wins
//! over segments, and segments over the chunk (later writes win).

use rusqlite::{params, Connection, OptionalExtension};

use super::codec;

use energy_wire::time::{day_of, DAY_MS};

pub(super) fn corrupt(e: codec::CodecError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
}

/// The decoded chunk of a series and day, if sealed.
pub(super) fn chunk(c: &Connection, sid: i64, day: i64) -> rusqlite::Result<Option<Vec<(i64, f64)>>> {
    let data: Option<Vec<u8>> = c.prepare_cached("SELECT data FROM chunks WHERE series = ?1 AND day = ?2")?.query_row(params![sid, day], |r| r.get(0)).optional()?;
    data.map(|d| codec::decode(&d).map_err(corrupt)).transpose()
}

/// Both runs sorted by time into one; on equal times the raw reading wins (it came later).
pub(super) fn merge(chunked: Vec<(i64, f64)>, raw: Vec<(i64, f64)>) -> Vec<(i64, f64)> {
    let mut out = Vec::with_capacity(chunked.len() + raw.len());
    let (mut a, mut b) = (chunked.into_iter().peekable(), raw.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 < y.0 => out.extend(a.next()),
            (Some(x), Some(y)) if x.0 == y.0 => {
                a.next();
                out.extend(b.next());
            }
            (_, Some(_)) => out.extend(b.next()),
            (Some(_), None) => out.extend(a.next()),
            (None, None) => return out,
        }
    }
}

fn raw(c: &Connection, sid: i64, from: i64, to: i64) -> rusqlite::Result<Vec<(i64, f64)>> {
    let mut st = c.prepare_cached("SELECT ts, value FROM points WHERE series = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts")?;
    let rows = st.query_map(params![sid, from, to], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Readings in `segments` of a series in `[from, to)`, by time (a later segment wins on equal
/// times, which the writer does not produce).
fn segments(c: &Connection, sid: i64, from: i64, to: i64) -> rusqlite::Result<Vec<(i64, f64)>> {
    let mut out: Vec<(i64, f64)> = Vec::new();
    let mut st = c.prepare_cached("SELECT data FROM segments WHERE series = ?1 AND day >= ?2 AND day < ?3 ORDER BY day, id")?;
    let mut rows = st.query(params![sid, day_of(from), to])?;
    let mut sorted = true;
    while let Some(r) = rows.next()? {
        let data: Vec<u8> = r.get(0)?;
        for p in codec::decode(&data).map_err(corrupt)?.into_iter().filter(|p| p.0 >= from && p.0 < to) {
            sorted &= out.last().is_none_or(|l| l.0 < p.0);
            out.push(p);
        }
    }
    if !sorted {
        // Late readings: segments of a day overlap in time. Stable, so the later one is last.
        out.sort_by_key(|p| p.0);
        let mut dedup: Vec<(i64, f64)> = Vec::with_capacity(out.len());
        for p in out {
            match dedup.last_mut() {
                Some(l) if l.0 == p.0 => *l = p,
                _ => dedup.push(p),
            }
        }
        out = dedup;
    }
    Ok(out)
}

/// Readings of a series in `[from, to)`: chunks, segments and raw points.
pub(super) fn read_series(c: &Connection, sid: i64, from: i64, to: i64) -> rusqlite::Result<Vec<(i64, f64)>> {
    let mut chunked = Vec::new();
    let mut st = c.prepare_cached("SELECT data FROM chunks WHERE series = ?1 AND day >= ?2 AND day < ?3 ORDER BY day")?;
    let mut rows = st.query(params![sid, day_of(from), to])?;
    while let Some(r) = rows.next()? {
        let data: Vec<u8> = r.get(0)?;
        chunked.extend(codec::decode(&data).map_err(corrupt)?.into_iter().filter(|p| p.0 >= from && p.0 < to));
    }
    Ok(merge(merge(chunked, segments(c, sid, from, to)?), raw(c, sid, from, to)?))
}

/// The last reading in `segments` before `t`.
fn segment_before(c: &Connection, sid: i64, t: i64) -> rusqlite::Result<Option<(i64, f64)>> {
    let mut best: Option<(i64, f64)> = None;
    let mut st = c.prepare_cached("SELECT day, data FROM segments WHERE series = ?1 AND day <= ?2 ORDER BY day DESC, id DESC")?;
    let mut rows = st.query(params![sid, day_of(t)])?;
    while let Some(r) = rows.next()? {
        let day: i64 = r.get(0)?;
        // Every segment of a later day has been seen: an earlier day holds only earlier readings.
        if best.is_some_and(|b| day_of(b.0) > day) {
            break;
        }
        let data: Vec<u8> = r.get(1)?;
        if let Some(p) = codec::decode(&data).map_err(corrupt)?.into_iter().filter(|p| p.0 < t).max_by_key(|p| p.0) {
            if best.is_none_or(|b| p.0 > b.0) {
                best = Some(p);
            }
        }
    }
    Ok(best)
}

/// The first reading in `segments` at or after `t`.
fn segment_from(c: &Connection, sid: i64, t: i64) -> rusqlite::Result<Option<(i64, f64)>> {
    let mut best: Option<(i64, f64)> = None;
    let mut st = c.prepare_cached("SELECT day, data FROM segments WHERE series = ?1 AND day >= ?2 ORDER BY day, id")?;
    let mut rows = st.query(params![sid, day_of(t)])?;
    while let Some(r) = rows.next()? {
        let day: i64 = r.get(0)?;
        if best.is_some_and(|b| day_of(b.0) < day) {
            break;
        }
        let data: Vec<u8> = r.get(1)?;
        if let Some(p) = codec::decode(&data).map_err(corrupt)?.into_iter().find(|p| p.0 >= t) {
            if best.is_none_or(|b| p.0 < b.0) {
                best = Some(p);
            }
        }
    }
    Ok(best)
}

/// The later of two readings (the first on a tie).
fn later(a: Option<(i64, f64)>, b: Option<(i64, f64)>) -> Option<(i64, f64)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 > x.0 { y } else { x }),
        (x, y) => x.or(y),
    }
}

/// The earlier of two readings (the first on a tie).
fn earlier(a: Option<(i64, f64)>, b: Option<(i64, f64)>) -> Option<(i64, f64)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 < x.0 { y } else { x }),
        (x, y) => x.or(y),
    }
}

/// The last reading before `t`.
pub(super) fn last_before(c: &Connection, sid: i64, t: i64) -> rusqlite::Result<Option<(i64, f64)>> {
    let raw: Option<(i64, f64)> = c
        .prepare_cached("SELECT ts, value FROM points WHERE series = ?1 AND ts < ?2 ORDER BY ts DESC LIMIT 1")?
        .query_row(params![sid, t], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    // The chunk holding `t` may have nothing before it; then the one before that does.
    let mut chunked = None;
    let mut st = c.prepare_cached("SELECT data FROM chunks WHERE series = ?1 AND day < ?2 ORDER BY day DESC LIMIT 2")?;
    let mut rows = st.query(params![sid, t])?;
    while let Some(r) = rows.next()? {
        let data: Vec<u8> = r.get(0)?;
        if let Some(p) = codec::decode(&data).map_err(corrupt)?.into_iter().rev().find(|p| p.0 < t) {
            chunked = Some(p);
            break;
        }
    }
    // On equal times the later store wins: raw over segments over chunks.
    Ok(later(raw, later(segment_before(c, sid, t)?, chunked)))
}

/// The first reading at or after `t`.
pub(super) fn first_from(c: &Connection, sid: i64, t: i64) -> rusqlite::Result<Option<(i64, f64)>> {
    let raw: Option<(i64, f64)> = c
        .prepare_cached("SELECT ts, value FROM points WHERE series = ?1 AND ts >= ?2 ORDER BY ts LIMIT 1")?
        .query_row(params![sid, t], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let mut chunked = None;
    let mut st = c.prepare_cached("SELECT data FROM chunks WHERE series = ?1 AND day >= ?2 ORDER BY day LIMIT 2")?;
    let mut rows = st.query(params![sid, day_of(t)])?;
    while let Some(r) = rows.next()? {
        let data: Vec<u8> = r.get(0)?;
        if let Some(p) = codec::decode(&data).map_err(corrupt)?.into_iter().find(|p| p.0 >= t) {
            chunked = Some(p);
            break;
        }
    }
    Ok(earlier(raw, earlier(segment_from(c, sid, t)?, chunked)))
}

/// The newest reading time of a series.
pub(super) fn newest(c: &Connection, sid: i64) -> rusqlite::Result<Option<i64>> {
    Ok(last_before(c, sid, i64::MAX)?.map(|p| p.0))
}

/// Deletes the segments of a series and day, sealed into its chunk (after its roll-ups, which
/// read the segments' partials, were sealed into the day's blob).
pub(super) fn drop_segments(c: &Connection, sid: i64, day: i64) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM segments WHERE series = ?1 AND day = ?2")?.execute(params![sid, day])?;
    Ok(())
}

/// What one compaction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Compacted {
    pub(super) chunks: u64,
    pub(super) points: u64,
    /// The (series, day) sealed, in order: their roll-ups are sealed next, in the same
    /// transaction ([`super::rollup_rows::seal_rollups`]), then their segments deleted.
    pub(super) sealed: Vec<(i64, i64)>,
}

/// Seals up to `max_chunks` (series, day) pairs, except those `busy` says are being written, with raw points before `cutoff` (a day
/// boundary; the oldest day of each series first) into chunks, merging any chunk already there. Runs inside the caller's
/// transaction. Returns what it did; the caller seals the roll-ups of the days sealed and then
/// deletes their segments ([`drop_segments`]).
pub(super) fn compact(c: &Connection, cutoff: i64, max_chunks: usize, busy: &dyn Fn(i64, i64) -> bool) -> rusqlite::Result<Compacted> {
    // One index probe per series for its oldest raw point (the raw table is mostly the head, so
    // scanning it would cost far more).
    let ids: Vec<i64> = c.prepare_cached("SELECT id FROM series")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let mut todo: Vec<(i64, i64)> = Vec::new();
    let mut oldest = c.prepare_cached("SELECT min(ts) FROM points WHERE series = ?1")?;
    let mut oldest_segment = c.prepare_cached("SELECT min(day) FROM segments WHERE series = ?1")?;
    for sid in ids {
        if todo.len() >= max_chunks {
            break;
        }
        let raw = oldest.query_row([sid], |r| r.get::<_, Option<i64>>(0))?.map(day_of);
        let seg = oldest_segment.query_row([sid], |r| r.get::<_, Option<i64>>(0))?;
        if let Some(day) = raw.into_iter().chain(seg).min() {
            if day < cutoff && !busy(sid, day) {
                todo.push((sid, day));
            }
        }
    }
    let mut done = Compacted::default();
    for (sid, day) in todo {
        let fresh = raw(c, sid, day, day + DAY_MS)?;
        let segs = segments(c, sid, day, day + DAY_MS)?;
        let n_raw = (fresh.len() + segs.len()) as u64;
        let pts = merge(merge(chunk(c, sid, day)?.unwrap_or_default(), segs), fresh);
        c.prepare_cached("INSERT OR REPLACE INTO chunks(series, day, count, data) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![sid, day, pts.len() as i64, codec::encode(&pts)])?;
        c.prepare_cached("DELETE FROM points WHERE series = ?1 AND ts >= ?2 AND ts < ?3")?.execute(params![sid, day, day + DAY_MS])?;
        done.sealed.push((sid, day));
        done.chunks += 1;
        done.points += n_raw;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_prefers_the_raw_reading() {
        let cases: &[(&[(i64, f64)], &[(i64, f64)], &[(i64, f64)])] = &[
            (&[], &[], &[]),
            (&[(1, 1.0), (3, 3.0)], &[(2, 2.0)], &[(1, 1.0), (2, 2.0), (3, 3.0)]),
            (&[(1, 1.0), (2, 2.0)], &[(2, 9.0), (4, 4.0)], &[(1, 1.0), (2, 9.0), (4, 4.0)]),
            (&[], &[(5, 5.0)], &[(5, 5.0)]),
        ];
        for (a, b, want) in cases {
            assert_eq!(merge(a.to_vec(), b.to_vec()), want.to_vec());
        }
    }
}
