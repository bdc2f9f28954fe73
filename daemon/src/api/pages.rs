//! The kiosk page (`/`) and its assets, embedded in the binary: no CDN, works
//! offline. Served with a strict Content-Security-Policy.

use axum::Router;
use axum::http::header::{
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::response::IntoResponse;
use axum::routing::get;

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
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            (CONTENT_SECURITY_POLICY, CSP),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
}
