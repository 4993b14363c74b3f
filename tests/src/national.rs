//! A national-protocol energy data collector (能耗数据采集器) of its own, for the end-to-end
//! tests of issue 21: frames and XML written by hand here, not with the daemon's code, so that
//! a mistake in the daemon's framing or messages is not repeated on both sides.

use std::time::Duration;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The two frame layouts of the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// 68 68 16 16 | length (4, big-endian, sequence + payload) | sequence (4) | payload | CRC-16/MODBUS (2, big-endian) | 55 AA 55 AA
    Guideline,
    /// 8B AE 9B | type (1) | length (4, little-endian, payload) | payload
    Node,
}

/// One value: collector meter id, function id, item code, value.
#[derive(Debug, Clone)]
pub struct Value {
    pub meter: String,
    pub function: String,
    pub coding: String,
    pub value: f64,
}

pub struct Collector {
    stream: Box<dyn Stream>,
    framing: Framing,
    aes: Option<([u8; 16], [u8; 16])>,
    pub building: String,
    pub gateway: String,
    seq: u32,
    buf: Vec<u8>,
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for b in bytes {
        crc ^= u16::from(*b);
        for _ in 0..8 {
            let lsb = crc & 1;
            crc >>= 1;
            if lsb == 1 {
                crc ^= 0xA001;
            }
        }
    }
    crc
}

/// MD5 as lower-case hex.
pub fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The text of `<tag>` in `xml` (first occurrence).
pub fn tag<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

impl Collector {
    pub async fn connect(addr: &str, framing: Framing, aes: Option<([u8; 16], [u8; 16])>, building: &str, gateway: &str) -> std::io::Result<Collector> {
        let stream = TcpStream::connect(addr).await?;
        Ok(Collector { stream: Box::new(stream), framing, aes, building: building.into(), gateway: gateway.into(), seq: 0, buf: Vec::new() })
    }

    /// Over TLS, trusting the certificate in PEM file `ca` (for the name `127.0.0.1`).
    pub async fn connect_tls(addr: &str, ca: &std::path::Path, framing: Framing, building: &str, gateway: &str) -> std::io::Result<Collector> {
        use rustls::pki_types::pem::PemObject as _;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).map_err(std::io::Error::other)? {
            roots.add(c.map_err(std::io::Error::other)?).map_err(std::io::Error::other)?;
        }
        let cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(std::io::Error::other)?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp).await?;
        Ok(Collector { stream: Box::new(tls), framing, aes: None, building: building.into(), gateway: gateway.into(), seq: 0, buf: Vec::new() })
    }

    fn frame(&mut self, payload: &[u8]) -> Vec<u8> {
        self.seq += 1;
        let mut out = Vec::new();
        match self.framing {
            Framing::Guideline => {
                out.extend_from_slice(&[0x68, 0x68, 0x16, 0x16]);
                out.extend_from_slice(&((payload.len() + 4) as u32).to_be_bytes());
                let body_at = out.len();
                out.extend_from_slice(&self.seq.to_be_bytes());
                out.extend_from_slice(payload);
                let crc = crc16(&out[body_at..]);
                out.extend_from_slice(&crc.to_be_bytes());
                out.extend_from_slice(&[0x55, 0xAA, 0x55, 0xAA]);
            }
            Framing::Node => {
                out.extend_from_slice(&[0x8B, 0xAE, 0x9B, 0x01]);
                out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                out.extend_from_slice(payload);
            }
        }
        out
    }

    /// Sends a message (`<root>` and `<common>` added here).
    pub async fn send(&mut self, kind: &str, body: &str) -> std::io::Result<()> {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><root><common><building_id>{}</building_id><gateway_id>{}</gateway_id><type>{kind}</type></common>{body}</root>",
            self.building, self.gateway
        );
        let payload = match self.aes {
            Some((k, iv)) => cbc::Encryptor::<aes::Aes128>::new(&k.into(), &iv.into()).encrypt_padded_vec_mut::<Pkcs7>(xml.as_bytes()),
            None => xml.into_bytes(),
        };
        let f = self.frame(&payload);
        self.stream.write_all(&f).await?;
        self.stream.flush().await
    }

    /// The next message from the centre, as XML text; an error when the connection closes or
    /// nothing comes within 30 s.
    pub async fn recv(&mut self) -> std::io::Result<String> {
        loop {
            if let Some((payload, used)) = self.take_frame()? {
                self.buf.drain(..used);
                let plain = match self.aes {
                    Some((k, iv)) => cbc::Decryptor::<aes::Aes128>::new(&k.into(), &iv.into())
                        .decrypt_padded_vec_mut::<Pkcs7>(&payload)
                        .map_err(|_| std::io::Error::other("the centre's answer does not decrypt"))?,
                    None => payload,
                };
                return String::from_utf8(plain).map_err(std::io::Error::other);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut chunk)).await.map_err(|_| std::io::Error::other("no answer within 30 s"))??;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the centre closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn take_frame(&self) -> std::io::Result<Option<(Vec<u8>, usize)>> {
        let b = &self.buf;
        match self.framing {
            Framing::Guideline => {
                if b.len() < 12 {
                    return Ok(None);
                }
                if b[..4] != [0x68, 0x68, 0x16, 0x16] {
                    return Err(std::io::Error::other("bad header from the centre"));
                }
                let len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
                let total = 8 + len + 2 + 4;
                if b.len() < total {
                    return Ok(None);
                }
                let crc = u16::from_be_bytes([b[8 + len], b[9 + len]]);
                if crc != crc16(&b[8..8 + len]) || b[total - 4..total] != [0x55, 0xAA, 0x55, 0xAA] {
                    return Err(std::io::Error::other("bad CRC or tail from the centre"));
                }
                Ok(Some((b[12..8 + len].to_vec(), total)))
            }
            Framing::Node => {
                if b.len() < 8 {
                    return Ok(None);
                }
                if b[..3] != [0x8B, 0xAE, 0x9B] {
                    return Err(std::io::Error::other("bad header from the centre"));
                }
                let len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
                if b.len() < 8 + len {
                    return Ok(None);
                }
                Ok(Some((b[8..8 + len].to_vec(), 8 + len)))
            }
        }
    }

    /// The identity check with `key`: whether the centre answered pass.
    pub async fn login(&mut self, key: &str) -> std::io::Result<bool> {
        self.send("id_validate", "<id_validate operation=\"request\"/>").await?;
        let a = self.recv().await?;
        let seq = tag(&a, "sequence").ok_or_else(|| std::io::Error::other(format!("no sequence in {a}")))?.to_string();
        let md5 = md5_hex(&format!("{key}{seq}"));
        self.send("id_validate", &format!("<id_validate operation=\"md5\"><md5>{md5}</md5></id_validate>")).await?;
        let r = self.recv().await?;
        Ok(tag(&r, "result") == Some("pass"))
    }

    /// A heartbeat: the centre's time, `YYYYMMDDHHmmss`.
    pub async fn heartbeat(&mut self) -> std::io::Result<String> {
        self.send("heart_beat", "<heart_beat operation=\"notify\"/>").await?;
        let a = self.recv().await?;
        tag(&a, "time").map(str::to_string).ok_or_else(|| std::io::Error::other(format!("no time in {a}")))
    }

    /// A report (`operation` report or continuous) of `values` at `time`, in `packets` packets;
    /// each packet's acknowledgement is awaited before the next is sent. The acknowledgements.
    pub async fn report(&mut self, operation: &str, sequence: u32, time: &str, values: &[Value], packets: usize) -> std::io::Result<Vec<String>> {
        let per = values.len().div_ceil(packets.max(1)).max(1);
        let chunks: Vec<&[Value]> = values.chunks(per).collect();
        let total = chunks.len();
        let mut acks = Vec::new();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut meters = String::new();
            for v in chunk {
                meters.push_str(&format!("<meter id=\"{}\"><function id=\"{}\" coding=\"{}\" error=\"0\">{}</function></meter>", v.meter, v.function, v.coding, v.value));
            }
            let body = format!(
                "<data operation=\"{operation}\"><sequence>{sequence}</sequence><parser>yes</parser><time>{time}</time><total>{total}</total><current>{}</current>{meters}</data>",
                i + 1
            );
            self.send(operation, &body).await?;
            acks.push(self.recv().await?);
        }
        Ok(acks)
    }
}
