//! Client of the CA that certifies applicants' UKEY keys: EST (RFC 7030) `simpleenroll` /
//! `simplereenroll` / `cacerts` plus the CA's JSON status routes (revoke, hold, release,
//! status), over rustls mTLS with the kiosk's client identity (the same one the sync link to HQ
//! uses, built with `records::client::tls`).
//!
//! Where: `[ca] url` / `ca_cert` when configured, else the HQ the sync link reaches (local or
//! remote). [`CaLink`] is shared with the API: it is empty until the sync link's start-up
//! calls [`CaLink::connect`] (the local HQ starts asynchronously), and replaced when the local
//! HQ restarts.
//!
//! HQ's CA checks each request against its issuance policy: an enrollment names the kiosk
//! service and the holder (their keyed digest, whose first 16 bytes are the subject's
//! `serialNumber`) and the application (session) it is for; a revoke, hold or release names
//! the holder too, which HQ compares with the one the certificate was issued for, so a kiosk
//! can act only for a holder it has verified. These go in headers ([`Holder`]).
//!
//! Answers are read up to [`MAX_ANSWER_BYTES`]; a larger one is
//! [`CaError::AnswerTooLarge`].
//!
//! Every call has a deadline (`[ca] timeout_ms`) and is retried a bounded number of times while
//! the CA is unreachable or failing (5xx). Retrying is safe: the CA answers a repeated request
//! with the certificate already issued for it, and status changes are idempotent. Logs carry
//! serials and codes only, never subjects.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use records::client::tls::ClientKey;
use records::{PublicVerifier, SM2_DEFAULT_DISTID, SignatureAlgorithm};
use rustls::pki_types::ServerName;
use x509_parser::prelude::{FromDer, X509Certificate, X509CertificationRequest};

/// Attempts per call while the CA is unavailable.
const ATTEMPTS: u32 = 3;
/// Pause before the first retry (doubled each time).
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Largest answer read from the CA.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Header naming the service of an enrollment (HQ's issuance profile).
const SERVICE_HEADER: &str = "kioskd-service";
/// Header carrying the holder's keyed digest (hex).
const HOLDER_HEADER: &str = "kioskd-holder";
/// Header carrying the application (session) id of an enrollment.
const APPLICATION_HEADER: &str = "kioskd-application";

/// Whom a CA call is for: the holder verified at this kiosk (their keyed digest) and, for an
/// enrollment, the service and application it is part of.
#[derive(Clone, Copy)]
pub struct Holder<'a> {
    /// The holder's keyed digest.
    pub digest: &'a [u8; 32],
    /// The kiosk service (`cert_application`, ...); HQ picks the issuance profile by it.
    pub service: &'a str,
    /// The application (session) id, recorded with the certificate at HQ.
    pub application: &'a str,
}

impl std::fmt::Debug for Holder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Holder<'_> {
    fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (HOLDER_HEADER, hex::encode(self.digest)),
            (SERVICE_HEADER, self.service.to_owned()),
            (APPLICATION_HEADER, self.application.to_owned()),
        ]
    }
}

const ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";
const SM2_WITH_SM3: &str = "1.2.156.10197.1.501";

/// A certificate the CA issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// DER of the certificate.
    pub der: Vec<u8>,
    /// Lower-case hex serial (as the CA's status routes take it).
    pub serial_hex: String,
    /// Expiry, milliseconds since the Unix epoch.
    pub not_after_ms: i64,
    /// The CA's certificates (DER), issuing CA first.
    pub chain_der: Vec<Vec<u8>>,
}

/// Why a CA call failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CA cannot be reached, timed out or failed on its side; retrying later may work.
    #[error("the CA is unavailable: {0}")]
    Unavailable(String),
    /// The CA refused the request (bad request, unknown certificate, revoked, ...).
    #[error("the CA refused the request ({code}): {message}")]
    Refused {
        /// The CA's stable code (`bad_csr_signature`, `unknown_certificate`, ...).
        code: String,
        /// Its human message.
        message: String,
    },
    /// The CA's answer is not what the protocol says (or the link is misconfigured).
    #[error("CA protocol error: {0}")]
    Protocol(String),
    /// The CA's answer is larger than the kiosk reads.
    #[error("the CA's answer is larger than {limit} bytes")]
    AnswerTooLarge {
        /// The limit.
        limit: usize,
    },
}

impl CaError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CaError::Unavailable(_))
    }

    /// Stable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            CaError::Unavailable(_) => "ca_unavailable",
            CaError::Refused { .. } => "ca_refused",
            CaError::Protocol(_) => "ca_protocol_error",
            CaError::AnswerTooLarge { .. } => "ca_answer_too_large",
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> CaError {
    CaError::Unavailable(e.to_string())
}

fn protocol(e: impl std::fmt::Display) -> CaError {
    CaError::Protocol(e.to_string())
}

/// Status of a certificate at the CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertStatus {
    /// Valid.
    Good,
    /// Suspended (certificate hold).
    Held,
    /// Revoked, with the RFC 5280 reason name.
    Revoked {
        /// `keyCompromise`, `superseded`, ...
        reason: String,
    },
}

struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// Talks to one CA endpoint. Cheap to clone.
#[derive(Clone)]
pub struct CaClient {
    config: Arc<rustls::ClientConfig>,
    address: String,
    server_name: ServerName<'static>,
    timeout: Duration,
    chain: Arc<tokio::sync::OnceCell<Vec<Vec<u8>>>>,
}

impl std::fmt::Debug for CaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaClient")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl CaClient {
    /// `url` is `https://host[:port]`; `ca_pem` pins the CA endpoint's TLS certificate;
    /// `cert_pem`/`key` are the kiosk's client identity; `timeout` bounds each call.
    pub fn new(
        url: &str,
        ca_pem: &[u8],
        cert_pem: &[u8],
        key: &ClientKey,
        timeout: Duration,
    ) -> Result<Self, CaError> {
        let (address, name) = records::client::parse_https_url(url).map_err(protocol)?;
        let config =
            records::client::tls::client_config(ca_pem, cert_pem, key).map_err(protocol)?;
        let server_name = ServerName::try_from(name).map_err(protocol)?;
        Ok(Self {
            config,
            address,
            server_name,
            timeout,
            chain: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    async fn round_trip_once(
        &self,
        method: &hyper::Method,
        path: &str,
        content_type: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
    ) -> Result<Answer, CaError> {
        let tcp = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(unavailable)?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(unavailable)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(unavailable)?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.address.as_str())
            .header(hyper::header::CONTENT_TYPE, content_type);
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(protocol)?;
        let result = async {
            let response = sender.send_request(request).await.map_err(unavailable)?;
            let status = response.status().as_u16();
            let too_large = CaError::AnswerTooLarge {
                limit: MAX_ANSWER_BYTES,
            };
            if response
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
            {
                return Err(too_large);
            }
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        too_large
                    } else {
                        unavailable(e)
                    }
                })?
                .to_bytes()
                .to_vec();
            Ok(Answer { status, body })
        }
        .await;
        driver.abort();
        result
    }

    /// One call with a deadline per attempt and bounded retries while unavailable; 4xx
    /// answers become [`CaError::Refused`], 5xx [`CaError::Unavailable`].
    async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        content_type: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
    ) -> Result<Vec<u8>, CaError> {
        let mut pause = RETRY_PAUSE;
        let mut attempt = 1;
        loop {
            let result = tokio::time::timeout(
                self.timeout,
                self.round_trip_once(&method, path, content_type, headers, body),
            )
            .await
            .unwrap_or_else(|_| Err(CaError::Unavailable("no answer in time".into())))
            .and_then(|answer| match answer.status {
                200..=299 => Ok(answer.body),
                status => Err(refusal(status, &answer.body)),
            });
            match result {
                Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                    tracing::debug!(path, attempt, error = %e, "CA unavailable; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The CA's certificates (EST `cacerts`), fetched once.
    pub async fn ca_certificates(&self) -> Result<Vec<Vec<u8>>, CaError> {
        self.chain
            .get_or_try_init(|| async {
                let body = self
                    .call(hyper::Method::GET, "/.well-known/est/cacerts", "", &[], &[])
                    .await?;
                let certs = certs_from_pkcs7(&body)?;
                if certs.is_empty() {
                    return Err(protocol("cacerts holds no certificate"));
                }
                Ok(certs)
            })
            .await
            .cloned()
    }

    async fn est(
        &self,
        operation: &str,
        csr_der: &[u8],
        holder: &Holder<'_>,
    ) -> Result<IssuedCertificate, CaError> {
        let (_, csr) = X509CertificationRequest::from_der(csr_der)
            .map_err(|e| protocol(format!("not a PKCS#10 request: {e}")))?;
        let requested_key = csr.certification_request_info.subject_pki.raw;
        let chain = self.ca_certificates().await?;
        let body = self
            .call(
                hyper::Method::POST,
                &format!("/.well-known/est/{operation}"),
                "application/pkcs10",
                &holder.headers(),
                BASE64.encode(csr_der).as_bytes(),
            )
            .await?;
        let der = certs_from_pkcs7(&body)?
            .into_iter()
            .find(|der| {
                X509Certificate::from_der(der)
                    .is_ok_and(|(_, c)| c.tbs_certificate.subject_pki.raw == requested_key)
            })
            .ok_or_else(|| protocol("the answer holds no certificate for the requested key"))?;
        let issued = describe(der, chain)?;
        tracing::info!(serial = %issued.serial_hex, operation, "certificate issued by the CA");
        Ok(issued)
    }

    /// EST `simpleenroll`: a certificate for the key of `csr_der` (PKCS#10 DER) for
    /// `holder` (the subject's `serialNumber` must be theirs).
    pub async fn enroll(
        &self,
        csr_der: &[u8],
        holder: &Holder<'_>,
    ) -> Result<IssuedCertificate, CaError> {
        self.est("simpleenroll", csr_der, holder).await
    }

    /// EST `simplereenroll` (renewal or key update): the holder must hold a current
    /// certificate from this CA; the old one stays valid until revoked.
    pub async fn reenroll(
        &self,
        csr_der: &[u8],
        holder: &Holder<'_>,
    ) -> Result<IssuedCertificate, CaError> {
        self.est("simplereenroll", csr_der, holder).await
    }

    async fn change(
        &self,
        serial_hex: &str,
        operation: &str,
        holder: &Holder<'_>,
        body: &[u8],
    ) -> Result<(), CaError> {
        let serial = checked_serial(serial_hex)?;
        self.call(
            hyper::Method::POST,
            &format!("/ca/v1/certificates/{serial}/{operation}"),
            "application/json",
            &holder.headers(),
            body,
        )
        .await?;
        tracing::info!(serial = %serial, operation, "certificate status changed at the CA");
        Ok(())
    }

    /// Revoke (final) for an RFC 5280 reason: `keyCompromise`, `superseded`,
    /// `cessationOfOperation`, `affiliationChanged` or `unspecified`. `holder` is the
    /// certificate's holder, verified at this kiosk.
    pub async fn revoke(
        &self,
        serial_hex: &str,
        reason: &str,
        holder: &Holder<'_>,
    ) -> Result<(), CaError> {
        let body =
            serde_json::to_vec(&serde_json::json!({ "reason": reason })).map_err(protocol)?;
        self.change(serial_hex, "revoke", holder, &body).await
    }

    /// Suspend (certificate hold) the holder's certificate.
    pub async fn hold(&self, serial_hex: &str, holder: &Holder<'_>) -> Result<(), CaError> {
        self.change(serial_hex, "hold", holder, b"").await
    }

    /// Resume the holder's held certificate.
    pub async fn release(&self, serial_hex: &str, holder: &Holder<'_>) -> Result<(), CaError> {
        self.change(serial_hex, "release", holder, b"").await
    }

    /// The certificate's status at the CA.
    pub async fn status(&self, serial_hex: &str) -> Result<CertStatus, CaError> {
        let serial = checked_serial(serial_hex)?;
        let body = self
            .call(
                hyper::Method::GET,
                &format!("/ca/v1/certificates/{serial}"),
                "",
                &[],
                &[],
            )
            .await?;
        #[derive(serde::Deserialize)]
        struct Status {
            status: String,
            reason: Option<String>,
        }
        let status: Status = serde_json::from_slice(&body).map_err(protocol)?;
        match status.status.as_str() {
            "good" => Ok(CertStatus::Good),
            "held" => Ok(CertStatus::Held),
            "revoked" => Ok(CertStatus::Revoked {
                reason: status.reason.unwrap_or_else(|| "unspecified".into()),
            }),
            other => Err(protocol(format!("unknown status {other:?}"))),
        }
    }
}

fn checked_serial(serial_hex: &str) -> Result<String, CaError> {
    if serial_hex.is_empty()
        || serial_hex.len() > 40
        || !serial_hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(CaError::Refused {
            code: "bad_serial".into(),
            message: "a serial number is 1 to 40 hexadecimal digits".into(),
        });
    }
    Ok(serial_hex.to_ascii_lowercase())
}

/// A non-2xx answer: the CA's `{code, message}` when it sent one.
fn refusal(status: u16, body: &[u8]) -> CaError {
    #[derive(serde::Deserialize)]
    struct Refusal {
        code: String,
        message: String,
    }
    let parsed: Option<Refusal> = serde_json::from_slice(body).ok();
    if status >= 500 || status == 429 {
        let detail = parsed.map_or_else(|| format!("HTTP {status}"), |r| r.code);
        return CaError::Unavailable(detail);
    }
    match parsed {
        Some(r) => CaError::Refused {
            code: r.code,
            message: r.message,
        },
        None => CaError::Refused {
            code: format!("http_{status}"),
            message: format!("the CA answered HTTP {status}"),
        },
    }
}

/// Certificates (DER) of a base64 PKCS#7 certs-only message.
fn certs_from_pkcs7(body: &[u8]) -> Result<Vec<Vec<u8>>, CaError> {
    use cms::cert::CertificateChoices;
    use der::{Decode, Encode};
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der_bytes = BASE64
        .decode(compact)
        .map_err(|_| protocol("answer is not base64"))?;
    let info = cms::content_info::ContentInfo::from_der(&der_bytes).map_err(protocol)?;
    if info.content_type != const_oid::db::rfc5911::ID_SIGNED_DATA {
        return Err(protocol("answer is not a PKCS#7 SignedData"));
    }
    let signed: cms::signed_data::SignedData = info.content.decode_as().map_err(protocol)?;
    let mut certs = Vec::new();
    for choice in signed.certificates.iter().flat_map(|set| set.0.iter()) {
        if let CertificateChoices::Certificate(cert) = choice {
            certs.push(cert.to_der().map_err(protocol)?);
        }
    }
    Ok(certs)
}

/// Check that `der` is signed by the first certificate of `chain` and describe it.
fn describe(der: Vec<u8>, chain: Vec<Vec<u8>>) -> Result<IssuedCertificate, CaError> {
    let (_, cert) = X509Certificate::from_der(&der).map_err(protocol)?;
    let issuer_der = chain.first().ok_or_else(|| protocol("no CA certificate"))?;
    let (_, issuer) = X509Certificate::from_der(issuer_der).map_err(protocol)?;
    let algorithm = match cert.signature_algorithm.algorithm.to_id_string().as_str() {
        ECDSA_WITH_SHA256 => SignatureAlgorithm::EcdsaP256Sha256,
        SM2_WITH_SM3 => SignatureAlgorithm::Sm2Sm3,
        other => return Err(protocol(format!("certificate signed with {other}"))),
    };
    let raw = records::signing::raw_signature_from_der(algorithm, &cert.signature_value.data)
        .map_err(protocol)?;
    PublicVerifier {
        algorithm,
        sec1: issuer.public_key().subject_public_key.data.to_vec(),
        distid: (algorithm == SignatureAlgorithm::Sm2Sm3).then(|| SM2_DEFAULT_DISTID.to_owned()),
    }
    .verify(cert.tbs_certificate.as_ref(), &raw)
    .map_err(|_| protocol("the issued certificate is not signed by the CA's certificate"))?;
    let serial = cert.raw_serial();
    let first = serial
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(serial.len().saturating_sub(1));
    let serial_hex = hex::encode(&serial[first..]);
    let not_after_ms = cert.validity().not_after.timestamp().saturating_mul(1000);
    Ok(IssuedCertificate {
        der,
        serial_hex,
        not_after_ms,
        chain_der: chain,
    })
}

/// The CA client once the link to HQ/CA is up; shared by the API.
pub struct CaLink {
    section: kiosk_config::CaSection,
    current: tokio::sync::watch::Sender<Option<CaClient>>,
}

impl Default for CaLink {
    fn default() -> Self {
        Self::with_config(kiosk_config::CaSection::default())
    }
}

impl CaLink {
    /// A link using `[ca]` of the config (its `url` and `ca_cert` override HQ's).
    pub fn with_config(section: kiosk_config::CaSection) -> Self {
        Self {
            section,
            current: tokio::sync::watch::channel(None).0,
        }
    }

    /// Make `client` the CA client (replacing an earlier one).
    pub fn set(&self, client: CaClient) {
        self.current.send_replace(Some(client));
    }

    /// The CA client, waiting up to `within` for the link to come up.
    pub async fn client(&self, within: Duration) -> Result<CaClient, CaError> {
        let mut rx = self.current.subscribe();
        match tokio::time::timeout(within, rx.wait_for(Option::is_some)).await {
            Ok(Ok(client)) => client
                .clone()
                .ok_or_else(|| unavailable("the link to the CA is not up")),
            _ => Err(unavailable("the link to the CA is not up")),
        }
    }

    /// Called by the sync link once HQ is reachable: the CA is `[ca] url` (TLS pinned to
    /// `[ca] ca_cert`, else HQ's CA) when configured, else HQ at `hq_url`; the kiosk's client
    /// identity is HQ's. Errors are logged (the CA then stays unavailable).
    pub fn connect(
        &self,
        hq_url: &str,
        hq_ca_pem: &[u8],
        cert_pem: &[u8],
        key: &ClientKey,
        resolve: &dyn Fn(&Path) -> PathBuf,
    ) {
        let built = (|| {
            let url = self.section.url.as_deref().unwrap_or(hq_url);
            let ca_pem = match &self.section.ca_cert {
                Some(path) => {
                    let path = resolve(path);
                    std::fs::read(&path)
                        .map_err(|e| protocol(format!("ca.ca_cert {}: {e}", path.display())))?
                }
                None => hq_ca_pem.to_vec(),
            };
            let timeout = Duration::from_millis(self.section.timeout_ms.max(1));
            CaClient::new(url, &ca_pem, cert_pem, key, timeout)
        })();
        match built {
            Ok(client) => {
                tracing::info!(address = %client.address, "CA link ready");
                self.set(client);
            }
            Err(e) => {
                tracing::error!(error = %e, "CA link not usable; certificates cannot be issued")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_the_ca_code_and_server_failures_are_retryable() {
        let e = refusal(400, br#"{"code":"bad_csr_signature","message":"no"}"#);
        assert!(matches!(&e, CaError::Refused { code, .. } if code == "bad_csr_signature"));
        assert!(!e.is_retryable());
        assert_eq!(e.code(), "ca_refused");
        let e = refusal(503, br#"{"code":"ca_unavailable","message":"db"}"#);
        assert!(e.is_retryable());
        assert_eq!(e.code(), "ca_unavailable");
        let e = refusal(404, b"<html>");
        assert!(matches!(&e, CaError::Refused { code, .. } if code == "http_404"));
    }

    #[test]
    fn serials_are_checked_before_they_reach_a_url() {
        assert_eq!(checked_serial("7F0a").unwrap(), "7f0a");
        for bad in ["", "7f/../x", "g1", &"a".repeat(41)] {
            assert!(checked_serial(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn garbage_answers_are_protocol_errors() {
        assert!(matches!(
            certs_from_pkcs7(b"%%%"),
            Err(CaError::Protocol(_))
        ));
        assert!(matches!(
            certs_from_pkcs7(BASE64.encode([0x30, 0x03, 0x02, 0x01, 0x00]).as_bytes()),
            Err(CaError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn an_empty_link_is_unavailable_until_set() {
        let link = CaLink::default();
        let e = link.client(Duration::from_millis(20)).await.unwrap_err();
        assert!(e.is_retryable());
    }
}
