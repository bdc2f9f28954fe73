//! HQ key files: the software record-decryption key and witness key (hex secrets). The JSON
//! public-key files handed to kiosks are `records::public_keys` (re-exported here). A PKCS#11-backed key implements the same
//! [`records::EnvelopeRecipient`] / [`records::RecordSigner`] traits instead.

use std::path::Path;

pub use records::public_keys::{
    PublicKeyJsonError, recipient_public_from_json, recipient_public_to_json, verifier_from_json,
    verifier_to_json,
};
use records::{SM2_DEFAULT_DISTID, SignatureAlgorithm, SoftRecipient, SoftSigner};
use zeroize::Zeroizing;

/// Key file failure.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// File unreadable.
    #[error("cannot read key file {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Content invalid.
    #[error("invalid key file {path}: {reason}")]
    Invalid {
        /// Path.
        path: String,
        /// Why.
        reason: String,
    },
}

fn read_hex_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let text =
        Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
                path: path.display().to_string(),
                source,
            })?,
        );
    hex::decode(text.trim())
        .map(Zeroizing::new)
        .map_err(|e| KeyFileError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// Load HQ's software record-decryption key.
pub fn load_soft_recipient(path: &Path) -> Result<SoftRecipient, KeyFileError> {
    let secret = read_hex_secret(path)?;
    SoftRecipient::from_secret_bytes(&secret).map_err(|e| KeyFileError::Invalid {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Load HQ's software witness key (SM2, default distinguishing ID).
pub fn load_witness_key(path: &Path) -> Result<SoftSigner, KeyFileError> {
    let secret = read_hex_secret(path)?;
    SoftSigner::from_secret_bytes(
        SignatureAlgorithm::Sm2Sm3,
        &secret,
        Some(SM2_DEFAULT_DISTID),
    )
    .map_err(|e| KeyFileError::Invalid {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}
