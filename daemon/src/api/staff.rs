//! The staff desk ([`crate::workflow::staff`]): `POST /v1/staff/login` (staff UKEY + PIN),
//! `POST /v1/staff/logout`, `GET /v1/staff/status`, `GET /v1/staff/subjects` (masked),
//! `POST /v1/staff/reveal` (one clear value, audited), `GET /v1/staff/audit?limit=N` and
//! `GET /v1/staff/devices`, `POST /v1/staff/ukeys/unblock` (a holder's locked PIN, with the
//! UKEY's SO PIN) and `POST /v1/staff/ukeys/pin` (PIN change).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use hsm::Pin;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{bearer, staff};
use super::{ApiError, AppState};
use crate::workflow::staff::{AuditPage, DevicesView, LoggedIn};
use crate::workflow::ukey_admin::{ChangePinInput, PinReset, UnblockInput};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/staff/login", post(login))
        .route("/v1/staff/logout", post(logout))
        .route("/v1/staff/status", get(status))
        .route("/v1/staff/subjects", get(subjects))
        .route("/v1/staff/reveal", post(reveal))
        .route("/v1/staff/audit", get(audit_log))
        .route("/v1/staff/devices", get(devices))
        .route("/v1/staff/ukeys/unblock", post(unblock_ukey))
        .route("/v1/staff/ukeys/pin", post(change_ukey_pin))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    /// Label of the staff UKEY.
    token: String,
    pin: String,
}

async fn login(
    State(state): State<AppState>,
    Json(req): Json<LoginRequest>,
) -> Result<Json<LoggedIn>, ApiError> {
    let pin = Pin::new(req.pin);
    Ok(Json(state.staff_login(&req.token, pin).await?))
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let staff = staff(&state, &headers)?;
    let token = bearer(&headers).unwrap_or_default();
    state.staff_logout(&staff, token).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let staff = staff(&state, &headers)?;
    Ok(Json(state.staff_status(&staff).await?))
}

async fn subjects(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let staff = staff(&state, &headers)?;
    Ok(Json(state.held_subjects(&staff).await?))
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
) -> Result<Json<Value>, ApiError> {
    let staff = staff(&state, &headers)?;
    let value = state
        .reveal(&staff, req.subject_id, req.item, req.reason)
        .await?;
    Ok(Json(json!({ "value": value })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<u32>,
}

async fn audit_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let staff = staff(&state, &headers)?;
    Ok(Json(state.audit_page(&staff, q.limit).await?))
}

async fn devices(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<DevicesView>, ApiError> {
    let staff = staff(&state, &headers)?;
    Ok(Json(state.devices_view(&staff).await?))
}

async fn unblock_ukey(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(input): Json<UnblockInput>,
) -> Result<Json<PinReset>, ApiError> {
    let staff = staff(&state, &headers)?;
    Ok(Json(state.unblock_ukey(&staff, input).await?))
}

async fn change_ukey_pin(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(input): Json<ChangePinInput>,
) -> Result<Json<PinReset>, ApiError> {
    let staff = staff(&state, &headers)?;
    Ok(Json(state.change_ukey_pin(&staff, input).await?))
}
