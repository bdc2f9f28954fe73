//! Crash safety with the real daemon and the real HQ: kioskd is killed with
//! SIGKILL while it sends, and hq-ingest while it commits, at random points,
//! for at least 20 rounds; at the end HQ holds every record exactly once and
//! nothing the catalog forbids left the kiosk.

mod common;
mod sync_support;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Kioskd;
use hq_ingest::pg_cluster::TempCluster;
use sync_support::*;

const KIOSK: &str = "kiosk-sync-crash";
const FIRST_FILL: u64 = 300;
const PER_ROUND: u64 = 100;
const RECORDS: u64 = FIRST_FILL + PER_ROUND * ROUNDS as u64;
const ROUNDS: u32 = 20;

/// A small xorshift generator; the seed is printed so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn kill_nine_kiosk_and_hq_at_random_points_loses_and_duplicates_nothing() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash loop seed {seed} (replay with CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let bin = hq_ingest();
    let dir = data_dir();
    let pki = hq_ingest::dev_pki::generate(&dir.path().join("pki")).unwrap();
    let (cert, key) = pki.kiosk_files(KIOSK).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "[kiosk]\nid = \"{KIOSK}\"\n\n[hq]\nmode = \"remote\"\nurl = \"https://127.0.0.1:{port}\"\nca_cert = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\nrecord_key = \"{}\"\nbatch_records = 20\nretry_min_ms = 50\nretry_max_ms = 200\n",
        pki.ca_cert.display(),
        cert.display(),
        key.display(),
        pki.record_public.display()
    );
    let kiosk_dir = dir.path().join("kiosk");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cluster = TempCluster::start().unwrap();
    let db = rt.block_on(cluster.create_database("hq")).unwrap();
    let mut hq = serve(&bin, &db, &pki, port);

    // First start registers the device key at HQ; the records wait in the outbox.
    let kiosk = Kioskd::start(&kiosk_dir, &config);
    let key_file = kiosk_dir.join("kiosk-device-key.json");
    wait_for(
        "the device key to be published",
        Duration::from_secs(30),
        || key_file.exists(),
    );
    let registered = Command::new(&bin)
        .args(["register-kiosk", "--database-url", &db, "--kiosk-id", KIOSK])
        .arg("--public-key")
        .arg(kiosk_dir.join("kiosk-device-key.json"))
        .output()
        .unwrap();
    assert!(
        registered.status.success(),
        "register-kiosk: {}",
        String::from_utf8_lossy(&registered.stderr)
    );
    fill(&kiosk_dir, FIRST_FILL, 0, Some(&pki.record_public));
    drop(kiosk); // SIGKILL

    let mut hq_kills = 0;
    let mut progress = vec![0usize];
    for round in 0..ROUNDS {
        // New applicants keep arriving between crashes.
        let first = FIRST_FILL + PER_ROUND * round as u64;
        fill(&kiosk_dir, PER_ROUND, first, Some(&pki.record_public));
        let before = *progress.last().unwrap();
        let kiosk = Kioskd::start(&kiosk_dir, &config);
        // Wait until records are flowing, then kill -9 at a random point of the stream.
        wait_for("records to flow to HQ", Duration::from_secs(60), || {
            hq_records(&db, KIOSK).len() > before
        });
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        if round % 2 == 1 {
            // HQ dies mid-commit at a random point too, and comes back.
            std::thread::sleep(Duration::from_millis(rng.below(100)));
            hq.kill();
            hq_kills += 1;
            hq = serve(&bin, &db, &pki, port);
        }
        drop(kiosk); // SIGKILL
        progress.push(hq_records(&db, KIOSK).len());
    }
    eprintln!(
        "{ROUNDS} kiosk kills, {hq_kills} HQ kills; records at HQ after each round: {progress:?}"
    );
    // The kills landed while records were flowing, not before or after.
    let advancing = progress.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(
        advancing >= (ROUNDS / 2) as usize,
        "records flowed in too few of the crashed rounds: {progress:?}"
    );

    let kiosk = Kioskd::start(&kiosk_dir, &config);
    wait_for("the backlog to drain", Duration::from_secs(120), || {
        backlog(&kiosk) == 0
    });
    let rows = hq_records(&db, KIOSK);
    let applicants = assert_exactly_once(&rows, RECORDS as usize);
    assert_only_allowed(&applicants, &pki.record_key);
    assert_eq!(
        kiosk_personal_fields(&kiosk.data_dir),
        0,
        "the kiosk purged what HQ holds"
    );
    kiosk.stop();
    hq.kill();
}
