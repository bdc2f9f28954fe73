//! Store-and-forward to HQ. Pending outbox records are cut into a batch
//! (bounded in records and bytes), sealed into an envelope (signed by the
//! device key, encrypted to HQ's key) and the sealed bytes are stored before
//! the first send, so a crash or an outage resends exactly the same batch.
//! Only HQ's ack, verified against the stored batch, advances the outbox; the
//! ack, the purge of personal data it allows and their audit entries commit
//! together. Failures back off exponentially with jitter; nothing is dropped.

use std::sync::Arc;
use std::time::Duration;

use records::envelope::{RecipientPublicKeys, Suite, seal_batch_with_digest};
use records::merkle::Hash;
use records::signing::RecordSigner;
use records::wire::{Ack, Batch, Record, SCHEMA_VERSION, SequencedRecord};
use rusqlite::{OptionalExtension, params};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Actor, AuditEvent};
use crate::store::outbox;
use crate::store::subjects::Subjects;
use crate::store::{Store, StoreError};

pub mod hq_client;
pub mod local_hq;
pub mod synthetic;
pub mod witness;

pub use witness::{Witness, WitnessStatus, checkpoint_for_hq, witness_status};

/// HQ's public record key, known once the link to HQ is set up (the local HQ starts after
/// kioskd; a remote HQ's key comes from `hq.record_key`). Applicant records are sealed to it
/// when they enter the outbox, so nothing waits there in clear.
pub struct HqRecipient {
    keys: tokio::sync::watch::Sender<Option<RecipientPublicKeys>>,
}

impl Default for HqRecipient {
    fn default() -> Self {
        Self {
            keys: tokio::sync::watch::channel(None).0,
        }
    }
}

impl HqRecipient {
    pub fn set(&self, keys: RecipientPublicKeys) {
        self.keys.send_replace(Some(keys));
    }

    /// The key, waiting up to `within` for the link to come up.
    pub async fn get(&self, within: Duration) -> Option<RecipientPublicKeys> {
        let mut rx = self.keys.subscribe();
        let waited = tokio::time::timeout(within, rx.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(keys)) => keys.clone(),
            _ => None,
        }
    }
}

/// Delivery of a sealed envelope to HQ.
#[async_trait::async_trait]
pub trait HqTransport: Send + Sync {
    async fn send(&self, envelope: Vec<u8>) -> Result<Ack, TransportError>;
}

/// Why a send failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    pub message: String,
    /// Transport trouble or HQ-side failure: the same envelope may succeed later.
    pub retryable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sync store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("sealing a batch: {0}")]
    Seal(#[from] records::envelope::EnvelopeError),
    #[error("encoding: {0}")]
    Codec(#[from] records::codec::CodecError),
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    #[error(transparent)]
    Subject(#[from] crate::store::subjects::SubjectError),
    #[error("HQ: {0}")]
    Transport(#[from] TransportError),
    #[error("HQ acknowledged something else: {0}")]
    AckMismatch(String),
    #[error("stored batch is unreadable: {0}")]
    Corrupt(String),
}

/// Settings of the sender.
#[derive(Clone)]
pub struct SyncSettings {
    pub kiosk_id: String,
    pub suite: Suite,
    pub recipient: RecipientPublicKeys,
    pub batch_records: usize,
    pub batch_bytes: usize,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// HQ's witness key pinned at the kiosk (cosignatures are checked against it).
    pub witness: Option<Witness>,
}

/// A batch sealed and stored, waiting for its ack.
#[derive(Debug, Clone)]
struct SealedBatch {
    batch_seq: u64,
    batch_hash: Hash,
    last_seq: u64,
    envelope: Vec<u8>,
}

fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing pending.
    Idle,
    /// A batch was acknowledged through this record sequence number.
    Delivered {
        batch_seq: u64,
        through_seq: u64,
        purged: usize,
    },
}

/// The sender: one batch in flight at a time, the next one sealed meanwhile.
pub struct Sender {
    pub store: Store,
    pub signer: Arc<dyn RecordSigner>,
    pub transport: Arc<dyn HqTransport>,
    pub settings: SyncSettings,
}

impl Sender {
    /// The batch to send after `previous` (the first one when `None`): the stored
    /// unacknowledged batch that follows it, or a new one sealed from the outbox records after
    /// it and chained to it. Sealing the next batch while `previous` is in flight changes
    /// nothing that leaves the kiosk: the same records, in the same batches and chain.
    fn next_batch(&self, previous: Option<&SealedBatch>) -> Result<Option<SealedBatch>, SyncError> {
        let conn = self.store.conn()?;
        let stored = conn
            .query_row(
                "SELECT batch_seq, batch_hash, last_seq, envelope FROM sync_batches
                 WHERE batch_seq > ?1 ORDER BY batch_seq LIMIT 1",
                params![previous.map_or(0, |p| p.batch_seq as i64)],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                },
            )
            .optional()?;
        if let Some((batch_seq, hash, last_seq, envelope)) = stored {
            return Ok(Some(SealedBatch {
                batch_seq: batch_seq as u64,
                batch_hash: hash
                    .try_into()
                    .map_err(|_| SyncError::Corrupt("batch hash length".into()))?,
                last_seq: last_seq as u64,
                envelope,
            }));
        }
        let pending = outbox::pending(
            &conn,
            previous.map_or(0, |p| p.last_seq),
            self.settings.batch_records,
            self.settings.batch_bytes,
        )?;
        if pending.is_empty() {
            return Ok(None);
        }
        let (prev_seq, prev_hash) = match previous {
            Some(p) => (p.batch_seq, p.batch_hash),
            None => last_delivered(&conn)?,
        };
        // Records behind this batch (HQ's per-kiosk backlog gauge): unacknowledged ones past
        // its last record.
        let behind = outbox::backlog_after(&conn, pending.last().map_or(0, |p| p.seq))?;
        // Sealing (CBOR, SM4-GCM or AES-GCM, a signature) does not need the store: the API and
        // the ack of the batch in flight use it meanwhile. Only this task writes batches.
        drop(conn);
        let mut records = Vec::with_capacity(pending.len());
        for p in &pending {
            let record: Record = records::codec::from_slice(&p.body)?;
            let id = uuid::Uuid::parse_str(&p.record_id)
                .map_err(|e| SyncError::Corrupt(format!("record id: {e}")))?;
            records.push(SequencedRecord {
                seq: p.seq,
                record_id: *id.as_bytes(),
                record,
            });
        }
        let batch = Batch {
            schema_version: SCHEMA_VERSION,
            kiosk_id: self.settings.kiosk_id.clone(),
            batch_seq: prev_seq + 1,
            prev_batch_hash: prev_hash,
            created_at: now_ms() / 1000,
            records,
            backlog: Some(behind),
        };
        // The envelope digest links the batch chain; it covers the random key
        // encapsulation, so the sealed bytes are stored and resent unchanged.
        let (envelope, batch_hash) = seal_batch_with_digest(
            &batch,
            self.settings.suite,
            self.signer.as_ref(),
            &self.settings.recipient,
        )?;
        let first_seq = pending.first().map(|p| p.seq).unwrap_or(0);
        let last_seq = pending.last().map(|p| p.seq).unwrap_or(0);
        let mut conn = self.store.conn()?;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO sync_batches (batch_seq, batch_hash, first_seq, last_seq, envelope, sealed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                batch.batch_seq as i64,
                batch_hash.to_vec(),
                first_seq as i64,
                last_seq as i64,
                envelope,
                now_ms()
            ],
        )?;
        audit::append(
            &tx,
            now_ms(),
            &AuditEvent {
                actor: Actor::System,
                action: "sync.seal",
                subject: None,
                detail: json!({ "batch_seq": batch.batch_seq, "records": pending.len(),
                                "first_seq": first_seq, "last_seq": last_seq }),
            },
        )?;
        tx.commit()?;
        Ok(Some(SealedBatch {
            batch_seq: batch.batch_seq,
            batch_hash,
            last_seq,
            envelope,
        }))
    }

    /// Apply HQ's ack: advance the outbox, purge what HQ now holds, keep the
    /// batch chain's head; all in one transaction with its audit entries.
    fn apply_ack(&self, sealed: &SealedBatch, ack: &Ack) -> Result<usize, SyncError> {
        if ack.batch_seq != sealed.batch_seq
            || ack.batch_hash != sealed.batch_hash
            || ack.kiosk_id != self.settings.kiosk_id
            || ack.acked_through_seq < sealed.last_seq
        {
            return Err(SyncError::AckMismatch(format!(
                "sent batch {} through record {}, HQ acked batch {} through {}",
                sealed.batch_seq, sealed.last_seq, ack.batch_seq, ack.acked_through_seq
            )));
        }
        let at = now_ms();
        let mut conn = self.store.conn()?;
        let tx = conn.transaction()?;
        let subjects = outbox::ack_through(&tx, sealed.last_seq, at)?;
        // Nothing personal outlives its safe delivery: the purge commits with the ack (one
        // transaction and one fsync per batch, not one per applicant). Subjects acknowledged
        // before a crash under older versions are left to the periodic retention sweep.
        // One audit entry lists every subject the ack purges.
        let purged =
            Subjects::purge_acknowledged(&tx, at, &Actor::System, &subjects, "hq_acknowledged")?;
        witness::accept_cosignatures(&tx, self.settings.witness.as_ref(), &ack.cosignatures, at)?;
        tx.execute(
            "DELETE FROM sync_batches WHERE batch_seq = ?1",
            params![sealed.batch_seq as i64],
        )?;
        tx.execute(
            "INSERT INTO kiosk_meta (key, value) VALUES ('sync.last_batch', ?1), ('sync.last_hash', ?2), ('sync.last_contact', ?3)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![
                sealed.batch_seq.to_string(),
                hex::encode(sealed.batch_hash),
                at.to_string()
            ],
        )?;
        audit::append(
            &tx,
            at,
            &AuditEvent {
                actor: Actor::System,
                action: "sync.ack",
                subject: None,
                detail: json!({ "batch_seq": sealed.batch_seq, "through_seq": sealed.last_seq,
                                "duplicate": ack.duplicate, "subjects": subjects.len() }),
            },
        )?;
        tx.commit()?;
        if purged > 0 {
            Store::scrub_wal(&conn)?;
        }
        Ok(purged)
    }

    /// The batch after `previous`, sealed and stored off the async runtime.
    async fn next_batch_blocking(
        &self,
        previous: Option<SealedBatch>,
    ) -> Result<Option<SealedBatch>, SyncError> {
        let this = self.clone_parts();
        tokio::task::spawn_blocking(move || this.next_batch(previous.as_ref()))
            .await
            .map_err(|e| SyncError::Corrupt(e.to_string()))?
    }

    /// Send `sealed` and return HQ's ack; a failure is recorded on the stored batch.
    async fn send(&self, sealed: &SealedBatch) -> Result<Ack, SyncError> {
        match self.transport.send(sealed.envelope.clone()).await {
            Ok(ack) => Ok(ack),
            Err(e) => {
                let conn = self.store.conn()?;
                conn.execute(
                    "UPDATE sync_batches SET attempts = attempts + 1, last_error = ?2 WHERE batch_seq = ?1",
                    params![sealed.batch_seq as i64, e.message],
                )?;
                Err(e.into())
            }
        }
    }

    /// Apply `ack` to `sealed` off the async runtime; returns the step it completes.
    async fn apply_ack_blocking(&self, sealed: SealedBatch, ack: Ack) -> Result<Step, SyncError> {
        let this = self.clone_parts();
        let purged =
            tokio::task::spawn_blocking(move || this.apply_ack(&sealed, &ack).map(|n| (sealed, n)))
                .await
                .map_err(|e| SyncError::Corrupt(e.to_string()))??;
        Ok(Step::Delivered {
            batch_seq: purged.0.batch_seq,
            through_seq: purged.0.last_seq,
            purged: purged.1,
        })
    }

    /// Send one batch (the stored one first). Errors leave everything in place.
    pub async fn step(&self) -> Result<Step, SyncError> {
        let Some(sealed) = self.next_batch_blocking(None).await? else {
            return Ok(Step::Idle);
        };
        let ack = self.send(&sealed).await?;
        self.apply_ack_blocking(sealed, ack).await
    }

    /// Deliver until the outbox is empty or an error occurs, pipelined: while batch N is at
    /// HQ, the kiosk applies the ack of batch N-1 and seals and stores batch N+1. Sends stay
    /// one at a time and in order, acks are applied in order, and every batch is stored
    /// before it is first sent, so a crash at any point resends exactly the same batches
    /// (HQ acks a resent batch as a duplicate). Calls `delivered` after each applied ack.
    async fn deliver_pipelined(&self, mut delivered: impl FnMut(&Step)) -> Result<u64, SyncError> {
        let mut batches = 0;
        let mut current = self.next_batch_blocking(None).await?;
        let mut acked: Option<(SealedBatch, Ack)> = None;
        while let Some(sealed) = current {
            let previous_ack = async {
                match acked.take() {
                    Some((s, a)) => self.apply_ack_blocking(s, a).await.map(Some),
                    None => Ok(None),
                }
            };
            let (ack, next, applied) = tokio::join!(
                self.send(&sealed),
                self.next_batch_blocking(Some(sealed.clone())),
                previous_ack
            );
            if let Some(step) = applied? {
                batches += 1;
                delivered(&step);
            }
            acked = Some((sealed, ack?));
            current = next?;
        }
        if let Some((s, a)) = acked {
            let step = self.apply_ack_blocking(s, a).await?;
            batches += 1;
            delivered(&step);
        }
        Ok(batches)
    }

    fn clone_parts(&self) -> Sender {
        Sender {
            store: self.store.clone(),
            signer: self.signer.clone(),
            transport: self.transport.clone(),
            settings: self.settings.clone(),
        }
    }

    /// Deliver until the outbox is empty or an error occurs.
    pub async fn drain(&self) -> Result<u64, SyncError> {
        self.deliver_pipelined(|_| {}).await
    }

    /// Run until cancelled: deliver, back off on failure, wake on `kick` or a poll interval.
    pub async fn run(self, cancel: CancellationToken, kick: Arc<tokio::sync::Notify>) {
        let mut delay = self.settings.retry_min;
        loop {
            let mut progressed = false;
            let outcome = self
                .deliver_pipelined(|step| {
                    if let Step::Delivered {
                        batch_seq,
                        through_seq,
                        purged,
                    } = *step
                    {
                        tracing::info!(batch_seq, through_seq, purged, "batch delivered to HQ");
                    }
                    progressed = true;
                })
                .await;
            if progressed {
                delay = self.settings.retry_min;
            }
            let wait = match outcome {
                Ok(_) => {
                    delay = self.settings.retry_min;
                    Duration::from_secs(30)
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "sync to HQ failed; will retry");
                    let jittered = jitter(delay);
                    delay = (delay * 2).min(self.settings.retry_max);
                    jittered
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = kick.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Full jitter between half and the whole delay.
fn jitter(d: Duration) -> Duration {
    let r = getrandom::u32().unwrap_or(u32::MAX / 2) as f64 / u32::MAX as f64;
    d.mul_f64(0.5 + r / 2.0)
}

fn last_delivered(conn: &rusqlite::Connection) -> Result<(u64, Hash), SyncError> {
    let get = |k: &str| crate::store::meta::get(conn, k);
    let seq = get("sync.last_batch")?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let hash = match get("sync.last_hash")? {
        Some(h) => hex::decode(h)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| SyncError::Corrupt("last batch hash".into()))?,
        None => [0u8; 32],
    };
    Ok((seq, hash))
}

/// What the staff console shows about sync.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncStatus {
    pub backlog: u64,
    pub in_flight_batch: Option<u64>,
    pub attempts: u64,
    pub last_error: Option<String>,
    pub last_contact_ms: Option<i64>,
}

pub fn status(store: &Store) -> Result<SyncStatus, SyncError> {
    let conn = store.conn()?;
    let backlog = outbox::backlog(&conn)?;
    let inflight: Option<(i64, i64, Option<String>)> = conn
        .query_row(
            "SELECT batch_seq, attempts, last_error FROM sync_batches ORDER BY batch_seq LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let last_contact_ms =
        crate::store::meta::get(&conn, "sync.last_contact")?.and_then(|s| s.parse().ok());
    Ok(SyncStatus {
        backlog,
        in_flight_batch: inflight.as_ref().map(|i| i.0 as u64),
        attempts: inflight.as_ref().map(|i| i.1 as u64).unwrap_or(0),
        last_error: inflight.and_then(|i| i.2),
        last_contact_ms,
    })
}

#[cfg(test)]
mod tests;
