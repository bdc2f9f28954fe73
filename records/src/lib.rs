//! The contract between kiosk and HQ: minimized record types, the signed and encrypted envelope,
//! batches, acks and audit checkpoints.
//!
//! # Encoding: CBOR
//! Every wire value is CBOR (RFC 8949) produced by `ciborium` from the serde types in
//! [`wire`]. CBOR was chosen over protobuf because it needs no code generation or `.proto`
//! toolchain, is self-describing (HQ can log *which* field was malformed), has a binary string
//! type for ciphertexts and digests, and is already the encoding of the audit entries. The
//! schema is the Rust types plus an explicit `schema_version` field at the top of every
//! batch, ack and envelope; a version other than [`wire::SCHEMA_VERSION`] is rejected with
//! [`codec::CodecError::UnsupportedSchemaVersion`] before anything else is decoded.
//!
//! # Modules
//! - [`wire`]: record types, [`wire::Batch`], [`wire::Ack`].
//! - [`envelope`]: [`envelope::seal_batch`] (kiosk) and [`envelope::SealedEnvelope`] (HQ).
//! - [`signing`]: [`signing::RecordSigner`] (implemented by the daemon over its token),
//!   [`signing::SoftSigner`], [`signing::PublicVerifier`].
//! - [`merkle`]: RFC 6962/9162 tree hashing with SM3, [`merkle::Frontier`], proofs.
//! - [`checkpoint`]: C2SP tlog-checkpoint signed notes and witness cosignatures.
//! - [`public_keys`]: JSON files of HQ's encryption keys and of public verifiers.
//! - `client` (cargo feature `client`): the kiosk's mTLS client to hq-ingest.

pub mod checkpoint;
#[cfg(feature = "client")]
pub mod client;
pub mod codec;
pub mod envelope;
pub mod merkle;
pub mod public_keys;
pub mod signing;
pub mod wire;

pub use codec::CodecError;
pub use envelope::{
    EnvelopeError, EnvelopeHeader, EnvelopeRecipient, RecipientPublicKeys, SealedEnvelope,
    SoftRecipient, Suite, open_field, seal_batch, seal_field,
};
pub use public_keys::{
    PublicKeyJsonError, recipient_public_from_json, recipient_public_to_json, verifier_from_json,
    verifier_to_json,
};
pub use signing::{
    PublicVerifier, RecordSigner, SM2_DEFAULT_DISTID, SignatureAlgorithm, SignatureError,
    SoftSigner,
};
pub use wire::*;
