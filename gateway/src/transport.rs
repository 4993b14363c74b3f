//! How the gateway reaches a device: Modbus TCP, Modbus RTU on a local serial port, or RTU
//! framing over a TCP connection to a serial server in transparent mode.
//!
//! Devices that share a transport endpoint share a bus ([`Transport::bus`]): one connection, one
//! request in flight at a time. On RTU the frames on the wire must be separated by at least
//! 3.5 characters of silence, which tokio-modbus does not enforce (its issue #180); the scheduler
//! keeps it with [`rtu_silence`].
//!
//! How a request can fail ([`ReadError`]) is defined here, with the links it fails on: the
//! Modbus and DL/T 645 / CJ/T 188 reads above use it, and the scheduler backs off by its kinds.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_modbus::client::Context;
use tokio_modbus::Slave;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// Why one request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("timeout after {0} ms")]
    Timeout(u64),
    #[error("transport: {0}")]
    Transport(String),
    #[error("device answered exception {0}")]
    Exception(String),
    #[error("short response: {got} of {want} registers")]
    Short { got: usize, want: u16 },
    /// Frames came back but none was a valid answer (wrong checksum: noise, or wrong baud rate
    /// or parity; or the answer to another request).
    #[error("{0}")]
    Frame(String),
}

impl ReadError {
    /// Label for the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            ReadError::Timeout(_) => "timeout",
            ReadError::Transport(_) => "transport",
            ReadError::Exception(_) => "exception",
            ReadError::Short { .. } => "short_response",
            ReadError::Frame(_) => "bad_frame",
        }
    }

    /// An error after which the connection cannot be trusted (a read that timed out may still
    /// be answered later; a transport error is a broken line).
    pub fn breaks_connection(&self) -> bool {
        matches!(self, ReadError::Timeout(_) | ReadError::Transport(_))
    }
}

/// Line settings of a serial port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialLine {
    pub path: String,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

/// One way of reaching devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Modbus TCP (MBAP framing) to `host:port`.
    Tcp(String),
    /// RTU framing (unit, PDU, CRC) over a TCP connection to `host:port`.
    RtuOverTcp(String),
    /// RTU on a local serial port.
    Serial(SerialLine),
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Tcp(a) => write!(f, "tcp://{a}"),
            Transport::RtuOverTcp(a) => write!(f, "rtu-over-tcp://{a}"),
            Transport::Serial(s) => write!(f, "serial://{}", s.path),
        }
    }
}

impl Transport {
    /// The bus this transport puts a device on: devices with equal keys share one connection and
    /// are read one request at a time. (One endpoint used with both framings is a config error.)
    pub fn bus(&self) -> String {
        self.to_string()
    }

    /// True for RTU framing, where frames must be separated by silence on the wire.
    pub fn is_rtu(&self) -> bool {
        !matches!(self, Transport::Tcp(_))
    }

    /// The least silence between two frames on this transport, before any configured delay.
    pub fn silence(&self, min: Duration) -> Duration {
        match self {
            Transport::Serial(s) => rtu_silence(s.baud).max(min),
            // No baud rate is known behind a serial server: the configured delays apply.
            Transport::RtuOverTcp(_) | Transport::Tcp(_) => Duration::ZERO,
        }
    }

    /// Opens the transport within `timeout`.
    pub async fn connect(&self, timeout: Duration) -> Result<Context, ReadError> {
        let timed_out = || ReadError::Timeout(timeout.as_millis() as u64);
        match self {
            Transport::Tcp(endpoint) => {
                let addr = resolve(endpoint, timeout).await?;
                tokio::time::timeout(timeout, tokio_modbus::client::tcp::connect(addr))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| ReadError::Transport(format!("connect {endpoint}: {e}")))
            }
            Transport::RtuOverTcp(endpoint) => {
                let addr = resolve(endpoint, timeout).await?;
                let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| ReadError::Transport(format!("connect {endpoint}: {e}")))?;
                let _ = stream.set_nodelay(true);
                Ok(tokio_modbus::client::rtu::attach_slave(stream, Slave(1)))
            }
            Transport::Serial(line) => Ok(tokio_modbus::client::rtu::attach_slave(open_serial(line, timeout)?, Slave(1))),
        }
    }
}

/// Opens a local serial port with its line settings.
pub fn open_serial(line: &SerialLine, timeout: Duration) -> Result<tokio_serial::SerialStream, ReadError> {
    let builder = tokio_serial::new(&line.path, line.baud)
        .parity(match line.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .data_bits(if line.data_bits == 7 { tokio_serial::DataBits::Seven } else { tokio_serial::DataBits::Eight })
        .stop_bits(if line.stop_bits == 2 { tokio_serial::StopBits::Two } else { tokio_serial::StopBits::One })
        .timeout(timeout);
    tokio_serial::SerialStream::open(&builder).map_err(|e| ReadError::Transport(format!("open serial port {}: {e}", line.path)))
}

async fn resolve(endpoint: &str, timeout: Duration) -> Result<SocketAddr, ReadError> {
    if let Ok(a) = endpoint.parse() {
        return Ok(a);
    }
    tokio::time::timeout(timeout, tokio::net::lookup_host(endpoint))
        .await
        .map_err(|_| ReadError::Timeout(timeout.as_millis() as u64))?
        .map_err(|e| ReadError::Transport(format!("cannot resolve {endpoint}: {e}")))?
        .next()
        .ok_or_else(|| ReadError::Transport(format!("{endpoint} resolves to no address")))
}

/// The RTU inter-frame silence for `baud`: 3.5 characters of 11 bits (start, 8 data, parity or
/// second stop, stop), and a fixed 1.75 ms above 19200 baud, as the Modbus serial line
/// specification (V1.02, 2.5.1.1) says.
pub fn rtu_silence(baud: u32) -> Duration {
    if baud > 19_200 {
        return Duration::from_micros(1750);
    }
    let micros = 3.5 * 11.0 * 1e6 / f64::from(baud.max(1));
    Duration::from_micros(micros.ceil() as u64)
}

/// Checks a `host:port` endpoint's shape; `None` when it is fine.
pub fn check_endpoint(endpoint: &str) -> Option<String> {
    let ok = endpoint.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    (!ok).then(|| format!("`{endpoint}` is not host:port"))
}

/// Baud rates serial Modbus devices use.
pub const BAUD_RATES: [u32; 9] = [1200, 2400, 4800, 9600, 19_200, 38_400, 57_600, 115_200, 230_400];

/// Checks serial line settings; every problem, one per entry.
pub fn check_line(line: &SerialLine) -> Vec<String> {
    let mut errors = Vec::new();
    if line.path.trim().is_empty() {
        errors.push("serial port path is empty".to_string());
    }
    if !BAUD_RATES.contains(&line.baud) {
        errors.push(format!("baud {} is not one of {BAUD_RATES:?}", line.baud));
    }
    if !matches!(line.data_bits, 7 | 8) {
        errors.push(format!("data_bits {} must be 7 or 8 (RTU uses 8)", line.data_bits));
    }
    if !matches!(line.stop_bits, 1 | 2) {
        errors.push(format!("stop_bits {} must be 1 or 2", line.stop_bits));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtu_silence_follows_the_baud_rate_and_is_fixed_above_19200() {
        // 3.5 x 11 bits at 9600 baud = 4.0104 ms.
        assert_eq!(rtu_silence(9600), Duration::from_micros(4011));
        assert_eq!(rtu_silence(19_200), Duration::from_micros(2006));
        assert_eq!(rtu_silence(1200), Duration::from_micros(32_084));
        assert_eq!(rtu_silence(38_400), Duration::from_micros(1750));
        assert_eq!(rtu_silence(115_200), Duration::from_micros(1750));
    }

    #[test]
    fn a_configured_minimum_raises_the_silence() {
        let line = SerialLine { path: "/dev/ttyUSB0".into(), baud: 115_200, parity: Parity::None, data_bits: 8, stop_bits: 1 };
        assert_eq!(Transport::Serial(line.clone()).silence(Duration::from_millis(5)), Duration::from_millis(5));
        assert_eq!(Transport::Serial(line).silence(Duration::ZERO), Duration::from_micros(1750));
        assert_eq!(Transport::Tcp("a:1".into()).silence(Duration::from_millis(5)), Duration::ZERO);
    }

    #[test]
    fn endpoints_and_lines_are_checked() {
        assert_eq!(check_endpoint("10.0.0.1:502"), None);
        assert_eq!(check_endpoint("meter.local:4001"), None);
        assert!(check_endpoint("10.0.0.1").is_some());
        assert!(check_endpoint(":502").is_some());
        assert!(check_endpoint("h:0").is_some());
        let bad = SerialLine { path: String::new(), baud: 9601, parity: Parity::Even, data_bits: 5, stop_bits: 3 };
        assert_eq!(check_line(&bad).len(), 4);
    }

    #[test]
    fn each_endpoint_is_its_own_bus() {
        assert_eq!(Transport::RtuOverTcp("h:4001".into()).bus(), "rtu-over-tcp://h:4001");
        assert_ne!(Transport::Tcp("h:502".into()).bus(), Transport::Tcp("h:503".into()).bus());
    }
}
