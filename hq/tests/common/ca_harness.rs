//! An in-process HQ with the CA over real mTLS, driven with raw HTTP requests (the headers a
//! kiosk sends included), for the trust-boundary tests. Uses only long-standing hq-ingest
//! APIs so the same tests run against older code.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use hq_ingest::ca::{CaService, DEFAULT_VALIDITY, Issuer};
use hq_ingest::ingest::{Ingestor, SystemClock};
use hq_ingest::server::RunningServer;
use hq_ingest::tls::ClientKey;
use hq_ingest::{db, dev_pki, keys, metrics, server, tls};

/// The second registered kiosk of [`CaHarness`].
pub const OTHER_KIOSK: &str = "kiosk-other-0002";

pub struct CaHarness {
    pub dir: tempfile::TempDir,
    pub pki: dev_pki::DevPki,
    pub url: String,
    pub server: RunningServer,
}

pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The synthetic holder's keyed digest (tests: SHA-256 of a label).
pub fn holder(label: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(label.as_bytes()).into()
}

/// A P-256 request with the subject attributes given in order; returns (DER, key).
pub fn csr(attributes: &[(rcgen::DnType, String)]) -> (Vec<u8>, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    for (t, v) in attributes {
        let value = match t {
            rcgen::DnType::CountryName | rcgen::DnType::CustomDnType(_) => {
                rcgen::DnValue::PrintableString(v.clone().try_into().unwrap())
            }
            _ => rcgen::DnValue::Utf8String(v.clone()),
        };
        params.distinguished_name.push(t.clone(), value);
    }
    let request = params.serialize_request(&key).unwrap();
    (request.der().to_vec(), key)
}

/// serialNumber (2.5.4.5).
pub fn serial_number_type() -> rcgen::DnType {
    rcgen::DnType::CustomDnType(vec![2, 5, 4, 5])
}

/// A request as the kiosk builds it for a personal certificate: CN, serialNumber, C=CN.
pub fn personal_csr(name: &str, holder: &[u8; 32]) -> (Vec<u8>, rcgen::KeyPair) {
    csr(&[
        (rcgen::DnType::CommonName, name.to_owned()),
        (serial_number_type(), hex::encode(&holder[..16])),
        (rcgen::DnType::CountryName, "CN".to_owned()),
    ])
}

/// Headers of an enrollment by the kiosk for `holder` under `service`.
pub fn enroll_headers(service: &str, holder: &[u8; 32]) -> Vec<(&'static str, String)> {
    vec![
        ("kioskd-service", service.to_owned()),
        ("kioskd-holder", hex::encode(holder)),
        ("kioskd-application", "session-0001".to_owned()),
    ]
}

/// The holder header of a status change.
pub fn holder_header(holder: &[u8; 32]) -> Vec<(&'static str, String)> {
    vec![("kioskd-holder", hex::encode(holder))]
}

impl CaHarness {
    /// HQ with the CA; client certificates are trusted from HQ's kiosk CA and, with
    /// `shared_roots`, also from the issuing CA (as where roots are shared). The demo kiosk
    /// and [`OTHER_KIOSK`] are registered.
    pub async fn start(test: &str, shared_roots: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = dev_pki::generate(dir.path()).unwrap();
        let url = super::cluster()
            .create_database(&format!("trust_{test}_{}", std::process::id()))
            .await
            .unwrap();
        let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        db::migrate(&mut client).await.unwrap();
        for kiosk in [dev_pki::DEMO_KIOSK_ID, OTHER_KIOSK] {
            db::register_kiosk(
                &client,
                kiosk,
                &records::SoftSigner::generate_p256().verifier(),
            )
            .await
            .unwrap();
        }
        let ingestor = Ingestor::new(
            db::pool(&url, 4).unwrap(),
            Arc::new(keys::load_soft_recipient(&pki.record_key).unwrap()),
            Arc::new(keys::load_witness_key(&pki.witness_key).unwrap()),
            super::WITNESS_NAME.into(),
            Arc::new(SystemClock),
            Arc::new(metrics::Metrics::new()),
        );
        let issuer =
            Issuer::load(&pki.issuing_ca_cert, &pki.issuing_ca_key, DEFAULT_VALIDITY).unwrap();
        let ca = CaService::new(issuer, ingestor.pool().clone()).unwrap();
        let read = |p: &std::path::Path| std::fs::read(p).unwrap();
        let mut roots = read(&pki.ca_cert);
        if shared_roots {
            roots.extend_from_slice(&read(&pki.issuing_ca_cert));
        }
        let tls_config =
            tls::server_config(&roots, &read(&pki.server_cert), &read(&pki.server_key)).unwrap();
        let server = server::start_with_ca(
            ingestor,
            Some(ca),
            tls_config,
            "127.0.0.1:0".parse().unwrap(),
            None,
        )
        .await
        .unwrap();
        Self {
            dir,
            pki,
            url,
            server,
        }
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    /// TLS client config with a client certificate and key (PEM).
    pub fn tls_as(&self, cert_pem: &[u8], key_pem: &[u8]) -> Arc<rustls::ClientConfig> {
        tls::client_config(
            &std::fs::read(&self.pki.ca_cert).unwrap(),
            cert_pem,
            &ClientKey::Pem(key_pem.to_vec()),
        )
        .unwrap()
    }

    /// The demo kiosk.
    pub fn kiosk(&self) -> Arc<rustls::ClientConfig> {
        self.tls_as(
            &std::fs::read(&self.pki.kiosk_cert).unwrap(),
            &std::fs::read(&self.pki.kiosk_key).unwrap(),
        )
    }

    /// A kiosk with a client certificate from HQ's kiosk CA (clientAuth).
    pub fn kiosk_named(&self, kiosk_id: &str) -> Arc<rustls::ClientConfig> {
        let ca_key = std::fs::read_to_string(&self.pki.ca_key).unwrap();
        let (cert, key) = dev_pki::issue_kiosk_cert(&ca_key, kiosk_id).unwrap();
        self.tls_as(cert.as_bytes(), key.as_bytes())
    }

    /// One request over mTLS.
    pub async fn call(
        &self,
        config: Arc<rustls::ClientConfig>,
        method: &str,
        path: &str,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        call_at(self.server.addr, config, method, path, headers, body).await
    }

    /// EST simpleenroll of `csr_der`.
    pub async fn enroll(
        &self,
        config: Arc<rustls::ClientConfig>,
        csr_der: &[u8],
        headers: &[(&'static str, String)],
    ) -> Answer {
        let mut all = vec![("content-type", "application/pkcs10".to_owned())];
        all.extend_from_slice(headers);
        self.call(
            config,
            "POST",
            "/.well-known/est/simpleenroll",
            &all,
            BASE64.encode(csr_der).into_bytes(),
        )
        .await
        .expect("enroll request")
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db().await.query_one(sql, &[]).await.unwrap().get(0)
    }
}

pub async fn call_at(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&'static str, String)],
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
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost");
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok(Answer { status, body })
}

/// Certificates of a base64 PKCS#7 certs-only answer.
pub fn issued(answer: &Answer) -> Vec<u8> {
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    use der::{Decode, Encode};
    let compact: Vec<u8> = answer
        .body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = BASE64.decode(compact).unwrap();
    let info = cms::content_info::ContentInfo::from_der(&der).unwrap();
    let signed: cms::signed_data::SignedData = info.content.decode_as().unwrap();
    match &signed.certificates.unwrap().0.as_slice()[0] {
        cms::cert::CertificateChoices::Certificate(c) => c.to_der().unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

pub fn serial_of(cert_der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).unwrap();
    hex::encode(cert.raw_serial())
}
