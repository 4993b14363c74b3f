//! Per-commit hooks: what is kept in the same transaction as each group's points, without the
//! writer knowing what it is. The writer applies a group's requests, hands the still open
//! transaction to every hook ([`CommitHook::before_commit`]) and commits; a failed group is
//! rolled back whole and every hook is told ([`CommitHook::rolled_back`]). Two hooks exist: the
//! change records for the accounting cache ([`super::changes`]) and the spool for InfluxDB
//! ([`super::outbox`]).

use energy_wire::Quantity;
use rusqlite::Connection;

use super::requests::WriteReq;

pub(super) trait CommitHook: Send {
    /// Whether it wants to see every point newly stored ([`CommitHook::stored`]); asked once.
    fn wants_points(&self) -> bool {
        false
    }

    /// A point newly stored, or a stored reading that a correction replaced.
    fn stored(&mut self, _meter: &str, _q: Quantity, _ts: i64, _value: f64) {}

    /// The group's requests are applied: writes what the hook keeps of them, in the group's
    /// open transaction `tx`.
    fn before_commit(&mut self, tx: &Connection, group: &[WriteReq]) -> rusqlite::Result<()>;

    /// The group's transaction committed.
    fn committed(&mut self) {}

    /// The group's transaction was rolled back: forget what it added (`conn` holds what is
    /// committed).
    fn rolled_back(&mut self, _conn: &Connection) {}
}
