//! Kiosk provisioning: one-time enrollment codes (`hq-ingest enroll-kiosk`) and the enrollment
//! endpoint `POST /v1/enroll` ([`records::client::enroll`]) where a new kiosk trades a code
//! for its mTLS client certificate.
//!
//! A code is 28 symbols of Crockford's base32 (140 random bits from the OS), printed in groups
//! of four (`7KQM-3XZP-…`); typing is forgiving (case, `O`→`0`, `I`/`L`→`1`, dashes and
//! spaces ignored). HQ keeps only its SHA-256 with the kiosk id, the branch and the expiry
//! (`enrollment_codes`). A code is consumed by one `UPDATE … WHERE used_at IS NULL AND
//! expires_at > now()` inside the transaction that issues the certificate, registers the
//! kiosk's envelope-signing key and audits the enrollment: of two concurrent uses, the
//! second waits for the first's row lock and then finds the code used. A failure before the
//! commit rolls the consumption back, so the code still works. Refusals (unknown, used,
//! expired, another kiosk's code) are audited in `ca_audit` with their code, never the
//! enrollment code itself.
//!
//! **Why a separate listener** (`[enroll] listen`, `serve --enroll-listen`) rather than
//! optional client authentication on the mTLS listener: the mTLS listener keeps refusing every
//! connection without a valid kiosk certificate in the TLS handshake, so no route behind it
//! (batches, the CA) is ever reachable by an unauthenticated peer, whatever a handler forgets
//! to check. The enrollment listener is TLS with HQ's server certificate and no client
//! authentication, and serves this one route only; it can be firewalled to branch networks or
//! closed once kiosks are provisioned, and enrollment traffic never shares connection state
//! with ingest.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use deadpool_postgres::Pool;
use records::client::enroll::{
    ENROLL_PATH, EnrollAnswer, EnrollRefusal, EnrollRequest, MAX_ENROLL_REQUEST_BYTES,
};
use sha2::Digest;
use zeroize::Zeroizing;

use crate::ca::{self, CaError, Issuer, KeyKind};
use crate::ca_audit::{self, Outcome};
use crate::db::DbError;

/// Default lifetime of a code.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Crockford's base32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Symbols in a code (5 bits each: 140 bits).
const CODE_SYMBOLS: usize = 28;
/// Symbols per printed group.
const GROUP: usize = 4;
/// Domain of the stored hash.
const HASH_DOMAIN: &[u8] = b"kioskd enrollment code v1\0";

/// Why a code could not be made or an enrollment was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Not a code's shape.
    #[error("malformed enrollment code (expected 7 groups of 4 letters and digits)")]
    Malformed,
    /// No such code.
    #[error("unknown enrollment code")]
    UnknownCode,
    /// Already consumed.
    #[error("this enrollment code was already used")]
    UsedCode,
    /// Past its expiry.
    #[error("this enrollment code has expired; ask HQ for a new one")]
    ExpiredCode,
    /// Made for another kiosk id than the one enrolling.
    #[error("this enrollment code was made for another kiosk id")]
    OtherKiosk,
    /// A kiosk id HQ does not accept.
    #[error(
        "kiosk id must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    BadKioskId,
    /// A branch name HQ does not accept.
    #[error("branch must be 1 to 128 characters without control characters")]
    BadBranch,
    /// The kiosk was revoked at HQ.
    #[error("this kiosk is revoked at HQ")]
    KioskRevoked,
    /// The request body.
    #[error("malformed enrollment request: {0}")]
    BadRequest(String),
    /// The TLS key request.
    #[error("certification request: {0}")]
    Csr(CaError),
    /// The device key.
    #[error("device key: {0}")]
    DeviceKey(String),
    /// Randomness.
    #[error("random source: {0}")]
    Random(String),
    /// Issuing the certificate.
    #[error("issuing the kiosk certificate failed: {0}")]
    Issue(String),
    /// Database.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for EnrollError {
    fn from(e: tokio_postgres::Error) -> Self {
        EnrollError::Db(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for EnrollError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        EnrollError::Db(e.into())
    }
}

impl EnrollError {
    /// Stable code (the `error` of refusals, the `code` of audit entries).
    pub fn code(&self) -> &'static str {
        match self {
            EnrollError::Malformed => "enrollment_code_malformed",
            EnrollError::UnknownCode => "enrollment_code_unknown",
            EnrollError::UsedCode => "enrollment_code_used",
            EnrollError::ExpiredCode => "enrollment_code_expired",
            EnrollError::OtherKiosk => "enrollment_code_other_kiosk",
            EnrollError::BadKioskId => "bad_kiosk_id",
            EnrollError::BadBranch => "bad_branch",
            EnrollError::KioskRevoked => "kiosk_revoked",
            EnrollError::BadRequest(_) => "bad_request",
            EnrollError::Csr(_) => "bad_csr",
            EnrollError::DeviceKey(_) => "bad_device_key",
            EnrollError::Random(_) | EnrollError::Issue(_) => "issue_failed",
            EnrollError::Db(_) => "enrollment_unavailable",
        }
    }

    /// HTTP status of the refusal.
    pub fn http_status(&self) -> StatusCode {
        match self {
            EnrollError::Malformed
            | EnrollError::BadKioskId
            | EnrollError::BadBranch
            | EnrollError::BadRequest(_)
            | EnrollError::Csr(_)
            | EnrollError::DeviceKey(_) => StatusCode::BAD_REQUEST,
            EnrollError::UnknownCode | EnrollError::OtherKiosk | EnrollError::KioskRevoked => {
                StatusCode::FORBIDDEN
            }
            EnrollError::UsedCode => StatusCode::CONFLICT,
            EnrollError::ExpiredCode => StatusCode::GONE,
            EnrollError::Random(_) | EnrollError::Issue(_) => StatusCode::INTERNAL_SERVER_ERROR,
            EnrollError::Db(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A one-time enrollment code, normalized (28 symbols, no dashes). Wiped when dropped; its
/// `Debug` shows nothing of it.
pub struct EnrollmentCode(Zeroizing<String>);

impl std::fmt::Debug for EnrollmentCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrollmentCode(<redacted>)")
    }
}

impl EnrollmentCode {
    /// A new random code.
    pub fn generate() -> Result<Self, EnrollError> {
        let mut bytes = Zeroizing::new([0u8; CODE_SYMBOLS]);
        getrandom::fill(bytes.as_mut()).map_err(|e| EnrollError::Random(e.to_string()))?;
        // 256 is a multiple of 32: the low five bits of a uniform byte are uniform.
        let text: String = bytes
            .iter()
            .map(|b| ALPHABET[usize::from(b & 31)] as char)
            .collect();
        Ok(Self(Zeroizing::new(text)))
    }

    /// A code as typed: case, dashes and spaces ignored, `O` read as `0`, `I` and `L` as `1`.
    pub fn parse(typed: &str) -> Result<Self, EnrollError> {
        let mut text = Zeroizing::new(String::with_capacity(CODE_SYMBOLS));
        for c in typed.chars() {
            let c = match c.to_ascii_uppercase() {
                '-' | ' ' | '\t' => continue,
                'O' => '0',
                'I' | 'L' => '1',
                c => c,
            };
            if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
                return Err(EnrollError::Malformed);
            }
            text.push(c);
        }
        if text.len() != CODE_SYMBOLS {
            return Err(EnrollError::Malformed);
        }
        Ok(Self(text))
    }

    /// The code as printed for the operator: groups of four joined by dashes.
    pub fn grouped(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(CODE_SYMBOLS + CODE_SYMBOLS / GROUP));
        for (i, c) in self.0.chars().enumerate() {
            if i > 0 && i % GROUP == 0 {
                out.push('-');
            }
            out.push(c);
        }
        out
    }

    /// What HQ stores: SHA-256 over a domain tag and the normalized code (a code carries 140
    /// random bits, so a fast hash does not make guessing it any easier).
    pub fn hash(&self) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        h.update(HASH_DOMAIN);
        h.update(self.0.as_bytes());
        h.finalize().into()
    }
}

/// Whether HQ accepts `id` as a kiosk id (it becomes a certificate CN and a metrics label).
pub fn valid_kiosk_id(id: &str) -> bool {
    let mut chars = id.chars();
    id.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn valid_branch(branch: &str) -> bool {
    !branch.trim().is_empty()
        && branch.chars().count() <= 128
        && !branch.chars().any(char::is_control)
}

/// A code made by [`create_code`].
#[derive(Debug)]
pub struct IssuedCode {
    /// The code (printed once, never stored).
    pub code: EnrollmentCode,
    /// When it stops working.
    pub expires_at: time::OffsetDateTime,
}

/// Make a one-time code for `kiosk_id` at `branch`, valid for `ttl` (zero: already expired,
/// for tests), audited as made by `operator`.
pub async fn create_code(
    client: &mut tokio_postgres::Client,
    kiosk_id: &str,
    branch: &str,
    ttl: Duration,
    operator: &str,
) -> Result<IssuedCode, EnrollError> {
    if !valid_kiosk_id(kiosk_id) {
        return Err(EnrollError::BadKioskId);
    }
    if !valid_branch(branch) {
        return Err(EnrollError::BadBranch);
    }
    let code = EnrollmentCode::generate()?;
    let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            "INSERT INTO enrollment_codes (code_hash, kiosk_id, branch, created_by, expires_at)
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5::bigint))
             RETURNING expires_at",
            &[
                &code.hash().to_vec(),
                &kiosk_id,
                &branch,
                &operator,
                &seconds,
            ],
        )
        .await?;
    let expires_at: time::OffsetDateTime = row.get(0);
    let actor = format!("hq-staff:{operator}");
    ca_audit::append(
        &tx,
        &ca_audit::Entry {
            actor: &actor,
            action: "enrollment-code",
            target: Some(kiosk_id),
            outcome: Outcome::Done,
            code: None,
            detail: serde_json::json!({
                "branch": branch,
                "expires_at": expires_at.unix_timestamp(),
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(IssuedCode { code, expires_at })
}

/// The enrollment endpoint's state: the kiosk CA (issues kiosk client certificates; the CA
/// HQ's mTLS listener trusts), its certificate in PEM (sent with the issued one) and HQ's
/// record-encryption public keys (JSON).
#[derive(Clone)]
pub struct EnrollService {
    pool: Pool,
    kiosk_ca: Arc<Issuer>,
    kiosk_ca_pem: Arc<str>,
    record_public: Arc<str>,
    witness: Arc<(String, String)>,
}

impl EnrollService {
    /// `kiosk_ca` signs the certificates; `record_public` is [`crate::keys::recipient_public_to_json`]
    /// of HQ's record key; `witness_public` ([`crate::keys::verifier_to_json`]) and
    /// `witness_name` are HQ's audit witness key and its name, which kiosks pin.
    pub fn new(
        pool: Pool,
        kiosk_ca: Issuer,
        record_public: String,
        witness_public: String,
        witness_name: String,
    ) -> Self {
        let kiosk_ca_pem = pem::encode(&pem::Pem::new(
            "CERTIFICATE",
            kiosk_ca.certificate_der().to_vec(),
        ));
        Self {
            pool,
            kiosk_ca: Arc::new(kiosk_ca),
            kiosk_ca_pem: kiosk_ca_pem.into(),
            record_public: record_public.into(),
            witness: Arc::new((witness_public, witness_name)),
        }
    }

    /// Check the request and the code, consume it, issue the certificate and register the
    /// device key, all in one transaction; a refusal is audited.
    pub async fn enroll(&self, request: &EnrollRequest) -> Result<EnrollAnswer, EnrollError> {
        let result = self.try_enroll(request).await;
        if let Err(e) = &result {
            if !matches!(e, EnrollError::Db(_)) {
                self.audit_refusal(request, e).await;
            }
            let kiosk = if valid_kiosk_id(&request.kiosk_id) {
                request.kiosk_id.as_str()
            } else {
                "(invalid)"
            };
            tracing::warn!(code = e.code(), kiosk, "kiosk enrollment refused");
        }
        result
    }

    async fn audit_refusal(&self, request: &EnrollRequest, e: &EnrollError) {
        let target = valid_kiosk_id(&request.kiosk_id).then_some(request.kiosk_id.as_str());
        let audited = async {
            let mut client = self.pool.get().await?;
            ca_audit::append_alone(
                &mut client,
                &ca_audit::Entry {
                    actor: "enrollment",
                    action: "enroll-kiosk",
                    target,
                    outcome: Outcome::Refused,
                    code: Some(e.code()),
                    detail: serde_json::json!({}),
                },
            )
            .await
            .map_err(EnrollError::from)
        };
        if let Err(err) = audited.await {
            tracing::error!(error = %err, "enrollment refusal not audited");
        }
    }

    async fn try_enroll(&self, request: &EnrollRequest) -> Result<EnrollAnswer, EnrollError> {
        let code = EnrollmentCode::parse(&request.code)?;
        let kiosk_id = request.kiosk_id.as_str();
        if !valid_kiosk_id(kiosk_id) {
            return Err(EnrollError::BadKioskId);
        }
        let csr_der = pem::parse(request.csr_pem.as_bytes())
            .ok()
            .filter(|p| p.tag() == "CERTIFICATE REQUEST")
            .ok_or_else(|| {
                EnrollError::BadRequest("csr_pem is not a PEM CERTIFICATE REQUEST".into())
            })?
            .into_contents();
        let csr = ca::verify_csr(&csr_der).map_err(EnrollError::Csr)?;
        if csr.kind != KeyKind::P256 {
            return Err(EnrollError::Csr(CaError::Unsupported(
                "the kiosk's TLS key must be ECDSA P-256".into(),
            )));
        }
        let device_key = crate::keys::verifier_from_json(&request.device_key)
            .map_err(|e| EnrollError::DeviceKey(e.to_string()))?;
        let hash = code.hash().to_vec();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The consumption: one statement, so of two concurrent uses exactly one updates the
        // row (the other waits for its lock, then sees used_at set).
        let consumed = tx
            .query_opt(
                "UPDATE enrollment_codes SET used_at = now()
                 WHERE code_hash = $1 AND used_at IS NULL AND expires_at > now() AND kiosk_id = $2
                 RETURNING branch",
                &[&hash, &kiosk_id],
            )
            .await?;
        let Some(row) = consumed else {
            let why = tx
                .query_opt(
                    "SELECT used_at IS NOT NULL, expires_at <= now(), kiosk_id = $2
                     FROM enrollment_codes WHERE code_hash = $1",
                    &[&hash, &kiosk_id],
                )
                .await?;
            return Err(match why {
                None => EnrollError::UnknownCode,
                Some(r) if r.get::<_, bool>(0) => EnrollError::UsedCode,
                Some(r) if r.get::<_, bool>(1) => EnrollError::ExpiredCode,
                Some(_) => EnrollError::OtherKiosk,
            });
        };
        let branch: String = row.get(0);
        let revoked = tx
            .query_opt(
                "SELECT revoked_at IS NOT NULL FROM kiosks WHERE kiosk_id = $1",
                &[&kiosk_id],
            )
            .await?
            .is_some_and(|r| r.get::<_, bool>(0));
        if revoked {
            return Err(EnrollError::KioskRevoked);
        }
        let serial = ca::random_serial().map_err(|e| EnrollError::Issue(e.to_string()))?;
        let der = self
            .kiosk_ca
            .issue_kiosk_client(&csr, kiosk_id, &serial)
            .map_err(|e| EnrollError::Issue(e.to_string()))?;
        let serial_hex = hex::encode(serial);
        crate::db::register_kiosk_at(&*tx, kiosk_id, &device_key, Some(&branch)).await?;
        tx.execute(
            "INSERT INTO kiosk_certificates (kiosk_id, serial_hex) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
            &[&kiosk_id, &serial_hex],
        )
        .await?;
        tx.execute(
            "UPDATE enrollment_codes SET certificate_serial = $2 WHERE code_hash = $1",
            &[&hash, &serial_hex],
        )
        .await?;
        let actor = format!("kiosk:{kiosk_id}");
        ca_audit::append(
            &tx,
            &ca_audit::Entry {
                actor: &actor,
                action: "enroll-kiosk",
                target: Some(&serial_hex),
                outcome: Outcome::Done,
                code: None,
                detail: serde_json::json!({
                    "branch": branch,
                    "device_key_algorithm": device_key.algorithm.name(),
                }),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(kiosk = kiosk_id, serial = %serial_hex, "kiosk enrolled");
        let leaf = pem::encode(&pem::Pem::new("CERTIFICATE", der));
        Ok(EnrollAnswer {
            kiosk_id: kiosk_id.to_owned(),
            branch,
            serial: serial_hex,
            certificate_chain_pem: format!("{leaf}{}", self.kiosk_ca_pem),
            record_public: self.record_public.to_string(),
            witness_public: self.witness.0.clone(),
            witness_name: self.witness.1.clone(),
        })
    }
}

fn refusal(e: &EnrollError) -> Response {
    let body = EnrollRefusal {
        error: e.code().to_owned(),
        message: e.to_string(),
    };
    (e.http_status(), axum::Json(body)).into_response()
}

async fn enroll_route(State(service): State<EnrollService>, body: Bytes) -> Response {
    let request: EnrollRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        // serde's message may quote the input: give only its position.
        Err(e) => {
            return refusal(&EnrollError::BadRequest(format!(
                "not an enrollment request (JSON error at line {} column {})",
                e.line(),
                e.column()
            )));
        }
    };
    match service.enroll(&request).await {
        Ok(answer) => (StatusCode::OK, axum::Json(answer)).into_response(),
        Err(e) => refusal(&e),
    }
}

/// The enrollment listener's router: `POST /v1/enroll` only.
pub fn router(service: EnrollService) -> Router {
    Router::new()
        .route(ENROLL_PATH, post(enroll_route))
        .layer(DefaultBodyLimit::max(MAX_ENROLL_REQUEST_BYTES))
        .with_state(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_random_typable_and_forgiving() {
        let a = EnrollmentCode::generate().unwrap();
        let b = EnrollmentCode::generate().unwrap();
        assert_ne!(a.hash(), b.hash());
        let printed = a.grouped();
        assert_eq!(printed.len(), 28 + 6);
        assert_eq!(printed.split('-').count(), 7);
        let typed = printed.to_lowercase().replace('-', " ");
        assert_eq!(EnrollmentCode::parse(&typed).unwrap().hash(), a.hash());
        let confusable = printed.replace('0', "o").replace('1', "l");
        assert_eq!(EnrollmentCode::parse(&confusable).unwrap().hash(), a.hash());
        assert!(matches!(
            EnrollmentCode::parse(&printed[..printed.len() - 1]),
            Err(EnrollError::Malformed)
        ));
        assert!(matches!(
            EnrollmentCode::parse(&format!("{}U", &printed[..printed.len() - 1])),
            Err(EnrollError::Malformed)
        ));
        assert!(!format!("{a:?}").contains(&a.0[..8]));
    }

    #[test]
    fn kiosk_ids_are_certificate_and_label_safe() {
        assert!(valid_kiosk_id("kiosk-sh-0001"));
        assert!(valid_kiosk_id("K.1_a"));
        assert!(!valid_kiosk_id(""));
        assert!(!valid_kiosk_id("-k"));
        assert!(!valid_kiosk_id("k,O=evil"));
        assert!(!valid_kiosk_id("k id"));
        assert!(!valid_kiosk_id(&"k".repeat(65)));
    }
}
