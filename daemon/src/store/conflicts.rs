//! Conflicts: a value offered by ingest for a (meter, quantity, time) that holds a different
//! stored value. The stored value stays; the offered one is kept aside as a row of `conflicts`
//! in the group's transaction, until an engineer's correction (the only write that changes a
//! stored reading) settles it.

use energy_wire::Quantity;
use rusqlite::{params, Connection};

use super::chunks;
use super::embedded::Embedded;
use super::error::StoreError;
use super::requests::WriteOutcome;
use super::schema::series_id;
use super::writer::Writer;

/// Conflicts listed in one write's answer at most (all are kept in the store).
pub const MAX_CONFLICTS_SHOWN: usize = 100;

/// A value offered by ingest for a (meter, quantity, time) that holds a different stored value.
/// The stored value stays; the offered one is kept aside in table `conflicts` until an engineer's
/// correction settles it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Conflict {
    pub meter: String,
    pub quantity: Quantity,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    pub stored: f64,
    pub offered: f64,
    /// Who offered it: `gateway <id>` for batches, `line protocol (token <name>)` and so on.
    pub source: String,
    pub received_ms: i64,
}

/// A conflict as listed for a meter, with its resolution once settled.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConflictRecord {
    #[serde(flatten)]
    pub conflict: Conflict,
    /// When a correction settled it, and the value it set.
    pub resolved_ms: Option<i64>,
    pub resolved_value: Option<f64>,
    pub resolved_by: Option<String>,
}

/// An engineer's correction of a stored reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Correction {
    pub meter: String,
    pub quantity: Quantity,
    pub ts: i64,
    pub value: f64,
    /// Who corrected it (the event's `by`).
    pub by: String,
}

/// What a correction did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Corrected {
    /// The value stored at that time before (`None`: no reading was stored there, nothing was
    /// changed).
    pub previous: Option<f64>,
    /// Open conflicts at that (meter, quantity, time) that it settled.
    pub conflicts_resolved: u64,
}

/// The conflicts of a meter, oldest first (a quantity whose name this build does not know is
/// skipped).
pub(super) fn read_conflicts(c: &Connection, meter: &str, limit: usize) -> rusqlite::Result<Vec<ConflictRecord>> {
    let mut st = c.prepare_cached(
        "SELECT quantity, ts, stored, offered, source, received_ms, resolved_ms, resolved_value, resolved_by
         FROM conflicts WHERE meter = ?1 ORDER BY ts, id LIMIT ?2",
    )?;
    let rows = st.query_map(params![meter, limit as i64], |r| {
        let q: String = r.get(0)?;
        Ok((
            q,
            Conflict { meter: meter.to_string(), quantity: Quantity::ActivePower, ts: r.get(1)?, stored: r.get(2)?, offered: r.get(3)?, source: r.get(4)?, received_ms: r.get(5)? },
            r.get::<_, Option<i64>>(6)?,
            r.get::<_, Option<f64>>(7)?,
            r.get::<_, Option<String>>(8)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (q, mut conflict, resolved_ms, resolved_value, resolved_by) = row?;
        let Ok(quantity) = q.parse::<Quantity>() else { continue };
        conflict.quantity = quantity;
        out.push(ConflictRecord { conflict, resolved_ms, resolved_value, resolved_by });
    }
    Ok(out)
}

impl Writer<'_> {
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
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO conflicts(meter, quantity, ts, stored, offered, source, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![meter, q.name(), ts, stored, offered, source, self.now_ms])?;
        if out.conflicts.len() < MAX_CONFLICTS_SHOWN {
            out.conflicts.push(Conflict { meter: meter.to_string(), quantity: q, ts, stored, offered, source, received_ms: self.now_ms });
        }
        Ok(())
    }

    /// An engineer's correction (the head was flushed before the group): the stored reading at
    /// that time, if any, takes the value; the open conflicts there are settled.
    pub(super) fn correct(&mut self, c: &Correction, out: &mut WriteOutcome) -> rusqlite::Result<()> {
        let mut previous = None;
        if let Some(sid) = series_id(self.conn, &c.meter, c.quantity)? {
            previous = chunks::read_series(self.conn, sid, c.ts, c.ts.saturating_add(1))?.first().map(|p| p.1);
            if previous.is_some_and(|p| p.to_bits() != c.value.to_bits()) {
                self.replace_stored(sid, c.ts, c.value)?;
                if let Some(o) = &mut self.outbox {
                    let tags = o.tags.get(&c.meter).map_or("", String::as_str);
                    o.builder.add(&c.meter, tags, c.quantity, c.ts, c.value);
                    o.points += 1;
                }
            }
        }
        let resolved = self
            .conn
            .prepare_cached(
                "UPDATE conflicts SET resolved_ms = ?1, resolved_value = ?2, resolved_by = ?3
                 WHERE meter = ?4 AND quantity = ?5 AND ts = ?6 AND resolved_ms IS NULL",
            )?
            .execute(params![self.now_ms, c.value, c.by, c.meter, c.quantity.name(), c.ts])?;
        out.corrected = Some(Corrected { previous, conflicts_resolved: resolved as u64 });
        Ok(())
    }
}

impl Embedded {
    /// The conflicts of a meter (open and settled), oldest first, at most `limit`.
    pub async fn conflicts(&self, meter: &str, limit: usize) -> Result<Vec<ConflictRecord>, StoreError> {
        let meter = meter.to_string();
        // Conflicts are written in the group commits: no need to flush the head.
        self.read_committed(move |c| read_conflicts(c, &meter, limit)).await
    }
}
