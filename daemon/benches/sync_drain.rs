//! `cargo bench -p kioskd --bench sync_drain`: end-to-end drain of a kiosk's backlog to HQ
//! against PostgreSQL COPY of the same rows, in the same run (issue #6, goal ≥ 0.5).
//!
//! Kiosk side: a real kiosk store (SQLite WAL, `synchronous=FULL`) filled with synthetic
//! applicants through the real minimizer (`kioskd::sync::synthetic::fill`, untimed), then the
//! real `kioskd::sync::Sender` with the daemon's default batch limits (`[hq]` defaults) over
//! the real mTLS transport (`HqClientTransport`). HQ side: `hq_ingest::local::LocalHq` (a
//! throwaway PostgreSQL cluster, demo PKI, the mTLS ingest service on loopback). The clock
//! runs from the first batch until the sender finds nothing left to send, i.e. HQ acked every
//! record and the kiosk applied every ack (seal, send, verify, decrypt, commit, ack, purge).
//! Baseline: the rows HQ stored are read back (untimed) and written with binary COPY into an
//! identical, freshly migrated table of the same cluster. `KIOSKD_BENCH_RECORDS=N` scales the
//! backlog (default 100,000). Both envelope suites are measured, each against its own HQ:
//! GM (SM2/SM3 signature, SM2-wrapped SM4-GCM, the default) and NIST (ECDSA P-256, HPKE
//! P-256/AES-128-GCM); `KIOSKD_BENCH_SUITES=gm` picks one. The records themselves are the
//! same in both (their personal fields sealed to HQ with the suite's cipher at enqueue).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hq_ingest::dev_pki::DEMO_KIOSK_ID;
use hq_ingest::local::LocalHq;
use kiosk_config::Catalog;
use kiosk_config::HqSection;
use kioskd::store::Store;
use kioskd::sync::hq_client::HqClientTransport;
use kioskd::sync::synthetic::{self, HqFieldSealer};
use kioskd::sync::{Sender, SyncSettings};
use records::client::tls::ClientKey;
use records::envelope::Suite;
use records::signing::SoftSigner;
use tokio_postgres::NoTls;

const GOAL: f64 = 0.5;
const RECORD_COLUMNS: &str =
    "kiosk_id, seq, record_id, kind, subject_ref, body, batch_seq, received_at";

fn records_wanted() -> u64 {
    std::env::var("KIOSKD_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(100_000)
}

async fn connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, conn) = config.connect(NoTls).await.expect("connect to PostgreSQL");
    tokio::spawn(conn);
    client
}

fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).expect("read demo PKI file")
}

/// One row of HQ's `records` table.
type RecordRow = (
    String,
    i64,
    Vec<u8>,
    String,
    Option<Vec<u8>>,
    Vec<u8>,
    i64,
    time::OffsetDateTime,
);

/// Records per batch: the daemon's default (`[hq] batch_records`) unless
/// `KIOSKD_BENCH_BATCH_RECORDS` says otherwise.
fn batch_records(defaults: &HqSection) -> usize {
    std::env::var("KIOSKD_BENCH_BATCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(defaults.batch_records)
}

/// The suites to measure: `KIOSKD_BENCH_SUITES=gm,nist` (default both).
fn suites_wanted() -> Vec<Suite> {
    let wanted = std::env::var("KIOSKD_BENCH_SUITES").unwrap_or_else(|_| "gm,nist".into());
    wanted
        .split(',')
        .map(|name| match name.trim() {
            "gm" => Suite::Gm,
            "nist" => Suite::Nist,
            other => panic!("KIOSKD_BENCH_SUITES: unknown suite {other:?} (gm, nist)"),
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total = records_wanted();
    for suite in suites_wanted() {
        drain_against_copy(suite, total).await;
    }
}

/// One measurement with a fresh HQ (PostgreSQL cluster) and a fresh kiosk store.
async fn drain_against_copy(suite: Suite, total: u64) {
    println!("--- envelope suite {suite:?} ---");
    let dir = tempfile::tempdir().expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        // The cluster runs as `postgres` when the bench runs as root.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let hq = LocalHq::start(&dir.path().join("pki"))
        .await
        .expect("local HQ (PostgreSQL initdb/pg_ctl, demo PKI, mTLS server)");
    let signer = Arc::new(match suite {
        Suite::Gm => SoftSigner::generate_sm2("1234567812345678").expect("device key"),
        Suite::Nist => SoftSigner::generate_p256(),
    });
    let verifier = signer.verifier();
    hq.register_kiosk(DEMO_KIOSK_ID, &verifier)
        .await
        .expect("register kiosk");

    // --- kiosk backlog (untimed) ------------------------------------------------------------
    let defaults = HqSection::default();
    let batch_records = batch_records(&defaults);
    let store = Store::open(&dir.path().join("kiosk.sqlite")).expect("kiosk store");
    let filling = Instant::now();
    {
        let store = store.clone();
        let sealer = HqFieldSealer {
            suite,
            recipient: hq.recipient_public.clone(),
        };
        tokio::task::spawn_blocking(move || {
            synthetic::fill(
                &store,
                &Catalog::embedded(),
                &sealer,
                "bench",
                1,
                total,
                1000,
            )
        })
        .await
        .expect("fill task")
        .expect("fill the outbox");
    }
    let backlog_bytes: i64 = store
        .conn()
        .expect("store")
        .query_row("SELECT sum(length(body)) FROM outbox", [], |r| r.get(0))
        .expect("backlog size");
    println!(
        "backlog: {total} synthetic minimized records ({:.0} bytes each on average) written in {:.1} s (untimed)",
        backlog_bytes as f64 / total as f64,
        filling.elapsed().as_secs_f64()
    );

    // --- drain through the real sender (timed) -------------------------------------------------
    let transport = HqClientTransport::new(
        &format!("https://localhost:{}", hq.server.addr.port()),
        &read(&hq.pki.ca_cert),
        &read(&hq.pki.kiosk_cert),
        &ClientKey::Pem(read(&hq.pki.kiosk_key)),
    )
    .expect("mTLS transport");
    let sender = Sender {
        store: store.clone(),
        signer,
        transport: Arc::new(transport),
        settings: SyncSettings {
            kiosk_id: DEMO_KIOSK_ID.into(),
            suite,
            recipient: hq.recipient_public.clone(),
            batch_records,
            batch_bytes: defaults.batch_bytes,
            retry_min: Duration::from_millis(defaults.retry_min_ms),
            retry_max: Duration::from_millis(defaults.retry_max_ms),
            witness: None,
        },
    };
    let started = Instant::now();
    let batches = sender.drain().await.expect("drain to HQ");
    let drain_secs = started.elapsed().as_secs_f64();

    let hq_config: tokio_postgres::Config = hq.database_url.parse().expect("database url");
    let hq_db = connect(&hq_config).await;
    let stored: i64 = hq_db
        .query_one("SELECT count(*) FROM records", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored as u64, total, "HQ holds every record exactly once");

    // --- COPY baseline (timed: the COPY only) --------------------------------------------------
    let rows: Vec<RecordRow> = hq_db
        .query(
            &format!("SELECT {RECORD_COLUMNS} FROM records ORDER BY seq"),
            &[],
        )
        .await
        .expect("read HQ's rows")
        .into_iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
            )
        })
        .collect();
    hq_db
        .batch_execute("CREATE DATABASE copy_baseline")
        .await
        .expect("create baseline database");
    let mut baseline_config = hq_config.clone();
    baseline_config.dbname("copy_baseline");
    let mut baseline = connect(&baseline_config).await;
    hq_ingest::db::migrate(&mut baseline)
        .await
        .expect("migrate baseline");
    hq_ingest::db::register_kiosk(&baseline, DEMO_KIOSK_ID, &verifier)
        .await
        .expect("register kiosk in baseline");
    // The rows' column references are gathered before the clock starts.
    let columns: Vec<hq_ingest::db::RecordColumns<'_>> = rows
        .iter()
        .map(
            |(kiosk, seq, id, kind, subject, body, batch_seq, at)| -> hq_ingest::db::RecordColumns<'_> {
                [kiosk, seq, id, kind, subject, body, batch_seq, at]
            },
        )
        .collect();
    let started = Instant::now();
    let sink = baseline
        .copy_in(hq_ingest::db::COPY_RECORDS)
        .await
        .expect("copy");
    let copied = hq_ingest::db::copy_records(sink, &columns)
        .await
        .expect("copy");
    let copy_secs = started.elapsed().as_secs_f64();
    assert_eq!(copied, total, "COPY wrote every row");

    let drain_rate = total as f64 / drain_secs;
    let copy_rate = total as f64 / copy_secs;
    let ratio = drain_rate / copy_rate;
    println!(
        "records: {total}; sender batches: {batches} (batch limits {} records / {} bytes, suite {suite:?})",
        batch_records, defaults.batch_bytes
    );
    println!(
        "kiosk -> hq-ingest end-to-end (seal, mTLS, verify, decrypt, commit, ack, purge): {drain_rate:>8.0} records/s ({drain_secs:.2} s)"
    );
    println!(
        "PostgreSQL binary COPY of the same rows:                                        {copy_rate:>8.0} records/s ({copy_secs:.2} s)"
    );
    println!(
        "ratio end-to-end / COPY: {ratio:.3} (goal >= {GOAL}: {})",
        if ratio >= GOAL {
            "goal met"
        } else {
            "GOAL MISSED"
        }
    );
    hq.shutdown().await;
}
