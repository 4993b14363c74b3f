//! The audit log: `<data_dir>/audit.log`, append-only JSON lines, each fsynced before `record`
//! returns. One record per event:
//!
//! ```json
//! {"time":"2026-11-28T03:10:00Z","who":"ops-admin","role":"admin","action":"store.compact",
//!  "target":"store","detail":{...},"remote":"10.0.0.5:51234"}
//! ```
//!
//! Recorded: configuration loads at startup (hash of each file) and changes since the last start,
//! admin actions taken with a token, refused authentications (at most
//! [`REFUSALS_PER_MINUTE`] a minute, so that an attacker cannot fill the disk; every refusal
//! is counted in `energyd_auth_refused_total`), and whatever handlers record (meter events,
//! corrections). `GET /api/v1/audit` reads it back. Records never hold a token.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

use crate::auth::Principal;

pub const FILE_NAME: &str = "audit.log";
/// Refused authentications written per minute at most; the rest are counted and summarised.
pub const REFUSALS_PER_MINUTE: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

struct RefusalWindow {
    start: Instant,
    written: u32,
    suppressed: u64,
}

/// The open audit log, held in `AppState`.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
    refusals: Mutex<RefusalWindow>,
    /// Refused ingest (meters not assigned to the gateway), limited like refusals.
    ingest_refusals: Mutex<RefusalWindow>,
}

impl AuditLog {
    /// Opens (creating) `<dir>/audit.log` for appending.
    pub fn open(dir: &Path) -> Result<AuditLog, AuditError> {
        let path = dir.join(FILE_NAME);
        let io = |source| AuditError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        let window = || Mutex::new(RefusalWindow { start: Instant::now(), written: 0, suppressed: 0 });
        Ok(AuditLog { path, file: Mutex::new(file), refusals: window(), ingest_refusals: window() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and fsyncs it. Blocking (an fsync): meant for rare events (config,
    /// admin actions, meter events, corrections), not per reading.
    pub fn record(&self, who: &Principal, action: &str, target: &str, detail: Value) -> Result<(), AuditError> {
        self.record_as(who, action, target, detail, who.role.name())
    }

    /// Records a refused authentication unless [`REFUSALS_PER_MINUTE`] were written in the last
    /// minute; the first record after a suppressed stretch says how many were left out.
    pub fn record_refusal(&self, remote: Option<String>, reason: &str, path: &str) {
        let Some(suppressed) = admit(&self.refusals) else { return };
        let who = Principal { name: "unauthenticated".into(), role: crate::auth::Role::Gateway, agency: None, gateway: None, meters: Vec::new(), remote };
        let detail = json!({ "reason": reason, "not_recorded_before_this": suppressed });
        if let Err(e) = self.record_as(&who, "auth.refused", path, detail, "none") {
            tracing::warn!("{e}");
        }
    }

    /// Records readings refused at ingest (`ingest.refused`: a gateway writing meters not
    /// assigned to it), at most [`REFUSALS_PER_MINUTE`] a minute like refused authentications
    /// (every refusal is counted in `energyd_ingest_rejected_total`). Blocking (an fsync).
    pub fn record_ingest_refusal(&self, who: &Principal, target: &str, mut detail: Value) {
        let Some(suppressed) = admit(&self.ingest_refusals) else { return };
        detail["not_recorded_before_this"] = suppressed.into();
        if let Err(e) = self.record(who, "ingest.refused", target, detail) {
            tracing::warn!("{e}");
        }
    }

    fn record_as(&self, who: &Principal, action: &str, target: &str, detail: Value, role: &str) -> Result<(), AuditError> {
        let rec = json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "who": who.name, "role": role, "action": action, "target": target, "detail": detail, "remote": who.remote,
        });
        let mut line = rec.to_string();
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let io = |source| AuditError::Io { path: self.path.clone(), source };
        f.write_all(line.as_bytes()).map_err(io)?;
        f.sync_data().map_err(io)
    }

    /// Records `offset..offset+limit` (0-based record numbers) and the total count. A line that
    /// is not JSON (a torn last write) is returned as a string.
    pub fn read_page(&self, offset: usize, limit: usize) -> Result<(Vec<Value>, usize), AuditError> {
        let io = |source| AuditError::Io { path: self.path.clone(), source };
        let f = File::open(&self.path).map_err(io)?;
        let mut items = Vec::new();
        let mut total = 0usize;
        for line in BufReader::new(f).lines() {
            let line = line.map_err(io)?;
            if line.is_empty() {
                continue;
            }
            if total >= offset && items.len() < limit {
                items.push(serde_json::from_str(&line).unwrap_or(Value::String(line)));
            }
            total += 1;
        }
        Ok((items, total))
    }

    /// The `detail` of the last record with `action`, if any (to tell a changed config).
    pub fn last_detail(&self, action: &str) -> Option<Value> {
        let f = File::open(&self.path).ok()?;
        let mut last = None;
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            if !line.contains(action) {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["action"] == action {
                    last = Some(v["detail"].clone());
                }
            }
        }
        last
    }
}

/// Whether one more record fits the window's minute; `Some(records left out before it)`.
fn admit(window: &Mutex<RefusalWindow>) -> Option<u64> {
    let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
    if w.start.elapsed().as_secs() >= 60 {
        w.start = Instant::now();
        w.written = 0;
    }
    if w.written >= REFUSALS_PER_MINUTE {
        w.suppressed += 1;
        return None;
    }
    w.written += 1;
    Some(std::mem::take(&mut w.suppressed))
}

/// SHA-256 hex of a file's bytes, or the read error as text.
pub fn file_sha256(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(b) => {
            let d = ring::digest::digest(&ring::digest::SHA256, &b);
            d.as_ref().iter().map(|x| format!("{x:02x}")).collect()
        }
        Err(e) => format!("unreadable: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_append_and_page() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let mut who = Principal::system();
        who.remote = Some("127.0.0.1:1".into());
        for i in 0..5 {
            log.record(&who, "meter.event", &format!("m{i}"), json!({ "i": i })).unwrap();
        }
        drop(log);
        let log = AuditLog::open(dir.path()).unwrap();
        log.record(&who, "config.load", "x", json!({ "sha256": "ab" })).unwrap();
        let (items, total) = log.read_page(4, 10).unwrap();
        assert_eq!(total, 6);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["target"], "m4");
        assert_eq!(items[1]["who"], "energyd");
        assert_eq!(items[1]["remote"], "127.0.0.1:1");
        assert_eq!(log.last_detail("config.load").unwrap()["sha256"], "ab");
    }

    #[test]
    fn refusals_are_rate_limited() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        for _ in 0..1000 {
            log.record_refusal(Some("10.0.0.1:2".into()), "invalid token", "/api/v1/meters");
        }
        let (_, total) = log.read_page(0, 0).unwrap();
        assert_eq!(total, REFUSALS_PER_MINUTE as usize);
    }
}
