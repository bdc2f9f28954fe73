//! Benchmark: drain a backlog of 100,000 minimized records from a simulated kiosk through
//! hq-ingest (seal → mTLS on loopback → verify → decrypt → PostgreSQL commit → ack), against
//! the same rows written straight into PostgreSQL with binary COPY, in the same run and on the
//! same throwaway cluster. Prints records/s for both and the ratio (goal ≥ 0.5).
//!
//! Run: `cargo bench -p hq-ingest --bench ingest` (env `BENCH_RECORDS`, `BENCH_BATCH` override).

use std::sync::Arc;
use std::time::Instant;

use hq_ingest::client::HqClient;
use hq_ingest::dev_pki::{self, DEMO_KIOSK_ID};
use hq_ingest::ingest::{Ingestor, SystemClock};
use hq_ingest::pg_cluster::TempCluster;
use hq_ingest::tls::ClientKey;
use hq_ingest::{db, keys, metrics, server, tls};
use records::wire::*;
use records::{SM2_DEFAULT_DISTID, SoftSigner, Suite};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn record(i: u64) -> Record {
    let digest = records::merkle::sm3_hash(&i.to_be_bytes()).to_vec();
    Record::Applicant(ApplicantRecord {
        subject_ref: KeyedDigest {
            algorithm: "hmac-sm3".into(),
            key_id: "k1".into(),
            digest: digest.into(),
        },
        service: "certificate_application".into(),
        catalog_version: "2026-01".into(),
        fields: vec![
            MinimizedField {
                item: "mobile".into(),
                value: FieldValue::Masked(MaskedString("138****0000".into())),
            },
            MinimizedField {
                item: "id_number".into(),
                value: FieldValue::Masked(MaskedString("1****************X".into())),
            },
            MinimizedField {
                item: "name".into(),
                value: FieldValue::Ciphertext(vec![0x5a; 48].into()),
            },
        ],
    })
}

fn sequenced(i: u64) -> SequencedRecord {
    let mut record_id = [0u8; 16];
    record_id[8..].copy_from_slice(&i.to_be_bytes());
    SequencedRecord {
        seq: i,
        record_id,
        record: record(i),
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let total = env_usize("BENCH_RECORDS", 100_000) as u64;
    let batch_size = env_usize("BENCH_BATCH", 10_000) as u64;
    let cluster = TempCluster::start().expect("throwaway PostgreSQL (initdb/pg_ctl)");
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki::generate(dir.path()).expect("dev pki");
    let signer = Arc::new(SoftSigner::generate_sm2(SM2_DEFAULT_DISTID).expect("key"));

    // --- hq-ingest path -------------------------------------------------------------------
    let url = cluster.create_database("bench_ingest").await.expect("db");
    db::migrate(&mut connect(&url).await)
        .await
        .expect("migrate");
    db::register_kiosk(&connect(&url).await, DEMO_KIOSK_ID, &signer.verifier())
        .await
        .expect("register");
    let recipient = Arc::new(keys::load_soft_recipient(&pki.record_key).expect("record key"));
    let recipient_public = recipient.public_keys();
    let read = |p: &std::path::Path| std::fs::read(p).expect("read pki file");
    let ingestor = Ingestor::new(
        db::pool(&url, 8).expect("pool"),
        recipient,
        Arc::new(keys::load_witness_key(&pki.witness_key).expect("witness")),
        "hq-witness".into(),
        Arc::new(SystemClock),
        Arc::new(metrics::Metrics::new()),
    );
    let tls_config = tls::server_config(
        &read(&pki.ca_cert),
        &read(&pki.server_cert),
        &read(&pki.server_key),
    )
    .expect("tls");
    let running = server::start(ingestor, tls_config, "127.0.0.1:0".parse().unwrap(), None)
        .await
        .expect("server");
    let client = HqClient::new(
        &running.addr.to_string(),
        "localhost",
        &read(&pki.ca_cert),
        &read(&pki.kiosk_cert),
        &ClientKey::Pem(read(&pki.kiosk_key)),
    )
    .expect("client");

    let started = Instant::now();
    // The kiosk seals the next batch while the previous one is in flight.
    let (tx, rx) = tokio::sync::mpsc::channel::<(u64, Vec<u8>)>(2);
    let sealer = {
        let signer = signer.clone();
        tokio::task::spawn_blocking(move || {
            let mut prev_hash = [0u8; 32];
            let mut next = 1u64;
            let mut batch_seq = 0u64;
            while next <= total {
                batch_seq += 1;
                let end = (next + batch_size - 1).min(total);
                let batch = Batch {
                    schema_version: SCHEMA_VERSION,
                    kiosk_id: DEMO_KIOSK_ID.into(),
                    batch_seq,
                    prev_batch_hash: prev_hash,
                    created_at: 0,
                    records: (next..=end).map(sequenced).collect(),
                    backlog: None,
                };
                let (env, digest) = records::envelope::seal_batch_with_digest(
                    &batch,
                    Suite::Gm,
                    signer.as_ref(),
                    &recipient_public,
                )
                .expect("seal");
                prev_hash = digest;
                if tx.blocking_send((batch_seq, env)).is_err() {
                    return;
                }
                next = end + 1;
            }
        })
    };
    // Two batches in flight: HQ decrypts batch N+1 while batch N commits.
    let mut acked = 0;
    client
        .send_windowed(rx, 2, |ack| acked = ack.acked_through_seq)
        .await
        .expect("drain accepted");
    sealer.await.expect("sealer");
    let ingest_secs = started.elapsed().as_secs_f64();
    assert_eq!(acked, total, "every record acknowledged");
    let stored: i64 = connect(&url)
        .await
        .query_one("SELECT count(*) FROM records", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored as u64, total, "every record stored once");
    running.shutdown().await;

    // --- COPY baseline --------------------------------------------------------------------
    let url = cluster.create_database("bench_copy").await.expect("db");
    db::migrate(&mut connect(&url).await)
        .await
        .expect("migrate");
    let baseline = connect(&url).await;
    db::register_kiosk(&baseline, DEMO_KIOSK_ID, &signer.verifier())
        .await
        .expect("register");
    type CopyRow = (i64, Vec<u8>, Vec<u8>, Vec<u8>);
    let rows: Vec<CopyRow> = (1..=total)
        .map(|i| {
            let r = sequenced(i);
            let subject = r
                .record
                .subject_ref()
                .map(|s| s.digest.0.clone())
                .unwrap_or_default();
            (
                i as i64,
                r.record_id.to_vec(),
                subject,
                records::codec::to_vec(&r.record).expect("encode"),
            )
        })
        .collect();
    let now = time::OffsetDateTime::now_utc();
    // The rows' column references are gathered before the clock starts.
    let columns: Vec<db::RecordColumns<'_>> = rows
        .iter()
        .map(|(seq, id, subject, body)| -> db::RecordColumns<'_> {
            [
                &DEMO_KIOSK_ID,
                seq,
                id,
                &"applicant",
                subject,
                body,
                &1i64,
                &now,
            ]
        })
        .collect();
    let started = Instant::now();
    let sink = baseline.copy_in(db::COPY_RECORDS).await.expect("copy");
    db::copy_records(sink, &columns).await.expect("copy");
    let copy_secs = started.elapsed().as_secs_f64();

    let ingest_rate = total as f64 / ingest_secs;
    let copy_rate = total as f64 / copy_secs;
    println!("records: {total}, batch size: {batch_size}");
    println!(
        "hq-ingest end-to-end (seal + mTLS + verify + decrypt + commit + ack): {ingest_rate:.0} records/s ({ingest_secs:.2} s)"
    );
    println!(
        "PostgreSQL COPY baseline:                                       {copy_rate:.0} records/s ({copy_secs:.2} s)"
    );
    println!(
        "ratio hq-ingest / COPY: {:.2} (goal >= 0.5)",
        ingest_rate / copy_rate
    );
}
