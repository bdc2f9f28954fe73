//! Signature algorithms of the contract: the [`RecordSigner`] trait (implemented by the daemon
//! over its device key on the token), a software signer for tests and HQ's witness key, and the
//! software verifier HQ uses with each kiosk's registered public key.
//!
//! Signatures on the wire are raw `r ‖ s` (64 bytes) for both SM2 and ECDSA P-256. SM2 always
//! carries its distinguishing ID explicitly; nothing here assumes `1234567812345678` or `""`.

use serde::{Deserialize, Serialize};
use signature::{Signer, Verifier};

/// The SM2 distinguishing ID most GM tools use by default (GM/T 0009).
pub const SM2_DEFAULT_DISTID: &str = "1234567812345678";

/// Signature algorithm of a kiosk device key or HQ witness key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureAlgorithm {
    /// SM2 signature with SM3 (`Z_A` computed with an explicit distinguishing ID).
    Sm2Sm3,
    /// ECDSA P-256 with SHA-256.
    EcdsaP256Sha256,
}

impl SignatureAlgorithm {
    /// Stable name (stored at HQ next to the kiosk key).
    pub fn name(self) -> &'static str {
        match self {
            SignatureAlgorithm::Sm2Sm3 => "sm2-sm3",
            SignatureAlgorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
        }
    }

    /// Parse [`SignatureAlgorithm::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sm2-sm3" => Some(SignatureAlgorithm::Sm2Sm3),
            "ecdsa-p256-sha256" => Some(SignatureAlgorithm::EcdsaP256Sha256),
            _ => None,
        }
    }
}

/// Signing or verification failure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The signer (token, key file) failed.
    #[error("signer failed: {0}")]
    SignerFailed(String),
    /// The public key bytes are not a valid point.
    #[error("invalid {algorithm:?} public key")]
    InvalidPublicKey {
        /// Algorithm of the key.
        algorithm: SignatureAlgorithm,
    },
    /// An SM2 key was used without a distinguishing ID.
    #[error("SM2 requires an explicit distinguishing ID")]
    MissingDistId,
    /// The signature is malformed or does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The algorithm named by the message differs from the key's algorithm.
    #[error("algorithm mismatch: message says {message:?}, key is {key:?}")]
    AlgorithmMismatch {
        /// What the message names.
        message: SignatureAlgorithm,
        /// What the key is.
        key: SignatureAlgorithm,
    },
}

/// A signing key that may live on a token. The daemon implements this over `hsm::Token`.
pub trait RecordSigner: Send + Sync {
    /// The algorithm.
    fn algorithm(&self) -> SignatureAlgorithm;
    /// SM2 distinguishing ID (must be `Some` for SM2 keys, `None` otherwise).
    fn sm2_distid(&self) -> Option<&str>;
    /// SEC1 uncompressed public key (for key ids and registration at HQ).
    fn public_key_sec1(&self) -> Vec<u8>;
    /// Sign `message` (the signer hashes; for SM2 it computes `SM3(Z_A ‖ M)` with its distid).
    /// Returns raw `r ‖ s` (64 bytes).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignatureError>;
}

/// Convert a DER `SEQUENCE { r, s }` signature (as many tokens return) to raw `r ‖ s`.
pub fn raw_signature_from_der(
    algorithm: SignatureAlgorithm,
    der: &[u8],
) -> Result<Vec<u8>, SignatureError> {
    match algorithm {
        SignatureAlgorithm::Sm2Sm3 => sm2::dsa::Signature::from_der(der)
            .map(|s| s.to_bytes().to_vec())
            .map_err(|_| SignatureError::BadSignature),
        SignatureAlgorithm::EcdsaP256Sha256 => p256::ecdsa::Signature::from_der(der)
            .map(|s| s.to_bytes().to_vec())
            .map_err(|_| SignatureError::BadSignature),
    }
}

enum SoftKey {
    Sm2(Box<sm2::dsa::SigningKey>),
    P256(Box<p256::ecdsa::SigningKey>),
}

/// A software signing key (tests, demo, HQ witness key). Secret scalars zeroize on drop
/// inside the RustCrypto types.
pub struct SoftSigner {
    key: SoftKey,
    distid: Option<String>,
}

impl std::fmt::Debug for SoftSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftSigner")
            .field("algorithm", &self.algorithm())
            .field("distid", &self.distid)
            .finish_non_exhaustive()
    }
}

fn system_rng() -> rand_core::UnwrapErr<getrandom::SysRng> {
    rand_core::UnwrapErr(getrandom::SysRng)
}

impl SoftSigner {
    /// Fresh random SM2 key with the given distinguishing ID.
    pub fn generate_sm2(distid: &str) -> Result<Self, SignatureError> {
        let secret =
            <sm2::SecretKey as sm2::elliptic_curve::Generate>::generate_from_rng(&mut system_rng());
        Self::from_secret_bytes(SignatureAlgorithm::Sm2Sm3, &secret.to_bytes(), Some(distid))
    }

    /// Fresh random ECDSA P-256 key.
    pub fn generate_p256() -> Self {
        Self {
            key: SoftKey::P256(Box::new(
                <p256::ecdsa::SigningKey as p256::elliptic_curve::Generate>::generate_from_rng(
                    &mut system_rng(),
                ),
            )),
            distid: None,
        }
    }

    /// Load from a 32-byte secret scalar.
    pub fn from_secret_bytes(
        algorithm: SignatureAlgorithm,
        secret: &[u8],
        distid: Option<&str>,
    ) -> Result<Self, SignatureError> {
        let bad = || SignatureError::SignerFailed("invalid secret key bytes".into());
        match algorithm {
            SignatureAlgorithm::Sm2Sm3 => {
                let distid = distid.ok_or(SignatureError::MissingDistId)?;
                let key = sm2::dsa::SigningKey::from_slice(distid, secret).map_err(|_| bad())?;
                Ok(Self {
                    key: SoftKey::Sm2(Box::new(key)),
                    distid: Some(distid.to_owned()),
                })
            }
            SignatureAlgorithm::EcdsaP256Sha256 => {
                let key = p256::ecdsa::SigningKey::from_slice(secret).map_err(|_| bad())?;
                Ok(Self {
                    key: SoftKey::P256(Box::new(key)),
                    distid: None,
                })
            }
        }
    }

    /// The 32-byte secret scalar (for writing a demo key file). Zeroize after use.
    pub fn secret_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(match &self.key {
            SoftKey::Sm2(k) => k.to_bytes().to_vec(),
            SoftKey::P256(k) => k.to_bytes().to_vec(),
        })
    }

    /// The matching verifier.
    pub fn verifier(&self) -> PublicVerifier {
        PublicVerifier {
            algorithm: self.algorithm(),
            sec1: self.public_key_sec1(),
            distid: self.distid.clone(),
        }
    }
}

impl RecordSigner for SoftSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        match self.key {
            SoftKey::Sm2(_) => SignatureAlgorithm::Sm2Sm3,
            SoftKey::P256(_) => SignatureAlgorithm::EcdsaP256Sha256,
        }
    }

    fn sm2_distid(&self) -> Option<&str> {
        self.distid.as_deref()
    }

    fn public_key_sec1(&self) -> Vec<u8> {
        use sm2::elliptic_curve::sec1::ToSec1Point;
        match &self.key {
            SoftKey::Sm2(k) => k.verifying_key().to_sec1_bytes().to_vec(),
            SoftKey::P256(k) => k
                .verifying_key()
                .as_affine()
                .to_sec1_point(false)
                .as_bytes()
                .to_vec(),
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignatureError> {
        match &self.key {
            SoftKey::Sm2(k) => {
                let sig: sm2::dsa::Signature = k
                    .try_sign(message)
                    .map_err(|e| SignatureError::SignerFailed(e.to_string()))?;
                Ok(sig.to_bytes().to_vec())
            }
            SoftKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k
                    .try_sign(message)
                    .map_err(|e| SignatureError::SignerFailed(e.to_string()))?;
                Ok(sig.to_bytes().to_vec())
            }
        }
    }
}

/// A public key HQ registered for a kiosk (or a kiosk pinned for HQ's witness key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicVerifier {
    /// Algorithm.
    pub algorithm: SignatureAlgorithm,
    /// SEC1 public key.
    #[serde(with = "serde_bytes")]
    pub sec1: Vec<u8>,
    /// SM2 distinguishing ID the key signs with (`None` for ECDSA).
    pub distid: Option<String>,
}

impl PublicVerifier {
    /// Verify a raw `r ‖ s` signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        let invalid = SignatureError::InvalidPublicKey {
            algorithm: self.algorithm,
        };
        match self.algorithm {
            SignatureAlgorithm::Sm2Sm3 => {
                let distid = self
                    .distid
                    .as_deref()
                    .ok_or(SignatureError::MissingDistId)?;
                let key = sm2::dsa::VerifyingKey::from_sec1_bytes(distid, &self.sec1)
                    .map_err(|_| invalid)?;
                let sig = sm2::dsa::Signature::from_slice(signature)
                    .map_err(|_| SignatureError::BadSignature)?;
                key.verify(message, &sig)
                    .map_err(|_| SignatureError::BadSignature)
            }
            SignatureAlgorithm::EcdsaP256Sha256 => {
                let key =
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(&self.sec1).map_err(|_| invalid)?;
                let sig = p256::ecdsa::Signature::from_slice(signature)
                    .map_err(|_| SignatureError::BadSignature)?;
                key.verify(message, &sig)
                    .map_err(|_| SignatureError::BadSignature)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sm2_distid_is_part_of_the_signature() {
        let signer = SoftSigner::generate_sm2(SM2_DEFAULT_DISTID).unwrap();
        let sig = signer.sign(b"msg").unwrap();
        assert_eq!(sig.len(), 64);
        signer.verifier().verify(b"msg", &sig).unwrap();
        let mut empty_id = signer.verifier();
        empty_id.distid = Some(String::new());
        assert_eq!(
            empty_id.verify(b"msg", &sig),
            Err(SignatureError::BadSignature)
        );
        let mut no_id = signer.verifier();
        no_id.distid = None;
        assert_eq!(
            no_id.verify(b"msg", &sig),
            Err(SignatureError::MissingDistId)
        );
    }

    #[test]
    fn p256_signs_and_rejects_other_message() {
        let signer = SoftSigner::generate_p256();
        let sig = signer.sign(b"msg").unwrap();
        signer.verifier().verify(b"msg", &sig).unwrap();
        assert_eq!(
            signer.verifier().verify(b"msh", &sig),
            Err(SignatureError::BadSignature)
        );
        let reloaded = SoftSigner::from_secret_bytes(
            SignatureAlgorithm::EcdsaP256Sha256,
            &signer.secret_bytes(),
            None,
        )
        .unwrap();
        assert_eq!(reloaded.public_key_sec1(), signer.public_key_sec1());
    }
}
