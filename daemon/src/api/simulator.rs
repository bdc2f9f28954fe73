//! Simulator controls ([`crate::workflow::simulator`]): `POST`/`DELETE /v1/sim/idcard`,
//! `/v1/sim/fingerprint` and `/v1/sim/ukey`. Absent in production mode.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};

use super::{ApiError, AppState};
use crate::workflow::simulator::{SimCard, SimFingerInput, SimUkeyInput, SimUkeyInserted};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sim/idcard", post(present_card).delete(remove_card))
        .route(
            "/v1/sim/fingerprint",
            post(place_finger).delete(remove_finger),
        )
        .route("/v1/sim/ukey", post(insert_ukey).delete(pull_ukeys))
}

async fn present_card(
    State(state): State<AppState>,
    Json(req): Json<SimCard>,
) -> Result<StatusCode, ApiError> {
    state.sim_present_card(req)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_card(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    state.sim_remove_card()?;
    Ok(StatusCode::NO_CONTENT)
}

async fn place_finger(
    State(state): State<AppState>,
    body: Option<Json<SimFingerInput>>,
) -> Result<StatusCode, ApiError> {
    state.sim_place_finger(body.map(|Json(b)| b).unwrap_or_default())?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_finger(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    state.sim_remove_finger()?;
    Ok(StatusCode::NO_CONTENT)
}

async fn insert_ukey(
    State(state): State<AppState>,
    body: Option<Json<SimUkeyInput>>,
) -> Result<(StatusCode, Json<SimUkeyInserted>), ApiError> {
    let inserted = state
        .sim_insert_ukey(body.map(|Json(b)| b).unwrap_or_default())
        .await?;
    Ok((StatusCode::CREATED, Json(inserted)))
}

async fn pull_ukeys(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    state.sim_pull_ukeys()?;
    Ok(StatusCode::NO_CONTENT)
}
