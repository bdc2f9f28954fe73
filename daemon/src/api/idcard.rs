//! `POST /v1/sessions/{id}/idcard` reads the applicant's ID card and `POST
//! /v1/sessions/{id}/guardian` a guardian's, before a minor's ([`crate::workflow::idcard`]).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};

use super::extract::applicant;
use super::{ApiError, AppState};
use crate::workflow::idcard::{CardOut, GuardianOut};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions/{id}/idcard", post(read))
        .route("/v1/sessions/{id}/guardian", post(guardian))
}

async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CardOut>, ApiError> {
    let session = applicant(&state, &headers, &id)?;
    Ok(Json(state.read_idcard(&session).await?))
}

async fn guardian(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<GuardianOut>, ApiError> {
    let session = applicant(&state, &headers, &id)?;
    Ok(Json(state.register_guardian(&session).await?))
}
