//! Encryption of personal fields at rest: SM4-GCM (default) or AES-256-GCM,
//! 96-bit random nonces, the field's identity bound in the associated data so a
//! ciphertext cannot be moved to another subject or item. Layout of a sealed
//! value: `nonce (12) ‖ ciphertext ‖ tag (16)`. The lowest key module of the daemon: it owns
//! [`FieldKey`] and [`KeyError`]; `crate::keys` builds its vaults on it.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, AesGcm};
use zeroize::Zeroizing;

/// Key operation failures, shared by the field cipher here and the key vaults of
/// `crate::keys` (which build on this module; this module imports nothing from them).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the key store (token) is unavailable: {0}")]
    Unavailable(String),
    #[error("a wrapped key does not unwrap: wrong key or tampered data")]
    Unwrap,
    #[error("randomness unavailable: {0}")]
    Random(String),
}

/// SM4-GCM: `aes-gcm`'s GCM over the SM4 block cipher (byte-identical to GmSSL's sm4_gcm).
type Sm4Gcm = AesGcm<sm4::Sm4, aes_gcm::aead::consts::U12>;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Which cipher protects fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldCipherKind {
    Sm4Gcm,
    Aes256Gcm,
}

impl FieldCipherKind {
    /// Length of a data key for this cipher.
    pub fn key_len(self) -> usize {
        match self {
            FieldCipherKind::Sm4Gcm => 16,
            FieldCipherKind::Aes256Gcm => 32,
        }
    }

    /// Stable name stored beside wrapped keys.
    pub fn name(self) -> &'static str {
        match self {
            FieldCipherKind::Sm4Gcm => "sm4-gcm",
            FieldCipherKind::Aes256Gcm => "aes256-gcm",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sm4-gcm" => Some(FieldCipherKind::Sm4Gcm),
            "aes256-gcm" => Some(FieldCipherKind::Aes256Gcm),
            _ => None,
        }
    }
}

impl From<kiosk_config::FieldCipher> for FieldCipherKind {
    fn from(c: kiosk_config::FieldCipher) -> Self {
        match c {
            kiosk_config::FieldCipher::Sm4Gcm => FieldCipherKind::Sm4Gcm,
            kiosk_config::FieldCipher::Aes256Gcm => FieldCipherKind::Aes256Gcm,
        }
    }
}

/// A data key, zeroized on drop.
pub struct FieldKey {
    kind: FieldCipherKind,
    key: Zeroizing<Vec<u8>>,
}

impl FieldKey {
    /// Build from key bytes (the first `kind.key_len()` bytes are used).
    pub fn new(kind: FieldCipherKind, key: &[u8]) -> Self {
        assert!(
            key.len() >= kind.key_len(),
            "key too short for {}",
            kind.name()
        );
        Self {
            kind,
            key: Zeroizing::new(key[..kind.key_len()].to_vec()),
        }
    }

    /// A fresh random data key.
    pub fn generate(kind: FieldCipherKind) -> Result<Self, KeyError> {
        let mut key = Zeroizing::new(vec![0u8; kind.key_len()]);
        getrandom::fill(&mut key).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self { kind, key })
    }

    pub fn kind(&self) -> FieldCipherKind {
        self.kind
    }

    /// The raw key (to be wrapped).
    pub fn bytes(&self) -> &[u8] {
        &self.key
    }

    /// Encrypt `plaintext` bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| KeyError::Random(e.to_string()))?;
        let payload = Payload {
            msg: plaintext,
            aad,
        };
        let ct = match self.kind {
            FieldCipherKind::Sm4Gcm => Sm4Gcm::new_from_slice(&self.key)
                .map_err(|_| KeyError::Unwrap)?
                .encrypt(&nonce.into(), payload),
            FieldCipherKind::Aes256Gcm => Aes256Gcm::new_from_slice(&self.key)
                .map_err(|_| KeyError::Unwrap)?
                .encrypt(&nonce.into(), payload),
        }
        .map_err(|_| KeyError::Unwrap)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypt a value sealed by [`FieldKey::seal`] with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(KeyError::Unwrap);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| KeyError::Unwrap)?;
        let payload = Payload { msg: ct, aad };
        let pt = match self.kind {
            FieldCipherKind::Sm4Gcm => Sm4Gcm::new_from_slice(&self.key)
                .map_err(|_| KeyError::Unwrap)?
                .decrypt(&nonce.into(), payload),
            FieldCipherKind::Aes256Gcm => Aes256Gcm::new_from_slice(&self.key)
                .map_err(|_| KeyError::Unwrap)?
                .decrypt(&nonce.into(), payload),
        }
        .map_err(|_| KeyError::Unwrap)?;
        Ok(Zeroizing::new(pt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_binds_the_aad() {
        for kind in [FieldCipherKind::Sm4Gcm, FieldCipherKind::Aes256Gcm] {
            let key = FieldKey::generate(kind).unwrap();
            let sealed = key.seal("张三".as_bytes(), b"subject-1/name").unwrap();
            assert_eq!(
                &key.open(&sealed, b"subject-1/name").unwrap()[..],
                "张三".as_bytes()
            );
            assert!(key.open(&sealed, b"subject-2/name").is_err(), "{kind:?}");
            let mut flipped = sealed.clone();
            *flipped.last_mut().unwrap() ^= 1;
            assert!(key.open(&flipped, b"subject-1/name").is_err());
            assert!(key.open(&sealed[..10], b"subject-1/name").is_err());
        }
    }

    #[test]
    fn sm4_block_matches_gb_t_32907() {
        // GB/T 32907-2016 appendix A: key = plaintext = 0123456789abcdeffedcba9876543210.
        use sm4::cipher::{BlockCipherEncrypt, KeyInit as _};
        let k = hex::decode("0123456789abcdeffedcba9876543210").unwrap();
        let cipher = sm4::Sm4::new_from_slice(&k).unwrap();
        let mut block = sm4::cipher::Array::try_from(&k[..]).unwrap();
        cipher.encrypt_block(&mut block);
        assert_eq!(hex::encode(block), "681edf34d206965e86b3e94f536e4246");
    }

    #[test]
    fn sm4_gcm_matches_rfc_8998() {
        // SM4-GCM vector from RFC 8998 appendix A.1.
        let key = FieldKey::new(
            FieldCipherKind::Sm4Gcm,
            &hex::decode("0123456789ABCDEFFEDCBA9876543210").unwrap(),
        );
        let nonce = hex::decode("00001234567800000000ABCD").unwrap();
        let aad = hex::decode("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2").unwrap();
        let pt = hex::decode(
            "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDDEEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA",
        )
        .unwrap();
        let ct = Sm4Gcm::new_from_slice(key.bytes())
            .unwrap()
            .encrypt(
                nonce[..].try_into().unwrap(),
                Payload {
                    msg: &pt,
                    aad: &aad,
                },
            )
            .unwrap();
        assert_eq!(
            hex::encode_upper(&ct),
            "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D83DE3541E4C2B58177E065A9BF7B62EC"
        );
    }
}
