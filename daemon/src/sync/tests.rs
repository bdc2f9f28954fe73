use std::sync::Mutex;

use kiosk_config::Catalog;
use records::envelope::{SealedEnvelope, SoftRecipient};
use records::signing::SoftSigner;
use records::wire::{self, Ack};

use super::*;
use crate::keys::SoftKeyVault;
use crate::privacy::Personal;
use crate::store::crypto::FieldCipherKind;

/// HQ's side of the protocol, in memory: verifies, decrypts, acks; can be told to fail.
struct MemoryHq {
    recipient: SoftRecipient,
    kiosk_key: records::signing::PublicVerifier,
    fail_next: Mutex<u32>,
    received: Mutex<Vec<Vec<u8>>>,
    batches: Mutex<Vec<Batch>>,
    digests: Mutex<Vec<records::merkle::Hash>>,
}

#[async_trait::async_trait]
impl HqTransport for MemoryHq {
    async fn send(&self, envelope: Vec<u8>) -> Result<Ack, TransportError> {
        self.received.lock().unwrap().push(envelope.clone());
        {
            let mut f = self.fail_next.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err(TransportError {
                    message: "connection refused".into(),
                    retryable: true,
                });
            }
        }
        let sealed = SealedEnvelope::parse(&envelope).unwrap();
        sealed.verify(&self.kiosk_key).unwrap();
        let batch = sealed.decrypt(&self.recipient).unwrap();
        self.digests.lock().unwrap().push(sealed.digest());
        let ack = Ack {
            schema_version: wire::SCHEMA_VERSION,
            kiosk_id: batch.kiosk_id.clone(),
            batch_seq: batch.batch_seq,
            batch_hash: sealed.digest(),
            acked_through_seq: batch.seq_range().unwrap().1,
            duplicate: false,
            cosignatures: vec![],
        };
        self.batches.lock().unwrap().push(batch);
        Ok(ack)
    }
}

/// A kiosk store holding `n` applicants (a name each, and an outbox record each) and a
/// sender to `hq` that fails its first `fail_first` sends.
fn kiosk_with_applicants(dir: &std::path::Path, n: u8, fail_first: u32) -> (Arc<MemoryHq>, Sender) {
    let store = Store::open(&dir.join("k.sqlite")).unwrap();
    let catalog = Catalog::embedded();
    let keys = SoftKeyVault::random();
    let signer = Arc::new(SoftSigner::generate_sm2("1234567812345678").unwrap());
    let recipient = SoftRecipient::generate();
    let hq = Arc::new(MemoryHq {
        recipient: SoftRecipient::from_secret_bytes(&recipient.to_secret_bytes()).unwrap(),
        kiosk_key: signer.verifier(),
        fail_next: Mutex::new(fail_first),
        received: Mutex::new(vec![]),
        batches: Mutex::new(vec![]),
        digests: Mutex::new(vec![]),
    });
    let subjects = Subjects {
        catalog: &catalog,
        keys: &keys,
        cipher: FieldCipherKind::Sm4Gcm,
    };
    {
        let mut conn = store.conn().unwrap();
        for i in 0..n {
            let tx = conn.transaction().unwrap();
            let sid = subjects
                .create(
                    &tx,
                    1,
                    &Actor::System,
                    "s",
                    [i; 32],
                    &[Personal::new("name", format!("测试{i}"))],
                )
                .unwrap();
            let record = wire::ApplicantRecord {
                subject_ref: wire::KeyedDigest {
                    algorithm: "hmac-sm3".into(),
                    key_id: "k".into(),
                    digest: wire::OpaqueBytes(vec![i; 32]),
                },
                service: "cert_application".into(),
                catalog_version: catalog.version.clone(),
                fields: vec![],
            };
            outbox::enqueue(&tx, 1, &outbox::Outgoing::applicant(record, sid)).unwrap();
            tx.commit().unwrap();
        }
    }
    let sender = Sender {
        store,
        signer,
        transport: hq.clone(),
        settings: SyncSettings {
            kiosk_id: "kiosk-t".into(),
            suite: Suite::Gm,
            recipient: recipient.public_keys(),
            batch_records: 3,
            batch_bytes: 1 << 20,
            retry_min: Duration::from_millis(1),
            retry_max: Duration::from_millis(2),
        },
    };
    (hq, sender)
}

#[tokio::test]
async fn batches_survive_failures_are_resent_identically_and_acks_purge() {
    let dir = tempfile::tempdir().unwrap();
    let (hq, sender) = kiosk_with_applicants(dir.path(), 5, 2);
    let store = sender.store.clone();
    assert!(sender.step().await.is_err());
    assert!(sender.step().await.is_err());
    assert_eq!(status(&store).unwrap().attempts, 2);
    assert_eq!(status(&store).unwrap().backlog, 5);
    assert_eq!(sender.drain().await.unwrap(), 2);
    let received = hq.received.lock().unwrap().clone();
    assert_eq!(received.len(), 4);
    assert_eq!(
        received[0], received[1],
        "a failed batch is resent byte for byte"
    );
    assert_eq!(received[1], received[2]);
    let batches = hq.batches.lock().unwrap().clone();
    assert_eq!(batches[0].seq_range(), Some((1, 3)));
    assert_eq!(batches[1].seq_range(), Some((4, 5)));
    assert_eq!(batches[1].prev_batch_hash, hq.digests.lock().unwrap()[0]);
    let st = status(&store).unwrap();
    assert_eq!(st.backlog, 0);
    assert!(st.last_contact_ms.is_some());
    let left: i64 = store
        .conn()
        .unwrap()
        .query_row("SELECT count(*) FROM personal_fields", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "acknowledged personal data is purged");
    assert_eq!(sender.step().await.unwrap(), Step::Idle);
}

/// Purged data stays in the file: a key NULLed by the purge must not survive in SQLite's free
/// space or in old WAL frames, where anyone who copies the data directory (and later learns
/// the device key) could read it back.
#[tokio::test]
async fn purged_wrapped_keys_and_values_leave_no_bytes_in_the_store_file_or_wal() {
    let dir = tempfile::tempdir().unwrap();
    let (_hq, sender) = kiosk_with_applicants(dir.path(), 5, 0);
    let secrets: Vec<Vec<u8>> = {
        let conn = sender.store.conn().unwrap();
        let mut secrets: Vec<Vec<u8>> = conn
            .prepare("SELECT wrapped_key FROM subjects")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let sealed: Vec<Vec<u8>> = conn
            .prepare("SELECT sealed FROM personal_fields")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        secrets.extend(sealed);
        secrets
    };
    assert_eq!(secrets.len(), 10);
    assert!(secrets.iter().all(|s| s.len() >= 16));
    assert_eq!(sender.drain().await.unwrap(), 2);
    let raw = |suffix: &str| {
        std::fs::read(dir.path().join(format!("k.sqlite{suffix}"))).unwrap_or_default()
    };
    for (what, bytes) in [("store file", raw("")), ("WAL", raw("-wal"))] {
        for s in &secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_slice()),
                "a purged key or sealed value is still in the {what}"
            );
        }
    }
}
