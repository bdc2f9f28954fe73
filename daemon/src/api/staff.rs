//! The staff side of the API: `POST /v1/staff/login` (staff UKEY + PIN),
//! `POST /v1/staff/logout`, `GET /v1/staff/status` (devices, sync backlog and
//! last HQ contact, open rights requests with deadlines, audit verification),
//! `GET /v1/staff/subjects` (personal data still held, masked) and
//! `POST /v1/staff/reveal` (one clear value, audited). Every staff action is
//! written to the audit log with the staff member's certificate subject.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use axum::routing::{get, post};
use axum::{Json, Router};
use hsm::Pin;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::sessions::{blocking, record_event};
use super::{ApiError, AppState};
use crate::app::now_ms;
use crate::audit::{self, Actor, AuditEvent};
use crate::staff::{StaffError, StaffSession};
use crate::store::subjects::Subjects;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/staff/login", post(login))
        .route("/v1/staff/logout", post(logout))
        .route("/v1/staff/status", get(status))
        .route("/v1/staff/subjects", get(subjects))
        .route("/v1/staff/reveal", post(reveal))
}

impl From<StaffError> for ApiError {
    fn from(e: StaffError) -> Self {
        let (status, code) = match &e {
            StaffError::NoToken => (StatusCode::NOT_FOUND, "no_token"),
            StaffError::NotStaffToken => (StatusCode::FORBIDDEN, "not_a_staff_token"),
            StaffError::TokenBusy => (StatusCode::CONFLICT, "token_busy"),
            StaffError::WrongPin { .. } => (StatusCode::UNAUTHORIZED, "wrong_pin"),
            StaffError::PinLocked => (StatusCode::LOCKED, "pin_locked"),
            StaffError::NoCertificate | StaffError::BadCertificate(_) => {
                (StatusCode::FORBIDDEN, "bad_certificate")
            }
            StaffError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            StaffError::Unauthorized => (StatusCode::UNAUTHORIZED, "staff_unauthorized"),
            StaffError::Token(_) | StaffError::Ca(_) | StaffError::Store(_) => {
                tracing::warn!(error = %e, "staff login failed");
                (StatusCode::SERVICE_UNAVAILABLE, "token_unavailable")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
}

/// The staff member behind the request.
pub fn staff_of(state: &AppState, headers: &HeaderMap) -> Result<StaffSession, ApiError> {
    Ok(state.staff.authenticate(bearer(headers))?)
}

async fn audit_staff(
    state: &AppState,
    staff: &StaffSession,
    action: &'static str,
    subject: Option<[u8; 32]>,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    record_event(
        state,
        Actor::Staff(staff.staff_id.clone()),
        action,
        subject,
        detail,
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    /// Label of the staff UKEY.
    token: String,
    pin: String,
}

#[derive(Serialize)]
struct LoginResponse {
    staff_token: String,
    staff_id: String,
}

async fn login(
    State(state): State<AppState>,
    Json(req): Json<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let pin = Pin::new(req.pin);
    match state.staff.login(&req.token, &pin).await {
        Ok((session, token)) => {
            audit_staff(
                &state,
                &session,
                "staff.login",
                None,
                json!({ "serial": session.serial }),
            )
            .await?;
            tracing::info!(staff = %session.staff_id, "staff logged in");
            Ok(Json(LoginResponse {
                staff_token: token,
                staff_id: session.staff_id,
            }))
        }
        Err(e) => {
            let reason = e.to_string();
            record_event(
                &state,
                Actor::System,
                "staff.login_failed",
                None,
                json!({ "reason": reason }),
            )
            .await?;
            Err(e.into())
        }
    }
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let staff = staff_of(&state, &headers)?;
    state.staff.logout(bearer(&headers).unwrap_or_default());
    audit_staff(&state, &staff, "staff.logout", None, json!({})).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let staff = staff_of(&state, &headers)?;
    let st = state.clone();
    let body = blocking(move || {
        let sync = crate::sync::status(&st.store).map_err(|e| ApiError::internal(e.to_string()))?;
        let conn = st.store.conn()?;
        let rights = crate::rights::Desk::open(&conn).map_err(|e| ApiError::internal(e.to_string()))?;
        let (key_name, key) = match crate::audit::device_key(&conn)? {
            Some((n, k)) => (n, Some(k)),
            None => (String::new(), None),
        };
        let report = crate::audit::verify(&conn, &key_name, key.as_ref())?;
        Ok(json!({
            "sync": sync,
            "rights_requests": rights.iter().map(|(id, kind, state, due)| json!({"id": id, "kind": kind, "state": state, "due": due})).collect::<Vec<_>>(),
            "audit": {
                "entries": report.entries,
                "checkpoints": report.checkpoints,
                "intact": report.tamper.is_none(),
                "problem": report.tamper.map(|t| t.to_string()),
            },
            "devices": {
                "idcard": if st.devices.idcard_sim.is_some() { "simulated" } else { "serial" },
                "fingerprint": if st.devices.fingerprint_sim.is_some() { "simulated" } else { "serial" },
            },
        }))
    })
    .await?;
    audit_staff(&state, &staff, "staff.status", None, json!({})).await?;
    Ok(Json(body))
}

async fn subjects(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let staff = staff_of(&state, &headers)?;
    let st = state.clone();
    let actor = Actor::Staff(staff.staff_id.clone());
    let list = blocking(move || {
        let mut conn = st.store.conn()?;
        let ids: Vec<(String, i64, Option<i64>)> = conn
            .prepare("SELECT subject_id, created_at, acked_at FROM subjects WHERE purged_at IS NULL ORDER BY created_at")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let subjects = Subjects { catalog: &st.catalog, keys: st.keys.vault.as_ref(), cipher: st.config.store.cipher.into() };
        let tx = conn.transaction()?;
        let mut out = Vec::new();
        for (id, created, acked) in ids {
            let values = subjects.read(&tx, now_ms(), &actor, &id).map_err(|e| ApiError::internal(e.to_string()))?;
            let fields: serde_json::Map<String, serde_json::Value> =
                values.iter().map(|p| (p.item().to_string(), json!(p.masked(&st.catalog)))).collect();
            out.push(json!({ "subject_id": id, "created_at_ms": created, "acked_at_ms": acked, "fields": fields }));
        }
        tx.commit()?;
        Ok(out)
    })
    .await?;
    Ok(Json(json!({ "subjects": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevealRequest {
    subject_id: String,
    item: String,
    /// Why staff need the clear value (recorded in the audit log).
    reason: String,
}

async fn reveal(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<RevealRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let staff = staff_of(&state, &headers)?;
    if req.reason.trim().len() < 4 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason_required",
            "say why the clear value is needed",
        ));
    }
    let st = state.clone();
    let actor = Actor::Staff(staff.staff_id.clone());
    let value = blocking(move || {
        let mut conn = st.store.conn()?;
        let subjects = Subjects { catalog: &st.catalog, keys: st.keys.vault.as_ref(), cipher: st.config.store.cipher.into() };
        let tx = conn.transaction()?;
        let values = subjects.read(&tx, now_ms(), &actor, &req.subject_id).map_err(|e| match e {
            crate::store::subjects::SubjectError::NotFound | crate::store::subjects::SubjectError::Purged => {
                ApiError::not_found("no such subject, or its data was purged")
            }
            other => ApiError::internal(other.to_string()),
        })?;
        let digest: Vec<u8> = tx.query_row("SELECT subject_digest FROM subjects WHERE subject_id = ?1", [&req.subject_id], |r| r.get(0))?;
        let value = values
            .into_iter()
            .find(|p| p.item() == req.item)
            .ok_or_else(|| ApiError::not_found("the subject has no such item"))?;
        audit::append(
            &tx,
            now_ms(),
            &AuditEvent {
                actor,
                action: "staff.reveal",
                subject: digest.try_into().ok(),
                detail: json!({ "subject_id": req.subject_id, "item": req.item, "reason": req.reason }),
            },
        )?;
        tx.commit()?;
        Ok(value.expose().to_string())
    })
    .await?;
    Ok(Json(json!({ "value": value })))
}
