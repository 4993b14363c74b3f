//! The `[queue]` section: where the queue lives, its bound, and the full-queue policy.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::full::WhenFull;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub dir: PathBuf,
    /// Bound on the queue's size on disk; when reached, new samples are refused and counted.
    #[serde(default = "default_queue_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// What to do when the queue is full: `thin` (default: keep counters, one per meter and
    /// `thin_period_ms`, drop gauges) or `refuse` (drop new samples).
    #[serde(default)]
    pub when_full: WhenFull,
    #[serde(default = "default_thin_period_ms")]
    pub thin_period_ms: u64,
}

impl QueueConfig {
    /// A queue in `dir` with every other setting at its default.
    pub fn in_dir(dir: PathBuf) -> QueueConfig {
        QueueConfig {
            dir,
            max_bytes: default_queue_max_bytes(),
            segment_bytes: default_segment_bytes(),
            when_full: WhenFull::default(),
            thin_period_ms: default_thin_period_ms(),
        }
    }
}

fn default_queue_max_bytes() -> u64 {
    1 << 30
}
fn default_thin_period_ms() -> u64 {
    900_000
}
fn default_segment_bytes() -> u64 {
    16 << 20
}
