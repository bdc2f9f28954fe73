//! Rights requests ([`crate::workflow::rights`]): `POST /v1/sessions/{id}/rights-requests`
//! (the applicant files) and `POST /v1/staff/rights-requests/{id}/complete|refuse` (staff).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::{applicant, staff};
use super::{ApiError, AppState};
use crate::workflow::rights::{FileRequest, Filed, Handled};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions/{id}/rights-requests", post(file))
        .route("/v1/staff/rights-requests/{id}/complete", post(complete))
        .route("/v1/staff/rights-requests/{id}/refuse", post(refuse))
}

async fn file(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(req): Json<FileRequest>,
) -> Result<(StatusCode, Json<Filed>), ApiError> {
    let session = applicant(&state, &headers, &id)?;
    let filed = state.file_rights_request(&session, req).await?;
    Ok((StatusCode::CREATED, Json(filed)))
}

async fn complete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Handled>, ApiError> {
    let staff = staff(&state, &headers)?;
    Ok(Json(state.complete_rights_request(&staff, id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefuseRequest {
    ground: String,
}

async fn refuse(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(req): Json<RefuseRequest>,
) -> Result<Json<Handled>, ApiError> {
    let staff = staff(&state, &headers)?;
    let refused = state.refuse_rights_request(&staff, id, req.ground).await?;
    Ok(Json(refused))
}
