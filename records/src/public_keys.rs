//! JSON files of public keys exchanged out of band: HQ's record-encryption public keys
//! ([`RecipientPublicKeys`], what kiosks seal to; `hq.record_key` on the kiosk) and public
//! verifiers ([`PublicVerifier`]: a kiosk's device key registered at HQ, HQ's witness key).
//! Fields are hex; the SM2 distinguishing ID is written out, never assumed.

use serde::{Deserialize, Serialize};

use crate::envelope::RecipientPublicKeys;
use crate::signing::{PublicVerifier, SignatureAlgorithm};

/// A public-key JSON file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PublicKeyJsonError {
    /// Not the expected JSON shape.
    #[error("public key JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A hex field is not hex.
    #[error("public key JSON field {field}: {source}")]
    Hex {
        /// Field name.
        field: &'static str,
        /// Cause.
        source: hex::FromHexError,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipientJson {
    sm2_sec1_hex: String,
    hpke_p256_hex: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifierJson {
    algorithm: SignatureAlgorithm,
    public_key_hex: String,
    sm2_distid: Option<String>,
}

fn unhex(field: &'static str, text: &str) -> Result<Vec<u8>, PublicKeyJsonError> {
    hex::decode(text).map_err(|source| PublicKeyJsonError::Hex { field, source })
}

fn pretty(value: &impl Serialize) -> String {
    // Serializing plain strings and a unit enum into JSON cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// JSON of HQ's public encryption keys (`sm2_sec1_hex`, `hpke_p256_hex`).
pub fn recipient_public_to_json(keys: &RecipientPublicKeys) -> String {
    pretty(&RecipientJson {
        sm2_sec1_hex: hex::encode(&keys.sm2_sec1),
        hpke_p256_hex: hex::encode(&keys.hpke_p256),
    })
}

/// Parse [`recipient_public_to_json`].
pub fn recipient_public_from_json(text: &str) -> Result<RecipientPublicKeys, PublicKeyJsonError> {
    let json: RecipientJson = serde_json::from_str(text)?;
    Ok(RecipientPublicKeys {
        sm2_sec1: unhex("sm2_sec1_hex", &json.sm2_sec1_hex)?,
        hpke_p256: unhex("hpke_p256_hex", &json.hpke_p256_hex)?,
    })
}

/// JSON of a public verifier (`algorithm`, `public_key_hex`, `sm2_distid`).
pub fn verifier_to_json(v: &PublicVerifier) -> String {
    pretty(&VerifierJson {
        algorithm: v.algorithm,
        public_key_hex: hex::encode(&v.sec1),
        sm2_distid: v.distid.clone(),
    })
}

/// Parse [`verifier_to_json`].
pub fn verifier_from_json(text: &str) -> Result<PublicVerifier, PublicKeyJsonError> {
    let json: VerifierJson = serde_json::from_str(text)?;
    Ok(PublicVerifier {
        algorithm: json.algorithm,
        sec1: unhex("public_key_hex", &json.public_key_hex)?,
        distid: json.sm2_distid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::SoftRecipient;
    use crate::signing::SoftSigner;

    #[test]
    fn round_trips_and_rejects_bad_hex() {
        let keys = SoftRecipient::generate().public_keys();
        let back = recipient_public_from_json(&recipient_public_to_json(&keys)).unwrap();
        assert_eq!(back.sm2_sec1, keys.sm2_sec1);
        assert_eq!(back.hpke_p256, keys.hpke_p256);

        let verifier = SoftSigner::generate_sm2("1234567812345678")
            .unwrap()
            .verifier();
        let back = verifier_from_json(&verifier_to_json(&verifier)).unwrap();
        assert_eq!(back.sec1, verifier.sec1);
        assert_eq!(back.distid.as_deref(), Some("1234567812345678"));

        let bad = r#"{"sm2_sec1_hex":"zz","hpke_p256_hex":"00"}"#;
        assert!(matches!(
            recipient_public_from_json(bad),
            Err(PublicKeyJsonError::Hex {
                field: "sm2_sec1_hex",
                ..
            })
        ));
        assert!(verifier_from_json("{}").is_err());
    }
}
