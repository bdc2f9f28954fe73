//! Provisioning a branch kiosk end to end, as an operator does it: HQ (`hq-ingest serve` with
//! its enrollment listener, real PostgreSQL) makes a one-time code with `hq-ingest
//! enroll-kiosk`; `kioskctl provision` trades it for the kiosk's client certificate (keys made
//! on the kiosk's device token, nothing copied by hand); kioskd in remote mode then syncs its
//! records to HQ. A used or expired code, a wrong HQ CA, an unreachable HQ and a running
//! kioskd are each refused in one line, and the code never appears in what is printed.

mod common;
mod sync_support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::Kioskd;
use sync_support::*;

const KIOSK: &str = "kiosk-provision-0001";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `hq-ingest enroll-kiosk`: the code on stdout.
fn enroll_code(bin: &Path, db: &str, ttl_minutes: u32) -> String {
    let out = Command::new(bin)
        .args(["enroll-kiosk", "--id", KIOSK, "--branch", "Pudong branch"])
        .args(["--database-url", db])
        .args(["--ttl-minutes", &ttl_minutes.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "enroll-kiosk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(code.len(), 34, "7 groups of 4: {code}");
    code
}

fn provision(kiosk_dir: &Path, url: &str, code: &str, ca: &Path) -> Output {
    Command::new(KIOSKCTL)
        .arg("provision")
        .args(["--hq", url, "--code", code, "--timeout-secs", "10"])
        .arg("--ca-cert")
        .arg(ca)
        .arg("--config")
        .arg(kiosk_dir.join("kioskd-test.toml"))
        .arg("--data-dir")
        .arg(kiosk_dir)
        .env_remove("KIOSK_PIN")
        .output()
        .unwrap()
}

/// Refused with exit status 2 and one line on stderr holding `needle` and not the code.
fn assert_refused(out: &Output, needle: &str, code: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    eprint!("refused as expected: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for text in [&stderr[..], &stdout[..]] {
        assert!(!text.contains(code), "the code was printed: {text}");
        assert!(!text.contains(&code.replace('-', "")));
    }
    stderr
}

#[test]
fn a_kiosk_provisioned_with_a_one_time_code_syncs_its_first_records_and_the_code_works_once() {
    let bin = hq_ingest();
    let dir = data_dir();
    let pki = hq_ingest::dev_pki::generate(&dir.path().join("pki")).unwrap();
    let (hq_port, enroll_port, metrics_port) = (free_port(), free_port(), free_port());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cluster = hq_ingest::pg_cluster::TempCluster::start().unwrap();
    let db = rt.block_on(cluster.create_database("hq")).unwrap();
    let enroll_listen = format!("127.0.0.1:{enroll_port}");
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let _hq = serve_with(
        &bin,
        &db,
        &pki,
        hq_port,
        &[
            "--enroll-listen".as_ref(),
            enroll_listen.as_ref(),
            "--kiosk-ca-key".as_ref(),
            pki.ca_key.as_os_str(),
            "--metrics-listen".as_ref(),
            metrics_listen.as_ref(),
        ],
    );
    let enroll_url = format!("https://127.0.0.1:{enroll_port}");

    // The kiosk as the package installs it, told where HQ is; its certificate, HQ's CA and
    // record key do not exist yet.
    let kiosk_dir = dir.path().join("kiosk");
    std::fs::create_dir_all(&kiosk_dir).unwrap();
    let config = format!(
        r#"
[kiosk]
id = "{KIOSK}"
branch = "Pudong branch"

[hq]
mode = "remote"
url = "https://127.0.0.1:{hq_port}"
ca_cert = "hq/hq-ca.pem"
client_cert = "hq/kiosk.pem"
record_key = "hq/hq-record-key.json"
witness_key = "hq/hq-witness-key.json"
retry_min_ms = 100
retry_max_ms = 400

[store]
checkpoint_secs = 1
"#
    );
    std::fs::write(kiosk_dir.join("kioskd-test.toml"), &config).unwrap();

    // An expired code is refused.
    let expired = enroll_code(&bin, &db, 0);
    let out = provision(&kiosk_dir, &enroll_url, &expired, &pki.ca_cert);
    assert_refused(&out, "enrollment_code_expired", &expired);

    let code = enroll_code(&bin, &db, 60);
    // Another CA than HQ's: the connection is refused before the code is sent.
    let other = hq_ingest::dev_pki::generate(&dir.path().join("other-pki")).unwrap();
    let out = provision(&kiosk_dir, &enroll_url, &code, &other.ca_cert);
    assert_refused(&out, "CA mismatch", &code);
    // Nobody listening.
    let out = provision(
        &kiosk_dir,
        &format!("https://127.0.0.1:{}", free_port()),
        &code,
        &pki.ca_cert,
    );
    assert_refused(&out, "HQ unreachable", &code);
    assert!(!kiosk_dir.join("hq/kiosk.pem").exists());

    // The code works (it was not used up by the failures above).
    let out = provision(&kiosk_dir, &enroll_url, &code, &pki.ca_cert);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "provision: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("provisioned kiosk {KIOSK} (branch Pudong branch)")));
    assert!(!stdout.contains(&code));
    assert!(
        !stdout.contains("needs, in [hq]"),
        "the configuration already names the files: {stdout}"
    );
    let chain = std::fs::read(kiosk_dir.join("hq/kiosk.pem")).unwrap();
    let leaf = &hq_ingest::tls::certs_from_pem(&chain, "kiosk chain").unwrap()[0];
    assert_eq!(hq_ingest::tls::common_name(leaf).as_deref(), Some(KIOSK));
    assert!(hq_ingest::tls::has_client_auth(leaf));
    assert_eq!(
        std::fs::read(kiosk_dir.join("hq/hq-ca.pem")).unwrap(),
        std::fs::read(&pki.ca_cert).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(kiosk_dir.join("hq/hq-witness-key.json")).unwrap(),
        std::fs::read_to_string(&pki.witness_public).unwrap(),
        "HQ's witness key, for the kiosk to pin"
    );
    assert!(
        !kiosk_dir.join("hq").read_dir().unwrap().any(|e| {
            let name = e.unwrap().file_name();
            let name = name.to_string_lossy();
            name.contains("key") && name.ends_with(".pem")
        }),
        "no private key file: the TLS key stays on the device token"
    );

    // The same code again is refused.
    let out = provision(&kiosk_dir, &enroll_url, &code, &pki.ca_cert);
    assert_refused(&out, "enrollment_code_used", &code);

    // kioskd starts on what provisioning wrote and syncs its first records.
    let k = Kioskd::start(&kiosk_dir, &config);
    // While kioskd runs, provisioning is refused (and a fresh code is not consumed).
    let fresh = enroll_code(&bin, &db, 60);
    let out = provision(&kiosk_dir, &enroll_url, &fresh, &pki.ca_cert);
    assert_refused(&out, "runs on this store; stop it first", &fresh);

    fill(
        &k.data_dir,
        3,
        0,
        Some(&kiosk_dir.join("hq/hq-record-key.json")),
    );
    wait_for(
        "the first records to reach HQ",
        Duration::from_secs(120),
        || backlog(&k) == 0,
    );
    let rows = hq_records(&db, KIOSK);
    let applicants = assert_exactly_once(&rows, 3);
    // The audit checkpoints went too, and HQ's cosignatures verify against the witness key
    // provisioning pinned.
    wait_for("HQ's witness cosignature", Duration::from_secs(60), || {
        k.call("GET", "/v1/health", None, None).1["witness"]["state"] == "verified"
    });
    assert_only_allowed(&applicants, &pki.record_key);
    // HQ's per-kiosk gauges: the kiosk's last contact, and the backlog its batches report.
    let metrics = || {
        Kioskd::agent()
            .get(&format!("http://{metrics_listen}/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    };
    wait_for(
        "HQ's backlog gauge of the kiosk",
        Duration::from_secs(30),
        || metrics().contains(&format!("hq_kiosk_backlog_records{{kiosk=\"{KIOSK}\"}} 0")),
    );
    assert!(metrics().contains(&format!(
        "hq_kiosk_last_contact_timestamp_seconds{{kiosk=\"{KIOSK}\"}}"
    )));
    let logs = k.stop();
    for code in [&expired, &code, &fresh] {
        assert!(
            !logs.iter().any(|l| l.contains(code.as_str())),
            "the code reached kioskd's log"
        );
    }
}
