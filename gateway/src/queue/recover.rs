//! Recovery at open: every segment is scanned; a torn tail is cut off, corrupt records are
//! cut out (the records after them are kept), and the sequence numbers lost are reported (see
//! [`super`] for the rules).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::segment::{io_err, sync_dir, QueueError, Segment};
use super::record::{frame_at, HEADER, MAX_RECORD, MIN_RECORD};

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

/// The segments as recovered, and the unacknowledged sequence numbers lost (ranges, sorted).
pub(super) struct Recovered {
    pub(super) segments: VecDeque<Segment>,
    pub(super) lost: Vec<(u64, u64)>,
}

/// Scans and repairs the segments `names` (first sequence number, path; sorted) of the queue in
/// `dir` whose acknowledged position is `acked`; counts what it found in `recovery`.
pub(super) fn recover_segments(
    dir: &Path,
    names: &[(u64, PathBuf)],
    acked: u64,
    recovery: &mut Recovery,
) -> Result<Recovered, QueueError> {
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
    Ok(Recovered { segments, lost })
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
    let clean = scan_in_order(&mut r, &mut scan);
    let pos = scan.good_len;
    if clean || pos >= file_len {
        return Ok(scan);
    }
    // A corrupt record at `pos`: the rest of the segment is read once (a segment is at most a
    // few MiB) and searched for the next record that can follow.
    let mut f = r.into_inner();
    f.seek(SeekFrom::Start(pos)).map_err(io_err(path))?;
    let mut rest = Vec::with_capacity((file_len - pos) as usize);
    f.read_to_end(&mut rest).map_err(io_err(path))?;
    scan_past_corruption(&mut scan, &rest, pos, limit, path);
    Ok(scan)
}

/// Reads records one at a time while each is whole, valid and the next in sequence; sets
/// `good_len` to where that stopped. `true` when the segment ended cleanly.
fn scan_in_order(r: &mut impl Read, scan: &mut Scan) -> bool {
    let file_len = scan.file_len;
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
    clean
}

/// Searches `rest` (the segment from `pos`, where a corrupt record starts) for each next record
/// that can follow, counting the damaged byte ranges and the sequence numbers lost in them.
fn scan_past_corruption(scan: &mut Scan, rest: &[u8], pos: u64, limit: u64, path: &Path) {
    let mut at = 0usize;
    while at < rest.len() {
        if let Some((seq, len)) = frame_at(rest, at).filter(|&(seq, _)| seq >= scan.next_seq && seq < limit) {
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
                if let Some((seq, len)) = frame_at(rest, p) {
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
