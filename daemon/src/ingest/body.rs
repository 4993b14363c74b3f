//! The one place a body is decompressed: HTTP bodies by their `Content-Encoding`, MQTT payloads
//! by their first bytes (gzip starts with 1f 8b; JSON never does). Within a size limit, so that a
//! small compressed body cannot grow into an unbounded one.

use std::borrow::Cow;
use std::io::Read;

/// Why a body could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body is not valid gzip: {0}")]
    BadGzip(std::io::Error),
    #[error("decompressed body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("content-encoding `{0}` is not supported (use gzip or none)")]
    Encoding(String),
}

impl BodyError {
    /// The metrics label (`energyd_ingest_rejected_total{reason}`).
    pub fn label(&self) -> &'static str {
        match self {
            BodyError::BadGzip(_) => "bad_gzip",
            BodyError::TooLarge { .. } => "too_large",
            BodyError::Encoding(_) => "bad_encoding",
        }
    }
}

/// Decompresses gzip `bytes`, refusing more than `limit` bytes out.
pub fn gunzip(bytes: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    let mut dec = flate2::read::GzDecoder::new(bytes).take(limit as u64 + 1);
    dec.read_to_end(&mut out).map_err(BodyError::BadGzip)?;
    if out.len() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(out)
}

/// gzip bodies start with 1f 8b; JSON never does.
pub fn gunzip_if_gzip(bytes: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, BodyError> {
    if bytes.len() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b {
        return Ok(Cow::Borrowed(bytes));
    }
    gunzip(bytes, limit).map(Cow::Owned)
}

/// A body as its `Content-Encoding` (absent, `identity` or `gzip`, any case) says.
pub fn decode<'a>(content_encoding: Option<&str>, bytes: &'a [u8], limit: usize) -> Result<Cow<'a, [u8]>, BodyError> {
    let enc = content_encoding.unwrap_or("").trim().to_ascii_lowercase();
    match enc.as_str() {
        "" | "identity" => Ok(Cow::Borrowed(bytes)),
        "gzip" => gunzip(bytes, limit).map(Cow::Owned),
        other => Err(BodyError::Encoding(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_is_opened_within_the_limit_and_named_otherwise() {
        let body = gz(b"{\"gateway\":\"g\"}");
        // 15 bytes out: within a limit of 15, over one of 14.
        assert_eq!(gunzip_if_gzip(&body, 15).unwrap().as_ref(), b"{\"gateway\":\"g\"}");
        assert_eq!(gunzip_if_gzip(&body, 14).unwrap_err().label(), "too_large");
        assert!(matches!(gunzip_if_gzip(b"{}", 1).unwrap(), Cow::Borrowed(_)));
        let e = gunzip(&[0x1f, 0x8b, 0, 0], 100).unwrap_err();
        assert_eq!(e.label(), "bad_gzip");
        assert!(e.to_string().starts_with("body is not valid gzip: "), "{e}");
        assert_eq!(decode(Some(" GZIP "), &body, 100).unwrap().as_ref(), b"{\"gateway\":\"g\"}");
        assert_eq!(decode(Some("identity"), b"x", 0).unwrap().as_ref(), b"x");
        let e = decode(Some("br"), b"x", 100).unwrap_err();
        assert_eq!((e.label(), e.to_string().as_str()), ("bad_encoding", "content-encoding `br` is not supported (use gzip or none)"));
    }
}
