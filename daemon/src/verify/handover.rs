//! The record of every hand-over of personal data to a verification service
//! (REQUIREMENTS §4: who, what, why, when): a row in `handovers` and an audit
//! entry `handover.verifier`, written together in the caller's transaction.
//! Both hold item names, the recipient, the method, the purpose and ids, never
//! a personal value.

use rusqlite::{Transaction, params};
use serde_json::json;

use super::{Handover, VerificationOutcome, VerifyError};
use crate::audit::{self, Actor, AuditError, AuditEvent};

/// Who handed the data over, and why.
#[derive(Debug, Clone)]
pub struct HandoverContext<'a> {
    /// The applicant session the data belongs to.
    pub session_id: &'a str,
    /// Why it was handed over, e.g. the service (`cert_application`).
    pub purpose: &'a str,
    /// Who acted (usually `Actor::Applicant(session_id)`, staff for re-verification).
    pub actor: Actor,
    /// Keyed digest of the subject, when known.
    pub subject: Option<[u8; 32]>,
}

impl<'a> HandoverContext<'a> {
    /// An applicant's own hand-over for `purpose`.
    pub fn applicant(session_id: &'a str, purpose: &'a str) -> Self {
        Self {
            session_id,
            purpose,
            actor: Actor::Applicant(session_id.to_string()),
            subject: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("hand-over record: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Insert the hand-over row and its audit entry inside `tx`. `result` is a short
/// non-personal code of what came back (`match`, `no_match`, `inconclusive`,
/// or a failure code such as `timeout`); `reference` the provider's opaque id.
/// Returns the row id.
pub fn record_handover(
    tx: &Transaction<'_>,
    at_ms: i64,
    ctx: &HandoverContext<'_>,
    handover: &Handover,
    result: &str,
    reference: Option<&str>,
) -> Result<i64, HandoverError> {
    let items = serde_json::to_string(&handover.items).expect("a list of strings encodes");
    tx.execute(
        "INSERT INTO handovers (session_id, recipient, method, items, purpose, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            ctx.session_id,
            handover.recipient,
            handover.method,
            items,
            ctx.purpose,
            at_ms
        ],
    )?;
    let id = tx.last_insert_rowid();
    audit::append(
        tx,
        at_ms,
        &AuditEvent {
            actor: ctx.actor.clone(),
            action: "handover.verifier",
            subject: ctx.subject,
            detail: json!({
                "handover_id": id,
                "session": ctx.session_id,
                "recipient": handover.recipient,
                "method": handover.method,
                "items": handover.items,
                "purpose": ctx.purpose,
                "request_id": handover.request_id,
                "sends": handover.sends,
                "result": result,
                "reference": reference,
            }),
        },
    )?;
    Ok(id)
}

/// Record the hand-over of a finished verification if it may have sent data
/// (every success; failures whose [`VerifyError::handover`] is `Some`).
/// Returns the row id, or `None` when nothing left the kiosk.
pub fn record_attempt(
    tx: &Transaction<'_>,
    at_ms: i64,
    ctx: &HandoverContext<'_>,
    result: &Result<VerificationOutcome, VerifyError>,
) -> Result<Option<i64>, HandoverError> {
    match result {
        Ok(outcome) => record_handover(
            tx,
            at_ms,
            ctx,
            &outcome.handover,
            outcome.verdict.as_str(),
            Some(&outcome.reference),
        )
        .map(Some),
        Err(err) => match (err.handover(), err.failure()) {
            (Some(handover), Some(failure)) => {
                record_handover(tx, at_ms, ctx, handover, failure.code(), None).map(Some)
            }
            _ => Ok(None),
        },
    }
}
