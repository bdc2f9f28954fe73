//! `kioskctl audit verify --data-dir DIR`: exit 0 on an intact log, 1 naming
//! the first bad entry on a changed, removed or reordered one.

use std::process::Command;

use kioskd::audit::{self, Actor, AuditEvent};
use kioskd::store::Store;
use records::signing::SoftSigner;

const KIOSKCTL: &str = env!("CARGO_BIN_EXE_kioskctl");

fn make_log(dir: &std::path::Path) -> Store {
    let store = Store::open(&dir.join("kiosk.sqlite")).unwrap();
    let signer = SoftSigner::generate_sm2("1234567812345678").unwrap();
    let mut conn = store.conn().unwrap();
    audit::record_device_key(&conn, "kiosk-cli-test", &signer.verifier()).unwrap();
    for i in 0..12 {
        audit::record(
            &mut conn,
            i,
            &AuditEvent {
                actor: Actor::Staff("s1".into()),
                action: "staff.reveal",
                subject: Some([i as u8; 32]),
                detail: serde_json::json!({ "item": "mobile" }),
            },
        )
        .unwrap();
        if i % 5 == 4 {
            audit::checkpoint(&mut conn, i, "kioskd/cli", "kiosk-cli-test", &signer).unwrap();
        }
    }
    drop(conn);
    store
}

fn verify(dir: &std::path::Path) -> (i32, String) {
    let out = Command::new(KIOSKCTL)
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn intact_log_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path());
    let (code, out) = verify(dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("12 entries, 2 checkpoints (signatures verified)"),
        "{out}"
    );
}

#[test]
fn each_kind_of_tampering_exits_one_naming_the_entry() {
    let cases = [
        (
            "UPDATE audit_log SET detail = '{\"item\":\"id_number\"}' WHERE seq = 7",
            "entry 7 was changed",
        ),
        ("DELETE FROM audit_log WHERE seq = 3", "entry 3 is missing"),
        (
            "UPDATE audit_log SET seq = -1 WHERE seq = 9; UPDATE audit_log SET seq = 9 WHERE seq = 10; UPDATE audit_log SET seq = 10 WHERE seq = -1;",
            "entry 9 was changed or moved",
        ),
    ];
    for (sql, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let store = make_log(dir.path());
        store.conn().unwrap().execute_batch(sql).unwrap();
        store.flush().unwrap();
        drop(store);
        let (code, out) = verify(dir.path());
        assert_eq!(code, 1, "{sql}: {out}");
        assert!(out.contains(expected), "{sql}: {out}");
    }
}

#[test]
fn a_missing_store_exits_two() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = verify(dir.path());
    assert_eq!(code, 2);
    assert!(out.contains("no such store"), "{out}");
}
