//! `POST /v1/sessions/{id}/face`: the face-capture step ([`crate::workflow::face`]).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};

use super::extract::applicant;
use super::{ApiError, AppState};
use crate::workflow::face::FaceCaptured;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/sessions/{id}/face", post(capture))
}

async fn capture(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<FaceCaptured>, ApiError> {
    let session = applicant(&state, &headers, &id)?;
    Ok(Json(state.capture_face(&session).await?))
}
