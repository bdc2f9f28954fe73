//! kioskd in its embedded default (`hq.mode = "local"`) with the real hq-ingest child and
//! PostgreSQL: synthetic applicants filled into the outbox arrive at HQ exactly once, only as
//! the catalog allows, the backlog drains to 0 and the kiosk keeps no personal data.

mod common;
mod sync_support;

use std::time::Duration;

use common::Kioskd;
use sync_support::*;

const CONFIG: &str = r#"
[kiosk]
id = "kiosk-sync-local"

[hq]
mode = "local"
batch_records = 100
retry_min_ms = 100
retry_max_ms = 1000
"#;

#[test]
fn local_hq_receives_every_record_once_and_the_kiosk_keeps_nothing() {
    let hq_bin = hq_ingest();
    assert!(hq_bin.is_file());
    let dir = data_dir();
    let kiosk = Kioskd::start(dir.path(), CONFIG);
    wait_for("the local HQ", Duration::from_secs(120), || {
        kiosk.logs().iter().any(|l| l.contains("local HQ ready"))
    });
    fill(dir.path(), 500, 0, None);
    assert!(backlog(&kiosk) > 0, "records wait in the outbox");
    wait_for("the outbox to drain", Duration::from_secs(120), || {
        backlog(&kiosk) == 0
    });
    let rows = hq_records(&local_hq_db(dir.path()), "kiosk-sync-local");
    let applicants = assert_exactly_once(&rows, 500);
    assert_only_allowed(
        &applicants,
        &dir.path().join("hq-local/pki/hq-record-key.hex"),
    );
    wait_for(
        "the purge after the last ack",
        Duration::from_secs(30),
        || kiosk_personal_fields(dir.path()) == 0,
    );
    kiosk.stop();
}

/// The local HQ stops by itself on SIGTERM while its parent still holds its stdin open (how
/// it notices a parent that died). It used to hang in a stdin read the runtime waited for,
/// until kioskd's grace ran out and it killed the child.
#[test]
fn the_local_hq_stops_on_sigterm_while_its_parent_lives() {
    let hq_bin = hq_ingest();
    let dir = data_dir();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let signer = records::signing::SoftSigner::generate_p256();
        let verifier = records::public_keys::verifier_to_json(&signer.verifier());
        let hq = kioskd::sync::local_hq::LocalHqProcess::start(
            &hq_bin,
            dir.path(),
            "kiosk-stop",
            &verifier,
        )
        .await
        .expect("the local HQ starts");
        // Generous: the point is that it exits at all, not how fast.
        let status = hq.stop(Duration::from_secs(60)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "the local HQ exits on SIGTERM by itself (status {status:?}; None: it had to be killed)"
        );
    });
}
