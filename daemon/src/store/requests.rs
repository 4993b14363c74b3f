//! What goes to the writer thread and what comes back: the requests of the channel, and what one
//! write did.

use energy_wire::Batch;
use tokio::sync::oneshot;

use super::conflicts::{Conflict, Corrected, Correction};
use super::error::WriteError;
use std::sync::Arc;

/// What one write did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct WriteOutcome {
    /// Samples stored (batches only).
    pub samples_stored: u64,
    /// Samples dropped because their (gateway, sequence) was already stored.
    pub samples_duplicate: u64,
    /// Points newly written.
    pub points_written: u64,
    /// Points already stored with the same value.
    pub points_unchanged: u64,
    /// Points offered with a value different from the one stored at the same meter, quantity
    /// and time: not applied, kept aside in `conflicts` ([`Conflict`]).
    pub points_conflicting: u64,
    /// The first [`MAX_CONFLICTS_SHOWN`] of them, for the answer.
    #[serde(skip)]
    pub conflicts: Vec<Conflict>,
    /// A correction ([`Embedded::correct`]): what it changed.
    #[serde(skip)]
    pub corrected: Option<Corrected>,
    /// Highest sequence number up to which this gateway's samples are stored without a gap
    /// (batches only).
    pub acked_through: u64,
    /// All stored sequence ranges of the batch's gateway and queue epoch after this write
    /// (batches only).
    #[serde(skip)]
    pub ranges: Vec<(u64, u64)>,
    /// The batch's queue epoch (batches from a queue with one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The batch was the first stored of its (gateway, epoch): a new queue (batches only).
    #[serde(skip)]
    pub new_epoch: bool,
    /// Other epochs of the batch's gateway already stored, when `new_epoch`.
    #[serde(skip)]
    pub earlier_epochs: Vec<String>,
    /// Raw points sealed into compressed chunks ([`Store::compact`] only).
    #[serde(skip_serializing_if = "is_zero")]
    pub points_sealed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A request to the writer thread.
pub(super) enum WriteOp {
    Batch(Batch),
    /// Points and who sent them (for conflicts).
    Points(Vec<Point>, String),
    /// An engineer's correction: the only write that changes a stored reading.
    Correct(Correction),
    Compact,
    /// Change records the accounting cache applied, as (meter, sequence), to forget.
    ForgetChanges(Vec<(String, i64)>),
    /// The spool rows up to this id are in InfluxDB: delete them.
    Forwarded(i64),
    /// Flush the head (a read is waiting for it).
    Flush,
    /// The change records are about to be read: the next write to each bumps its sequence.
    ChangesRead,
    /// Tests: stop the writer as a crash would, without flushing the head.
    #[cfg(test)]
    Crash,
}

/// A request and where its answer goes.
pub(super) struct WriteReq {
    pub(super) op: WriteOp,
    pub(super) reply: oneshot::Sender<Result<WriteOutcome, WriteError>>,
}

/// One value to store. The meter id is shared by the points of one line (one allocation per
/// line, not per value).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub meter: Arc<str>,
    pub quantity: energy_wire::Quantity,
    pub ts: i64,
    pub value: f64,
}
