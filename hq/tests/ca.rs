//! The CA endpoint (EST enroll/re-enroll, cacerts, status, revoke, hold, release) on HQ's mTLS
//! listener, driven over real TLS with the demo kiosk's client certificate.

mod common;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use der::{Decode, Encode};
use hq_ingest::ca::{CaService, DEFAULT_VALIDITY, Issuer, PKCS7_CERTS_ONLY};
use hq_ingest::ingest::{Ingestor, SystemClock};
use hq_ingest::server::RunningServer;
use hq_ingest::tls::ClientKey;
use hq_ingest::{ca, db, dev_pki, keys, metrics, server, tls};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use x509_parser::prelude::*;

struct CaHq {
    _dir: tempfile::TempDir,
    pki: dev_pki::DevPki,
    server: RunningServer,
    url: String,
    /// Holder of each certificate issued through [`CaHq::est`] (serial → keyed digest), so
    /// status changes can name it as the kiosk does.
    holders: std::sync::Mutex<std::collections::HashMap<String, [u8; 32]>>,
}

/// Knobs of [`CaHq::start_with`].
#[derive(Default)]
struct Options {
    policy: Option<hq_ingest::policy::IssuancePolicy>,
    kiosk_crl: Option<std::path::PathBuf>,
    /// Extra trust roots for client certificates (PEM), as where roots are shared.
    extra_client_roots: Option<Vec<u8>>,
    /// Serve on this database instead of a new one.
    database: Option<String>,
}

/// The synthetic holder's keyed digest for a name (tests: SHA-256 of the name).
fn holder_for(name: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(name.as_bytes()).into()
}

/// The subject serialNumber of a holder: the first 16 bytes of the keyed digest, hex.
fn serial_number_for(name: &str) -> String {
    hex::encode(&holder_for(name)[..16])
}

/// The holder named by a request's CN, if it parses.
fn holder_of_csr(csr_der: &[u8]) -> Option<[u8; 32]> {
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr_der).ok()?;
    let cn = csr
        .certification_request_info
        .subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(holder_for(&cn))
}

const SERVICE: &str = "enterprise_cert_application";

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON answer")
    }
}

impl CaHq {
    async fn start(test: &str) -> Self {
        Self::start_with(test, Options::default()).await
    }

    async fn start_with(test: &str, options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = dev_pki::generate(dir.path()).unwrap();
        Self::serve(test, dir, pki, options).await
    }

    /// Another HQ over the same PKI: on the same database (a replica) unless `options`
    /// names another.
    async fn replica(&self, name: &str, options: Options) -> RunningServer {
        let dir = tempfile::tempdir().unwrap();
        let copy = |p: &std::path::Path| {
            let to = dir.path().join(p.file_name().unwrap());
            std::fs::copy(p, &to).unwrap();
        };
        for p in [
            &self.pki.ca_cert,
            &self.pki.ca_key,
            &self.pki.server_cert,
            &self.pki.server_key,
            &self.pki.kiosk_cert,
            &self.pki.kiosk_key,
            &self.pki.record_key,
            &self.pki.record_public,
            &self.pki.witness_key,
            &self.pki.witness_public,
            &self.pki.issuing_ca_cert,
            &self.pki.issuing_ca_key,
        ] {
            copy(p);
        }
        let pki = dev_pki::load_or_generate(dir.path()).unwrap();
        let database = match options.database {
            Some(url) if url.is_empty() => None,
            Some(url) => Some(url),
            None => Some(self.url.clone()),
        };
        let other = Self::serve(
            name,
            dir,
            pki,
            Options {
                database,
                ..options
            },
        )
        .await;
        other.server
    }

    async fn serve(
        test: &str,
        dir: tempfile::TempDir,
        pki: dev_pki::DevPki,
        options: Options,
    ) -> Self {
        let url = match options.database {
            Some(url) => url,
            None => common::cluster()
                .create_database(&format!("ca_{test}_{}", std::process::id()))
                .await
                .unwrap(),
        };
        let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        db::migrate(&mut client).await.unwrap();
        // The demo kiosk is registered at HQ (only registered kiosks reach the CA).
        db::register_kiosk(
            &client,
            dev_pki::DEMO_KIOSK_ID,
            &records::SoftSigner::generate_p256().verifier(),
        )
        .await
        .unwrap();
        let ingestor = Ingestor::new(
            db::pool(&url, 4).unwrap(),
            Arc::new(keys::load_soft_recipient(&pki.record_key).unwrap()),
            Arc::new(keys::load_witness_key(&pki.witness_key).unwrap()),
            common::WITNESS_NAME.into(),
            Arc::new(SystemClock),
            Arc::new(metrics::Metrics::new()),
        );
        let issuer =
            Issuer::load(&pki.issuing_ca_cert, &pki.issuing_ca_key, DEFAULT_VALIDITY).unwrap();
        let ca = match options.policy {
            Some(policy) => CaService::with_policy(issuer, ingestor.pool().clone(), policy),
            None => CaService::new(issuer, ingestor.pool().clone()),
        }
        .unwrap();
        let read = |p: &std::path::Path| std::fs::read(p).unwrap();
        let mut client_roots = read(&pki.ca_cert);
        if let Some(extra) = &options.extra_client_roots {
            client_roots.extend_from_slice(extra);
        }
        let tls_config = tls::server_config_with_crl(
            &client_roots,
            &read(&pki.server_cert),
            &read(&pki.server_key),
            options.kiosk_crl.as_deref(),
        )
        .unwrap();
        let loopback = "127.0.0.1:0".parse().unwrap();
        let server =
            server::start_with_ca(ingestor, Some(ca), tls_config, loopback, Some(loopback))
                .await
                .unwrap();
        Self {
            _dir: dir,
            pki,
            server,
            url,
            holders: Default::default(),
        }
    }

    async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    fn kiosk_tls(&self) -> Arc<rustls::ClientConfig> {
        tls::client_config(
            &std::fs::read(&self.pki.ca_cert).unwrap(),
            &std::fs::read(&self.pki.kiosk_cert).unwrap(),
            &ClientKey::Pem(std::fs::read(&self.pki.kiosk_key).unwrap()),
        )
        .unwrap()
    }

    /// One request over mTLS as the demo kiosk; a status change names the holder of the
    /// certificate as the kiosk does (when the certificate was issued here).
    async fn call(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        let holder = path
            .strip_prefix("/ca/v1/certificates/")
            .and_then(|rest| rest.split('/').next())
            .and_then(|serial| self.holders.lock().unwrap().get(serial).copied());
        let headers: Vec<(&str, String)> = holder
            .map(|h| vec![(ca::HOLDER_HEADER, hex::encode(h))])
            .unwrap_or_default();
        self.call_as(self.kiosk_tls(), method, path, content_type, &headers, body)
            .await
            .expect("request")
    }

    async fn call_with(
        &self,
        config: Arc<rustls::ClientConfig>,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        self.call_as(config, method, path, content_type, &[], body)
            .await
    }

    async fn call_as(
        &self,
        config: Arc<rustls::ClientConfig>,
        method: &str,
        path: &str,
        content_type: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        call_at(
            self.server.addr,
            config,
            method,
            path,
            content_type,
            headers,
            body,
        )
        .await
    }

    /// The same request on the plain health/metrics listener (no client certificate).
    async fn call_plain(&self, method: &str, path: &str) -> Answer {
        let tcp = tokio::net::TcpStream::connect(self.server.metrics_addr.unwrap())
            .await
            .unwrap();
        send(
            TokioIo::new(tcp),
            method,
            path,
            "application/pkcs10",
            &[],
            vec![],
        )
        .await
        .unwrap()
    }

    async fn post(&self, path: &str, json: &str) -> Answer {
        self.call("POST", path, "application/json", json.as_bytes().to_vec())
            .await
    }

    async fn enroll(&self, csr_der: &[u8]) -> Answer {
        self.est("simpleenroll", csr_der).await
    }

    /// EST as the kiosk sends it: the service and the holder (from the request's CN) in
    /// headers.
    async fn est(&self, operation: &str, csr_der: &[u8]) -> Answer {
        self.est_as(self.kiosk_tls(), operation, csr_der, SERVICE)
            .await
            .expect("request")
    }

    async fn est_as(
        &self,
        config: Arc<rustls::ClientConfig>,
        operation: &str,
        csr_der: &[u8],
        service: &str,
    ) -> Result<Answer, String> {
        self.est_at(self.server.addr, config, operation, csr_der, service)
            .await
    }

    async fn est_at(
        &self,
        addr: std::net::SocketAddr,
        config: Arc<rustls::ClientConfig>,
        operation: &str,
        csr_der: &[u8],
        service: &str,
    ) -> Result<Answer, String> {
        let holder = holder_of_csr(csr_der);
        let mut headers = vec![
            (ca::SERVICE_HEADER, service.to_owned()),
            (ca::APPLICATION_HEADER, "session-test-0001".to_owned()),
        ];
        if let Some(h) = holder {
            headers.push((ca::HOLDER_HEADER, hex::encode(h)));
        }
        let answer = call_at(
            addr,
            config,
            "POST",
            &format!("/.well-known/est/{operation}"),
            "application/pkcs10",
            &headers,
            BASE64.encode(csr_der).into_bytes(),
        )
        .await?;
        if answer.status == 200
            && let Some(h) = holder
        {
            for cert in certs_of(&answer) {
                self.holders.lock().unwrap().insert(serial_hex(&cert), h);
            }
        }
        Ok(answer)
    }

    fn ca_cert_der(&self) -> Vec<u8> {
        ::pem::parse(std::fs::read(&self.pki.issuing_ca_cert).unwrap())
            .unwrap()
            .into_contents()
    }
}

async fn call_at(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    content_type: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Answer, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    send(TokioIo::new(tls), method, path, content_type, headers, body).await
}

async fn send<IO>(
    io: TokioIo<IO>,
    method: &str,
    path: &str,
    content_type: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Answer, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::CONTENT_TYPE, content_type);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

/// Certificates of a base64 PKCS#7 certs-only answer.
fn certs_of(answer: &Answer) -> Vec<Vec<u8>> {
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.content_type, PKCS7_CERTS_ONLY);
    let compact: Vec<u8> = answer
        .body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = BASE64.decode(compact).unwrap();
    let info = cms::content_info::ContentInfo::from_der(&der).unwrap();
    assert_eq!(info.content_type, const_oid::db::rfc5911::ID_SIGNED_DATA);
    let signed: cms::signed_data::SignedData = info.content.decode_as().unwrap();
    assert!(
        signed.signer_infos.0.is_empty(),
        "certs-only has no signers"
    );
    signed
        .certificates
        .unwrap()
        .0
        .iter()
        .map(|c| match c {
            cms::cert::CertificateChoices::Certificate(c) => c.to_der().unwrap(),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// A P-256 request made by rcgen as the kiosk builds them for an enterprise (CN, the
/// holder's serialNumber, O, C=CN); returns (request DER, key's SEC1 point).
fn rcgen_csr(common_name: &str) -> (Vec<u8>, Vec<u8>) {
    let (csr, key) = rcgen_csr_with(common_name, &[]);
    (csr, key.public_key_raw().to_vec())
}

/// [`rcgen_csr`] with extra subject attributes; returns the key too.
fn rcgen_csr_with(common_name: &str, extra: &[(rcgen::DnType, &str)]) -> (Vec<u8>, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.distinguished_name.push(
        rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]),
        rcgen::DnValue::PrintableString(serial_number_for(common_name).try_into().unwrap()),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Synthetic Test Org");
    for (t, v) in extra {
        params.distinguished_name.push(t.clone(), *v);
    }
    params.distinguished_name.push(
        rcgen::DnType::CountryName,
        rcgen::DnValue::PrintableString("CN".try_into().unwrap()),
    );
    let csr = params.serialize_request(&key).unwrap();
    (csr.der().to_vec(), key)
}

/// An SM2 request signed with SM2-with-SM3 and the default signer ID (as `hsm::csr` does).
fn sm2_csr(subject: &str) -> (Vec<u8>, Vec<u8>) {
    use std::str::FromStr;
    let soft = records::SoftSigner::generate_sm2(records::SM2_DEFAULT_DISTID).unwrap();
    let signing =
        sm2::dsa::SigningKey::from_slice(records::SM2_DEFAULT_DISTID, &soft.secret_bytes())
            .unwrap();
    let spki_der = spki::EncodePublicKey::to_public_key_der(signing.verifying_key()).unwrap();
    let info = x509_cert::request::CertReqInfo {
        version: x509_cert::request::Version::V1,
        subject: x509_cert::name::Name::from_str(subject).unwrap(),
        public_key: spki::SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes()).unwrap(),
        attributes: Default::default(),
    };
    let signature: sm2::dsa::Signature = signature::Signer::sign(&signing, &info.to_der().unwrap());
    let point = info
        .public_key
        .subject_public_key
        .as_bytes()
        .unwrap()
        .to_vec();
    let request = x509_cert::request::CertReq {
        info,
        algorithm: spki::AlgorithmIdentifierOwned {
            oid: hq_ingest::ca::SM2_WITH_SM3,
            parameters: None,
        },
        signature: der::asn1::BitString::from_bytes(&signature.to_der().to_bytes()).unwrap(),
    };
    (request.to_der().unwrap(), point)
}

fn serial_hex(cert_der: &[u8]) -> String {
    let (_, cert) = X509Certificate::from_der(cert_der).unwrap();
    hex::encode(cert.raw_serial())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolls_p256_and_sm2_requests_with_certificates_chaining_to_the_ca() {
    let hq = CaHq::start("enroll").await;
    let ca_der = hq.ca_cert_der();
    let cacerts = certs_of(&hq.call("GET", "/.well-known/est/cacerts", "", vec![]).await);
    assert_eq!(cacerts, vec![ca_der.clone()]);
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();

    let (p256_csr, p256_point) = rcgen_csr("Applicant P256");
    let (sm2_csr, sm2_point) = sm2_csr(&format!(
        "CN=Applicant SM2,serialNumber={},O=Synthetic Test Org,C=CN",
        serial_number_for("Applicant SM2")
    ));
    let mut serials = Vec::new();
    for (csr, point, name) in [
        (&p256_csr, &p256_point, "Applicant P256"),
        (&sm2_csr, &sm2_point, "Applicant SM2"),
    ] {
        let certs = certs_of(&hq.enroll(csr).await);
        assert_eq!(certs.len(), 1, "only the issued certificate");
        let (_, cert) = X509Certificate::from_der(&certs[0]).unwrap();
        cert.verify_signature(Some(ca.public_key()))
            .expect("signed by the issuing CA");
        assert_eq!(cert.issuer(), ca.subject());
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            name
        );
        assert_eq!(&cert.public_key().subject_public_key.data[..], &point[..]);
        let serial = cert.raw_serial();
        assert_eq!(serial.len(), 16);
        assert!(
            serial[0] & 0x80 == 0 && serial[0] != 0,
            "positive, 16 octets"
        );
        let usage = cert.key_usage().unwrap().unwrap().value;
        assert!(usage.digital_signature() && usage.non_repudiation());
        assert!(!usage.key_cert_sign());
        assert!(!cert.is_ca());
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(days, 365);
        serials.push(hex::encode(serial));
    }
    assert_ne!(serials[0], serials[1]);

    // openssl agrees that the chain holds.
    let dir = tempfile::tempdir().unwrap();
    let leaf = dir.path().join("leaf.pem");
    let (_, cert_der) = (0, certs_of(&hq.enroll(&p256_csr).await).remove(0));
    std::fs::write(
        &leaf,
        ::pem::encode(&::pem::Pem::new("CERTIFICATE", cert_der.clone())),
    )
    .unwrap();
    let out = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&hq.pki.issuing_ca_cert)
        .arg(&leaf)
        .output()
        .expect("openssl installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The same request again (a retry after a lost answer) gets the same certificate.
    assert_eq!(serial_hex(&cert_der), serials[0]);
    let status = hq
        .call(
            "GET",
            &format!("/ca/v1/certificates/{}", serials[0]),
            "",
            vec![],
        )
        .await;
    assert_eq!(status.status, 200);
    let status = status.json();
    assert_eq!(status["status"], "good");
    assert_eq!(status["serial"], serials[0]);
    assert!(status["not_after_ms"].as_i64().unwrap() > 1_700_000_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_tampered_and_malformed_requests() {
    let hq = CaHq::start("refuse").await;
    let (csr, _) = rcgen_csr("Applicant Tamper");
    let mut tampered = csr.clone();
    let at = tampered
        .windows(b"Tamper".len())
        .position(|w| w == b"Tamper")
        .unwrap();
    tampered[at] = b'D';
    let answer = hq.enroll(&tampered).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["code"], "bad_csr_signature");

    let answer = hq
        .call(
            "POST",
            "/.well-known/est/simpleenroll",
            "application/pkcs10",
            b"not base64 at all!".to_vec(),
        )
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["code"], "bad_csr");

    let answer = hq.enroll(&csr[..csr.len() - 3]).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["code"], "bad_csr");

    let answer = hq
        .call(
            "POST",
            "/.well-known/est/simpleenroll",
            "application/json",
            BASE64.encode(&csr).into_bytes(),
        )
        .await;
    assert_eq!(answer.status, 400);

    // Nothing was issued by any of those.
    assert_eq!(certs_of(&hq.enroll(&csr).await).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_hold_release_and_status() {
    let hq = CaHq::start("status").await;
    let mut serials = Vec::new();
    for name in ["Holder One", "Holder Two"] {
        let (csr, _) = rcgen_csr(name);
        serials.push(serial_hex(&certs_of(&hq.enroll(&csr).await)[0]));
    }
    let path = |serial: &str, op: &str| format!("/ca/v1/certificates/{serial}{op}");

    // hold → held, release → good
    let held = hq.post(&path(&serials[0], "/hold"), "").await;
    assert_eq!(held.status, 200);
    assert_eq!(held.json()["status"], "held");
    assert_eq!(held.json()["reason"], "certificateHold");
    let status = hq
        .call("GET", &path(&serials[0], ""), "", vec![])
        .await
        .json();
    assert_eq!(status["status"], "held");
    let released = hq.post(&path(&serials[0], "/release"), "").await;
    assert_eq!(released.json()["status"], "good");
    assert!(released.json()["reason"].is_null());

    // revoke → revoked with the reason; final.
    let revoked = hq
        .post(
            &path(&serials[1], "/revoke"),
            r#"{"reason":"keyCompromise"}"#,
        )
        .await;
    assert_eq!(revoked.status, 200);
    let status = hq
        .call("GET", &path(&serials[1], ""), "", vec![])
        .await
        .json();
    assert_eq!(status["status"], "revoked");
    assert_eq!(status["reason"], "keyCompromise");
    let again = hq
        .post(&path(&serials[1], "/revoke"), r#"{"reason":"superseded"}"#)
        .await;
    assert_eq!(again.status, 200, "a retried revocation succeeds");
    assert_eq!(again.json()["reason"], "keyCompromise", "first reason kept");
    let hold_revoked = hq.post(&path(&serials[1], "/hold"), "").await;
    assert_eq!(hold_revoked.status, 409);
    assert_eq!(hold_revoked.json()["code"], "certificate_revoked");
    let release_revoked = hq.post(&path(&serials[1], "/release"), "").await;
    assert_eq!(release_revoked.status, 409);

    // The CRL lists the revoked certificate with its reason, signed by the CA; not the good one.
    hq.post(&path(&serials[0], "/hold"), "").await;
    let crl = hq.call("GET", "/ca/v1/crl", "", vec![]).await;
    assert_eq!(crl.status, 200);
    assert_eq!(crl.content_type, "application/pkix-crl");
    let (_, list) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&crl.body).unwrap();
    let ca_der = hq.ca_cert_der();
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    list.verify_signature(ca.public_key())
        .expect("CRL signed by the CA");
    let listed: Vec<(String, Option<ReasonCode>)> = list
        .iter_revoked_certificates()
        .map(|r| (hex::encode(r.raw_serial()), r.reason_code().map(|(_, c)| c)))
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&(serials[1].clone(), Some(ReasonCode::KeyCompromise))));
    assert!(listed.contains(&(serials[0].clone(), Some(ReasonCode::CertificateHold))));
    hq.post(&path(&serials[0], "/release"), "").await;
    let crl = hq.call("GET", "/ca/v1/crl", "", vec![]).await;
    let (_, list) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&crl.body).unwrap();
    let listed: Vec<String> = list
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    assert_eq!(listed, vec![serials[1].clone()], "released: off the CRL");

    // The other certificate is untouched.
    let status = hq
        .call("GET", &path(&serials[0], ""), "", vec![])
        .await
        .json();
    assert_eq!(status["status"], "good");

    // Bad inputs.
    let bad_reason = hq
        .post(&path(&serials[0], "/revoke"), r#"{"reason":"boredom"}"#)
        .await;
    assert_eq!(bad_reason.status, 400);
    assert_eq!(bad_reason.json()["code"], "bad_reason");
    let unknown = hq
        .call(
            "GET",
            &path("7f00000000000000000000000000abcd", ""),
            "",
            vec![],
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["code"], "unknown_certificate");
    let unknown = hq
        .post(&path("7f00000000000000000000000000abcd", "/hold"), "")
        .await;
    assert_eq!(unknown.status, 404);
    let bad = hq.call("GET", &path("not-hex", ""), "", vec![]).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["code"], "bad_serial");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reenroll_needs_a_current_certificate_of_the_subject() {
    let hq = CaHq::start("reenroll").await;
    let (first, _) = rcgen_csr("Renewing Holder");
    let first_serial = serial_hex(&certs_of(&hq.enroll(&first).await)[0]);
    let (second, second_point) = rcgen_csr("Renewing Holder");
    let certs = certs_of(&hq.est("simplereenroll", &second).await);
    let (_, cert) = X509Certificate::from_der(&certs[0]).unwrap();
    assert_eq!(
        &cert.public_key().subject_public_key.data[..],
        &second_point[..]
    );
    let serial = hex::encode(cert.raw_serial());
    assert_ne!(serial, first_serial);
    let status = hq
        .call("GET", &format!("/ca/v1/certificates/{serial}"), "", vec![])
        .await
        .json();
    assert_eq!(status["replaces"], first_serial);

    let (stranger, _) = rcgen_csr("Never Enrolled");
    let answer = hq.est("simplereenroll", &stranger).await;
    assert_eq!(answer.status, 409);
    assert_eq!(answer.json()["code"], "no_current_certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_authenticated_kiosks_reach_the_ca() {
    let hq = CaHq::start("auth").await;
    // The plain listener carries no client certificate.
    for (method, path) in [
        ("GET", "/.well-known/est/cacerts"),
        ("POST", "/.well-known/est/simpleenroll"),
        ("GET", "/ca/v1/certificates/7f01"),
        ("POST", "/ca/v1/certificates/7f01/revoke"),
    ] {
        let answer = hq.call_plain(method, path).await;
        assert_eq!(answer.status, 401, "{method} {path}");
        assert_eq!(answer.json()["code"], "client_certificate_required");
    }
    // TLS without a client certificate does not get an answer.
    let anonymous = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(tls::roots(&std::fs::read(&hq.pki.ca_cert).unwrap()).unwrap())
        .with_no_client_auth();
    let (csr, _) = rcgen_csr("Anonymous Caller");
    let result = hq
        .call_with(
            Arc::new(anonymous),
            "POST",
            "/.well-known/est/simpleenroll",
            "application/pkcs10",
            BASE64.encode(&csr).into_bytes(),
        )
        .await;
    assert!(result.is_err(), "answered without a client certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_kiosk_issuance_limit_holds_across_replicas_and_concurrent_requests() {
    let policy = || {
        hq_ingest::policy::IssuancePolicy::embedded().with_rate_limit(
            hq_ingest::policy::RateLimit {
                per_kiosk: 3,
                window: std::time::Duration::from_secs(3600),
            },
        )
    };
    let hq = Arc::new(
        CaHq::start_with(
            "ratelimit",
            Options {
                policy: Some(policy()),
                ..Default::default()
            },
        )
        .await,
    );
    let replica = hq
        .replica(
            "ratelimit_replica",
            Options {
                policy: Some(policy()),
                ..Default::default()
            },
        )
        .await;
    let addrs = [hq.server.addr, replica.addr];
    // Eight requests at once from the same kiosk, spread over both replicas.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let hq = hq.clone();
        let addr = addrs[i % 2];
        tasks.push(tokio::spawn(async move {
            let (csr, _) = rcgen_csr(&format!("Rate Holder {i}"));
            hq.est_at(addr, hq.kiosk_tls(), "simpleenroll", &csr, SERVICE)
                .await
                .unwrap()
        }));
    }
    let mut issued = 0;
    let mut limited = 0;
    for t in tasks {
        let answer = t.await.unwrap();
        match answer.status {
            200 => issued += 1,
            429 => {
                assert_eq!(answer.json()["code"], "issuance_rate_limited");
                limited += 1;
            }
            other => panic!("{other}: {}", String::from_utf8_lossy(&answer.body)),
        }
    }
    assert_eq!((issued, limited), (3, 5), "exactly the limit is issued");
    let db = hq.db().await;
    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM ca_certificates").await, 3);
    assert_eq!(
        count(
            "SELECT count(*) FROM ca_audit WHERE outcome = 'refused'
             AND code = 'issuance_rate_limited'"
        )
        .await,
        5
    );
    // Another kiosk has its own allowance.
    db::register_kiosk(
        &db,
        "kiosk-other-0002",
        &records::SoftSigner::generate_p256().verifier(),
    )
    .await
    .unwrap();
    let ca_key = std::fs::read_to_string(&hq.pki.ca_key).unwrap();
    let (cert, key) = dev_pki::issue_kiosk_cert(&ca_key, "kiosk-other-0002").unwrap();
    let other = tls::client_config(
        &std::fs::read(&hq.pki.ca_cert).unwrap(),
        cert.as_bytes(),
        &ClientKey::Pem(key.into_bytes()),
    )
    .unwrap();
    let (csr, _) = rcgen_csr("Rate Holder Other");
    let answer = hq
        .est_as(other, "simpleenroll", &csr, SERVICE)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_kiosk_is_refused_at_the_tls_layer() {
    let crl_dir = tempfile::tempdir().unwrap();
    let crl = crl_dir.path().join("kiosk-crl.der");
    let hq = CaHq::start_with(
        "revokedkiosk",
        Options {
            kiosk_crl: Some(crl.clone()),
            ..Default::default()
        },
    )
    .await;
    let cacerts = |config| hq.call_with(config, "GET", "/.well-known/est/cacerts", "", vec![]);
    assert_eq!(cacerts(hq.kiosk_tls()).await.unwrap().status, 200);
    // HQ staff revokes the kiosk with the command line.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hq-ingest"))
        .arg("revoke-kiosk")
        .args(["--database-url", &hq.url])
        .args(["--id", dev_pki::DEMO_KIOSK_ID])
        .arg("--kiosk-ca")
        .arg(&hq.pki.ca_cert)
        .arg("--kiosk-ca-key")
        .arg(&hq.pki.ca_key)
        .arg("--crl")
        .arg(&crl)
        .args(["--operator", "test-operator"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // openssl agrees: a CRL signed by the kiosk CA listing the kiosk's certificate.
    let out = std::process::Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&crl)
        .arg("-CAfile")
        .arg(&hq.pki.ca_cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase()
        + &String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("verify ok"), "{text}");
    let kiosk_pem = std::fs::read(&hq.pki.kiosk_cert).unwrap();
    let kiosk_der = tls::certs_from_pem(&kiosk_pem, "kiosk").unwrap().remove(0);
    let serial = tls::serial_hex(&kiosk_der).unwrap();
    assert!(text.replace(':', "").contains(&serial), "{text}");
    // The kiosk is refused from now on (the running HQ reloaded the CRL) ...
    let result = cacerts(hq.kiosk_tls()).await;
    assert!(
        result.is_err(),
        "revoked kiosk admitted: {:?}",
        result.map(|a| a.status)
    );
    // ... and at the TLS layer: an HQ on a database that knows nothing of the revocation,
    // loading the same CRL, refuses it too, while another kiosk's handshake succeeds there.
    let fresh = hq
        .replica(
            "revokedkiosk_fresh",
            Options {
                kiosk_crl: Some(crl.clone()),
                database: Some(String::new()),
                ..Default::default()
            },
        )
        .await;
    let result = call_at(
        fresh.addr,
        hq.kiosk_tls(),
        "GET",
        "/.well-known/est/cacerts",
        "",
        &[],
        vec![],
    )
    .await;
    assert!(result.is_err(), "the CRL did not refuse the kiosk");
    let ca_key = std::fs::read_to_string(&hq.pki.ca_key).unwrap();
    let (cert, key) = dev_pki::issue_kiosk_cert(&ca_key, "kiosk-other-0002").unwrap();
    let other = tls::client_config(
        &std::fs::read(&hq.pki.ca_cert).unwrap(),
        cert.as_bytes(),
        &ClientKey::Pem(key.into_bytes()),
    )
    .unwrap();
    let answer = call_at(
        fresh.addr,
        other,
        "GET",
        "/.well-known/est/cacerts",
        "",
        &[],
        vec![],
    )
    .await
    .expect("another kiosk's handshake succeeds");
    assert_eq!(answer.status, 403, "unregistered there");
    // The revocation is in HQ's audit.
    let revoked: i64 = hq
        .db()
        .await
        .query_one(
            "SELECT count(*) FROM ca_audit WHERE action = 'revoke-kiosk'
             AND actor = 'hq-staff:test-operator' AND target = $1",
            &[&dev_pki::DEMO_KIOSK_ID],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(revoked, 1);
    fresh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_audit_is_append_only_and_hash_chained() {
    let hq = CaHq::start("audit").await;
    let (csr, _) = rcgen_csr("Audited Holder");
    let serial = serial_hex(&certs_of(&hq.enroll(&csr).await)[0]);
    hq.post(&format!("/ca/v1/certificates/{serial}/hold"), "")
        .await;
    let (bad, _) = rcgen_csr_with("Audited Holder", &[(rcgen::DnType::LocalityName, "X")]);
    assert_eq!(hq.enroll(&bad).await.status, 400);
    // HQ staff releases it from the command line (no holder needed), audited by name.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hq-ingest"))
        .arg("ca-status")
        .args(["--database-url", &hq.url])
        .args(["--serial", &serial, "--action", "release"])
        .args(["--operator", "test-operator"])
        .arg("--ca-cert")
        .arg(&hq.pki.issuing_ca_cert)
        .arg("--ca-key")
        .arg(&hq.pki.issuing_ca_key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""status":"good""#));
    let db = hq.db().await;
    let by_staff: i64 = db
        .query_one(
            "SELECT count(*) FROM ca_audit WHERE actor = 'hq-staff:test-operator'
             AND action = 'release' AND outcome = 'done'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(by_staff, 1);
    assert_eq!(
        hq_ingest::ca_audit::verify_chain(&db).await.unwrap(),
        4,
        "enroll, hold, refusal, staff release"
    );
    for sql in [
        "UPDATE ca_audit SET code = NULL",
        "DELETE FROM ca_audit",
        "TRUNCATE ca_audit",
    ] {
        let e = db.batch_execute(sql).await.unwrap_err();
        assert!(format!("{e:?}").contains("append-only"), "{sql}: {e:?}");
    }
    // Someone who bypasses the trigger is still found out by the chain.
    db.batch_execute(
        "ALTER TABLE ca_audit DISABLE TRIGGER ca_audit_append_only;
         UPDATE ca_audit SET entry = replace(entry, 'hold', 'held') WHERE action = 'hold';
         ALTER TABLE ca_audit ENABLE TRIGGER ca_audit_append_only;",
    )
    .await
    .unwrap();
    assert!(hq_ingest::ca_audit::verify_chain(&db).await.is_err());
}
