//! The applicant's UKEY ([`crate::workflow::ukey`], [`crate::workflow::certificate`]):
//! `GET /v1/sessions/{id}/ukey` (present? PIN state), `POST /v1/sessions/{id}/ukey` (the
//! issuance), `POST /v1/sessions/{id}/sign` (certificate use) and `POST
//! /v1/sessions/{id}/certificate/{action}` (renew, revoke, suspend, resume).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::extract::applicant;
use super::{ApiError, AppState};
use crate::workflow::certificate::{
    IssueInput, IssueOutcome, LifecycleInput, LifecycleOutcome, Signed,
};
use crate::workflow::ukey::UkeyStatus;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions/{id}/ukey", get(status).post(issue))
        .route("/v1/sessions/{id}/sign", post(sign))
        .route("/v1/sessions/{id}/certificate/{action}", post(lifecycle))
}

async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<UkeyStatus>, ApiError> {
    let session = applicant(&state, &headers, &id)?;
    Ok(Json(state.ukey_status(&session).await?))
}

async fn issue(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(input): Json<IssueInput>,
) -> Result<Json<IssueOutcome>, ApiError> {
    let session = applicant(&state, &headers, &id)?;
    Ok(Json(state.issue_certificate(&session, input).await?))
}

#[derive(Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct SignBody {
    pin: String,
    /// The document (base64), at most the API's body limit.
    document_b64: String,
}

async fn sign(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(mut body): Json<SignBody>,
) -> Result<Json<Signed>, ApiError> {
    let session = applicant(&state, &headers, &id)?;
    let document = base64::engine::general_purpose::STANDARD
        .decode(body.document_b64.as_bytes())
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_document",
                "document_b64 is not base64",
            )
        })?;
    let pin = Zeroizing::new(std::mem::take(&mut body.pin));
    Ok(Json(state.sign_document(&session, pin, &document).await?))
}

async fn lifecycle(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Json(input): Json<LifecycleInput>,
) -> Result<Json<LifecycleOutcome>, ApiError> {
    let session = applicant(&state, &headers, &id)?;
    let done = state
        .certificate_lifecycle(&session, &action, input)
        .await?;
    Ok(Json(done))
}
