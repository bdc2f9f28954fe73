//! HQ's own audit of every CA action, granted or refused (`ca_audit`, PostgreSQL): who (a
//! kiosk id or an HQ operator), what (enroll, reenroll, revoke, hold, release, revoke-kiosk),
//! which certificate, the outcome and the refusal's code. The table is append-only (a trigger
//! refuses UPDATE, DELETE and TRUNCATE) and hash-chained: each row stores the exact JSON it
//! hashes and `hash = SHA-256(prev_hash ‖ entry)`, appends being serialized across HQ
//! replicas by an advisory lock, so [`verify_chain`] finds any row changed or removed by
//! someone who bypassed the trigger. No personal value is written: holders appear only as
//! the certificate serial.

use sha2::Digest;
use tokio_postgres::GenericClient;

/// Advisory lock key serializing appends (any HQ replica).
const AUDIT_LOCK: i64 = 7_270_019;

/// Outcome of an audited action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Done,
    /// Refused (the entry carries the refusal's code).
    Refused,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Refused => "refused",
        }
    }
}

/// One audit entry.
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    /// `kiosk:<id>` or `hq-staff:<name>`.
    pub actor: &'a str,
    /// `enroll`, `reenroll`, `revoke`, `hold`, `release`, `revoke-kiosk`, ...
    pub action: &'a str,
    /// Certificate serial (hex) or kiosk id concerned, if any.
    pub target: Option<&'a str>,
    /// Outcome.
    pub outcome: Outcome,
    /// The refusal's stable code.
    pub code: Option<&'a str>,
    /// Non-personal detail.
    pub detail: serde_json::Value,
}

/// Append `entry` inside the caller's transaction: the entry commits or rolls back with the
/// action it records.
pub async fn append(
    client: &tokio_postgres::Transaction<'_>,
    entry: &Entry<'_>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
        .await?;
    let prev: Vec<u8> = client
        .query_opt("SELECT hash FROM ca_audit ORDER BY seq DESC LIMIT 1", &[])
        .await?
        .map_or_else(|| vec![0u8; 32], |r| r.get(0));
    let at = time::OffsetDateTime::now_utc();
    let text = serde_json::json!({
        "at": at.unix_timestamp_nanos().to_string(),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome.as_str(),
        "code": entry.code,
        "detail": entry.detail,
    })
    .to_string();
    let hash = chain_hash(&prev, &text);
    client
        .execute(
            "INSERT INTO ca_audit (at, actor, action, target, outcome, code, entry, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &at,
                &entry.actor,
                &entry.action,
                &entry.target,
                &entry.outcome.as_str(),
                &entry.code,
                &text,
                &prev,
                &hash.to_vec(),
            ],
        )
        .await?;
    Ok(())
}

fn chain_hash(prev: &[u8], entry: &str) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(prev);
    h.update(entry.as_bytes());
    h.finalize().into()
}

/// Append outside any transaction of the caller (refusals: the refused action's own
/// transaction rolled back).
pub async fn append_alone(
    client: &mut tokio_postgres::Client,
    entry: &Entry<'_>,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    append(&tx, entry).await?;
    tx.commit().await
}

/// Why the chain does not verify.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// A row's hash or link is wrong.
    #[error("ca_audit row {seq}: {reason}")]
    Broken {
        /// Row.
        seq: i64,
        /// Why.
        reason: &'static str,
    },
    /// Reading failed.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// Recompute the chain over all rows; returns how many rows verified.
pub async fn verify_chain(client: &impl GenericClient) -> Result<u64, ChainError> {
    let rows = client
        .query(
            "SELECT seq, entry, prev_hash, hash FROM ca_audit ORDER BY seq",
            &[],
        )
        .await?;
    let mut prev = vec![0u8; 32];
    for row in &rows {
        let seq: i64 = row.get(0);
        let entry: &str = row.get(1);
        let stored_prev: Vec<u8> = row.get(2);
        let stored: Vec<u8> = row.get(3);
        if stored_prev != prev {
            return Err(ChainError::Broken {
                seq,
                reason: "does not link to the row before",
            });
        }
        if chain_hash(&prev, entry).as_slice() != stored.as_slice() {
            return Err(ChainError::Broken {
                seq,
                reason: "hash does not match its entry",
            });
        }
        prev = stored;
    }
    Ok(rows.len() as u64)
}
