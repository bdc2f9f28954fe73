//! The kiosk page (`/`), the staff console (`/staff`) and their assets,
//! embedded in the binary: no CDN, works offline. Served with a strict Content-Security-Policy. `/assets/kiosk-config.json`
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
const STAFF_HTML: &str = include_str!("../../web/staff.html");
const STAFF_JS: &str = include_str!("../../web/staff.js");
const STAFF_CSS: &str = include_str!("../../web/staff.css");
const SSE_JS: &str = include_str!("../../web/sse.js");
const UI_JS: &str = include_str!("../../web/ui.js");
const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| asset(HTML, KIOSK_HTML)))
        .route("/assets/kiosk.js", get(|| asset(JS, KIOSK_JS)))
        .route("/assets/kiosk.css", get(|| asset(CSS, KIOSK_CSS)))
        .route("/assets/kiosk-config.json", get(page_config))
        .route("/staff", get(|| asset(HTML, STAFF_HTML)))
        .route("/assets/staff.js", get(|| asset(JS, STAFF_JS)))
        .route("/assets/staff.css", get(|| asset(CSS, STAFF_CSS)))
        .route("/assets/sse.js", get(|| asset(JS, SSE_JS)))
        .route("/assets/ui.js", get(|| asset(JS, UI_JS)))
}

/// What the page adapts to.
#[derive(Serialize)]
struct PageConfig {
    /// The ID-card reader is simulated: the page offers its demo card button.
    simulated_idcard: bool,
    /// The fingerprint sensor is simulated: the page offers a demo finger button.
    simulated_fingerprint: bool,
    /// Applicants' UKEYs are simulated soft tokens: the page offers a demo UKEY button.
    simulated_ukey: bool,
}

async fn page_config(State(state): State<AppState>) -> impl IntoResponse {
    let body = serde_json::to_string(&PageConfig {
        simulated_idcard: state.devices.idcard_sim.is_some(),
        simulated_fingerprint: state.devices.fingerprint_sim.is_some(),
        simulated_ukey: state.devices.idcard_sim.is_some()
            && state.config.ukey.provider == kiosk_config::TokenProvider::Soft,
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
