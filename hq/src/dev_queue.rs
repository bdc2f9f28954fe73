//! A durable file-backed queue of sealed envelopes playing the kiosk's outbox in tests and
//! demos: `batch-<seq:08>.cbor` files written atomically, progress in `acked` (write, fsync,
//! rename). [`drain`] sends in order, resends after transport failures with exponential
//! backoff and jitter, and can be killed at any point: a resent batch is acked as a duplicate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::{ClientError, HqClient};

/// Queue failure.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// File I/O.
    #[error("queue {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// HQ refused a batch for good.
    #[error("batch {batch}: {source}")]
    Rejected {
        /// Batch.
        batch: u64,
        /// Cause.
        source: ClientError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Path of a batch file.
pub fn batch_path(dir: &Path, batch_seq: u64) -> PathBuf {
    dir.join(format!("batch-{batch_seq:08}.cbor"))
}

/// Write `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), QueueError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(parent) = path.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Last batch HQ acknowledged (0 if none).
pub fn acked(dir: &Path) -> Result<u64, QueueError> {
    let path = dir.join("acked");
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().parse().unwrap_or(0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Send every unacknowledged batch in order; returns the last acknowledged batch.
pub async fn drain(dir: &Path, client: &HqClient) -> Result<u64, QueueError> {
    let mut next = acked(dir)? + 1;
    let mut attempt = 0u32;
    loop {
        let path = batch_path(dir, next);
        let envelope = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(next - 1),
            Err(e) => return Err(io(&path)(e)),
        };
        match client.send_envelope(envelope).await {
            Ok(ack) if ack.batch_seq == next => {
                write_atomic(&dir.join("acked"), next.to_string().as_bytes())?;
                next += 1;
                attempt = 0;
            }
            Ok(_) => {
                return Err(QueueError::Rejected {
                    batch: next,
                    source: ClientError::BadResponse {
                        status: 200,
                        reason: "ack for another batch".into(),
                    },
                });
            }
            Err(e) if e.is_retryable() => {
                attempt = attempt.saturating_add(1);
                let base = 50u64 << attempt.min(5);
                let mut jitter = [0u8; 1];
                let _ = getrandom::fill(&mut jitter);
                tracing::warn!(batch = next, error = %e, "send failed; retrying");
                tokio::time::sleep(Duration::from_millis(base + u64::from(jitter[0]) % base)).await;
            }
            Err(e) => {
                return Err(QueueError::Rejected {
                    batch: next,
                    source: e,
                });
            }
        }
    }
}
