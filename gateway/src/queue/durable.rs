//! The queue on disk: segments appended in sequence order, the acknowledged position, the
//! epoch (the format and the rules are in [`super`]).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::{encode, Record, HEADER, MAX_RECORD};
use super::recover::{recover_segments, Recovered, Recovery};
use super::segment::{io_err, sync_dir, QueueError, Segment};

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
        let Recovered { segments, lost } = recover_segments(dir, &names, acked, &mut recovery)?;
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
        let rec = encode(seq, body);
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
