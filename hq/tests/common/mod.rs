//! Shared harness: one throwaway PostgreSQL cluster per test binary, one database per test, an
//! in-process hq-ingest with a demo PKI, and a simulated kiosk that seals batches.
#![allow(dead_code)]

use std::sync::{Arc, Mutex, OnceLock};

use hq_ingest::client::HqClient;
use hq_ingest::ingest::{Clock, Ingestor};
use hq_ingest::pg_cluster::TempCluster;
use hq_ingest::server::RunningServer;
use hq_ingest::tls::ClientKey;
use hq_ingest::{db, dev_pki, keys, metrics, server, tls};
use records::checkpoint::{self, Checkpoint};
use records::merkle::{self, Hash};
use records::wire::*;
use records::{RecipientPublicKeys, SM2_DEFAULT_DISTID, SoftSigner, Suite};
use time::OffsetDateTime;

pub fn cluster() -> &'static TempCluster {
    static CLUSTER: OnceLock<TempCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| TempCluster::start().expect("start throwaway PostgreSQL"))
}

/// A clock tests can move.
pub struct TestClock(pub Mutex<OffsetDateTime>);

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

pub struct Hq {
    pub dir: tempfile::TempDir,
    pub pki: dev_pki::DevPki,
    pub url: String,
    pub clock: Arc<TestClock>,
    pub servers: Vec<RunningServer>,
    pub recipient_public: RecipientPublicKeys,
    pub witness: records::PublicVerifier,
}

pub const WITNESS_NAME: &str = "hq-witness";

impl Hq {
    pub async fn start(test: &str, instances: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = dev_pki::generate(dir.path()).unwrap();
        let url = cluster()
            .create_database(&format!("{test}_{}", std::process::id()))
            .await
            .unwrap();
        let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        db::migrate(&mut client).await.unwrap();
        let clock = Arc::new(TestClock(Mutex::new(
            OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        )));
        let recipient = Arc::new(keys::load_soft_recipient(&pki.record_key).unwrap());
        let recipient_public = recipient.public_keys();
        let witness_key = keys::load_witness_key(&pki.witness_key).unwrap();
        let witness = witness_key.verifier();
        let witness_key = Arc::new(witness_key);
        let read = |p: &std::path::Path| std::fs::read(p).unwrap();
        let tls_config = tls::server_config(
            &read(&pki.ca_cert),
            &read(&pki.server_cert),
            &read(&pki.server_key),
        )
        .unwrap();
        let mut servers = Vec::new();
        for _ in 0..instances {
            let ingestor = Ingestor::new(
                db::pool(&url, 8).unwrap(),
                recipient.clone(),
                witness_key.clone(),
                WITNESS_NAME.into(),
                clock.clone(),
                Arc::new(metrics::Metrics::new()),
            );
            servers.push(
                server::start(
                    ingestor,
                    tls_config.clone(),
                    "127.0.0.1:0".parse().unwrap(),
                    Some("127.0.0.1:0".parse().unwrap()),
                )
                .await
                .unwrap(),
            );
        }
        Self {
            dir,
            pki,
            url,
            clock,
            servers,
            recipient_public,
            witness,
        }
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    pub fn client_with(&self, instance: usize, cert_pem: &[u8], key_pem: &[u8]) -> HqClient {
        HqClient::new(
            &self.servers[instance].addr.to_string(),
            "localhost",
            &std::fs::read(&self.pki.ca_cert).unwrap(),
            cert_pem,
            &ClientKey::Pem(key_pem.to_vec()),
        )
        .unwrap()
    }

    /// Client authenticated as the demo kiosk.
    pub fn client(&self, instance: usize) -> HqClient {
        self.client_with(
            instance,
            &std::fs::read(&self.pki.kiosk_cert).unwrap(),
            &std::fs::read(&self.pki.kiosk_key).unwrap(),
        )
    }

    /// Register a kiosk sim's key and return it.
    pub async fn register(&self, kiosk: &KioskSim) {
        db::register_kiosk(&self.db().await, &kiosk.kiosk_id, &kiosk.signer.verifier())
            .await
            .unwrap();
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db().await.query_one(sql, &[]).await.unwrap().get(0)
    }
}

/// Plays the kiosk: numbering, batch chain, audit log, sealing.
pub struct KioskSim {
    pub kiosk_id: String,
    pub signer: SoftSigner,
    pub suite: Suite,
    pub recipient: RecipientPublicKeys,
    pub batch_seq: u64,
    pub prev_hash: Hash,
    pub next_seq: u64,
    pub audit_leaves: Vec<Hash>,
    pub cosigned_size: u64,
    /// What the next batches report as the kiosk's outbox backlog.
    pub backlog: Option<u64>,
}

pub fn subject(n: u8) -> KeyedDigest {
    KeyedDigest {
        algorithm: "hmac-sm3".into(),
        key_id: "k1".into(),
        digest: vec![n; 32].into(),
    }
}

pub fn applicant(n: u8) -> Record {
    Record::Applicant(ApplicantRecord {
        subject_ref: subject(n),
        service: "certificate_application".into(),
        catalog_version: "2026-01".into(),
        fields: vec![
            MinimizedField {
                item: "mobile".into(),
                value: FieldValue::Masked(MaskedString("138****0000".into())),
            },
            MinimizedField {
                item: "id_number".into(),
                value: FieldValue::Ciphertext(vec![0xA5; 48].into()),
            },
        ],
    })
}

impl KioskSim {
    pub fn new(kiosk_id: &str, recipient: RecipientPublicKeys, suite: Suite) -> Self {
        let signer = match suite {
            Suite::Gm => SoftSigner::generate_sm2(SM2_DEFAULT_DISTID).unwrap(),
            Suite::Nist => SoftSigner::generate_p256(),
        };
        Self {
            kiosk_id: kiosk_id.into(),
            signer,
            suite,
            recipient,
            batch_seq: 0,
            prev_hash: [0; 32],
            next_seq: 1,
            audit_leaves: Vec::new(),
            cosigned_size: 0,
            backlog: None,
        }
    }

    /// Build the next batch (numbering only; `seal_next` links the chain).
    fn next_batch(&mut self, records: Vec<Record>) -> Batch {
        self.batch_seq += 1;
        let records = records
            .into_iter()
            .map(|record| {
                let seq = self.next_seq;
                self.next_seq += 1;
                let mut record_id = [0u8; 16];
                record_id[..8].copy_from_slice(&seq.to_be_bytes());
                record_id[8..].copy_from_slice(&self.batch_seq.to_be_bytes());
                SequencedRecord {
                    seq,
                    record_id,
                    record,
                }
            })
            .collect();
        Batch {
            schema_version: SCHEMA_VERSION,
            kiosk_id: self.kiosk_id.clone(),
            batch_seq: self.batch_seq,
            prev_batch_hash: self.prev_hash,
            created_at: 1_800_000_000,
            records,
            backlog: self.backlog,
        }
    }

    /// Build, seal and chain the next batch (as if persisted in the outbox).
    pub fn seal_next(&mut self, records: Vec<Record>) -> Vec<u8> {
        let batch = self.next_batch(records);
        let (bytes, digest) = records::envelope::seal_batch_with_digest(
            &batch,
            self.suite,
            &self.signer,
            &self.recipient,
        )
        .unwrap();
        self.prev_hash = digest;
        bytes
    }

    /// Append `n` audit entries and return a checkpoint record proving consistency with
    /// `from_size` over the given leaves.
    pub fn checkpoint_over(&self, leaves: &[Hash], from_size: u64) -> Record {
        let cp = Checkpoint {
            origin: format!("kioskd/demo-ca/{}", self.kiosk_id),
            size: leaves.len() as u64,
            root: merkle::root(leaves),
        };
        Record::AuditCheckpoint(AuditCheckpoint {
            signed_note: checkpoint::sign_checkpoint(&cp, &self.kiosk_id, &self.signer).unwrap(),
            previous_size: from_size,
            consistency_proof: merkle::consistency_proof(leaves, from_size).unwrap(),
        })
    }

    pub fn audit(&mut self, n: usize) -> Record {
        for _ in 0..n {
            let i = self.audit_leaves.len() as u64;
            self.audit_leaves
                .push(merkle::leaf_hash(format!("audit entry {i}").as_bytes()));
        }
        let rec = self.checkpoint_over(&self.audit_leaves.clone(), self.cosigned_size);
        self.cosigned_size = self.audit_leaves.len() as u64;
        rec
    }
}
pub mod ca_harness;
