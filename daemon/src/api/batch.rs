//! Staff batch issuance of blank UKEYs ([`crate::workflow::batches`]): `GET
//! /v1/staff/tokens`, `POST /v1/staff/batches`, `GET /v1/staff/batches/{id}` and `GET
//! /v1/staff/batches/{id}/events` (server-sent events: `token` per state change, `done` at
//! the end). Every route needs a staff session.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::extract::staff;
use super::{ApiError, AppState};
use crate::batch::{Batch, BatchEvent};
use crate::workflow::batches::{StartRequest, token_json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/staff/tokens", get(list_tokens))
        .route("/v1/staff/batches", post(start_batch))
        .route("/v1/staff/batches/{id}", get(batch_state))
        .route("/v1/staff/batches/{id}/events", get(batch_events))
}

async fn list_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let staff = staff(&state, &headers)?;
    Ok(Json(state.list_ukeys(&staff).await?))
}

async fn start_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<StartRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let staff = staff(&state, &headers)?;
    let started = state.start_batch(&staff, req).await?;
    Ok((StatusCode::ACCEPTED, Json(started)))
}

async fn batch_state(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let staff = staff(&state, &headers)?;
    Ok(Json(state.batch_state(&staff, &id).await?))
}

fn token_event(t: &crate::batch::TokenProgress) -> Event {
    Event::default()
        .event("token")
        .data(token_json(t).to_string())
}

fn done_event(batch: &Batch) -> Event {
    Event::default()
        .event("done")
        .data(json!({ "batch_id": batch.id }).to_string())
}

/// Where a stream of batch events is.
struct EventFeed {
    batch: Arc<Batch>,
    rx: broadcast::Receiver<BatchEvent>,
    pending: VecDeque<Event>,
    finished: bool,
}

impl EventFeed {
    /// Queues the current state of every token (and `done` if the batch ended).
    fn catch_up(&mut self) {
        let snapshot = self.batch.snapshot();
        self.pending.extend(snapshot.tokens.iter().map(token_event));
        if snapshot.is_done() {
            self.pending.push_back(done_event(&self.batch));
            self.finished = true;
        }
    }

    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if self.finished {
                return None;
            }
            match self.rx.recv().await {
                Ok(BatchEvent::Token(progress)) => self.pending.push_back(token_event(&progress)),
                Ok(BatchEvent::Done) => {
                    self.pending.push_back(done_event(&self.batch));
                    self.finished = true;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up(),
                Err(broadcast::error::RecvError::Closed) => self.finished = true,
            }
        }
    }
}

async fn batch_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    staff(&state, &headers)?;
    let batch = state.find_batch(&id)?;
    // Subscribe before the snapshot: a change in between is sent twice, never lost.
    let rx = batch.subscribe();
    let mut feed = EventFeed {
        batch,
        rx,
        pending: VecDeque::new(),
        finished: false,
    };
    feed.catch_up();
    let stream = futures::stream::unfold(feed, EventFeed::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
