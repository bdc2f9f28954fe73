//! The envelope around a [`Batch`]: encrypted to HQ's public key, then signed by the kiosk's
//! device key (encrypt-then-sign, so HQ checks the signature before it spends work on
//! decryption).
//!
//! Suites:
//! - `gm-sm2-sm4gcm` (default): SM2/SM3 signature with the distinguishing ID named in the header;
//!   a fresh 128-bit SM4-GCM key encrypted to HQ's SM2 key (GM/T 0009 DER ciphertext, C1C3C2).
//! - `nist-p256-hpke`: ECDSA P-256/SHA-256 signature; HPKE (RFC 9180) base mode,
//!   DHKEM(P-256, HKDF-SHA256) / HKDF-SHA256 / AES-128-GCM.
//!
//! The CBOR-encoded header (suite, signature algorithm, SM2 distid, kiosk id, batch seq) is the
//! AEAD's associated data and is covered by the signature, so any change to it is detected.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use hpke::{Deserializable, Kem as _, Serializable};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::codec::{self, CodecError};
use crate::merkle::Hash;
use crate::signing::{PublicVerifier, RecordSigner, SignatureAlgorithm, SignatureError};
use crate::wire::{Batch, SCHEMA_VERSION};

type Sm4Gcm = aes_gcm::AesGcm<sm4::Sm4, aes_gcm::aead::consts::U12>;
type HpkeKem = hpke::kem::DhP256HkdfSha256;
type HpkeKdf = hpke::kdf::HkdfSha256;
type HpkeAead = hpke::aead::AesGcm128;

const HPKE_INFO: &[u8] = b"kioskd-records/v1";
const SIGNING_DOMAIN: &[u8] = b"kioskd-envelope/v1\0";
/// Largest envelope HQ parses (bounded allocation).
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024 * 1024;

/// Cipher suite of an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suite {
    /// SM2/SM3 signature, SM2-wrapped SM4-GCM key.
    Gm,
    /// ECDSA P-256 signature, HPKE P-256/HKDF-SHA256/AES-128-GCM.
    Nist,
}

impl Suite {
    /// Wire name.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Gm => "gm-sm2-sm4gcm",
            Suite::Nist => "nist-p256-hpke",
        }
    }

    /// Parse a wire name.
    pub fn from_name(name: &str) -> Result<Self, EnvelopeError> {
        match name {
            "gm-sm2-sm4gcm" => Ok(Suite::Gm),
            "nist-p256-hpke" => Ok(Suite::Nist),
            other => Err(EnvelopeError::UnknownSuite(
                other.chars().take(64).collect(),
            )),
        }
    }

    /// The signature algorithm this suite requires.
    pub fn signature_algorithm(self) -> SignatureAlgorithm {
        match self {
            Suite::Gm => SignatureAlgorithm::Sm2Sm3,
            Suite::Nist => SignatureAlgorithm::EcdsaP256Sha256,
        }
    }
}

/// Envelope failures; each maps to a stable HQ error code via [`EnvelopeError::code`].
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Encoding problem or unsupported schema version.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The header names a suite this build does not know.
    #[error("unknown envelope suite {0:?}")]
    UnknownSuite(String),
    /// The header's signature algorithm does not fit its suite or the signer.
    #[error("suite {suite} needs {expected:?} signatures, got {found:?}")]
    SuiteMismatch {
        /// Suite name.
        suite: &'static str,
        /// Algorithm the suite needs.
        expected: SignatureAlgorithm,
        /// Algorithm found.
        found: SignatureAlgorithm,
    },
    /// An SM2 envelope header without a distinguishing ID.
    #[error("SM2 envelope header lacks the signer's distinguishing ID")]
    MissingDistId,
    /// Signature invalid (tampering or wrong kiosk key).
    #[error("envelope signature: {0}")]
    Signature(#[from] SignatureError),
    /// HQ's public key for the suite is missing or invalid.
    #[error("recipient key for suite {0} is missing or invalid")]
    RecipientKey(&'static str),
    /// Content key could not be unwrapped (wrong HQ key or tampering).
    #[error("content key could not be unwrapped (wrong recipient key or tampered envelope)")]
    KeyUnwrap,
    /// AEAD decryption failed (tampering or wrong key).
    #[error("envelope decryption failed (tampered ciphertext or header)")]
    Decrypt,
    /// Encryption failed.
    #[error("envelope encryption failed")]
    Encrypt,
    /// Batch contents disagree with the authenticated header.
    #[error("batch disagrees with envelope header: {0}")]
    HeaderMismatch(&'static str),
    /// Envelope too large.
    #[error("envelope exceeds {MAX_ENVELOPE_BYTES} bytes")]
    TooLarge,
}

impl EnvelopeError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            EnvelopeError::Codec(CodecError::UnsupportedSchemaVersion { .. }) => {
                "unsupported_schema_version"
            }
            EnvelopeError::Codec(_) => "malformed",
            EnvelopeError::UnknownSuite(_) => "unknown_suite",
            EnvelopeError::SuiteMismatch { .. } | EnvelopeError::MissingDistId => "suite_mismatch",
            EnvelopeError::Signature(_) => "bad_signature",
            EnvelopeError::RecipientKey(_) => "recipient_key",
            EnvelopeError::KeyUnwrap | EnvelopeError::Decrypt => "decrypt_failed",
            EnvelopeError::Encrypt => "encrypt_failed",
            EnvelopeError::HeaderMismatch(_) => "header_mismatch",
            EnvelopeError::TooLarge => "too_large",
        }
    }
}

/// The authenticated envelope header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeHeader {
    /// Schema version.
    pub schema_version: u16,
    /// Suite wire name (see [`Suite::name`]).
    pub suite: String,
    /// Signature algorithm of the kiosk key.
    pub signature_algorithm: SignatureAlgorithm,
    /// SM2 distinguishing ID the signature was made with (`None` for ECDSA).
    pub sm2_distid: Option<String>,
    /// Kiosk id.
    pub kiosk_id: String,
    /// Batch sequence number.
    pub batch_seq: u64,
}

#[derive(Serialize, Deserialize)]
struct EnvelopeWire {
    schema_version: u16,
    #[serde(with = "serde_bytes")]
    header: Vec<u8>,
    #[serde(with = "serde_bytes")]
    key_encap: Vec<u8>,
    #[serde(with = "serde_bytes")]
    nonce: Vec<u8>,
    #[serde(with = "serde_bytes")]
    ciphertext: Vec<u8>,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
}

/// HQ's public encryption keys as distributed to kiosks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RecipientPublicKeys {
    /// SM2 public key (SEC1) for the GM suite.
    #[serde(with = "serde_bytes")]
    pub sm2_sec1: Vec<u8>,
    /// HPKE DHKEM(P-256) public key (SEC1 uncompressed) for the NIST suite.
    #[serde(with = "serde_bytes")]
    pub hpke_p256: Vec<u8>,
}

/// HQ's decryption capability. A PKCS#11 implementation unwraps the SM2 content key on the
/// token; [`SoftRecipient`] does everything in software.
pub trait EnvelopeRecipient: Send + Sync {
    /// Decrypt `ciphertext` with associated data `aad`.
    fn open(
        &self,
        suite: Suite,
        key_encap: &[u8],
        nonce: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError>;
}

fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, EnvelopeError> {
    let mut buf = Zeroizing::new([0u8; N]);
    getrandom::fill(buf.as_mut_slice()).map_err(|_| EnvelopeError::Encrypt)?;
    Ok(buf)
}

fn rng() -> rand_core::UnwrapErr<getrandom::SysRng> {
    rand_core::UnwrapErr(getrandom::SysRng)
}

/// SM3 over the domain tag and every length-prefixed envelope part: what the kiosk signs and
/// the link of the batch chain (`Batch::prev_batch_hash` is the previous envelope's digest).
fn envelope_digest(w: &EnvelopeWire) -> Hash {
    use sm3::Digest;
    let mut h = sm3::Sm3::new();
    h.update(SIGNING_DOMAIN);
    for part in [&w.header, &w.key_encap, &w.nonce, &w.ciphertext] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// Seal a batch: encrypt to HQ, sign with the kiosk key. Returns the envelope bytes the kiosk
/// stores in its outbox and resends unchanged until acked.
pub fn seal_batch(
    batch: &Batch,
    suite: Suite,
    signer: &dyn RecordSigner,
    recipient: &RecipientPublicKeys,
) -> Result<Vec<u8>, EnvelopeError> {
    seal_batch_with_digest(batch, suite, signer, recipient).map(|(bytes, _)| bytes)
}

/// [`seal_batch`], also returning the envelope digest that the next batch must carry as
/// `prev_batch_hash` (and that HQ's ack echoes as `batch_hash`). Because the digest covers the
/// random nonce and key encapsulation, the kiosk must persist the sealed bytes with their
/// batch number before sending and resend exactly those bytes; re-sealing yields a new digest
/// that HQ treats as a fork.
pub fn seal_batch_with_digest(
    batch: &Batch,
    suite: Suite,
    signer: &dyn RecordSigner,
    recipient: &RecipientPublicKeys,
) -> Result<(Vec<u8>, Hash), EnvelopeError> {
    let algorithm = signer.algorithm();
    if algorithm != suite.signature_algorithm() {
        return Err(EnvelopeError::SuiteMismatch {
            suite: suite.name(),
            expected: suite.signature_algorithm(),
            found: algorithm,
        });
    }
    let sm2_distid = match algorithm {
        SignatureAlgorithm::Sm2Sm3 => Some(
            signer
                .sm2_distid()
                .ok_or(EnvelopeError::MissingDistId)?
                .to_owned(),
        ),
        SignatureAlgorithm::EcdsaP256Sha256 => None,
    };
    let header = EnvelopeHeader {
        schema_version: SCHEMA_VERSION,
        suite: suite.name().to_owned(),
        signature_algorithm: algorithm,
        sm2_distid,
        kiosk_id: batch.kiosk_id.clone(),
        batch_seq: batch.batch_seq,
    };
    let header_bytes = codec::to_vec(&header)?;
    let plaintext = Zeroizing::new(batch.to_bytes()?);
    let (key_encap, nonce, ciphertext) = encrypt_to(suite, recipient, &header_bytes, &plaintext)?;
    let mut wire = EnvelopeWire {
        schema_version: SCHEMA_VERSION,
        header: header_bytes,
        key_encap,
        nonce,
        ciphertext,
        signature: Vec::new(),
    };
    let digest = envelope_digest(&wire);
    wire.signature = signer.sign(&digest)?;
    Ok((codec::to_vec(&wire)?, digest))
}

/// Output of [`encrypt_to`]: (key encapsulation, nonce, ciphertext).
type EncryptedParts = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Encrypt `plaintext` to HQ under `suite`, binding `aad`: returns (key
/// encapsulation, nonce, ciphertext). Shared by batches and single fields.
fn encrypt_to(
    suite: Suite,
    recipient: &RecipientPublicKeys,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<EncryptedParts, EnvelopeError> {
    Ok(match suite {
        Suite::Gm => {
            let pk = sm2::pke::EncryptingKey::from_sec1_bytes(&recipient.sm2_sec1)
                .map_err(|_| EnvelopeError::RecipientKey(suite.name()))?;
            let key = random_bytes::<16>()?;
            let nonce = random_bytes::<12>()?;
            let key_encap = pk
                .encrypt_der(&mut rng(), key.as_slice())
                .map_err(|_| EnvelopeError::Encrypt)?;
            let cipher =
                Sm4Gcm::new_from_slice(key.as_slice()).map_err(|_| EnvelopeError::Encrypt)?;
            let ct = cipher
                .encrypt(
                    &(*nonce).into(),
                    Payload {
                        msg: plaintext,
                        aad,
                    },
                )
                .map_err(|_| EnvelopeError::Encrypt)?;
            (key_encap, nonce.to_vec(), ct)
        }
        Suite::Nist => {
            let pk = <HpkeKem as hpke::Kem>::PublicKey::from_bytes(&recipient.hpke_p256)
                .map_err(|_| EnvelopeError::RecipientKey(suite.name()))?;
            let (encapped, ct) = hpke::single_shot_seal_with_rng::<HpkeAead, HpkeKdf, HpkeKem>(
                &hpke::OpModeS::Base,
                &pk,
                HPKE_INFO,
                plaintext,
                aad,
                &mut rng(),
            )
            .map_err(|_| EnvelopeError::Encrypt)?;
            (encapped.to_bytes().to_vec(), Vec::new(), ct)
        }
    })
}

/// One personal field encrypted to HQ at the kiosk (catalog transfer rule
/// `encrypt`), so that it never sits in the kiosk's outbox in clear. The item
/// name is bound as associated data: a sealed name cannot pass for an address.
#[derive(Serialize, Deserialize)]
struct SealedFieldWire {
    suite: String,
    #[serde(with = "serde_bytes")]
    key_encap: Vec<u8>,
    #[serde(with = "serde_bytes")]
    nonce: Vec<u8>,
    #[serde(with = "serde_bytes")]
    ciphertext: Vec<u8>,
}

fn field_aad(item: &str) -> Vec<u8> {
    format!("kioskd-field/v1/{item}").into_bytes()
}

/// Encrypt one field value to HQ.
pub fn seal_field(
    suite: Suite,
    recipient: &RecipientPublicKeys,
    item: &str,
    value: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let (key_encap, nonce, ciphertext) = encrypt_to(suite, recipient, &field_aad(item), value)?;
    Ok(codec::to_vec(&SealedFieldWire {
        suite: suite.name().to_owned(),
        key_encap,
        nonce,
        ciphertext,
    })?)
}

/// Decrypt a field sealed by [`seal_field`] for `item` (HQ side).
pub fn open_field(
    recipient: &dyn EnvelopeRecipient,
    item: &str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    let wire: SealedFieldWire = codec::from_slice(sealed)?;
    let suite = Suite::from_name(&wire.suite)?;
    recipient.open(
        suite,
        &wire.key_encap,
        &wire.nonce,
        &field_aad(item),
        &wire.ciphertext,
    )
}

/// A parsed, not yet verified envelope.
pub struct SealedEnvelope {
    header: EnvelopeHeader,
    suite: Suite,
    wire: EnvelopeWire,
    digest: Hash,
}

impl std::fmt::Debug for SealedEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedEnvelope")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl SealedEnvelope {
    /// Parse envelope bytes: size bound, schema version, header, suite.
    pub fn parse(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge);
        }
        codec::check_schema_version(bytes)?;
        let wire: EnvelopeWire = codec::from_slice(bytes)?;
        codec::check_schema_version(&wire.header)?;
        let header: EnvelopeHeader = codec::from_slice(&wire.header)?;
        let suite = Suite::from_name(&header.suite)?;
        if header.signature_algorithm != suite.signature_algorithm() {
            return Err(EnvelopeError::SuiteMismatch {
                suite: suite.name(),
                expected: suite.signature_algorithm(),
                found: header.signature_algorithm,
            });
        }
        if suite == Suite::Gm && header.sm2_distid.is_none() {
            return Err(EnvelopeError::MissingDistId);
        }
        let digest = envelope_digest(&wire);
        Ok(Self {
            header,
            suite,
            wire,
            digest,
        })
    }

    /// The header (authenticated only after [`SealedEnvelope::verify`]).
    pub fn header(&self) -> &EnvelopeHeader {
        &self.header
    }

    /// The envelope digest (signed by the kiosk; the batch-chain link).
    pub fn digest(&self) -> Hash {
        self.digest
    }

    /// The suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Verify the kiosk's signature with its registered key. The SM2 distinguishing ID is the
    /// one the header names (it is itself covered by the signature).
    pub fn verify(&self, kiosk_key: &PublicVerifier) -> Result<(), EnvelopeError> {
        if kiosk_key.algorithm != self.header.signature_algorithm {
            return Err(SignatureError::AlgorithmMismatch {
                message: self.header.signature_algorithm,
                key: kiosk_key.algorithm,
            }
            .into());
        }
        let verifier = PublicVerifier {
            distid: self.header.sm2_distid.clone(),
            ..kiosk_key.clone()
        };
        verifier.verify(&self.digest, &self.wire.signature)?;
        Ok(())
    }

    /// Decrypt and decode the batch; checks it against the header. Call after `verify`.
    pub fn decrypt(&self, recipient: &dyn EnvelopeRecipient) -> Result<Batch, EnvelopeError> {
        let plaintext = recipient.open(
            self.suite,
            &self.wire.key_encap,
            &self.wire.nonce,
            &self.wire.header,
            &self.wire.ciphertext,
        )?;
        let batch = Batch::from_bytes(&plaintext)?;
        if batch.kiosk_id != self.header.kiosk_id {
            return Err(EnvelopeError::HeaderMismatch("kiosk id"));
        }
        if batch.batch_seq != self.header.batch_seq {
            return Err(EnvelopeError::HeaderMismatch("batch sequence number"));
        }
        Ok(batch)
    }
}

/// HQ's software decryption keys (SM2 and HPKE P-256).
pub struct SoftRecipient {
    sm2: sm2::pke::DecryptingKey,
    hpke: <HpkeKem as hpke::Kem>::PrivateKey,
}

impl SoftRecipient {
    /// Fresh random keys.
    pub fn generate() -> Self {
        let sm2 = sm2::pke::DecryptingKey::new(
            <sm2::SecretKey as sm2::elliptic_curve::Generate>::generate_from_rng(&mut rng()),
        );
        let (hpke, _) = HpkeKem::gen_keypair_with_rng(&mut rng());
        Self { sm2, hpke }
    }

    /// Load from the bytes written by [`SoftRecipient::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let (sm2_bytes, hpke_bytes) = bytes
            .split_at_checked(32)
            .ok_or(EnvelopeError::RecipientKey("soft recipient"))?;
        let sm2 = sm2::pke::DecryptingKey::from_slice(sm2_bytes)
            .map_err(|_| EnvelopeError::RecipientKey("gm-sm2-sm4gcm"))?;
        let hpke = <HpkeKem as hpke::Kem>::PrivateKey::from_bytes(hpke_bytes)
            .map_err(|_| EnvelopeError::RecipientKey("nist-p256-hpke"))?;
        Ok(Self { sm2, hpke })
    }

    /// 64 secret bytes: SM2 scalar ‖ HPKE P-256 scalar.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(self.sm2.to_bytes().to_vec());
        out.extend_from_slice(&self.hpke.to_bytes());
        out
    }

    /// The public keys kiosks encrypt to.
    pub fn public_keys(&self) -> RecipientPublicKeys {
        RecipientPublicKeys {
            sm2_sec1: self.sm2.encrypting_key().to_sec1_bytes().to_vec(),
            hpke_p256: HpkeKem::sk_to_pk(&self.hpke).to_bytes().to_vec(),
        }
    }
}

impl EnvelopeRecipient for SoftRecipient {
    fn open(
        &self,
        suite: Suite,
        key_encap: &[u8],
        nonce: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        match suite {
            Suite::Gm => {
                let key = Zeroizing::new(
                    self.sm2
                        .decrypt_der(key_encap)
                        .map_err(|_| EnvelopeError::KeyUnwrap)?,
                );
                let cipher = Sm4Gcm::new_from_slice(&key).map_err(|_| EnvelopeError::KeyUnwrap)?;
                let nonce: [u8; 12] = nonce.try_into().map_err(|_| EnvelopeError::Decrypt)?;
                cipher
                    .decrypt(
                        &nonce.into(),
                        Payload {
                            msg: ciphertext,
                            aad,
                        },
                    )
                    .map(Zeroizing::new)
                    .map_err(|_| EnvelopeError::Decrypt)
            }
            Suite::Nist => {
                let encapped = <HpkeKem as hpke::Kem>::EncappedKey::from_bytes(key_encap)
                    .map_err(|_| EnvelopeError::KeyUnwrap)?;
                hpke::single_shot_open::<HpkeAead, HpkeKdf, HpkeKem>(
                    &hpke::OpModeR::Base,
                    &self.hpke,
                    &encapped,
                    HPKE_INFO,
                    ciphertext,
                    aad,
                )
                .map(Zeroizing::new)
                .map_err(|_| EnvelopeError::Decrypt)
            }
        }
    }
}

/// Re-encode an envelope with a modified header (tests of HQ's rejection paths).
#[doc(hidden)]
pub fn tamper_header_for_tests(
    envelope: &[u8],
    edit: impl FnOnce(&mut EnvelopeHeader),
) -> Result<Vec<u8>, EnvelopeError> {
    let mut wire: EnvelopeWire = codec::from_slice(envelope)?;
    let mut header: EnvelopeHeader = codec::from_slice(&wire.header)?;
    edit(&mut header);
    wire.header = codec::to_vec(&header)?;
    Ok(codec::to_vec(&wire)?)
}

/// Flip one bit of the ciphertext (tests of HQ's rejection paths).
#[doc(hidden)]
pub fn tamper_ciphertext_for_tests(envelope: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let mut wire: EnvelopeWire = codec::from_slice(envelope)?;
    if let Some(b) = wire.ciphertext.first_mut() {
        *b ^= 1;
    }
    Ok(codec::to_vec(&wire)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{SM2_DEFAULT_DISTID, SoftSigner};
    use crate::wire::{Record, SequencedRecord};

    /// A dropped cipher must not leave its round keys (which give back the key) in freed
    /// memory: `sm4` and `aes` zeroize them only when built with their `zeroize` features.
    /// (A compile-time check: without the features this test does not build.)
    #[test]
    fn cipher_key_schedules_are_zeroized_on_drop() {
        fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroized_on_drop::<sm4::Sm4>();
        zeroized_on_drop::<aes_gcm::aes::Aes256>();
        zeroized_on_drop::<Sm4Gcm>();
        zeroized_on_drop::<aes_gcm::Aes256Gcm>();
    }

    fn batch(kiosk: &str) -> Batch {
        Batch {
            schema_version: SCHEMA_VERSION,
            kiosk_id: kiosk.into(),
            batch_seq: 7,
            prev_batch_hash: [3; 32],
            created_at: 1_700_000_000,
            records: vec![SequencedRecord {
                seq: 1,
                record_id: [9; 16],
                record: Record::DeletionNotice(crate::wire::DeletionNotice {
                    subject_ref: crate::wire::KeyedDigest {
                        algorithm: "hmac-sm3".into(),
                        key_id: "k1".into(),
                        digest: vec![1; 32].into(),
                    },
                    reason: "consent_withdrawn".into(),
                    items: vec![],
                    requested_at: 1_700_000_000,
                }),
            }],
            backlog: None,
        }
    }

    fn suites() -> Vec<(Suite, SoftSigner)> {
        vec![
            (
                Suite::Gm,
                SoftSigner::generate_sm2(SM2_DEFAULT_DISTID).unwrap(),
            ),
            (Suite::Gm, SoftSigner::generate_sm2("").unwrap()),
            (Suite::Nist, SoftSigner::generate_p256()),
        ]
    }

    #[test]
    fn round_trip_each_suite() {
        let hq = SoftRecipient::generate();
        let hq = SoftRecipient::from_secret_bytes(&hq.to_secret_bytes()).unwrap();
        for (suite, signer) in suites() {
            let bytes = seal_batch(&batch("k1"), suite, &signer, &hq.public_keys()).unwrap();
            let env = SealedEnvelope::parse(&bytes).unwrap();
            assert_eq!(env.header().kiosk_id, "k1");
            assert_eq!(env.header().sm2_distid.as_deref(), signer.sm2_distid());
            env.verify(&signer.verifier()).unwrap();
            assert_eq!(env.decrypt(&hq).unwrap(), batch("k1"));
        }
    }

    #[test]
    fn tampering_wrong_keys_and_unknown_suite_are_typed_errors() {
        let hq = SoftRecipient::generate();
        for (suite, signer) in suites() {
            let bytes = seal_batch(&batch("k1"), suite, &signer, &hq.public_keys()).unwrap();
            // Tampered ciphertext: signature fails.
            let t = tamper_ciphertext_for_tests(&bytes).unwrap();
            let env = SealedEnvelope::parse(&t).unwrap();
            assert!(matches!(
                env.verify(&signer.verifier()),
                Err(EnvelopeError::Signature(_))
            ));
            // Tampered header (kiosk id): signature fails, and the AEAD would fail too.
            let t = tamper_header_for_tests(&bytes, |h| h.kiosk_id = "k2".into()).unwrap();
            let env = SealedEnvelope::parse(&t).unwrap();
            assert!(matches!(
                env.verify(&signer.verifier()),
                Err(EnvelopeError::Signature(_))
            ));
            assert!(matches!(env.decrypt(&hq), Err(EnvelopeError::Decrypt)));
            // Wrong kiosk key.
            let other = match suite {
                Suite::Gm => SoftSigner::generate_sm2(SM2_DEFAULT_DISTID).unwrap(),
                Suite::Nist => SoftSigner::generate_p256(),
            };
            let env = SealedEnvelope::parse(&bytes).unwrap();
            assert!(matches!(
                env.verify(&other.verifier()),
                Err(EnvelopeError::Signature(SignatureError::BadSignature))
            ));
            // Wrong HQ key.
            let wrong_hq = SoftRecipient::generate();
            assert!(matches!(
                env.decrypt(&wrong_hq),
                Err(EnvelopeError::KeyUnwrap | EnvelopeError::Decrypt)
            ));
            // Unknown suite.
            let t = tamper_header_for_tests(&bytes, |h| h.suite = "rot13".into()).unwrap();
            let err = SealedEnvelope::parse(&t).unwrap_err();
            assert!(matches!(err, EnvelopeError::UnknownSuite(_)));
            assert_eq!(err.code(), "unknown_suite");
        }
    }

    #[test]
    fn suite_and_signer_must_agree_and_versions_are_checked() {
        let hq = SoftRecipient::generate();
        let p256 = SoftSigner::generate_p256();
        assert!(matches!(
            seal_batch(&batch("k1"), Suite::Gm, &p256, &hq.public_keys()),
            Err(EnvelopeError::SuiteMismatch { .. })
        ));
        let bytes = seal_batch(&batch("k1"), Suite::Nist, &p256, &hq.public_keys()).unwrap();
        let mut wire: EnvelopeWire = codec::from_slice(&bytes).unwrap();
        wire.schema_version = 99;
        let err = SealedEnvelope::parse(&codec::to_vec(&wire).unwrap()).unwrap_err();
        assert_eq!(err.code(), "unsupported_schema_version");
        let mut future = batch("k1");
        future.schema_version = 2;
        assert!(matches!(
            Batch::from_bytes(&future.to_bytes().unwrap()),
            Err(CodecError::UnsupportedSchemaVersion { found: 2, .. })
        ));
        assert!(SealedEnvelope::parse(b"\xff\x00garbage").is_err());
    }
}

#[cfg(test)]
mod field_tests {
    use super::*;

    #[test]
    fn fields_round_trip_per_suite_and_are_bound_to_their_item() {
        let hq = SoftRecipient::generate();
        for suite in [Suite::Gm, Suite::Nist] {
            let sealed = seal_field(suite, &hq.public_keys(), "name", "测试丙".as_bytes()).unwrap();
            assert!(!sealed.windows(9).any(|w| w == "测试丙".as_bytes()));
            assert_eq!(
                &open_field(&hq, "name", &sealed).unwrap()[..],
                "测试丙".as_bytes()
            );
            assert!(open_field(&hq, "address", &sealed).is_err(), "{suite:?}");
            let other = SoftRecipient::generate();
            assert!(open_field(&other, "name", &sealed).is_err(), "{suite:?}");
        }
    }
}
