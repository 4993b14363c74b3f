//! The record format: `len: u32 LE | crc32(payload): u32 LE | payload`, with
//! `payload = seq: u64 LE | body`.

/// Bytes of a record's header (length and checksum).
pub const HEADER: usize = 8;
/// The largest payload a record may have.
pub const MAX_RECORD: u32 = 16 << 20;
/// The smallest record: header and sequence number, an empty body.
pub const MIN_RECORD: u64 = HEADER as u64 + 8;

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub body: Vec<u8>,
}

/// The bytes of the record `seq` holding `body`.
pub fn encode(seq: u64, body: &[u8]) -> Vec<u8> {
    let len = body.len() + 8;
    let mut payload = Vec::with_capacity(len);
    payload.extend_from_slice(&seq.to_le_bytes());
    payload.extend_from_slice(body);
    let mut rec = Vec::with_capacity(HEADER + len);
    rec.extend_from_slice(&(len as u32).to_le_bytes());
    rec.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    rec.extend_from_slice(&payload);
    rec
}

/// Reads the record at `at` of `data` (offsets relative to `data`): (sequence number, record
/// length) if its length fits and its checksum matches.
pub fn frame_at(data: &[u8], at: usize) -> Option<(u64, usize)> {
    let header = data.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?);
    if !(8..=MAX_RECORD).contains(&len) {
        return None;
    }
    let payload = data.get(at + HEADER..at + HEADER + len as usize)?;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    (crc32fast::hash(payload) == crc).then(|| (u64::from_le_bytes(payload[..8].try_into().unwrap_or_default()), HEADER + len as usize))
}

