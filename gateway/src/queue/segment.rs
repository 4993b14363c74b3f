//! The queue's files: a segment as the queue tracks it, and what can go wrong with the files.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue I/O error in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("queue is full ({used} of {max} bytes); sample dropped")]
    Full { used: u64, max: u64 },
    #[error("record of {0} bytes is larger than the limit")]
    TooLarge(usize),
}

/// The error of an I/O operation on `path`.
pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io { path: path.to_path_buf(), source }
}

/// A segment file: `<first_seq, 20 digits>.seg`.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) first_seq: u64,
    /// Sequence number after the segment's last record.
    pub(super) next_seq: u64,
    pub(super) path: PathBuf,
    pub(super) len: u64,
}

/// Makes a directory's entries durable (after a file was created, renamed or removed in it).
pub(super) fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}
