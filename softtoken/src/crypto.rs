//! The module's cryptography, all from RustCrypto: P-256 ECDSA and SM2 key generation,
//! signing (of digests or messages, raw or DER) and verification, public-key encodings, and
//! the SM3 digests. Nothing here implements a primitive.

use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};
use signature::hazmat::{PrehashSigner, PrehashVerifier};
use sm3::Sm3;
use zeroize::Zeroizing;

use crate::vendor::{SigFormat, Sm2Input};

/// The SM2 default distinguishing identifier of GM/T 0009.
pub const SM2_DEFAULT_ID: &str = "1234567812345678";

/// DER OID of prime256v1 (CKA_EC_PARAMS).
pub const EC_PARAMS_P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// DER OID 1.2.156.10197.1.301 (the SM2 curve).
pub const EC_PARAMS_SM2: &[u8] = &[0x06, 0x08, 0x2A, 0x81, 0x1C, 0xCF, 0x55, 0x01, 0x82, 0x2D];

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("no randomness from the operating system")]
    Rng,
    #[error("invalid key material")]
    BadKey,
    #[error("invalid input length")]
    InputLength,
    #[error("signature does not verify")]
    BadSignature,
    #[error("signature has the wrong length or encoding")]
    SignatureEncoding,
    #[error("SM2 distinguishing identifier too long")]
    IdTooLong,
    #[error("signing failed")]
    Signing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    Sm2,
}

pub fn random<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|_| CryptoError::Rng)?;
    Ok(buf)
}

/// A private key ready to sign: the scalar (kept for SM2 signatures under another id) and
/// the parsed key.
pub enum SigningKey {
    P256(p256::ecdsa::SigningKey),
    Sm2 {
        secret: Zeroizing<Vec<u8>>,
        key: sm2::dsa::SigningKey,
    },
    /// A generic secret for HMAC-SHA256.
    Hmac(Zeroizing<Vec<u8>>),
    /// An AES-256 key for AES-GCM.
    Aes(Zeroizing<Vec<u8>>),
}

impl SigningKey {
    pub fn from_secret(curve: Curve, secret: &[u8]) -> Result<Self, CryptoError> {
        Ok(match curve {
            Curve::P256 => Self::P256(
                p256::ecdsa::SigningKey::from_slice(secret).map_err(|_| CryptoError::BadKey)?,
            ),
            Curve::Sm2 => Self::Sm2 {
                key: sm2::dsa::SigningKey::from_slice(SM2_DEFAULT_ID, secret)
                    .map_err(|_| CryptoError::BadKey)?,
                secret: Zeroizing::new(secret.to_vec()),
            },
        })
    }

    /// A fresh key from the OS CSPRNG (scalars out of range are drawn again).
    pub fn generate(curve: Curve) -> Result<(Self, Zeroizing<Vec<u8>>), CryptoError> {
        for _ in 0..16 {
            let candidate = Zeroizing::new(random::<32>()?.to_vec());
            if let Ok(key) = Self::from_secret(curve, &candidate) {
                return Ok((key, candidate));
            }
        }
        Err(CryptoError::BadKey)
    }

    /// Uncompressed SEC1 point (empty for secret keys).
    pub fn public_point(&self) -> Vec<u8> {
        match self {
            Self::P256(k) => k.verifying_key().to_sec1_point(false).as_bytes().to_vec(),
            Self::Sm2 { key, .. } => key.verifying_key().to_sec1_bytes().to_vec(),
            Self::Hmac(_) | Self::Aes(_) => Vec::new(),
        }
    }

    /// HMAC-SHA256 (CKM_SHA256_HMAC).
    pub fn hmac_sha256(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        use hmac::{KeyInit, Mac};
        let Self::Hmac(key) = self else {
            return Err(CryptoError::BadKey);
        };
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .map_err(|_| CryptoError::BadKey)?;
        mac.update(data);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    /// AES-256-GCM (CKM_AES_GCM, 96-bit IV, 128-bit tag): ciphertext ‖ tag, or the plaintext.
    pub fn aes_gcm(
        &self,
        encrypt: bool,
        iv: &[u8; 12],
        aad: &[u8],
        data: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let Self::Aes(key) = self else {
            return Err(CryptoError::BadKey);
        };
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(key).map_err(|_| CryptoError::BadKey)?;
        let nonce = aes_gcm::Nonce::from(*iv);
        let payload = Payload { msg: data, aad };
        if encrypt {
            cipher
                .encrypt(&nonce, payload)
                .map_err(|_| CryptoError::Signing)
        } else {
            cipher
                .decrypt(&nonce, payload)
                .map_err(|_| CryptoError::BadSignature)
        }
    }

    /// ECDSA over a caller's hash (CKM_ECDSA) → r ‖ s.
    pub fn ecdsa_prehash(&self, hash: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let Self::P256(key) = self else {
            return Err(CryptoError::BadKey);
        };
        if hash.len() < 16 || hash.len() > 64 {
            return Err(CryptoError::InputLength);
        }
        let sig: p256::ecdsa::Signature =
            key.sign_prehash(hash).map_err(|_| CryptoError::Signing)?;
        Ok(sig.to_bytes().to_vec())
    }

    /// ECDSA-SHA256 over a message (CKM_ECDSA_SHA256) → r ‖ s.
    pub fn ecdsa_sha256(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.ecdsa_prehash(&Sha256::digest(message))
    }

    /// SM2 signature per a vendor mechanism's semantics. `id` replaces the default
    /// distinguishing identifier for mechanisms that compute Z_A.
    pub fn sm2_sign(
        &self,
        input: Sm2Input,
        format: SigFormat,
        id: Option<&[u8]>,
        data: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let Self::Sm2 { key, .. } = self else {
            return Err(CryptoError::BadKey);
        };
        let e: [u8; 32] = match input {
            Sm2Input::Digest => data.try_into().map_err(|_| CryptoError::InputLength)?,
            Sm2Input::MessageNoZ => Sm3::digest(data).into(),
            Sm2Input::MessageWithZ => {
                let id = id.unwrap_or(SM2_DEFAULT_ID.as_bytes());
                let z = sm2_z(id, &key.verifying_key().to_sec1_bytes())?;
                let mut h = Sm3::new();
                h.update(z);
                h.update(data);
                h.finalize().into()
            }
        };
        let sig: sm2::dsa::Signature = key.sign_prehash(&e).map_err(|_| CryptoError::Signing)?;
        Ok(match format {
            SigFormat::Raw => sig.to_bytes().to_vec(),
            SigFormat::Der => sig.to_der().as_bytes().to_vec(),
        })
    }
}

/// `Z_A = SM3(ENTL ‖ ID ‖ a ‖ b ‖ x_G ‖ y_G ‖ x_A ‖ y_A)` (GB/T 32918.2 §5.5): the curve
/// constants are taken from the `sm2` crate by hashing through its own verifying key.
pub fn sm2_z(id: &[u8], public_sec1: &[u8]) -> Result<[u8; 32], CryptoError> {
    const A: [u8; 32] = hex32("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC");
    const B: [u8; 32] = hex32("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93");
    const GX: [u8; 32] = hex32("32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7");
    const GY: [u8; 32] = hex32("BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0");
    let entl = u16::try_from(id.len() * 8).map_err(|_| CryptoError::IdTooLong)?;
    let point = sm2::PublicKey::from_sec1_bytes(public_sec1).map_err(|_| CryptoError::BadKey)?;
    let encoded = sm2::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&point, false);
    let mut h = Sm3::new();
    h.update(entl.to_be_bytes());
    h.update(id);
    for c in [A, B, GX, GY] {
        h.update(c);
    }
    h.update(&encoded.as_bytes()[1..]);
    Ok(h.finalize().into())
}

const fn hex32(s: &str) -> [u8; 32] {
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'A'..=b'F' => c - b'A' + 10,
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("not hex"),
    }
}

/// Opens a GM/T 0016 `ENVELOPEDKEYBLOB` (packed, little-endian): the SM4 key inside its
/// `ECCCIPHERBLOB` (C1 ‖ C3 ‖ C2) is SM2-decrypted with `unwrapping`, the 64-byte private key
/// field SM4-ECB-decrypted with it (32 zero bytes ‖ d), and d·G must equal the blob's public
/// key. Returns d and the uncompressed public point.
pub fn open_sm2_envelope(
    unwrapping: &SigningKey,
    blob: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), CryptoError> {
    use sm4::cipher::{BlockCipherDecrypt, KeyInit};
    let SigningKey::Sm2 { secret, .. } = unwrapping else {
        return Err(CryptoError::BadKey);
    };
    let u32_at = |o: usize| -> Result<u32, CryptoError> {
        let b: [u8; 4] = blob
            .get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or(CryptoError::InputLength)?;
        Ok(u32::from_le_bytes(b))
    };
    // Version 1, SGD_SM4_ECB, 256-bit SM2 key; public key BitLen 256.
    if u32_at(0)? != 1 || u32_at(4)? != 0x401 || u32_at(8)? != 256 || u32_at(76)? != 256 {
        return Err(CryptoError::BadKey);
    }
    let c2_len = u32_at(368)? as usize;
    if blob.len() != 372 + c2_len {
        return Err(CryptoError::InputLength);
    }
    let coordinate = |o: usize| -> Result<&[u8], CryptoError> {
        let field = &blob[o..o + 64];
        if field[..32].iter().any(|b| *b != 0) {
            return Err(CryptoError::BadKey);
        }
        Ok(&field[32..])
    };
    let mut point = vec![0x04];
    point.extend_from_slice(coordinate(80)?);
    point.extend_from_slice(coordinate(144)?);
    let mut ciphertext = vec![0x04];
    ciphertext.extend_from_slice(coordinate(208)?);
    ciphertext.extend_from_slice(coordinate(272)?);
    ciphertext.extend_from_slice(&blob[336..368]);
    ciphertext.extend_from_slice(&blob[372..]);
    let decrypting =
        sm2::pke::DecryptingKey::from_slice(secret).map_err(|_| CryptoError::BadKey)?;
    let sm4_key = Zeroizing::new(
        decrypting
            .decrypt(&ciphertext)
            .map_err(|_| CryptoError::BadKey)?,
    );
    let cipher = sm4::Sm4::new_from_slice(&sm4_key).map_err(|_| CryptoError::BadKey)?;
    let mut plain = Zeroizing::new(Vec::with_capacity(64));
    for chunk in blob[12..76].chunks_exact(16) {
        let mut block = sm4::cipher::Block::<sm4::Sm4>::default();
        block.copy_from_slice(chunk);
        cipher.decrypt_block(&mut block);
        plain.extend_from_slice(&block);
        block.fill(0);
    }
    if plain[..32].iter().any(|b| *b != 0) {
        return Err(CryptoError::BadKey);
    }
    let d = Zeroizing::new(plain[32..].to_vec());
    let key = SigningKey::from_secret(Curve::Sm2, &d)?;
    if key.public_point() != point {
        return Err(CryptoError::BadKey);
    }
    Ok((d, point))
}

/// DER `SubjectPublicKeyInfo` (CKA_PUBLIC_KEY_INFO).
pub fn spki_der(curve: Curve, point: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let doc = match curve {
        Curve::P256 => p256::PublicKey::from_sec1_bytes(point)
            .map_err(|_| CryptoError::BadKey)?
            .to_public_key_der(),
        Curve::Sm2 => sm2::PublicKey::from_sec1_bytes(point)
            .map_err(|_| CryptoError::BadKey)?
            .to_public_key_der(),
    };
    Ok(doc.map_err(|_| CryptoError::BadKey)?.as_bytes().to_vec())
}

/// `CKA_EC_POINT`: DER OCTET STRING around the uncompressed point (65 bytes → 67).
pub fn ec_point_attribute(point: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04, point.len() as u8];
    out.extend_from_slice(point);
    out
}

/// The point inside a `CKA_EC_POINT` value (DER OCTET STRING, or a bare point).
pub fn point_from_attribute(value: &[u8]) -> &[u8] {
    if value.len() >= 2 && value[0] == 0x04 && value[1] as usize == value.len() - 2 {
        &value[2..]
    } else {
        value
    }
}

/// A public key ready to verify.
pub enum VerifyingKey {
    P256(p256::ecdsa::VerifyingKey),
    Sm2 {
        point: Vec<u8>,
        key: sm2::dsa::VerifyingKey,
    },
}

impl VerifyingKey {
    pub fn new(curve: Curve, point: &[u8]) -> Result<Self, CryptoError> {
        Ok(match curve {
            Curve::P256 => Self::P256(
                p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                    .map_err(|_| CryptoError::BadKey)?,
            ),
            Curve::Sm2 => Self::Sm2 {
                key: sm2::dsa::VerifyingKey::from_sec1_bytes(SM2_DEFAULT_ID, point)
                    .map_err(|_| CryptoError::BadKey)?,
                point: point.to_vec(),
            },
        })
    }

    pub fn ecdsa_prehash(&self, hash: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        let Self::P256(key) = self else {
            return Err(CryptoError::BadKey);
        };
        if hash.len() < 16 || hash.len() > 64 {
            return Err(CryptoError::InputLength);
        }
        let sig =
            p256::ecdsa::Signature::from_slice(sig).map_err(|_| CryptoError::SignatureEncoding)?;
        key.verify_prehash(hash, &sig)
            .map_err(|_| CryptoError::BadSignature)
    }

    pub fn sm2_verify(
        &self,
        input: Sm2Input,
        format: SigFormat,
        id: Option<&[u8]>,
        data: &[u8],
        sig: &[u8],
    ) -> Result<(), CryptoError> {
        let Self::Sm2 { key, point } = self else {
            return Err(CryptoError::BadKey);
        };
        let e: [u8; 32] = match input {
            Sm2Input::Digest => data.try_into().map_err(|_| CryptoError::InputLength)?,
            Sm2Input::MessageNoZ => Sm3::digest(data).into(),
            Sm2Input::MessageWithZ => {
                let z = sm2_z(id.unwrap_or(SM2_DEFAULT_ID.as_bytes()), point)?;
                let mut h = Sm3::new();
                h.update(z);
                h.update(data);
                h.finalize().into()
            }
        };
        let sig = match format {
            SigFormat::Raw => sm2::dsa::Signature::from_slice(sig),
            SigFormat::Der => sm2::dsa::Signature::from_der(sig),
        }
        .map_err(|_| CryptoError::SignatureEncoding)?;
        key.verify_prehash(&e, &sig)
            .map_err(|_| CryptoError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signature::Verifier;

    #[test]
    fn sm2_message_with_z_matches_the_sm2_crate_and_digest_mode_agrees() {
        let (key, _) = SigningKey::generate(Curve::Sm2).unwrap();
        let point = key.public_point();
        let vk = sm2::dsa::VerifyingKey::from_sec1_bytes(SM2_DEFAULT_ID, &point).unwrap();
        let raw = key
            .sm2_sign(Sm2Input::MessageWithZ, SigFormat::Raw, None, b"hello")
            .unwrap();
        vk.verify(b"hello", &sm2::dsa::Signature::from_slice(&raw).unwrap())
            .unwrap();
        // Digest mode: the caller computes SM3(Z_A ‖ M).
        let z = sm2_z(SM2_DEFAULT_ID.as_bytes(), &point).unwrap();
        let e: [u8; 32] = Sm3::new()
            .chain_update(z)
            .chain_update(b"hello")
            .finalize()
            .into();
        let raw = key
            .sm2_sign(Sm2Input::Digest, SigFormat::Der, None, &e)
            .unwrap();
        vk.verify(b"hello", &sm2::dsa::Signature::from_der(&raw).unwrap())
            .unwrap();
        let ours = VerifyingKey::new(Curve::Sm2, &point).unwrap();
        ours.sm2_verify(Sm2Input::Digest, SigFormat::Der, None, &e, &raw)
            .unwrap();
        assert!(
            ours.sm2_verify(Sm2Input::MessageNoZ, SigFormat::Der, None, b"hello", &raw)
                .is_err()
        );
    }

    #[test]
    fn p256_ecdsa_sha256_verifies_with_p256() {
        let (key, _) = SigningKey::generate(Curve::P256).unwrap();
        let raw = key.ecdsa_sha256(b"m").unwrap();
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_point()).unwrap();
        vk.verify(b"m", &p256::ecdsa::Signature::from_slice(&raw).unwrap())
            .unwrap();
        assert_eq!(ec_point_attribute(&key.public_point()).len(), 67);
    }
}
