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
use kioskd::ca_client::{CaClient, CaError, CaLink, CertStatus};
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

    let subject = "CN=Synthetic Applicant,O=Synthetic Test Org";
    let mut issued = Vec::new();
    for (label, algorithm) in [("p256", KeyAlgorithm::P256), ("sm2", KeyAlgorithm::Sm2)] {
        let key = token.generate_key_pair(label, algorithm).await.unwrap();
        let csr = hsm::csr::build_csr(token.as_ref(), label, subject)
            .await
            .unwrap();
        let cert = ca.enroll(&csr.der).await.unwrap();
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
    ca.hold(serial).await.unwrap();
    assert_eq!(ca.status(serial).await.unwrap(), CertStatus::Held);
    ca.release(serial).await.unwrap();
    assert_eq!(ca.status(serial).await.unwrap(), CertStatus::Good);
    ca.revoke(serial, "keyCompromise").await.unwrap();
    assert_eq!(
        ca.status(serial).await.unwrap(),
        CertStatus::Revoked {
            reason: "keyCompromise".into()
        }
    );
    match ca.hold(serial).await {
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
    let renewed = ca.reenroll(&csr.der).await.unwrap();
    assert!(!issued.iter().any(|c| c.serial_hex == renewed.serial_hex));

    // Refusals carry the CA's code and are not retried.
    let mut tampered = csr.der.clone();
    let at = tampered
        .windows(b"Synthetic".len())
        .position(|w| w == b"Synthetic")
        .unwrap();
    tampered[at] = b's';
    let e = ca.enroll(&tampered).await.unwrap_err();
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
