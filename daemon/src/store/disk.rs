//! The data directory's file system: its free space, and whether the store refuses writes
//! because the disk is full (read-only until space returns).
//!
//! A write is refused, and the store goes read-only, when the free space is under
//! `storage.min_free_bytes` before a write, or when SQLite reports the disk full (`SQLITE_FULL`,
//! or an I/O error while the free space is under [`IO_ERROR_FULL_BELOW`]) during a commit or a
//! flush of the head. The writer then looks at the free space every [`CHECK_EVERY`] and resumes
//! by itself once it is at least `min_free_bytes` (and [`IO_ERROR_FULL_BELOW`]) again and the
//! head, if it holds points, has been flushed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::metrics::Metrics;

/// An I/O error from SQLite while less than this is free counts as a full disk (SQLite reports
/// `SQLITE_FULL` for a failed write of a database or WAL file, but an I/O error for its shared
/// memory file or a truncation).
pub const IO_ERROR_FULL_BELOW: u64 = 1 << 20;

/// How often the writer looks at the free space while the disk is full (and at most how often
/// between writes otherwise).
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Bytes available to an unprivileged writer on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    rustix::fs::statvfs(dir).ok().map(|s| s.f_bavail.saturating_mul(s.f_frsize))
}

/// Whether a SQLite error means the disk is full: `SQLITE_FULL`, or an I/O error while the
/// free space is short.
pub fn is_disk_full(e: &rusqlite::Error, free: Option<u64>) -> bool {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => true,
        Some(rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::CannotOpen) => free.is_some_and(|f| f < IO_ERROR_FULL_BELOW),
        _ => false,
    }
}

/// Shared by the writer (which sets it) and the handles (which read it).
pub struct Disk {
    dir: PathBuf,
    min_free_bytes: u64,
    full: AtomicBool,
    /// Free bytes at the last look (`u64::MAX`: unknown).
    free: AtomicU64,
    metrics: Metrics,
}

impl Disk {
    pub fn new(dir: &Path, min_free_bytes: u64, metrics: Metrics) -> Disk {
        let d = Disk { dir: dir.to_path_buf(), min_free_bytes, full: AtomicBool::new(false), free: AtomicU64::new(u64::MAX), metrics };
        d.look();
        d
    }

    /// Looks at the free space now; returns it (`None`: unknown) and sets the metric.
    pub fn look(&self) -> Option<u64> {
        let free = free_bytes(&self.dir);
        self.free.store(free.unwrap_or(u64::MAX), Ordering::Relaxed);
        if let Some(f) = free {
            self.metrics.data_dir_free_bytes.set(i64::try_from(f).unwrap_or(i64::MAX));
        }
        free
    }

    /// Free space is under `min_free_bytes` (unknown counts as enough).
    pub fn low(&self, free: Option<u64>) -> bool {
        free.is_some_and(|f| f < self.min_free_bytes)
    }

    /// Enough free space to try writing again.
    pub fn enough_to_resume(&self, free: Option<u64>) -> bool {
        free.is_none_or(|f| f >= self.min_free_bytes.max(IO_ERROR_FULL_BELOW))
    }

    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// The store goes read-only; `why` is logged the first time.
    pub fn set_full(&self, why: &str) {
        if !self.full.swap(true, Ordering::AcqRel) {
            self.metrics.store_read_only.set(1);
            tracing::error!("the disk holding the store is full ({why}): writes are refused (507) and the store is read-only until space is freed; it resumes by itself");
        }
    }

    /// Writing resumed.
    pub fn set_ok(&self) {
        if self.full.swap(false, Ordering::AcqRel) {
            self.metrics.store_read_only.set(0);
            tracing::info!(free_bytes = self.free.load(Ordering::Relaxed), "the disk holding the store has space again: writing resumed");
        }
    }

    /// Why a write is refused, for the client.
    pub fn reason(&self) -> String {
        let free = match self.free.load(Ordering::Relaxed) {
            u64::MAX => "unknown".to_string(),
            f => f.to_string(),
        };
        format!(
            "the disk holding the store is full ({free} bytes free on the file system of {}, storage.min_free_bytes = {}): nothing was stored; retry later",
            self.dir.display(),
            self.min_free_bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_errors_are_told_from_others() {
        let full = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
        let io = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_SHMSIZE), None);
        let constraint = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT), None);
        assert!(is_disk_full(&full, Some(1 << 30)));
        assert!(is_disk_full(&full, None));
        // An I/O error is a full disk only when the space is short.
        assert!(is_disk_full(&io, Some(4096)));
        assert!(!is_disk_full(&io, Some(1 << 30)));
        assert!(!is_disk_full(&io, None));
        assert!(!is_disk_full(&constraint, Some(0)));
    }

    #[test]
    fn read_only_is_entered_and_left_with_the_metric() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::new();
        let d = Disk::new(dir.path(), 1000, m.clone());
        assert!(d.look().is_some_and(|f| f > 0), "statvfs of a temporary directory");
        assert!(m.data_dir_free_bytes.get() > 0);
        assert!(d.low(Some(999)) && !d.low(Some(1000)) && !d.low(None));
        assert!(!d.enough_to_resume(Some(1000)), "at least IO_ERROR_FULL_BELOW");
        assert!(d.enough_to_resume(Some(IO_ERROR_FULL_BELOW)));
        d.set_full("test");
        assert!(d.is_full() && m.store_read_only.get() == 1);
        assert!(d.reason().contains("storage.min_free_bytes = 1000") && d.reason().contains("retry later"), "{}", d.reason());
        d.set_ok();
        assert!(!d.is_full() && m.store_read_only.get() == 0);
    }
}
