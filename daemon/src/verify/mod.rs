//! Identity verification by external services (carrier 3-factor, bank-card
//! 4-factor, biometric comparison of the live face with the ID photo): the
//! [`Verifier`] trait, the request that carries exactly the catalog's declared
//! fields of a method and nothing else, the HTTP client ([`http::HttpVerifier`]),
//! the record of every hand-over ([`handover`]) and loopback stand-in servers for
//! tests and the demo ([`standin`]).
//!
//! # Minimum necessary
//! The privacy catalog declares, per method, the `recipient` and exactly the
//! `fields` (catalog item names) its service receives (REQUIREMENTS §1, §4).
//! [`prepare`] builds the wire body from those fields only: a declared field
//! that is missing is refused with [`VerifyError::MissingField`] before any
//! network traffic, and a value for an undeclared item is never serialized, so
//! a caller bug cannot leak data. Biometric items (`id_photo`, `face_image`) are
//! bytes ([`PersonalBytes`]); every other item is text ([`Personal`]). A value of
//! the wrong kind is refused.
//!
//! # Wire protocol (JSON over HTTPS; plain http only to loopback stand-ins)
//! One `POST` to the method's configured URL, `Content-Type: application/json`:
//!
//! ```json
//! {"method": "carrier_3factor",
//!  "request_id": "6f1c…",
//!  "fields": {"name": "…", "mobile": "…", "id_number": "…"}}
//! ```
//!
//! - `method`: the catalog method name; `request_id`: a fresh UUID per
//!   verification, the same for every retry of it (lets the service de-duplicate).
//! - `fields`: exactly the method's declared items, each a JSON string. Text
//!   items are sent as they are (UTF-8); biometric items (photos, face images) as
//!   standard base64 with padding (RFC 4648 §4).
//!
//! Answer `200 OK`, `Content-Type: application/json`, at most 16 KiB:
//!
//! ```json
//! {"result": "match" | "no_match" | "inconclusive", "reference": "…"}
//! ```
//!
//! No other keys are accepted. `reference` is the provider's opaque id of the check (1–128 characters of
//! `A-Z a-z 0-9 . _ : -`; anything else is refused so that no personal value can
//! reach the audit log through it). A `4xx` is a definitive refusal and is never
//! retried; a `5xx` or a transport failure is retried with exponential backoff up
//! to the endpoint's `retries`; redirects are not followed (they could send the
//! data elsewhere); no proxy from the environment is used.
//!
//! # Consent and hand-overs
//! Before a hand-over the caller checks consent with [`require_consents`] (face
//! images to a verifier need a separate transfer consent). After each
//! verification that may have sent data — a success, or a failure whose
//! [`VerifyError::handover`] is `Some` — it records the hand-over with
//! [`handover::record_attempt`] in its own transaction (row in `handovers` plus an
//! audit entry `handover.verifier`, item names only).

pub mod handover;
pub mod http;
pub mod standin;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use base64::Engine as _;
use kiosk_config::{Catalog, CatalogError, Destination, Sensitivity, Transfer};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::privacy::Personal;
use crate::privacy::consent::{ConsentError, Ledger};

/// Largest answer body a verifier may send.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024;
/// Longest provider reference accepted.
pub const MAX_REFERENCE_CHARS: usize = 128;

/// A personal value made of bytes (ID photo, face image) with its catalog item.
/// `Debug` never shows the bytes; zeroized on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PersonalBytes {
    #[zeroize(skip)]
    item: String,
    value: Vec<u8>,
}

impl PersonalBytes {
    pub fn new(item: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            item: item.into(),
            value: value.into(),
        }
    }

    /// The catalog item name.
    pub fn item(&self) -> &str {
        &self.item
    }

    /// The clear bytes. Every use is a place to review.
    pub fn expose(&self) -> &[u8] {
        &self.value
    }
}

impl fmt::Debug for PersonalBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PersonalBytes({}: <redacted {} bytes>)",
            self.item,
            self.value.len()
        )
    }
}

/// One value offered for a verification: text or bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Text(Personal),
    Bytes(PersonalBytes),
}

impl Field {
    /// The catalog item name.
    pub fn item(&self) -> &str {
        match self {
            Field::Text(p) => p.item(),
            Field::Bytes(b) => b.item(),
        }
    }
}

impl From<Personal> for Field {
    fn from(p: Personal) -> Self {
        Field::Text(p)
    }
}

impl From<PersonalBytes> for Field {
    fn from(b: PersonalBytes) -> Self {
        Field::Bytes(b)
    }
}

/// What to verify, and with which values. Values for items the method does not
/// declare may be present (they are ignored, never sent).
#[derive(Debug, Clone)]
pub struct VerificationRequest {
    /// Catalog method name (`carrier_3factor`, `bank_card_4factor`, `biometric_compare`).
    pub method: String,
    /// Identifies this verification at the service and in the hand-over record.
    pub request_id: String,
    pub fields: Vec<Field>,
}

impl VerificationRequest {
    /// A request for `method` with a fresh random request id and no fields yet.
    pub fn new(method: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            request_id: uuid::Uuid::new_v4().to_string(),
            fields: Vec::new(),
        }
    }

    /// Add a value (builder style).
    pub fn with(mut self, field: impl Into<Field>) -> Self {
        self.fields.push(field.into());
        self
    }

    /// Add a value.
    pub fn push(&mut self, field: impl Into<Field>) {
        self.fields.push(field.into());
    }
}

/// The service's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Match,
    NoMatch,
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Match => "match",
            Verdict::NoMatch => "no_match",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// What was handed over to whom (item names only, never values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub method: String,
    pub recipient: String,
    /// The items sent, in the catalog's order.
    pub items: Vec<String>,
    pub request_id: String,
    /// How many requests may have carried the data (retries send it again).
    pub sends: u32,
}

/// A definitive answer from the service, with the hand-over that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationOutcome {
    pub verdict: Verdict,
    /// The provider's opaque reference of the check (no personal data).
    pub reference: String,
    pub handover: Handover,
}

/// Why a verification attempt over the network failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No connection could be made (refused, unresolvable, TLS handshake failed).
    #[error("service unreachable: {0}")]
    Unreachable(String),
    /// No complete answer within the endpoint's timeout.
    #[error("no answer within the timeout")]
    Timeout,
    /// The connection broke after it was made.
    #[error("transport failure: {0}")]
    Transport(String),
    /// The service answered 5xx on every attempt.
    #[error("service error: HTTP {0}")]
    ServerError(u16),
    /// The service refused the request (4xx, or a redirect): never retried.
    #[error("service refused the request: HTTP {0}")]
    Refused(u16),
    /// A 2xx whose body is not the protocol's answer.
    #[error("undecodable answer: {0}")]
    BadResponse(String),
}

impl Failure {
    /// Transport trouble and 5xx are worth another attempt; answers are not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Failure::Unreachable(_)
                | Failure::Timeout
                | Failure::Transport(_)
                | Failure::ServerError(_)
        )
    }

    /// Short stable code for records and the API.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Unreachable(_) => "unreachable",
            Failure::Timeout => "timeout",
            Failure::Transport(_) => "transport",
            Failure::ServerError(_) => "server_error",
            Failure::Refused(_) => "refused",
            Failure::BadResponse(_) => "bad_response",
        }
    }
}

/// Why a verification did not produce a verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A declared field of the method was not given (nothing was sent).
    #[error("verification {method:?} needs {item:?}, which was not given; nothing was sent")]
    MissingField { method: String, item: String },
    /// A declared field was given twice (ambiguous; nothing was sent).
    #[error("verification {method:?}: {item:?} was given more than once; nothing was sent")]
    DuplicateField { method: String, item: String },
    /// Text given for a biometric item, or bytes for a text item.
    #[error("{item:?} must be given as {expected}; nothing was sent")]
    WrongKind {
        item: String,
        expected: &'static str,
    },
    /// The catalog does not let the item go to a verifier (checked again here).
    #[error("the catalog does not allow sending {item:?} to a verifier; nothing was sent")]
    NotTransferable { item: String },
    /// No endpoint is configured for the method.
    #[error("no endpoint configured for verification {method:?} (set verifiers.{method}.url)")]
    NotConfigured { method: String },
    /// The endpoint configuration is unusable.
    #[error("verifiers.{method}: {reason}")]
    Config { method: String, reason: String },
    /// The attempts failed; `handover` is `Some` when data may have reached the service.
    #[error("verification {method:?} failed after {attempts} attempt(s): {failure}")]
    Failed {
        method: String,
        failure: Failure,
        attempts: u32,
        handover: Option<Box<Handover>>,
    },
}

impl VerifyError {
    /// The hand-over to record, if personal data may have left the kiosk.
    pub fn handover(&self) -> Option<&Handover> {
        match self {
            VerifyError::Failed { handover, .. } => handover.as_deref(),
            _ => None,
        }
    }

    /// The network failure, if that is what happened.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            VerifyError::Failed { failure, .. } => Some(failure),
            _ => None,
        }
    }
}

/// A verification service client.
#[async_trait]
pub trait Verifier: Send + Sync {
    /// Send exactly the method's declared fields and return the service's verdict.
    async fn verify(
        &self,
        request: VerificationRequest,
    ) -> Result<VerificationOutcome, VerifyError>;
}

/// A request checked against the catalog and encoded for the wire.
pub struct PreparedRequest {
    pub method: String,
    pub recipient: String,
    pub items: Vec<String>,
    pub request_id: String,
    /// The JSON body (holds personal values; zeroized on drop).
    pub body: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for PreparedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedRequest")
            .field("method", &self.method)
            .field("recipient", &self.recipient)
            .field("items", &self.items)
            .field("request_id", &self.request_id)
            .field("body", &"<redacted>")
            .finish()
    }
}

impl PreparedRequest {
    /// The hand-over this request makes when sent `sends` times.
    pub fn handover(&self, sends: u32) -> Handover {
        Handover {
            method: self.method.clone(),
            recipient: self.recipient.clone(),
            items: self.items.clone(),
            request_id: self.request_id.clone(),
            sends,
        }
    }
}

/// A JSON string whose buffer is zeroized on drop.
struct SecretStr(Zeroizing<String>);

impl Serialize for SecretStr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    method: &'a str,
    request_id: &'a str,
    fields: BTreeMap<&'a str, SecretStr>,
}

/// The answer body of the protocol.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireAnswer {
    pub result: Verdict,
    pub reference: String,
}

/// Whether `item` travels as bytes (base64) rather than text.
pub fn is_binary_item(catalog: &Catalog, item: &str) -> bool {
    catalog
        .items
        .get(item)
        .is_some_and(|d| d.sensitivity == Sensitivity::Biometric)
}

/// Check `request` against the catalog and encode exactly the method's declared
/// fields. Refuses before anything could be sent; ignores undeclared values.
pub fn prepare(
    catalog: &Catalog,
    request: &VerificationRequest,
) -> Result<PreparedRequest, VerifyError> {
    let decl = catalog.method(&request.method)?;
    let mut fields = BTreeMap::new();
    for item in &decl.fields {
        if catalog.transfer(item, Destination::Verifier) != Transfer::Plain {
            return Err(VerifyError::NotTransferable { item: item.clone() });
        }
        let mut given = request.fields.iter().filter(|f| f.item() == item);
        let field = given.next().ok_or_else(|| VerifyError::MissingField {
            method: request.method.clone(),
            item: item.clone(),
        })?;
        if given.next().is_some() {
            return Err(VerifyError::DuplicateField {
                method: request.method.clone(),
                item: item.clone(),
            });
        }
        let encoded = match (field, is_binary_item(catalog, item)) {
            (Field::Bytes(b), true) => {
                Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(b.expose()))
            }
            (Field::Text(p), false) => Zeroizing::new(p.expose().to_owned()),
            (_, binary) => {
                return Err(VerifyError::WrongKind {
                    item: item.clone(),
                    expected: if binary { "bytes" } else { "text" },
                });
            }
        };
        fields.insert(item.as_str(), SecretStr(encoded));
    }
    let wire = WireRequest {
        method: &request.method,
        request_id: &request.request_id,
        fields,
    };
    let mut body = Zeroizing::new(Vec::with_capacity(256));
    serde_json::to_writer(&mut *body, &wire).map_err(|e| VerifyError::Config {
        method: request.method.clone(),
        reason: format!("cannot encode the request: {e}"),
    })?;
    Ok(PreparedRequest {
        method: request.method.clone(),
        recipient: decl.recipient.clone(),
        items: decl.fields.clone(),
        request_id: request.request_id.clone(),
        body,
    })
}

/// Decode and check an answer body.
pub fn parse_answer(body: &[u8]) -> Result<WireAnswer, Failure> {
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(Failure::BadResponse(format!(
            "answer larger than {MAX_RESPONSE_BYTES} bytes"
        )));
    }
    // serde_json's messages quote the offending value: keep only where and what kind,
    // so a service echoing data cannot put it in our logs.
    let answer: WireAnswer = serde_json::from_slice(body).map_err(|e| {
        Failure::BadResponse(format!(
            "not the protocol's answer ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    if !is_opaque_reference(&answer.reference) {
        return Err(Failure::BadResponse(
            "reference is not an opaque id (1-128 of A-Z a-z 0-9 . _ : -)".into(),
        ));
    }
    Ok(answer)
}

/// A provider reference we are willing to store: short, plain ASCII id characters.
pub fn is_opaque_reference(reference: &str) -> bool {
    (1..=MAX_REFERENCE_CHARS).contains(&reference.len())
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// May `method`'s fields be collected for `service` and handed to its verifier
/// in this session? Checks the collection consent of every declared field and
/// the separate transfer consent the catalog requires (face images).
pub fn require_consents(
    ledger: &Ledger<'_>,
    conn: &Connection,
    service: &str,
    method: &str,
) -> Result<(), ConsentError> {
    let decl = ledger.catalog.method(method)?;
    for item in &decl.fields {
        ledger.require(conn, service, Some(method), item)?;
        ledger.require_transfer(conn, service, item, Destination::Verifier)?;
    }
    Ok(())
}
