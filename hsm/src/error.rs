//! Typed errors of every token operation, shared by the PKCS#11 and soft providers.

use std::time::Duration;

/// What went wrong with a token. Variants are stable: the daemon maps them to API error codes
/// and the CLI prints them as one line.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("wrong PIN{}", retries_hint(*.retries_left))]
    PinIncorrect { retries_left: Option<u32> },
    #[error("PIN locked: unblock it with the SO PIN")]
    PinLocked,
    #[error("PIN rejected by the token: {0}")]
    PinInvalid(&'static str),
    #[error("not logged in to the token")]
    NotLoggedIn,
    #[error("no token labelled {0:?} is present")]
    TokenNotPresent(String),
    #[error("the token was removed during the operation")]
    TokenRemoved,
    #[error("no blank slot to initialise a token in")]
    NoFreeSlot,
    #[error("token {0:?} already exists")]
    TokenExists(String),
    #[error("no key labelled {0:?} on the token")]
    NoSuchKey(String),
    #[error("key {0:?} already exists on the token")]
    KeyExists(String),
    #[error("no certificate stored next to key {0:?}")]
    NoSuchCertificate(String),
    #[error("mechanism not supported by the token: {0}")]
    MechanismNotSupported(String),
    #[error("vendor profile {profile:?} does not match the token: missing {missing}")]
    ProfileMismatch { profile: String, missing: String },
    /// The start-up probe saw the token do something else than its profile says.
    #[error("profile {profile}: {detail}")]
    ProbeFailed { profile: String, detail: String },
    #[error("unknown vendor profile {0:?}")]
    UnknownProfile(String),
    #[error("token call did not finish within {0:?}")]
    Timeout(Duration),
    #[error("invalid PKCS#11 URI: {0}")]
    InvalidUri(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("soft token store: {0}")]
    Store(String),
    #[error("PKCS#11 module {path}: {message}")]
    Module { path: String, message: String },
    #[error("PKCS#11 {function}: {rv}")]
    Pkcs11 { function: String, rv: String },
    #[error("certificate or request encoding: {0}")]
    Encoding(String),
    #[error("configuration: {0}")]
    Config(String),
}

fn retries_hint(retries_left: Option<u32>) -> String {
    match retries_left {
        Some(1) => " (1 try left before the PIN locks)".to_owned(),
        Some(n) => format!(" ({n} tries left)"),
        None => String::new(),
    }
}

impl TokenError {
    /// Whether the error means the token (or its sessions) went away, so cached sessions,
    /// login state and handles must be dropped.
    pub fn is_token_gone(&self) -> bool {
        matches!(
            self,
            TokenError::TokenRemoved | TokenError::TokenNotPresent(_)
        )
    }
}

impl From<der::Error> for TokenError {
    fn from(e: der::Error) -> Self {
        TokenError::Encoding(e.to_string())
    }
}

pub type Result<T, E = TokenError> = std::result::Result<T, E>;
