//! HQ key files: the software record-decryption key and witness key (hex secrets), and the JSON
//! public-key files handed to kiosks. A PKCS#11-backed key implements the same
//! [`records::EnvelopeRecipient`] / [`records::RecordSigner`] traits instead.

use std::path::Path;

use records::{
    PublicVerifier, RecipientPublicKeys, SM2_DEFAULT_DISTID, SignatureAlgorithm, SoftRecipient,
    SoftSigner,
};
use serde::{Deserialize, Serialize};
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

#[derive(Serialize, Deserialize)]
struct RecipientJson {
    sm2_sec1_hex: String,
    hpke_p256_hex: String,
}

#[derive(Serialize, Deserialize)]
struct VerifierJson {
    algorithm: SignatureAlgorithm,
    public_key_hex: String,
    sm2_distid: Option<String>,
}

/// JSON of HQ's public encryption keys.
pub fn recipient_public_to_json(keys: &RecipientPublicKeys) -> String {
    let json = RecipientJson {
        sm2_sec1_hex: hex::encode(&keys.sm2_sec1),
        hpke_p256_hex: hex::encode(&keys.hpke_p256),
    };
    serde_json::to_string_pretty(&json).unwrap_or_default()
}

/// Parse [`recipient_public_to_json`].
pub fn recipient_public_from_json(text: &str) -> Result<RecipientPublicKeys, String> {
    let json: RecipientJson = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(RecipientPublicKeys {
        sm2_sec1: hex::decode(json.sm2_sec1_hex).map_err(|e| e.to_string())?,
        hpke_p256: hex::decode(json.hpke_p256_hex).map_err(|e| e.to_string())?,
    })
}

/// JSON of a public verifier (witness key, kiosk registration).
pub fn verifier_to_json(v: &PublicVerifier) -> String {
    let json = VerifierJson {
        algorithm: v.algorithm,
        public_key_hex: hex::encode(&v.sec1),
        sm2_distid: v.distid.clone(),
    };
    serde_json::to_string_pretty(&json).unwrap_or_default()
}

/// Parse [`verifier_to_json`].
pub fn verifier_from_json(text: &str) -> Result<PublicVerifier, String> {
    let json: VerifierJson = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(PublicVerifier {
        algorithm: json.algorithm,
        sec1: hex::decode(json.public_key_hex).map_err(|e| e.to_string())?,
        distid: json.sm2_distid,
    })
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
