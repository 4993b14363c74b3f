//! Tests of the embedded store through its handle: writes, change records, upgrades of older
//! format versions, the spool, sealing and crashes.

mod layering;
mod sealing;
mod spool;
mod upgrades;
mod writes;

use std::collections::HashMap;

use energy_wire::time::{day_of, DAY_MS, HOUR_MS};
use energy_wire::{Batch, Quantity, Sample};
use rusqlite::{params, Connection};

use super::codec;
use super::rollup_codec;
use super::conflicts::{Conflict, Corrected, Correction};
use super::config::StoreOptions;
use super::embedded::{open, open_forwarding, open_with, Embedded};
use super::error::StoreError;
use super::head::{encode_head_log, put_varint};
use super::schema;
use super::outbox::Forwarding;
use super::requests::WriteOp;
use super::{HourRollup, Point, FORMAT_VERSION};
use crate::metrics::Metrics;

type EpochRanges = (Option<String>, Vec<(u64, u64)>);

/// A store whose head is never flushed by age during a test, however slow the machine (only
/// reads, compactions and the size bound flush it).
fn open_unhurried(dir: &std::path::Path) -> Embedded {
    open_with(dir, Metrics::new(), StoreOptions { head_max_age_ms: 3_600_000, ..Default::default() }).unwrap()
}

fn sample(meter: &str, t: i64, v: f64) -> Sample {
    Sample { meter: meter.into(), t, v: [(Quantity::ActiveEnergyImport, v)].into_iter().collect() }
}

fn forwarding(max_bytes: u64) -> Option<Forwarding> {
    let tags = HashMap::from([("m".to_string(), ",building=b\\ 1,carrier=electricity".to_string())]);
    Some(Forwarding { measurement: "energy".into(), tags, max_bytes })
}
