//! The real [`HqTransport`]: sealed envelopes to hq-ingest over the mTLS client of
//! `records::client` (TLS 1.3 only, HQ's CA pinned, the kiosk's client certificate). The client
//! key is a PEM file (`hq.client_key`, demo PKI) or, when none is configured, the P-256 key
//! [`TLS_KEY_LABEL`] on the device token, reached through a signing callback (rustls has no
//! SM2, so the TLS key is P-256 even when envelopes are signed with SM2).

use std::sync::Arc;
use std::time::Duration;

use hsm::{KeyAlgorithm, Token, TokenError};
use records::client::tls::{ClientKey, TlsSignCallback};
use records::client::{ClientError, HqClient, HqConnection};
use records::wire::Ack;
use tokio::runtime::Handle;

use super::{HqTransport, TransportError};

/// Label of the kiosk's TLS client key on the device token.
pub const TLS_KEY_LABEL: &str = "kiosk-tls";

/// Longest wait for a connection or for HQ's answer to one batch.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const SEND_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the transport could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HqClientError {
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("HQ client: {0}")]
    Client(#[from] ClientError),
    #[error("device token TLS key {TLS_KEY_LABEL}: {0}")]
    Token(#[from] TokenError),
}

/// Read a file the HQ link needs, naming it in the error.
pub fn read_file(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, HqClientError> {
    std::fs::read(path).map_err(|source| HqClientError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// The P-256 TLS key [`TLS_KEY_LABEL`] on the (logged-in) device token, generated there the
/// first time (`kioskctl provision` requests its certificate).
pub async fn ensure_tls_key(token: &Arc<dyn Token>) -> Result<hsm::KeyInfo, TokenError> {
    let key = match token.key(TLS_KEY_LABEL).await {
        Ok(k) => k,
        Err(TokenError::NoSuchKey(_)) => {
            tracing::info!(
                label = TLS_KEY_LABEL,
                "generating the kiosk's P-256 TLS key on the device token"
            );
            token
                .generate_key_pair(TLS_KEY_LABEL, KeyAlgorithm::P256)
                .await?
        }
        Err(e) => return Err(e),
    };
    if key.algorithm != KeyAlgorithm::P256 {
        return Err(TokenError::Config(format!(
            "{TLS_KEY_LABEL} is {:?}; TLS needs a P-256 key",
            key.algorithm
        )));
    }
    Ok(key)
}

/// The P-256 TLS key on the device token (generated there on first use) as a rustls signing
/// callback. Returns the callback and the key's SEC1 public point (to compare with the
/// certificate or to request one).
pub async fn token_client_key(
    token: Arc<dyn Token>,
) -> Result<(ClientKey, Vec<u8>), HqClientError> {
    let key = ensure_tls_key(&token).await?;
    let handle = Handle::current();
    let callback: TlsSignCallback = Arc::new(move |message: &[u8]| {
        // rustls calls this inside the handshake, on a runtime worker thread.
        let sign = || {
            handle
                .block_on(token.sign(TLS_KEY_LABEL, message))
                .and_then(|s| s.to_der())
                .map_err(|e| e.to_string())
        };
        let flavor = Handle::try_current().map(|h| h.runtime_flavor());
        match flavor {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(sign),
            _ => std::thread::scope(|s| {
                s.spawn(sign)
                    .join()
                    .unwrap_or_else(|_| Err("token signing thread failed".into()))
            }),
        }
    });
    Ok((ClientKey::EcdsaP256Callback(callback), key.public_key))
}

/// [`HqTransport`] over one reused mTLS connection (reopened after any failure).
pub struct HqClientTransport {
    client: HqClient,
    connection: tokio::sync::Mutex<Option<HqConnection>>,
}

impl HqClientTransport {
    /// `url` is `https://host[:port]`; `ca_pem` is pinned; `cert_pem` is the kiosk's chain.
    pub fn new(
        url: &str,
        ca_pem: &[u8],
        cert_pem: &[u8],
        key: &ClientKey,
    ) -> Result<Self, HqClientError> {
        Ok(Self {
            client: HqClient::from_url(url, ca_pem, cert_pem, key)?,
            connection: tokio::sync::Mutex::new(None),
        })
    }
}

/// Transport trouble and HQ-side failures (5xx) may pass; HQ's refusals (4xx), bad
/// configuration and an answer larger than the kiosk reads (`ClientError::AnswerTooLarge`:
/// `records::client` reads at most `MAX_ANSWER_BYTES` of HQ's answer) will not, though the
/// sender keeps retrying with backoff either way (an operator may fix HQ's registration or
/// the kiosk's certificate).
fn transport_error(e: ClientError) -> TransportError {
    TransportError {
        retryable: e.is_retryable(),
        message: e.to_string(),
    }
}

fn timed_out(what: &str) -> TransportError {
    TransportError {
        message: format!("HQ did not answer in time ({what})"),
        retryable: true,
    }
}

#[async_trait::async_trait]
impl HqTransport for HqClientTransport {
    async fn send(&self, envelope: Vec<u8>) -> Result<Ack, TransportError> {
        let mut slot = self.connection.lock().await;
        let mut connection = match slot.take() {
            Some(c) => c,
            None => tokio::time::timeout(CONNECT_TIMEOUT, self.client.connect())
                .await
                .map_err(|_| timed_out("connect"))?
                .map_err(transport_error)?,
        };
        let result = tokio::time::timeout(SEND_TIMEOUT, connection.send_envelope(envelope))
            .await
            .map_err(|_| timed_out("batch"))?;
        match result {
            Ok(ack) => {
                *slot = Some(connection);
                Ok(ack)
            }
            // A refusal arrives on a healthy connection: keep it.
            Err(e @ ClientError::Rejected { .. }) => {
                *slot = Some(connection);
                Err(transport_error(e))
            }
            Err(e) => Err(transport_error(e)),
        }
    }
}

/// Everything the link to HQ needs from the daemon's start-up.
pub struct SyncLink {
    pub hq: kiosk_config::HqSection,
    pub kiosk_id: String,
    pub data_dir: std::path::PathBuf,
    /// Config-relative paths resolved.
    pub resolve: Arc<dyn Fn(&std::path::Path) -> std::path::PathBuf + Send + Sync>,
    pub store: crate::store::Store,
    pub signer: Arc<crate::token_keys::DeviceSigner>,
    /// Filled with HQ's record key once known (the API seals applicant records to it).
    pub recipient: Arc<super::HqRecipient>,
    /// Given the CA client once HQ is reachable (`[ca]` overrides HQ's URL and CA).
    pub ca: Option<Arc<crate::ca_client::CaLink>>,
    /// Key type of the local HQ's issuing CA (`p256`, or `sm2` for a kiosk issuing SM2).
    pub local_issuing_ca: &'static str,
}

/// Public file with the device key's verifier JSON (register it at HQ).
pub const DEVICE_KEY_FILE: &str = "kiosk-device-key.json";

/// How often an idle sender looks at the outbox for new records.
const OUTBOX_POLL: Duration = Duration::from_secs(1);

impl SyncLink {
    fn settings(
        &self,
        recipient: records::envelope::RecipientPublicKeys,
        witness: Option<super::Witness>,
    ) -> super::SyncSettings {
        super::SyncSettings {
            witness,
            kiosk_id: self.kiosk_id.clone(),
            suite: match self.hq.suite {
                kiosk_config::EnvelopeSuite::Gm => records::envelope::Suite::Gm,
                kiosk_config::EnvelopeSuite::Nist => records::envelope::Suite::Nist,
            },
            recipient,
            batch_records: self.hq.batch_records,
            batch_bytes: self.hq.batch_bytes,
            retry_min: Duration::from_millis(self.hq.retry_min_ms),
            retry_max: Duration::from_millis(self.hq.retry_max_ms),
        }
    }

    fn sender(
        &self,
        transport: HqClientTransport,
        recipient: records::envelope::RecipientPublicKeys,
        witness: Option<super::Witness>,
    ) -> super::Sender {
        super::Sender {
            store: self.store.clone(),
            signer: self.signer.clone(),
            transport: Arc::new(transport),
            settings: self.settings(recipient, witness),
        }
    }
}

/// HQ's witness key from its JSON verifier file, named as `[hq] witness_name` says.
fn witness_from_file(name: &str, path: &std::path::Path) -> Result<super::Witness, String> {
    let text = read_file("HQ witness key", path).map_err(|e| e.to_string())?;
    let key = records::public_keys::verifier_from_json(&String::from_utf8_lossy(&text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(super::Witness {
        name: name.to_string(),
        key,
    })
}

fn recipient_from_file(
    path: &std::path::Path,
) -> Result<records::envelope::RecipientPublicKeys, String> {
    let text = read_file("HQ record key", path).map_err(|e| e.to_string())?;
    records::public_keys::recipient_public_from_json(&String::from_utf8_lossy(&text))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Run the link until `cancel`: the local HQ child (restarted if it dies) or the remote HQ,
/// and the sender. Never fails the daemon: without HQ, records wait in the outbox.
pub async fn run(link: SyncLink, cancel: tokio_util::sync::CancellationToken) {
    let verifier_json = records::public_keys::verifier_to_json(&link.signer.verifier());
    let key_file = link.data_dir.join(DEVICE_KEY_FILE);
    // Written whole or not at all: an HQ operator may register it at any moment.
    let tmp = key_file.with_extension("json.tmp");
    if let Err(e) =
        std::fs::write(&tmp, &verifier_json).and_then(|()| std::fs::rename(&tmp, &key_file))
    {
        tracing::warn!(path = %key_file.display(), error = %e, "cannot write the device key file");
    }
    let kick = Arc::new(tokio::sync::Notify::new());
    let poller = tokio::spawn(poll_outbox(
        link.store.clone(),
        kick.clone(),
        cancel.clone(),
    ));
    match link.hq.mode {
        kiosk_config::HqMode::Remote => run_remote(&link, kick, cancel).await,
        kiosk_config::HqMode::Local => run_local(&link, &verifier_json, kick, cancel).await,
    }
    poller.abort();
}

/// Wake the sender when records wait and no batch is in flight (a batch in flight is being
/// retried with backoff, which a kick must not cut short).
async fn poll_outbox(
    store: crate::store::Store,
    kick: Arc<tokio::sync::Notify>,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(OUTBOX_POLL) => {}
        }
        let st = store.clone();
        let waiting = tokio::task::spawn_blocking(move || super::status(&st))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|s| s.backlog > 0 && s.in_flight_batch.is_none());
        if waiting {
            kick.notify_one();
        }
    }
}

async fn run_remote(
    link: &SyncLink,
    kick: Arc<tokio::sync::Notify>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let built = async {
        let hq = &link.hq;
        let need = |what: &'static str, p: &Option<std::path::PathBuf>| {
            p.as_deref()
                .map(|p| (link.resolve)(p))
                .ok_or_else(|| format!("hq.{what} is not set"))
        };
        let url = hq.url.clone().ok_or("hq.url is not set")?;
        let ca =
            read_file("hq.ca_cert", &need("ca_cert", &hq.ca_cert)?).map_err(|e| e.to_string())?;
        let cert = read_file("hq.client_cert", &need("client_cert", &hq.client_cert)?)
            .map_err(|e| e.to_string())?;
        let key = match &hq.client_key {
            Some(p) => ClientKey::Pem(
                read_file("hq.client_key", &(link.resolve)(p)).map_err(|e| e.to_string())?,
            ),
            None => {
                let (key, public) = token_client_key(link.signer.token())
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(
                    label = TLS_KEY_LABEL,
                    public_key = %hex::encode(public),
                    "TLS client key on the device token (hq.client_cert must certify it)"
                );
                key
            }
        };
        let recipient = recipient_from_file(&need("record_key", &hq.record_key)?)?;
        link.recipient.set(recipient.clone());
        let witness = match &hq.witness_key {
            Some(p) => Some(witness_from_file(&hq.witness_name, &(link.resolve)(p))?),
            None => {
                tracing::warn!(
                    "no hq.witness_key: HQ's cosignatures of the audit log are kept unchecked"
                );
                None
            }
        };
        if let Some(ca_link) = &link.ca {
            ca_link.connect(&url, &ca, &cert, &key, &*link.resolve);
        }
        let transport =
            HqClientTransport::new(&url, &ca, &cert, &key).map_err(|e| e.to_string())?;
        Ok::<_, String>((url, link.sender(transport, recipient, witness)))
    }
    .await;
    match built {
        Ok((url, sender)) => {
            tracing::info!(url = %url, "sending records to HQ");
            sender.run(cancel, kick).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "sync to HQ is not running; records stay in the outbox")
        }
    }
}

async fn run_local(
    link: &SyncLink,
    verifier_json: &str,
    kick: Arc<tokio::sync::Notify>,
    cancel: tokio_util::sync::CancellationToken,
) {
    use super::local_hq::{LocalHqError, LocalHqProcess, find_hq_ingest};
    let binary = match find_hq_ingest() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no local HQ: records stay in the outbox until one is available");
            return;
        }
    };
    let mut backoff = Duration::from_millis(link.hq.retry_min_ms);
    // The same failure again is logged at debug level only: an operator reads why once.
    let mut last_failure: Option<String> = None;
    loop {
        let started = tokio::select! {
            _ = cancel.cancelled() => return,
            s = LocalHqProcess::start_issuing(&binary, &link.data_dir, &link.kiosk_id, verifier_json, link.local_issuing_ca) => s,
        };
        let wait = match started {
            Err(e @ LocalHqError::Missing(_)) => {
                tracing::warn!(error = %e, "no local HQ: records stay in the outbox");
                return;
            }
            Err(e) => {
                let why = e.to_string();
                if last_failure.as_deref() == Some(why.as_str()) {
                    tracing::debug!(error = %why, retry_in_ms = backoff.as_millis() as u64, "local HQ failed to start again");
                } else {
                    tracing::error!(error = %why, "local HQ failed to start; records stay in the outbox and kioskd keeps retrying");
                    last_failure = Some(why);
                }
                backoff
            }
            Ok(mut hq) => {
                if last_failure.take().is_some() {
                    tracing::info!("local HQ started after earlier failures");
                }
                let ready = hq.ready.clone();
                let built = (|| {
                    let ca = read_file("local HQ CA", &ready.ca_cert).map_err(|e| e.to_string())?;
                    let cert = read_file("local HQ client certificate", &ready.client_cert)
                        .map_err(|e| e.to_string())?;
                    let key = read_file("local HQ client key", &ready.client_key)
                        .map_err(|e| e.to_string())?;
                    let recipient = recipient_from_file(&ready.record_public)?;
                    link.recipient.set(recipient.clone());
                    let witness = witness_from_file(&link.hq.witness_name, &ready.witness_public)?;
                    let key = ClientKey::Pem(key);
                    if let Some(ca_link) = &link.ca {
                        ca_link.connect(&ready.url, &ca, &cert, &key, &*link.resolve);
                    }
                    let transport = HqClientTransport::new(&ready.url, &ca, &cert, &key)
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>(link.sender(transport, recipient, Some(witness)))
                })();
                let sender = match built {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "local HQ answered with unusable files; records stay in the outbox");
                        let _ = hq.stop(Duration::from_secs(5)).await;
                        return;
                    }
                };
                tracing::info!(url = %ready.url, "local HQ ready; sending records");
                let run_cancel = cancel.child_token();
                let mut sending = tokio::spawn(sender.run(run_cancel.clone(), kick.clone()));
                tokio::select! {
                    _ = cancel.cancelled() => {
                        let _ = (&mut sending).await;
                        let _ = hq.stop(Duration::from_secs(5)).await;
                        return;
                    }
                    status = hq.exited() => {
                        tracing::warn!(?status, "local HQ exited; restarting it");
                        run_cancel.cancel();
                        let _ = sending.await;
                    }
                }
                backoff = Duration::from_millis(link.hq.retry_min_ms);
                backoff
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        backoff = (backoff * 2).min(Duration::from_millis(link.hq.retry_max_ms));
    }
}
