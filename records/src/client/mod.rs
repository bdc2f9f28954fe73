//! Kiosk-side client (cargo feature `client`): POST sealed envelopes to hq-ingest over mTLS
//! (TLS 1.3, HQ CA pinned, client key possibly on a token via
//! [`tls::ClientKey::EcdsaP256Callback`]) and decode the ack or the typed rejection.
//!
//! It lives in `records` behind a feature so the kiosk daemon can use it without pulling in
//! hq-ingest's PostgreSQL stack; hq-ingest re-exports it for its tests, bench and demo sender.

pub mod enroll;
pub mod tls;

use std::sync::Arc;

use crate::{Ack, Rejection};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use tls::{ClientKey, TlsError};

/// Client failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TLS configuration problem.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Connection, handshake or HTTP failure (retry later).
    #[error("transport: {0}")]
    Transport(String),
    /// HQ refused the batch.
    #[error("HQ rejected the batch ({status}): {} ({})", rejection.message, rejection.code)]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The typed rejection.
        rejection: Rejection,
    },
    /// HQ's answer could not be decoded.
    #[error("undecodable answer from HQ (status {status}): {reason}")]
    BadResponse {
        /// HTTP status.
        status: u16,
        /// Why.
        reason: String,
    },
    /// HQ's answer is larger than the kiosk reads ([`MAX_ANSWER_BYTES`]).
    #[error("HQ's answer (status {status}) is larger than {limit} bytes")]
    AnswerTooLarge {
        /// HTTP status.
        status: u16,
        /// The limit.
        limit: usize,
    },
}

/// Largest answer read from HQ (an ack or a rejection is a few kilobytes).
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

impl ClientError {
    /// Whether retrying the same envelope later can succeed (transport or HQ-side trouble).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Rejected { status, .. } | ClientError::BadResponse { status, .. } => {
                *status >= 500
            }
            ClientError::Tls(_) | ClientError::AnswerTooLarge { .. } => false,
        }
    }
}

fn transport(e: impl std::fmt::Display) -> ClientError {
    ClientError::Transport(e.to_string())
}

/// What `hq-ingest local` prints as one JSON line on stdout once it serves: where it listens
/// and the demo PKI files a kiosk needs (the contract between hq-ingest and kioskd's local-HQ
/// mode).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalHqReady {
    /// `https://127.0.0.1:<port>` of the mTLS listener (HQ's certificate names that address).
    pub url: String,
    /// HQ CA certificate (PEM) to pin.
    pub ca_cert: std::path::PathBuf,
    /// The kiosk's client certificate (PEM, CN = kiosk id).
    pub client_cert: std::path::PathBuf,
    /// Its private key (PEM; a demo software key).
    pub client_key: std::path::PathBuf,
    /// HQ's record-encryption public keys (JSON, [`crate::public_keys`]).
    pub record_public: std::path::PathBuf,
    /// HQ's witness public key (JSON verifier).
    pub witness_public: std::path::PathBuf,
}

/// `host:port` and host name of an `https://host[:port][/]` URL.
pub fn parse_https_url(url: &str) -> Result<(String, String), TlsError> {
    let bad = |why: &str| TlsError::Config(format!("HQ URL {url:?}: {why}"));
    let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("not https"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(bad("a path is not supported"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let port = uri.port_u16().unwrap_or(443);
    let name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((format!("{host}:{port}"), name))
}

/// Where and how to reach HQ.
#[derive(Clone)]
pub struct HqClient {
    config: Arc<rustls::ClientConfig>,
    address: String,
    server_name: ServerName<'static>,
}

impl HqClient {
    /// `address` is `host:port`; `server_name` must match HQ's certificate (DNS name or IP).
    pub fn new(
        address: &str,
        server_name: &str,
        hq_ca_pem: &[u8],
        client_cert_chain_pem: &[u8],
        client_key: &ClientKey,
    ) -> Result<Self, ClientError> {
        let config = tls::client_config(hq_ca_pem, client_cert_chain_pem, client_key)?;
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Self {
            config,
            address: address.to_owned(),
            server_name,
        })
    }

    /// From an `https://host[:port]` URL; the host is also the expected server name.
    pub fn from_url(
        url: &str,
        hq_ca_pem: &[u8],
        client_cert_chain_pem: &[u8],
        client_key: &ClientKey,
    ) -> Result<Self, ClientError> {
        let (address, server_name) = parse_https_url(url)?;
        Self::new(
            &address,
            &server_name,
            hq_ca_pem,
            client_cert_chain_pem,
            client_key,
        )
    }

    /// Open one mTLS connection (HTTP/1.1, reusable for many batches).
    pub async fn connect(&self) -> Result<HqConnection, ClientError> {
        let tcp = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(transport)?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(transport)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(transport)?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HqConnection {
            sender,
            host: self.address.clone(),
            driver,
        })
    }

    /// Convenience: connect, send one envelope, close.
    pub async fn send_envelope(&self, envelope: Vec<u8>) -> Result<Ack, ClientError> {
        self.connect().await?.send_envelope(envelope).await
    }

    /// Send sealed envelopes `(batch_seq, bytes)` in batch order with up to `window` batches in
    /// flight on separate connections, so HQ decrypts batch N+1 while batch N commits. A batch
    /// that overtakes its predecessor is refused by HQ with `batch_gap` and resent here once
    /// the predecessor is acknowledged. `on_ack` runs in batch order, after HQ committed (purge
    /// local data there). Returns the first error; the caller resends from its durable queue
    /// later (replays are acknowledged as duplicates).
    pub async fn send_windowed(
        &self,
        mut envelopes: tokio::sync::mpsc::Receiver<(u64, Vec<u8>)>,
        window: u64,
        mut on_ack: impl FnMut(Ack) + Send,
    ) -> Result<(), ClientError> {
        let window = window.max(1);
        let mut conns = Vec::new();
        for _ in 0..window {
            conns.push(Arc::new(tokio::sync::Mutex::new(self.connect().await?)));
        }
        let (acked_tx, acked_rx) = tokio::sync::watch::channel(0u64);
        let acked_tx = Arc::new(acked_tx);
        let mut in_flight = std::collections::VecDeque::new();
        let mut first_seq = None;
        while let Some((seq, envelope)) = envelopes.recv().await {
            let base = *first_seq.get_or_insert(seq);
            while in_flight.len() as u64 >= window {
                let task: tokio::task::JoinHandle<Result<Ack, ClientError>> =
                    in_flight.pop_front().ok_or_else(|| transport("window"))?;
                on_ack(task.await.map_err(transport)??);
            }
            let conn = conns[(seq % window) as usize].clone();
            let (acked_tx, mut acked_rx) = (acked_tx.clone(), acked_rx.clone());
            in_flight.push_back(tokio::spawn(async move {
                let mut conn = conn.lock().await;
                loop {
                    match conn.send_envelope(envelope.clone()).await {
                        Ok(ack) => {
                            acked_tx.send_modify(|a| *a = (*a).max(seq));
                            return Ok(ack);
                        }
                        Err(ClientError::Rejected { rejection, .. })
                            if rejection.code == "batch_gap" && seq > base =>
                        {
                            acked_rx
                                .wait_for(|acked| *acked + 1 >= seq)
                                .await
                                .map_err(transport)?;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }));
        }
        while let Some(task) = in_flight.pop_front() {
            on_ack(task.await.map_err(transport)??);
        }
        Ok(())
    }

    /// GET a path (e.g. `/health`) over mTLS; returns status and body.
    pub async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), ClientError> {
        let mut conn = self.connect().await?;
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, conn.host.as_str())
            .body(Full::new(Bytes::new()))
            .map_err(transport)?;
        conn.round_trip(req).await
    }
}

/// An open connection to HQ.
pub struct HqConnection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for HqConnection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl HqConnection {
    async fn round_trip(
        &mut self,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        self.sender.ready().await.map_err(transport)?;
        let resp = self.sender.send_request(req).await.map_err(transport)?;
        let status = resp.status().as_u16();
        let too_large = ClientError::AnswerTooLarge {
            status,
            limit: MAX_ANSWER_BYTES,
        };
        if resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(too_large);
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    too_large
                } else {
                    transport(e)
                }
            })?
            .to_bytes();
        Ok((status, body.to_vec()))
    }

    /// POST one sealed envelope; `Ok` only when HQ committed it (or had already).
    pub async fn send_envelope(&mut self, envelope: Vec<u8>) -> Result<Ack, ClientError> {
        let req = hyper::Request::post("/v1/batches")
            .header(hyper::header::HOST, self.host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/cbor")
            .body(Full::new(Bytes::from(envelope)))
            .map_err(transport)?;
        let (status, body) = self.round_trip(req).await?;
        if status == 200 {
            return Ack::from_bytes(&body).map_err(|e| ClientError::BadResponse {
                status,
                reason: e.to_string(),
            });
        }
        match crate::codec::from_slice::<Rejection>(&body) {
            Ok(rejection) => Err(ClientError::Rejected { status, rejection }),
            Err(e) => Err(ClientError::BadResponse {
                status,
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_urls_give_address_and_server_name() {
        assert_eq!(
            parse_https_url("https://hq.example:8443").unwrap(),
            ("hq.example:8443".into(), "hq.example".into())
        );
        assert_eq!(
            parse_https_url("https://127.0.0.1:9/").unwrap(),
            ("127.0.0.1:9".into(), "127.0.0.1".into())
        );
        assert_eq!(
            parse_https_url("https://[::1]:8443").unwrap(),
            ("[::1]:8443".into(), "::1".into())
        );
        assert_eq!(parse_https_url("https://hq").unwrap().0, "hq:443");
        for bad in ["http://hq:80", "https://hq/v1", "hq:8443", ""] {
            assert!(parse_https_url(bad).is_err(), "{bad}");
        }
    }
}
