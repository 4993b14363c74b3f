//! One connection to a field bus: a serial port (RS-485) or a TCP connection to a serial server
//! in transparent mode (raw frames over TCP). One request in flight; before each request the
//! line has been quiet for the transport's inter-frame gap; the answer is the first frame that
//! the caller accepts before the deadline. Frames with a wrong checksum or end byte are dropped
//! and counted; frames the caller does not accept (the echo of the request on a two-wire line, a
//! late answer to an earlier request) are skipped.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame::Scan;
use crate::transport::{ReadError, Transport};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct FieldLink {
    io: Box<dyn Io>,
    gap: Duration,
    last: Option<Instant>,
    buf: Vec<u8>,
    /// Frames dropped for a wrong checksum or end byte since the link was opened.
    pub bad_frames: u64,
}

/// Opens `transport` for raw frames. `Tcp` is a serial server in transparent mode.
pub async fn connect(transport: &Transport, timeout: Duration) -> Result<FieldLink, ReadError> {
    let timed_out = || ReadError::Timeout(timeout.as_millis() as u64);
    let io: Box<dyn Io> = match transport {
        Transport::Tcp(endpoint) | Transport::RtuOverTcp(endpoint) => {
            let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(endpoint.as_str()))
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| ReadError::Transport(format!("connect {endpoint}: {e}")))?;
            let _ = stream.set_nodelay(true);
            Box::new(stream)
        }
        Transport::Serial(line) => Box::new(crate::transport::open_serial(line, timeout)?),
    };
    Ok(FieldLink { io, gap: Duration::ZERO, last: None, buf: Vec::with_capacity(256), bad_frames: 0 })
}

impl FieldLink {
    /// Sets the least quiet time between the end of an answer and the next request.
    pub fn with_gap(mut self, gap: Duration) -> FieldLink {
        self.gap = gap;
        self
    }

    /// Sends `request` and returns what `accept` makes of the first frame it accepts.
    /// `scan` delimits frames of the protocol; `accept` gets each frame's bytes (from its `68`
    /// to its `16`) and returns `Err(reason)` for a frame that is not the answer.
    pub async fn exchange<T>(
        &mut self,
        request: &[u8],
        timeout: Duration,
        delay: Duration,
        scan: fn(&[u8]) -> Scan,
        mut accept: impl FnMut(&[u8]) -> Result<T, String>,
    ) -> Result<T, ReadError> {
        if let Some(due) = self.last.map(|l| l + self.gap.max(delay)).filter(|&d| d > Instant::now()) {
            tokio::time::sleep_until(due.into()).await;
        }
        // Whatever arrived since the last answer (a late reply, noise) is not this answer.
        self.buf.clear();
        let deadline = tokio::time::Instant::now() + timeout;
        let written = tokio::time::timeout_at(deadline, async {
            self.io.write_all(request).await?;
            self.io.flush().await
        })
        .await;
        match written {
            Err(_) => {
                self.last = Some(Instant::now());
                return Err(ReadError::Timeout(timeout.as_millis() as u64));
            }
            Ok(Err(e)) => return Err(ReadError::Transport(format!("write: {e}"))),
            Ok(Ok(())) => {}
        }
        let mut ignored: Option<String> = None;
        let mut bad: Option<String> = None;
        let mut chunk = [0u8; 256];
        let result = loop {
            // Take every complete frame out of the buffer first.
            loop {
                match scan(&self.buf) {
                    Scan::Incomplete => break,
                    Scan::Bad { end, reason } => {
                        self.bad_frames += 1;
                        tracing::debug!("dropped a frame: {reason}");
                        bad = Some(reason);
                        self.buf.drain(..end.min(self.buf.len()));
                    }
                    Scan::Frame { start, end } => {
                        let r = accept(&self.buf[start..end]);
                        self.buf.drain(..end);
                        match r {
                            Ok(v) => {
                                self.last = Some(Instant::now());
                                return Ok(v);
                            }
                            Err(why) => ignored = Some(why),
                        }
                    }
                }
            }
            if self.buf.len() > 4096 {
                // Noise without a frame: keep the tail, where a frame may be starting.
                let cut = self.buf.len() - 512;
                self.buf.drain(..cut);
            }
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) => break None,
                Ok(Ok(0)) => break Some(ReadError::Transport("the connection was closed by the other end".into())),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => break Some(ReadError::Transport(format!("read: {e}"))),
            }
        };
        self.last = Some(Instant::now());
        Err(result.unwrap_or_else(|| match (bad, ignored) {
            (Some(b), _) => ReadError::Frame(format!("no valid answer in {} ms; a frame was dropped: {b}", timeout.as_millis())),
            (None, Some(i)) => ReadError::Frame(format!("no valid answer in {} ms; a frame was not the answer: {i}", timeout.as_millis())),
            (None, None) => ReadError::Timeout(timeout.as_millis() as u64),
        }))
    }
}
