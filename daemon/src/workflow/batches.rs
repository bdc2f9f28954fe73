//! Staff batch issuance of blank UKEYs (the engine is [`crate::batch`]): the UKEYs present,
//! starting a batch, its state (random initial PINs appear once, in the first answer after
//! the token's final state, audited before they are shown) and following it. Starting a
//! batch, its outcome and every hand-out of PINs are audited.

use std::sync::Arc;

use hsm::{KeyAlgorithm, Pin};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ukey::algorithm_of;
use super::{Error, Kiosk, Result};
use crate::audit::Actor;
use crate::batch::{Batch, BatchError, BatchPlan, PinMode, TokenProgress, is_blank};
use crate::staff::StaffSession;

/// Label prefix when the request names none.
const DEFAULT_LABEL_PREFIX: &str = "UKEY";

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PinModeRequest {
    Random,
    Given,
}

/// What staff ask of a batch.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Serials to issue; `null`/absent: every blank token present.
    #[serde(default)]
    pub serials: Option<Vec<String>>,
    /// Defaults to `[ukey] algorithm`.
    #[serde(default)]
    pub algorithm: Option<KeyAlgorithm>,
    #[serde(default)]
    pub label_prefix: Option<String>,
    /// Defaults to `[ukey] factory_so_pin`.
    #[serde(default)]
    pub factory_so_pin: Option<String>,
    /// The SO PIN every token gets; absent: random per token, shown once.
    #[serde(default)]
    pub new_so_pin: Option<String>,
    #[serde(default)]
    pub pin_mode: Option<PinModeRequest>,
    /// The user PIN of every token when `pin_mode` is `given`.
    #[serde(default)]
    pub user_pin: Option<String>,
    /// Tokens issued at once (default: all).
    #[serde(default)]
    pub parallelism: Option<usize>,
}

/// A token's public state (never PINs).
pub fn token_json(t: &TokenProgress) -> Value {
    json!({
        "serial": t.serial,
        "label": t.label,
        "state": t.state,
        "percent": t.percent,
        "error": t.error,
        "public_key_pem": t.public_key_pem,
    })
}

impl Kiosk {
    fn batch_plan(&self, req: StartRequest) -> Result<BatchPlan> {
        let invalid = |m: &str| Error::unprocessable("invalid_body", m);
        let ukey = &self.config.ukey;
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
            algorithm: req.algorithm.unwrap_or(algorithm_of(&self.config)),
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

    /// The UKEYs present, blank or not.
    pub async fn list_ukeys(&self, staff: &StaffSession) -> Result<Value> {
        let tokens = self
            .ukeys
            .list_tokens()
            .await
            .map_err(|e| Error::from(BatchError::Token(e)))?;
        self.audit_staff(staff, "staff.ukeys.list", json!({ "count": tokens.len() }))
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
        Ok(json!({ "tokens": tokens }))
    }

    /// Start a batch; its outcome is audited when it ends.
    pub async fn start_batch(&self, staff: &StaffSession, req: StartRequest) -> Result<Value> {
        let plan = self.batch_plan(req)?;
        let pin_mode = match plan.pin_mode {
            PinMode::Random => "random",
            PinMode::Given(_) => "given",
        };
        let batch = self.batches.start(self.ukeys.clone(), plan).await?;
        let snapshot = batch.snapshot();
        let detail = json!({
            "batch_id": batch.id,
            "algorithm": batch.algorithm,
            "pin_mode": pin_mode,
            "serials": snapshot.tokens.iter().map(|t| &t.serial).collect::<Vec<_>>(),
        });
        self.audit_staff(staff, "staff.batch.start", detail).await?;
        self.audit_batch_outcome(staff, Arc::clone(&batch));
        let tokens: Vec<Value> = snapshot
            .tokens
            .iter()
            .map(|t| json!({ "serial": t.serial, "state": t.state, "percent": t.percent }))
            .collect();
        Ok(json!({ "batch_id": batch.id, "tokens": tokens }))
    }

    /// The outcome of every token is audited once the batch ends.
    fn audit_batch_outcome(&self, staff: &StaffSession, batch: Arc<Batch>) {
        let (kiosk, actor) = (self.clone(), Actor::Staff(staff.staff_id.clone()));
        tokio::spawn(async move {
            batch.wait_done().await;
            let outcome = batch.snapshot();
            let tokens: Vec<Value> = outcome
                .tokens
                .iter()
                .map(|t| json!({ "serial": t.serial, "label": t.label, "state": t.state, "code": t.error.as_ref().map(|e| e.code) }))
                .collect();
            let detail = json!({ "batch_id": outcome.batch_id, "tokens": tokens });
            if let Err(e) = kiosk
                .record_event(actor, "staff.batch.done", None, detail)
                .await
            {
                tracing::error!(batch = %outcome.batch_id, error = %e.message, "could not audit the batch outcome");
            }
        });
    }

    /// A batch by id.
    pub fn find_batch(&self, id: &str) -> Result<Arc<Batch>> {
        self.batches
            .get(id)
            .ok_or_else(|| Error::not_found_code("batch_not_found", "no such batch"))
    }

    /// The state of every token of a batch; initial PINs ready to be shown are audited,
    /// then handed out (once).
    pub async fn batch_state(&self, staff: &StaffSession, id: &str) -> Result<Value> {
        let batch = self.find_batch(id)?;
        let ready = batch.secrets_ready();
        if !ready.is_empty() {
            let detail = json!({ "batch_id": batch.id, "serials": ready });
            self.audit_staff(staff, "staff.batch.pins_shown", detail)
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
                token["initial_pin"] =
                    json!(shown.and_then(|s| s.user_pin.as_ref()).map(Pin::expose));
                token["initial_so_pin"] =
                    json!(shown.and_then(|s| s.so_pin.as_ref()).map(Pin::expose));
                token
            })
            .collect();
        Ok(json!({
            "batch_id": snapshot.batch_id,
            "state": if snapshot.is_done() { "done" } else { "running" },
            "algorithm": snapshot.algorithm,
            "started_ms": snapshot.started_ms,
            "finished_ms": snapshot.finished_ms,
            "tokens": tokens,
        }))
    }
}
