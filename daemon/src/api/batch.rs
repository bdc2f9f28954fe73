//! Staff batch issuance of blank UKEYs over the API (engine in [`crate::batch`]):
//! `GET /v1/staff/tokens` (UKEYs present, blank or not), `POST /v1/staff/batches` (start),
//! `GET /v1/staff/batches/{id}` (state of every token; random initial PINs appear once, in the
//! first answer after the token's final state) and `GET /v1/staff/batches/{id}/events`
//! (server-sent events: `token` per state change, `done` at the end). Every route needs a
//! staff session; starting a batch, its outcome and every hand-out of PINs are audited.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use hsm::{KeyAlgorithm, Pin};
use kiosk_config::UkeyAlgorithm;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::sessions::record_event;
use super::staff::staff_of;
use super::{ApiError, AppState};
use crate::audit::Actor;
use crate::batch::{Batch, BatchError, BatchEvent, BatchPlan, Batches, PinMode, is_blank};

/// Label prefix when the request names none.
const DEFAULT_LABEL_PREFIX: &str = "UKEY";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/staff/tokens", get(list_tokens))
        .route("/v1/staff/batches", post(start_batch))
        .route("/v1/staff/batches/{id}", get(batch_state))
        .route("/v1/staff/batches/{id}/events", get(batch_events))
        .layer(Extension(Arc::new(Batches::default())))
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        let (status, code) = match &e {
            BatchError::NoBlankTokens => (StatusCode::CONFLICT, "no_blank_tokens"),
            BatchError::NotPresent(_) => (StatusCode::NOT_FOUND, "token_not_present"),
            BatchError::NotBlank(_) => (StatusCode::CONFLICT, "token_not_blank"),
            BatchError::Busy(_) => (StatusCode::CONFLICT, "token_busy"),
            BatchError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            BatchError::Token(_) => {
                tracing::warn!(error = %e, "UKEY provider unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "token_unavailable")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

async fn list_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let staff = staff_of(&state, &headers)?;
    let tokens = state
        .ukeys
        .list_tokens()
        .await
        .map_err(|e| ApiError::from(BatchError::Token(e)))?;
    record_event(
        &state,
        Actor::Staff(staff.staff_id.clone()),
        "staff.ukeys.list",
        None,
        json!({ "count": tokens.len() }),
    )
    .await?;
    let tokens: Vec<Value> = tokens
        .iter()
        .map(|t| {
            json!({
                "serial": t.serial,
                "label": t.label,
                "manufacturer": t.manufacturer,
                "model": t.model,
                "initialized": t.initialized,
                "blank": is_blank(t),
                "pin_state": t.pin_state,
            })
        })
        .collect();
    Ok(Json(json!({ "tokens": tokens })))
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum PinModeRequest {
    Random,
    Given,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    /// Serials to issue; `null`/absent: every blank token present.
    #[serde(default)]
    serials: Option<Vec<String>>,
    /// Defaults to `[ukey] algorithm`.
    #[serde(default)]
    algorithm: Option<KeyAlgorithm>,
    #[serde(default)]
    label_prefix: Option<String>,
    /// Defaults to `[ukey] factory_so_pin`.
    #[serde(default)]
    factory_so_pin: Option<String>,
    /// The SO PIN every token gets; absent: random per token, shown once.
    #[serde(default)]
    new_so_pin: Option<String>,
    #[serde(default)]
    pin_mode: Option<PinModeRequest>,
    /// The user PIN of every token when `pin_mode` is `given`.
    #[serde(default)]
    user_pin: Option<String>,
    /// Tokens issued at once (default: all).
    #[serde(default)]
    parallelism: Option<usize>,
}

fn plan_of(state: &AppState, req: StartRequest) -> Result<BatchPlan, ApiError> {
    let invalid = |m: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", m);
    let ukey = &state.config.ukey;
    let pin_mode = match (req.pin_mode.unwrap_or(PinModeRequest::Random), req.user_pin) {
        (PinModeRequest::Random, None) => PinMode::Random,
        (PinModeRequest::Random, Some(_)) => {
            return Err(invalid("user_pin is only accepted with pin_mode \"given\""));
        }
        (PinModeRequest::Given, Some(pin)) => PinMode::Given(Pin::new(pin)),
        (PinModeRequest::Given, None) => {
            return Err(invalid("pin_mode \"given\" needs user_pin"));
        }
    };
    Ok(BatchPlan {
        serials: req.serials,
        algorithm: req.algorithm.unwrap_or(match ukey.algorithm {
            UkeyAlgorithm::P256 => KeyAlgorithm::P256,
            UkeyAlgorithm::Sm2 => KeyAlgorithm::Sm2,
        }),
        label_prefix: req
            .label_prefix
            .unwrap_or_else(|| DEFAULT_LABEL_PREFIX.to_owned()),
        key_label: ukey.key_label.clone(),
        factory_so_pin: req
            .factory_so_pin
            .map(Pin::new)
            .unwrap_or_else(|| Pin::new(ukey.factory_so_pin.expose())),
        new_so_pin: req.new_so_pin.map(Pin::new),
        pin_mode,
        parallelism: req.parallelism,
    })
}

async fn start_batch(
    State(state): State<AppState>,
    Extension(batches): Extension<Arc<Batches>>,
    headers: HeaderMap,
    Json(req): Json<StartRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let staff = staff_of(&state, &headers)?;
    let plan = plan_of(&state, req)?;
    let pin_mode = match plan.pin_mode {
        PinMode::Random => "random",
        PinMode::Given(_) => "given",
    };
    let batch = batches.start(state.ukeys.clone(), plan).await?;
    let snapshot = batch.snapshot();
    let actor = Actor::Staff(staff.staff_id.clone());
    record_event(
        &state,
        actor.clone(),
        "staff.batch.start",
        None,
        json!({
            "batch_id": batch.id,
            "algorithm": batch.algorithm,
            "pin_mode": pin_mode,
            "serials": snapshot.tokens.iter().map(|t| &t.serial).collect::<Vec<_>>(),
        }),
    )
    .await?;
    // The outcome of every token is audited once the batch ends.
    let (st, finished) = (state.clone(), Arc::clone(&batch));
    tokio::spawn(async move {
        finished.wait_done().await;
        let outcome = finished.snapshot();
        let tokens: Vec<Value> = outcome
            .tokens
            .iter()
            .map(|t| json!({ "serial": t.serial, "label": t.label, "state": t.state, "code": t.error.as_ref().map(|e| e.code) }))
            .collect();
        let detail = json!({ "batch_id": outcome.batch_id, "tokens": tokens });
        if let Err(e) = record_event(&st, actor, "staff.batch.done", None, detail).await {
            tracing::error!(batch = %outcome.batch_id, error = %e.message, "could not audit the batch outcome");
        }
    });
    let tokens: Vec<Value> = snapshot
        .tokens
        .iter()
        .map(|t| json!({ "serial": t.serial, "state": t.state, "percent": t.percent }))
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "batch_id": batch.id, "tokens": tokens })),
    ))
}

fn find_batch(batches: &Batches, id: &str) -> Result<Arc<Batch>, ApiError> {
    batches
        .get(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "batch_not_found", "no such batch"))
}

async fn batch_state(
    State(state): State<AppState>,
    Extension(batches): Extension<Arc<Batches>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let staff = staff_of(&state, &headers)?;
    let batch = find_batch(&batches, &id)?;
    // Audit first which tokens' PINs are about to be shown, then hand them out (once).
    let ready = batch.secrets_ready();
    if !ready.is_empty() {
        record_event(
            &state,
            Actor::Staff(staff.staff_id.clone()),
            "staff.batch.pins_shown",
            None,
            json!({ "batch_id": batch.id, "serials": ready }),
        )
        .await?;
    }
    let secrets = batch.take_secrets();
    let snapshot = batch.snapshot();
    let tokens: Vec<Value> = snapshot
        .tokens
        .iter()
        .map(|t| {
            let shown = secrets.get(&t.serial);
            let mut token = token_json(t);
            token["initial_pin"] = json!(shown.and_then(|s| s.user_pin.as_ref()).map(Pin::expose));
            token["initial_so_pin"] = json!(shown.and_then(|s| s.so_pin.as_ref()).map(Pin::expose));
            token
        })
        .collect();
    Ok(Json(json!({
        "batch_id": snapshot.batch_id,
        "state": if snapshot.is_done() { "done" } else { "running" },
        "algorithm": snapshot.algorithm,
        "started_ms": snapshot.started_ms,
        "finished_ms": snapshot.finished_ms,
        "tokens": tokens,
    })))
}

/// A token's public state (never PINs).
fn token_json(t: &crate::batch::TokenProgress) -> Value {
    json!({
        "serial": t.serial,
        "label": t.label,
        "state": t.state,
        "percent": t.percent,
        "error": t.error,
        "public_key_pem": t.public_key_pem,
    })
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
    Extension(batches): Extension<Arc<Batches>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    staff_of(&state, &headers)?;
    let batch = find_batch(&batches, &id)?;
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
