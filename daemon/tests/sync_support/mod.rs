//! Shared by the `sync_*` tests: the hq-ingest binary (built on demand next to kioskd),
//! kioskctl, HQ's PostgreSQL rows and what the kiosk store still holds.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use records::wire::{FieldValue, Record};

pub const KIOSKCTL: &str = env!("CARGO_BIN_EXE_kioskctl");

/// The hq-ingest binary beside kioskd (`target/<profile>/hq-ingest`), built once if missing
/// (cargo does not build other packages' binaries for this package's tests).
pub fn hq_ingest() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let kioskd = PathBuf::from(super::common::KIOSKD);
        let profile_dir = kioskd.parent().expect("target/<profile>").to_path_buf();
        let bin = profile_dir.join("hq-ingest");
        if !bin.is_file() {
            let target_dir = profile_dir.parent().expect("target dir");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "hq-ingest", "--bin", "hq-ingest"])
                .env("CARGO_TARGET_DIR", target_dir)
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building hq-ingest failed");
        }
        bin
    })
    .clone()
}

/// A temp dir the `postgres` user can traverse (the local HQ's cluster lives inside it when
/// the tests run as root).
pub fn data_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `kioskctl outbox fill`.
pub fn fill(data_dir: &Path, count: u64, first: u64, record_key: Option<&Path>) {
    let mut cmd = Command::new(KIOSKCTL);
    cmd.args(["outbox", "fill", "--data-dir"])
        .arg(data_dir)
        .args(["--count", &count.to_string(), "--first", &first.to_string()])
        .args(["--kiosk-id", "sync-test"]);
    if let Some(k) = record_key {
        cmd.arg("--record-key").arg(k);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "kioskctl outbox fill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Wait for `cond` with a deadline.
pub fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The local HQ's database URL for a kiosk data dir.
pub fn local_hq_db(data_dir: &Path) -> String {
    format!(
        "host={} user=postgres dbname=hq",
        data_dir.join("hq-local/pg").display()
    )
}

/// `(seq, kind, body)` of every record HQ stored for `kiosk`, in seq order.
pub fn hq_records(database_url: &str, kiosk: &str) -> Vec<(i64, String, Vec<u8>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
            .await
            .expect("HQ database reachable");
        tokio::spawn(conn);
        client
            .query(
                "SELECT seq, kind, body FROM records WHERE kiosk_id = $1 ORDER BY seq",
                &[&kiosk],
            )
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    })
}

/// HQ holds every record exactly once: seqs 1..=n contiguous, `applicants` applicant records
/// with distinct subjects; returns the applicant records.
pub fn assert_exactly_once(
    rows: &[(i64, String, Vec<u8>)],
    applicants: usize,
) -> Vec<records::wire::ApplicantRecord> {
    for (i, (seq, _, _)) in rows.iter().enumerate() {
        assert_eq!(*seq, i as i64 + 1, "HQ's record seqs are contiguous");
    }
    let mut out = Vec::new();
    let mut subjects = std::collections::BTreeSet::new();
    for (_, kind, body) in rows {
        if kind == "applicant" {
            let record: Record = records::codec::from_slice(body).expect("HQ row decodes");
            let Record::Applicant(a) = record else {
                panic!("kind applicant is not an applicant record")
            };
            assert!(
                subjects.insert(a.subject_ref.digest.0.clone()),
                "duplicate applicant"
            );
            out.push(a);
        }
    }
    assert_eq!(
        out.len(),
        applicants,
        "every applicant arrived exactly once"
    );
    out
}

/// Only catalog-allowed items reached HQ, each in the form the catalog's HQ rule gives it:
/// sealed fields open with HQ's record key, keyed digests are 32 bytes, masked and plain
/// items as declared; an item the catalog drops for HQ (face image, fingerprint, nation, ...)
/// or does not declare never appears.
pub fn assert_only_allowed(applicants: &[records::wire::ApplicantRecord], hq_record_key: &Path) {
    use kiosk_config::{Destination, Transfer};
    let catalog = kiosk_config::Catalog::embedded();
    let secret = std::fs::read_to_string(hq_record_key).unwrap();
    let recipient =
        records::SoftRecipient::from_secret_bytes(&hex::decode(secret.trim()).unwrap()).unwrap();
    for a in applicants {
        assert!(
            a.fields.iter().any(|f| f.item == "id_number"),
            "the record names its subject"
        );
        for f in &a.fields {
            assert!(
                catalog.items.contains_key(&f.item),
                "{} is not declared in the catalog",
                f.item
            );
            match (catalog.transfer(&f.item, Destination::Hq), &f.value) {
                (Transfer::KeyedDigest, FieldValue::KeyedDigest(d)) => {
                    assert_eq!(d.digest.0.len(), 32)
                }
                (Transfer::Encrypt, FieldValue::Ciphertext(c)) => {
                    let clear =
                        records::open_field(&recipient, &f.item, &c.0).expect("HQ opens the field");
                    assert!(!clear.is_empty());
                }
                (Transfer::Mask, FieldValue::Masked(_))
                | (Transfer::Plain, FieldValue::Plain(_)) => {}
                (rule, value) => panic!("{} reached HQ as {value:?} (catalog: {rule:?})", f.item),
            }
        }
    }
}

/// The item names of each record, sorted.
pub fn items_of(a: &records::wire::ApplicantRecord) -> Vec<String> {
    let mut items: Vec<String> = a.fields.iter().map(|f| f.item.clone()).collect();
    items.sort();
    items
}

/// Rows of personal data the kiosk store still holds.
pub fn kiosk_personal_fields(data_dir: &Path) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("kiosk.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row("SELECT count(*) FROM personal_fields", [], |r| r.get(0))
        .unwrap()
}

/// `sync_backlog` from `/v1/health`.
pub fn backlog(k: &super::common::Kioskd) -> u64 {
    let (status, body) = k.call("GET", "/v1/health", None, None);
    assert_eq!(status, 200);
    body["sync_backlog"].as_u64().expect("sync_backlog")
}

/// `hq-ingest serve` on `port` with the demo PKI; returns once it listens.
pub fn serve(bin: &Path, db: &str, pki: &hq_ingest::dev_pki::DevPki, port: u16) -> HqServe {
    serve_with(bin, db, pki, port, &[])
}

/// [`serve`] with extra arguments (e.g. `--ca-cert`/`--ca-key` to serve the CA too).
pub fn serve_with(
    bin: &Path,
    db: &str,
    pki: &hq_ingest::dev_pki::DevPki,
    port: u16,
    extra: &[&std::ffi::OsStr],
) -> HqServe {
    let mut child = Command::new(bin)
        .arg("serve")
        .args(["--database-url", db])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--kiosk-ca")
        .arg(&pki.ca_cert)
        .arg("--cert")
        .arg(&pki.server_cert)
        .arg("--key")
        .arg(&pki.server_key)
        .arg("--record-key")
        .arg(&pki.record_key)
        .arg("--witness-key")
        .arg(&pki.witness_key)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on"), "hq-ingest serve: {line}");
    HqServe(child)
}

/// A running `hq-ingest serve`, killed (SIGKILL) and reaped when dropped, so a
/// failing test leaves no server behind.
pub struct HqServe(Child);

impl HqServe {
    /// kill -9 and reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for HqServe {
    fn drop(&mut self) {
        self.kill();
    }
}
