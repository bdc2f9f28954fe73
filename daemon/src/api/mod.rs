//! The local HTTP API, versioned under `/v1`, served on loopback TCP and on a
//! Unix socket. Every error is a stable code with a human message. Requests whose
//! `Host` is not one of the configured local names are refused (DNS rebinding).
//!
//! The API is a front door only: each handler authenticates (the shared [`extract`]),
//! decodes, calls one use case of [`crate::workflow`] and maps its outcome, and its error
//! through [`ApiError`]. No handler module imports another; only `extract` and `error` are
//! shared.

mod batch;
mod enterprise;
mod error;
mod events;
mod extract;
mod face;
mod guard;
mod idcard;
mod metrics;
mod pages;
mod rights;
mod sessions;
mod simulator;
mod staff;
mod staff_events;
mod ukey;
mod verification;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::get;
use axum::{Json, Router, middleware};
use std::sync::Arc;

pub use error::{ApiError, ErrorCode};

use crate::workflow::health::Health;

/// What every handler can reach: the kiosk and its use cases.
pub type AppState = crate::workflow::Kiosk;

/// Build the API router.
pub fn router(state: AppState) -> Router {
    let allowed = Arc::new(guard::AllowedHosts::new(&state.config.api.allowed_hosts));
    let max_body = state.config.api.max_body_bytes;
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics::render))
        .merge(sessions::routes())
        .merge(idcard::routes())
        .merge(face::routes())
        .merge(pages::routes())
        .merge(staff::routes())
        .merge(staff_events::routes())
        .merge(batch::routes())
        .merge(rights::routes())
        .merge(verification::routes())
        .merge(events::routes())
        .merge(ukey::routes())
        .merge(enterprise::routes())
        .merge(simulator::routes())
        .route_layer(middleware::from_fn(metrics::track))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(guard::json_errors))
        .layer(middleware::from_fn_with_state(
            allowed.clone(),
            guard::check_cross_site,
        ))
        .layer(middleware::from_fn_with_state(allowed, guard::check_host))
        .with_state(state)
}

async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    Ok(Json(state.health().await?))
}

/// The OpenAPI document of this API, kept in the repository (`daemon/api/openapi.json`).
pub const OPENAPI: &str = include_str!("../../api/openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}
