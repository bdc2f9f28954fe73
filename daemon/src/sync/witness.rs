//! HQ as the witness of the kiosk's audit log, both ways. Each new checkpoint goes to HQ in
//! the outbox (same transaction as the checkpoint) with the RFC 9162 consistency proof from
//! the previous checkpoint sent; HQ cosigns it if the log only grew. The cosignature that
//! comes back in an ack is kept only if it verifies against HQ's pinned witness key over the
//! checkpoint this kiosk made; a bad one is refused, audited and raised (health, metrics,
//! staff status) until a good one arrives. Nothing here is personal data.

use records::checkpoint::{SignedNote, verify_cosignature};
use records::signing::{PublicVerifier, RecordSigner};
use records::wire::{AuditCheckpoint, Record, WitnessCosignature};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::json;

use super::SyncError;
use crate::audit::{self, Actor, AuditEvent};
use crate::store::meta::{self, get as meta};
use crate::store::{Store, outbox};

/// HQ's witness key as pinned at the kiosk, and the name its cosignature lines carry.
#[derive(Clone, Debug)]
pub struct Witness {
    pub name: String,
    pub key: PublicVerifier,
}

const SENT_SIZE: &str = "witness.sent_size";
const STATE: &str = "witness.state";
const ALERT: &str = "witness.alert";

/// Sign a checkpoint if the log grew and queue it for HQ to witness, in one transaction.
/// Returns the signed note when one was made.
pub fn checkpoint_for_hq(
    conn: &mut Connection,
    at_ms: i64,
    origin: &str,
    key_name: &str,
    signer: &dyn RecordSigner,
) -> Result<Option<String>, SyncError> {
    let tx = conn.transaction()?;
    let Some((note, size)) = audit::checkpoint_in(&tx, at_ms, origin, key_name, signer)? else {
        return Ok(None);
    };
    let previous_size: u64 = meta(&tx, SENT_SIZE)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let consistency_proof = audit::consistency_proof(&tx, previous_size, size)?;
    let record = Record::AuditCheckpoint(AuditCheckpoint {
        signed_note: note.clone(),
        previous_size,
        consistency_proof,
    });
    let out = outbox::Outgoing::non_personal(record)
        .ok_or_else(|| SyncError::Corrupt("a checkpoint taken for a personal record".into()))?;
    outbox::enqueue(&tx, at_ms, &out)?;
    meta::set(&tx, SENT_SIZE, &size.to_string())?;
    tx.commit()?;
    Ok(Some(note))
}

/// Why HQ's cosignature on the checkpoint of `tree_size` cannot be kept, if it cannot.
fn refusal(conn: &Connection, witness: &Witness, c: &WitnessCosignature) -> Option<String> {
    let note: Option<String> = conn
        .query_row(
            "SELECT note FROM audit_checkpoints WHERE size = ?1",
            [c.tree_size as i64],
            |r| r.get(0),
        )
        .optional()
        .ok()?;
    let Some(note) = note else {
        return Some(format!(
            "HQ cosigned a checkpoint of size {} this kiosk never made",
            c.tree_size
        ));
    };
    let checkpoint = match SignedNote::parse(&note) {
        Ok(parsed) => parsed.checkpoint,
        Err(e) => return Some(format!("the kiosk's own checkpoint does not parse: {e}")),
    };
    if checkpoint.root != c.root_hash {
        return Some(format!(
            "HQ cosigned another root for tree size {}",
            c.tree_size
        ));
    }
    verify_cosignature(&checkpoint, &c.signature_line, &witness.name, &witness.key)
        .err()
        .map(|e| {
            format!(
                "the cosignature of tree size {} does not verify: {e}",
                c.tree_size
            )
        })
}

/// Keep HQ's cosignatures that verify against `witness`; refuse, audit and raise the others.
/// Without a pinned witness key they are kept as received and the state says so.
pub(super) fn accept_cosignatures(
    tx: &Transaction<'_>,
    witness: Option<&Witness>,
    cosignatures: &[WitnessCosignature],
    at_ms: i64,
) -> Result<(), SyncError> {
    for c in cosignatures {
        let verdict = witness.map(|w| refusal(tx, w, c));
        match verdict {
            Some(Some(why)) => {
                tracing::error!(tree_size = c.tree_size, reason = %why, "HQ's witness cosignature refused");
                audit::append(
                    tx,
                    at_ms,
                    &AuditEvent {
                        actor: Actor::System,
                        action: "audit.cosignature_refused",
                        subject: None,
                        detail: json!({ "tree_size": c.tree_size, "reason": why }),
                    },
                )?;
                meta::set(tx, STATE, "invalid")?;
                meta::set(tx, ALERT, &why)?;
            }
            verified => {
                tx.execute(
                    "UPDATE audit_checkpoints SET cosignature = ?2 WHERE size = ?1",
                    params![c.tree_size as i64, c.signature_line],
                )?;
                let state = if verified.is_some() {
                    "verified"
                } else {
                    "unverified"
                };
                meta::set(tx, STATE, state)?;
                meta::delete(tx, ALERT)?;
            }
        }
    }
    Ok(())
}

/// The witness as the kiosk sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WitnessStatus {
    /// `none` (nothing cosigned yet), `verified`, `unverified` (no witness key pinned) or
    /// `invalid` (the last cosignature was refused).
    pub state: String,
    /// Why the last cosignature was refused.
    pub alert: Option<String>,
    /// Largest checkpoint HQ's cosignature is kept for.
    pub cosigned_size: Option<u64>,
    /// Largest checkpoint sent to HQ.
    pub sent_size: Option<u64>,
}

/// The witness state from the store.
pub fn witness_status(store: &Store) -> Result<WitnessStatus, SyncError> {
    let conn = store.conn()?;
    let cosigned: Option<i64> = conn.query_row(
        "SELECT max(size) FROM audit_checkpoints WHERE cosignature IS NOT NULL",
        [],
        |r| r.get(0),
    )?;
    Ok(WitnessStatus {
        state: meta(&conn, STATE)?.unwrap_or_else(|| "none".into()),
        alert: meta(&conn, ALERT)?,
        cosigned_size: cosigned.map(|s| s as u64),
        sent_size: meta(&conn, SENT_SIZE)?.and_then(|v| v.parse().ok()),
    })
}
