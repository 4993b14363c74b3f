//! The syncer thread: writes are answered only once what holds them is on disk: the store's log
//! file (the group's record of points and gateway ranges) and, when the group's transaction
//! changed rows (conflicts, change records, corrections, spool rows), the WAL.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use super::error::WriteError;
use super::requests::WriteOutcome;
use crate::metrics::Metrics;

/// An answer waiting for the WAL sync.
pub(super) type Reply = (oneshot::Sender<Result<WriteOutcome, WriteError>>, Result<WriteOutcome, WriteError>);

/// What a group's answers wait for: its log file (the group appended a record) and the WAL (its
/// transaction changed rows).
pub(super) struct Durable {
    pub(super) log: Option<(Arc<std::fs::File>, PathBuf)>,
    pub(super) wal: bool,
}

type Pending = (Vec<Reply>, Durable);

/// The writer's WAL syncer: a thread that fsyncs the WAL file and then sends the answers of the
/// groups committed before the sync began, taking every group waiting at once; the writer
/// meanwhile works on the next groups. A failed sync stops writes for good (`failed`): after a
/// failed fsync the kernel may have dropped the pages, so what follows could not be promised
/// durable either.
pub(super) struct Syncer {
    pub(super) to_sync: std::sync::mpsc::Sender<Pending>,
    pub(super) thread: std::thread::JoinHandle<()>,
    pub(super) failed: Arc<Mutex<Option<String>>>,
}

impl Syncer {
    pub(super) fn start(wal: PathBuf, metrics: Metrics) -> std::io::Result<Syncer> {
        let failed: Arc<Mutex<Option<String>>> = Arc::default();
        let (to_sync, rx) = std::sync::mpsc::channel::<Pending>();
        let thread = std::thread::Builder::new().name("store-sync".into()).spawn({
            let failed = failed.clone();
            move || syncer_loop(&wal, &rx, &failed, &metrics)
        })?;
        Ok(Syncer { to_sync, thread, failed })
    }

    /// Answers after the next syncs of what `durable` names.
    pub(super) fn answer_when_durable(&self, replies: Vec<Reply>, durable: Durable) {
        if let Err(back) = self.to_sync.send((replies, durable)) {
            for (reply, _) in back.0 .0 {
                let _ = reply.send(Err(WriteError::SyncerStopped));
            }
        }
    }

    /// Why writes are refused, after a failed sync.
    pub(super) fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends the answers still waiting and stops the thread.
    pub(super) fn stop(self) {
        drop(self.to_sync);
        let _ = self.thread.join();
    }
}

pub(super) fn syncer_loop(wal: &Path, rx: &std::sync::mpsc::Receiver<Pending>, failed: &Mutex<Option<String>>, metrics: &Metrics) {
    let mut file: Option<std::fs::File> = None;
    while let Ok((mut replies, first)) = rx.recv() {
        let mut sync_wal = first.wal;
        let mut logs: Vec<(Arc<std::fs::File>, PathBuf)> = first.log.into_iter().collect();
        while let Ok((more, durable)) = rx.try_recv() {
            replies.extend(more);
            sync_wal |= durable.wal;
            if let Some(l) = durable.log {
                if !logs.iter().any(|k| Arc::ptr_eq(&k.0, &l.0)) {
                    logs.push(l);
                }
            }
        }
        let started = Instant::now();
        let mut synced: Result<(), (std::io::Error, &Path, &str)> = Ok(());
        // The log files the groups appended to (usually one; two across a rotation).
        for (f, path) in &logs {
            if let Err(e) = f.sync_data() {
                synced = Err((e, path.as_path(), "log file"));
                break;
            }
        }
        // Any fsync of the file after the commit's frames were written covers them; if the WAL
        // was checkpointed and restarted meanwhile, the checkpoint synced them into the
        // database file first.
        if sync_wal && synced.is_ok() {
            let r = match &file {
                Some(f) => f.sync_data(),
                None => std::fs::File::open(wal).and_then(|f| {
                    f.sync_data()?;
                    file = Some(f);
                    Ok(())
                }),
            };
            synced = r.map_err(|e| (e, wal, "WAL file"));
        }
        metrics.store_wal_sync_seconds.observe(started.elapsed().as_secs_f64());
        let mut failure = failed.lock().unwrap_or_else(|e| e.into_inner());
        if let Err((e, path, what)) = synced {
            if failure.is_none() {
                // Even for ENOSPC: unlike a write refused for a full disk (nothing committed), a
                // failed fsync may have lost frames already accepted (ARCHITECTURE.md, "What is
                // durable when").
                let full = if e.kind() == std::io::ErrorKind::StorageFull { "; the disk is full: free space, then restart" } else { "" };
                let msg = format!("syncing the store's {what} {} failed ({e}): the store refuses writes until energyd is restarted{full}", path.display());
                tracing::error!("{msg}");
                *failure = Some(msg);
            }
        }
        let failure = failure.clone();
        for (reply, out) in replies {
            let _ = reply.send(match &failure {
                Some(msg) => Err(WriteError::SyncFailed(msg.clone())),
                None => out,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_wal_sync_fails_the_waiting_answers_and_every_write_after() {
        let dir = tempfile::tempdir().unwrap();
        // A WAL that cannot be opened stands for a failed fsync.
        let wal = dir.path().join("missing").join("energyd.sqlite-wal");
        let syncer = Syncer::start(wal, Metrics::new()).unwrap();
        let (tx, rx) = oneshot::channel();
        syncer.answer_when_durable(vec![(tx, Ok(WriteOutcome { points_written: 3, ..Default::default() }))], Durable { log: None, wal: true });
        let err = rx.blocking_recv().unwrap().unwrap_err().to_string();
        assert!(err.contains("syncing the store's WAL file") && err.contains("missing") && err.contains("restarted"), "{err}");
        assert_eq!(syncer.failure().as_deref(), Some(err.as_str()));
        syncer.stop();
        // A WAL that syncs: the answer goes through as it was.
        let wal = dir.path().join("energyd.sqlite-wal");
        std::fs::write(&wal, b"frames").unwrap();
        let syncer = Syncer::start(wal, Metrics::new()).unwrap();
        let (tx, rx) = oneshot::channel();
        syncer.answer_when_durable(vec![(tx, Ok(WriteOutcome { points_written: 3, ..Default::default() }))], Durable { log: None, wal: true });
        assert_eq!(rx.blocking_recv().unwrap().unwrap().points_written, 3);
        assert!(syncer.failure().is_none());
        syncer.stop();
    }
}
