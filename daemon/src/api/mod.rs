//! The local HTTP API, versioned under `/v1`, served on loopback TCP and on a
//! Unix socket. Every error is a stable code with a human message. Requests whose
//! `Host` is not one of the configured local names are refused (DNS rebinding).

pub mod batch;
pub mod console;
pub mod enterprise;
mod error;
pub mod events;
pub mod face;
mod guard;
pub mod idcard;
mod pages;
pub mod rights;
pub mod sessions;
pub mod staff;
pub mod ukey;
pub mod verification;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::get;
use axum::{Json, Router, middleware};
use serde::Serialize;

pub use error::ApiError;

use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<kiosk_config::Config>,
    pub store: Store,
    pub started: Instant,
    pub catalog: Arc<kiosk_config::Catalog>,
    pub keys: Arc<crate::token_keys::KioskKeys>,
    pub sessions: Arc<crate::session::Sessions>,
    pub devices: Arc<crate::devices::Devices>,
    pub staff: Arc<crate::staff::StaffAuth>,
    /// What applicant sessions hold in memory only (biometrics, guardians).
    pub memory: Arc<crate::session::SessionMemory>,
    /// Where applicants' UKEYs (and blank UKEYs for batch issuance) are reached (`[ukey]`).
    pub ukeys: Arc<dyn hsm::TokenProvider>,
    /// Live events for the screens (devices, step progress, PIN state).
    pub events: crate::events::Events,
    /// Identity verification services (carrier, bank, photo comparison).
    pub verifier: Arc<dyn crate::verify::Verifier>,
    /// Card-binding comparers (finger vs card, face vs card photo).
    pub binding: Arc<verification::Binding>,
    /// HQ's record key for sealing applicant records (set when the link to HQ is up).
    pub hq_recipient: Arc<crate::sync::HqRecipient>,
    /// The certificate authority (set when the link to HQ/the CA is up).
    pub ca: Arc<crate::ca_client::CaLink>,
    /// The simulated UKEY slot (simulated kiosks with soft UKEYs only).
    pub ukey_sim: Option<Arc<crate::ukey_sim::SimUkeySlot>>,
}

/// Build the API router.
pub fn router(state: AppState) -> Router {
    let allowed = Arc::new(guard::AllowedHosts::new(&state.config.api.allowed_hosts));
    let max_body = state.config.api.max_body_bytes;
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(crate::metrics::render))
        .merge(sessions::routes())
        .merge(idcard::routes())
        .merge(face::routes())
        .merge(pages::routes())
        .merge(staff::routes())
        .merge(batch::routes())
        .merge(rights::routes())
        .merge(console::routes())
        .merge(verification::routes())
        .merge(events::routes())
        .merge(ukey::routes())
        .merge(enterprise::routes())
        .route_layer(middleware::from_fn(crate::metrics::track))
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

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    kiosk_id: String,
    uptime_ms: u128,
    store_schema: i64,
    intake: &'static str,
    intake_detail: Option<String>,
    applicant_session_active: bool,
    sync_backlog: u64,
}

async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let store = state.store.clone();
    let store_schema = tokio::task::spawn_blocking(move || store.schema_version())
        .await
        .map_err(|_| ApiError::internal("health check task failed"))??;
    let store_dir = state
        .store
        .path()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let intake = crate::intake::check(&store_dir, state.config.store.min_free_bytes);
    let st = state.store.clone();
    let sync_backlog = tokio::task::spawn_blocking(move || crate::sync::status(&st))
        .await
        .map_err(|_| ApiError::internal("health check task failed"))?
        .map(|s| s.backlog)
        .unwrap_or(0);
    Ok(Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        kiosk_id: state.config.kiosk.id.clone(),
        uptime_ms: state.started.elapsed().as_millis(),
        store_schema,
        intake: if intake.is_ok() { "open" } else { "paused" },
        intake_detail: intake.err().map(|e| e.to_string()),
        applicant_session_active: state.sessions.active(),
        sync_backlog,
    }))
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
