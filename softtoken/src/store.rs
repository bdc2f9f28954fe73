//! The module's directory (`KIOSK_SOFTTOKEN_DIR`): `softtoken.toml` (slots and their vendor
//! profiles, PIN retry limits, KDF cost), `integrity.key`, and one `slot-N.cbor` per slot.
//!
//! Each initialised token has a random 256-bit master key, wrapped (AES-256-GCM) once under a
//! key derived from the SO PIN and once under one from the user PIN (PBKDF2-HMAC-SHA256), so
//! the SO can set a new user PIN (`C_InitPIN`) without knowing the old one. Private key
//! scalars are sealed under the master key (AES-256-GCM, bound to the token serial and object
//! id). The whole slot file, PIN failure counters included, carries an HMAC-SHA256 under
//! `integrity.key`: an edited counter shows as a damaged token. Files are replaced atomically
//! (temporary file, fsync, rename, fsync of the directory).
//!
//! What this does not do: anyone who can write the directory can roll the files back or read
//! `integrity.key`; the retry counter then only bounds guessing through the PKCS#11 API, and
//! offline guessing is bounded by the KDF cost. That is GM/T 0028 level 1 at best.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::random;

pub const CONFIG_FILE: &str = "softtoken.toml";
const INTEGRITY_KEY_FILE: &str = "integrity.key";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: configuration: {1}")]
    Config(String, String),
    #[error("{0}: damaged or edited (integrity check failed)")]
    Tampered(String),
    #[error("{0}: unreadable: {1}")]
    Format(String, String),
    #[error("no randomness from the operating system")]
    Rng,
    #[error("sealed data does not open")]
    Unseal,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `softtoken.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Vendor profile (an `hsm` profile name) of slots not listed in `slot`.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Number of slots.
    #[serde(default = "default_slots")]
    pub slots: usize,
    /// Per-slot settings, by position.
    #[serde(default)]
    pub slot: Vec<SlotConfig>,
    /// Wrong user PINs in a row before the user PIN locks.
    #[serde(default = "default_attempts")]
    pub user_pin_max_attempts: u32,
    /// Wrong SO PINs in a row before the SO PIN locks (then only a new store helps).
    #[serde(default = "default_attempts")]
    pub so_pin_max_attempts: u32,
    /// PBKDF2-HMAC-SHA256 iterations for PIN-derived keys.
    #[serde(default = "default_iterations")]
    pub kdf_iterations: u32,
    #[serde(default = "default_min_pin")]
    pub min_pin_len: usize,
    /// Whether a user PIN set by the SO (`C_InitPIN`) must be changed by its owner
    /// (`CKF_USER_PIN_TO_BE_CHANGED` until `C_SetPIN`).
    #[serde(default)]
    pub user_pin_change_after_so_reset: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    #[serde(default)]
    pub profile: Option<String>,
}

fn default_profile() -> String {
    "sansec-appid1".into()
}
fn default_slots() -> usize {
    2
}
fn default_attempts() -> u32 {
    10
}
fn default_iterations() -> u32 {
    200_000
}
fn default_min_pin() -> usize {
    4
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

impl Config {
    /// Reads `softtoken.toml`, writing the defaults when there is none.
    pub fn load_or_create(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(CONFIG_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let config: Config = toml::from_str(&text)
                    .map_err(|e| StoreError::Config(path.display().to_string(), e.to_string()))?;
                config.check(&path)?;
                Ok(config)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let config = Config::default();
                let text = toml::to_string(&config)
                    .map_err(|e| StoreError::Config(path.display().to_string(), e.to_string()))?;
                write_atomic(&path, text.as_bytes())?;
                Ok(config)
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn check(&self, path: &Path) -> Result<(), StoreError> {
        let bad = |m: &str| Err(StoreError::Config(path.display().to_string(), m.into()));
        if self.slots == 0 || self.slots > 64 || self.slot.len() > self.slots {
            return bad("slots must be 1..=64 and cover every [[slot]]");
        }
        if self.user_pin_max_attempts == 0 || self.so_pin_max_attempts == 0 {
            return bad("PIN attempt limits must be at least 1");
        }
        if self.kdf_iterations < 1000 {
            return bad("kdf_iterations must be at least 1000");
        }
        for i in 0..self.slots {
            crate::vendor::family_for_profile(self.profile_of(i))
                .or_else(|m| bad(&m).map(|()| None))?;
        }
        Ok(())
    }

    pub fn profile_of(&self, slot: usize) -> &str {
        self.slot
            .get(slot)
            .and_then(|s| s.profile.as_deref())
            .unwrap_or(&self.profile)
    }
}

/// Writes a file atomically: a crash leaves either the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

/// The directory's integrity key (created on first use).
pub fn integrity_key(dir: &Path) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let path = dir.join(INTEGRITY_KEY_FILE);
    match fs::read(&path) {
        Ok(k) if k.len() == 32 => Ok(Zeroizing::new(k)),
        Ok(_) => Err(StoreError::Tampered(path.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Zeroizing::new(random::<32>().map_err(|_| StoreError::Rng)?.to_vec());
            write_atomic(&path, &key)?;
            Ok(key)
        }
        Err(e) => Err(io(&path)(e)),
    }
}

/// A PIN's wrap of the master key.
#[derive(Clone, Serialize, Deserialize)]
pub struct PinRecord {
    salt: Vec<u8>,
    iterations: u32,
    /// nonce ‖ AES-256-GCM(master key).
    wrapped: Vec<u8>,
}

/// Who a PIN belongs to (bound into the wrap, so an SO wrap never opens as a user wrap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    So,
    User,
}

impl Role {
    fn aad(self, serial: &str) -> Vec<u8> {
        let role = match self {
            Role::So => "so",
            Role::User => "user",
        };
        format!("kiosk-softtoken pin-wrap v1 {serial} {role}").into_bytes()
    }
}

fn kek(pin: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(pin, salt, iterations, out.as_mut());
    out
}

fn seal(key: &[u8], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, StoreError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| StoreError::Unseal)?;
    let nonce = random::<12>().map_err(|_| StoreError::Rng)?;
    let sealed = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad })
        .map_err(|_| StoreError::Unseal)?;
    Ok([nonce.as_slice(), &sealed].concat())
}

fn unseal(key: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    if sealed.len() < 12 + 16 {
        return Err(StoreError::Unseal);
    }
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| StoreError::Unseal)?;
    let (nonce, body) = sealed.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| StoreError::Unseal)?;
    cipher
        .decrypt(&Nonce::from(nonce), Payload { msg: body, aad })
        .map(Zeroizing::new)
        .map_err(|_| StoreError::Unseal)
}

impl PinRecord {
    /// Wraps the master key under a PIN.
    pub fn new(
        role: Role,
        serial: &str,
        pin: &[u8],
        master: &[u8],
        iterations: u32,
    ) -> Result<Self, StoreError> {
        let salt = random::<16>().map_err(|_| StoreError::Rng)?.to_vec();
        let kek = kek(pin, &salt, iterations);
        let wrapped = seal(kek.as_ref(), &role.aad(serial), master)?;
        Ok(Self {
            salt,
            iterations,
            wrapped,
        })
    }

    /// The master key if `pin` is right.
    pub fn open(&self, role: Role, serial: &str, pin: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let kek = kek(pin, &self.salt, self.iterations);
        unseal(kek.as_ref(), &role.aad(serial), &self.wrapped).ok()
    }
}

/// One object on the token: its attributes (raw PKCS#11 encodings) and, for private keys,
/// the sealed scalar.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredObject {
    pub attrs: BTreeMap<u64, Vec<u8>>,
    pub sealed_secret: Option<Vec<u8>>,
}

/// Everything persisted about one slot's token.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenFile {
    pub version: u32,
    /// Fixed for the slot's life (a UKEY's serial does not change on re-initialisation).
    pub serial: String,
    pub initialized: bool,
    pub label: String,
    pub so: Option<PinRecord>,
    pub user: Option<PinRecord>,
    pub so_failures: u32,
    pub user_failures: u32,
    pub user_pin_to_be_changed: bool,
    pub next_object_id: u64,
    pub objects: BTreeMap<u64, StoredObject>,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    body: Vec<u8>,
    mac: Vec<u8>,
}

fn mac_of(key: &[u8], path_name: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(b"kiosk-softtoken slot v1 ");
    m.update(path_name.as_bytes());
    m.update(body);
    m
}

impl TokenFile {
    pub fn blank() -> Result<Self, StoreError> {
        Ok(Self {
            version: FORMAT_VERSION,
            serial: hex::encode_upper(random::<8>().map_err(|_| StoreError::Rng)?),
            initialized: false,
            label: String::new(),
            so: None,
            user: None,
            so_failures: 0,
            user_failures: 0,
            user_pin_to_be_changed: false,
            next_object_id: 1,
            objects: BTreeMap::new(),
        })
    }

    pub fn path(dir: &Path, slot: usize) -> PathBuf {
        dir.join(format!("slot-{slot}.cbor"))
    }

    /// Loads a slot file (a missing one is a new blank slot, written at once).
    pub fn load(dir: &Path, slot: usize, key: &[u8]) -> Result<Self, StoreError> {
        let path = Self::path(dir, slot);
        let name = format!("slot-{slot}");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let blank = Self::blank()?;
                blank.save(dir, slot, key)?;
                return Ok(blank);
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let shown = path.display().to_string();
        let env: Envelope = ciborium::from_reader(bytes.as_slice())
            .map_err(|e| StoreError::Format(shown.clone(), e.to_string()))?;
        // Constant-time comparison (hmac's verifier).
        if mac_of(key, &name, &env.body)
            .verify_slice(&env.mac)
            .is_err()
        {
            return Err(StoreError::Tampered(shown));
        }
        let file: TokenFile = ciborium::from_reader(env.body.as_slice())
            .map_err(|e| StoreError::Format(shown.clone(), e.to_string()))?;
        if file.version != FORMAT_VERSION {
            return Err(StoreError::Format(shown, "unknown format version".into()));
        }
        Ok(file)
    }

    pub fn save(&self, dir: &Path, slot: usize, key: &[u8]) -> Result<(), StoreError> {
        let path = Self::path(dir, slot);
        let mut body = Vec::new();
        ciborium::into_writer(self, &mut body)
            .map_err(|e| StoreError::Format(path.display().to_string(), e.to_string()))?;
        let env = Envelope {
            mac: mac_of(key, &format!("slot-{slot}"), &body)
                .finalize()
                .into_bytes()
                .to_vec(),
            body,
        };
        let mut out = Vec::new();
        ciborium::into_writer(&env, &mut out)
            .map_err(|e| StoreError::Format(path.display().to_string(), e.to_string()))?;
        write_atomic(&path, &out)
    }

    fn secret_aad(&self, id: u64) -> Vec<u8> {
        format!("kiosk-softtoken key v1 {} {id}", self.serial).into_bytes()
    }

    pub fn seal_secret(
        &self,
        master: &[u8],
        id: u64,
        secret: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        seal(master, &self.secret_aad(id), secret)
    }

    pub fn unseal_secret(
        &self,
        master: &[u8],
        id: u64,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        unseal(master, &self.secret_aad(id), sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_opens_only_with_the_right_pin_and_role() {
        let master = random::<32>().unwrap();
        let rec = PinRecord::new(Role::User, "S1", b"1234", &master, 1000).unwrap();
        assert_eq!(
            rec.open(Role::User, "S1", b"1234").unwrap().as_slice(),
            &master
        );
        assert!(rec.open(Role::User, "S1", b"1235").is_none());
        assert!(rec.open(Role::So, "S1", b"1234").is_none());
        assert!(rec.open(Role::User, "S2", b"1234").is_none());
    }

    #[test]
    fn an_edited_failure_counter_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let key = integrity_key(dir.path()).unwrap();
        let mut file = TokenFile::load(dir.path(), 0, &key).unwrap();
        file.user_failures = 9;
        file.save(dir.path(), 0, &key).unwrap();
        assert_eq!(
            TokenFile::load(dir.path(), 0, &key).unwrap().user_failures,
            9
        );
        // Flip the counter inside the signed body: the load must refuse it.
        let path = TokenFile::path(dir.path(), 0);
        let env: Envelope = ciborium::from_reader(fs::read(&path).unwrap().as_slice()).unwrap();
        let mut body: TokenFile = ciborium::from_reader(env.body.as_slice()).unwrap();
        body.user_failures = 0;
        let mut new_body = Vec::new();
        ciborium::into_writer(&body, &mut new_body).unwrap();
        let mut out = Vec::new();
        ciborium::into_writer(
            &Envelope {
                body: new_body,
                mac: env.mac,
            },
            &mut out,
        )
        .unwrap();
        fs::write(&path, out).unwrap();
        assert!(matches!(
            TokenFile::load(dir.path(), 0, &key),
            Err(StoreError::Tampered(_))
        ));
    }
}
