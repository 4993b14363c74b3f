//! The store's errors.

use std::path::PathBuf;

use super::format::FORMAT_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store {path} has format version {found}; this build reads version {FORMAT_VERSION} (and upgrades versions 1 to 7 in place). Use the energyd release that wrote it, or restore a backup made by this version")]
    Version { path: PathBuf, found: String },
    #[error("{0}")]
    Log(#[from] super::log::LogError),
    #[error("cannot create data directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    /// Another process (a running energyd, or a command such as `energyd weather import`) has
    /// the store open for writing: two writers would replay and delete each other's log.
    #[error("the store in {} is open in another process (a running `energyd run` or `energyd demo`, or an import): stop it first, or send the data to the running daemon's API", dir.display())]
    InUse { dir: PathBuf },
    /// The lock file of the store could not be made or locked.
    #[error("cannot lock the store in {}: {source}", path.display())]
    Lock { path: PathBuf, source: std::io::Error },
    #[error("the store's writer has stopped")]
    Closed,
    #[error("storage task failed: {0}")]
    Task(String),
    /// The writer refused or failed the write (see [`WriteError`]).
    #[error("storage task failed: {0}")]
    Write(WriteError),
    #[error("the spool of points waiting for InfluxDB is full ({bytes} bytes, bound {max} bytes): InfluxDB is down or slower than ingest; retry later")]
    SpoolFull { bytes: u64, max: u64 },
    #[error("InfluxDB query failed: {0}")]
    Remote(#[from] super::influx::QueryError),
    /// The disk holding the store is full: the store is read-only until space returns.
    #[error("{0}")]
    DiskFull(String),
}

/// Why the writer thread refused or failed a request: its answer on the writer's channel, with
/// its kind kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The disk holding the store is full: writes are refused until space returns (the reason
    /// names the free space and the floor).
    #[error("{0}")]
    DiskFull(String),
    /// A sync of the WAL failed: writes are refused until energyd is restarted.
    #[error("{0}")]
    SyncFailed(String),
    /// The WAL syncer thread has stopped.
    #[error("the store's WAL syncer has stopped")]
    SyncerStopped,
    /// The group's transaction failed and was rolled back whole; the sender retries.
    #[error("{0}")]
    Commit(String),
}

impl StoreError {
    /// The error of a write answered by the writer. A disk found full makes any failure a
    /// [`StoreError::DiskFull`] (507: the sender keeps the data and retries).
    pub(super) fn of_write(e: WriteError, disk_full: bool) -> StoreError {
        match e {
            WriteError::DiskFull(reason) => StoreError::DiskFull(reason),
            e if disk_full => StoreError::DiskFull(e.to_string()),
            e => StoreError::Write(e),
        }
    }
}
