//! Conflicts: a value offered by ingest for a (meter, quantity, time) that holds a different
//! stored value. The stored value stays; the offered one is kept aside as a row of `conflicts`
//! in the group's transaction, until an engineer's correction (the only write that changes a
//! stored reading) settles it.

use energy_wire::Quantity;
use rusqlite::{params, Connection};


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

/// Keeps an offered value aside: a row of `conflicts` in the caller's transaction (the same
/// offer made again while the conflict is open is not added twice).
pub(super) fn keep(c: &Connection, conflict: &Conflict) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT OR IGNORE INTO conflicts(meter, quantity, ts, stored, offered, source, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?.execute(
        params![conflict.meter, conflict.quantity.name(), conflict.ts, conflict.stored, conflict.offered, conflict.source, conflict.received_ms],
    )?;
    Ok(())
}

/// Settles the open conflicts at a correction's (meter, quantity, time) with its value, in the
/// caller's transaction; returns how many.
pub(super) fn settle(c: &Connection, correction: &Correction, now_ms: i64) -> rusqlite::Result<u64> {
    let n = c
        .prepare_cached(
            "UPDATE conflicts SET resolved_ms = ?1, resolved_value = ?2, resolved_by = ?3
             WHERE meter = ?4 AND quantity = ?5 AND ts = ?6 AND resolved_ms IS NULL",
        )?
        .execute(params![now_ms, correction.value, correction.by, correction.meter, correction.quantity.name(), correction.ts])?;
    Ok(n as u64)
}
