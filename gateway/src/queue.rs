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
//! ([`crate::full`]): the oldest unsent data is always kept.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const HEADER: usize = 8;
const MAX_RECORD: u32 = 16 << 20;

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue I/O error in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("queue is full ({used} of {max} bytes); sample dropped")]
    Full { used: u64, max: u64 },
    #[error("record of {0} bytes is larger than the limit")]
    TooLarge(usize),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    /// Sequence number after the segment's last record.
    next_seq: u64,
    path: PathBuf,
    len: u64,
}

/// What opening the queue found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub records: u64,
    /// Bytes of torn tails and corrupt records removed.
    pub truncated_bytes: u64,
    /// The directory had no queue: a new one was made, with a new epoch.
    pub created: bool,
    /// Unacknowledged samples lost to corrupt records (one record holds one sample).
    pub lost_samples: u64,
    /// Their sequence numbers, as ranges (first, last).
    pub lost_ranges: Vec<(u64, u64)>,
}

/// The durable queue. Not thread-safe by itself; the gateway wraps it in a mutex.
#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    writer: Option<File>,
    acked: u64,
    next_seq: u64,
    segment_bytes: u64,
    max_bytes: u64,
    dirty: bool,
    /// Samples refused because the queue was full, since open.
    pub dropped: u64,
    pub recovery: Recovery,
    /// The queue's epoch (`None` for a queue made before epochs).
    epoch: Option<String>,
    /// Sequence numbers above `acked` whose records were lost to corruption (ranges, sorted).
    lost: Vec<(u64, u64)>,
    /// Where recent reads stopped: (next sequence number, its segment's first sequence, offset).
    cursors: Vec<(u64, u64, u64)>,
}

impl Queue {
    /// Opens (or creates) the queue in `dir`, recovering from torn writes.
    pub fn open(dir: &Path, segment_bytes: u64, max_bytes: u64) -> Result<Queue, QueueError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let acked_path = dir.join("acked");
        let acked = match fs::read_to_string(&acked_path) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(QueueError::Io { path: acked_path, source: e }),
        };
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            if path.extension().is_some_and(|e| e == "seg") {
                if let Some(seq) = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok()) {
                    names.push((seq, path));
                }
            }
        }
        names.sort();
        let epoch_path = dir.join("epoch");
        let mut recovery = Recovery::default();
        let epoch = match fs::read_to_string(&epoch_path) {
            Ok(e) => {
                let e = e.trim().to_string();
                energy_wire::validate_epoch(&e).map_err(|reason| QueueError::Io { path: epoch_path.clone(), source: io::Error::other(reason) })?;
                Some(e)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if names.is_empty() && !acked_path.exists() {
                    recovery.created = true;
                    Some(new_epoch(dir)?)
                } else {
                    None
                }
            }
            Err(e) => return Err(QueueError::Io { path: epoch_path, source: e }),
        };
        let mut segments: VecDeque<Segment> = VecDeque::new();
        let mut lost: Vec<(u64, u64)> = Vec::new();
        for (i, (first_seq, path)) in names.iter().enumerate() {
            let (first_seq, path) = (*first_seq, path.clone());
            // The next segment's first sequence number bounds what this one can hold.
            let limit = names.get(i + 1).map_or(u64::MAX, |n| n.0);
            if let Some(prev) = segments.back() {
                if first_seq > prev.next_seq {
                    lost.push((prev.next_seq, first_seq - 1));
                }
            }
            let scan = scan_segment(&path, first_seq, limit)?;
            if scan.good_len < scan.file_len || !scan.bad.is_empty() {
                let removed = scan.file_len - scan.good_len + scan.bad.iter().map(|b| b.1 - b.0).sum::<u64>();
                if scan.bad.is_empty() {
                    tracing::warn!(path = %path.display(), good_len = scan.good_len, file_len = scan.file_len, "queue segment has a torn or corrupt tail; truncating");
                    let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                    f.set_len(scan.good_len).map_err(io_err(&path))?;
                    f.sync_all().map_err(io_err(&path))?;
                } else {
                    rewrite_without(&path, &scan.bad, scan.good_len)?;
                    sync_dir(dir)?;
                }
                recovery.truncated_bytes += removed;
            }
            lost.extend(scan.lost.iter().copied());
            recovery.records += scan.records;
            segments.push_back(Segment { first_seq, next_seq: scan.next_seq, path, len: scan.good_len - scan.bad.iter().map(|b| b.1 - b.0).sum::<u64>() });
        }
        // Only what was not acknowledged yet is lost.
        let mut lost: Vec<(u64, u64)> = lost.into_iter().filter(|r| r.1 > acked).map(|(a, z)| (a.max(acked + 1), z)).collect();
        lost.sort_unstable();
        for &(a, z) in &lost {
            recovery.lost_samples += z - a + 1;
        }
        recovery.lost_ranges.clone_from(&lost);
        recovery.segments = segments.len();
        let next_seq = segments.back().map_or(acked + 1, |s| s.next_seq.max(acked + 1));
        let mut q = Queue {
            dir: dir.to_path_buf(),
            segments,
            writer: None,
            acked,
            next_seq,
            segment_bytes: segment_bytes.max(4096),
            max_bytes,
            dirty: false,
            dropped: 0,
            recovery,
            epoch,
            lost,
            cursors: Vec::new(),
        };
        q.remove_acked_segments()?;
        Ok(q)
    }

    /// Sequence number the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Highest acknowledged sequence number.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The queue's epoch (`None`: a queue made before epochs).
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// Sequence numbers above the acknowledged position whose records were lost to corruption
    /// (ranges, sorted): nothing will ever send them, so the uplink settles them.
    pub fn lost(&self) -> &[(u64, u64)] {
        &self.lost
    }

    /// Records appended and not yet acknowledged.
    pub fn depth(&self) -> u64 {
        let first_unacked = self.segments.front().map_or(self.next_seq, |s| s.first_seq.max(self.acked + 1));
        let lost: u64 = self.lost.iter().filter(|r| r.1 > self.acked).map(|&(a, z)| z - a.max(self.acked + 1) + 1).sum();
        self.next_seq.saturating_sub(first_unacked).saturating_sub(lost)
    }

    /// Bytes of segments on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Appends a record and returns its sequence number. Durable after [`Queue::sync`].
    pub fn append(&mut self, body: &[u8]) -> Result<u64, QueueError> {
        self.append_within(body, self.max_bytes)
    }

    /// The configured bound.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Appends unless the queue would exceed `limit` bytes (the full-queue policy appends
    /// thinned counter samples into a reserve above `max_bytes`).
    pub fn append_within(&mut self, body: &[u8], limit: u64) -> Result<u64, QueueError> {
        let len = body.len() + 8;
        if len > MAX_RECORD as usize {
            return Err(QueueError::TooLarge(body.len()));
        }
        let rec_len = (HEADER + len) as u64;
        let used = self.bytes();
        if used + rec_len > limit {
            self.dropped += 1;
            return Err(QueueError::Full { used, max: limit });
        }
        let need_new = match self.segments.back() {
            None => true,
            Some(s) => s.len > 0 && s.len + rec_len > self.segment_bytes,
        };
        if need_new {
            self.roll()?;
        }
        let seq = self.next_seq;
        let mut payload = Vec::with_capacity(len);
        payload.extend_from_slice(&seq.to_le_bytes());
        payload.extend_from_slice(body);
        let mut rec = Vec::with_capacity(HEADER + len);
        rec.extend_from_slice(&(len as u32).to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        rec.extend_from_slice(&payload);
        let seg = self.segments.back_mut().ok_or_else(|| QueueError::Io {
            path: self.dir.clone(),
            source: io::Error::other("no segment"),
        })?;
        if self.writer.is_none() {
            let f = OpenOptions::new().append(true).open(&seg.path).map_err(io_err(&seg.path))?;
            self.writer = Some(f);
        }
        let w = self.writer.as_mut().ok_or_else(|| QueueError::Io { path: seg.path.clone(), source: io::Error::other("no writer") })?;
        w.write_all(&rec).map_err(io_err(&seg.path))?;
        seg.len += rec_len;
        seg.next_seq = seq + 1;
        self.next_seq = seq + 1;
        self.dirty = true;
        Ok(seq)
    }

    fn roll(&mut self) -> Result<(), QueueError> {
        if let Some(w) = self.writer.take() {
            w.sync_all().map_err(io_err(&self.dir))?;
        }
        let path = self.dir.join(format!("{:020}.seg", self.next_seq));
        let f = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.segments.push_back(Segment { first_seq: self.next_seq, next_seq: self.next_seq, path, len: 0 });
        self.writer = Some(f);
        Ok(())
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> Result<(), QueueError> {
        if self.dirty {
            if let Some(w) = &self.writer {
                w.sync_data().map_err(io_err(&self.dir))?;
            }
            self.dirty = false;
        }
        Ok(())
    }

    /// Reads up to `max` unacknowledged records in sequence order, starting after the last
    /// acknowledged one. Stops early at a gap in sequence numbers so that what it returns is
    /// always contiguous.
    pub fn peek(&mut self, max: usize) -> Result<Vec<Record>, QueueError> {
        self.peek_after(self.acked, max)
    }

    /// Like [`Queue::peek`], starting after sequence number `after` (at least the acknowledged
    /// position): the uplink uses it to send ahead of what is acknowledged. Reads only the
    /// records it returns: where the last reads stopped is remembered (a few positions, for the
    /// uplink's live and history lanes), so draining a long backlog reads each record once.
    pub fn peek_after(&mut self, after: u64, max: usize) -> Result<Vec<Record>, QueueError> {
        let after = after.max(self.acked);
        let want = after + 1;
        let start = self
            .cursors
            .iter()
            .find(|c| c.0 == want)
            .and_then(|c| self.segments.iter().position(|s| s.first_seq == c.1).map(|i| (i, c.2)));
        let (mut idx, mut offset) = match start {
            Some(x) => x,
            None => match self.segments.iter().position(|s| s.next_seq > want) {
                Some(i) => (i, 0),
                None => return Ok(Vec::new()),
            },
        };
        let mut out: Vec<Record> = Vec::new();
        'segments: while idx < self.segments.len() && out.len() < max {
            let seg = &self.segments[idx];
            if let Some(last) = out.last() {
                if offset == 0 && seg.first_seq != last.seq + 1 {
                    break;
                }
            }
            if offset < seg.len {
                let mut f = File::open(&seg.path).map_err(io_err(&seg.path))?;
                f.seek(SeekFrom::Start(offset)).map_err(io_err(&seg.path))?;
                let mut r = io::BufReader::with_capacity(64 * 1024, f.take(seg.len - offset));
                let mut header = [0u8; HEADER];
                while out.len() < max && offset + HEADER as u64 <= seg.len {
                    r.read_exact(&mut header).map_err(io_err(&seg.path))?;
                    let len = u32::from_le_bytes(header[..4].try_into().unwrap_or_default()) as u64;
                    if offset + HEADER as u64 + len > seg.len || len < 8 {
                        break;
                    }
                    let mut payload = vec![0u8; len as usize];
                    r.read_exact(&mut payload).map_err(io_err(&seg.path))?;
                    let record_start = offset;
                    offset += HEADER as u64 + len;
                    let seq = u64::from_le_bytes(payload[..8].try_into().unwrap_or_default());
                    if seq <= after {
                        continue;
                    }
                    if let Some(last) = out.last() {
                        if seq != last.seq + 1 {
                            // A gap (records lost to corruption): the next read starts here.
                            offset = record_start;
                            break 'segments;
                        }
                    }
                    payload.drain(..8);
                    out.push(Record { seq, body: payload });
                }
            }
            if out.len() < max {
                idx += 1;
                offset = 0;
            }
        }
        if let Some(last) = out.last() {
            let pos = match self.segments.get(idx) {
                Some(seg) => (last.seq + 1, seg.first_seq, offset),
                None => {
                    let seg = &self.segments[self.segments.len() - 1];
                    (last.seq + 1, seg.first_seq, seg.len)
                }
            };
            self.cursors.retain(|c| c.0 != want && c.0 > self.acked);
            self.cursors.push(pos);
            if self.cursors.len() > 4 {
                self.cursors.remove(0);
            }
        }
        Ok(out)
    }

    /// Records that the daemon has stored everything up to and including `seq`.
    pub fn ack(&mut self, seq: u64) -> Result<(), QueueError> {
        if seq <= self.acked {
            return Ok(());
        }
        self.acked = seq.min(self.next_seq.saturating_sub(1));
        let tmp = self.dir.join("acked.tmp");
        let path = self.dir.join("acked");
        {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(self.acked.to_string().as_bytes()).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        let acked = self.acked;
        self.lost.retain(|r| r.1 > acked);
        self.remove_acked_segments()
    }

    fn remove_acked_segments(&mut self) -> Result<(), QueueError> {
        // Keep the last segment as the append target, even when fully acknowledged, unless empty
        // segments pile up; delete any earlier fully acknowledged ones.
        while self.segments.len() > 1 && self.segments[0].next_seq <= self.acked + 1 {
            if let Some(s) = self.segments.pop_front() {
                fs::remove_file(&s.path).map_err(io_err(&s.path))?;
            }
        }
        if let Some(s) = self.segments.front() {
            if self.segments.len() == 1 && s.next_seq <= self.acked + 1 && s.len >= self.segment_bytes {
                let s = self.segments.pop_front().map(|s| s.path);
                self.writer = None;
                if let Some(p) = s {
                    fs::remove_file(&p).map_err(io_err(&p))?;
                }
            }
        }
        Ok(())
    }
}

/// What scanning a segment found.
#[derive(Debug, Default)]
struct Scan {
    /// Sequence number after the last good record.
    next_seq: u64,
    /// Good records.
    records: u64,
    /// Where the good part ends (a torn tail after it is cut off), counting corrupt regions.
    good_len: u64,
    file_len: u64,
    /// Byte ranges of corrupt records skipped before `good_len`.
    bad: Vec<(u64, u64)>,
    /// Sequence numbers of the records lost in them.
    lost: Vec<(u64, u64)>,
}

/// Reads the record at `at` of `data` (offsets relative to `data`): (sequence number, record
/// length) if its length fits and its checksum matches.
fn frame_at(data: &[u8], at: usize) -> Option<(u64, usize)> {
    let header = data.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?);
    if !(8..=MAX_RECORD).contains(&len) {
        return None;
    }
    let payload = data.get(at + HEADER..at + HEADER + len as usize)?;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    (crc32fast::hash(payload) == crc).then(|| (u64::from_le_bytes(payload[..8].try_into().unwrap_or_default()), HEADER + len as usize))
}

/// The smallest record: header and sequence number, an empty body.
const MIN_RECORD: u64 = HEADER as u64 + 8;

/// Scans a segment whose first record should have sequence number `first_seq` and whose records
/// are all below `limit` (the next segment's first). Streams the valid records; after a corrupt
/// one, reads the rest of the segment and looks for the next valid record (see the module doc).
fn scan_segment(path: &Path, first_seq: u64, limit: u64) -> Result<Scan, QueueError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let file_len = f.seek(SeekFrom::End(0)).map_err(io_err(path))?;
    f.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let mut scan = Scan { next_seq: first_seq, file_len, ..Scan::default() };
    // Streamed, one record at a time: memory stays small whatever the segment size.
    let mut r = io::BufReader::with_capacity(64 * 1024, f);
    let mut pos = 0u64;
    let mut header = [0u8; HEADER];
    let mut payload = Vec::new();
    let mut clean = true;
    while pos + HEADER as u64 <= file_len {
        if r.read_exact(&mut header).is_err() {
            break;
        }
        let len = u32::from_le_bytes(header[..4].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap_or_default());
        if !(8..=MAX_RECORD).contains(&len) || pos + HEADER as u64 + u64::from(len) > file_len {
            clean = false;
            break;
        }
        payload.resize(len as usize, 0);
        if r.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            clean = false;
            break;
        }
        let seq = u64::from_le_bytes(payload[..8].try_into().unwrap_or_default());
        if seq != scan.next_seq {
            clean = false;
            break;
        }
        scan.next_seq += 1;
        scan.records += 1;
        pos += HEADER as u64 + u64::from(len);
    }
    scan.good_len = pos;
    if clean || pos >= file_len {
        return Ok(scan);
    }
    // A corrupt record at `pos`: the rest of the segment is read once (a segment is at most a
    // few MiB) and searched for the next record that can follow.
    let mut f = r.into_inner();
    f.seek(SeekFrom::Start(pos)).map_err(io_err(path))?;
    let mut rest = Vec::with_capacity((file_len - pos) as usize);
    f.read_to_end(&mut rest).map_err(io_err(path))?;
    let mut at = 0usize;
    while at < rest.len() {
        if let Some((seq, len)) = frame_at(&rest, at).filter(|&(seq, _)| seq >= scan.next_seq && seq < limit) {
            // A valid record where the previous one ended. A number skipped without damaged
            // bytes is a loss repaired at an earlier start (the segment was rewritten then).
            if seq > scan.next_seq {
                scan.lost.push((scan.next_seq, seq - 1));
            }
            scan.next_seq = seq + 1;
            scan.records += 1;
            at += len;
            continue;
        }
        // Look for the next valid record after `at`.
        let bad_start = at;
        let mut found = None;
        let mut p = at + 1;
        while p + MIN_RECORD as usize <= rest.len() {
            // At most this many records fit in the skipped bytes.
            let room = ((p - bad_start) as u64).div_ceil(MIN_RECORD);
            let seq_ok = |seq: u64| seq >= scan.next_seq && seq <= scan.next_seq + room && seq < limit;
            let seq = u64::from_le_bytes(rest[p + HEADER..p + HEADER + 8].try_into().unwrap_or_default());
            if seq_ok(seq) {
                if let Some((seq, len)) = frame_at(&rest, p) {
                    found = Some((p, seq, len));
                    break;
                }
            }
            p += 1;
        }
        let Some((p, seq, _)) = found else {
            // Nothing valid after it: a torn or corrupt tail.
            break;
        };
        scan.bad.push((pos + bad_start as u64, pos + p as u64));
        if seq > scan.next_seq {
            scan.lost.push((scan.next_seq, seq - 1));
        }
        tracing::warn!(
            path = %path.display(),
            offset = pos + bad_start as u64,
            bytes = p - bad_start,
            lost_samples = seq - scan.next_seq,
            lost_seqs = %if seq > scan.next_seq { format!("{}..={}", scan.next_seq, seq - 1) } else { "none".into() },
            "corrupt queue record skipped; the records after it are kept"
        );
        scan.next_seq = seq;
        at = p;
    }
    scan.good_len = pos + at.min(rest.len()) as u64;
    Ok(scan)
}

/// Rewrites a segment without the byte ranges `bad` and without what follows `good_len`
/// (write to a temporary file, fsync, rename over the segment).
fn rewrite_without(path: &Path, bad: &[(u64, u64)], good_len: u64) -> Result<(), QueueError> {
    let tmp = path.with_extension("seg.tmp");
    {
        let mut src = io::BufReader::with_capacity(64 * 1024, File::open(path).map_err(io_err(path))?);
        let mut dst = io::BufWriter::with_capacity(64 * 1024, File::create(&tmp).map_err(io_err(&tmp))?);
        let mut at = 0u64;
        for &(a, z) in bad.iter().chain(std::iter::once(&(good_len, good_len))) {
            io::copy(&mut (&mut src).take(a - at), &mut dst).map_err(io_err(&tmp))?;
            io::copy(&mut (&mut src).take(z - a), &mut io::sink()).map_err(io_err(path))?;
            at = z;
        }
        let f = dst.into_inner().map_err(|e| QueueError::Io { path: tmp.clone(), source: e.into_error() })?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Makes the epoch of a new queue: 32 random hex digits, written to `epoch` and fsynced (the
/// file, then the directory) before anything is queued.
fn new_epoch(dir: &Path) -> Result<String, QueueError> {
    let mut bytes = [0u8; 16];
    let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // No /dev/urandom: the standard library's per-process random hash keys, with the time.
        use std::hash::{BuildHasher, Hasher};
        for half in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    let epoch: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join("epoch.tmp");
    let path = dir.join("epoch");
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(epoch.as_bytes()).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(epoch)
}

fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn append_peek_ack_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), 1 << 20, 1 << 30).unwrap();
        for i in 0..10u8 {
            assert_eq!(q.append(&[i; 3]).unwrap(), u64::from(i) + 1);
        }
        q.sync().unwrap();
        assert_eq!(q.depth(), 10);
        let recs = q.peek(4).unwrap();
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        q.ack(4).unwrap();
        drop(q);
        let mut q = Queue::open(dir.path(), 1 << 20, 1 << 30).unwrap();
        assert_eq!(q.acked(), 4);
        assert_eq!(q.depth(), 6);
        assert_eq!(q.peek(100).unwrap().first().map(|r| (r.seq, r.body.clone())), Some((5, vec![4; 3])));
        assert_eq!(q.append(b"x").unwrap(), 11);
    }

    #[test]
    fn torn_tail_is_truncated_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), 1 << 20, 1 << 30).unwrap();
        for i in 0..5u8 {
            q.append(&[i; 10]).unwrap();
        }
        q.sync().unwrap();
        drop(q);
        let seg = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "seg")).unwrap();
        // A half-written sixth record, then flip a byte in the fifth record's payload.
        let mut data = fs::read(&seg).unwrap();
        let rec = data.len() / 5;
        data.extend_from_slice(&[30, 0, 0, 0, 1, 2]);
        fs::write(&seg, &data).unwrap();
        let q = Queue::open(dir.path(), 1 << 20, 1 << 30).unwrap();
        assert_eq!(q.recovery.truncated_bytes, 6);
        assert_eq!(q.depth(), 5);
        drop(q);
        let last = data.len() - 6 - 1;
        data.truncate(data.len() - 6);
        data[last] ^= 0xff;
        fs::write(&seg, &data).unwrap();
        let mut q = Queue::open(dir.path(), 1 << 20, 1 << 30).unwrap();
        assert_eq!(q.recovery.truncated_bytes as usize, rec);
        assert_eq!(q.depth(), 4);
        assert_eq!(q.append(b"new").unwrap(), 5);
    }

    /// Writes `n` records of 20 bytes (body = the sequence number's low byte, repeated) into one
    /// segment, and returns the queue directory, the segment's path and each record's offset.
    fn one_segment(n: u8) -> (tempfile::TempDir, PathBuf, Vec<usize>) {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), 1 << 20, 1 << 30).unwrap();
        for i in 1..=n {
            q.append(&[i; 20]).unwrap();
        }
        q.sync().unwrap();
        drop(q);
        let seg = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "seg")).unwrap();
        // Each record: 8 bytes of header, 8 of sequence number, 20 of body.
        let offsets = (0..usize::from(n)).map(|i| i * 36).collect();
        (dir, seg, offsets)
    }

    fn all_records(q: &mut Queue) -> Vec<u64> {
        let mut got = Vec::new();
        let mut after = q.acked();
        loop {
            let part = q.peek_after(after, 7).unwrap();
            let Some(last) = part.last() else { break };
            // Each chunk is contiguous.
            assert!(part.windows(2).all(|w| w[1].seq == w[0].seq + 1));
            assert!(part.iter().all(|r| r.body == vec![r.seq as u8; 20]));
            after = last.seq;
            got.extend(part.iter().map(|r| r.seq));
        }
        got
    }

    #[test]
    fn a_corrupt_record_loses_only_itself() {
        // 80 records; 4 bytes flipped in the body of record 41 (offset 40 x 36 + 20).
        let (dir, seg, offs) = one_segment(80);
        let mut data = fs::read(&seg).unwrap();
        for b in &mut data[offs[40] + 20..offs[40] + 24] {
            *b ^= 0x5a;
        }
        fs::write(&seg, &data).unwrap();
        let mut q = Queue::open(dir.path(), 1 << 20, 1 << 30).unwrap();
        assert_eq!(q.recovery.lost_samples, 1);
        assert_eq!(q.recovery.lost_ranges, vec![(41, 41)]);
        assert_eq!(q.recovery.records, 79);
        assert_eq!(q.recovery.truncated_bytes, 36);
        assert_eq!(q.lost(), &[(41, 41)]);
        assert_eq!(q.depth(), 79);
        let want: Vec<u64> = (1..=80).filter(|&s| s != 41).collect();
        assert_eq!(all_records(&mut q), want);
        // Appending goes on after the last record; the segment was rewritten without the bad
        // bytes, so a second open finds nothing more to repair and still knows what was lost
        // (from the gap in sequence numbers).
        assert_eq!(q.append(&[81; 20]).unwrap(), 81);
        q.sync().unwrap();
        drop(q);
        let mut q = Queue::open(dir.path(), 1 << 20, 1 << 30).unwrap();
        assert_eq!((q.recovery.truncated_bytes, q.recovery.lost_ranges.clone()), (0, vec![(41, 41)]));
        assert_eq!(all_records(&mut q).len(), 80);
        // Once acknowledged past it, the loss is history.
        q.ack(50).unwrap();
        assert_eq!(q.lost(), &[] as &[(u64, u64)]);
        assert_eq!(q.depth(), 31);
    }

    #[test]
    fn a_corrupt_length_field_and_a_corrupt_first_record() {
        // The length of record 10 says 16 MiB; record 1 has a bad checksum.
        let (dir, seg, offs) = one_segment(30);
        let mut data = fs::read(&seg).unwrap();
        data[offs[9]..offs[9] + 4].copy_from_slice(&(16u32 << 20).to_le_bytes());
        data[4] ^= 1;
        fs::write(&seg, &data).unwrap();
        let mut q = Queue::open(dir.path(), 1 << 20, 1 << 30).unwrap();
        assert_eq!(q.recovery.lost_ranges, vec![(1, 1), (10, 10)]);
        assert_eq!(all_records(&mut q), (2..=30).filter(|&s| s != 10).collect::<Vec<_>>());
        assert_eq!(q.depth(), 28);
        // Already acknowledged records are not counted as lost.
        drop(q);
        let (dir, seg, offs) = one_segment(30);
        let mut q = Queue::open(dir.path(), 1 << 20, 1 << 30).unwrap();
        q.ack(5).unwrap();
        drop(q);
        let mut data = fs::read(&seg).unwrap();
        data[offs[2] + 17] ^= 0xff;
        data[offs[20] + 17] ^= 0xff;
        fs::write(&seg, &data).unwrap();
        let mut q = Queue::open(dir.path(), 1 << 20, 1 << 30).unwrap();
        assert_eq!((q.recovery.lost_samples, q.recovery.lost_ranges.clone()), (1, vec![(21, 21)]));
        assert_eq!(all_records(&mut q), (6..=30).filter(|&s| s != 21).collect::<Vec<_>>());
    }

    #[test]
    fn a_new_queue_has_an_epoch_and_an_old_one_keeps_none() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), 1 << 20, 1 << 30).unwrap();
        assert!(q.recovery.created);
        let e = q.epoch().unwrap().to_string();
        assert_eq!(e.len(), 32);
        assert!(e.chars().all(|c| c.is_ascii_hexdigit()));
        drop(q);
        // Reopened: the same epoch, not a new queue.
        let q = Queue::open(dir.path(), 1 << 20, 1 << 30).unwrap();
        assert_eq!((q.epoch(), q.recovery.created), (Some(e.as_str()), false));
        drop(q);
        // The directory lost and made again: another epoch.
        fs::remove_dir_all(dir.path()).unwrap();
        let q = Queue::open(dir.path(), 1 << 20, 1 << 30).unwrap();
        assert!(q.recovery.created);
        assert_ne!(q.epoch(), Some(e.as_str()));
        // A queue written before epochs (records, no epoch file) keeps having none.
        let old = tempfile::tempdir().unwrap();
        let mut q = Queue::open(old.path(), 1 << 20, 1 << 30).unwrap();
        q.append(b"x").unwrap();
        q.sync().unwrap();
        drop(q);
        fs::remove_file(old.path().join("epoch")).unwrap();
        let q = Queue::open(old.path(), 1 << 20, 1 << 30).unwrap();
        assert_eq!((q.epoch(), q.recovery.created, q.depth()), (None, false, 1));
        // A damaged epoch file is an error that names it, not a silent new epoch.
        fs::write(old.path().join("epoch"), "not an epoch!").unwrap();
        let err = Queue::open(old.path(), 1 << 20, 1 << 30).unwrap_err().to_string();
        assert!(err.contains("epoch"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Random bytes flipped anywhere in a segment: every record whose bytes are untouched is
        /// kept, every touched one is gone, and what is reported lost is exactly the touched
        /// records before the last untouched one (touched records at the very end are a torn
        /// tail: never acknowledged, their numbers are used again).
        #[test]
        fn random_corruption_loses_only_the_damaged_records(flips in proptest::collection::vec((0usize..80 * 36, 1u8..=255), 1..6)) {
            let (dir, seg, _) = one_segment(80);
            let mut data = fs::read(&seg).unwrap();
            let mut touched = std::collections::BTreeSet::new();
            for &(at, x) in &flips {
                data[at] ^= x;
                touched.insert(at as u64 / 36 + 1);
            }
            fs::write(&seg, &data).unwrap();
            let mut q = Queue::open(dir.path(), 1 << 20, 1 << 30).unwrap();
            let kept: Vec<u64> = (1..=80).filter(|s| !touched.contains(s)).collect();
            prop_assert_eq!(all_records(&mut q), kept.clone());
            let last_kept = kept.last().copied().unwrap_or(0);
            let lost: u64 = touched.iter().filter(|&&s| s < last_kept).count() as u64;
            prop_assert_eq!(q.recovery.lost_samples, lost);
            prop_assert_eq!(q.depth(), kept.len() as u64);
        }
    }

    #[test]
    fn full_queue_refuses_new_samples_and_keeps_old() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), 4096, 100).unwrap();
        let mut ok = 0;
        let mut full = 0;
        for _ in 0..10 {
            match q.append(&[7; 20]) {
                Ok(_) => ok += 1,
                Err(QueueError::Full { .. }) => full += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, 2); // 36 bytes per record, 100 bytes allowed
        assert_eq!(full, 8);
        assert_eq!(q.dropped, 8);
        assert_eq!(q.peek(10).unwrap().len(), 2);
        q.ack(2).unwrap();
        assert!(q.append(&[7; 20]).is_ok() || q.bytes() > 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(u8),
        Ack(usize),
        Reopen,
        Tear(usize),
        /// Read everything unacknowledged in chunks of this size, as the uplink does.
        Chunks(usize),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => any::<u8>().prop_map(Op::Append),
            2 => (0usize..5).prop_map(Op::Ack),
            1 => Just(Op::Reopen),
            1 => (1usize..12).prop_map(Op::Tear),
            2 => (1usize..7).prop_map(Op::Chunks),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// The queue behaves like a model: a list of (seq, body) with an ack pointer. Synced
        /// records survive reopen; tearing bytes off an unsynced tail loses only unsynced records.
        #[test]
        fn queue_matches_model(ops in proptest::collection::vec(arb_op(), 1..80)) {
            let dir = tempfile::tempdir().unwrap();
            let mut q = Queue::open(dir.path(), 256, 1 << 30).unwrap();
            let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut acked = 0u64;
            for op in ops {
                match op {
                    Op::Append(b) => {
                        let body = vec![b; usize::from(b % 17)];
                        let seq = q.append(&body).unwrap();
                        q.sync().unwrap();
                        prop_assert_eq!(seq, model.last().map_or(acked + 1, |m| m.0 + 1).max(acked + 1));
                        model.push((seq, body));
                    }
                    Op::Ack(n) => {
                        let unacked: Vec<_> = model.iter().filter(|m| m.0 > acked).collect();
                        if let Some(m) = unacked.get(n.min(unacked.len().saturating_sub(1))) {
                            acked = m.0;
                            q.ack(acked).unwrap();
                        }
                    }
                    Op::Reopen => {
                        drop(q);
                        q = Queue::open(dir.path(), 256, 1 << 30).unwrap();
                    }
                    Op::Chunks(n) => {
                        let mut got = Vec::new();
                        let mut after = acked;
                        loop {
                            let part = q.peek_after(after, n).unwrap();
                            let Some(last) = part.last() else { break };
                            prop_assert!(part.len() <= n);
                            after = last.seq;
                            got.extend(part.into_iter().map(|r| (r.seq, r.body)));
                        }
                        let expect: Vec<(u64, Vec<u8>)> = model.iter().filter(|m| m.0 > acked).cloned().collect();
                        prop_assert_eq!(got, expect);
                    }
                    Op::Tear(n) => {
                        // Append an unsynced partial record: garbage bytes at the end of the
                        // newest segment, as a power cut mid-write leaves.
                        drop(q);
                        let mut segs: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path())
                            .filter(|p| p.extension().is_some_and(|e| e == "seg")).collect();
                        segs.sort();
                        if let Some(last) = segs.last() {
                            let mut f = OpenOptions::new().append(true).open(last).unwrap();
                            f.write_all(&vec![0xAB; n]).unwrap();
                        }
                        q = Queue::open(dir.path(), 256, 1 << 30).unwrap();
                    }
                }
                let expect: Vec<(u64, Vec<u8>)> = model.iter().filter(|m| m.0 > acked).cloned().collect();
                let got: Vec<(u64, Vec<u8>)> = q.peek(usize::MAX).unwrap().into_iter().map(|r| (r.seq, r.body)).collect();
                prop_assert_eq!(&got, &expect);
                prop_assert_eq!(q.depth(), expect.len() as u64);
            }
        }
    }
}
