//! The queue's tests: appends, reads and acknowledgements across reopenings, torn and corrupt
//! segments, epochs, the bound, and a property test of random operations against a model.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use proptest::prelude::*;

use super::*;

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
