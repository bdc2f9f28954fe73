//! The tamper-evident audit log: every read or write of personal data, every
//! consent, hand-over and staff action appends an entry in the same SQLite
//! transaction as the change it records. Entries are leaves of an RFC 6962/9162
//! Merkle tree with SM3 (`records::merkle`); the tree frontier is kept in the
//! same transaction, and checkpoints in the C2SP signed-note shape are signed
//! by the kiosk's device key. Entries carry no personal data: subjects are
//! named by keyed digest, so crypto-shredding a person never rewrites the log.

use records::checkpoint::{Checkpoint, SignedNote, sign_checkpoint};
use records::merkle::{self, Frontier, Hash};
use records::signing::{PublicVerifier, RecordSigner};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::{Value, json};

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// kioskd itself (sync, retention sweeper, start-up).
    System,
    /// An applicant session (its random id, not the person).
    Applicant(String),
    /// A staff member (certificate serial of their staff UKEY).
    Staff(String),
}

impl Actor {
    fn as_string(&self) -> String {
        match self {
            Actor::System => "system".into(),
            Actor::Applicant(s) => format!("applicant:{s}"),
            Actor::Staff(s) => format!("staff:{s}"),
        }
    }
}

/// One thing that happened.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    pub actor: Actor,
    /// What, e.g. `consent.grant`, `personal.read`, `handover.verifier`, `staff.reveal`.
    pub action: &'a str,
    /// Keyed digest of the subject, if the event concerns a person.
    pub subject: Option<[u8; 32]>,
    /// Further facts: item names, counts, ids. Never personal values.
    pub detail: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("audit log state is corrupt: {0}")]
    State(String),
    #[error("audit checkpoint: {0}")]
    Checkpoint(#[from] records::checkpoint::CheckpointError),
}

/// The first thing found wrong by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// Entry `seq` does not hash to its recorded leaf (changed or moved).
    EntryChanged { seq: u64 },
    /// Entry `expected` is missing (found `found` in its place).
    EntryMissing { expected: u64, found: u64 },
    /// Entries end before the size the log state records.
    Truncated { entries: u64, recorded: u64 },
    /// Recomputed root at a checkpoint differs from the signed root.
    CheckpointMismatch { size: u64 },
    /// A checkpoint signature does not verify with the device key.
    CheckpointSignature { size: u64 },
    /// The recorded frontier does not match the entries.
    FrontierMismatch,
}

impl std::fmt::Display for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tamper::EntryChanged { seq } => write!(f, "entry {seq} was changed or moved"),
            Tamper::EntryMissing { expected, found } => {
                write!(
                    f,
                    "entry {expected} is missing (next present entry is {found})"
                )
            }
            Tamper::Truncated { entries, recorded } => write!(
                f,
                "entry {entries} is missing: the log ends after {entries} entries but recorded {recorded}"
            ),
            Tamper::CheckpointMismatch { size } => write!(
                f,
                "the entries before checkpoint {size} do not hash to its signed root (rewritten before entry {size})"
            ),
            Tamper::CheckpointSignature { size } => {
                write!(f, "checkpoint {size} is not signed by the device key")
            }
            Tamper::FrontierMismatch => {
                write!(f, "the recorded tree state does not match the entries")
            }
        }
    }
}

/// Outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    pub checkpoints: u64,
    pub root: Hash,
    pub tamper: Option<Tamper>,
}

fn canonical(
    seq: u64,
    at: i64,
    actor: &str,
    action: &str,
    subject: Option<&str>,
    detail: &str,
) -> Vec<u8> {
    // serde_json orders object keys, so this encoding is deterministic.
    serde_json::to_vec(&json!({
        "seq": seq,
        "at": at,
        "actor": actor,
        "action": action,
        "subject": subject,
        "detail": detail,
    }))
    .expect("JSON of strings and numbers always encodes")
}

fn load_frontier(conn: &Connection) -> Result<Frontier, AuditError> {
    let row: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT size, frontier FROM audit_state WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match row {
        None => Ok(Frontier::new()),
        Some((size, bytes)) => {
            let f = Frontier::from_bytes(&bytes).map_err(|e| AuditError::State(e.to_string()))?;
            if f.size() != size as u64 {
                return Err(AuditError::State(
                    "frontier size disagrees with the log size".into(),
                ));
            }
            Ok(f)
        }
    }
}

/// Append `event` inside `tx` (the transaction of the change it records).
/// Returns the entry's sequence number.
pub fn append(tx: &Transaction<'_>, at_ms: i64, event: &AuditEvent<'_>) -> Result<u64, AuditError> {
    let mut frontier = load_frontier(tx)?;
    let seq = frontier.size();
    let actor = event.actor.as_string();
    let subject = event.subject.map(hex::encode);
    let detail = event.detail.to_string();
    let bytes = canonical(
        seq,
        at_ms,
        &actor,
        event.action,
        subject.as_deref(),
        &detail,
    );
    let leaf = merkle::leaf_hash(&bytes);
    frontier.append(leaf);
    // Cached statements: an entry is appended for nearly every change.
    tx.prepare_cached(
        "INSERT INTO audit_log (seq, at, actor, action, subject, detail, leaf_hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![seq as i64, at_ms, actor, event.action, subject, detail, leaf.to_vec()])?;
    tx.prepare_cached(
        "INSERT INTO audit_state (id, size, frontier) VALUES (1, ?1, ?2)
         ON CONFLICT(id) DO UPDATE SET size = excluded.size, frontier = excluded.frontier",
    )?
    .execute(params![frontier.size() as i64, frontier.to_bytes()])?;
    Ok(seq)
}

/// Append in a transaction of its own (events that change nothing else).
pub fn record(
    conn: &mut Connection,
    at_ms: i64,
    event: &AuditEvent<'_>,
) -> Result<u64, AuditError> {
    let tx = conn.transaction()?;
    let seq = append(&tx, at_ms, event)?;
    tx.commit()?;
    Ok(seq)
}

/// The current tree head.
pub fn head(conn: &Connection) -> Result<(u64, Hash), AuditError> {
    let f = load_frontier(conn)?;
    Ok((f.size(), f.root()))
}

/// Sign a checkpoint of the current tree if it grew since the last one.
/// Returns the signed note when one was made.
pub fn checkpoint(
    conn: &mut Connection,
    at_ms: i64,
    origin: &str,
    key_name: &str,
    signer: &dyn RecordSigner,
) -> Result<Option<String>, AuditError> {
    let tx = conn.transaction()?;
    let made = checkpoint_in(&tx, at_ms, origin, key_name, signer)?;
    tx.commit()?;
    Ok(made.map(|(note, _)| note))
}

/// [`checkpoint`] inside the caller's transaction: the signed note and its tree size.
pub fn checkpoint_in(
    tx: &Transaction<'_>,
    at_ms: i64,
    origin: &str,
    key_name: &str,
    signer: &dyn RecordSigner,
) -> Result<Option<(String, u64)>, AuditError> {
    let frontier = load_frontier(tx)?;
    let last: Option<i64> =
        tx.query_row("SELECT max(size) FROM audit_checkpoints", [], |r| r.get(0))?;
    if frontier.size() == 0 || last == Some(frontier.size() as i64) {
        return Ok(None);
    }
    let cp = Checkpoint {
        origin: origin.to_string(),
        size: frontier.size(),
        root: frontier.root(),
    };
    let note = sign_checkpoint(&cp, key_name, signer)?;
    tx.execute(
        "INSERT INTO audit_checkpoints (size, root, note, at) VALUES (?1, ?2, ?3, ?4)",
        params![cp.size as i64, cp.root.to_vec(), note, at_ms],
    )?;
    Ok(Some((note, cp.size)))
}

/// The RFC 9162 consistency proof of the log from `from` entries to `to` entries (the leaves
/// are read back from the log: linear in its size, run once per checkpoint).
pub fn consistency_proof(conn: &Connection, from: u64, to: u64) -> Result<Vec<Hash>, AuditError> {
    let leaves: Vec<Hash> = conn
        .prepare("SELECT leaf_hash FROM audit_log WHERE seq < ?1 ORDER BY seq")?
        .query_map([to as i64], |r| r.get::<_, Vec<u8>>(0))?
        .map(|leaf| {
            let leaf = leaf?;
            Hash::try_from(leaf.as_slice()).map_err(|_| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Blob,
                    "leaf hash is not 32 bytes".into(),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    merkle::consistency_proof(&leaves, from)
        .map_err(|e| AuditError::State(format!("consistency proof {from}..{to}: {e}")))
}

/// Check every entry against its leaf, the sequence for gaps, every checkpoint
/// against the recomputed root (and its signature when `device_key` is given),
/// and the recorded frontier. Stops at the first problem.
pub fn verify(
    conn: &Connection,
    key_name: &str,
    device_key: Option<&PublicVerifier>,
) -> Result<VerifyReport, AuditError> {
    let mut checkpoints: Vec<(u64, Vec<u8>, String)> = conn
        .prepare("SELECT size, root, note FROM audit_checkpoints ORDER BY size")?
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    checkpoints.reverse(); // pop from the smallest
    let mut stmt = conn.prepare(
        "SELECT seq, at, actor, action, subject, detail, leaf_hash FROM audit_log ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let mut frontier = Frontier::new();
    let mut checked_checkpoints = 0u64;
    let report = |frontier: &Frontier, cps: u64, tamper: Option<Tamper>| VerifyReport {
        entries: frontier.size(),
        checkpoints: cps,
        root: frontier.root(),
        tamper,
    };
    let check_cp = |frontier: &Frontier, cp: &(u64, Vec<u8>, String)| -> Option<Tamper> {
        let (size, root, note) = cp;
        if frontier.root().as_slice() != root.as_slice() {
            return Some(Tamper::CheckpointMismatch { size: *size });
        }
        let parsed = SignedNote::parse(note).ok();
        let body_ok = parsed.as_ref().is_some_and(|n| {
            n.checkpoint.size == *size && n.checkpoint.root.as_slice() == root.as_slice()
        });
        if !body_ok {
            return Some(Tamper::CheckpointMismatch { size: *size });
        }
        if let (Some(key), Some(n)) = (device_key, parsed)
            && n.verify(key_name, key).is_err()
        {
            return Some(Tamper::CheckpointSignature { size: *size });
        }
        None
    };
    while let Some(row) = rows.next()? {
        let seq = row.get::<_, i64>(0)? as u64;
        let expected = frontier.size();
        if seq != expected {
            return Ok(report(
                &frontier,
                checked_checkpoints,
                Some(Tamper::EntryMissing {
                    expected,
                    found: seq,
                }),
            ));
        }
        let subject: Option<String> = row.get(4)?;
        let bytes = canonical(
            seq,
            row.get(1)?,
            &row.get::<_, String>(2)?,
            &row.get::<_, String>(3)?,
            subject.as_deref(),
            &row.get::<_, String>(5)?,
        );
        let leaf = merkle::leaf_hash(&bytes);
        let stored: Vec<u8> = row.get(6)?;
        if stored.as_slice() != leaf.as_slice() {
            return Ok(report(
                &frontier,
                checked_checkpoints,
                Some(Tamper::EntryChanged { seq }),
            ));
        }
        frontier.append(leaf);
        while checkpoints.last().is_some_and(|c| c.0 == frontier.size()) {
            let cp = checkpoints.pop().expect("checked above");
            if let Some(t) = check_cp(&frontier, &cp) {
                return Ok(report(&frontier, checked_checkpoints, Some(t)));
            }
            checked_checkpoints += 1;
        }
    }
    if let Some(cp) = checkpoints.last() {
        // A checkpoint beyond the entries: entries were removed from the end.
        return Ok(report(
            &frontier,
            checked_checkpoints,
            Some(Tamper::Truncated {
                entries: frontier.size(),
                recorded: cp.0,
            }),
        ));
    }
    let recorded = load_frontier(conn).map_err(|e| AuditError::State(e.to_string()));
    match recorded {
        Ok(r) if r.size() > frontier.size() => Ok(report(
            &frontier,
            checked_checkpoints,
            Some(Tamper::Truncated {
                entries: frontier.size(),
                recorded: r.size(),
            }),
        )),
        Ok(r) if r.size() == frontier.size() && r.root() == frontier.root() => {
            Ok(report(&frontier, checked_checkpoints, None))
        }
        _ => Ok(report(
            &frontier,
            checked_checkpoints,
            Some(Tamper::FrontierMismatch),
        )),
    }
}

/// Remember which key signs this log's checkpoints (so `kioskctl audit
/// verify` can check signatures without the token).
pub fn record_device_key(
    conn: &Connection,
    key_name: &str,
    key: &PublicVerifier,
) -> Result<(), AuditError> {
    let json = serde_json::to_string(key).map_err(|e| AuditError::State(e.to_string()))?;
    conn.execute(
        "INSERT INTO kiosk_meta (key, value) VALUES ('audit.key_name', ?1), ('audit.device_key', ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key_name, json],
    )?;
    Ok(())
}

/// The checkpoint key recorded by [`record_device_key`].
pub fn device_key(conn: &Connection) -> Result<Option<(String, PublicVerifier)>, AuditError> {
    let get = |k: &str| -> Result<Option<String>, AuditError> {
        Ok(conn
            .query_row(
                "SELECT value FROM kiosk_meta WHERE key = ?1",
                params![k],
                |r| r.get(0),
            )
            .optional()?)
    };
    match (get("audit.key_name")?, get("audit.device_key")?) {
        (Some(name), Some(json)) => {
            let key = serde_json::from_str(&json).map_err(|e| AuditError::State(e.to_string()))?;
            Ok(Some((name, key)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests;
