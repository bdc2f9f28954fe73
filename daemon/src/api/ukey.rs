//! The applicant's UKEY: `GET /v1/sessions/{id}/ukey` (present? PIN state), `POST
//! /v1/sessions/{id}/ukey` (the issuance: key pair on the token → CSR → certificate from the CA
//! → written next to the key → application form signed with the new key → minimized record and
//! certificate event to the outbox), `POST /v1/sessions/{id}/sign` (certificate use) and `POST
//! /v1/sessions/{id}/certificate/{action}` (renew, revoke, suspend, resume after the holder is
//! verified again). PINs are zeroized, tried once per request (never retried by the kiosk), and
//! limited per session on top of the token's own counter. Progress goes to the events stream.
//! Simulator controls: `POST/DELETE /v1/sim/ukey` insert and pull a soft UKEY.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use hsm::{KeyAlgorithm, Pin, PinState, Token, TokenError, UserKind};
use records::wire::{CertificateEvent, CertificateEventKind, KeyedDigest, OpaqueBytes};
use serde::Deserialize;
use serde_json::json;
use sha2::Digest as _;
use zeroize::Zeroizing;

use super::sessions::{blocking, session_of};
use super::verification::require_ready;
use super::{ApiError, AppState};
use crate::app::now_ms;
use crate::audit::Actor;
use crate::privacy::Personal;
use crate::privacy::minimize::HqSealer;
use crate::session::ApplicantSession;
use crate::store::pin_attempts::{self, Outcome, Reservation};
use crate::store::subjects::Subjects;
use crate::workflow::issuance::{self, Issued};
use crate::workflow::plan::Step;

/// Wrong PINs the kiosk lets anyone enter for one UKEY (counted per UKEY serial in the store,
/// across sessions and restarts) before it stops asking for `UKEY_PIN_BACKOFF_MS` (the token's
/// own counter may be higher, or absent as on SoftHSM2).
pub const MAX_PIN_FAILURES_PER_SESSION: u32 = 5;
/// How long a UKEY that reached the limit is not asked for its PIN again.
const UKEY_PIN_BACKOFF_MS: i64 = 30 * 60 * 1000;
const UKEY_PIN_LIMIT: pin_attempts::Limit = pin_attempts::Limit {
    max_failures: MAX_PIN_FAILURES_PER_SESSION,
    window_ms: UKEY_PIN_BACKOFF_MS,
};

/// One holder login at a time per UKEY serial (a PKCS#11 login is per token and process:
/// a second login racing the first would be answered "already logged in").
fn ukey_login_lock(serial: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    > = std::sync::LazyLock::new(Default::default);
    LOCKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(serial.to_string())
        .or_default()
        .clone()
}
/// How long the issuance waits for the link to HQ / the CA to come up.
const LINK_WAIT: Duration = Duration::from_secs(20);
/// The initial user PIN of a simulated UKEY (as printed on a UKEY's PIN mailer).
pub const SIM_UKEY_PIN: &str = "123456";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions/{id}/ukey", get(status).post(issue))
        .route("/v1/sessions/{id}/sign", post(sign))
        .route("/v1/sessions/{id}/certificate/{action}", post(lifecycle))
        .route("/v1/sim/ukey", post(sim_insert).delete(sim_pull))
}

fn pin_state_name(s: PinState) -> &'static str {
    match s {
        PinState::Ok => "ok",
        PinState::CountLow => "count_low",
        PinState::FinalTry => "final_try",
        PinState::Locked => "locked",
        PinState::NotInitialized => "not_initialized",
        PinState::ToBeChanged => "to_be_changed",
    }
}

/// A token error as the screen should see it.
fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::PinIncorrect { retries_left } => {
            ApiError::new(StatusCode::FORBIDDEN, "pin_incorrect", "wrong PIN")
                .with_details(json!({ "retries_left": retries_left }))
        }
        TokenError::PinLocked => ApiError::new(
            StatusCode::LOCKED,
            "pin_locked",
            "the UKEY's PIN is locked; branch staff can unblock it",
        ),
        TokenError::PinInvalid(why) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "pin_invalid", why)
        }
        TokenError::TokenRemoved | TokenError::TokenNotPresent(_) => ApiError::new(
            StatusCode::CONFLICT,
            "ukey_removed",
            "the UKEY was removed; insert it again and retry",
        ),
        TokenError::Timeout(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "ukey_timeout",
            "the UKEY did not answer in time",
        ),
        TokenError::MechanismNotSupported(m) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ukey_unsupported",
            format!("the UKEY cannot do {m}"),
        ),
        other => {
            tracing::warn!(error = %other, "UKEY operation failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ukey_failed",
                "the UKEY operation failed; remove and insert it, then retry",
            )
        }
    }
}

/// Labels on the UKEY provider that are not applicants' UKEYs (the kiosk's own tokens when
/// they share a PKCS#11 module).
fn is_kiosk_token(state: &AppState, label: &str) -> bool {
    label == state.config.token.device_token || label == state.config.staff.demo_token
}

/// The one applicant UKEY inserted.
async fn find_ukey(state: &AppState) -> Result<(Arc<dyn Token>, hsm::TokenInfo), ApiError> {
    let _ = state.ukeys.refresh().await;
    let tokens = state.ukeys.list_tokens().await.map_err(token_error)?;
    let mut present: Vec<_> = tokens
        .into_iter()
        .filter(|t| t.initialized && !is_kiosk_token(state, &t.label))
        .collect();
    match present.len() {
        0 => Err(ApiError::new(
            StatusCode::CONFLICT,
            "ukey_absent",
            "insert your UKEY",
        )),
        1 => {
            let info = present.remove(0);
            let token = state
                .ukeys
                .open_token(&info.label)
                .await
                .map_err(token_error)?;
            Ok((token, info))
        }
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            "ukey_ambiguous",
            "more than one UKEY is inserted; leave only yours",
        )),
    }
}

/// The certificate subject from the holder's verified values, or why it cannot be one.
fn holder_subject(values: &[Personal], digest: &[u8; 32]) -> Result<String, ApiError> {
    issuance::subject_name(values, digest).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unusable_name",
            e.to_string(),
        )
    })
}

/// The inserted UKEY with the holder logged in by `pin` (signing and the lifecycle actions).
async fn holder_ukey(
    state: &AppState,
    session: &ApplicantSession,
    pin: String,
) -> Result<Arc<dyn Token>, ApiError> {
    let (token, _) = find_ukey(state).await?;
    login_holder(state, session, &token, Zeroizing::new(pin)).await?;
    Ok(token)
}

/// Log in as the holder with `pin`, once. The attempt is reserved against the UKEY's serial in
/// the store before the PIN goes to the token (no race, no reset by a new session or a
/// restart); the screen learns the retries left (from the token when it says, else from the
/// limit).
async fn login_holder(
    state: &AppState,
    session: &ApplicantSession,
    token: &Arc<dyn Token>,
    pin: Zeroizing<String>,
) -> Result<(), ApiError> {
    let serial = token.info().await.map_err(token_error)?.serial;
    let gate = ukey_login_lock(&serial);
    let _one_at_a_time = gate.lock().await;
    let (st, key) = (state.clone(), serial.clone());
    let reserved = blocking(move || {
        let mut conn = st.store.conn()?;
        Ok(pin_attempts::reserve(
            &mut conn,
            pin_attempts::Kind::Ukey,
            &key,
            now_ms(),
            UKEY_PIN_LIMIT,
        )?)
    })
    .await?;
    let used = match reserved {
        Reservation::Granted { attempt } => attempt,
        Reservation::Refused { .. } => {
            state.events.pin(&session.id, "locked", Some(0));
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "pin_attempts_exceeded",
                "too many wrong PINs for this UKEY; ask branch staff for help",
            )
            .with_details(json!({ "retries_left": 0 })));
        }
    };
    if token.is_logged_in() {
        let _ = token.logout().await;
    }
    let result = token.login(UserKind::User, &Pin::new(pin.as_str())).await;
    let outcome = match &result {
        Ok(()) => Outcome::Success,
        Err(TokenError::PinIncorrect { .. } | TokenError::PinLocked) => Outcome::Failure,
        Err(_) => Outcome::NotTried,
    };
    let st = state.clone();
    blocking(move || {
        let conn = st.store.conn()?;
        Ok(pin_attempts::settle(
            &conn,
            pin_attempts::Kind::Ukey,
            &serial,
            outcome,
        )?)
    })
    .await?;
    match result {
        Ok(()) => {
            state.events.pin(&session.id, "ok", None);
            Ok(())
        }
        Err(TokenError::PinIncorrect { retries_left }) => {
            let session_left = MAX_PIN_FAILURES_PER_SESSION.saturating_sub(used);
            let left = retries_left.map_or(session_left, |t| t.min(session_left));
            let shown = if left == 0 {
                "locked"
            } else if left == 1 {
                "final_try"
            } else {
                "count_low"
            };
            state.events.pin(&session.id, shown, Some(left));
            crate::api::sessions::record_event(
                state,
                Actor::Applicant(session.id.clone()),
                "ukey.pin_incorrect",
                None,
                json!({ "retries_left": left }),
            )
            .await?;
            Err(
                ApiError::new(StatusCode::FORBIDDEN, "pin_incorrect", "wrong PIN")
                    .with_details(json!({ "retries_left": left, "state": shown })),
            )
        }
        Err(TokenError::PinLocked) => {
            state.events.pin(&session.id, "locked", Some(0));
            Err(token_error(TokenError::PinLocked))
        }
        Err(e) => Err(token_error(e)),
    }
}

async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let _session = session_of(&state, &headers, &id)?;
    match find_ukey(&state).await {
        Ok((_, info)) => Ok(Json(json!({
            "present": true,
            "serial": info.serial,
            "blank": info.pin_state == PinState::NotInitialized,
            "pin": {
                "state": pin_state_name(info.pin_state),
                "retries_left": info.user_retries_left,
            },
        }))),
        Err(e) if e.code == "ukey_absent" => Ok(Json(json!({
            "present": false, "serial": null, "blank": false,
            "pin": { "state": null, "retries_left": null },
        }))),
        Err(e) => Err(e),
    }
}

/// A PIN as the request carries it; wiped when dropped.
#[derive(Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct PinBody {
    pin: String,
    /// The holder's own PIN, replacing the initial one (required when the UKEY says its PIN
    /// is to be changed, as after staff issuance).
    #[serde(default)]
    new_pin: Option<String>,
}

/// The session's card items (read audited) and the subject's keyed digest.
pub(crate) async fn holder_values(
    state: &AppState,
    session: &ApplicantSession,
) -> Result<(String, [u8; 32], Vec<Personal>), ApiError> {
    let st = state.clone();
    let s = session.clone();
    blocking(move || {
        let mut conn = st.store.conn()?;
        let subject_id = Subjects::of_session(&conn, &s.id)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "step_out_of_order",
                    "read the ID card first",
                )
            })?;
        let subjects = Subjects {
            catalog: &st.catalog,
            keys: st.keys.vault.as_ref(),
            cipher: st.config.store.cipher.into(),
        };
        let tx = conn.transaction()?;
        let values = subjects
            .read(&tx, now_ms(), &Actor::Applicant(s.id.clone()), &subject_id)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        tx.commit()?;
        let id_number = values
            .iter()
            .find(|p| p.item() == "id_number")
            .ok_or_else(|| ApiError::internal("the subject has no ID number"))?;
        let digest = subjects.digest_of(id_number).map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "token_unavailable",
                e.to_string(),
            )
        })?;
        Ok((subject_id, digest, values))
    })
    .await
}

fn ca_error(e: crate::ca_client::CaError) -> ApiError {
    tracing::warn!(error = %e, "certificate authority request failed");
    if e.is_retryable() {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ca_unavailable",
            "the certificate authority cannot be reached; nothing was issued, try again later",
        )
    } else {
        ApiError::new(StatusCode::BAD_GATEWAY, "ca_refused", e.to_string())
    }
}

fn algorithm_of(config: &kiosk_config::Config) -> KeyAlgorithm {
    match config.ukey.algorithm {
        kiosk_config::UkeyAlgorithm::P256 => KeyAlgorithm::P256,
        kiosk_config::UkeyAlgorithm::Sm2 => KeyAlgorithm::Sm2,
    }
}

/// Digest of a signed document for the record (SM3 for SM2 keys, SHA-256 for P-256).
fn document_digest(algorithm: KeyAlgorithm, document: &[u8]) -> String {
    match algorithm {
        KeyAlgorithm::Sm2 => hex::encode(sm3::Sm3::digest(document)),
        KeyAlgorithm::P256 => hex::encode(sha2::Sha256::digest(document)),
    }
}

async fn issue(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(mut body): Json<PinBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let session = session_of(&state, &headers, &id)?;
    let plan = crate::workflow::plan::steps(&session.service, false, false);
    if !plan.contains(&Step::Ukey) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "wrong_service",
            "this service does not issue a certificate",
        ));
    }
    require_ready(&state, &session, Step::Ukey)?;
    if session.service == crate::workflow::plan::ENTERPRISE_SERVICE
        && !state
            .memory
            .progress(&session.id)
            .done
            .contains(&Step::Enterprise)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "step_out_of_order",
            "declare the enterprise's fields first",
        )
        .with_details(json!({ "missing": "enterprise" })));
    }
    // Everything that can be missing is checked before the token is touched.
    let recipient = state.hq_recipient.get(LINK_WAIT).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "hq_key_unavailable",
            "HQ's record key is not known yet; try again in a moment",
        )
    })?;
    let ca = state.ca.client(LINK_WAIT).await.map_err(ca_error)?;
    let (subject_id, digest, mut values) = holder_values(&state, &session).await?;
    // What the applicant typed or declared (mobile, the enterprise's fields) goes with it.
    values.extend(state.memory.typed(&session.id));
    let subject = holder_subject(&values, &digest)?;
    let (token, info) = find_ukey(&state).await?;
    state.events.device("ukey", true);
    let new_pin = body.new_pin.take().map(Zeroizing::new);
    if info.pin_state == PinState::ToBeChanged && new_pin.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "pin_change_required",
            "this UKEY still has its initial PIN: choose your own PIN",
        ));
    }
    let old_pin = Zeroizing::new(std::mem::take(&mut body.pin));
    login_holder(&state, &session, &token, old_pin.clone()).await?;
    if let Some(new_pin) = new_pin {
        if let Err(e) = token
            .change_pin(
                UserKind::User,
                &Pin::new(old_pin.as_str()),
                &Pin::new(new_pin.as_str()),
            )
            .await
        {
            let _ = token.logout().await;
            return Err(token_error(e));
        }
    }
    let result = issue_on_token(&state, &session, &token, &ca, &subject, &digest).await;
    let _ = token.logout().await;
    let (cert, form, signature, algorithm) = result?;

    values.push(Personal::new(
        "certificate",
        base64::engine::general_purpose::STANDARD.encode(&cert.der),
    ));
    values.push(Personal::new("signature_value", hex::encode(&signature)));
    values.push(Personal::new(
        "document_digest",
        document_digest(algorithm, &form),
    ));
    let st = state.clone();
    let s = session.clone();
    let serial = cert.serial_hex.clone();
    let not_after = cert.not_after_ms / 1000;
    let sealer = HqSealer {
        suite: match state.config.hq.suite {
            kiosk_config::EnvelopeSuite::Gm => records::envelope::Suite::Gm,
            kiosk_config::EnvelopeSuite::Nist => records::envelope::Suite::Nist,
        },
        recipient,
    };
    let queued = blocking(move || {
        let mut conn = st.store.conn()?;
        if !st.sessions.is_open(&s.id) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "session_not_found",
                "the session ended during the issuance",
            ));
        }
        let tx = conn.transaction()?;
        let seq = issuance::enqueue_issued(
            &tx,
            &st.catalog,
            st.keys.vault.as_ref(),
            &sealer,
            &Issued {
                session: &s.id,
                service: &s.service,
                subject_id: &subject_id,
                subject_digest: digest,
                digest_algorithm: st.keys.digest_algorithm,
                values,
                serial_hex: &serial,
                not_after_unix: not_after,
                kind: CertificateEventKind::Issued,
                at_ms: now_ms(),
            },
        )
        .map_err(|e| {
            tracing::error!(error = %e, "recording the issuance failed");
            ApiError::internal("the issuance could not be recorded")
        })?;
        tx.commit()?;
        Ok(seq)
    })
    .await?;
    state.memory.update_progress(&session.id, |p| {
        p.done.insert(Step::Ukey);
        p.done.insert(Step::Done);
        p.certificate_serial = Some(cert.serial_hex.clone());
    });
    state.events.step(&session.id, "ukey", "done", 100);
    tracing::info!(session = %session.id, serial = %cert.serial_hex, outbox_seq = queued, "certificate issued onto the UKEY");
    let parsed = hsm::csr::parse_certificate(&cert.der).map_err(token_error)?;
    Ok(Json(json!({
        "certificate": {
            "serial": cert.serial_hex,
            "subject": mask_subject(&parsed.subject),
            "issuer": parsed.issuer,
            "not_after": parsed.not_after_unix,
            "algorithm": algorithm.name(),
        },
        "form_signature": { "algorithm": algorithm.name(), "verified": true },
        "record_queued": true,
    })))
}

/// A certificate serial as the CA names it: lower-case hex without separators.
fn plain_serial(rendered: &str) -> String {
    rendered.replace(':', "").to_ascii_lowercase()
}

/// The subject as the screen may show it: the name masked like everywhere else.
fn mask_subject(subject: &str) -> String {
    subject
        .split(',')
        .map(|part| match part.trim().split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("CN") => {
                let first: String = v.chars().take(1).collect();
                format!(
                    "CN={first}{}",
                    "*".repeat(v.chars().count().saturating_sub(1))
                )
            }
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The token part of the issuance, logged in: the key (a leftover of an unfinished issuance
/// on this UKEY is reused; a key with a certificate means the UKEY is in use), the CSR, the
/// certificate (revoked again if it cannot be written), the signed form.
async fn issue_on_token(
    state: &AppState,
    session: &ApplicantSession,
    token: &Arc<dyn Token>,
    ca: &crate::ca_client::CaClient,
    subject: &str,
    subject_digest: &[u8; 32],
) -> Result<
    (
        crate::ca_client::IssuedCertificate,
        Vec<u8>,
        Vec<u8>,
        KeyAlgorithm,
    ),
    ApiError,
> {
    let label = state.config.ukey.key_label.clone();
    let step = |phase: &str, pct: u8| state.events.step(&session.id, "ukey", phase, pct);
    step("generating_key", 15);
    let key = match token.key(&label).await {
        Ok(existing) => {
            if token
                .read_certificate(&label)
                .await
                .map_err(token_error)?
                .is_some()
            {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "ukey_in_use",
                    "this UKEY already holds a certificate; use the lifecycle services",
                ));
            }
            existing
        }
        Err(TokenError::NoSuchKey(_)) => token
            .generate_key_pair(&label, algorithm_of(&state.config))
            .await
            .map_err(token_error)?,
        Err(e) => return Err(token_error(e)),
    };
    step("requesting_certificate", 45);
    let csr = hsm::csr::build_csr(token.as_ref(), &label, subject)
        .await
        .map_err(token_error)?;
    let holder = crate::ca_client::Holder {
        digest: subject_digest,
        service: &session.service,
        application: &session.id,
    };
    let cert = ca.enroll(&csr.der, &holder).await.map_err(ca_error)?;
    let written = async {
        let parsed = hsm::csr::parse_certificate(&cert.der)?;
        if parsed.public_key != key.public_key {
            return Err(TokenError::Encoding("the CA certified another key".into()));
        }
        step("writing_certificate", 70);
        token.write_certificate(&label, &cert.der).await?;
        step("signing_form", 85);
        let form = issuance::application_form(
            &session.service,
            &state.config.kiosk.id,
            &state.catalog.policy_version,
            &cert.serial_hex,
            subject_digest,
            now_ms(),
        );
        let signature = token.sign(&label, &form).await?;
        hsm::soft_crypto::verify(
            key.algorithm,
            &key.public_key,
            token.sm2_distid(),
            &form,
            &signature.raw,
        )?;
        Ok((form, signature.to_der()?))
    }
    .await;
    match written {
        Ok((form, signature)) => Ok((cert, form, signature, key.algorithm)),
        Err(e) => {
            // Nothing half-written: the certificate that did not reach the UKEY is revoked.
            if let Err(revoke) = ca
                .revoke(&cert.serial_hex, "cessationOfOperation", &holder)
                .await
            {
                tracing::warn!(serial = %cert.serial_hex, error = %revoke, "revoking an unwritten certificate failed");
            }
            Err(token_error(e))
        }
    }
}

#[derive(Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct SignBody {
    pin: String,
    /// The document (base64), at most the API's body limit.
    document_b64: String,
}

/// Certificate use: sign a document with the holder's key after their PIN; verified in
/// software before it is returned.
async fn sign(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(mut body): Json<SignBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let session = session_of(&state, &headers, &id)?;
    if session.service != "certificate_use" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "wrong_service",
            "signing is the certificate_use service",
        ));
    }
    let document = base64::engine::general_purpose::STANDARD
        .decode(body.document_b64.as_bytes())
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_document",
                "document_b64 is not base64",
            )
        })?;
    if document.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_document",
            "the document is empty",
        ));
    }
    // The purpose consent of certificate use comes first, like every service.
    super::verification::require_consent(&state, &session, "document_digest").await?;
    let token = holder_ukey(&state, &session, std::mem::take(&mut body.pin)).await?;
    let label = state.config.ukey.key_label.clone();
    let signed = async {
        let key = token.key(&label).await?;
        let cert = token
            .read_certificate(&label)
            .await?
            .ok_or_else(|| TokenError::NoSuchCertificate(label.clone()))?;
        let parsed = hsm::csr::parse_certificate(&cert)?;
        let signature = token.sign(&label, &document).await?;
        hsm::soft_crypto::verify(
            key.algorithm,
            &key.public_key,
            token.sm2_distid(),
            &document,
            &signature.raw,
        )?;
        Ok::<_, TokenError>((
            key.algorithm,
            plain_serial(&parsed.serial_hex),
            signature.to_der()?,
        ))
    }
    .await;
    let _ = token.logout().await;
    let (algorithm, serial, der) = signed.map_err(|e| match e {
        TokenError::NoSuchKey(_) | TokenError::NoSuchCertificate(_) => ApiError::new(
            StatusCode::CONFLICT,
            "no_certificate",
            "this UKEY holds no certificate to sign with",
        ),
        other => token_error(other),
    })?;
    let digest = document_digest(algorithm, &document);
    crate::api::sessions::record_event(
        &state,
        Actor::Applicant(session.id.clone()),
        "certificate.sign",
        None,
        json!({ "serial": serial, "document_digest": digest }),
    )
    .await?;
    state.memory.complete(&session.id, Step::Sign);
    Ok(Json(json!({
        "algorithm": algorithm.name(),
        "signature_b64": base64::engine::general_purpose::STANDARD.encode(&der),
        "document_digest": digest,
        "certificate_serial": serial,
        "verified": true,
    })))
}

/// Revocation reasons the CA takes (RFC 5280 names).
pub const REVOCATION_REASONS: [&str; 5] = [
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
];

/// The revocation reason of a lifecycle request (`unspecified` when absent), checked before
/// anything is done: an unknown one is the applicant's mistake, not a CA failure.
fn revocation_reason(reason: Option<&str>) -> Result<&'static str, ApiError> {
    let Some(given) = reason else {
        return Ok("unspecified");
    };
    REVOCATION_REASONS
        .iter()
        .copied()
        .find(|r| *r == given)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_reason",
                format!("the reason is one of {}", REVOCATION_REASONS.join(", ")),
            )
        })
}

#[derive(Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct LifecycleBody {
    pin: String,
    /// Revocation reason (`keyCompromise`, `superseded`, `cessationOfOperation`, `unspecified`).
    reason: Option<String>,
}

/// Renew, revoke, suspend or resume the certificate on the inserted UKEY, once the holder has
/// read their card and been verified again, and only if the certificate is theirs.
async fn lifecycle(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Json(mut body): Json<LifecycleBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let session = session_of(&state, &headers, &id)?;
    if session.service != "lifecycle" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "wrong_service",
            "certificate actions are the lifecycle service",
        ));
    }
    if !["renew", "revoke", "suspend", "resume"].contains(&action.as_str()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_action",
            "the action is one of renew, revoke, suspend, resume",
        ));
    }
    let reason = revocation_reason(body.reason.as_deref())?;
    require_ready(&state, &session, Step::Lifecycle)?;
    let ca = state.ca.client(LINK_WAIT).await.map_err(ca_error)?;
    let (_, digest, values) = holder_values(&state, &session).await?;
    let subject = holder_subject(&values, &digest)?;
    let token = holder_ukey(&state, &session, std::mem::take(&mut body.pin)).await?;
    let label = state.config.ukey.key_label.clone();
    let holder = crate::ca_client::Holder {
        digest: &digest,
        service: &session.service,
        application: &session.id,
    };
    let done = lifecycle_on_token(&token, &ca, &label, &action, &holder, &subject, reason).await;
    let _ = token.logout().await;
    let (serial, status, not_after, kind) = done?;
    let st = state.clone();
    let s = session.clone();
    let event_serial = serial.clone();
    blocking(move || {
        let mut conn = st.store.conn()?;
        let tx = conn.transaction()?;
        let event = CertificateEvent {
            subject_ref: KeyedDigest {
                algorithm: st.keys.digest_algorithm.to_string(),
                key_id: "kiosk-keyed-digest".into(),
                digest: OpaqueBytes(digest.to_vec()),
            },
            serial_hex: event_serial,
            kind,
            government_use: false,
            not_after,
            occurred_at: now_ms() / 1000,
        };
        issuance::enqueue_event(&tx, &s.id, event, digest, now_ms())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        tx.commit()?;
        Ok(())
    })
    .await?;
    state.memory.update_progress(&session.id, |p| {
        p.done.insert(Step::Lifecycle);
        p.done.insert(Step::Done);
        p.certificate_serial = Some(serial.clone());
    });
    Ok(Json(
        json!({ "serial": serial, "status": status, "action": action }),
    ))
}

/// The certificate on the token must name the verified holder (its `serialNumber` is the
/// keyed digest of their ID number); then the CA does the action.
async fn lifecycle_on_token(
    token: &Arc<dyn Token>,
    ca: &crate::ca_client::CaClient,
    label: &str,
    action: &str,
    holder: &crate::ca_client::Holder<'_>,
    subject: &str,
    reason: &str,
) -> Result<(String, &'static str, i64, CertificateEventKind), ApiError> {
    let digest = holder.digest;
    let cert = token
        .read_certificate(label)
        .await
        .map_err(token_error)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_certificate",
                "this UKEY holds no certificate",
            )
        })?;
    let parsed = hsm::csr::parse_certificate(&cert).map_err(token_error)?;
    let expected = format!("serialNumber={}", hex::encode(&digest[..16]));
    if !parsed
        .subject
        .split(',')
        .any(|p| p.trim().eq_ignore_ascii_case(&expected))
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_holder",
            "the certificate on this UKEY belongs to someone else",
        ));
    }
    let serial = plain_serial(&parsed.serial_hex);
    match action {
        "renew" => {
            let csr = hsm::csr::build_csr(token.as_ref(), label, subject)
                .await
                .map_err(token_error)?;
            let renewed = ca.reenroll(&csr.der, holder).await.map_err(ca_error)?;
            token
                .write_certificate(label, &renewed.der)
                .await
                .map_err(token_error)?;
            if let Err(e) = ca.revoke(&serial, "superseded", holder).await {
                tracing::warn!(error = %e, "revoking the superseded certificate failed");
            }
            Ok((
                renewed.serial_hex,
                "good",
                renewed.not_after_ms / 1000,
                CertificateEventKind::Renewed,
            ))
        }
        "revoke" => {
            ca.revoke(&serial, reason, holder).await.map_err(ca_error)?;
            Ok((
                serial,
                "revoked",
                parsed.not_after_unix,
                CertificateEventKind::Revoked,
            ))
        }
        "suspend" => {
            ca.hold(&serial, holder).await.map_err(ca_error)?;
            Ok((
                serial,
                "held",
                parsed.not_after_unix,
                CertificateEventKind::Suspended,
            ))
        }
        _ => {
            ca.release(&serial, holder).await.map_err(ca_error)?;
            // Resumed: reported to HQ as a renewal of the same serial (the record type has no
            // "resumed" kind; HQ reads the serial's status from the CA).
            Ok((
                serial,
                "good",
                parsed.not_after_unix,
                CertificateEventKind::Renewed,
            ))
        }
    }
}

fn sim_slot(state: &AppState) -> Result<&Arc<crate::ukey_sim::SimUkeySlot>, ApiError> {
    state.ukey_sim.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_simulated",
            "UKEYs are not simulated on this kiosk",
        )
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SimInsert {
    /// Pull the UKEY in the middle of the next key generation.
    #[serde(default)]
    pull_during_keygen: bool,
}

/// Insert a simulated UKEY as it comes from staff issuance: initialised, with the initial
/// PIN of its PIN mailer.
async fn sim_insert(
    State(state): State<AppState>,
    body: Option<Json<SimInsert>>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let slot = sim_slot(&state)?.clone();
    let label = format!("UKEY-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let info = state
        .ukeys
        .init_token(
            &label,
            &Pin::new(state.config.ukey.factory_so_pin.expose()),
            &Pin::new(SIM_UKEY_PIN),
        )
        .await
        .map_err(token_error)?;
    if body.is_some_and(|Json(b)| b.pull_during_keygen) {
        slot.arm_pull_during_keygen();
    }
    state.events.device("ukey", true);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "label": info.label, "serial": info.serial, "initial_pin": SIM_UKEY_PIN })),
    ))
}

/// Pull every simulated UKEY.
async fn sim_pull(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    sim_slot(&state)?
        .pull_all()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    state.events.device("ukey", false);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_reason_defaults_to_unspecified_and_refuses_unknown_names() {
        assert_eq!(revocation_reason(None).unwrap(), "unspecified");
        assert_eq!(
            revocation_reason(Some("keyCompromise")).unwrap(),
            "keyCompromise"
        );
        for bad in ["", "KEYCOMPROMISE", "certificateHold", "removeFromCRL", "x"] {
            let e = revocation_reason(Some(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
            assert_eq!(e.code, "invalid_reason", "{bad:?}");
        }
    }
}
