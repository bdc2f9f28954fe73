//! `POST /v1/sessions/{id}/enterprise`: the enterprise's declared fields
//! ([`crate::workflow::enterprise`]).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};

use super::extract::applicant;
use super::{ApiError, AppState};
use crate::workflow::enterprise::{Declaration, Declared};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/sessions/{id}/enterprise", post(declare))
}

async fn declare(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Declaration>,
) -> Result<Json<Declared>, ApiError> {
    let session = applicant(&state, &headers, &id)?;
    Ok(Json(state.declare_enterprise(&session, body).await?))
}
