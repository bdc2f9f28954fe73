use records::signing::SoftSigner;
use serde_json::json;

use super::*;
use crate::store::Store;

const KEY: &str = "kiosk-test-0001";

fn populated(n: u64) -> (tempfile::TempDir, Store, SoftSigner) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("k.sqlite")).unwrap();
    let signer = SoftSigner::generate_sm2("1234567812345678").unwrap();
    {
        let mut conn = store.conn().unwrap();
        for i in 0..n {
            record(
                &mut conn,
                1_700_000_000_000 + i as i64,
                &AuditEvent {
                    actor: Actor::Applicant(format!("session-{}", i / 3)),
                    action: "personal.write",
                    subject: Some([i as u8; 32]),
                    detail: json!({ "items": ["name", "id_number"], "n": i }),
                },
            )
            .unwrap();
            if i % 4 == 3 {
                checkpoint(&mut conn, 1, "kioskd/test", KEY, &signer).unwrap();
            }
        }
    }
    (dir, store, signer)
}

fn verify_now(store: &Store, signer: &SoftSigner) -> VerifyReport {
    verify(&store.conn().unwrap(), KEY, Some(&signer.verifier())).unwrap()
}

#[test]
fn an_intact_log_verifies_with_its_checkpoints() {
    let (_d, store, signer) = populated(10);
    let r = verify_now(&store, &signer);
    assert_eq!(r.tamper, None);
    assert_eq!(r.entries, 10);
    assert_eq!(r.checkpoints, 2);
    assert_eq!(r.root, head(&store.conn().unwrap()).unwrap().1);
}

#[test]
fn a_changed_entry_is_named() {
    let (_d, store, signer) = populated(10);
    store
        .conn()
        .unwrap()
        .execute(
            "UPDATE audit_log SET action = 'nothing.happened' WHERE seq = 5",
            [],
        )
        .unwrap();
    assert_eq!(
        verify_now(&store, &signer).tamper,
        Some(Tamper::EntryChanged { seq: 5 })
    );
}

#[test]
fn a_changed_entry_with_a_recomputed_leaf_breaks_the_checkpoint() {
    let (_d, store, signer) = populated(10);
    let conn = store.conn().unwrap();
    let (at, actor, subject): (i64, String, Option<String>) = conn
        .query_row(
            "SELECT at, actor, subject FROM audit_log WHERE seq = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let detail = "{}";
    let leaf = merkle::leaf_hash(&canonical(
        2,
        at,
        &actor,
        "personal.write",
        subject.as_deref(),
        detail,
    ));
    conn.execute(
        "UPDATE audit_log SET detail = ?1, leaf_hash = ?2 WHERE seq = 2",
        params![detail, leaf.to_vec()],
    )
    .unwrap();
    drop(conn);
    assert_eq!(
        verify_now(&store, &signer).tamper,
        Some(Tamper::CheckpointMismatch { size: 4 })
    );
}

#[test]
fn a_removed_entry_is_named() {
    let (_d, store, signer) = populated(10);
    store
        .conn()
        .unwrap()
        .execute("DELETE FROM audit_log WHERE seq = 6", [])
        .unwrap();
    assert_eq!(
        verify_now(&store, &signer).tamper,
        Some(Tamper::EntryMissing {
            expected: 6,
            found: 7
        })
    );
}

#[test]
fn removing_the_tail_is_detected() {
    let (_d, store, signer) = populated(10);
    store
        .conn()
        .unwrap()
        .execute("DELETE FROM audit_log WHERE seq >= 9", [])
        .unwrap();
    assert_eq!(
        verify_now(&store, &signer).tamper,
        Some(Tamper::Truncated {
            entries: 9,
            recorded: 10
        })
    );
}

#[test]
fn reordered_entries_are_named() {
    let (_d, store, signer) = populated(10);
    let conn = store.conn().unwrap();
    // Swap everything but the sequence numbers of entries 3 and 4.
    conn.execute_batch(
        "UPDATE audit_log SET seq = -1 WHERE seq = 3;
         UPDATE audit_log SET seq = 3 WHERE seq = 4;
         UPDATE audit_log SET seq = 4 WHERE seq = -1;",
    )
    .unwrap();
    drop(conn);
    assert_eq!(
        verify_now(&store, &signer).tamper,
        Some(Tamper::EntryChanged { seq: 3 })
    );
}

#[test]
fn a_checkpoint_signed_by_another_key_is_rejected() {
    let (_d, store, signer) = populated(4);
    let other = SoftSigner::generate_sm2("1234567812345678").unwrap();
    assert_eq!(
        verify(&store.conn().unwrap(), KEY, Some(&other.verifier()))
            .unwrap()
            .tamper,
        Some(Tamper::CheckpointSignature { size: 4 })
    );
    assert_eq!(verify_now(&store, &signer).tamper, None);
}

#[test]
fn appends_roll_back_with_their_transaction() {
    let (_d, store, _signer) = populated(3);
    let mut conn = store.conn().unwrap();
    {
        let tx = conn.transaction().unwrap();
        append(
            &tx,
            5,
            &AuditEvent {
                actor: Actor::System,
                action: "x",
                subject: None,
                detail: json!({}),
            },
        )
        .unwrap();
        // dropped without commit
    }
    assert_eq!(head(&conn).unwrap().0, 3);
    let n: i64 = conn
        .query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
}
