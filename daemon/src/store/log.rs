//! The store's write-ahead log, outside SQLite (store format 8): one record per group commit
//! holding the group's new points, compressed per series, and the gateway sequence ranges the
//! group changed. A record is appended to `<data_dir>/log/<first id>.log` and fdatasync'd (by the
//! syncer thread) before any request of its group is answered; a flush of the head writes the
//! points into SQLite and records the id of the last record it covers (`meta` key
//! `log_position`), after which the log files are deleted. At open, the records after that
//! position are replayed into the head.
//!
//! # Record
//!
//! `len` (u32 LE: the bytes of `id` and `body`), `crc32` (u32 LE, of `id` and `body`), `id` (u64
//! LE, one more than the previous record's), `body`:
//!
//! * a version byte ([`BODY_VERSION`]);
//! * the series the group added to the catalog: a varint count, then per series its id
//!   (varint), meter and quantity name (varint length, UTF-8);
//! * the gateway states the group changed: a varint count, then per (gateway, queue epoch) its
//!   name and epoch (varint length, UTF-8), when its first and latest batches were stored
//!   (a byte, 0 for unknown, else 1 and the zigzag varint of the time in ms), and its merged sequence
//!   ranges after the group (varint count, then per range the start and the length less one);
//! * the number of series (varint), then a bit stream ([`super::codec`]'s building blocks): four
//!   columns packed by frame of reference (a column of equal numbers takes a few bits): per
//!   series (ascending id) its id less the previous one's, its number of points, its first
//!   time less the previous series', its first step less the previous series' (regular
//!   readings of many meters at the same minutes cost next to nothing there); then per series
//!   the deltas-of-deltas of its times after the first step, packed, and its values (see
//!   [`put_values`]: decimal integers packed as they are, as deltas or as deltas-of-deltas,
//!   whichever is shortest; the bits' XOR otherwise).
//!
//! A group of a minute of 1000 meters' 10 quantities takes a few bytes per series and under two
//! bytes per point, where a `head_log` row took 10 bytes per point and was written twice (the
//! WAL, then the checkpoint).
//!
//! # Reading at open
//!
//! Each file is read record by record. A record that is not valid (length out of range,
//! checksum, id) followed by no valid record up to the end of the last file is a torn tail (a
//! crash during an append, never acknowledged): the file is cut there and the bytes are
//! counted. A bad record followed by a valid one, a torn file that is not the last, or ids that
//! skip a number, would mean an acknowledged group lost: opening fails with an error naming the
//! file and the offset, and nothing is deleted.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::codec::{self, BitReader, BitWriter, CodecError};
use super::head::{get_varint, put_varint, unzigzag, zigzag};

/// The log's directory under the data directory.
pub const LOG_DIR: &str = "log";
/// Bytes before a record's body: length, checksum, id.
pub const HEADER: usize = 16;
/// The largest record read (a group of 256 requests of 5000 lines of 10 values takes about
/// 30 MiB in the worst case of values that are not decimals).
pub const MAX_RECORD: usize = 1 << 30;
/// The body's format.
pub const BODY_VERSION: u8 = 1;

/// What the log holds of one (gateway, queue epoch) after a group: the gateway ranges table's
/// and the epochs table's rows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayState {
    pub gateway: String,
    /// '' for batches without an epoch.
    pub epoch: String,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// Merged, sorted.
    pub ranges: Vec<(u64, u64)>,
}

/// A decoded record body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Body {
    /// (series, time, value), sorted by series, then time.
    pub points: Vec<(i64, i64, f64)>,
    pub gateways: Vec<GatewayState>,
    /// Series the group added to the catalog: (id, meter, quantity name). The catalog's rows
    /// are in the group's transaction too; the record holds them so that its points never
    /// depend on that commit reaching the disk first.
    pub new_series: Vec<(i64, String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the store's log {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the store's log file {path} is corrupt at byte {offset}: {what}; a group acknowledged to its sender may be in it, so the store does not open (keep the file for recovery; move it away only to give those points up)")]
    Corrupt { path: PathBuf, offset: u64, what: String },
}

/// Why a body does not decode.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    #[error("log record body of version {0}; this build reads version {BODY_VERSION}")]
    Version(u8),
    #[error("log record body ends early or is inconsistent")]
    Truncated,
    #[error("log record points: {0}")]
    Codec(#[from] CodecError),
}

fn put_bytes(b: &mut Vec<u8>, s: &[u8]) {
    put_varint(b, s.len() as u64);
    b.extend_from_slice(s);
}

fn get_str(b: &[u8], pos: &mut usize) -> Result<String, BodyError> {
    let n = usize::try_from(get_varint(b, pos).ok_or(BodyError::Truncated)?).map_err(|_| BodyError::Truncated)?;
    let end = pos.checked_add(n).filter(|&e| e <= b.len()).ok_or(BodyError::Truncated)?;
    let s = std::str::from_utf8(&b[*pos..end]).map_err(|_| BodyError::Truncated)?.to_string();
    *pos = end;
    Ok(s)
}

fn put_opt(b: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => b.push(0),
        Some(v) => {
            b.push(1);
            put_varint(b, zigzag(v));
        }
    }
}

fn get_opt(b: &[u8], pos: &mut usize) -> Result<Option<i64>, BodyError> {
    let flag = *b.get(*pos).ok_or(BodyError::Truncated)?;
    *pos += 1;
    match flag {
        0 => Ok(None),
        1 => Ok(Some(unzigzag(get_varint(b, pos).ok_or(BodyError::Truncated)?))),
        _ => Err(BodyError::Truncated),
    }
}

fn get_num(b: &[u8], pos: &mut usize) -> Result<u64, BodyError> {
    get_varint(b, pos).ok_or(BodyError::Truncated)
}

/// A count of things that take at least `min_bytes` each: no more than the body could hold.
fn get_count(b: &[u8], pos: &mut usize, min_bytes: u64) -> Result<usize, BodyError> {
    let n = get_num(b, pos)?;
    if n > b.len() as u64 / min_bytes {
        return Err(BodyError::Truncated);
    }
    Ok(n as usize)
}

/// Encodes a group's body; `points` sorted by (series, time), each (series, time) once.
pub fn encode_body(points: &[(i64, i64, f64)], gateways: &[GatewayState], new_series: &[(i64, String, String)]) -> Vec<u8> {
    let with_runs = encode_with(points, gateways, new_series, true);
    // Runs of equal numbers can make a body shorter than the decoder's bound on the count of
    // points allows (it keeps corrupt input from allocating much): then written without them.
    if points.len() > codec::max_count(with_runs.len()) {
        return encode_with(points, gateways, new_series, false);
    }
    with_runs
}

fn encode_with(points: &[(i64, i64, f64)], gateways: &[GatewayState], new_series: &[(i64, String, String)], runs: bool) -> Vec<u8> {
    let mut b = vec![BODY_VERSION];
    put_varint(&mut b, new_series.len() as u64);
    for (id, meter, q) in new_series {
        put_varint(&mut b, *id as u64);
        put_bytes(&mut b, meter.as_bytes());
        put_bytes(&mut b, q.as_bytes());
    }
    put_varint(&mut b, gateways.len() as u64);
    for g in gateways {
        put_bytes(&mut b, g.gateway.as_bytes());
        put_bytes(&mut b, g.epoch.as_bytes());
        put_opt(&mut b, g.first_ms);
        put_opt(&mut b, g.last_ms);
        put_varint(&mut b, g.ranges.len() as u64);
        for &(a, z) in &g.ranges {
            put_varint(&mut b, a);
            put_varint(&mut b, z.saturating_sub(a));
        }
    }
    let series: Vec<&[(i64, i64, f64)]> = points.chunk_by(|a, b| a.0 == b.0).collect();
    put_varint(&mut b, series.len() as u64);
    let mut w = BitWriter::new();
    w.runs = runs;
    // The columns of the series (each packed: a run of equal numbers takes a few bits): ids
    // less the previous id, counts, first times less the previous series', first steps less
    // the previous series' (series of one reading have none).
    let mut prev = (0i64, 0i64, 0i64);
    let (mut ids, mut counts, mut firsts, mut steps) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in &series {
        ids.push(s[0].0.wrapping_sub(prev.0));
        counts.push(s.len() as i64);
        firsts.push(s[0].1.wrapping_sub(prev.1));
        prev.0 = s[0].0;
        prev.1 = s[0].1;
        if let Some(next) = s.get(1) {
            let step = next.1.wrapping_sub(s[0].1);
            steps.push(step.wrapping_sub(prev.2));
            prev.2 = step;
        }
    }
    for col in [&ids, &counts, &firsts, &steps] {
        put_column(&mut w, col);
    }
    // Per series: the deltas-of-deltas of its times after the first step, then its values.
    let (mut ts, mut vs) = (Vec::new(), Vec::new());
    for s in &series {
        ts.clear();
        vs.clear();
        ts.extend(s.iter().map(|p| p.1));
        vs.extend(s.iter().map(|p| p.2));
        let dd = codec::dod(&ts);
        codec::pack_for(&mut w, dd.get(1..).unwrap_or(&[]));
        put_values(&mut w, &vs);
    }
    b.extend(w.finish());
    b
}

/// A column of the series: the first number alone (it is unlike the others: an id, a time),
/// then the others packed.
fn put_column(w: &mut BitWriter, col: &[i64]) {
    if let Some((first, rest)) = col.split_first() {
        codec::put_signed(w, *first);
        codec::pack_for(w, rest);
    }
}

fn get_column(r: &mut BitReader<'_>, n: usize) -> Result<Vec<i64>, BodyError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(n);
    out.push(codec::get_signed(r)?);
    out.extend(codec::unpack_for(r, n - 1)?);
    Ok(out)
}

/// A series' values: 1 bit; 0, decimal integers `x / 10^e` (5 bits `e`, 2 bits of mode: 0 the
/// first number alone and the deltas packed, 1 the first and the first delta alone and the
/// deltas-of-deltas packed, 2 the numbers packed), whichever is shortest (a chunk's modes, with
/// the first number in as many bits as it needs: a group holds short runs); 1, a chunk's values
/// ([`codec::put_values`]: XOR of the bits for values that are not short decimals).
fn put_values(w: &mut BitWriter, values: &[f64]) {
    let Some((e, xs)) = codec::as_decimals(values) else {
        w.put(1, 1);
        codec::put_values(w, values);
        return;
    };
    w.put(0, 1);
    w.put(u64::from(e), 5);
    let d1 = codec::plain_deltas(&xs);
    let d2 = codec::dod(&xs);
    let first = 7 + 64 - zigzag(xs[0]).leading_zeros() as u64;
    let cost = [first + codec::for_bits(&d1), first + codec::dod_bits(&d2), codec::for_bits(&xs)];
    let mode = (0..3).min_by_key(|&m| cost[m]).unwrap_or(2);
    w.put(mode as u64, 2);
    match mode {
        0 => {
            codec::put_signed(w, xs[0]);
            codec::pack_for(w, &d1);
        }
        1 => {
            codec::put_signed(w, xs[0]);
            codec::put_dod(w, &d2);
        }
        _ => codec::pack_for(w, &xs),
    }
}

fn get_values(r: &mut BitReader<'_>, n: usize) -> Result<Vec<f64>, BodyError> {
    if r.get(1)? == 1 {
        return Ok(codec::get_values(r, n, false)?);
    }
    let e = r.get(5)? as i32;
    let xs = match r.get(2)? {
        0 => {
            let x0 = codec::get_signed(r)?;
            codec::undo_plain_deltas(x0, &codec::unpack_for(r, n - 1)?)
        }
        1 => {
            let x0 = codec::get_signed(r)?;
            codec::undo_dod(x0, &codec::get_dod(r, n - 1)?)
        }
        2 => codec::unpack_for(r, n)?,
        m => return Err(BodyError::Codec(CodecError::Mode(m))),
    };
    let p = 10f64.powi(e);
    Ok(xs.into_iter().map(|x| x as f64 / p).collect())
}

/// Decodes a body made by [`encode_body`]. Bounded: corrupt input gives an error, never a
/// panic or an allocation beyond a small multiple of what the input could hold.
pub fn decode_body(b: &[u8]) -> Result<Body, BodyError> {
    match b.first() {
        Some(&BODY_VERSION) => {}
        Some(&v) => return Err(BodyError::Version(v)),
        None => return Err(BodyError::Truncated),
    }
    let mut pos = 1;
    // Every new series takes at least 3 bytes, a gateway state 5, a range 2.
    let nn = get_count(b, &mut pos, 3)?;
    let mut new_series = Vec::with_capacity(nn);
    for _ in 0..nn {
        let id = get_num(b, &mut pos)? as i64;
        new_series.push((id, get_str(b, &mut pos)?, get_str(b, &mut pos)?));
    }
    let ng = get_count(b, &mut pos, 5)?;
    let mut gateways = Vec::with_capacity(ng);
    for _ in 0..ng {
        let (gateway, epoch) = (get_str(b, &mut pos)?, get_str(b, &mut pos)?);
        let (first_ms, last_ms) = (get_opt(b, &mut pos)?, get_opt(b, &mut pos)?);
        let nr = get_count(b, &mut pos, 2)?;
        let mut ranges = Vec::with_capacity(nr);
        for _ in 0..nr {
            let (a, len) = (get_num(b, &mut pos)?, get_num(b, &mut pos)?);
            ranges.push((a, a.checked_add(len).ok_or(BodyError::Truncated)?));
        }
        gateways.push(GatewayState { gateway, epoch, first_ms, last_ms, ranges });
    }
    let ns = usize::try_from(get_num(b, &mut pos)?).map_err(|_| BodyError::Truncated)?;
    let bound = codec::max_count(b.len());
    if ns > bound {
        return Err(BodyError::Truncated);
    }
    let mut r = BitReader { b: &b[pos..], pos: 0, radix: true };
    let ids = get_column(&mut r, ns)?;
    let counts = get_column(&mut r, ns)?;
    let mut total = 0usize;
    for &n in &counts {
        total = usize::try_from(n).ok().filter(|&n| n > 0).and_then(|n| total.checked_add(n)).filter(|&t| t <= bound).ok_or(BodyError::Truncated)?;
    }
    let firsts = get_column(&mut r, ns)?;
    let steps = get_column(&mut r, counts.iter().filter(|&&n| n > 1).count())?;
    let mut points = Vec::with_capacity(total);
    let (mut sid, mut t0, mut step) = (0i64, 0i64, 0i64);
    let mut steps = steps.into_iter();
    for ((&id, &n), &first) in ids.iter().zip(&counts).zip(&firsts) {
        let n = n as usize;
        sid = sid.wrapping_add(id);
        t0 = t0.wrapping_add(first);
        let mut dd = Vec::with_capacity(n - 1);
        if n > 1 {
            step = step.wrapping_add(steps.next().ok_or(BodyError::Truncated)?);
            dd.push(step);
            dd.extend(codec::unpack_for(&mut r, n - 2)?);
        }
        let ts = codec::undo_dod(t0, &dd);
        let vs = get_values(&mut r, n)?;
        points.extend(ts.into_iter().zip(vs).map(|(t, v)| (sid, t, v)));
    }
    Ok(Body { points, gateways, new_series })
}

/// A record framed for the file: length, checksum, id, body.
pub fn frame(id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&((8 + body.len()) as u32).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&id.to_le_bytes());
    h.update(body);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The record at the start of `b`, if one is there whole and its checksum matches: its id, its
/// body, and its length on disk.
pub fn read_record(b: &[u8]) -> Option<(u64, &[u8], usize)> {
    let len = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    if !(8..=MAX_RECORD).contains(&len) {
        return None;
    }
    let crc = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?);
    let rest = b.get(8..8 + len)?;
    if crc32fast::hash(rest) != crc {
        return None;
    }
    let id = u64::from_le_bytes(rest[0..8].try_into().ok()?);
    Some((id, &rest[8..], 8 + len))
}

/// What a scan of the log found.
#[derive(Debug, Default)]
pub struct Scan {
    /// (id, body) of every record after the position, in order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Bytes cut from a torn tail.
    pub truncated_bytes: u64,
    /// The last record's id (the position when there is none after it).
    pub last_id: u64,
}

/// Scans the records of one file's bytes: the valid ones in order, and where the valid part
/// ends. `Err` names the offset of a bad record that a valid one follows.
/// The valid records of a file's bytes, (id, body start, body end), and where they end.
type Found = (Vec<(u64, usize, usize)>, usize);

fn scan_bytes(data: &[u8], after_id: Option<u64>, position: u64) -> Result<Found, (u64, String)> {
    let mut out: Vec<(u64, usize, usize)> = Vec::new();
    let mut at = 0usize;
    let mut prev = after_id;
    while at < data.len() {
        match read_record(&data[at..]) {
            // Ids follow each other; before the position (flushed records, a file whose deletion
            // was lost) a gap is harmless, and the scan checks the ids after it.
            Some((id, _, n)) if prev.is_none_or(|p| id == p + 1 || (p <= position && id > p)) => {
                out.push((id, at + HEADER, at + n));
                prev = Some(id);
                at += n;
            }
            Some((id, _, _)) => return Err((at as u64, format!("record {id} follows record {}", prev.unwrap_or(0)))),
            None => {
                // A valid record further on: this one is damaged, not torn.
                let later = (at + 1..data.len()).find(|&k| read_record(&data[k..]).is_some_and(|(id, _, _)| prev.is_none_or(|p| id > p)));
                if let Some(k) = later {
                    return Err((at as u64, format!("a damaged record before a valid one at byte {k}")));
                }
                return Ok((out, at));
            }
        }
    }
    Ok((out, at))
}

/// The log files in `dir`, by their first id.
fn files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let io = |source| LogError::Io { path: dir.to_path_buf(), source };
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let e = e.map_err(io)?;
        let name = e.file_name();
        let Some(first) = name.to_str().and_then(|n| n.strip_suffix(".log")).and_then(|n| n.parse::<u64>().ok()) else { continue };
        out.push((first, e.path()));
    }
    out.sort();
    Ok(out)
}

fn file_name(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.log"))
}

/// Reads every log file in `dir`: the records after `position` (the last id a flush covered);
/// a torn tail of the last file is cut off (`truncate`) or only counted.
pub fn scan(dir: &Path, position: u64, truncate: bool) -> Result<Scan, LogError> {
    let mut scan = Scan { last_id: position, ..Scan::default() };
    let all = files(dir)?;
    let mut prev: Option<u64> = None;
    for (i, (_, path)) in all.iter().enumerate() {
        let data = std::fs::read(path).map_err(|source| LogError::Io { path: path.clone(), source })?;
        let (recs, end) = scan_bytes(&data, prev, position).map_err(|(offset, what)| LogError::Corrupt { path: path.clone(), offset, what })?;
        if end < data.len() {
            if i + 1 < all.len() {
                return Err(LogError::Corrupt { path: path.clone(), offset: end as u64, what: "a damaged record in a log file that is not the last".into() });
            }
            scan.truncated_bytes += (data.len() - end) as u64;
            tracing::warn!(file = %path.display(), offset = end, bytes = data.len() - end, "the store's log ends in a torn record (a crash during an append, never acknowledged); cut off");
            if truncate {
                let f = std::fs::OpenOptions::new().write(true).open(path).map_err(|source| LogError::Io { path: path.clone(), source })?;
                f.set_len(end as u64).and_then(|()| f.sync_all()).map_err(|source| LogError::Io { path: path.clone(), source })?;
            }
        }
        for (id, from, to) in recs {
            prev = Some(id);
            if id > position {
                if id != scan.last_id + 1 {
                    return Err(LogError::Corrupt { path: path.clone(), offset: (from - HEADER) as u64, what: format!("record {id} after {} (records missing)", scan.last_id) });
                }
                scan.records.push((id, data[from..to].to_vec()));
                scan.last_id = id;
            }
        }
    }
    Ok(scan)
}

/// The writer's side of the log: the file being appended to.
pub struct Log {
    dir: PathBuf,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes of valid records in `file`.
    len: u64,
    /// The id of the last record written.
    last_id: u64,
    /// Set when a failed append could not be cut back: nothing more is appended.
    broken: Option<String>,
}

impl Log {
    /// Opens the log in `dir` for appending after a [`scan`] that found `last_id`: appends to the
    /// newest file, or starts one.
    pub fn open(dir: &Path, last_id: u64) -> Result<Log, LogError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LogError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        match files(dir)?.pop() {
            Some((_, path)) => {
                let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).map_err(io(&path))?;
                let len = file.metadata().map_err(io(&path))?.len();
                Ok(Log { dir: dir.to_path_buf(), path, file: Arc::new(file), len, last_id, broken: None })
            }
            None => {
                let (path, file) = new_file(dir, last_id + 1)?;
                Ok(Log { dir: dir.to_path_buf(), path, file: Arc::new(file), len: 0, last_id, broken: None })
            }
        }
    }

    /// Appends a record (not synced: the syncer syncs [`Log::file`] before answering); returns
    /// its id. A failed append is cut back, so that the next one follows the last good record.
    pub fn append(&mut self, body: &[u8]) -> std::io::Result<u64> {
        if let Some(b) = &self.broken {
            return Err(std::io::Error::other(b.clone()));
        }
        let id = self.last_id + 1;
        let rec = frame(id, body);
        if let Err(e) = self.file.write_all_at(&rec, self.len) {
            if let Err(cut) = self.file.set_len(self.len) {
                let msg = format!("the store's log file {} could not be cut back after a failed append ({cut}): the store refuses writes until energyd is restarted", self.path.display());
                tracing::error!("{msg}");
                self.broken = Some(msg);
            }
            return Err(e);
        }
        self.len += rec.len() as u64;
        self.last_id = id;
        Ok(id)
    }

    /// The file being appended to, for the syncer.
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Removes the last record appended (its group's transaction failed): the log is as before
    /// it. A cut that fails leaves the log refusing appends until a restart.
    pub fn undo_last(&mut self, record_len: u64) -> std::io::Result<()> {
        let len = self.len.saturating_sub(record_len);
        if let Err(e) = self.file.set_len(len) {
            let msg = format!("the store's log file {} could not be cut back after a failed commit ({e}): the store refuses writes until energyd is restarted", self.path.display());
            tracing::error!("{msg}");
            self.broken = Some(msg);
            return Err(e);
        }
        self.len = len;
        self.last_id -= 1;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Every record is covered by a durable flush: a new file for the next ones, the others
    /// deleted (a deletion lost in a crash only leaves records that the position skips).
    pub fn rotate(&mut self) -> Result<(), LogError> {
        if self.len == 0 {
            return Ok(());
        }
        let (path, file) = new_file(&self.dir, self.last_id + 1)?;
        let old = std::mem::replace(&mut self.path, path);
        self.file = Arc::new(file);
        self.len = 0;
        for (_, p) in files(&self.dir)? {
            if p != self.path {
                if let Err(e) = std::fs::remove_file(&p) {
                    tracing::warn!(file = %p.display(), "deleting a flushed log file failed: {e}");
                }
            }
        }
        drop(old);
        Ok(())
    }
}

/// Creates a log file for records from `first` on, its directory entry synced (the file's own
/// syncs then make its records durable).
fn new_file(dir: &Path, first: u64) -> Result<(PathBuf, File), LogError> {
    let path = file_name(dir, first);
    let io = |source| LogError::Io { path: file_name(dir, first), source };
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).map_err(io)?;
    file.flush().map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|source| LogError::Io { path: dir.to_path_buf(), source })?;
    Ok((path, file))
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
