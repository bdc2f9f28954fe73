//! The ingest pipeline for one envelope: parse → kiosk id must equal the TLS identity →
//! verify with the kiosk's registered key → decrypt with HQ's key → validate → one PostgreSQL
//! transaction (kiosk row locked `FOR UPDATE`) that checks batch order, stores records
//! idempotently under `(kiosk_id, seq)`, witnesses audit checkpoints, stores the ack → commit →
//! ack. A replayed batch returns the stored ack; nothing is held in memory between requests.

use std::sync::Arc;

use deadpool_postgres::Pool;
use records::checkpoint::{self, SignedNote};
use records::merkle::{self, Hash};
use records::wire::{CertificateEventKind, RightsRequestKind};
use records::{
    Ack, Batch, EnvelopeError, EnvelopeRecipient, Record, RecordSigner, Rejection, SCHEMA_VERSION,
    SealedEnvelope, WitnessCosignature,
};
use time::OffsetDateTime;

use crate::db::{self, DbError};
use crate::metrics::Metrics;

/// Most records accepted in one batch.
pub const MAX_RECORDS_PER_BATCH: usize = 20_000;

/// HQ's clock (injectable for tests); HQ never trusts kiosk timestamps for retention.
pub trait Clock: Send + Sync {
    /// Current time.
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Why a checkpoint was refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointRejection {
    /// The new tree is smaller than the last accepted (kiosk restored from an old image).
    #[error("checkpoint rolls back from tree size {accepted} to {offered}")]
    Rollback {
        /// Last accepted size.
        accepted: u64,
        /// Offered size.
        offered: u64,
    },
    /// The proof starts from a size HQ never accepted.
    #[error("consistency proof starts at size {from} but HQ last accepted size {accepted}")]
    Gap {
        /// Proof start.
        from: u64,
        /// Last accepted size.
        accepted: u64,
    },
    /// The new tree does not extend the last accepted one.
    #[error("checkpoint at size {offered} is not consistent with accepted size {accepted} (fork)")]
    Fork {
        /// Last accepted size.
        accepted: u64,
        /// Offered size.
        offered: u64,
    },
    /// Malformed note, wrong origin or bad kiosk signature.
    #[error("invalid checkpoint: {0}")]
    Invalid(String),
}

/// Why a batch was refused (or could not be processed).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The kiosk is not registered.
    #[error("kiosk {0:?} is not registered")]
    UnknownKiosk(String),
    /// The envelope names a different kiosk than the client certificate.
    #[error("envelope kiosk id {envelope:?} does not match client certificate {certificate:?}")]
    KioskMismatch {
        /// CN of the client certificate.
        certificate: String,
        /// Kiosk id in the envelope header.
        envelope: String,
    },
    /// Envelope parse/verify/decrypt failure.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Schema validation failure.
    #[error("invalid batch: {0}")]
    Invalid(String),
    /// A batch was skipped.
    #[error("batch gap: expected batch {expected}, got {got}")]
    BatchGap {
        /// Next batch HQ expects.
        expected: u64,
        /// Batch received.
        got: u64,
    },
    /// The batch chain diverges from what HQ accepted.
    #[error("batch {batch_seq} conflicts with the accepted batch chain (fork or altered replay)")]
    BatchFork {
        /// Batch number.
        batch_seq: u64,
        /// Next batch HQ expects.
        expected: u64,
    },
    /// Record numbers are not contiguous with what HQ stored.
    #[error("record gap: expected record {expected}, got {got}")]
    RecordGap {
        /// Next record HQ expects.
        expected: u64,
        /// First record received.
        got: u64,
    },
    /// Audit checkpoint refused.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointRejection),
    /// Database unavailable or failed (the kiosk retries).
    #[error(transparent)]
    Db(#[from] DbError),
    /// Internal failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<tokio_postgres::Error> for IngestError {
    fn from(e: tokio_postgres::Error) -> Self {
        IngestError::Db(DbError::Postgres(e))
    }
}

impl IngestError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::UnknownKiosk(_) => "unknown_kiosk",
            IngestError::KioskMismatch { .. } => "kiosk_mismatch",
            IngestError::Envelope(e) => e.code(),
            IngestError::Invalid(_) => "invalid_batch",
            IngestError::BatchGap { .. } => "batch_gap",
            IngestError::BatchFork { .. } => "batch_fork",
            IngestError::RecordGap { .. } => "record_gap",
            IngestError::Checkpoint(CheckpointRejection::Rollback { .. }) => "checkpoint_rollback",
            IngestError::Checkpoint(CheckpointRejection::Gap { .. }) => "checkpoint_gap",
            IngestError::Checkpoint(CheckpointRejection::Fork { .. }) => "checkpoint_fork",
            IngestError::Checkpoint(CheckpointRejection::Invalid(_)) => "checkpoint_invalid",
            IngestError::Db(_) => "database_unavailable",
            IngestError::Internal(_) => "internal",
        }
    }

    /// HTTP status for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            IngestError::UnknownKiosk(_) | IngestError::KioskMismatch { .. } => 403,
            IngestError::Envelope(EnvelopeError::Signature(_)) => 401,
            IngestError::Envelope(EnvelopeError::TooLarge) => 413,
            IngestError::Envelope(_) | IngestError::Invalid(_) => 400,
            IngestError::BatchGap { .. }
            | IngestError::BatchFork { .. }
            | IngestError::RecordGap { .. }
            | IngestError::Checkpoint(_) => 409,
            IngestError::Db(_) => 503,
            IngestError::Internal(_) => 500,
        }
    }

    /// The machine-readable rejection body.
    pub fn rejection(&self) -> Rejection {
        let (expected_next_seq, expected_next_batch) = match self {
            IngestError::RecordGap { expected, .. } => (Some(*expected), None),
            IngestError::BatchGap { expected, .. } | IngestError::BatchFork { expected, .. } => {
                (None, Some(*expected))
            }
            _ => (None, None),
        };
        Rejection {
            code: self.code().to_owned(),
            message: self.to_string(),
            expected_next_seq,
            expected_next_batch,
        }
    }
}

/// Shared ingest state (cheap to clone).
#[derive(Clone)]
pub struct Ingestor {
    pool: Pool,
    recipient: Arc<dyn EnvelopeRecipient>,
    witness: Arc<dyn RecordSigner>,
    witness_name: String,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

struct RecordRow {
    seq: i64,
    record_id: Vec<u8>,
    kind: String,
    subject_ref: Option<Vec<u8>>,
    body: Vec<u8>,
}

fn to_i64(v: u64, what: &str) -> Result<i64, IngestError> {
    i64::try_from(v).map_err(|_| IngestError::Invalid(format!("{what} out of range")))
}

fn timestamp(secs: i64, what: &str) -> Result<OffsetDateTime, IngestError> {
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| IngestError::Invalid(format!("{what} out of range")))
}

/// Structural validation beyond what decoding guarantees.
fn validate(batch: &Batch) -> Result<(), IngestError> {
    if batch.schema_version != SCHEMA_VERSION {
        return Err(IngestError::Invalid("schema version".into()));
    }
    if batch.batch_seq == 0 {
        return Err(IngestError::Invalid("batch numbers start at 1".into()));
    }
    if batch.records.len() > MAX_RECORDS_PER_BATCH {
        return Err(IngestError::Invalid(format!(
            "more than {MAX_RECORDS_PER_BATCH} records"
        )));
    }
    let mut expected = batch.records.first().map(|r| r.seq);
    for r in &batch.records {
        if Some(r.seq) != expected || r.seq == 0 {
            return Err(IngestError::Invalid(
                "record sequence numbers must be contiguous and start at 1".into(),
            ));
        }
        expected = r.seq.checked_add(1);
        if let Some(subject) = r.record.subject_ref()
            && !(16..=64).contains(&subject.digest.0.len())
        {
            return Err(IngestError::Invalid(format!(
                "record {}: subject digest must be 16..=64 bytes",
                r.seq
            )));
        }
    }
    Ok(())
}

impl Ingestor {
    /// New ingestor.
    pub fn new(
        pool: Pool,
        recipient: Arc<dyn EnvelopeRecipient>,
        witness: Arc<dyn RecordSigner>,
        witness_name: String,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            pool,
            recipient,
            witness,
            witness_name,
            clock,
            metrics,
        }
    }

    /// The pool (health checks, admin commands).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Process one envelope from the client authenticated as `client_kiosk_id`.
    pub async fn ingest(&self, client_kiosk_id: &str, body: Vec<u8>) -> Result<Ack, IngestError> {
        self.metrics
            .kiosk_contact(client_kiosk_id, self.clock.now().unix_timestamp());
        let result = self.ingest_inner(client_kiosk_id, body).await;
        match &result {
            Ok(ack) if ack.duplicate => self.metrics.batch_outcome("duplicate"),
            Ok(_) => self.metrics.batch_outcome("accepted"),
            Err(e) => {
                self.metrics.rejection(e.code());
                tracing::warn!(kiosk = client_kiosk_id, code = e.code(), error = %e, "batch rejected");
            }
        }
        result
    }

    async fn ingest_inner(&self, client_kiosk_id: &str, body: Vec<u8>) -> Result<Ack, IngestError> {
        let envelope = SealedEnvelope::parse(&body)?;
        if envelope.header().kiosk_id != client_kiosk_id {
            return Err(IngestError::KioskMismatch {
                certificate: client_kiosk_id.to_owned(),
                envelope: envelope.header().kiosk_id.clone(),
            });
        }
        let mut conn = self.pool.get().await.map_err(DbError::from)?;
        let key = db::kiosk_key(&conn, client_kiosk_id)
            .await?
            .ok_or_else(|| IngestError::UnknownKiosk(client_kiosk_id.to_owned()))?;
        let recipient = self.recipient.clone();
        let verify_key = key.clone();
        let batch_hash = envelope.digest();
        let batch = tokio::task::spawn_blocking(move || {
            envelope.verify(&verify_key)?;
            Ok::<_, IngestError>(envelope.decrypt(recipient.as_ref())?)
        })
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))??;
        validate(&batch)?;
        if let Some(backlog) = batch.backlog {
            // Signed by the kiosk's registered key and named by its certificate.
            self.metrics.kiosk_backlog(client_kiosk_id, backlog);
        }
        let rows = batch
            .records
            .iter()
            .map(|r| {
                Ok(RecordRow {
                    seq: to_i64(r.seq, "record seq")?,
                    record_id: r.record_id.to_vec(),
                    kind: r.record.kind_name().to_owned(),
                    subject_ref: r.record.subject_ref().map(|s| s.digest.0.clone()),
                    body: records::codec::to_vec(&r.record)
                        .map_err(|e| IngestError::Internal(e.to_string()))?,
                })
            })
            .collect::<Result<Vec<_>, IngestError>>()?;
        let now = self.clock.now();

        let tx = conn.transaction().await?;
        let state = tx
            .query_one(
                "SELECT next_record_seq, last_batch_seq, last_batch_hash, witness_size, witness_root
                 FROM kiosks WHERE kiosk_id = $1 FOR UPDATE",
                &[&client_kiosk_id],
            )
            .await?;
        let next_record_seq = state.get::<_, i64>(0) as u64;
        let last_batch_seq = state.get::<_, i64>(1) as u64;
        let last_batch_hash: Vec<u8> = state.get(2);
        let mut witness: Option<(u64, Hash)> = match (
            state.get::<_, Option<i64>>(3),
            state.get::<_, Option<Vec<u8>>>(4),
        ) {
            (Some(size), Some(root)) => Some((
                size as u64,
                Hash::try_from(root.as_slice())
                    .map_err(|_| IngestError::Internal("stored witness root".into()))?,
            )),
            _ => None,
        };

        if batch.batch_seq <= last_batch_seq {
            let stored = tx
                .query_opt(
                    "SELECT batch_hash, ack FROM batches WHERE kiosk_id = $1 AND batch_seq = $2",
                    &[&client_kiosk_id, &to_i64(batch.batch_seq, "batch seq")?],
                )
                .await?;
            return match stored {
                Some(row) if row.get::<_, &[u8]>(0) == batch_hash.as_slice() => {
                    let mut ack = Ack::from_bytes(row.get::<_, &[u8]>(1))
                        .map_err(|e| IngestError::Internal(e.to_string()))?;
                    ack.duplicate = true;
                    tracing::info!(
                        kiosk = client_kiosk_id,
                        batch = batch.batch_seq,
                        "replayed batch acknowledged without storing again"
                    );
                    Ok(ack)
                }
                _ => Err(IngestError::BatchFork {
                    batch_seq: batch.batch_seq,
                    expected: last_batch_seq + 1,
                }),
            };
        }
        if batch.batch_seq != last_batch_seq + 1 {
            return Err(IngestError::BatchGap {
                expected: last_batch_seq + 1,
                got: batch.batch_seq,
            });
        }
        if batch.prev_batch_hash.as_slice() != last_batch_hash.as_slice() {
            return Err(IngestError::BatchFork {
                batch_seq: batch.batch_seq,
                expected: last_batch_seq + 1,
            });
        }
        if let Some((first, _)) = batch.seq_range()
            && first != next_record_seq
        {
            return Err(IngestError::RecordGap {
                expected: next_record_seq,
                got: first,
            });
        }

        let mut cosignatures = Vec::new();
        for r in &batch.records {
            match &r.record {
                Record::AuditCheckpoint(cp) => {
                    let (cosig, new_state) =
                        self.witness_checkpoint(client_kiosk_id, &key, witness, cp)?;
                    tx.execute(
                        "INSERT INTO checkpoints (kiosk_id, tree_size, root_hash, note, cosignature, accepted_at)
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (kiosk_id, tree_size) DO NOTHING",
                        &[
                            &client_kiosk_id,
                            &to_i64(cosig.tree_size, "tree size")?,
                            &cosig.root_hash.as_slice(),
                            &cp.signed_note,
                            &cosig.signature_line,
                            &now,
                        ],
                    )
                    .await?;
                    witness = Some(new_state);
                    cosignatures.push(cosig);
                }
                Record::Certificate(ev) => {
                    let status = match ev.kind {
                        CertificateEventKind::Issued | CertificateEventKind::Renewed => "valid",
                        CertificateEventKind::Revoked => "revoked",
                        CertificateEventKind::Suspended => "suspended",
                        CertificateEventKind::AccountCancelled => "cancelled",
                    };
                    let revoked_at = (ev.kind == CertificateEventKind::Revoked).then_some(now);
                    tx.execute(
                        "INSERT INTO certificates (serial_hex, subject_ref, government_use, not_after, revoked_at, status, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (serial_hex) DO UPDATE SET status = EXCLUDED.status,
                            not_after = EXCLUDED.not_after,
                            government_use = certificates.government_use OR EXCLUDED.government_use,
                            revoked_at = COALESCE(certificates.revoked_at, EXCLUDED.revoked_at),
                            updated_at = EXCLUDED.updated_at",
                        &[
                            &ev.serial_hex,
                            &ev.subject_ref.digest.0,
                            &ev.government_use,
                            &timestamp(ev.not_after, "not_after")?,
                            &revoked_at,
                            &status,
                            &now,
                        ],
                    )
                    .await?;
                    if ev.kind == CertificateEventKind::AccountCancelled {
                        mark_subject(&tx, &ev.subject_ref.digest.0, "cancelled_at", now).await?;
                    }
                }
                Record::RightsRequest(rr) if rr.kind == RightsRequestKind::AccountCancellation => {
                    mark_subject(&tx, &rr.subject_ref.digest.0, "cancelled_at", now).await?;
                }
                Record::DeletionNotice(dn) => {
                    tx.execute(
                        "INSERT INTO deletion_notices (subject_ref, reason, items, source, created_at)
                         VALUES ($1, $2, $3, $4, $5)",
                        &[
                            &dn.subject_ref.digest.0,
                            &dn.reason,
                            &dn.items,
                            &format!("kiosk:{client_kiosk_id}"),
                            &now,
                        ],
                    )
                    .await?;
                    mark_subject(&tx, &dn.subject_ref.digest.0, "deletion_requested_at", now)
                        .await?;
                }
                _ => {}
            }
        }

        if !rows.is_empty() {
            copy_records(
                &tx,
                client_kiosk_id,
                to_i64(batch.batch_seq, "batch seq")?,
                now,
                &rows,
            )
            .await?;
        }

        let last_seq = batch.seq_range().map(|(_, last)| last);
        let acked_through = last_seq.unwrap_or(next_record_seq.saturating_sub(1));
        let ack = Ack {
            schema_version: SCHEMA_VERSION,
            kiosk_id: client_kiosk_id.to_owned(),
            batch_seq: batch.batch_seq,
            batch_hash,
            acked_through_seq: acked_through,
            duplicate: false,
            cosignatures,
        };
        let ack_bytes = ack
            .to_bytes()
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        let first_seq = batch.seq_range().map(|(f, _)| f as i64);
        tx.execute(
            "INSERT INTO batches (kiosk_id, batch_seq, batch_hash, first_seq, last_seq, record_count, received_at, ack)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &client_kiosk_id,
                &to_i64(batch.batch_seq, "batch seq")?,
                &batch_hash.as_slice(),
                &first_seq,
                &last_seq.map(|l| l as i64),
                &(rows.len() as i32),
                &now,
                &ack_bytes,
            ],
        )
        .await?;
        let (witness_size, witness_root) = match witness {
            Some((size, root)) => (Some(size as i64), Some(root.to_vec())),
            None => (None, None),
        };
        tx.execute(
            "UPDATE kiosks SET next_record_seq = $2, last_batch_seq = $3, last_batch_hash = $4,
                 witness_size = $5, witness_root = $6 WHERE kiosk_id = $1",
            &[
                &client_kiosk_id,
                &to_i64(acked_through + 1, "record seq")?,
                &to_i64(batch.batch_seq, "batch seq")?,
                &batch_hash.as_slice(),
                &witness_size,
                &witness_root,
            ],
        )
        .await?;
        tx.commit().await?;
        self.metrics.records_stored(rows.len() as u64);
        Ok(ack)
    }

    /// Check a checkpoint against the last accepted one and cosign it.
    fn witness_checkpoint(
        &self,
        kiosk_id: &str,
        kiosk_key: &records::PublicVerifier,
        accepted: Option<(u64, Hash)>,
        cp: &records::AuditCheckpoint,
    ) -> Result<(WitnessCosignature, (u64, Hash)), CheckpointRejection> {
        let note = SignedNote::parse(&cp.signed_note)
            .map_err(|e| CheckpointRejection::Invalid(e.to_string()))?;
        if note.checkpoint.origin.rsplit('/').next() != Some(kiosk_id) {
            return Err(CheckpointRejection::Invalid(
                "origin does not name this kiosk".into(),
            ));
        }
        note.verify(kiosk_id, kiosk_key)
            .map_err(|e| CheckpointRejection::Invalid(e.to_string()))?;
        let offered = note.checkpoint.size;
        let new_root = note.checkpoint.root;
        let (acc_size, acc_root) = accepted.unwrap_or((0, merkle::empty_root()));
        if offered < acc_size {
            return Err(CheckpointRejection::Rollback {
                accepted: acc_size,
                offered,
            });
        }
        if cp.previous_size != acc_size {
            return Err(CheckpointRejection::Gap {
                from: cp.previous_size,
                accepted: acc_size,
            });
        }
        merkle::verify_consistency(
            acc_size,
            offered,
            &acc_root,
            &new_root,
            &cp.consistency_proof,
        )
        .map_err(|_| CheckpointRejection::Fork {
            accepted: acc_size,
            offered,
        })?;
        let line = checkpoint::cosign(&note.checkpoint, &self.witness_name, self.witness.as_ref())
            .map_err(|e| CheckpointRejection::Invalid(format!("cosigning failed: {e}")))?;
        Ok((
            WitnessCosignature {
                tree_size: offered,
                root_hash: new_root,
                signature_line: line,
            },
            (offered, new_root),
        ))
    }
}

/// Binary COPY of the batch's records inside the ingest transaction (the primary key still
/// forbids duplicates; order and contiguity were checked under the kiosk row lock).
async fn copy_records(
    tx: &deadpool_postgres::Transaction<'_>,
    kiosk_id: &str,
    batch_seq: i64,
    now: OffsetDateTime,
    rows: &[RecordRow],
) -> Result<(), IngestError> {
    let sink = tx.copy_in(crate::db::COPY_RECORDS).await?;
    let columns: Vec<crate::db::RecordColumns<'_>> = rows
        .iter()
        .map(|r| -> crate::db::RecordColumns<'_> {
            [
                &kiosk_id,
                &r.seq,
                &r.record_id,
                &r.kind,
                &r.subject_ref,
                &r.body,
                &batch_seq,
                &now,
            ]
        })
        .collect();
    crate::db::copy_records(sink, &columns).await?;
    Ok(())
}

async fn mark_subject(
    tx: &deadpool_postgres::Transaction<'_>,
    subject_ref: &[u8],
    column: &'static str,
    now: OffsetDateTime,
) -> Result<(), IngestError> {
    // `column` is one of two fixed identifiers, never input.
    let sql = format!(
        "INSERT INTO subjects (subject_ref, {column}) VALUES ($1, $2)
         ON CONFLICT (subject_ref) DO UPDATE SET {column} = COALESCE(subjects.{column}, EXCLUDED.{column})"
    );
    tx.execute(&sql, &[&subject_ref, &now]).await?;
    Ok(())
}
