//! The store's errors.

use std::path::PathBuf;

use super::format::FORMAT_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store {path} has format version {found}; this build reads version {FORMAT_VERSION} (and upgrades versions 1 to 6 in place). Use the energyd release that wrote it, or restore a backup made by this version")]
    Version { path: PathBuf, found: String },
    #[error("cannot create data directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("the store's writer has stopped")]
    Closed,
    #[error("storage task failed: {0}")]
    Task(String),
    #[error("the spool of points waiting for InfluxDB is full ({bytes} bytes, bound {max} bytes): InfluxDB is down or slower than ingest; retry later")]
    SpoolFull { bytes: u64, max: u64 },
    #[error("InfluxDB query failed: {0}")]
    Remote(String),
    /// The disk holding the store is full: the store is read-only until space returns.
    #[error("{0}")]
    DiskFull(String),
}
