//! `energy-wire`: the contract between `energy-gateway` and `energyd`.
//!
//! Everything that crosses the boundary between the edge and the centre is defined here, and
//! nowhere else:
//!
//! * [`Quantity`]: the one name of each measured thing (`active_energy_import`, `water_volume`,
//!   ...), its unit and whether it is a cumulative counter or a gauge. The same names are used in
//!   device profiles, on the wire, in storage, in the HTTP API and in dashboards.
//! * [`Sample`]: the values one meter gave at one instant.
//! * [`Batch`]: a run of samples from one gateway, with the identity (gateway id, sequence number)
//!   that lets the daemon drop duplicates, and the [`SCHEMA_VERSION`] of the encoding.
//! * [`encode_batch`] / [`decode_batch`]: the JSON encoding, with validation that names the
//!   offending field on any error.
//!
//! * [`time`]: the time units (milliseconds, UTC hours and days) every part counts in.
//!
//! The crate has no async runtime and no I/O.

mod batch;
mod ident;
mod quantity;
pub mod time;

pub use batch::{batch_epoch, batch_identity, decode_batch, validate_epoch, encode_batch, Batch, Sample, WireError, MAX_SAMPLES_PER_BATCH, SCHEMA_VERSION};
pub use ident::{validate_id, IdError, MAX_ID_LEN};
pub use quantity::{Carrier, Kind, Quantity, UnknownQuantity};
