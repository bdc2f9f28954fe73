//! On-disk state of one soft token: a JSON file with PIN verifiers, persisted retry counters,
//! and keys sealed with AES-256-GCM under a key-encryption key derived (HKDF-SHA256) from the
//! configured secret and a per-token salt. Files are replaced atomically (write + rename).

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::soft_crypto::random_bytes;
use crate::types::{KeyAlgorithm, SecretKeyKind};
use crate::{Result, TokenError};

const FORMAT_VERSION: u32 = 1;
const NONCE_LEN: usize = 12;
/// Upper bound on a token file we are willing to read.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinRecord {
    pub salt: String,
    pub verifier: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub label: String,
    pub id: String,
    pub algorithm: KeyAlgorithm,
    pub public_key: String,
    pub sealed: String,
    pub certificate: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretRecord {
    pub label: String,
    pub kind: SecretKeyKind,
    pub sealed: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenFile {
    pub version: u32,
    pub label: String,
    pub serial: String,
    pub salt: String,
    /// A constant sealed under the KEK: a wrong configured secret is reported as such
    /// instead of counting as wrong PINs.
    pub kek_check: String,
    pub max_tries: u32,
    pub so_pin: PinRecord,
    pub user_pin: Option<PinRecord>,
    pub so_failures: u32,
    pub user_failures: u32,
    pub keys: Vec<KeyRecord>,
    pub secrets: Vec<SecretRecord>,
}

fn store_err(e: impl std::fmt::Display) -> TokenError {
    TokenError::Store(e.to_string())
}

pub fn decode_hex(s: &str) -> Result<Vec<u8>> {
    hex::decode(s).map_err(|_| TokenError::Store("corrupt hex field in token file".into()))
}

/// File of the token with this label.
pub fn token_path(dir: &Path, label: &str) -> PathBuf {
    dir.join(format!("{}.token.json", hex::encode(label.as_bytes())))
}

impl TokenFile {
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(store_err)?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(TokenError::Store("token file too large".into()));
        }
        let text = std::fs::read(path).map_err(store_err)?;
        let file: TokenFile = serde_json::from_slice(&text).map_err(store_err)?;
        if file.version != FORMAT_VERSION {
            return Err(TokenError::Store(format!(
                "unsupported token file version {}",
                file.version
            )));
        }
        Ok(file)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .ok_or_else(|| store_err("token file has no directory"))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(store_err)?;
        serde_json::to_writer_pretty(tmp.as_file_mut(), self).map_err(store_err)?;
        tmp.as_file().sync_all().map_err(store_err)?;
        tmp.persist(path).map_err(store_err)?;
        Ok(())
    }

    pub fn new(label: &str, max_tries: u32) -> Result<Self> {
        Ok(Self {
            version: FORMAT_VERSION,
            label: label.to_owned(),
            serial: hex::encode(random_bytes::<8>()?),
            salt: hex::encode(random_bytes::<32>()?),
            kek_check: String::new(),
            max_tries,
            so_pin: PinRecord {
                salt: String::new(),
                verifier: String::new(),
            },
            user_pin: None,
            so_failures: 0,
            user_failures: 0,
            keys: Vec::new(),
            secrets: Vec::new(),
        })
    }
}

/// Keys derived from the configured secret for one token.
pub struct Kek {
    seal: Zeroizing<[u8; 32]>,
    pin: Zeroizing<[u8; 32]>,
}

impl Kek {
    const CHECK: &'static str = "kioskd soft token kek check";

    /// Derives the KEK and checks it against the token's sealed check value.
    pub fn derive_checked(secret: &[u8], token: &TokenFile) -> Result<Self> {
        let kek = Self::derive(secret, token)?;
        kek.unseal(
            &object_aad(&token.serial, "kek-check", ""),
            &token.kek_check,
        )
        .map_err(|_| store_err("the configured soft_secret does not open this token"))?;
        Ok(kek)
    }

    /// The check value to store in a new token file.
    pub fn check_value(&self, token: &TokenFile) -> Result<String> {
        self.seal(
            &object_aad(&token.serial, "kek-check", ""),
            Self::CHECK.as_bytes(),
        )
    }

    pub fn derive(secret: &[u8], token: &TokenFile) -> Result<Self> {
        let salt = decode_hex(&token.salt)?;
        let hk = Hkdf::<Sha256>::new(Some(&salt), secret);
        let mut seal = Zeroizing::new([0u8; 32]);
        let mut pin = Zeroizing::new([0u8; 32]);
        hk.expand(b"kioskd soft token v1: key sealing", seal.as_mut())
            .map_err(store_err)?;
        hk.expand(b"kioskd soft token v1: pin verifier", pin.as_mut())
            .map_err(store_err)?;
        Ok(Self { seal, pin })
    }

    fn pin_mac(&self, salt: &[u8], pin: &str) -> Result<Hmac<Sha256>> {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(self.pin.as_ref()).map_err(store_err)?;
        mac.update(salt);
        mac.update(pin.as_bytes());
        Ok(mac)
    }

    pub fn pin_record(&self, pin: &str) -> Result<PinRecord> {
        let salt = random_bytes::<16>()?;
        let tag = self.pin_mac(&salt, pin)?.finalize().into_bytes();
        Ok(PinRecord {
            salt: hex::encode(salt),
            verifier: hex::encode(tag),
        })
    }

    /// Constant-time PIN check.
    pub fn pin_matches(&self, record: &PinRecord, pin: &str) -> Result<bool> {
        let salt = decode_hex(&record.salt)?;
        let expected = decode_hex(&record.verifier)?;
        Ok(self.pin_mac(&salt, pin)?.verify_slice(&expected).is_ok())
    }

    fn cipher(&self) -> Result<Aes256Gcm> {
        Aes256Gcm::new_from_slice(self.seal.as_ref()).map_err(store_err)
    }

    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Result<String> {
        let nonce = random_bytes::<NONCE_LEN>()?;
        let sealed = self
            .cipher()?
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| store_err("sealing failed"))?;
        Ok(hex::encode([nonce.as_slice(), &sealed].concat()))
    }

    pub fn unseal(&self, aad: &str, sealed_hex: &str) -> Result<Zeroizing<Vec<u8>>> {
        let sealed = decode_hex(sealed_hex)?;
        if sealed.len() < NONCE_LEN + 16 {
            return Err(store_err("sealed key too short"));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        self.cipher()?
            .decrypt(
                &n.into(),
                Payload {
                    msg: body,
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| store_err("sealed key does not open (wrong soft_secret or tampered file)"))
    }
}

/// Associated data binding a sealed object to its token and name.
pub fn object_aad(serial: &str, kind: &str, label: &str) -> String {
    format!("kioskd-soft-token|{serial}|{kind}|{label}")
}
