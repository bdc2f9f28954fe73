//! The daemon's CA client against the real CA in hq-ingest (in-process local HQ: PostgreSQL,
//! demo PKI, mTLS): requests made on a soft token (P-256 and SM2) are certified, the
//! certificates verify and carry the token's keys, and the lifecycle calls change the status
//! HQ reports. An unreachable CA is `Unavailable` after bounded retries.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hq_ingest::local::LocalHq;
use hsm::soft::{SoftOptions, SoftProvider};
use hsm::{KeyAlgorithm, Pin, Token, TokenProvider, UserKind};
use kioskd::ca_client::{CaClient, CaError, CaLink, CertStatus, Holder};
use records::client::tls::ClientKey;
use zeroize::Zeroizing;

async fn soft_token(dir: &Path) -> Arc<dyn Token> {
    let provider = SoftProvider::open(SoftOptions {
        dir: dir.to_path_buf(),
        secret: Zeroizing::new("test-secret".to_owned()),
        sm2_distid: records::SM2_DEFAULT_DISTID.into(),
        max_tries: 3,
    })
    .unwrap();
    provider
        .init_token("ukey", &Pin::new("88888888"), &Pin::new("1234"))
        .await
        .unwrap();
    let token = provider.open_token("ukey").await.unwrap();
    token
        .login(UserKind::User, &Pin::new("1234"))
        .await
        .unwrap();
    token
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn pem_der(path: &Path) -> Vec<u8> {
    hsm::csr::certificate_der(&read(path)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_the_hq_ca_for_token_keys_and_their_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let hq = LocalHq::start(&dir.path().join("hq")).await.unwrap();
    // Only registered kiosks reach HQ's CA.
    hq.register_kiosk(
        hq_ingest::dev_pki::DEMO_KIOSK_ID,
        &records::SoftSigner::generate_p256().verifier(),
    )
    .await
    .unwrap();
    let link = Arc::new(CaLink::default());
    assert!(
        link.client(Duration::from_millis(20))
            .await
            .unwrap_err()
            .is_retryable(),
        "no client before the link is up"
    );
    link.connect(
        &format!("https://{}", hq.server.addr),
        &read(&hq.pki.ca_cert),
        &read(&hq.pki.kiosk_cert),
        &ClientKey::Pem(read(&hq.pki.kiosk_key)),
        &|p: &Path| p.to_path_buf(),
    );
    let ca = link.client(Duration::from_secs(1)).await.unwrap();
    let token = soft_token(&dir.path().join("tokens")).await;

    // The holder as the kiosk names them: keyed digest, service, application.
    let digest = [0x5a_u8; 32];
    let holder = Holder {
        digest: &digest,
        service: "enterprise_cert_application",
        application: "session-test-0001",
    };
    let subject = format!(
        "CN=Synthetic Applicant,serialNumber={},O=Synthetic Test Org,C=CN",
        hex::encode(&digest[..16])
    );
    let subject = subject.as_str();
    let mut issued = Vec::new();
    for (label, algorithm) in [("p256", KeyAlgorithm::P256), ("sm2", KeyAlgorithm::Sm2)] {
        let key = token.generate_key_pair(label, algorithm).await.unwrap();
        let csr = hsm::csr::build_csr(token.as_ref(), label, subject)
            .await
            .unwrap();
        let cert = ca.enroll(&csr.der, &holder).await.unwrap();
        let parsed = hsm::csr::parse_certificate(&cert.der).unwrap();
        assert_eq!(
            parsed.public_key, key.public_key,
            "{label}: the token's key"
        );
        use x509_parser::prelude::FromDer;
        let (_, request) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&csr.der)
                .unwrap();
        assert_eq!(
            parsed.subject_der,
            request.certification_request_info.subject.as_raw(),
            "subject copied from the request"
        );
        let (_, x509) = x509_parser::parse_x509_certificate(&cert.der).unwrap();
        let (_, issuer) = x509_parser::parse_x509_certificate(&cert.chain_der[0]).unwrap();
        x509.verify_signature(Some(issuer.public_key()))
            .expect("chains to the issuing CA");
        assert_eq!(parsed.serial_hex.replace(':', ""), cert.serial_hex);
        assert_eq!(parsed.not_after_unix * 1000, cert.not_after_ms);
        assert_eq!(cert.chain_der, vec![pem_der(&hq.pki.issuing_ca_cert)]);
        assert_eq!(ca.status(&cert.serial_hex).await.unwrap(), CertStatus::Good);
        issued.push(cert);
    }
    assert_ne!(issued[0].serial_hex, issued[1].serial_hex);

    // Suspend, resume, revoke.
    let serial = &issued[0].serial_hex;
    ca.hold(serial, &holder).await.unwrap();
    assert_eq!(ca.status(serial).await.unwrap(), CertStatus::Held);
    ca.release(serial, &holder).await.unwrap();
    assert_eq!(ca.status(serial).await.unwrap(), CertStatus::Good);
    ca.revoke(serial, "keyCompromise", &holder).await.unwrap();
    assert_eq!(
        ca.status(serial).await.unwrap(),
        CertStatus::Revoked {
            reason: "keyCompromise".into()
        }
    );
    match ca.hold(serial, &holder).await {
        Err(CaError::Refused { code, .. }) => assert_eq!(code, "certificate_revoked"),
        other => panic!("hold of a revoked certificate: {other:?}"),
    }
    assert_eq!(
        ca.status(&issued[1].serial_hex).await.unwrap(),
        CertStatus::Good
    );

    // Key update: a new key for the same subject (the SM2 certificate is still current).
    token
        .generate_key_pair("p256-new", KeyAlgorithm::P256)
        .await
        .unwrap();
    let csr = hsm::csr::build_csr(token.as_ref(), "p256-new", subject)
        .await
        .unwrap();
    let renewed = ca.reenroll(&csr.der, &holder).await.unwrap();
    assert!(!issued.iter().any(|c| c.serial_hex == renewed.serial_hex));

    // Refusals carry the CA's code and are not retried.
    let mut tampered = csr.der.clone();
    let at = tampered
        .windows(b"Synthetic".len())
        .position(|w| w == b"Synthetic")
        .unwrap();
    tampered[at] = b's';
    let e = ca.enroll(&tampered, &holder).await.unwrap_err();
    assert!(!e.is_retryable());
    assert!(
        matches!(&e, CaError::Refused { code, .. } if code == "bad_csr_signature"),
        "{e}"
    );
    match ca.status("7f0000000000000000000000000000aa").await {
        Err(CaError::Refused { code, .. }) => assert_eq!(code, "unknown_certificate"),
        other => panic!("unknown serial: {other:?}"),
    }
    hq.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_ca_from_config_is_unavailable_after_bounded_retries() {
    let dir = tempfile::tempdir().unwrap();
    let pki = hq_ingest::dev_pki::generate(dir.path()).unwrap();
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let link = CaLink::with_config(kiosk_config::CaSection {
        url: Some(format!("https://127.0.0.1:{port}")),
        ca_cert: None,
        timeout_ms: 500,
    });
    // HQ's own URL is never used: `[ca] url` overrides it.
    link.connect(
        "https://127.0.0.1:1",
        &read(&pki.ca_cert),
        &read(&pki.kiosk_cert),
        &ClientKey::Pem(read(&pki.kiosk_key)),
        &|p: &Path| p.to_path_buf(),
    );
    let ca: CaClient = link.client(Duration::from_secs(1)).await.unwrap();
    let e = ca.status("7f01").await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(e.code(), "ca_unavailable");
}

/// A TLS endpoint with HQ's demo server certificate that answers every request with 200 and
/// `size` bytes (chunked: no Content-Length to refuse it early).
async fn oversized_server(pki: &hq_ingest::dev_pki::DevPki, size: usize) -> std::net::SocketAddr {
    let config = rustls::ServerConfig::builder_with_provider(records::client::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            records::client::tls::certs_from_pem(&read(&pki.server_cert), "server").unwrap(),
            records::client::tls::key_from_pem(&read(&pki.server_key), "key").unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = [0u8; 4096];
                let _ = tls.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/cbor\r\ntransfer-encoding: chunked\r\n\r\n";
                if tls.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![0x41u8; 64 * 1024];
                let mut sent = 0;
                while sent < size {
                    let n = chunk.len().min(size - sent);
                    let framed = format!("{n:x}\r\n");
                    if tls.write_all(framed.as_bytes()).await.is_err()
                        || tls.write_all(&chunk[..n]).await.is_err()
                        || tls.write_all(b"\r\n").await.is_err()
                    {
                        return;
                    }
                    sent += n;
                }
                let _ = tls.write_all(b"0\r\n\r\n").await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_answer_from_hq_or_the_ca_is_a_typed_error_at_the_kiosk() {
    let dir = tempfile::tempdir().unwrap();
    let pki = hq_ingest::dev_pki::generate(dir.path()).unwrap();
    let addr = oversized_server(&pki, 8 * 1024 * 1024).await;
    let url = format!("https://{addr}");
    // The CA client.
    let ca = CaClient::new(
        &url,
        &read(&pki.ca_cert),
        &read(&pki.kiosk_cert),
        &ClientKey::Pem(read(&pki.kiosk_key)),
        Duration::from_secs(20),
    )
    .unwrap();
    match ca.status("7f01").await {
        Err(CaError::AnswerTooLarge { limit }) => {
            assert_eq!(limit, kioskd::ca_client::MAX_ANSWER_BYTES)
        }
        other => panic!("an 8 MiB CA answer: {other:?}"),
    }
    // The sync link's HQ client.
    let hq = records::client::HqClient::from_url(
        &url,
        &read(&pki.ca_cert),
        &read(&pki.kiosk_cert),
        &ClientKey::Pem(read(&pki.kiosk_key)),
    )
    .unwrap();
    match hq.send_envelope(vec![0u8; 16]).await {
        Err(records::client::ClientError::AnswerTooLarge { status: 200, limit }) => {
            assert_eq!(limit, records::client::MAX_ANSWER_BYTES)
        }
        other => panic!("an 8 MiB HQ answer: {other:?}"),
    }
}
