//! The in-process local HQ (daemon demo mode) with a kiosk whose TLS key sits behind a signing
//! callback (as on a token), plus the plain health/metrics listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hq_ingest::client::HqClient;
use hq_ingest::dev_pki::DEMO_KIOSK_ID;
use hq_ingest::local::{LocalHq, WITNESS_NAME};
use hq_ingest::tls::ClientKey;
use p256::pkcs8::DecodePrivateKey;
use records::checkpoint::{self, Checkpoint};
use records::merkle::{self, Frontier};
use records::wire::*;
use records::{SM2_DEFAULT_DISTID, SoftSigner, Suite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_hq_with_token_style_tls_key() {
    let dir = tempfile::tempdir().unwrap();
    let hq = LocalHq::start(dir.path()).await.unwrap();
    let device_key = SoftSigner::generate_sm2(SM2_DEFAULT_DISTID).unwrap();
    hq.register_kiosk(DEMO_KIOSK_ID, &device_key.verifier())
        .await
        .unwrap();

    // The TLS key is only reachable through a callback, as with a key on a token.
    let tls_key = p256::ecdsa::SigningKey::from_pkcs8_pem(
        &std::fs::read_to_string(&hq.pki.kiosk_key).unwrap(),
    )
    .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let callback = ClientKey::EcdsaP256Callback(Arc::new(move |msg: &[u8]| {
        use p256::ecdsa::signature::Signer;
        counter.fetch_add(1, Ordering::SeqCst);
        let sig: p256::ecdsa::Signature = tls_key.sign(msg);
        Ok(sig.to_der().as_bytes().to_vec())
    }));
    let client = HqClient::new(
        &hq.server.addr.to_string(),
        "localhost",
        &std::fs::read(&hq.pki.ca_cert).unwrap(),
        &std::fs::read(&hq.pki.kiosk_cert).unwrap(),
        &callback,
    )
    .unwrap();

    // Audit log kept as a frontier; checkpoint signed by the device key.
    let mut frontier = Frontier::new();
    let mut leaves = Vec::new();
    for i in 0..5u8 {
        let leaf = merkle::leaf_hash(&[i]);
        frontier.append(leaf);
        leaves.push(leaf);
    }
    let cp = Checkpoint {
        origin: format!("kioskd/demo-ca/{DEMO_KIOSK_ID}"),
        size: frontier.size(),
        root: frontier.root(),
    };
    let batch = Batch {
        schema_version: SCHEMA_VERSION,
        kiosk_id: DEMO_KIOSK_ID.into(),
        batch_seq: 1,
        prev_batch_hash: [0; 32],
        created_at: 0,
        records: vec![SequencedRecord {
            seq: 1,
            record_id: [1; 16],
            record: Record::AuditCheckpoint(AuditCheckpoint {
                signed_note: checkpoint::sign_checkpoint(&cp, DEMO_KIOSK_ID, &device_key).unwrap(),
                previous_size: 0,
                consistency_proof: merkle::consistency_proof(&leaves, 0).unwrap(),
            }),
        }],
        backlog: None,
    };
    let envelope =
        records::seal_batch(&batch, Suite::Gm, &device_key, &hq.recipient_public).unwrap();
    let ack = client.send_envelope(envelope).await.unwrap();
    assert!(
        calls.load(Ordering::SeqCst) >= 1,
        "TLS signature came from the callback"
    );
    assert_eq!(ack.acked_through_seq, 1);
    checkpoint::verify_cosignature(
        &cp,
        &ack.cosignatures[0].signature_line,
        WITNESS_NAME,
        &hq.witness,
    )
    .unwrap();

    // Plain health/metrics listener for scrapers: no client certificate, no batch route.
    let plain = hq.server.metrics_addr.unwrap();
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(plain).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(get("/health").await.starts_with("HTTP/1.0 200"));
    let metrics = get("/metrics").await;
    assert!(metrics.contains("hq_records_stored_total 1"), "{metrics}");
    hq.shutdown().await;
}
