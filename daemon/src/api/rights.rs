//! Rights requests (REQUIREMENTS §6). An applicant in a `rights_request`
//! session whose identity the ID-card step verified files a request
//! (`POST /v1/sessions/{id}/rights-requests`); it gets a deadline from the
//! catalog and is forwarded to HQ. Staff complete or refuse it with one of the
//! policy's grounds (`POST /v1/staff/rights-requests/{id}/complete|refuse`).
//! A completed deletion purges what the kiosk holds and tells HQ to propagate.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::sessions::{blocking, session_of};
use super::staff::staff_of;
use super::verification::require_ready;
use super::{ApiError, AppState};
use crate::app::now_ms;
use crate::audit::Actor;
use crate::privacy::deadline::Calendar;
use crate::rights::{self, Desk, RightsError};
use crate::workflow::plan::Step;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions/{id}/rights-requests", post(file))
        .route("/v1/staff/rights-requests/{id}/complete", post(complete))
        .route("/v1/staff/rights-requests/{id}/refuse", post(refuse))
}

impl From<RightsError> for ApiError {
    fn from(e: RightsError) -> Self {
        match &e {
            RightsError::NotFound => ApiError::not_found("no such rights request"),
            RightsError::BadTransition { .. } => {
                ApiError::new(StatusCode::CONFLICT, "bad_transition", e.to_string())
            }
            RightsError::UnknownGround(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_ground",
                e.to_string(),
            ),
            _ => {
                tracing::error!(error = %e, "rights request failed");
                ApiError::internal("the rights request could not be recorded")
            }
        }
    }
}

/// Run `f` with the rights desk inside one store transaction (committed when `f` succeeds).
async fn with_desk<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Desk<'_>, &rusqlite::Transaction<'_>) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let st = state.clone();
    blocking(move || {
        let calendar = Calendar::from_catalog(&st.catalog.holidays);
        let desk = Desk {
            catalog: &st.catalog,
            calendar: &calendar,
            digest_ref: (
                crate::token_keys::DIGEST_KEY_LABEL,
                st.keys.digest_algorithm,
            ),
        };
        let mut conn = st.store.conn()?;
        let tx = conn.transaction()?;
        let out = f(&desk, &tx)?;
        tx.commit()?;
        Ok(out)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRequest {
    /// access | copy | correction | deletion | consent_withdrawal | account_cancellation | automated_decision | posthumous
    kind: String,
}

async fn file(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(req): Json<FileRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let session = session_of(&state, &headers, &id)?;
    if session.service != "rights_request" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "wrong_service",
            "open a rights_request session for this",
        ));
    }
    // Card possession is not identity: the ID card step and identity verification come
    // first (the workflow plan), so a found card is not enough to file in someone's name.
    require_ready(&state, &session, Step::Rights).map_err(|e| {
        let missing = e.details.clone().unwrap_or_default();
        ApiError::new(
            StatusCode::CONFLICT,
            "identity_not_verified",
            "verify the requester's identity first: read their ID card, then one verification method",
        )
        .with_details(missing)
    })?;
    let kind = rights::parse_kind(&req.kind).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_kind",
            format!("no rights request kind {:?}", req.kind),
        )
    })?;
    let body = with_desk(&state, move |desk, tx| {
        // The requester was verified by the ID-card step of this session.
        let digest: Option<Vec<u8>> = tx
            .query_row(
                "SELECT subject_digest FROM subjects WHERE session_id = ?1 AND purged_at IS NULL ORDER BY created_at DESC LIMIT 1",
                [&session.id],
                |r| r.get(0),
            )
            .ok();
        let digest: [u8; 32] = digest.and_then(|d| d.try_into().ok()).ok_or_else(|| {
            ApiError::new(StatusCode::CONFLICT, "identity_not_verified", "read the requester's ID card first")
        })?;
        let actor = Actor::Applicant(session.id.clone());
        let r = desk.receive(tx, now_ms(), &actor, digest, kind)?;
        desk.verified(tx, now_ms(), &actor, &r.id)?;
        Ok(json!({ "request_id": r.id, "kind": rights::kind_name(r.kind), "state": "verified", "due": r.due.to_string() }))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(body)))
}

async fn complete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let staff = staff_of(&state, &headers)?;
    with_desk(&state, move |desk, tx| {
        let r = desk.complete(tx, now_ms(), &Actor::Staff(staff.staff_id.clone()), &id)?;
        Ok(Json(
            json!({ "request_id": r.id, "state": r.state.as_str() }),
        ))
    })
    .await
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
) -> Result<Json<serde_json::Value>, ApiError> {
    let staff = staff_of(&state, &headers)?;
    with_desk(&state, move |desk, tx| {
        let staff_actor = Actor::Staff(staff.staff_id.clone());
        let r = desk.refuse(tx, now_ms(), &staff_actor, &id, &req.ground)?;
        Ok(Json(
            json!({ "request_id": r.id, "state": r.state.as_str(), "ground": r.refusal_ground }),
        ))
    })
    .await
}
