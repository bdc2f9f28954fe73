//! The keys behind the privacy layer, as seen by the store: wrapping each
//! subject's data key (so destroying the wrapped key crypto-shreds the data)
//! and keyed digests of identifiers (HMAC-SM3 by default, HMAC-SHA-256
//! selectable) used to match records at HQ and to name subjects in the audit
//! log. The production implementation keeps both keys on the token
//! (over the `hsm` crate); [`SoftKeyVault`] holds them in memory for tests.

use hmac::{Hmac, KeyInit, Mac};
use zeroize::Zeroizing;

/// Key operation failures (defined beside the field cipher, which this module builds on).
pub use crate::store::crypto::KeyError;
use crate::store::crypto::{FieldCipherKind, FieldKey};

/// Which keyed digest identifiers get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    HmacSm3,
    HmacSha256,
}

/// Wrapping of data keys and keyed digests, with the keys held elsewhere.
pub trait KeyVault: Send + Sync {
    /// Wrap a subject's data key.
    fn wrap(&self, data_key: &[u8]) -> Result<Vec<u8>, KeyError>;
    /// Unwrap a data key wrapped by [`KeyVault::wrap`].
    fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError>;
    /// Keyed digest of `value` in a named domain (`"id_number"`, `"mobile"`).
    fn keyed_digest(&self, domain: &str, value: &[u8]) -> Result<[u8; 32], KeyError>;
}

/// Keyed digest with an explicit key (shared by the soft and token vaults).
pub fn hmac_digest(alg: DigestAlgorithm, key: &[u8], domain: &str, value: &[u8]) -> [u8; 32] {
    fn run<M: Mac + KeyInit>(key: &[u8], domain: &str, value: &[u8]) -> [u8; 32] {
        let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(&(domain.len() as u32).to_be_bytes());
        mac.update(domain.as_bytes());
        mac.update(value);
        let out = mac.finalize().into_bytes();
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&out[..32]);
        digest
    }
    match alg {
        DigestAlgorithm::HmacSm3 => run::<Hmac<sm3::Sm3>>(key, domain, value),
        DigestAlgorithm::HmacSha256 => run::<Hmac<sha2::Sha256>>(key, domain, value),
    }
}

/// Keys in memory: for tests and for deployments that accept a software module.
pub struct SoftKeyVault {
    wrap_key: FieldKey,
    digest_key: Zeroizing<[u8; 32]>,
    digest: DigestAlgorithm,
}

impl SoftKeyVault {
    pub fn new(wrap_key: [u8; 32], digest_key: [u8; 32], digest: DigestAlgorithm) -> Self {
        Self {
            wrap_key: FieldKey::new(FieldCipherKind::Aes256Gcm, &wrap_key),
            digest_key: Zeroizing::new(digest_key),
            digest,
        }
    }

    /// Fresh random keys (tests).
    pub fn random() -> Self {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        getrandom::fill(&mut a).expect("system randomness");
        getrandom::fill(&mut b).expect("system randomness");
        Self::new(a, b, DigestAlgorithm::HmacSm3)
    }
}

const WRAP_AAD: &[u8] = b"kioskd data-key wrap v1";

impl KeyVault for SoftKeyVault {
    fn wrap(&self, data_key: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.wrap_key.seal(data_key, WRAP_AAD)
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        self.wrap_key
            .open(wrapped, WRAP_AAD)
            .map_err(|_| KeyError::Unwrap)
    }

    fn keyed_digest(&self, domain: &str, value: &[u8]) -> Result<[u8; 32], KeyError> {
        Ok(hmac_digest(
            self.digest,
            &self.digest_key[..],
            domain,
            value,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_keyed_and_domain_separated() {
        let a = SoftKeyVault::random();
        let b = SoftKeyVault::random();
        let v = b"11010519491231002X";
        assert_eq!(
            a.keyed_digest("id_number", v).unwrap(),
            a.keyed_digest("id_number", v).unwrap()
        );
        assert_ne!(
            a.keyed_digest("id_number", v).unwrap(),
            b.keyed_digest("id_number", v).unwrap()
        );
        assert_ne!(
            a.keyed_digest("id_number", v).unwrap(),
            a.keyed_digest("mobile", v).unwrap()
        );
    }

    #[test]
    fn hmac_sm3_matches_a_known_answer() {
        // HMAC-SM3 with key "key", message "The quick brown fox jumps over the lazy dog"
        // computed with OpenSSL 3.0 (`openssl mac -digest SM3 -macopt key:key HMAC`).
        let mut mac = <Hmac<sm3::Sm3> as KeyInit>::new_from_slice(b"key").unwrap();
        mac.update(b"The quick brown fox jumps over the lazy dog");
        let out = hex::encode(mac.finalize().into_bytes());
        assert_eq!(out, EXPECTED_HMAC_SM3);
    }

    const EXPECTED_HMAC_SM3: &str =
        "bd4a34077888162b210645b8ebf74b9af357303789357a27c7fc457244ebd398";

    #[test]
    fn wrapped_keys_unwrap_only_with_the_same_vault() {
        let a = SoftKeyVault::random();
        let b = SoftKeyVault::random();
        let w = a.wrap(&[7u8; 16]).unwrap();
        assert_eq!(&a.unwrap(&w).unwrap()[..], &[7u8; 16]);
        assert!(matches!(b.unwrap(&w), Err(KeyError::Unwrap)));
    }
}
