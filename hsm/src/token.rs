//! The `Token` and `TokenProvider` traits: the only way kioskd touches keys.
//!
//! A provider is one key store (a PKCS#11 module, or the soft token directory) holding
//! tokens; a token is one UKEY, HSM partition or soft token. Both are object safe and used
//! as `Arc<dyn …>`. No method retries a PIN: a wrong PIN is returned as
//! [`TokenError::PinIncorrect`] and it is up to a person to try again.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;
use zeroize::Zeroizing;

use crate::pin::Pin;
use crate::types::{KeyAlgorithm, KeyInfo, SecretKeyKind, TokenEvent, TokenInfo, UserKind};
use crate::uri::Pkcs11Uri;
use crate::{Result, TokenError, TokenSignature};

/// A key store holding tokens.
#[async_trait]
pub trait TokenProvider: Send + Sync {
    /// Short name for logs (`pkcs11:/usr/lib/…`, `soft:/var/lib/…`).
    fn describe(&self) -> String;

    /// Every present token, with its flags and PIN state.
    async fn list_tokens(&self) -> Result<Vec<TokenInfo>>;

    /// Opens the token with this label (first match).
    async fn open_token(&self, label: &str) -> Result<Arc<dyn Token>>;

    /// Opens the first token matching the token attributes of a PKCS#11 URI.
    async fn open_token_by_uri(&self, uri: &Pkcs11Uri) -> Result<Arc<dyn Token>> {
        let tokens = self.list_tokens().await?;
        let found = tokens
            .iter()
            .find(|t| uri.matches_token(t))
            .ok_or_else(|| TokenError::TokenNotPresent(uri.to_string()))?;
        self.open_token(&found.label).await
    }

    /// Initialises a blank token (first free slot; a new soft token): label, SO PIN, user PIN.
    async fn init_token(&self, label: &str, so_pin: &Pin, user_pin: &Pin) -> Result<TokenInfo>;

    /// Re-initialises the present token with this serial, as staff do with UKEYs that ship
    /// initialised from the factory with a transport SO PIN: `so_pin` (the current SO PIN) is
    /// checked once by `C_InitToken`, which wipes the token's objects and sets `new_label`;
    /// then the SO PIN becomes `new_so_pin`. The user PIN is left unset (set it with
    /// [`Token::unblock_user_pin`] and the new SO PIN). A wrong `so_pin` leaves the token as it
    /// was. Cached sessions of this token in the provider are dropped first.
    async fn reinit_token(
        &self,
        serial: &str,
        so_pin: &Pin,
        new_label: &str,
        new_so_pin: &Pin,
    ) -> Result<TokenInfo>;

    /// Re-reads the slot list and reports what changed (also runs on hot-plug events).
    async fn refresh(&self) -> Result<Vec<TokenEvent>>;

    /// Subscribes to token arrival/removal events.
    fn events(&self) -> broadcast::Receiver<TokenEvent>;
}

/// One token. Keys are named by label; each key pair has a `CKA_ID` shared with its
/// certificate.
#[async_trait]
pub trait Token: Send + Sync {
    /// Fresh token facts (re-read from the token: PIN state changes after failed logins).
    async fn info(&self) -> Result<TokenInfo>;

    /// Logs in once with this PIN. Never retried automatically.
    async fn login(&self, user: UserKind, pin: &Pin) -> Result<()>;

    async fn logout(&self) -> Result<()>;

    /// Whether this process holds a login on the token (cached; cleared on removal).
    fn is_logged_in(&self) -> bool;

    /// Changes the PIN of `user` (needs the old PIN; logs in as that user if necessary).
    async fn change_pin(&self, user: UserKind, old: &Pin, new: &Pin) -> Result<()>;

    /// Unblocks (resets) the user PIN with the SO PIN.
    async fn unblock_user_pin(&self, so_pin: &Pin, new_user_pin: &Pin) -> Result<()>;

    /// Generates a key pair on the token: private key sensitive and never extractable.
    async fn generate_key_pair(&self, label: &str, algorithm: KeyAlgorithm) -> Result<KeyInfo>;

    /// Key pairs matching the object attributes of `filter` (`pkcs11:` matches all).
    async fn find_keys(&self, filter: &Pkcs11Uri) -> Result<Vec<KeyInfo>>;

    /// The key pair with this label.
    async fn key(&self, label: &str) -> Result<KeyInfo> {
        let filter = Pkcs11Uri {
            object: Some(label.to_owned()),
            ..Pkcs11Uri::default()
        };
        self.find_keys(&filter)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| TokenError::NoSuchKey(label.to_owned()))
    }

    /// Signs `message`: ECDSA-SHA256 for P-256 keys, SM2-with-SM3 (Z_A with the configured
    /// distinguishing id) for SM2 keys. Hashing is done on the host, the token signs the digest
    /// (or the message, where the vendor profile says the token computes Z_A itself).
    async fn sign(&self, key_label: &str, message: &[u8]) -> Result<TokenSignature>;

    /// The SM2 distinguishing identifier this token signs with.
    fn sm2_distid(&self) -> &str;

    /// Start-up probe. Without a key: the token offers what its vendor profile names (PKCS#11:
    /// the mechanism list). With a key: a test signature with it, checked for the encoding the
    /// profile says and verified in software. A mismatch is [`TokenError::ProbeFailed`] or
    /// [`TokenError::ProfileMismatch`], naming the profile, the mechanism and what the token
    /// did. Tokens without vendor profiles only check that the signature verifies.
    async fn probe(&self, key_label: Option<&str>) -> Result<()> {
        let Some(label) = key_label else {
            return Ok(());
        };
        let key = self.key(label).await?;
        let message = crate::profile::PROBE_MESSAGE;
        let signature = self.sign(label, message).await?;
        crate::soft_crypto::verify(
            key.algorithm,
            &key.public_key,
            self.sm2_distid(),
            message,
            &signature.raw,
        )
        .map_err(|_| TokenError::ProbeFailed {
            profile: "none".into(),
            detail: format!("the test signature with key {label:?} does not verify"),
        })
    }

    /// Stores a DER certificate next to its key (same `CKA_ID`, label = key label),
    /// replacing an older one. The certificate's public key must be the key's.
    async fn write_certificate(&self, key_label: &str, cert_der: &[u8]) -> Result<()>;

    /// The DER certificate stored next to the key, if any.
    async fn read_certificate(&self, key_label: &str) -> Result<Option<Vec<u8>>>;

    /// Generates a secret key held in the token (sensitive, never extractable).
    async fn generate_secret_key(&self, label: &str, kind: SecretKeyKind) -> Result<()>;

    /// HMAC of `data` with a secret key held in the token (keyed digests of identifiers).
    async fn hmac(&self, key_label: &str, data: &[u8]) -> Result<Vec<u8>>;

    /// Wraps a data key with a token-held AES key (AES-GCM; output = nonce ‖ ciphertext ‖ tag).
    async fn wrap_key(&self, key_label: &str, data_key: &[u8]) -> Result<Vec<u8>>;

    /// Unwraps what [`Token::wrap_key`] produced.
    async fn unwrap_key(&self, key_label: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>>;
}
