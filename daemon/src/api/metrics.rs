//! `GET /metrics` (the text exposition of [`crate::metrics`]) and the route layer that
//! times and counts every routed request by its route template.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ErrorCode;
use super::{ApiError, AppState};
use crate::metrics::{Observed, observe, service_of};

/// Largest `POST /v1/sessions` body read for its service name.
const OPEN_BODY_LIMIT: usize = 16 * 1024;

/// The route layer: times and counts every routed request.
pub async fn track(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let Some(route) = matched.map(|m| m.as_str().to_owned()) else {
        return next.run(req).await;
    };
    let method = req.method().clone();
    let (req, service) = if method == Method::POST && route == "/v1/sessions" {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, OPEN_BODY_LIMIT).await else {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is too large",
            )
            .into_response();
        };
        let service = service_of(&bytes);
        (Request::from_parts(parts, Body::from(bytes)), Some(service))
    } else {
        (req, None)
    };
    let started = Instant::now();
    let response = next.run(req).await;
    observe(Observed {
        route: &route,
        method: method.as_str(),
        status: response.status().as_u16(),
        elapsed: started.elapsed().as_secs_f64(),
        service,
        error_code: response.extensions().get::<ErrorCode>().map(|c| c.0),
    });
    response
}

/// `GET /metrics`.
pub async fn render(State(state): State<AppState>) -> Response {
    let text = tokio::task::spawn_blocking(move || crate::metrics::render(&state)).await;
    match text {
        Ok(Ok(out)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
