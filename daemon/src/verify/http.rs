//! The HTTP client of the verification protocol (see the [module docs](super)):
//! one endpoint per catalog method, JSON over HTTPS with an optional pinned CA
//! (plain http only to loopback stand-ins), a per-request timeout, and bounded
//! retries with exponential backoff on transport failures and 5xx only.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kiosk_config::{Catalog, Config, VerifierEndpoint};
use reqwest::{StatusCode, Url};

use super::{
    Failure, MAX_RESPONSE_BYTES, PreparedRequest, VerificationOutcome, VerificationRequest,
    Verifier, VerifyError, parse_answer, prepare,
};

/// Pause between attempts: `initial`, doubled each retry, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// The pause after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

struct Endpoint {
    url: Url,
    client: reqwest::Client,
    timeout: Duration,
    retries: u32,
}

/// The verification client for every configured method.
pub struct HttpVerifier {
    catalog: Arc<Catalog>,
    endpoints: BTreeMap<String, Endpoint>,
    backoff: Backoff,
}

impl std::fmt::Debug for HttpVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpVerifier")
            .field("methods", &self.endpoints.keys().collect::<Vec<_>>())
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl HttpVerifier {
    /// A client with no endpoints yet.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self {
            catalog,
            endpoints: BTreeMap::new(),
            backoff: Backoff::default(),
        }
    }

    /// Every method of `config.verifiers` that has a URL; CA files resolved
    /// against the data directory. Methods without a URL answer
    /// [`VerifyError::NotConfigured`].
    pub fn from_config(catalog: Arc<Catalog>, config: &Config) -> Result<Self, VerifyError> {
        let mut verifier = Self::new(catalog);
        let v = &config.verifiers;
        for (method, ep) in [
            ("carrier_3factor", &v.carrier_3factor),
            ("bank_card_4factor", &v.bank_card_4factor),
            ("biometric_compare", &v.biometric_compare),
        ] {
            if ep.url.is_none() {
                continue;
            }
            let ca_pem = match &ep.ca_cert {
                None => None,
                Some(path) => {
                    let full = config.resolve(path);
                    Some(std::fs::read(&full).map_err(|e| VerifyError::Config {
                        method: method.into(),
                        reason: format!("ca_cert {}: {e}", full.display()),
                    })?)
                }
            };
            verifier.add_endpoint(method, ep, ca_pem.as_deref())?;
        }
        Ok(verifier)
    }

    /// Replace the retry pauses (tests use short ones).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Configure `method`'s endpoint. `ca_pem`, when given, is the only trust
    /// anchor for the service's TLS certificate (PEM, one or more certificates);
    /// the endpoint's own `ca_cert` path is not read here (see [`Self::from_config`]).
    pub fn add_endpoint(
        &mut self,
        method: &str,
        endpoint: &VerifierEndpoint,
        ca_pem: Option<&[u8]>,
    ) -> Result<(), VerifyError> {
        let config_error = |reason: String| VerifyError::Config {
            method: method.into(),
            reason,
        };
        self.catalog.method(method)?;
        let url_text = endpoint
            .url
            .as_deref()
            .ok_or_else(|| VerifyError::NotConfigured {
                method: method.into(),
            })?;
        let url = Url::parse(url_text).map_err(|e| config_error(format!("url: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_host(&url) => {}
            _ => {
                return Err(config_error(format!(
                    "url {url_text:?} is neither https nor http to a loopback stand-in"
                )));
            }
        }
        if endpoint.timeout_ms == 0 {
            return Err(config_error("timeout_ms must be greater than 0".into()));
        }
        let timeout = Duration::from_millis(endpoint.timeout_ms);
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(url.scheme() == "https")
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("kioskd/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| config_error(format!("ca_cert: {e}")))?;
            if certs.is_empty() {
                return Err(config_error("ca_cert holds no certificate".into()));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| config_error(format!("client: {e}")))?;
        self.endpoints.insert(
            method.to_string(),
            Endpoint {
                url,
                client,
                timeout,
                retries: endpoint.retries,
            },
        );
        Ok(())
    }

    /// One attempt: send the body, read a bounded answer.
    /// Returns the outcome or the failure and whether the data may have been sent.
    async fn attempt(
        endpoint: &Endpoint,
        prepared: &PreparedRequest,
    ) -> Result<super::WireAnswer, (Failure, bool)> {
        let sent = endpoint
            .client
            .post(endpoint.url.clone())
            .timeout(endpoint.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(prepared.body.to_vec())
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            // A connect error (refused, TLS handshake) happens before the body goes out.
            Err(e) => return Err((classify(&e), !e.is_connect())),
        };
        let status = response.status();
        if status.is_server_error() {
            return Err((Failure::ServerError(status.as_u16()), true));
        }
        if status != StatusCode::OK {
            return Err((Failure::Refused(status.as_u16()), true));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err((
                            Failure::BadResponse(format!(
                                "answer larger than {MAX_RESPONSE_BYTES} bytes"
                            )),
                            true,
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err((classify(&e), true)),
            }
        }
        parse_answer(&body).map_err(|f| (f, true))
    }
}

fn classify(e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::Timeout
    } else if e.is_connect() {
        Failure::Unreachable(error_chain(e))
    } else {
        Failure::Transport(error_chain(e))
    }
}

/// The error with its causes (reqwest's top-level message alone says little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[async_trait]
impl Verifier for HttpVerifier {
    async fn verify(
        &self,
        request: VerificationRequest,
    ) -> Result<VerificationOutcome, VerifyError> {
        // Refusals (unknown method, missing field) come before any network traffic.
        let prepared = prepare(&self.catalog, &request)?;
        drop(request);
        let endpoint =
            self.endpoints
                .get(&prepared.method)
                .ok_or_else(|| VerifyError::NotConfigured {
                    method: prepared.method.clone(),
                })?;
        let mut sends = 0u32;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = Self::attempt(endpoint, &prepared).await;
            let failure = match result {
                Ok(answer) => {
                    sends += 1;
                    tracing::info!(
                        method = %prepared.method,
                        request_id = %prepared.request_id,
                        recipient = %prepared.recipient,
                        attempt,
                        verdict = answer.result.as_str(),
                        "verification answered"
                    );
                    return Ok(VerificationOutcome {
                        verdict: answer.result,
                        reference: answer.reference,
                        handover: prepared.handover(sends),
                    });
                }
                Err((failure, sent)) => {
                    if sent {
                        sends += 1;
                    }
                    failure
                }
            };
            let retry = failure.is_retryable() && attempt <= endpoint.retries;
            tracing::warn!(
                method = %prepared.method,
                request_id = %prepared.request_id,
                attempt,
                failure = failure.code(),
                detail = %failure,
                retry,
                "verification attempt failed"
            );
            if !retry {
                return Err(VerifyError::Failed {
                    method: prepared.method.clone(),
                    failure,
                    attempts: attempt,
                    handover: (sends > 0).then(|| Box::new(prepared.handover(sends))),
                });
            }
            tokio::time::sleep(self.backoff.delay(attempt)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> VerifierEndpoint {
        VerifierEndpoint {
            url: Some(url.into()),
            ..VerifierEndpoint::default()
        }
    }

    #[test]
    fn plain_http_only_to_loopback() {
        let mut v = HttpVerifier::new(Arc::new(Catalog::embedded()));
        for ok in [
            "http://127.0.0.1:9/v",
            "http://localhost:9/v",
            "http://[::1]:9/v",
            "https://verify.example.cn/carrier",
        ] {
            v.add_endpoint("carrier_3factor", &endpoint(ok), None)
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://10.0.0.1:9/v",
            "http://verify.example.cn/",
            "ftp://127.0.0.1/",
        ] {
            let err = v
                .add_endpoint("carrier_3factor", &endpoint(bad), None)
                .unwrap_err();
            assert!(matches!(err, VerifyError::Config { .. }), "{bad}: {err}");
        }
        assert!(matches!(
            v.add_endpoint("telepathy", &endpoint("https://x.example/"), None),
            Err(VerifyError::Catalog(_))
        ));
        assert!(matches!(
            v.add_endpoint(
                "carrier_3factor",
                &endpoint("https://x.example/"),
                Some(b"junk")
            ),
            Err(VerifyError::Config { .. })
        ));
    }

    #[test]
    fn from_config_takes_the_methods_with_a_url_and_reads_their_ca() {
        let catalog = Arc::new(Catalog::embedded());
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.kiosk.data_dir = dir.path().to_path_buf();
        config.verifiers.bank_card_4factor = endpoint("http://127.0.0.1:9/verify");
        let v = HttpVerifier::from_config(catalog.clone(), &config).unwrap();
        assert_eq!(
            v.endpoints.keys().collect::<Vec<_>>(),
            ["bank_card_4factor"]
        );
        config.verifiers.carrier_3factor = VerifierEndpoint {
            ca_cert: Some("certs/carrier-ca.pem".into()),
            ..endpoint("https://carrier.example.cn/verify")
        };
        let err = HttpVerifier::from_config(catalog, &config).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("carrier_3factor") && text.contains("certs/carrier-ca.pem"),
            "{text}"
        );
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
        };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(3), Duration::from_millis(350));
        assert_eq!(b.delay(60), Duration::from_millis(350));
    }
}
