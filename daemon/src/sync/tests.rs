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
    /// HQ's witness key (or a forger's): cosigns the checkpoints in each batch, after
    /// checking each one's consistency proof from the last one witnessed.
    witness: Mutex<Option<SoftSigner>>,
    witnessed: Mutex<(u64, records::merkle::Hash)>,
}

impl MemoryHq {
    fn cosign(&self, batch: &Batch) -> Vec<wire::WitnessCosignature> {
        let witness = self.witness.lock().unwrap();
        let Some(witness) = witness.as_ref() else {
            return vec![];
        };
        let mut out = vec![];
        for r in &batch.records {
            let wire::Record::AuditCheckpoint(cp) = &r.record else {
                continue;
            };
            let note = records::checkpoint::SignedNote::parse(&cp.signed_note).unwrap();
            let mut witnessed = self.witnessed.lock().unwrap();
            assert_eq!(
                cp.previous_size, witnessed.0,
                "the proof starts at the last one sent"
            );
            records::merkle::verify_consistency(
                witnessed.0,
                note.checkpoint.size,
                &witnessed.1,
                &note.checkpoint.root,
                &cp.consistency_proof,
            )
            .unwrap();
            *witnessed = (note.checkpoint.size, note.checkpoint.root);
            out.push(wire::WitnessCosignature {
                tree_size: note.checkpoint.size,
                root_hash: note.checkpoint.root,
                signature_line: records::checkpoint::cosign(
                    &note.checkpoint,
                    "hq-witness",
                    witness,
                )
                .unwrap(),
            });
        }
        out
    }
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
            cosignatures: self.cosign(&batch),
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
        witness: Mutex::new(None),
        witnessed: Mutex::new((0, records::merkle::empty_root())),
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
            witness: None,
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

/// HQ's cosignatures are checked against HQ's pinned witness key: a forged one (another
/// key) is not kept, is audited and raises the alert; the next good one clears it. The
/// checkpoints reach HQ chained, each with its consistency proof from the previous one.
#[tokio::test]
async fn a_forged_witness_cosignature_is_refused_audited_and_raised() {
    let dir = tempfile::tempdir().unwrap();
    let (hq, mut sender) = kiosk_with_applicants(dir.path(), 2, 0);
    let honest = SoftSigner::generate_sm2("1234567812345678").unwrap();
    let forger = SoftSigner::generate_sm2("1234567812345678").unwrap();
    sender.settings.witness = Some(Witness {
        name: "hq-witness".into(),
        key: honest.verifier(),
    });
    let store = sender.store.clone();
    let checkpoint = |at: i64| {
        let mut conn = store.conn().unwrap();
        checkpoint_for_hq(
            &mut conn,
            at,
            "kioskd/kiosk-t",
            "kiosk-t",
            sender.signer.as_ref(),
        )
        .unwrap()
        .expect("the log grew")
    };
    let cosigned = |size: u64| -> Option<String> {
        store
            .conn()
            .unwrap()
            .query_row(
                "SELECT cosignature FROM audit_checkpoints WHERE size = ?1",
                [size as i64],
                |r| r.get(0),
            )
            .unwrap()
    };
    let size_of = |note: &str| {
        records::checkpoint::SignedNote::parse(note)
            .unwrap()
            .checkpoint
            .size
    };

    *hq.witness.lock().unwrap() = Some(
        SoftSigner::from_secret_bytes(
            records::signing::SignatureAlgorithm::Sm2Sm3,
            &forger.secret_bytes(),
            Some("1234567812345678"),
        )
        .unwrap(),
    );
    let first = size_of(&checkpoint(10));
    sender.drain().await.unwrap();
    assert_eq!(cosigned(first), None, "a forged cosignature is not kept");
    let status = witness_status(&store).unwrap();
    assert_eq!(status.state, "invalid");
    assert!(
        status
            .alert
            .as_deref()
            .unwrap_or("")
            .contains("does not verify"),
        "{status:?}"
    );
    let refused: i64 = store
        .conn()
        .unwrap()
        .query_row(
            "SELECT count(*) FROM audit_log WHERE action = 'audit.cosignature_refused'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(refused, 1);

    // The log grows (the refusal itself is an entry); HQ's real witness cosigns the next one.
    *hq.witness.lock().unwrap() = Some(
        SoftSigner::from_secret_bytes(
            records::signing::SignatureAlgorithm::Sm2Sm3,
            &honest.secret_bytes(),
            Some("1234567812345678"),
        )
        .unwrap(),
    );
    let second = size_of(&checkpoint(20));
    assert!(second > first);
    sender.drain().await.unwrap();
    assert!(cosigned(second).is_some(), "a good cosignature is kept");
    let status = witness_status(&store).unwrap();
    assert_eq!(status.state, "verified");
    assert_eq!(status.alert, None);
    assert_eq!(status.cosigned_size, Some(second));
    assert_eq!(status.sent_size, Some(second));
}
