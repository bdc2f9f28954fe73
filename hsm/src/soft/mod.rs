//! The soft provider: the same `Token` semantics in pure Rust for the demo and tests. Keys
//! are sealed at rest (see [`store`]); the user PIN has a persisted retry counter and locks
//! after `max_tries` wrong PINs; the SO PIN unblocks it. SM2 (RustCrypto `sm2`, configurable
//! distinguishing id) and P-256; HMAC-SHA256, HMAC-SM3 and AES-256-GCM wrapping keys.
//! A software token is GM/T 0028 level 1 at best: production keys belong on UKEYs/HSMs.

pub mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use tokio::sync::broadcast;
use zeroize::Zeroizing;

use self::store::{Kek, KeyRecord, SecretRecord, TokenFile, decode_hex, object_aad, token_path};
use crate::pin::Pin;
use crate::soft_crypto::{self, SoftSigningKey, random_bytes};
use crate::token::{Token, TokenProvider};
use crate::types::{
    KeyAlgorithm, KeyInfo, PinState, SecretKeyKind, TokenEvent, TokenInfo, UserKind,
};
use crate::uri::Pkcs11Uri;
use crate::{Result, TokenError, TokenSignature};

/// Default number of wrong user or SO PINs before the PIN locks.
pub const DEFAULT_MAX_TRIES: u32 = 5;
const MIN_PIN_LEN: usize = 4;
const MAX_PIN_LEN: usize = 64;

/// Options of the soft provider.
#[derive(Clone)]
pub struct SoftOptions {
    pub dir: PathBuf,
    /// Secret the key-encryption key is derived from.
    pub secret: Zeroizing<String>,
    pub sm2_distid: String,
    pub max_tries: u32,
}

/// A directory of soft tokens.
pub struct SoftProvider {
    options: SoftOptions,
    tokens: Mutex<HashMap<String, Arc<SoftToken>>>,
    events: broadcast::Sender<TokenEvent>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn check_pin_shape(pin: &Pin) -> Result<()> {
    let len = pin.expose().chars().count();
    if !(MIN_PIN_LEN..=MAX_PIN_LEN).contains(&len) {
        return Err(TokenError::PinInvalid("must be 4 to 64 characters"));
    }
    Ok(())
}

fn pin_state(failures: u32, max: u32, set: bool) -> PinState {
    if !set {
        PinState::NotInitialized
    } else if failures >= max {
        PinState::Locked
    } else if failures + 1 == max {
        PinState::FinalTry
    } else if failures > 0 {
        PinState::CountLow
    } else {
        PinState::Ok
    }
}

fn info_of(file: &TokenFile) -> TokenInfo {
    TokenInfo {
        label: file.label.clone(),
        serial: file.serial.clone(),
        manufacturer: "kioskd".into(),
        model: "soft token".into(),
        pin_state: pin_state(file.user_failures, file.max_tries, file.user_pin.is_some()),
        so_pin_state: pin_state(file.so_failures, file.max_tries, true),
        slot: None,
        initialized: true,
        login_required: true,
        protected_authentication_path: false,
        user_retries_left: file
            .user_pin
            .as_ref()
            .map(|_| file.max_tries.saturating_sub(file.user_failures)),
    }
}

impl SoftProvider {
    pub fn open(options: SoftOptions) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&options.dir)
            .map_err(|e| TokenError::Store(format!("{}: {e}", options.dir.display())))?;
        let (events, _) = broadcast::channel(64);
        Ok(Arc::new(Self {
            options,
            tokens: Mutex::new(HashMap::new()),
            events,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.options.dir
    }

    /// The soft token with this label (cached per label).
    fn soft_token(&self, label: &str) -> Result<Arc<SoftToken>> {
        if let Some(token) = lock(&self.tokens).get(label) {
            return Ok(Arc::clone(token));
        }
        let path = token_path(&self.options.dir, label);
        if !path.exists() {
            return Err(TokenError::TokenNotPresent(label.to_owned()));
        }
        TokenFile::load(&path)?;
        let token = Arc::new(SoftToken {
            path,
            secret: self.options.secret.clone(),
            distid: self.options.sm2_distid.clone(),
            state: Mutex::new(()),
            logged_in: AtomicBool::new(false),
            signers: Mutex::new(HashMap::new()),
        });
        let token = Arc::clone(lock(&self.tokens).entry(label.to_owned()).or_insert(token));
        Ok(token)
    }
}

#[async_trait]
impl TokenProvider for SoftProvider {
    fn describe(&self) -> String {
        format!("soft:{}", self.options.dir.display())
    }

    async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let mut out = Vec::new();
        let entries =
            std::fs::read_dir(&self.options.dir).map_err(|e| TokenError::Store(e.to_string()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.to_string_lossy().ends_with(".token.json") {
                if let Ok(file) = TokenFile::load(&path) {
                    out.push(info_of(&file));
                }
            }
        }
        out.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(out)
    }

    async fn open_token(&self, label: &str) -> Result<Arc<dyn Token>> {
        Ok(self.soft_token(label)? as Arc<dyn Token>)
    }

    async fn init_token(&self, label: &str, so_pin: &Pin, user_pin: &Pin) -> Result<TokenInfo> {
        if label.is_empty() || label.len() > 32 {
            return Err(TokenError::InvalidInput(
                "token label must be 1..=32 bytes".into(),
            ));
        }
        check_pin_shape(so_pin)?;
        check_pin_shape(user_pin)?;
        let path = token_path(&self.options.dir, label);
        if path.exists() {
            return Err(TokenError::TokenExists(label.to_owned()));
        }
        let mut file = TokenFile::new(label, self.options.max_tries.max(1))?;
        let kek = Kek::derive(self.options.secret.as_bytes(), &file)?;
        file.kek_check = kek.check_value(&file)?;
        file.so_pin = kek.pin_record(so_pin.expose())?;
        file.user_pin = Some(kek.pin_record(user_pin.expose())?);
        file.save(&path)?;
        let info = info_of(&file);
        let _ = self.events.send(TokenEvent::Inserted {
            label: info.label.clone(),
            serial: info.serial.clone(),
        });
        Ok(info)
    }

    async fn reinit_token(
        &self,
        serial: &str,
        so_pin: &Pin,
        new_label: &str,
        new_so_pin: &Pin,
    ) -> Result<TokenInfo> {
        if new_label.is_empty() || new_label.len() > 32 {
            return Err(TokenError::InvalidInput(
                "token label must be 1..=32 bytes".into(),
            ));
        }
        check_pin_shape(new_so_pin)?;
        let old = self
            .list_tokens()
            .await?
            .into_iter()
            .find(|t| t.serial == serial)
            .ok_or_else(|| TokenError::TokenNotPresent(format!("serial {serial}")))?;
        let old_path = token_path(&self.options.dir, &old.label);
        let new_path = token_path(&self.options.dir, new_label);
        if old_path != new_path && new_path.exists() {
            return Err(TokenError::TokenExists(new_label.to_owned()));
        }
        let token = self.soft_token(&old.label)?;
        // One check of the current SO PIN, counted like any other.
        token.check_pin(UserKind::So, so_pin)?;
        let max_tries = TokenFile::load(&old_path)?.max_tries;
        let mut file = TokenFile::new(new_label, max_tries)?;
        file.serial = serial.to_owned();
        let kek = Kek::derive(self.options.secret.as_bytes(), &file)?;
        file.kek_check = kek.check_value(&file)?;
        file.so_pin = kek.pin_record(new_so_pin.expose())?;
        file.save(&new_path)?;
        if old_path != new_path {
            std::fs::remove_file(&old_path).map_err(|e| TokenError::Store(e.to_string()))?;
        }
        lock(&self.tokens).remove(&old.label);
        token.logged_in.store(false, Ordering::Release);
        lock(&token.signers).clear();
        Ok(info_of(&file))
    }

    async fn refresh(&self) -> Result<Vec<TokenEvent>> {
        Ok(Vec::new())
    }

    fn events(&self) -> broadcast::Receiver<TokenEvent> {
        self.events.subscribe()
    }
}

/// One soft token. Every operation re-reads the file (another process, e.g. `kioskctl`, may
/// have changed counters) under an in-process lock and writes it back atomically.
pub struct SoftToken {
    path: PathBuf,
    secret: Zeroizing<String>,
    distid: String,
    state: Mutex<()>,
    logged_in: AtomicBool,
    /// Unsealed signing keys of this login (keys never change once generated); cleared on
    /// logout and unblock.
    signers: Mutex<HashMap<String, Arc<SoftSigningKey>>>,
}

impl SoftToken {
    fn with_file<T>(&self, f: impl FnOnce(&mut TokenFile, &Kek) -> Result<(T, bool)>) -> Result<T> {
        let _guard = lock(&self.state);
        let mut file = TokenFile::load(&self.path).map_err(|e| {
            if self.path.exists() {
                e
            } else {
                TokenError::TokenRemoved
            }
        })?;
        let kek = Kek::derive_checked(self.secret.as_bytes(), &file)?;
        let (value, dirty) = f(&mut file, &kek)?;
        if dirty {
            file.save(&self.path)?;
        }
        Ok(value)
    }

    /// Checks a PIN once, updating and persisting the retry counter.
    fn check_pin(&self, user: UserKind, pin: &Pin) -> Result<()> {
        self.with_file(|file, kek| {
            let max = file.max_tries;
            let (record, failures) = match user {
                UserKind::User => (
                    file.user_pin
                        .clone()
                        .ok_or(TokenError::PinInvalid("user PIN not set"))?,
                    file.user_failures,
                ),
                UserKind::So => (file.so_pin.clone(), file.so_failures),
            };
            if failures >= max {
                return Ok((Err(TokenError::PinLocked), false));
            }
            if kek.pin_matches(&record, pin.expose())? {
                let dirty = failures != 0;
                match user {
                    UserKind::User => file.user_failures = 0,
                    UserKind::So => file.so_failures = 0,
                }
                return Ok((Ok(()), dirty));
            }
            let failures = failures + 1;
            match user {
                UserKind::User => file.user_failures = failures,
                UserKind::So => file.so_failures = failures,
            }
            let err = if failures >= max {
                TokenError::PinLocked
            } else {
                TokenError::PinIncorrect {
                    retries_left: Some(max - failures),
                }
            };
            Ok((Err(err), true))
        })?
    }

    fn require_login(&self) -> Result<()> {
        if self.logged_in.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(TokenError::NotLoggedIn)
        }
    }

    fn signing_key(&self, label: &str) -> Result<Arc<SoftSigningKey>> {
        if let Some(key) = lock(&self.signers).get(label) {
            return Ok(Arc::clone(key));
        }
        let key = self.with_file(|file, kek| {
            let record = file
                .keys
                .iter()
                .find(|k| k.label == label)
                .ok_or_else(|| TokenError::NoSuchKey(label.to_owned()))?;
            let secret = kek.unseal(
                &object_aad(&file.serial, "private-key", label),
                &record.sealed,
            )?;
            Ok((
                SoftSigningKey::from_secret(record.algorithm, secret, &self.distid)?,
                false,
            ))
        })?;
        let key = Arc::new(key);
        lock(&self.signers).insert(label.to_owned(), Arc::clone(&key));
        Ok(key)
    }

    fn secret_key(
        &self,
        label: &str,
        kinds: &[SecretKeyKind],
    ) -> Result<(SecretKeyKind, Zeroizing<Vec<u8>>)> {
        self.with_file(|file, kek| {
            let record = file
                .secrets
                .iter()
                .find(|k| k.label == label)
                .ok_or_else(|| TokenError::NoSuchKey(label.to_owned()))?;
            if !kinds.contains(&record.kind) {
                return Err(TokenError::InvalidInput(format!(
                    "key {label:?} is a {:?} key",
                    record.kind
                )));
            }
            let value = kek.unseal(
                &object_aad(&file.serial, "secret-key", label),
                &record.sealed,
            )?;
            Ok(((record.kind, value), false))
        })
    }
}

fn key_info(record: &KeyRecord) -> Result<KeyInfo> {
    Ok(KeyInfo {
        label: record.label.clone(),
        id: decode_hex(&record.id)?,
        algorithm: record.algorithm,
        public_key: decode_hex(&record.public_key)?,
    })
}

#[async_trait]
impl Token for SoftToken {
    async fn info(&self) -> Result<TokenInfo> {
        self.with_file(|file, _| Ok((info_of(file), false)))
    }

    async fn login(&self, user: UserKind, pin: &Pin) -> Result<()> {
        self.check_pin(user, pin)?;
        self.logged_in
            .store(user == UserKind::User, Ordering::Release);
        Ok(())
    }

    async fn logout(&self) -> Result<()> {
        self.logged_in.store(false, Ordering::Release);
        lock(&self.signers).clear();
        Ok(())
    }

    fn is_logged_in(&self) -> bool {
        self.logged_in.load(Ordering::Acquire)
    }

    async fn change_pin(&self, user: UserKind, old: &Pin, new: &Pin) -> Result<()> {
        check_pin_shape(new)?;
        self.check_pin(user, old)?;
        self.with_file(|file, kek| {
            let record = kek.pin_record(new.expose())?;
            match user {
                UserKind::User => file.user_pin = Some(record),
                UserKind::So => file.so_pin = record,
            }
            Ok(((), true))
        })
    }

    async fn unblock_user_pin(&self, so_pin: &Pin, new_user_pin: &Pin) -> Result<()> {
        check_pin_shape(new_user_pin)?;
        self.check_pin(UserKind::So, so_pin)?;
        lock(&self.signers).clear();
        self.logged_in.store(false, Ordering::Release);
        self.with_file(|file, kek| {
            file.user_pin = Some(kek.pin_record(new_user_pin.expose())?);
            file.user_failures = 0;
            Ok(((), true))
        })
    }

    async fn generate_key_pair(&self, label: &str, algorithm: KeyAlgorithm) -> Result<KeyInfo> {
        self.require_login()?;
        if label.is_empty() || label.len() > 128 {
            return Err(TokenError::InvalidInput(
                "key label must be 1..=128 bytes".into(),
            ));
        }
        let key = SoftSigningKey::generate(algorithm, &self.distid)?;
        let public = key.public_key();
        let id = random_bytes::<16>()?;
        self.with_file(|file, kek| {
            if file.keys.iter().any(|k| k.label == label) {
                return Err(TokenError::KeyExists(label.to_owned()));
            }
            let record = KeyRecord {
                label: label.to_owned(),
                id: hex::encode(id),
                algorithm,
                public_key: hex::encode(&public),
                sealed: kek.seal(
                    &object_aad(&file.serial, "private-key", label),
                    key.secret_bytes(),
                )?,
                certificate: None,
            };
            let info = key_info(&record)?;
            file.keys.push(record);
            Ok((info, true))
        })
    }

    async fn find_keys(&self, filter: &Pkcs11Uri) -> Result<Vec<KeyInfo>> {
        let keys = self.with_file(|file, _| Ok((file.keys.clone(), false)))?;
        let mut out = Vec::new();
        for record in &keys {
            let info = key_info(record)?;
            if filter.matches_key(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    async fn sign(&self, key_label: &str, message: &[u8]) -> Result<TokenSignature> {
        self.require_login()?;
        let key = self.signing_key(key_label)?;
        let raw = key.sign(message)?;
        Ok(TokenSignature {
            algorithm: key.algorithm,
            raw,
        })
    }

    fn sm2_distid(&self) -> &str {
        &self.distid
    }

    async fn write_certificate(&self, key_label: &str, cert_der: &[u8]) -> Result<()> {
        self.require_login()?;
        let parsed = crate::csr::parse_certificate(cert_der)?;
        self.with_file(|file, _| {
            let record = file
                .keys
                .iter_mut()
                .find(|k| k.label == key_label)
                .ok_or_else(|| TokenError::NoSuchKey(key_label.to_owned()))?;
            if decode_hex(&record.public_key)? != parsed.public_key {
                return Err(TokenError::InvalidInput(
                    "certificate public key is not the key's".into(),
                ));
            }
            record.certificate = Some(hex::encode(cert_der));
            Ok(((), true))
        })
    }

    async fn read_certificate(&self, key_label: &str) -> Result<Option<Vec<u8>>> {
        self.with_file(|file, _| {
            let record = file
                .keys
                .iter()
                .find(|k| k.label == key_label)
                .ok_or_else(|| TokenError::NoSuchKey(key_label.to_owned()))?;
            Ok((
                record.certificate.as_deref().map(decode_hex).transpose()?,
                false,
            ))
        })
    }

    async fn generate_secret_key(&self, label: &str, kind: SecretKeyKind) -> Result<()> {
        self.require_login()?;
        let value = Zeroizing::new(random_bytes::<32>()?);
        self.with_file(|file, kek| {
            if file.secrets.iter().any(|k| k.label == label) {
                return Err(TokenError::KeyExists(label.to_owned()));
            }
            let sealed = kek.seal(
                &object_aad(&file.serial, "secret-key", label),
                value.as_ref(),
            )?;
            file.secrets.push(SecretRecord {
                label: label.to_owned(),
                kind,
                sealed,
            });
            Ok(((), true))
        })
    }

    async fn hmac(&self, key_label: &str, data: &[u8]) -> Result<Vec<u8>> {
        self.require_login()?;
        let (kind, key) = self.secret_key(
            key_label,
            &[SecretKeyKind::HmacSha256, SecretKeyKind::HmacSm3],
        )?;
        let bad = |_| TokenError::Store("bad HMAC key".into());
        Ok(match kind {
            SecretKeyKind::HmacSm3 => {
                let mut mac = <Hmac<sm3::Sm3> as KeyInit>::new_from_slice(&key).map_err(bad)?;
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            _ => {
                let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).map_err(bad)?;
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        })
    }

    async fn wrap_key(&self, key_label: &str, data_key: &[u8]) -> Result<Vec<u8>> {
        self.require_login()?;
        let (_, key) = self.secret_key(key_label, &[SecretKeyKind::Aes256Wrap])?;
        let cipher =
            Aes256Gcm::new_from_slice(&key).map_err(|_| TokenError::Store("bad AES key".into()))?;
        let nonce = random_bytes::<12>()?;
        let sealed = cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: data_key,
                    aad: b"kioskd data key",
                },
            )
            .map_err(|_| TokenError::Store("wrap failed".into()))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    async fn unwrap_key(&self, key_label: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.require_login()?;
        let (_, key) = self.secret_key(key_label, &[SecretKeyKind::Aes256Wrap])?;
        if wrapped.len() < 12 + 16 {
            return Err(TokenError::InvalidInput("wrapped key too short".into()));
        }
        let (nonce, body) = wrapped.split_at(12);
        let mut n = [0u8; 12];
        n.copy_from_slice(nonce);
        let cipher =
            Aes256Gcm::new_from_slice(&key).map_err(|_| TokenError::Store("bad AES key".into()))?;
        cipher
            .decrypt(
                &n.into(),
                Payload {
                    msg: body,
                    aad: b"kioskd data key",
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| TokenError::InvalidInput("wrapped key does not open".into()))
    }
}

impl SoftToken {
    /// Verifies a signature of this token's key in software.
    pub async fn verify(&self, key_label: &str, message: &[u8], raw: &[u8]) -> Result<()> {
        let key = self.key(key_label).await?;
        soft_crypto::verify(key.algorithm, &key.public_key, &self.distid, message, raw)
    }
}
