//! The gateway's durable queue: every sample is on disk before it is sent, and leaves the queue
//! only when the daemon has confirmed that it is stored.
//!
//! # On-disk format
//!
//! A directory of segment files `<first-seq, 20 digits>.seg`, appended to in sequence order, a
//! file `acked` holding the highest sequence number the daemon has confirmed (decimal text,
//! replaced atomically by write-to-temp, fsync, rename, fsync of the directory), and a file
//! `epoch`: the queue's epoch, 32 random hex digits written (and fsynced) when the directory is
//! created. Sequence numbers are unique within an epoch; a lost or reinstalled queue directory
//! starts again at 1 under a new epoch, so the daemon does not take its samples for duplicates.
//! A queue directory written before epochs (segments or `acked`, no `epoch`) keeps having none.
//!
//! A record is `len: u32 LE | crc32(payload): u32 LE | payload`, with
//! `payload = seq: u64 LE | body`. Sequence numbers increase by one from record to record.
//!
//! # Durability
//!
//! [`Queue::append`] writes records; [`Queue::sync`] makes them durable (fsync). The poller calls
//! `sync` after every group of appends, so a sample is durable within milliseconds of its poll;
//! a power cut can lose only samples not yet synced. At start, every segment is scanned. A corrupt
//! record does not end its segment: the scan looks forward for the next valid record (its length
//! fits, its checksum matches, and its sequence number is one that can follow: above the last
//! good one, by no more than the records the skipped bytes could hold), keeps everything from
//! there, and rewrites the segment without the damaged bytes. What was skipped is reported as
//! samples and sequence numbers ([`Recovery`]; the gateway logs it and counts it in
//! `energy_gateway_queue_lost_samples_total`), and the lost sequence numbers are settled so that
//! they do not hold the queue back. Only a torn tail with no valid record after it is truncated.
//! Nothing of this is fatal. Segments whose records are all acknowledged are deleted.
//!
//! # Bound
//!
//! `max_bytes` bounds the segments on disk. When an append would exceed it, the append fails
//! with [`QueueError::Full`]; what the gateway then does is its full-queue policy
//! ([`full`]): the oldest unsent data is always kept.
//!
//! # Files
//!
//! * [`durable`]: the [`Queue`] itself: open, append, sync, peek, acknowledge.
//! * [`record`]: the record format.
//! * [`recover`]: the scan at open that repairs torn and corrupt segments.
//! * [`segment`]: a segment file, and the queue's errors.
//! * [`full`]: the full-queue policy.
//! * [`writer`]: the writer thread: samples from the pollers, appended under the policy, synced.
//! * [`settings`]: the `[queue]` section.

pub mod durable;
pub mod full;
pub mod record;
pub mod recover;
pub mod segment;
pub mod settings;
pub mod writer;

pub use durable::Queue;
pub use recover::Recovery;
pub use segment::QueueError;
pub use record::Record;
pub use settings::QueueConfig;
pub use writer::{lock, SharedQueue};

#[cfg(test)]
mod tests;
