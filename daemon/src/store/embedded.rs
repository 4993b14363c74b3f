//! The embedded store's handle: opening the file, the writer's channel, the read connections.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use energy_wire::Batch;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::chunks;
use super::conflicts::Correction;
use super::group_commit::{self, WriterParts};
use super::error::StoreError;
use super::changes::ChangeRecords;
use super::config::StoreOptions;
use super::hooks::CommitHook;
use super::outbox::{Forwarding, Outbox, Spool};
use super::requests::{Point, WriteOp, WriteOutcome, WriteReq};
use super::schema;
use super::syncer::Syncer;
use super::writer::Writer;
use crate::metrics::Metrics;

/// Handle to the embedded store; cheap to clone.
#[derive(Clone)]
pub struct Embedded {
    /// Points in the writer's head; a read flushes them first.
    pub(super) head_points: Arc<std::sync::atomic::AtomicU64>,
    pub(super) tx: Arc<Mutex<Option<std::sync::mpsc::SyncSender<WriteReq>>>>,
    pub(super) readers: Arc<Vec<Mutex<Connection>>>,
    pub(super) next_reader: Arc<std::sync::atomic::AtomicUsize>,
    /// Newest reading time per meter, kept in memory.
    pub(super) last_seen: Arc<RwLock<HashMap<String, i64>>>,
    pub(super) path: PathBuf,
    /// Set when forwarding to InfluxDB.
    pub(super) spool: Option<Arc<Spool>>,
    /// Free space, and whether writes are refused for a full disk.
    pub(super) disk: Arc<super::disk::Disk>,
    /// Closes the store when the last handle is dropped without [`Embedded::close`], so that
    /// the writer (and the store's lock) is gone when the drop returns.
    pub(super) closer: Arc<Closer>,
}

/// Stops the writer thread and waits for it: on [`Embedded::close`], or when the last handle
/// goes.
pub(super) struct Closer {
    tx: Arc<Mutex<Option<std::sync::mpsc::SyncSender<WriteReq>>>>,
    pub(super) writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Closer {
    fn new(tx: &Arc<Mutex<Option<std::sync::mpsc::SyncSender<WriteReq>>>>, writer: &Arc<Mutex<Option<std::thread::JoinHandle<()>>>>) -> Arc<Closer> {
        Arc::new(Closer { tx: tx.clone(), writer: writer.clone() })
    }

    fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Opens (creating if needed) the store in `dir`, keeping everything forever.
pub(super) fn open(dir: &Path, metrics: Metrics) -> Result<Embedded, StoreError> {
    open_with(dir, metrics, StoreOptions::default())
}

/// Opens (creating if needed) the store in `dir`.
pub(super) fn open_with(dir: &Path, metrics: Metrics, options: StoreOptions) -> Result<Embedded, StoreError> {
    open_forwarding(dir, metrics, options, None)
}

/// Opens (creating if needed) the store in `dir`; with `forwarding`, every point written is also
/// spooled for InfluxDB.
pub fn open_forwarding(dir: &Path, metrics: Metrics, options: StoreOptions, forwarding: Option<Forwarding>) -> Result<Embedded, StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir { path: dir.to_path_buf(), source })?;
    // One writer per store: the lock is held by the writer thread and released when it ends.
    let lock = lock_store(dir)?;
    let disk = Arc::new(super::disk::Disk::new(dir, options.min_free_bytes, metrics.clone()));
    let path = dir.join("energyd.sqlite");
    let new_store = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
    let conn = Connection::open(&path)?;
    let point_count = schema::prepare(&conn, &path, new_store)?;
    metrics.store_points.set(point_count);
    // The log: a torn tail (a crash during an append, never acknowledged) is cut off; a damaged
    // record before valid ones stops the open (an acknowledged group may be in it).
    let log_dir = dir.join(super::log::LOG_DIR);
    std::fs::create_dir_all(&log_dir).map_err(|source| StoreError::Dir { path: log_dir.clone(), source })?;
    let position = schema::log_position(&conn)?;
    let scan = super::log::scan(&log_dir, position, true)?;
    if scan.truncated_bytes > 0 {
        tracing::warn!(bytes = scan.truncated_bytes, "the store's log ended in a torn record, cut off");
    }
    metrics.store_log_truncated_bytes.inc_by(scan.truncated_bytes);
    let log = super::log::Log::open(&log_dir, scan.last_id)?;
    // Points acknowledged but not flushed before the last stop (a crash): flushed now.
    let head_points = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (log, log_position) = {
        let mut w = Writer::new(&conn, options, Vec::new(), head_points.clone(), metrics.clone());
        w.log = Some(log);
        w.log_position = position;
        w.replayed_changes = Some(Default::default());
        let n = w.load_head()?;
        let free = disk.look();
        if disk.low(free) {
            disk.set_full(&format!("{} bytes free at start", free.unwrap_or(0)));
        } else if n > 0 || w.log_unflushed() || w.legacy_rows {
            tracing::info!(points = n, "flushing the points acknowledged and not yet flushed before the last stop");
            match w.flush_head() {
                Ok(()) => {}
                // They stay in the log (durable); the writer flushes them when space returns.
                Err(e) if super::disk::is_disk_full(&e, disk.look()) => disk.set_full(&e.to_string()),
                Err(e) => return Err(e.into()),
            }
        }
        let log = w.log.take().ok_or_else(|| StoreError::Task("the store's log was lost at open".into()))?;
        (log, w.log_position)
    };
    // Newest reading per meter (index probes and at most one chunk decoded per series).
    let mut last_seen: HashMap<String, i64> = HashMap::new();
    {
        let mut series = conn.prepare("SELECT id, meter FROM series")?;
        let rows: Vec<(i64, String)> = series.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        for (id, meter) in rows {
            if let Some(ts) = chunks::newest(&conn, id)? {
                let e = last_seen.entry(meter).or_insert(ts);
                *e = (*e).max(ts);
            }
        }
    }
    let mut readers = Vec::new();
    for _ in 0..3 {
        let r = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        r.busy_timeout(std::time::Duration::from_secs(30))?;
        readers.push(Mutex::new(r));
    }
    let last_seen = Arc::new(RwLock::new(last_seen));
    let (tx, rx) = std::sync::mpsc::sync_channel::<WriteReq>(1024);
    let ls = last_seen.clone();
    // The per-commit hooks: the change records, and the spool when forwarding to InfluxDB.
    let mut hooks: Vec<Box<dyn CommitHook>> = vec![Box::new(ChangeRecords::load(&conn))];
    let spool = match forwarding {
        Some(f) => {
            let outbox = Outbox::open(&conn, f, metrics.clone())?;
            let spool = outbox.spool();
            hooks.push(Box::new(outbox));
            Some(spool)
        }
        None => None,
    };
    let syncer = Syncer::start(dir.join("energyd.sqlite-wal"), metrics.clone()).map_err(|e| StoreError::Task(e.to_string()))?;
    let handle = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn({
            let (head_points, disk) = (head_points.clone(), disk.clone());
            move || {
                group_commit::run(WriterParts { conn, rx, last_seen: ls, metrics, options, hooks, head_points, syncer, disk, log, log_position });
                drop(lock);
            }
        })
        .map_err(|e| StoreError::Task(e.to_string()))?;
    let tx = Arc::new(Mutex::new(Some(tx)));
    let writer = Arc::new(Mutex::new(Some(handle)));
    Ok(Embedded {
        head_points,
        closer: Closer::new(&tx, &writer),
        tx,
        readers: Arc::new(readers),
        next_reader: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        last_seen,
        path,
        spool,
        disk,
    })
}

/// The name of the lock file in a data directory: locked (`flock`, exclusive) by the process
/// whose writer owns the store and its log.
pub(super) const LOCK_FILE: &str = "energyd.lock";

/// Takes the store's write lock, or says that another process holds it.
fn lock_store(dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|source| StoreError::Lock { path: path.clone(), source })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse { dir: dir.to_path_buf() }),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Lock { path, source }),
    }
}

/// Opens the store of `dir` for reading beside the process that writes it (a running daemon):
/// no log replay, no writer; a read's head flush is answered at once (the points still in the
/// writer's head, at most its flush bound, are not seen), and writes are refused.
pub(super) fn open_reader(dir: &Path, metrics: Metrics) -> Result<Embedded, StoreError> {
    let path = dir.join("energyd.sqlite");
    if !path.is_file() {
        return Err(StoreError::Task(format!("no store at {}", path.display())));
    }
    let disk = Arc::new(super::disk::Disk::new(dir, 0, metrics));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let r = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        r.busy_timeout(std::time::Duration::from_secs(30))?;
        readers.push(Mutex::new(r));
    }
    let mut last_seen: HashMap<String, i64> = HashMap::new();
    {
        let conn = readers[0].lock().unwrap_or_else(|e| e.into_inner());
        let mut series = conn.prepare("SELECT id, meter FROM series")?;
        let rows: Vec<(i64, String)> = series.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        for (id, meter) in rows {
            if let Some(ts) = chunks::newest(&conn, id)? {
                let e = last_seen.entry(meter).or_insert(ts);
                *e = (*e).max(ts);
            }
        }
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<WriteReq>(64);
    let handle = std::thread::Builder::new()
        .name("store-reader".into())
        .spawn(move || {
            for req in rx {
                let answer = match req.op {
                    // Nothing to flush here; change records stay for the writer's process.
                    WriteOp::Flush | WriteOp::ChangesRead | WriteOp::ForgetChanges(_) => Ok(WriteOutcome::default()),
                    _ => Err(super::error::WriteError::Commit("the store is open for reading only, beside the process that writes it".into())),
                };
                let _ = req.reply.send(answer);
            }
        })
        .map_err(|e| StoreError::Task(e.to_string()))?;
    let tx = Arc::new(Mutex::new(Some(tx)));
    let writer = Arc::new(Mutex::new(Some(handle)));
    Ok(Embedded {
        head_points: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        closer: Closer::new(&tx, &writer),
        tx,
        readers: Arc::new(readers),
        next_reader: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        last_seen: Arc::new(RwLock::new(last_seen)),
        path,
        spool: None,
        disk,
    })
}

impl Embedded {
    pub(super) async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        if self.disk.is_full() && matches!(op, WriteOp::Batch(_) | WriteOp::Points(..) | WriteOp::Correct(_) | WriteOp::Compact) {
            return Err(StoreError::DiskFull(self.disk.reason()));
        }
        if let (Some(sp), WriteOp::Batch(_) | WriteOp::Points(..)) = (&self.spool, &op) {
            let bytes = sp.bytes.load(std::sync::atomic::Ordering::Relaxed);
            if bytes >= sp.max_bytes {
                return Err(StoreError::SpoolFull { bytes, max: sp.max_bytes });
            }
        }
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or(StoreError::Closed)?;
        tokio::task::spawn_blocking(move || tx.send(WriteReq { op, reply }))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?.map_err(|e| StoreError::of_write(e, self.disk.is_full()))
    }

    /// The disk holding the store is full: writes are refused until space returns.
    pub fn read_only(&self) -> bool {
        self.disk.is_full()
    }

    /// Free bytes on the data directory's file system, looked at now (also sets the metric).
    pub fn free_bytes(&self) -> Option<u64> {
        self.disk.look()
    }

    /// Stores a gateway batch; returns after the commit.
    pub async fn write_batch(&self, batch: Batch) -> Result<WriteOutcome, StoreError> {
        self.write(WriteOp::Batch(batch)).await
    }

    /// Stores loose points (line protocol); returns after the commit.
    pub async fn write_points(&self, points: Vec<Point>) -> Result<WriteOutcome, StoreError> {
        self.write_points_from(points, "line protocol".into()).await
    }

    /// [`Self::write_points`] naming who sent them (kept with any conflict they cause).
    pub async fn write_points_from(&self, points: Vec<Point>, source: String) -> Result<WriteOutcome, StoreError> {
        self.write(WriteOp::Points(points, source)).await
    }

    /// An engineer's correction: sets the stored reading at (meter, quantity, time) to the
    /// value (when a reading is stored there) and settles the open conflicts there, in one
    /// transaction; `corrected` in the outcome says what was stored before.
    pub async fn correct(&self, c: Correction) -> Result<WriteOutcome, StoreError> {
        self.write(WriteOp::Correct(c)).await
    }

    /// Seals every day due (older than the head) into compressed chunks now; returns after the
    /// last commit, with the number of raw points sealed in `points_sealed`.
    pub async fn compact(&self) -> Result<WriteOutcome, StoreError> {
        self.write(WriteOp::Compact).await
    }

    /// Runs `f` on a read connection on the blocking pool.
    pub async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static) -> Result<T, StoreError> {
        // Every acknowledged point is readable: the head goes to the tables first.
        self.flush().await?;
        self.read_committed(f).await
    }

    /// Flushes the head when it holds points: everything acknowledged before the call is then
    /// in the tables, for reads that do not flush (the `_settled` ones).
    /// On a full disk the head is not flushed (the flush could not be written): reads then
    /// answer from what was flushed before.
    pub async fn flush(&self) -> Result<(), StoreError> {
        if self.head_points.load(std::sync::atomic::Ordering::Acquire) > 0 && !self.disk.is_full() {
            self.write(WriteOp::Flush).await?;
        }
        Ok(())
    }

    /// Runs `f` on a read connection without flushing the head first: for what the group
    /// commits write directly (the spool, gateway ranges), not points or roll-ups.
    pub(super) async fn read_committed<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        let i = self.next_reader.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            let conn = readers[i].lock().unwrap_or_else(|e| e.into_inner());
            // One read transaction for all the statements of this read: without it each statement
            // saw its own snapshot, and a day sealed between them could hide a replaced value
            // (the chunk read before the sealing, the raw rows after it).
            let tx = conn.unchecked_transaction()?;
            let out = f(&tx);
            drop(tx);
            out.map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    pub fn last_seen(&self, meter: &str) -> Option<i64> {
        self.last_seen.read().unwrap_or_else(|e| e.into_inner()).get(meter).copied()
    }

    /// Size of the database files and the log on disk.
    pub fn bytes(&self) -> u64 {
        let db: u64 = ["", "-wal"].iter().filter_map(|s| std::fs::metadata(format!("{}{s}", self.path.display())).ok()).map(|m| m.len()).sum();
        let log = self.path.parent().map(|d| d.join(super::log::LOG_DIR)).and_then(|d| std::fs::read_dir(d).ok());
        db + log.into_iter().flatten().filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum::<u64>()
    }

    /// Stops the writer after it has committed every write already sent, and checkpoints the
    /// WAL. Later writes fail with [`StoreError::Closed`].
    pub fn close(&self) {
        self.closer.close();
    }
}
