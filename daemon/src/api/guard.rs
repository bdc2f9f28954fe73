//! Request guards that run before any handler: the `Host` allow-list against
//! DNS rebinding. A page on another origin that resolves its own name to
//! 127.0.0.1 still sends its own name as `Host`, and is refused here.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::HOST;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Host names (without port) the API answers to.
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    pub fn new(names: &[String]) -> Self {
        Self(names.iter().map(|n| n.to_ascii_lowercase()).collect())
    }

    fn allows(&self, host_header: &str) -> bool {
        let host = strip_port(host_header).to_ascii_lowercase();
        self.0.contains(&host)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [::1]:8480
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

pub async fn check_host(
    State(allowed): State<Arc<AllowedHosts>>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host());
    match host {
        Some(h) if allowed.allows(h) => next.run(req).await,
        _ => ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            "this API answers only to the kiosk's local host names",
        )
        .into_response(),
    }
}

/// State-changing requests must come from the kiosk's own pages: an `Origin`
/// (sent by browsers on cross-site and on all POST/DELETE requests) must name
/// an allowed host AND the very host and port the request was sent to (a page
/// served by another program on another loopback port is another origin), and
/// `Sec-Fetch-Site`, when present, must not be
/// `cross-site`. Together with JSON-only bodies and no CORS headers this stops
/// cross-site request forgery from any page the kiosk browser might open.
pub async fn check_cross_site(
    State(allowed): State<Arc<AllowedHosts>>,
    req: Request,
    next: Next,
) -> Response {
    let safe = matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    if !safe {
        let headers = req.headers();
        let target = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let origin_ok = match headers.get("origin").and_then(|o| o.to_str().ok()) {
            None => true,
            Some(o) => o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .is_some_and(|origin| {
                    allowed.allows(origin) && target.is_some_and(|t| t.eq_ignore_ascii_case(origin))
                }),
        };
        let site_ok = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v != "cross-site");
        if !origin_ok || !site_ok {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_site_request",
                "state-changing requests are accepted only from the kiosk's own pages",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Rejections produced by the framework (malformed JSON, wrong content type,
/// oversized body, wrong method) come as plain text; give them the API's
/// stable error shape too. Their text names the problem, never a value.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        _ if status.is_server_error() => "internal",
        _ => "bad_request",
    };
    let bytes = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&bytes)
        .chars()
        .take(300)
        .collect::<String>();
    ApiError::new(status, code, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_allow_list_ignores_port_and_case() {
        let a = AllowedHosts::new(&["localhost".into(), "127.0.0.1".into(), "[::1]".into()]);
        assert!(a.allows("localhost:8480"));
        assert!(a.allows("LOCALHOST"));
        assert!(a.allows("127.0.0.1:1"));
        assert!(a.allows("[::1]:8480"));
        assert!(!a.allows("evil.example:8480"));
        assert!(!a.allows("localhost.evil.example"));
        assert!(!a.allows("127.0.0.1.nip.io"));
    }
}
