//! The transactional outbox: records for HQ are written in the same SQLite
//! transaction as the change they report and its audit entry, with a
//! contiguous sequence number (HQ's idempotency key is kiosk id + sequence).
//! The only things that can be enqueued are [`Outgoing`] values, and the only
//! way to build one about a person is from the minimizer's output.

use records::wire::{self, Record};
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::json;

use crate::audit::{self, Actor, AuditError, AuditEvent};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("outbox encoding: {0}")]
    Codec(#[from] records::codec::CodecError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// A record allowed to leave the kiosk.
#[derive(Debug, Clone)]
pub struct Outgoing {
    record: Record,
    subject_id: Option<String>,
}

impl Outgoing {
    /// A minimized applicant record (built by `privacy::minimize`).
    pub(crate) fn applicant(record: wire::ApplicantRecord, subject_id: String) -> Self {
        Self {
            record: Record::Applicant(record),
            subject_id: Some(subject_id),
        }
    }

    /// Records that carry no personal values, only keyed digests, ids and times.
    pub fn non_personal(record: Record) -> Option<Self> {
        match record {
            Record::Applicant(_) => None,
            other => Some(Self {
                record: other,
                subject_id: None,
            }),
        }
    }

    pub fn record(&self) -> &Record {
        &self.record
    }
}

/// One pending row.
#[derive(Clone)]
pub struct Pending {
    pub seq: u64,
    pub record_id: String,
    pub subject_id: Option<String>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Pending {
    /// The body (an encoded record, which may hold values the catalog lets travel as they
    /// are) is shown by its size only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("seq", &self.seq)
            .field("record_id", &self.record_id)
            .field("subject_id", &self.subject_id)
            .field("body", &format_args!("{} bytes", self.body.len()))
            .finish()
    }
}

/// Enqueue inside the caller's transaction; returns the record's sequence number.
pub fn enqueue(tx: &Transaction<'_>, at_ms: i64, out: &Outgoing) -> Result<u64, OutboxError> {
    let record_id = uuid::Uuid::now_v7().to_string();
    let body = records::codec::to_vec(&out.record)?;
    tx.execute(
        "INSERT INTO outbox (record_id, kind, subject_id, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![record_id, out.record.kind_name(), out.subject_id, body, at_ms],
    )?;
    let seq = tx.last_insert_rowid() as u64;
    audit::append(
        tx,
        at_ms,
        &AuditEvent {
            actor: Actor::System,
            action: "outbox.enqueue",
            subject: out
                .record
                .subject_ref()
                .and_then(|d| d.digest.0.clone().try_into().ok()),
            detail: json!({ "seq": seq, "kind": out.record.kind_name(), "record_id": record_id }),
        },
    )?;
    Ok(seq)
}

/// Oldest pending records after sequence number `after_seq`, at most `max_records` and
/// about `max_bytes`.
pub fn pending(
    conn: &rusqlite::Connection,
    after_seq: u64,
    max_records: usize,
    max_bytes: usize,
) -> Result<Vec<Pending>, OutboxError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, record_id, subject_id, body FROM outbox
         WHERE acked_at IS NULL AND seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after_seq as i64, max_records as i64], |r| {
        Ok(Pending {
            seq: r.get::<_, i64>(0)? as u64,
            record_id: r.get(1)?,
            subject_id: r.get(2)?,
            body: r.get(3)?,
        })
    })?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for row in rows {
        let p = row?;
        if !out.is_empty() && bytes + p.body.len() > max_bytes {
            break;
        }
        bytes += p.body.len();
        out.push(p);
    }
    Ok(out)
}

/// Records not yet acknowledged by HQ.
pub fn backlog(conn: &rusqlite::Connection) -> Result<u64, OutboxError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM outbox WHERE acked_at IS NULL",
        [],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// Records not yet acknowledged after sequence number `after_seq` (what waits behind a batch).
pub fn backlog_after(conn: &rusqlite::Connection, after_seq: u64) -> Result<u64, OutboxError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM outbox WHERE acked_at IS NULL AND seq > ?1",
        [after_seq as i64],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// Mark everything up to `through_seq` acknowledged; returns the subject ids
/// whose records were acknowledged (for the purge that follows).
pub fn ack_through(
    tx: &Transaction<'_>,
    through_seq: u64,
    at_ms: i64,
) -> Result<Vec<String>, OutboxError> {
    let subjects: Vec<String> = tx
        .prepare(
            "SELECT DISTINCT subject_id FROM outbox
             WHERE acked_at IS NULL AND seq <= ?1 AND subject_id IS NOT NULL",
        )?
        .query_map(params![through_seq as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    // The body is no longer needed once HQ holds it.
    tx.execute(
        "UPDATE outbox SET acked_at = ?2, body = x'' WHERE acked_at IS NULL AND seq <= ?1",
        params![through_seq as i64, at_ms],
    )?;
    Ok(subjects)
}

/// Sequence number of the newest record (0 when empty).
pub fn last_seq(conn: &rusqlite::Connection) -> Result<u64, OutboxError> {
    let v: Option<i64> = conn
        .query_row("SELECT max(seq) FROM outbox", [], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(v.unwrap_or(0) as u64)
}
