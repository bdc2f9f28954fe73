//! `GET /v1/sessions/{id}/events`: the live events of an applicant session as server-sent
//! events — `device` (arrived/left), `step` (progress) and `pin` (the UKEY's PIN state). It
//! needs the session's bearer token, so the page reads it with `fetch()` (EventSource cannot
//! send the header). A keep-alive comment every 15 s keeps proxies from closing it; the
//! stream ends when the session does.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::extract::applicant;
use super::{ApiError, AppState};
use crate::events::for_session;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/sessions/{id}/events", get(stream))
}

/// How often the stream checks that its session is still open.
const SESSION_CHECK: Duration = Duration::from_secs(2);

async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let session = applicant(&state, &headers, &id)?;
    let rx = state.events.subscribe();
    let first = Event::default()
        .event("hello")
        .data(serde_json::json!({ "session": session.id }).to_string());
    let events = futures::stream::unfold(
        (rx, state, session.id, Some(first)),
        |(mut rx, state, sid, first)| async move {
            if let Some(hello) = first {
                return Some((Ok(hello), (rx, state, sid, None)));
            }
            loop {
                let next = tokio::time::timeout(SESSION_CHECK, rx.recv()).await;
                if !state.sessions.is_open(&sid) {
                    return None;
                }
                match next {
                    Err(_) => continue,
                    Ok(Ok(ev)) if for_session(&ev, &sid) => {
                        let event = Event::default().event(ev.kind).data(ev.data.to_string());
                        return Some((Ok(event), (rx, state, sid, None)));
                    }
                    Ok(Ok(_)) => continue,
                    Ok(Err(RecvError::Lagged(n))) => {
                        let event = Event::default()
                            .event("lagged")
                            .data(serde_json::json!({ "skipped": n }).to_string());
                        return Some((Ok(event), (rx, state, sid, None)));
                    }
                    Ok(Err(RecvError::Closed)) => return None,
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
