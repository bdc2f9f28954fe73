//! Versioned wire types exchanged between a kiosk and HQ: minimized records, batches and acks.
//!
//! Every value that reaches HQ has already been transformed on the kiosk by the privacy catalog
//! (encrypted, replaced by a keyed digest, masked or dropped). These types carry only those
//! transformed values; their `Debug` output never shows ciphertext or digest bytes.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::codec::{self, CodecError};
use crate::merkle::Hash;

/// The schema version this build writes and the only one it accepts (owned by the codec's
/// version gate).
pub use crate::codec::SCHEMA_VERSION;

/// A 16-byte unique record id assigned by the kiosk's outbox (UUID bytes).
pub type RecordId = [u8; 16];

/// Opaque bytes whose `Debug` only shows their length (ciphertexts, digests, signatures).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct OpaqueBytes(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for OpaqueBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpaqueBytes({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for OpaqueBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

/// A keyed digest (HMAC-SM3 or HMAC-SHA-256) used as a pseudonymous reference to a person.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedDigest {
    /// Digest algorithm name, e.g. `hmac-sm3` or `hmac-sha256`.
    pub algorithm: String,
    /// Identifier of the digest key (key rotation); never the key itself.
    pub key_id: String,
    /// The digest bytes.
    pub digest: OpaqueBytes,
}

impl fmt::Debug for KeyedDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedDigest")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A string that the kiosk already masked (e.g. `138****1234`); safe to display.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
#[serde(transparent)]
pub struct MaskedString(pub String);

/// One catalog item of a minimized record, already transformed as the catalog says.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct MinimizedField {
    /// Catalog item name (e.g. `id_number`, `mobile`).
    pub item: String,
    /// The transformed value.
    pub value: FieldValue,
}

/// A transformed field value. Its `Debug` shows the kind and size only: even a value the
/// catalog lets travel as it is stays out of logs and error messages.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum FieldValue {
    /// Encrypted at the kiosk (field-level encryption to an HQ key; opaque here).
    Ciphertext(OpaqueBytes),
    /// Replaced by a keyed digest.
    KeyedDigest(KeyedDigest),
    /// Masked for display.
    Masked(MaskedString),
    /// Sent as is: items the catalog declares public or non-personal for HQ
    /// (enterprise name, certificate, signature value, document digest).
    Plain(String),
}

impl fmt::Debug for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Ciphertext(c) => write!(f, "Ciphertext({} bytes)", c.0.len()),
            FieldValue::KeyedDigest(d) => d.fmt(f),
            FieldValue::Masked(m) => write!(f, "Masked({} chars)", m.0.chars().count()),
            FieldValue::Plain(p) => write!(f, "Plain({} bytes)", p.len()),
        }
    }
}

/// The minimized applicant record sent to HQ.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct ApplicantRecord {
    /// Pseudonymous subject reference (keyed digest of the ID number).
    pub subject_ref: KeyedDigest,
    /// Service the applicant used (catalog service name).
    pub service: String,
    /// Catalog version the transforms were taken from.
    pub catalog_version: String,
    /// The transformed fields.
    pub fields: Vec<MinimizedField>,
}

/// One consent decision.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct ConsentEntry {
    /// Purpose the consent is for.
    pub purpose: String,
    /// Sensitive item with separate consent, if any.
    pub item: Option<String>,
    /// Granted (`true`) or withdrawn/refused (`false`).
    pub granted: bool,
    /// Kiosk wall-clock time of the decision (Unix seconds; informative, HQ does not trust it).
    pub decided_at: i64,
}

/// Summary of a person's consents.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct ConsentSummary {
    /// Pseudonymous subject reference.
    pub subject_ref: KeyedDigest,
    /// Version of the consent text shown.
    pub consent_text_version: String,
    /// The decisions.
    pub entries: Vec<ConsentEntry>,
}

/// What happened to a certificate.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
pub enum CertificateEventKind {
    /// Issued (new application).
    Issued,
    /// Renewed.
    Renewed,
    /// Revoked.
    Revoked,
    /// Suspended.
    Suspended,
    /// Account cancelled by the holder.
    AccountCancelled,
}

/// A certificate lifecycle event.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct CertificateEvent {
    /// Pseudonymous subject reference.
    pub subject_ref: KeyedDigest,
    /// Certificate serial number (hex).
    pub serial_hex: String,
    /// The event.
    pub kind: CertificateEventKind,
    /// Certificate used for government affairs (10-year retention after expiry).
    pub government_use: bool,
    /// Certificate notAfter (Unix seconds).
    pub not_after: i64,
    /// Kiosk wall-clock time of the event (Unix seconds).
    pub occurred_at: i64,
}

/// Kind of a rights request.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
pub enum RightsRequestKind {
    /// Access (masked).
    Access,
    /// Copy / portability.
    Copy,
    /// Correction or completion.
    Correction,
    /// Deletion.
    Deletion,
    /// Consent withdrawal.
    ConsentWithdrawal,
    /// Account cancellation.
    AccountCancellation,
    /// Explanation of / objection to an automated decision.
    AutomatedDecision,
    /// Posthumous arrangement by next of kin.
    Posthumous,
}

/// A rights request taken at the kiosk and forwarded to HQ.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct RightsRequestEvent {
    /// Pseudonymous subject reference.
    pub subject_ref: KeyedDigest,
    /// Request id assigned by the kiosk.
    pub request_id: String,
    /// Kind of request.
    pub kind: RightsRequestKind,
    /// Kiosk wall-clock time the request was received (Unix seconds).
    pub received_at: i64,
    /// Deadline computed by the kiosk (Unix seconds).
    pub deadline: i64,
}

/// An audit-log checkpoint for HQ to witness.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct AuditCheckpoint {
    /// The C2SP signed note (checkpoint body + signature lines), UTF-8 text.
    pub signed_note: String,
    /// Tree size of the previous checkpoint the proof starts from (HQ's last cosigned one).
    pub previous_size: u64,
    /// RFC 9162 consistency proof from `previous_size` to this checkpoint's size.
    pub consistency_proof: Vec<Hash>,
}

/// A deletion notice: the subject's data must be deleted at HQ and at every recipient.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct DeletionNotice {
    /// Pseudonymous subject reference.
    pub subject_ref: KeyedDigest,
    /// Grounds for deletion (catalog/legal reason code).
    pub reason: String,
    /// Catalog items concerned (empty: everything about the subject).
    pub items: Vec<String>,
    /// Kiosk wall-clock time (Unix seconds).
    pub requested_at: i64,
}

/// Any record the kiosk sends.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
#[serde(tag = "type", content = "body", rename_all = "snake_case")]
pub enum Record {
    /// Minimized applicant record.
    Applicant(ApplicantRecord),
    /// Consent summary.
    Consent(ConsentSummary),
    /// Certificate event.
    Certificate(CertificateEvent),
    /// Rights request event.
    RightsRequest(RightsRequestEvent),
    /// Audit checkpoint.
    AuditCheckpoint(AuditCheckpoint),
    /// Deletion notice.
    DeletionNotice(DeletionNotice),
}

impl Record {
    /// Short stable name of the record kind (stored at HQ, used in metrics).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Record::Applicant(_) => "applicant",
            Record::Consent(_) => "consent",
            Record::Certificate(_) => "certificate",
            Record::RightsRequest(_) => "rights_request",
            Record::AuditCheckpoint(_) => "audit_checkpoint",
            Record::DeletionNotice(_) => "deletion_notice",
        }
    }

    /// The subject reference, if this record is about a person.
    pub fn subject_ref(&self) -> Option<&KeyedDigest> {
        match self {
            Record::Applicant(r) => Some(&r.subject_ref),
            Record::Consent(r) => Some(&r.subject_ref),
            Record::Certificate(r) => Some(&r.subject_ref),
            Record::RightsRequest(r) => Some(&r.subject_ref),
            Record::DeletionNotice(r) => Some(&r.subject_ref),
            Record::AuditCheckpoint(_) => None,
        }
    }
}

/// A record with its outbox identity.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct SequencedRecord {
    /// Per-kiosk record sequence number (contiguous, starting at 1). HQ's idempotency key is
    /// `(kiosk_id, seq)`.
    pub seq: u64,
    /// Unique outbox id.
    pub record_id: RecordId,
    /// The record.
    pub record: Record,
}

/// A batch of records, the plaintext inside an envelope.
///
/// Contract: the kiosk assigns `batch_seq` and `prev_batch_hash` when it seals a batch, stores
/// the sealed envelope durably and resends exactly those bytes until acked. `records` carry
/// contiguous `seq` numbers continuing the previous batch.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct Batch {
    /// Schema version (must be [`SCHEMA_VERSION`]).
    pub schema_version: u16,
    /// Kiosk id (must equal the envelope header and the client certificate CN).
    pub kiosk_id: String,
    /// Per-kiosk batch sequence number (1, 2, 3, ...).
    pub batch_seq: u64,
    /// Envelope digest of the previous batch (see `envelope::seal_batch_with_digest`; all zero
    /// for batch 1).
    pub prev_batch_hash: Hash,
    /// Kiosk wall-clock creation time (Unix seconds; informative).
    pub created_at: i64,
    /// The records.
    pub records: Vec<SequencedRecord>,
    /// Records still waiting in the kiosk's outbox behind this batch when it was sealed
    /// (informative: HQ's per-kiosk backlog gauge). Absent from kiosks that predate it, and
    /// then not encoded at all, so older HQs and kiosks read batches as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
}

impl Batch {
    /// Canonical CBOR encoding.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::to_vec(self)
    }

    /// Decode and check the schema version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::check_schema_version(bytes)?;
        codec::from_slice(bytes)
    }

    /// The first and last record sequence numbers, if the batch is not empty.
    pub fn seq_range(&self) -> Option<(u64, u64)> {
        Some((self.records.first()?.seq, self.records.last()?.seq))
    }
}

/// HQ's answer after it committed a batch.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct Ack {
    /// Schema version.
    pub schema_version: u16,
    /// Kiosk id.
    pub kiosk_id: String,
    /// Batch acknowledged.
    pub batch_seq: u64,
    /// Envelope digest of the batch acknowledged.
    pub batch_hash: Hash,
    /// Every record with `seq <= acked_through_seq` is committed at HQ.
    pub acked_through_seq: u64,
    /// `true` when the batch had already been committed before (replay).
    pub duplicate: bool,
    /// HQ's witness cosignatures for audit checkpoints contained in the batch.
    pub cosignatures: Vec<WitnessCosignature>,
}

impl Ack {
    /// CBOR encoding.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::to_vec(self)
    }

    /// Decode and check the schema version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::check_schema_version(bytes)?;
        codec::from_slice(bytes)
    }
}

/// HQ's cosignature on a kiosk checkpoint.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct WitnessCosignature {
    /// Tree size cosigned.
    pub tree_size: u64,
    /// Root hash cosigned.
    pub root_hash: Hash,
    /// The signature line (`— <name> <base64(keyid||sig)>`) to append to the note.
    pub signature_line: String,
}

/// A machine-readable rejection returned by HQ with a 4xx status.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct Rejection {
    /// Stable error code (e.g. `gap`, `fork`, `bad_signature`).
    pub code: String,
    /// Human-readable explanation (no personal data).
    pub message: String,
    /// The next record sequence number HQ expects, when known.
    pub expected_next_seq: Option<u64>,
    /// The next batch sequence number HQ expects, when known.
    pub expected_next_batch: Option<u64>,
}
