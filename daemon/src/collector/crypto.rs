//! The protocol's cryptography: MD5 of the identity check and AES-128-CBC of the payload.
//!
//! Identity: the collector proves it knows the shared key by answering MD5(key + sequence) to the
//! centre's random sequence (shared reference, china-field-protocols.md; the usky-modules
//! service-ems README describes the same MD5 identity check and AES payload for a city
//! platform). The centre must therefore hold the key itself, not a hash of it: this scheme
//! cannot store keys hashed (see docs/national-protocol.md, and the 0600 check of the key file).
//!
//! Payload: AES-128-CBC with a per-collector key and IV. Padding is PKCS#7 by default; the Ningbo
//! rules of 2018 (甬 DX-05, appendix E, 公共建筑能耗数据上传接口协议) pad with zeros
//! (`PaddingMode.Zeros`), so `zeros` is a setting.

use aes::Aes128;
use cbc::cipher::block_padding::{Pkcs7, ZeroPadding};
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use md5::{Digest, Md5};

/// How the plaintext is padded to whole blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    #[default]
    Pkcs7,
    Zeros,
}

/// A collector's AES key and IV.
#[derive(Clone, PartialEq, Eq)]
pub struct Aes {
    pub key: [u8; 16],
    pub iv: [u8; 16],
    pub padding: Padding,
}

impl std::fmt::Debug for Aes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aes { .. }")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the encrypted payload is {0} bytes, not a whole number of 16-byte blocks")]
    NotBlocks(usize),
    #[error("the decrypted payload's padding is wrong (wrong key or IV?)")]
    Padding,
    #[error("{what} must be 16 bytes, as 32 hex digits or 16 characters (got {len})")]
    KeyLength { what: &'static str, len: usize },
}

impl Aes {
    /// A key or IV from configuration: 32 hex digits, or 16 characters taken as bytes (sites
    /// write both).
    pub fn key_bytes(what: &'static str, s: &str) -> Result<[u8; 16], CryptoError> {
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            let v = super::frame::parse_hex(s).map_err(|_| CryptoError::KeyLength { what, len: s.len() })?;
            let mut out = [0u8; 16];
            out.copy_from_slice(&v);
            return Ok(out);
        }
        let b = s.as_bytes();
        if b.len() != 16 {
            return Err(CryptoError::KeyLength { what, len: b.len() });
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let enc = cbc::Encryptor::<Aes128>::new(&self.key.into(), &self.iv.into());
        match self.padding {
            Padding::Pkcs7 => enc.encrypt_padded_vec_mut::<Pkcs7>(plain),
            Padding::Zeros => enc.encrypt_padded_vec_mut::<ZeroPadding>(plain),
        }
    }

    pub fn decrypt(&self, cipher: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if cipher.is_empty() || cipher.len() % 16 != 0 {
            return Err(CryptoError::NotBlocks(cipher.len()));
        }
        let dec = cbc::Decryptor::<Aes128>::new(&self.key.into(), &self.iv.into());
        match self.padding {
            Padding::Pkcs7 => dec.decrypt_padded_vec_mut::<Pkcs7>(cipher).map_err(|_| CryptoError::Padding),
            Padding::Zeros => dec.decrypt_padded_vec_mut::<ZeroPadding>(cipher).map_err(|_| CryptoError::Padding),
        }
    }
}

/// MD5 of `key` followed by `sequence`, as 32 lower-case hex digits.
pub fn identity_md5(key: &str, sequence: &str) -> String {
    let mut h = Md5::new();
    h.update(key.as_bytes());
    h.update(sequence.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a collector's answer is MD5(key + sequence): hex compared without regard to case, in
/// time that does not depend on where the first difference is.
pub fn md5_matches(key: &str, sequence: &str, answer: &str) -> bool {
    let want = identity_md5(key, sequence);
    let got = answer.trim().to_ascii_lowercase();
    want.len() == got.len() && want.bytes().zip(got.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_known_values() {
        // RFC 1321's test suite: MD5("") and MD5("abc"); "abc" + "123" is the well-known
        // MD5("abc123").
        assert_eq!(identity_md5("", ""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(identity_md5("a", "bc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(identity_md5("abc", "123"), "e99a18c428cb38d5f260853678922e03");
        assert!(md5_matches("abc", "123", "E99A18C428CB38D5F260853678922E03"));
        assert!(!md5_matches("abc", "124", "e99a18c428cb38d5f260853678922e03"));
        assert!(!md5_matches("abc", "123", "e99a18c4"));
    }

    #[test]
    fn aes_128_cbc_nist_vector() {
        // NIST SP 800-38A, F.2.1 CBC-AES128.Encrypt, first block: key 2b7e1516..., IV 00..0f,
        // plaintext 6bc1bee2..., ciphertext 7649abac.... With PKCS#7 a full block of padding
        // (16 x 0x10) follows, so the first 16 bytes are the vector's.
        let aes = Aes {
            key: Aes::key_bytes("key", "2b7e151628aed2a6abf7158809cf4f3c").unwrap(),
            iv: Aes::key_bytes("iv", "000102030405060708090a0b0c0d0e0f").unwrap(),
            padding: Padding::Pkcs7,
        };
        let plain = crate::collector::frame::parse_hex("6bc1bee22e409f96e93d7e117393172a").unwrap();
        let c = aes.encrypt(&plain);
        assert_eq!(c.len(), 32);
        assert_eq!(c[..16], crate::collector::frame::parse_hex("7649abac8119b246cee98e9b12e9197d").unwrap()[..]);
        assert_eq!(aes.decrypt(&c).unwrap(), plain);
    }

    #[test]
    fn zero_padding_and_errors() {
        let aes = Aes { key: *b"0123456789abcdef", iv: *b"fedcba9876543210", padding: Padding::Zeros };
        let c = aes.encrypt(b"<root/>");
        assert_eq!(c.len(), 16);
        assert_eq!(aes.decrypt(&c).unwrap(), b"<root/>");
        assert_eq!(aes.decrypt(&c[..15]), Err(CryptoError::NotBlocks(15)));
        let pk = Aes { padding: Padding::Pkcs7, ..aes.clone() };
        let wrong = Aes { key: *b"0123456789abcdeX", ..pk.clone() };
        // A wrong key almost never leaves valid PKCS#7 padding (here it does not).
        assert_eq!(wrong.decrypt(&pk.encrypt(b"<root/>")), Err(CryptoError::Padding));
        assert!(Aes::key_bytes("key", "short").unwrap_err().to_string().contains("16 bytes"));
        assert_eq!(&Aes::key_bytes("key", "529f3d2bf15d4d5d").unwrap(), b"529f3d2bf15d4d5d");
    }
}
