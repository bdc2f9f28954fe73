//! The kiosk page (`/`) and its assets, embedded in the binary: no CDN, works
//! offline. Served with a strict Content-Security-Policy. `/assets/kiosk-config.json`
//! tells the page what it needs to know about this kiosk (no personal data).

use std::borrow::Cow;

use axum::Router;
use axum::extract::State;
use axum::http::header::{
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;

use super::AppState;

const KIOSK_HTML: &str = include_str!("../../web/kiosk.html");
const KIOSK_JS: &str = include_str!("../../web/kiosk.js");
const KIOSK_CSS: &str = include_str!("../../web/kiosk.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", KIOSK_HTML)))
        .route(
            "/assets/kiosk.js",
            get(|| asset("text/javascript; charset=utf-8", KIOSK_JS)),
        )
        .route(
            "/assets/kiosk.css",
            get(|| asset("text/css; charset=utf-8", KIOSK_CSS)),
        )
        .route("/assets/kiosk-config.json", get(page_config))
}

/// What the page adapts to.
#[derive(Serialize)]
struct PageConfig {
    /// The ID-card reader is simulated: the page offers its demo card button.
    simulated_idcard: bool,
}

async fn page_config(State(state): State<AppState>) -> impl IntoResponse {
    let body = serde_json::to_string(&PageConfig {
        simulated_idcard: state.devices.idcard_sim.is_some(),
    })
    .unwrap_or_else(|_| "{}".into());
    asset_owned("application/json", body)
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    asset_owned(content_type, body)
}

fn asset_owned(
    content_type: &'static str,
    body: impl Into<Cow<'static, str>>,
) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            (CONTENT_SECURITY_POLICY, CSP),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (X_FRAME_OPTIONS, "DENY"),
        ],
        body.into(),
    )
}
