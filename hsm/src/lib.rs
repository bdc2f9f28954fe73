//! Everything kioskd does with keys, behind one [`Token`] trait: the PKCS#11 provider
//! (`cryptoki`) for UKEYs and HSMs, and the [`soft`] provider as the embedded default.
//!
//! - [`TokenProvider`]: list tokens, open one by label or RFC 7512 URI, initialise a blank
//!   token, refresh slots (hot-plug), subscribe to events.
//! - [`Token`]: login/PIN (never retried automatically), key pairs (P-256, SM2), signing
//!   (raw and DER), certificates next to keys, token-held HMAC and wrapping keys.
//! - [`csr`]: PKCS#10 requests signed by a token key; certificate parsing.
//! - [`open_from_config`]: the provider and device token the daemon configures.

pub mod csr;
mod error;
pub mod hotplug;
mod pin;
pub mod pkcs11;
pub mod profile;
pub mod soft;
pub mod soft_crypto;
mod token;
mod types;
pub mod uri;

mod config;

pub use config::{DeviceToken, open_from_config, open_provider, resolve_profile};
pub use error::{Result, TokenError};
pub use pin::Pin;
pub use token::{Token, TokenProvider};
pub use types::{
    KeyAlgorithm, KeyInfo, PinState, SecretKeyKind, TokenEvent, TokenInfo, TokenSignature, UserKind,
};
pub use uri::Pkcs11Uri;
