//! Integration tests against a real PostgreSQL: acceptance, idempotent replay, rejections
//! (bad client certificate, tampering, unknown schema version, gaps, forks, checkpoint
//! rollback), witness cosignatures, several instances on one database.

mod common;

use common::*;
use hq_ingest::client::ClientError;
use hq_ingest::dev_pki::{self, DEMO_KIOSK_ID};
use records::Suite;
use records::checkpoint;
use records::merkle;

fn rejected_code(err: ClientError) -> (u16, String) {
    match err {
        ClientError::Rejected { status, rejection } => (status, rejection.code),
        other => panic!("expected a typed rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_batches_and_replay_is_idempotent() {
    let hq = Hq::start("accept_replay", 1).await;
    {
        let kiosk_id = DEMO_KIOSK_ID.to_owned();
        let mut kiosk = KioskSim::new(&kiosk_id, hq.recipient_public.clone(), Suite::Gm);
        hq.register(&kiosk).await;
        let client = hq.client(0);
        let mut conn = client.connect().await.unwrap();
        let cp = kiosk.audit(3);
        let first = kiosk.seal_next(vec![applicant(1), applicant(2), cp]);
        let ack = conn.send_envelope(first.clone()).await.unwrap();
        assert_eq!(
            (ack.batch_seq, ack.acked_through_seq, ack.duplicate),
            (1, 3, false)
        );
        assert_eq!(ack.cosignatures.len(), 1);
        let cosig = &ack.cosignatures[0];
        let cp = checkpoint::Checkpoint {
            origin: format!("kioskd/demo-ca/{kiosk_id}"),
            size: 3,
            root: merkle::root(&kiosk.audit_leaves),
        };
        checkpoint::verify_cosignature(&cp, &cosig.signature_line, WITNESS_NAME, &hq.witness)
            .unwrap();

        let replay = conn.send_envelope(first).await.unwrap();
        assert!(replay.duplicate);
        assert_eq!(replay.acked_through_seq, 3);
        assert_eq!(hq.count("SELECT count(*) FROM records").await, 3);

        let second = kiosk.seal_next(vec![applicant(3)]);
        let ack = conn.send_envelope(second).await.unwrap();
        assert_eq!((ack.batch_seq, ack.acked_through_seq), (2, 4));
        assert_eq!(hq.count("SELECT count(*) FROM records").await, 4);
    }
    let (status, metrics) = hq.client(0).get("/metrics").await.unwrap();
    let metrics = String::from_utf8(metrics).unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("hq_records_stored_total 4"), "{metrics}");
    assert!(metrics.contains("outcome=\"duplicate\""), "{metrics}");
    let (status, _) = hq.client(0).get("/health").await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nist_suite_round_trip() {
    let hq = Hq::start("nist_suite", 1).await;
    let mut kiosk = KioskSim::new(DEMO_KIOSK_ID, hq.recipient_public.clone(), Suite::Nist);
    hq.register(&kiosk).await;
    let cp = kiosk.audit(2);
    let ack = hq
        .client(0)
        .send_envelope(kiosk.seal_next(vec![applicant(7), cp]))
        .await
        .unwrap();
    assert_eq!(ack.acked_through_seq, 2);
    assert_eq!(ack.cosignatures.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_certificates_are_rejected() {
    let hq = Hq::start("bad_cert", 1).await;
    let mut kiosk = KioskSim::new(DEMO_KIOSK_ID, hq.recipient_public.clone(), Suite::Gm);
    hq.register(&kiosk).await;
    let envelope = kiosk.seal_next(vec![applicant(1)]);

    // A certificate from a CA HQ does not trust: the TLS handshake fails.
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue = dev_pki::generate(rogue_dir.path()).unwrap();
    let rogue_client = hq.client_with(
        0,
        &std::fs::read(&rogue.kiosk_cert).unwrap(),
        &std::fs::read(&rogue.kiosk_key).unwrap(),
    );
    let err = rogue_client
        .send_envelope(envelope.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");

    // A valid certificate for another kiosk id: the envelope must not be accepted for it.
    let ca_key = std::fs::read_to_string(&hq.pki.ca_key).unwrap();
    let (cert, key) = dev_pki::issue_kiosk_cert(&ca_key, "kiosk-other").unwrap();
    let other = hq.client_with(0, cert.as_bytes(), key.as_bytes());
    let (status, code) = rejected_code(other.send_envelope(envelope.clone()).await.unwrap_err());
    assert_eq!((status, code.as_str()), (403, "kiosk_mismatch"));

    // Unregistered kiosk with a valid certificate.
    let mut stranger = KioskSim::new("kiosk-other", hq.recipient_public.clone(), Suite::Gm);
    let (status, code) = rejected_code(
        other
            .send_envelope(stranger.seal_next(vec![applicant(1)]))
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (403, "unknown_kiosk"));
    assert_eq!(hq.count("SELECT count(*) FROM records").await, 0);

    // The right client still works afterwards.
    hq.client(0).send_envelope(envelope).await.unwrap();
    assert_eq!(hq.count("SELECT count(*) FROM records").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_unknown_version_and_wrong_key_envelopes_are_rejected() {
    let hq = Hq::start("tampered", 1).await;
    let mut kiosk = KioskSim::new(DEMO_KIOSK_ID, hq.recipient_public.clone(), Suite::Gm);
    hq.register(&kiosk).await;
    let client = hq.client(0);
    let envelope = kiosk.seal_next(vec![applicant(1)]);

    let tampered = records::envelope::tamper_ciphertext_for_tests(&envelope).unwrap();
    let (status, code) = rejected_code(client.send_envelope(tampered).await.unwrap_err());
    assert_eq!((status, code.as_str()), (401, "bad_signature"));

    let future =
        records::envelope::tamper_header_for_tests(&envelope, |h| h.schema_version = 2).unwrap();
    let (status, code) = rejected_code(client.send_envelope(future).await.unwrap_err());
    assert_eq!((status, code.as_str()), (400, "unsupported_schema_version"));

    let unknown_suite =
        records::envelope::tamper_header_for_tests(&envelope, |h| h.suite = "x".into()).unwrap();
    let (_, code) = rejected_code(client.send_envelope(unknown_suite).await.unwrap_err());
    assert_eq!(code, "unknown_suite");

    // Signed by a key that is not the registered one.
    let mut impostor = KioskSim::new(DEMO_KIOSK_ID, hq.recipient_public.clone(), Suite::Gm);
    let (status, code) = rejected_code(
        client
            .send_envelope(impostor.seal_next(vec![applicant(1)]))
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (401, "bad_signature"));

    let (_, code) = rejected_code(client.send_envelope(b"garbage".to_vec()).await.unwrap_err());
    assert_eq!(code, "malformed");
    assert_eq!(hq.count("SELECT count(*) FROM records").await, 0);

    client.send_envelope(envelope).await.unwrap();
    assert_eq!(hq.count("SELECT count(*) FROM records").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_and_forks_in_the_batch_chain_are_rejected() {
    let hq = Hq::start("gaps", 1).await;
    let mut kiosk = KioskSim::new(DEMO_KIOSK_ID, hq.recipient_public.clone(), Suite::Gm);
    hq.register(&kiosk).await;
    let client = hq.client(0);
    let b1 = kiosk.seal_next(vec![applicant(1)]);
    let b2 = kiosk.seal_next(vec![applicant(2)]);
    let b3 = kiosk.seal_next(vec![applicant(3)]);

    // Out of order: batch 2 before batch 1.
    let err = client.send_envelope(b2.clone()).await.unwrap_err();
    let ClientError::Rejected { status, rejection } = err else {
        panic!("expected rejection")
    };
    assert_eq!((status, rejection.code.as_str()), (409, "batch_gap"));
    assert_eq!(rejection.expected_next_batch, Some(1));

    client.send_envelope(b1).await.unwrap();
    // Skipping batch 2.
    let (_, code) = rejected_code(client.send_envelope(b3.clone()).await.unwrap_err());
    assert_eq!(code, "batch_gap");
    client.send_envelope(b2).await.unwrap();
    client.send_envelope(b3).await.unwrap();

    // A different batch 3 (restored kiosk re-using numbers): fork.
    let mut forked = KioskSim::new(DEMO_KIOSK_ID, hq.recipient_public.clone(), Suite::Gm);
    forked.signer = records::SoftSigner::from_secret_bytes(
        records::SignatureAlgorithm::Sm2Sm3,
        &kiosk.signer.secret_bytes(),
        Some(records::SM2_DEFAULT_DISTID),
    )
    .unwrap();
    forked.seal_next(vec![applicant(1)]);
    forked.seal_next(vec![applicant(2)]);
    let alt3 = forked.seal_next(vec![applicant(9)]);
    let (status, code) = rejected_code(client.send_envelope(alt3).await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "batch_fork"));

    // Right batch number and chain but a record gap.
    kiosk.next_seq += 5;
    let gap = kiosk.seal_next(vec![applicant(4)]);
    let (_, code) = rejected_code(client.send_envelope(gap).await.unwrap_err());
    assert_eq!(code, "record_gap");
    assert_eq!(hq.count("SELECT count(*) FROM records").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_and_forked_checkpoints_are_rejected() {
    let hq = Hq::start("checkpoints", 1).await;
    let mut kiosk = KioskSim::new(DEMO_KIOSK_ID, hq.recipient_public.clone(), Suite::Gm);
    hq.register(&kiosk).await;
    let client = hq.client(0);
    let cp = kiosk.audit(4);
    client
        .send_envelope(kiosk.seal_next(vec![cp]))
        .await
        .unwrap();

    // Rollback: a checkpoint of a smaller tree (kiosk restored from an old image).
    let old = kiosk.checkpoint_over(&kiosk.audit_leaves[..2], 0);
    let saved = (kiosk.batch_seq, kiosk.prev_hash, kiosk.next_seq);
    let env = kiosk.seal_next(vec![old]);
    let (status, code) = rejected_code(client.send_envelope(env).await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "checkpoint_rollback"));
    (kiosk.batch_seq, kiosk.prev_hash, kiosk.next_seq) = saved;

    // Fork: a size-6 tree whose first 4 leaves differ from the accepted ones.
    let mut forked: Vec<_> = (0..6)
        .map(|i| merkle::leaf_hash(format!("other entry {i}").as_bytes()))
        .collect();
    let fork = kiosk.checkpoint_over(&forked, 4);
    let env = kiosk.seal_next(vec![fork]);
    let (status, code) = rejected_code(client.send_envelope(env).await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "checkpoint_fork"));
    (kiosk.batch_seq, kiosk.prev_hash, kiosk.next_seq) = saved;

    // Gap: proof from a size HQ never accepted.
    forked.clear();
    let mut leaves = kiosk.audit_leaves.clone();
    leaves.push(merkle::leaf_hash(b"e4"));
    leaves.push(merkle::leaf_hash(b"e5"));
    let gap = kiosk.checkpoint_over(&leaves, 5);
    let env = kiosk.seal_next(vec![gap]);
    let (_, code) = rejected_code(client.send_envelope(env).await.unwrap_err());
    assert_eq!(code, "checkpoint_gap");
    (kiosk.batch_seq, kiosk.prev_hash, kiosk.next_seq) = saved;

    // The honest continuation is accepted and cosigned.
    let next = kiosk.audit(3);
    let ack = client
        .send_envelope(kiosk.seal_next(vec![next]))
        .await
        .unwrap();
    assert_eq!(ack.cosignatures[0].tree_size, 7);
    assert_eq!(
        hq.count("SELECT count(*) FROM checkpoints").await,
        2,
        "only accepted checkpoints are stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_database_without_duplicates() {
    let hq = Hq::start("two_instances", 2).await;
    let mut kiosk = KioskSim::new(DEMO_KIOSK_ID, hq.recipient_public.clone(), Suite::Gm);
    hq.register(&kiosk).await;
    for _ in 0..5 {
        let env = kiosk.seal_next(vec![applicant(1), applicant(2)]);
        let (c0, c1) = (hq.client(0), hq.client(1));
        let (a, b) = tokio::join!(c0.send_envelope(env.clone()), c1.send_envelope(env));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.batch_hash, b.batch_hash);
        assert!(a.duplicate ^ b.duplicate, "exactly one instance committed");
    }
    assert_eq!(hq.count("SELECT count(*) FROM records").await, 10);
    assert_eq!(
        hq.count("SELECT count(DISTINCT seq) FROM records").await,
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_sending_keeps_order_and_stores_once() {
    let hq = Hq::start("windowed", 1).await;
    let mut kiosk = KioskSim::new(DEMO_KIOSK_ID, hq.recipient_public.clone(), Suite::Gm);
    hq.register(&kiosk).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let envelopes: Vec<_> = (1..=12u64)
        .map(|b| {
            (
                b,
                kiosk.seal_next(vec![applicant(1), applicant(2), applicant(3)]),
            )
        })
        .collect();
    tokio::spawn(async move {
        for e in envelopes {
            tx.send(e).await.unwrap();
        }
    });
    let mut acks = Vec::new();
    hq.client(0)
        .send_windowed(rx, 3, |ack| {
            acks.push((ack.batch_seq, ack.acked_through_seq))
        })
        .await
        .unwrap();
    let expected: Vec<_> = (1..=12u64).map(|b| (b, b * 3)).collect();
    assert_eq!(acks, expected, "acks delivered in batch order");
    assert_eq!(hq.count("SELECT count(*) FROM records").await, 36);
    assert_eq!(hq.count("SELECT count(*) FROM batches").await, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_each_kiosks_last_contact_and_backlog_labelled_by_kiosk_id_only() {
    let hq = Hq::start("kiosk_gauges", 1).await;
    let mut kiosk = KioskSim::new(DEMO_KIOSK_ID, hq.recipient_public.clone(), Suite::Gm);
    hq.register(&kiosk).await;
    let client = hq.client(0);
    let mut conn = client.connect().await.unwrap();
    kiosk.backlog = Some(42);
    conn.send_envelope(kiosk.seal_next(vec![applicant(1), applicant(2)]))
        .await
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    let metrics = text(client.get("/metrics").await.unwrap().1);
    let contact =
        format!("hq_kiosk_last_contact_timestamp_seconds{{kiosk=\"{DEMO_KIOSK_ID}\"}} 1800000000");
    assert!(metrics.contains(&contact), "{metrics}");
    let backlog = format!("hq_kiosk_backlog_records{{kiosk=\"{DEMO_KIOSK_ID}\"}} 42");
    assert!(metrics.contains(&backlog), "{metrics}");

    // The kiosk catches up; HQ's clock moves on.
    *hq.clock.0.lock().unwrap() += time::Duration::seconds(90);
    kiosk.backlog = Some(0);
    conn.send_envelope(kiosk.seal_next(vec![applicant(3)]))
        .await
        .unwrap();
    let metrics = text(client.get("/metrics").await.unwrap().1);
    assert!(
        metrics.contains(&format!(
            "hq_kiosk_last_contact_timestamp_seconds{{kiosk=\"{DEMO_KIOSK_ID}\"}} 1800000090"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "hq_kiosk_backlog_records{{kiosk=\"{DEMO_KIOSK_ID}\"}} 0"
        )),
        "{metrics}"
    );
    // The per-kiosk families carry the kiosk id and nothing else.
    for line in metrics.lines().filter(|l| l.starts_with("hq_kiosk_")) {
        let labels = &line[line.find('{').unwrap()..=line.find('}').unwrap()];
        assert_eq!(labels, format!("{{kiosk=\"{DEMO_KIOSK_ID}\"}}"), "{line}");
    }
}
