//! The kiosk's own keys on its device token (through `hsm`): the device key
//! that signs envelopes and audit checkpoints ([`DeviceSigner`], a
//! `records::RecordSigner`), and the secret keys behind the privacy layer
//! ([`TokenKeyVault`]: data-key wrapping and keyed digests). Private and secret
//! keys never leave the token.
//!
//! The store and the sealer call these from blocking threads (inside SQLite
//! transactions), so they bridge to the async token with `Handle::block_on`;
//! they must not be called from an async task directly.

use std::sync::Arc;

use hsm::{KeyAlgorithm, KeyInfo, Pin, SecretKeyKind, Token, TokenError, UserKind};
use kiosk_config::{EnvelopeSuite, KioskMode, LoadedConfig, TokenProvider};
use records::signing::{PublicVerifier, RecordSigner, SignatureAlgorithm, SignatureError};
use tokio::runtime::Handle;
use zeroize::Zeroizing;

use crate::keys::{KeyError, KeyVault};

/// Labels of the kiosk's secret keys on the device token.
pub const WRAP_KEY_LABEL: &str = "kiosk-data-key-wrap";
pub const DIGEST_KEY_LABEL: &str = "kiosk-keyed-digest";

/// The device key as a record signer.
pub struct DeviceSigner {
    token: Arc<dyn Token>,
    label: String,
    algorithm: SignatureAlgorithm,
    distid: Option<String>,
    public_sec1: Vec<u8>,
    handle: Handle,
}

impl DeviceSigner {
    /// The device token this key is on (the sync link keeps its TLS key there too).
    pub fn token(&self) -> Arc<dyn Token> {
        self.token.clone()
    }

    pub fn verifier(&self) -> PublicVerifier {
        PublicVerifier {
            algorithm: self.algorithm,
            sec1: self.public_sec1.clone(),
            distid: self.distid.clone(),
        }
    }
}

impl RecordSigner for DeviceSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn sm2_distid(&self) -> Option<&str> {
        self.distid.as_deref()
    }

    fn public_key_sec1(&self) -> Vec<u8> {
        self.public_sec1.clone()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignatureError> {
        self.handle
            .block_on(self.token.sign(&self.label, message))
            .map(|s| s.raw)
            .map_err(|e| SignatureError::SignerFailed(e.to_string()))
    }
}

/// Keyed digests and data-key wrapping with keys held on the token.
pub struct TokenKeyVault {
    token: Arc<dyn Token>,
    handle: Handle,
}

impl KeyVault for TokenKeyVault {
    fn wrap(&self, data_key: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.handle
            .block_on(self.token.wrap_key(WRAP_KEY_LABEL, data_key))
            .map_err(|e| KeyError::Unavailable(e.to_string()))
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        match self
            .handle
            .block_on(self.token.unwrap_key(WRAP_KEY_LABEL, wrapped))
        {
            Ok(k) => Ok(Zeroizing::new(k.to_vec())),
            Err(TokenError::InvalidInput(_) | TokenError::Encoding(_)) => Err(KeyError::Unwrap),
            Err(e) => Err(KeyError::Unavailable(e.to_string())),
        }
    }

    fn keyed_digest(&self, domain: &str, value: &[u8]) -> Result<[u8; 32], KeyError> {
        let mut input = Zeroizing::new(Vec::with_capacity(4 + domain.len() + value.len()));
        input.extend_from_slice(&(domain.len() as u32).to_be_bytes());
        input.extend_from_slice(domain.as_bytes());
        input.extend_from_slice(value);
        let mac = self
            .handle
            .block_on(self.token.hmac(DIGEST_KEY_LABEL, &input))
            .map_err(|e| KeyError::Unavailable(e.to_string()))?;
        mac.get(..32)
            .and_then(|m| m.try_into().ok())
            .ok_or_else(|| KeyError::Unavailable("HMAC shorter than 32 bytes".into()))
    }
}

/// Why the device token could not be opened (shared by kioskd and `kioskctl provision`).
#[derive(Debug, thiserror::Error)]
pub enum DeviceTokenError {
    /// The PIN file could not be read.
    #[error("reading {path}: {source}")]
    PinFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Production mode: the PIN file is not private to the service.
    #[error("token.device_pin_file: {0}")]
    PrivatePinFile(kiosk_config::SecretError),
    #[error("device token: {0}")]
    Token(#[from] TokenError),
}

/// The device token's user PIN as configured: `token.device_pin_file` (in production it
/// must be private to the service) or `token.device_pin`.
pub fn device_pin(loaded: &LoadedConfig) -> Result<Pin, DeviceTokenError> {
    let section = &loaded.config.token;
    Ok(match &section.device_pin_file {
        Some(path) if loaded.config.kiosk.mode == KioskMode::Production => {
            let path = loaded.resolve(path);
            let text =
                kiosk_config::read_private(&path).map_err(DeviceTokenError::PrivatePinFile)?;
            Pin::new(text.trim().to_string())
        }
        Some(path) => {
            let path = loaded.resolve(path);
            let text = Zeroizing::new(
                std::fs::read_to_string(&path)
                    .map_err(|source| DeviceTokenError::PinFile { path, source })?,
            );
            Pin::new(text.trim().to_string())
        }
        None => Pin::new(section.device_pin.expose().to_string()),
    })
}

/// Open the configured device token, creating the embedded soft token the first time
/// (with `pin` as its user PIN and the configured SO PIN).
pub async fn open_device_token(
    loaded: &LoadedConfig,
    provider: &Arc<dyn hsm::TokenProvider>,
    pin: &Pin,
) -> Result<Arc<dyn Token>, TokenError> {
    let section = &loaded.config.token;
    match provider.open_token(&section.device_token).await {
        Ok(t) => Ok(t),
        Err(TokenError::TokenNotPresent(_)) if section.provider == TokenProvider::Soft => {
            tracing::info!(label = %section.device_token, "creating the embedded soft device token");
            let so = Pin::new(section.device_so_pin.expose().to_string());
            provider.init_token(&section.device_token, &so, pin).await?;
            provider.open_token(&section.device_token).await
        }
        Err(e) => Err(e),
    }
}

/// The device key's type: SM2 for the GM envelope suite, P-256 for NIST.
pub fn device_key_algorithm(suite: EnvelopeSuite) -> KeyAlgorithm {
    match suite {
        EnvelopeSuite::Gm => KeyAlgorithm::Sm2,
        EnvelopeSuite::Nist => KeyAlgorithm::P256,
    }
}

/// The device key `label`, generated on the (logged-in) token the first time.
pub async fn ensure_device_key(
    token: &Arc<dyn Token>,
    label: &str,
    algorithm: KeyAlgorithm,
) -> Result<KeyInfo, TokenError> {
    match token.key(label).await {
        Ok(k) => Ok(k),
        Err(TokenError::NoSuchKey(_)) => {
            tracing::info!(
                label,
                ?algorithm,
                "generating the kiosk device key on the token"
            );
            token.generate_key_pair(label, algorithm).await
        }
        Err(e) => Err(e),
    }
}

/// The verifier of a device key (what HQ registers).
pub fn verifier_of(key: &KeyInfo, token: &dyn Token) -> PublicVerifier {
    let (algorithm, distid) = signature_of(key, token);
    PublicVerifier {
        algorithm,
        sec1: key.public_key.clone(),
        distid,
    }
}

fn signature_of(key: &KeyInfo, token: &dyn Token) -> (SignatureAlgorithm, Option<String>) {
    match key.algorithm {
        KeyAlgorithm::Sm2 => (
            SignatureAlgorithm::Sm2Sm3,
            Some(token.sm2_distid().to_string()),
        ),
        KeyAlgorithm::P256 => (SignatureAlgorithm::EcdsaP256Sha256, None),
    }
}

/// The kiosk's keys, ready for use.
pub struct KioskKeys {
    pub signer: Arc<DeviceSigner>,
    pub vault: Arc<TokenKeyVault>,
    /// `hmac-sm3` or `hmac-sha256`: what the keyed digests are.
    pub digest_algorithm: &'static str,
}

/// Log in to the device token once with `pin` (never retried: a wrong PIN must
/// not burn the token's retries) and make sure the device key and the secret
/// keys exist, creating them on first start. `known_digest` is the digest kind
/// recorded when the key was created (the token does not say).
pub async fn prepare(
    token: Arc<dyn Token>,
    device_key: &str,
    algorithm: KeyAlgorithm,
    pin: &Pin,
    known_digest: Option<&str>,
) -> Result<KioskKeys, TokenError> {
    if !token.is_logged_in() {
        token.login(UserKind::User, pin).await?;
    }
    // Start-up probe of the vendor profile: the mechanisms before any key is made with them,
    // then a test signature with the device key (encoding and software verification).
    token.probe(None).await?;
    let key = ensure_device_key(&token, device_key, algorithm).await?;
    token.probe(Some(device_key)).await?;
    // Prefer HMAC-SM3 where the token has it; SoftHSM2 and most HSMs offer HMAC-SHA-256.
    let digest_algorithm = match ensure_secret(
        &token,
        DIGEST_KEY_LABEL,
        &[SecretKeyKind::HmacSm3, SecretKeyKind::HmacSha256],
    )
    .await?
    {
        Some(created) => created,
        None if known_digest == Some("hmac-sha256") => SecretKeyKind::HmacSha256,
        None => SecretKeyKind::HmacSm3,
    };
    ensure_secret(&token, WRAP_KEY_LABEL, &[SecretKeyKind::Aes256Wrap]).await?;
    let (sig_alg, distid) = signature_of(&key, token.as_ref());
    let handle = Handle::current();
    Ok(KioskKeys {
        signer: Arc::new(DeviceSigner {
            token: token.clone(),
            label: device_key.to_string(),
            algorithm: sig_alg,
            distid,
            public_sec1: key.public_key.clone(),
            handle: handle.clone(),
        }),
        vault: Arc::new(TokenKeyVault { token, handle }),
        digest_algorithm: match digest_algorithm {
            SecretKeyKind::HmacSm3 => "hmac-sm3",
            _ => "hmac-sha256",
        },
    })
}

/// Make sure a secret key exists (probing it with a harmless operation),
/// creating it with the first kind the token supports. Returns the kind when
/// it was created now, `None` when it already existed.
async fn ensure_secret(
    token: &Arc<dyn Token>,
    label: &str,
    kinds: &[SecretKeyKind],
) -> Result<Option<SecretKeyKind>, TokenError> {
    let probe = if label == WRAP_KEY_LABEL {
        token.wrap_key(label, &[0u8; 32]).await.map(|_| ())
    } else {
        token.hmac(label, b"probe").await.map(|_| ())
    };
    match probe {
        Ok(()) => return Ok(None),
        Err(TokenError::NoSuchKey(_)) => {}
        Err(e) => return Err(e),
    }
    let mut last = None;
    for kind in kinds {
        match token.generate_secret_key(label, *kind).await {
            Ok(()) => return Ok(Some(*kind)),
            Err(e @ TokenError::MechanismNotSupported(_)) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| TokenError::Config(format!("no key kind for {label}"))))
}
