//! Applicant sessions and consent: `POST /v1/sessions` opens one (refused
//! while another applicant is active or while intake is paused for lack of
//! disk), `GET` shows it, `DELETE` cancels it leaving no personal data behind,
//! `POST /v1/sessions/{id}/consents` records consent — to the purpose, then
//! separately to each sensitive item and to transfers that need their own —
//! and `POST .../consents/withdraw` withdraws. Nothing is pre-ticked: only what
//! the request names is granted.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use axum::routing::{get, post};
use axum::{Json, Router};
use kiosk_config::Destination;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ApiError, AppState};
use crate::app::now_ms;
use crate::audit::{self, Actor, AuditEvent};
use crate::privacy::consent::{ConsentError, Ledger, Scope};
use crate::session::{ApplicantSession, SessionError};
use crate::store::Store;
use crate::store::subjects::Subjects;
use crate::workflow::plan::{self, Step};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions", post(open))
        .route("/v1/sessions/{id}", get(show).delete(cancel))
        .route("/v1/sessions/{id}/consents", post(consent))
        .route("/v1/sessions/{id}/consents/withdraw", post(withdraw))
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        let (status, code) = match e {
            SessionError::Busy => (StatusCode::CONFLICT, "session_busy"),
            SessionError::NotFound => (StatusCode::NOT_FOUND, "session_not_found"),
            SessionError::Unauthorized => (StatusCode::UNAUTHORIZED, "session_unauthorized"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<ConsentError> for ApiError {
    fn from(e: ConsentError) -> Self {
        let code = match &e {
            ConsentError::Catalog(_) => "not_declared",
            ConsentError::NoPurposeConsent { .. } => "consent_required",
            ConsentError::SeparateConsentRequired { .. } => "separate_consent_required",
            ConsentError::Withdrawn { .. } => "consent_withdrawn",
            ConsentError::TransferConsentRequired { .. } => "transfer_consent_required",
            ConsentError::Sql(_) | ConsentError::Audit(_) => {
                tracing::error!(error = %e, "consent store failed");
                return ApiError::internal("the consent could not be recorded");
            }
        };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
    }
}

/// The session named in the path, authenticated by its bearer token.
pub fn session_of(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<ApplicantSession, ApiError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    Ok(state.sessions.authenticate(id, token)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenRequest {
    service: String,
}

#[derive(Serialize)]
struct ItemView {
    item: String,
    label: String,
    sensitivity: kiosk_config::Sensitivity,
    required: bool,
    separate_consent: bool,
    transfer_consent: Vec<Destination>,
}

#[derive(Serialize)]
struct MethodView {
    method: String,
    label: String,
    biometric: bool,
    /// Exactly what the method's external service receives.
    fields: Vec<String>,
    recipient: String,
}

#[derive(Serialize)]
struct Opened {
    session_id: String,
    token: String,
    service: String,
    purpose: String,
    policy_version: String,
    items: Vec<ItemView>,
    methods: Vec<MethodView>,
    idle_timeout_secs: u64,
}

async fn open(
    State(state): State<AppState>,
    Json(req): Json<OpenRequest>,
) -> Result<(StatusCode, Json<Opened>), ApiError> {
    let svc = state
        .catalog
        .service(&req.service)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "unknown_service", e.to_string()))?
        .clone();
    let store_dir = state
        .store
        .path()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    crate::intake::check(&store_dir, state.config.store.min_free_bytes).map_err(|e| {
        tracing::warn!(error = %e, "intake paused");
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "intake_paused",
            e.to_string(),
        )
    })?;
    let (session, token, expired) = state.sessions.open(&req.service)?;
    if let Some(old) = expired {
        discard_session(&state, &old, "expired").await?;
    }
    let items = svc
        .required
        .iter()
        .map(|i| (i, true))
        .chain(svc.optional.iter().map(|i| (i, false)))
        .filter_map(|(i, required)| {
            let d = state.catalog.items.get(i)?;
            Some(ItemView {
                item: i.clone(),
                label: d.label.clone(),
                sensitivity: d.sensitivity,
                required,
                separate_consent: d.sensitivity.needs_separate_consent(),
                transfer_consent: d.transfer_consent.clone(),
            })
        })
        .collect();
    let methods = svc
        .methods
        .iter()
        .filter_map(|m| {
            let d = state.catalog.methods.get(m)?;
            Some(MethodView {
                method: m.clone(),
                label: d.label.clone(),
                biometric: d.biometric,
                fields: d.fields.clone(),
                recipient: d.recipient.clone(),
            })
        })
        .collect();
    record_event(
        &state,
        Actor::Applicant(session.id.clone()),
        "session.open",
        None,
        json!({ "service": req.service }),
    )
    .await?;
    tracing::info!(session = %session.id, service = %req.service, "applicant session opened");
    Ok((
        StatusCode::CREATED,
        Json(Opened {
            session_id: session.id,
            token,
            service: req.service,
            purpose: svc.label,
            policy_version: state.catalog.policy_version.clone(),
            items,
            methods,
            idle_timeout_secs: state.config.api.session_idle_secs,
        }),
    ))
}

#[derive(Serialize)]
struct SessionView {
    session_id: String,
    service: String,
    consents: Vec<serde_json::Value>,
    workflow: WorkflowView,
}

/// Where the applicant is: the steps done, the next one and what it asks for (with why).
#[derive(Serialize)]
struct WorkflowView {
    state: Step,
    completed: Vec<Step>,
    steps: Vec<Step>,
    next: NextView,
}

#[derive(Serialize)]
struct NextView {
    step: Step,
    asks: Vec<plan::Ask>,
}

async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let session = session_of(&state, &headers, &id)?;
    let st = state.clone();
    let sid = session.id.clone();
    let service = session.service.clone();
    let (consents, face, fingerprint) = blocking(move || {
        let conn = st.store.conn()?;
        let ledger = crate::privacy::consent::Ledger {
            catalog: &st.catalog,
            session: &sid,
        };
        let consented = |item: &str| ledger.require(&conn, &service, None, item).is_ok();
        let (face, fingerprint) = (consented("face_image"), consented("fingerprint"));
        let mut stmt = conn.prepare(
            "SELECT service, item, scope, policy_version, granted_at, withdrawn_at FROM consents
             WHERE session_id = ?1 ORDER BY id",
        )?;
        let rows = stmt
            .query_map([&sid], |r| {
                Ok(json!({
                    "service": r.get::<_, String>(0)?,
                    "item": r.get::<_, Option<String>>(1)?,
                    "scope": r.get::<_, String>(2)?,
                    "policy_version": r.get::<_, String>(3)?,
                    "granted_at_ms": r.get::<_, i64>(4)?,
                    "withdrawn_at_ms": r.get::<_, Option<i64>>(5)?,
                }))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, face, fingerprint))
    })
    .await?;
    let progress = state.memory.progress(&session.id);
    let steps = plan::steps(&session.service, face, fingerprint);
    let next = plan::next(&steps, &progress.done);
    Ok(Json(SessionView {
        workflow: WorkflowView {
            state: next,
            completed: progress.done.iter().copied().collect(),
            next: NextView {
                step: next,
                asks: plan::asks(&state.catalog, &session.service, next),
            },
            steps,
        },
        session_id: session.id,
        service: session.service,
        consents,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferConsent {
    item: String,
    destination: Destination,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentRequest {
    /// Consent to the purpose (the service) itself.
    #[serde(default)]
    purpose: bool,
    /// Items consented to separately (sensitive and biometric ones need it).
    #[serde(default)]
    items: Vec<String>,
    /// Transfers that need their own consent (face image to a verifier).
    #[serde(default)]
    transfers: Vec<TransferConsent>,
}

async fn consent(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(req): Json<ConsentRequest>,
) -> Result<Json<SessionView>, ApiError> {
    let session = session_of(&state, &headers, &id)?;
    // Validate everything before writing anything.
    for item in req
        .items
        .iter()
        .chain(req.transfers.iter().map(|t| &t.item))
    {
        state
            .catalog
            .permit(&session.service, None, item)
            .or_else(|e| {
                // An item a verification method sends is declared through the method.
                let methods = &state.catalog.service(&session.service)?.methods;
                methods
                    .iter()
                    .find_map(|m| state.catalog.permit(&session.service, Some(m), item).ok())
                    .ok_or(e)
            })
            .map_err(ConsentError::from)?;
    }
    let purpose = req.purpose;
    let sid = session.id.clone();
    in_ledger(&state, session, move |ledger, tx, at, service| {
        if req.purpose {
            ledger.grant(tx, at, service, None, Scope::Collect)?;
        }
        for item in &req.items {
            ledger.grant(tx, at, service, Some(item), Scope::Collect)?;
        }
        for t in &req.transfers {
            ledger.grant(
                tx,
                at,
                service,
                Some(&t.item),
                Scope::Transfer(t.destination),
            )?;
        }
        Ok(())
    })
    .await?;
    if purpose {
        state.memory.complete(&sid, Step::Consents);
    }
    show(State(state), headers, Path(id)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WithdrawRequest {
    /// Items to withdraw; empty withdraws the purpose and everything under it.
    #[serde(default)]
    items: Vec<String>,
}

async fn withdraw(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(req): Json<WithdrawRequest>,
) -> Result<Json<SessionView>, ApiError> {
    let session = session_of(&state, &headers, &id)?;
    in_ledger(&state, session, move |ledger, tx, at, service| {
        if req.items.is_empty() {
            ledger.withdraw(tx, at, service, None)?;
        }
        for item in &req.items {
            ledger.withdraw(tx, at, service, Some(item))?;
        }
        Ok(())
    })
    .await?;
    show(State(state), headers, Path(id)).await
}

async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let session = session_of(&state, &headers, &id)?;
    // Close first: a step still running sees the session gone when it takes
    // the store lock, and stores nothing; then purge what was stored before.
    state.sessions.close(&session.id);
    // A finished application already put its minimized, sealed record in the outbox: the
    // clear copy is not needed any longer, whatever the reason the session ends.
    let reason = if state
        .memory
        .progress(&session.id)
        .done
        .contains(&Step::Done)
    {
        "completed"
    } else {
        "cancelled"
    };
    discard_session(&state, &session.id, reason).await?;
    tracing::info!(session = %session.id, reason, "applicant session closed");
    Ok(StatusCode::NO_CONTENT)
}

/// Leave nothing personal behind from a session that did not complete:
/// purge any subject it stored and drop its not yet sent records.
pub async fn discard_session(
    state: &AppState,
    session_id: &str,
    reason: &'static str,
) -> Result<(), ApiError> {
    state.memory.forget(session_id);
    let st = state.clone();
    let sid = session_id.to_string();
    blocking(move || {
        let mut conn = st.store.conn()?;
        let tx = conn.transaction()?;
        let at = now_ms();
        let subjects: Vec<String> = tx
            .prepare("SELECT subject_id FROM subjects WHERE session_id = ?1 AND purged_at IS NULL")?
            .query_map([&sid], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let actor = Actor::Applicant(sid.clone());
        for s in &subjects {
            Subjects::purge(&tx, at, &actor, s, reason)
                .map_err(|e| ApiError::internal(format!("purge failed: {e}")))?;
        }
        audit::append(
            &tx,
            at,
            &AuditEvent {
                actor,
                action: "session.close",
                subject: None,
                detail: json!({ "reason": reason, "purged_subjects": subjects.len() }),
            },
        )?;
        tx.commit()?;
        if !subjects.is_empty() {
            Store::scrub_wal(&conn)?;
        }
        Ok(())
    })
    .await
}

/// Run `f` with the session's consent ledger inside one store transaction.
async fn in_ledger(
    state: &AppState,
    session: ApplicantSession,
    f: impl FnOnce(&Ledger<'_>, &rusqlite::Transaction<'_>, i64, &str) -> Result<(), ConsentError>
    + Send
    + 'static,
) -> Result<(), ApiError> {
    let st = state.clone();
    blocking(move || {
        let ledger = Ledger {
            catalog: &st.catalog,
            session: &session.id,
        };
        let mut conn = st.store.conn()?;
        let tx = conn.transaction()?;
        f(&ledger, &tx, now_ms(), &session.service)?;
        tx.commit()?;
        Ok(())
    })
    .await
}

/// Append one audit entry in a transaction of its own.
pub async fn record_event(
    state: &AppState,
    actor: Actor,
    action: &'static str,
    subject: Option<[u8; 32]>,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    let st = state.clone();
    blocking(move || {
        let mut conn = st.store.conn()?;
        audit::record(
            &mut conn,
            now_ms(),
            &AuditEvent {
                actor,
                action,
                subject,
                detail,
            },
        )?;
        Ok(())
    })
    .await
}

/// Run store work on a blocking thread.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::internal("a store task failed"))?
}
