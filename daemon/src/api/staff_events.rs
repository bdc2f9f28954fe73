//! `GET /v1/staff/events`: the staff console's live events as server-sent events
//! ([`crate::workflow::hotplug`]) — `device` (a device arrived or left) and `token` (a UKEY
//! arrived or left, with its label and serial). It needs a staff bearer token, so the console
//! reads it with `fetch()`; a keep-alive comment every 15 s; the stream ends when the staff
//! session does.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::{Stream, StreamExt};

use super::extract::{bearer, staff};
use super::{ApiError, AppState};
use crate::workflow::hotplug::StaffStreamItem;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/staff/events", get(stream))
}

async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    staff(&state, &headers)?;
    let token = bearer(&headers).unwrap_or_default().to_owned();
    let events = state.staff_events(token).map(|item| Ok(sse_event(item)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn sse_event(item: StaffStreamItem) -> Event {
    match item {
        StaffStreamItem::Hello => Event::default().event("hello").data("{}"),
        StaffStreamItem::Event { kind, data } => {
            Event::default().event(kind).data(data.to_string())
        }
        StaffStreamItem::Lagged(n) => Event::default()
            .event("lagged")
            .data(serde_json::json!({ "skipped": n }).to_string()),
    }
}
