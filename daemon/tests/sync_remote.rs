//! kioskd in remote mode against a real `hq-ingest serve` and PostgreSQL: while HQ is down the
//! records wait in the outbox and applicants are still served; when HQ comes up the backlog
//! drains in order, every record exactly once.

mod common;
mod sync_support;

use std::process::Command;
use std::time::Duration;

use common::Kioskd;
use hq_ingest::pg_cluster::TempCluster;
use sync_support::*;

const KIOSK: &str = "kiosk-sync-remote";

#[test]
fn hq_down_records_wait_applicants_served_then_drain_in_order() {
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
        r#"
[kiosk]
id = "{KIOSK}"

[hq]
mode = "remote"
url = "https://127.0.0.1:{port}"
ca_cert = "{}"
client_cert = "{}"
client_key = "{}"
record_key = "{}"
batch_records = 50
retry_min_ms = 100
retry_max_ms = 400
"#,
        pki.ca_cert.display(),
        cert.display(),
        key.display(),
        pki.record_public.display()
    );
    let kiosk = Kioskd::start(&dir.path().join("kiosk"), &config);
    fill(&kiosk.data_dir, 200, 0, Some(&pki.record_public));
    wait_for("a failed send", Duration::from_secs(30), || {
        kiosk.logs().iter().any(|l| l.contains("sync to HQ failed"))
    });
    assert_eq!(backlog(&kiosk), 200, "nothing lost while HQ is down");
    let (id, token) = common::open_session(&kiosk, "cert_application");
    let (status, _) = kiosk.call("DELETE", &format!("/v1/sessions/{id}"), Some(&token), None);
    assert!(status < 300, "applicants are served while HQ is down");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cluster = TempCluster::start().unwrap();
    let db = rt.block_on(cluster.create_database("hq")).unwrap();
    let mut hq = serve(&bin, &db, &pki, port);
    let registered = Command::new(&bin)
        .args(["register-kiosk", "--database-url", &db, "--kiosk-id", KIOSK])
        .arg("--public-key")
        .arg(kiosk.data_dir.join("kiosk-device-key.json"))
        .output()
        .unwrap();
    assert!(registered.status.success());

    wait_for("the backlog to drain", Duration::from_secs(120), || {
        backlog(&kiosk) == 0
    });
    let rows = hq_records(&db, KIOSK);
    let applicants = assert_exactly_once(&rows, 200);
    assert_only_allowed(&applicants, &pki.record_key);
    kiosk.stop();
    hq.kill();
}
