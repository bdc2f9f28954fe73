//! Kiosk enrollment at HQ against a real PostgreSQL: a one-time code works once (also when
//! used twice at the same moment), expires, is tied to its kiosk; the certificate issued is a
//! kiosk client certificate HQ's mTLS verifier accepts; refusals are audited without the code;
//! the enrollment listener serves nothing else.

mod common;

use std::time::Duration;

use hq_ingest::ca::Issuer;
use hq_ingest::enroll::{EnrollError, EnrollService, create_code};
use hq_ingest::{db, dev_pki, keys};
use records::client::enroll::EnrollRequest;
use records::{SM2_DEFAULT_DISTID, SoftSigner};

const KIOSK: &str = "kiosk-enroll-0001";

struct Setup {
    _dir: tempfile::TempDir,
    pki: dev_pki::DevPki,
    client: tokio_postgres::Client,
    service: EnrollService,
}

async fn setup(test: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = dev_pki::generate(dir.path()).unwrap();
    let url = common::cluster()
        .create_database(&format!("{test}_{}", std::process::id()))
        .await
        .unwrap();
    let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    db::migrate(&mut client).await.unwrap();
    let issuer =
        Issuer::load(&pki.ca_cert, &pki.ca_key, Duration::from_secs(365 * 86_400)).unwrap();
    let record_public = std::fs::read_to_string(&pki.record_public).unwrap();
    let witness_public = std::fs::read_to_string(&pki.witness_public).unwrap();
    let service = EnrollService::new(
        db::pool(&url, 8).unwrap(),
        issuer,
        record_public,
        witness_public,
        "hq-witness".into(),
    );
    Setup {
        _dir: dir,
        pki,
        client,
        service,
    }
}

/// A request as `kioskctl provision` makes it (software keys stand in for the token's).
fn request(code: &str, kiosk_id: &str) -> EnrollRequest {
    let tls_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, kiosk_id);
    let csr = params.serialize_request(&tls_key).unwrap();
    let device = SoftSigner::generate_sm2(SM2_DEFAULT_DISTID).unwrap();
    EnrollRequest {
        code: code.to_owned(),
        kiosk_id: kiosk_id.to_owned(),
        csr_pem: csr.pem().unwrap(),
        device_key: keys::verifier_to_json(&device.verifier()),
    }
}

async fn code(setup: &mut Setup, ttl: Duration) -> String {
    let issued = create_code(&mut setup.client, KIOSK, "Pudong branch", ttl, "tester")
        .await
        .unwrap();
    issued.code.grouped().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_used_twice_at_once_enrolls_exactly_one_kiosk() {
    let mut s = setup("enroll_race").await;
    let code = code(&mut s, Duration::from_secs(3600)).await;
    let attempts: Vec<_> = (0..6)
        .map(|_| {
            let service = s.service.clone();
            let req = request(&code, KIOSK);
            tokio::spawn(async move { service.enroll(&req).await })
        })
        .collect();
    let mut won = Vec::new();
    let mut used = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(answer) => won.push(answer),
            Err(EnrollError::UsedCode) => used += 1,
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one use wins");
    assert_eq!(used, 5, "every other use finds the code used");
    let answer = &won[0];
    assert_eq!(answer.kiosk_id, KIOSK);
    assert_eq!(answer.branch, "Pudong branch");
    // The chain is a kiosk client certificate the mTLS listener's verifier accepts.
    let chain =
        hq_ingest::tls::certs_from_pem(answer.certificate_chain_pem.as_bytes(), "chain").unwrap();
    assert_eq!(chain.len(), 2, "leaf and kiosk CA");
    assert!(hq_ingest::tls::has_client_auth(&chain[0]));
    assert_eq!(
        hq_ingest::tls::common_name(&chain[0]).as_deref(),
        Some(KIOSK)
    );
    assert_eq!(
        hq_ingest::tls::serial_hex(&chain[0]).as_deref(),
        Some(answer.serial.as_str())
    );
    let verifier = hq_ingest::tls::KioskClientVerifier::new(
        hq_ingest::tls::roots(&std::fs::read(&s.pki.ca_cert).unwrap()).unwrap(),
        None,
    )
    .unwrap();
    use rustls::server::danger::ClientCertVerifier as _;
    verifier
        .verify_client_cert(&chain[0], &[], rustls::pki_types::UnixTime::now())
        .expect("HQ's mTLS verifier accepts the enrolled kiosk's certificate");
    // The kiosk's device key and branch are registered; the serial is known for revocation.
    let row = s
        .client
        .query_one(
            "SELECT signature_algorithm, branch FROM kiosks WHERE kiosk_id = $1",
            &[&KIOSK],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "sm2-sm3");
    assert_eq!(row.get::<_, Option<&str>>(1), Some("Pudong branch"));
    let seen: i64 = s
        .client
        .query_one(
            "SELECT count(*) FROM kiosk_certificates WHERE kiosk_id = $1 AND serial_hex = $2",
            &[&KIOSK, &answer.serial],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 1);
}

#[tokio::test]
async fn expired_unknown_and_other_kiosks_codes_are_refused_and_audited_without_the_code() {
    let mut s = setup("enroll_refusals").await;
    let expired = code(&mut s, Duration::ZERO).await;
    let err = s
        .service
        .enroll(&request(&expired, KIOSK))
        .await
        .unwrap_err();
    assert!(matches!(err, EnrollError::ExpiredCode), "{err}");

    let unknown = hq_ingest::enroll::EnrollmentCode::generate().unwrap();
    let err = s
        .service
        .enroll(&request(&unknown.grouped(), KIOSK))
        .await
        .unwrap_err();
    assert!(matches!(err, EnrollError::UnknownCode), "{err}");
    let err = s
        .service
        .enroll(&request("not-a-code", KIOSK))
        .await
        .unwrap_err();
    assert!(matches!(err, EnrollError::Malformed), "{err}");

    // A code is tied to its kiosk id, and a refusal for another kiosk does not consume it.
    let good = code(&mut s, Duration::from_secs(600)).await;
    let err = s
        .service
        .enroll(&request(&good, "kiosk-somewhere-else"))
        .await
        .unwrap_err();
    assert!(matches!(err, EnrollError::OtherKiosk), "{err}");
    s.service.enroll(&request(&good, KIOSK)).await.unwrap();
    let err = s.service.enroll(&request(&good, KIOSK)).await.unwrap_err();
    assert!(matches!(err, EnrollError::UsedCode), "{err}");

    // Each refusal is in the hash-chained audit with its code; no enrollment code anywhere.
    let rows = s
        .client
        .query(
            "SELECT action, outcome, code, entry FROM ca_audit ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    let refusals: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<_, &str>(1) == "refused")
        .map(|r| r.get::<_, String>(2))
        .collect();
    assert_eq!(
        refusals,
        [
            "enrollment_code_expired",
            "enrollment_code_unknown",
            "enrollment_code_malformed",
            "enrollment_code_other_kiosk",
            "enrollment_code_used"
        ]
    );
    let unknown_text: String = unknown.grouped().as_str().to_owned();
    for row in &rows {
        let entry: &str = row.get(3);
        for c in [&expired, &good, &unknown_text] {
            assert!(!entry.contains(c.as_str()), "the code reached the audit");
            assert!(!entry.contains(&c.replace('-', "")));
        }
    }
    let stored: i64 = s
        .client
        .query_one("SELECT count(*) FROM enrollment_codes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 2, "only hashes of the two codes made");
    hq_ingest::ca_audit::verify_chain(&s.client).await.unwrap();
}

/// One HTTP/1.1 request over TLS 1.3 trusting `ca_pem`, without a client certificate; the
/// whole answer (empty when the server ends the connection instead).
async fn https_without_client_cert(
    addr: std::net::SocketAddr,
    ca_pem: &[u8],
    request: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = rustls::ClientConfig::builder_with_provider(hq_ingest::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(hq_ingest::tls::roots(ca_pem).unwrap())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let Ok(mut tls) = connector.connect(name, tcp).await else {
        return String::new();
    };
    if tls.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enrollment_listener_serves_enrollment_only_and_the_mtls_listener_still_needs_a_kiosk_certificate()
 {
    let mut s = setup("enroll_listener").await;
    let pki = s.pki.clone();
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let url = common::cluster()
        .create_database(&format!("enroll_listener_ingest_{}", std::process::id()))
        .await
        .unwrap();
    let pool = db::pool(&url, 4).unwrap();
    let ingestor = hq_ingest::ingest::Ingestor::new(
        pool,
        std::sync::Arc::new(keys::load_soft_recipient(&pki.record_key).unwrap()),
        std::sync::Arc::new(keys::load_witness_key(&pki.witness_key).unwrap()),
        "hq-witness".into(),
        std::sync::Arc::new(hq_ingest::ingest::SystemClock),
        std::sync::Arc::new(hq_ingest::metrics::Metrics::new()),
    );
    let server = hq_ingest::server::start_services(
        ingestor,
        None,
        Some(hq_ingest::server::EnrollListener {
            service: s.service.clone(),
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: hq_ingest::tls::enroll_server_config(
                &read(&pki.server_cert),
                &read(&pki.server_key),
            )
            .unwrap(),
        }),
        hq_ingest::tls::server_config(
            &read(&pki.ca_cert),
            &read(&pki.server_cert),
            &read(&pki.server_key),
        )
        .unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        None,
    )
    .await
    .unwrap();
    let enroll_addr = server.enroll_addr.unwrap();
    let ca = read(&pki.ca_cert);
    let http = |method: &str, path: &str, body: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    for (method, path) in [
        ("POST", "/v1/batches"),
        ("GET", "/metrics"),
        ("GET", "/health"),
        ("GET", "/.well-known/est/cacerts"),
        ("POST", "/.well-known/est/simpleenroll"),
    ] {
        let answer = https_without_client_cert(enroll_addr, &ca, &http(method, path, "")).await;
        assert!(
            answer.starts_with("HTTP/1.1 404") || answer.starts_with("HTTP/1.1 405"),
            "{method} {path} on the enrollment listener: {answer}"
        );
    }
    // Enrollment itself works there without a client certificate.
    let code = code(&mut s, Duration::from_secs(600)).await;
    let body = serde_json::to_string(&request(&code, KIOSK)).unwrap();
    let answer =
        https_without_client_cert(enroll_addr, &ca, &http("POST", "/v1/enroll", &body)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The mTLS listener answers nothing to a peer without a kiosk certificate.
    let answer =
        https_without_client_cert(server.addr, &ca, &http("POST", "/v1/enroll", &body)).await;
    assert!(!answer.starts_with("HTTP/1.1"), "{answer}");
    server.shutdown().await;
}
