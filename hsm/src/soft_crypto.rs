//! Software side of the crypto: public-key encodings (SEC1, SPKI, PEM), signature
//! conversions, verification with `p256` and `sm2`, the SM2 `SM3(Z_A ‖ M)` digest for tokens
//! that sign digests, and the software signers of the soft provider. All primitives come
//! from RustCrypto crates; nothing here implements a primitive.

use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};
use signature::{Signer, Verifier};
use sm3::Sm3;
use zeroize::Zeroizing;

use crate::types::{KeyAlgorithm, TokenSignature};
use crate::{Result, TokenError};

/// The SM2 default distinguishing identifier of GM/T 0009 (OpenSSL 3.0 defaults to empty).
pub const SM2_DEFAULT_DISTID: &str = "1234567812345678";

/// Curve constants of the SM2 recommended curve (GB/T 32918.5), as hashed into Z_A.
const SM2_A: &str = "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC";
const SM2_B: &str = "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93";
const SM2_GX: &str = "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7";
const SM2_GY: &str = "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0";

/// Fills a buffer from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| TokenError::Store(format!("no randomness: {e}")))?;
    Ok(buf)
}

fn bad_key(what: &str) -> TokenError {
    TokenError::InvalidInput(format!("malformed {what} public key"))
}

/// Checks a SEC1 point and returns it uncompressed (65 bytes).
pub fn normalize_public_key(algorithm: KeyAlgorithm, sec1: &[u8]) -> Result<Vec<u8>> {
    match algorithm {
        KeyAlgorithm::P256 => {
            let key =
                p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1).map_err(|_| bad_key("P-256"))?;
            Ok(key.to_sec1_point(false).as_bytes().to_vec())
        }
        KeyAlgorithm::Sm2 => {
            let key = sm2::PublicKey::from_sec1_bytes(sec1).map_err(|_| bad_key("SM2"))?;
            Ok(
                sm2::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&key, false)
                    .as_bytes()
                    .to_vec(),
            )
        }
    }
}

/// DER `SubjectPublicKeyInfo` of a public key.
pub fn public_key_spki_der(algorithm: KeyAlgorithm, sec1: &[u8]) -> Result<Vec<u8>> {
    let doc = match algorithm {
        KeyAlgorithm::P256 => p256::PublicKey::from_sec1_bytes(sec1)
            .map_err(|_| bad_key("P-256"))?
            .to_public_key_der(),
        KeyAlgorithm::Sm2 => sm2::PublicKey::from_sec1_bytes(sec1)
            .map_err(|_| bad_key("SM2"))?
            .to_public_key_der(),
    };
    Ok(doc
        .map_err(|e| TokenError::Encoding(e.to_string()))?
        .as_bytes()
        .to_vec())
}

/// PEM (`PUBLIC KEY`) of a public key.
pub fn public_key_pem(algorithm: KeyAlgorithm, sec1: &[u8]) -> Result<String> {
    let der = public_key_spki_der(algorithm, sec1)?;
    Ok(pem::encode_config(
        &pem::Pem::new("PUBLIC KEY", der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    ))
}

/// r‖s → DER `SEQUENCE { r INTEGER, s INTEGER }`.
pub fn raw_signature_to_der(algorithm: KeyAlgorithm, raw: &[u8]) -> Result<Vec<u8>> {
    match algorithm {
        KeyAlgorithm::P256 => Ok(p256::ecdsa::Signature::from_slice(raw)
            .map_err(|_| TokenError::BadSignature)?
            .to_der()
            .as_bytes()
            .to_vec()),
        KeyAlgorithm::Sm2 => Ok(sm2::dsa::Signature::from_slice(raw)
            .map_err(|_| TokenError::BadSignature)?
            .to_der()
            .as_bytes()
            .to_vec()),
    }
}

impl TokenSignature {
    /// The X9.62 / GM/T 0009 DER `SEQUENCE { r, s }` of the raw r‖s signature.
    pub fn to_der(&self) -> Result<Vec<u8>> {
        raw_signature_to_der(self.algorithm, &self.raw)
    }
}

/// DER `SEQUENCE { r, s }` → r‖s.
pub fn der_signature_to_raw(algorithm: KeyAlgorithm, der: &[u8]) -> Result<Vec<u8>> {
    match algorithm {
        KeyAlgorithm::P256 => Ok(p256::ecdsa::Signature::from_der(der)
            .map_err(|_| TokenError::BadSignature)?
            .to_bytes()
            .to_vec()),
        KeyAlgorithm::Sm2 => Ok(sm2::dsa::Signature::from_der(der)
            .map_err(|_| TokenError::BadSignature)?
            .to_bytes()
            .to_vec()),
    }
}

/// Verifies a raw (r‖s) signature over `message`: ECDSA-SHA256 for P-256, SM2-with-SM3 with
/// the distinguishing identifier `distid` for SM2. To check many signatures by one key, build a
/// [`SoftVerifyingKey`] once instead (the key is parsed and, for SM2, `Z_A` hashed only once).
pub fn verify(
    algorithm: KeyAlgorithm,
    public_sec1: &[u8],
    distid: &str,
    message: &[u8],
    raw_signature: &[u8],
) -> Result<()> {
    SoftVerifyingKey::new(algorithm, public_sec1, distid)?.verify(message, raw_signature)
}

/// A parsed public key ready to verify many signatures (SM2: `Z_A` computed once).
#[derive(Debug, Clone)]
pub enum SoftVerifyingKey {
    P256(p256::ecdsa::VerifyingKey),
    Sm2(sm2::dsa::VerifyingKey),
}

impl SoftVerifyingKey {
    /// Parses an SEC1 public key; SM2 signatures are checked under `distid`.
    pub fn new(algorithm: KeyAlgorithm, public_sec1: &[u8], distid: &str) -> Result<Self> {
        Ok(match algorithm {
            KeyAlgorithm::P256 => Self::P256(
                p256::ecdsa::VerifyingKey::from_sec1_bytes(public_sec1)
                    .map_err(|_| bad_key("P-256"))?,
            ),
            KeyAlgorithm::Sm2 => Self::Sm2(
                sm2::dsa::VerifyingKey::from_sec1_bytes(distid, public_sec1)
                    .map_err(|_| bad_key("SM2"))?,
            ),
        })
    }

    /// Verifies a raw (r‖s) signature over `message`.
    pub fn verify(&self, message: &[u8], raw_signature: &[u8]) -> Result<()> {
        match self {
            Self::P256(key) => {
                let sig = p256::ecdsa::Signature::from_slice(raw_signature)
                    .map_err(|_| TokenError::BadSignature)?;
                key.verify(message, &sig)
                    .map_err(|_| TokenError::BadSignature)
            }
            Self::Sm2(key) => {
                let sig = sm2::dsa::Signature::from_slice(raw_signature)
                    .map_err(|_| TokenError::BadSignature)?;
                key.verify(message, &sig)
                    .map_err(|_| TokenError::BadSignature)
            }
        }
    }
}

/// `Z_A = SM3(ENTL_A ‖ ID_A ‖ a ‖ b ‖ x_G ‖ y_G ‖ x_A ‖ y_A)` (GB/T 32918.2 §5.5).
pub fn sm2_z(distid: &str, public_sec1: &[u8]) -> Result<[u8; 32]> {
    let point = normalize_public_key(KeyAlgorithm::Sm2, public_sec1)?;
    let entl: u16 = distid
        .len()
        .checked_mul(8)
        .and_then(|bits| u16::try_from(bits).ok())
        .ok_or_else(|| TokenError::InvalidInput("SM2 distinguishing id too long".into()))?;
    let mut h = Sm3::new();
    h.update(entl.to_be_bytes());
    h.update(distid.as_bytes());
    for constant in [SM2_A, SM2_B, SM2_GX, SM2_GY] {
        h.update(hex::decode(constant).map_err(|e| TokenError::Encoding(e.to_string()))?);
    }
    h.update(point.get(1..).unwrap_or_default());
    Ok(h.finalize().into())
}

/// The digest a token signs: SHA-256(M) for P-256, SM3(Z_A ‖ M) for SM2.
pub fn message_digest(
    algorithm: KeyAlgorithm,
    public_sec1: &[u8],
    distid: &str,
    message: &[u8],
) -> Result<[u8; 32]> {
    match algorithm {
        KeyAlgorithm::P256 => Ok(Sha256::digest(message).into()),
        KeyAlgorithm::Sm2 => Ok(sm2_digest_with_z(&sm2_z(distid, public_sec1)?, message)),
    }
}

/// `SM3(Z_A ‖ M)` with a `Z_A` computed once per key by [`sm2_z`].
pub fn sm2_digest_with_z(z: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut h = Sm3::new();
    h.update(z);
    h.update(message);
    h.finalize().into()
}

/// A private key held by the soft provider: the secret scalar (wiped on drop, kept for
/// sealing) and a ready signer (public key and, for SM2, Z_A computed once).
pub struct SoftSigningKey {
    pub algorithm: KeyAlgorithm,
    secret: Zeroizing<Vec<u8>>,
    signer: ReadySigner,
}

enum ReadySigner {
    P256(p256::ecdsa::SigningKey),
    Sm2(sm2::dsa::SigningKey),
}

impl SoftSigningKey {
    /// Generates a fresh key pair; SM2 signatures use `distid`.
    pub fn generate(algorithm: KeyAlgorithm, distid: &str) -> Result<Self> {
        for _ in 0..16 {
            let candidate = Zeroizing::new(random_bytes::<32>()?.to_vec());
            if let Ok(key) = Self::from_secret(algorithm, candidate, distid) {
                return Ok(key);
            }
        }
        Err(TokenError::Store("could not draw a valid scalar".into()))
    }

    /// Restores a key from its unsealed scalar bytes.
    pub fn from_secret(
        algorithm: KeyAlgorithm,
        secret: Zeroizing<Vec<u8>>,
        distid: &str,
    ) -> Result<Self> {
        let bad = || TokenError::Store("sealed key is not a valid scalar".into());
        let signer = match algorithm {
            KeyAlgorithm::P256 => {
                ReadySigner::P256(p256::ecdsa::SigningKey::from_slice(&secret).map_err(|_| bad())?)
            }
            KeyAlgorithm::Sm2 => ReadySigner::Sm2(
                sm2::dsa::SigningKey::from_slice(distid, &secret).map_err(|_| bad())?,
            ),
        };
        Ok(Self {
            algorithm,
            secret,
            signer,
        })
    }

    pub fn secret_bytes(&self) -> &[u8] {
        &self.secret
    }

    /// Uncompressed SEC1 public key.
    pub fn public_key(&self) -> Vec<u8> {
        match &self.signer {
            ReadySigner::P256(key) => key.verifying_key().to_sec1_point(false).as_bytes().to_vec(),
            ReadySigner::Sm2(key) => key.verifying_key().to_sec1_bytes().to_vec(),
        }
    }

    /// Signs `message` (hashing included): raw r‖s. Nonces are RFC 6979 deterministic.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        match &self.signer {
            ReadySigner::P256(key) => {
                let sig: p256::ecdsa::Signature = key
                    .try_sign(message)
                    .map_err(|_| TokenError::BadSignature)?;
                Ok(sig.to_bytes().to_vec())
            }
            ReadySigner::Sm2(key) => {
                let sig = key
                    .try_sign(message)
                    .map_err(|_| TokenError::BadSignature)?;
                Ok(sig.to_bytes().to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // GB/T 32918.5-2017 Annex A / GM/T 0003.5 sample: SM2 signature over "message digest"
    // with ID 1234567812345678.
    const D_A: &str = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8";
    const X_A: &str = "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020";
    const Y_A: &str = "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13";
    const Z_A: &str = "B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3";
    const E: &str = "F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640";
    const R: &str = "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3";
    const S: &str = "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA";

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).expect("test hex")
    }

    fn sample_public() -> Vec<u8> {
        [vec![4u8], h(X_A), h(Y_A)].concat()
    }

    #[test]
    fn gbt32918_sample_key_z_digest_and_signature() {
        let key = SoftSigningKey::from_secret(
            KeyAlgorithm::Sm2,
            Zeroizing::new(h(D_A)),
            SM2_DEFAULT_DISTID,
        )
        .unwrap();
        assert_eq!(key.public_key(), sample_public());
        assert_eq!(
            sm2_z(SM2_DEFAULT_DISTID, &sample_public())
                .unwrap()
                .to_vec(),
            h(Z_A)
        );
        let e = message_digest(
            KeyAlgorithm::Sm2,
            &sample_public(),
            SM2_DEFAULT_DISTID,
            b"message digest",
        )
        .unwrap();
        assert_eq!(e.to_vec(), h(E));
        let sig = [h(R), h(S)].concat();
        verify(
            KeyAlgorithm::Sm2,
            &sample_public(),
            SM2_DEFAULT_DISTID,
            b"message digest",
            &sig,
        )
        .expect("standard sample signature verifies");
        assert!(
            verify(
                KeyAlgorithm::Sm2,
                &sample_public(),
                "",
                b"message digest",
                &sig
            )
            .is_err()
        );
        assert!(
            verify(
                KeyAlgorithm::Sm2,
                &sample_public(),
                SM2_DEFAULT_DISTID,
                b"message digesT",
                &sig
            )
            .is_err()
        );
        // Our own signature with the sample key verifies too, and the DER form round-trips.
        let ours = key.sign(b"message digest").unwrap();
        verify(
            KeyAlgorithm::Sm2,
            &sample_public(),
            SM2_DEFAULT_DISTID,
            b"message digest",
            &ours,
        )
        .unwrap();
        let der = raw_signature_to_der(KeyAlgorithm::Sm2, &ours).unwrap();
        assert_eq!(der_signature_to_raw(KeyAlgorithm::Sm2, &der).unwrap(), ours);
    }

    #[test]
    fn p256_sign_verify_and_reject() {
        let key = SoftSigningKey::generate(KeyAlgorithm::P256, "").unwrap();
        let public = key.public_key();
        let sig = key.sign(b"checkpoint").unwrap();
        verify(KeyAlgorithm::P256, &public, "", b"checkpoint", &sig).unwrap();
        assert!(verify(KeyAlgorithm::P256, &public, "", b"checkpoinT", &sig).is_err());
        assert!(
            public_key_pem(KeyAlgorithm::P256, &public)
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        assert!(verify(KeyAlgorithm::P256, &public, "", b"x", &[0u8; 3]).is_err());
        assert!(normalize_public_key(KeyAlgorithm::P256, &[4, 1, 2]).is_err());
    }
}
