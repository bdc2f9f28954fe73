//! `POST /v1/sessions/{id}/fingerprint` (a live finger against the card) and `POST
//! /v1/sessions/{id}/verification` (identity verification with one of the service's
//! methods) — [`crate::workflow::verification`].

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};

use super::extract::applicant;
use super::{ApiError, AppState};
use crate::workflow::verification::{FingerMatched, VerificationInput, Verified};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions/{id}/fingerprint", post(fingerprint))
        .route("/v1/sessions/{id}/verification", post(verification))
}

async fn fingerprint(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<FingerMatched>, ApiError> {
    let session = applicant(&state, &headers, &id)?;
    Ok(Json(state.match_fingerprint(&session).await?))
}

async fn verification(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(input): Json<VerificationInput>,
) -> Result<Json<Verified>, ApiError> {
    let session = applicant(&state, &headers, &id)?;
    Ok(Json(state.verify_identity(&session, input).await?))
}
