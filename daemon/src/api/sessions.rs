//! `POST /v1/sessions` opens an applicant session, `GET /v1/sessions/{id}` shows it,
//! `DELETE` cancels it, `POST .../consents` records consent and `POST .../consents/withdraw`
//! withdraws ([`crate::workflow::sessions`]).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::applicant;
use super::{ApiError, AppState};
use crate::workflow::sessions::{ConsentRequest, Opened, SessionView, WithdrawRequest};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions", post(open))
        .route("/v1/sessions/{id}", get(show).delete(cancel))
        .route("/v1/sessions/{id}/consents", post(consent))
        .route("/v1/sessions/{id}/consents/withdraw", post(withdraw))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenRequest {
    service: String,
}

async fn open(
    State(state): State<AppState>,
    Json(req): Json<OpenRequest>,
) -> Result<(StatusCode, Json<Opened>), ApiError> {
    let opened = state.open_session(&req.service).await?;
    Ok((StatusCode::CREATED, Json(opened)))
}

async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let session = applicant(&state, &headers, &id)?;
    Ok(Json(state.session_view(session).await?))
}

async fn consent(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(req): Json<ConsentRequest>,
) -> Result<Json<SessionView>, ApiError> {
    let session = applicant(&state, &headers, &id)?;
    Ok(Json(state.consent(session, req).await?))
}

async fn withdraw(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(req): Json<WithdrawRequest>,
) -> Result<Json<SessionView>, ApiError> {
    let session = applicant(&state, &headers, &id)?;
    Ok(Json(state.withdraw(session, req).await?))
}

async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let session = applicant(&state, &headers, &id)?;
    state.close_session(&session).await?;
    Ok(StatusCode::NO_CONTENT)
}
