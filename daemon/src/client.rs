//! A small typed client of kioskd's local API, for `kioskctl staff` and the integration
//! tests: HTTP/1.1 (hyper) over kioskd's Unix socket (`[api] unix_socket`) or a loopback TCP
//! address, with one method per staff endpoint of `daemon/api/openapi.json` returning serde
//! types. A refusal keeps the API's stable error `code` and message ([`ClientError::Api`]);
//! a socket nobody listens on is named ([`ClientError::Connect`]).
//!
//! It depends on nothing else in this crate: it is a front door's client, not a part of the
//! daemon.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// A secret string going to or coming from kioskd (PINs, the staff session): zeroized on
/// drop, never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must show or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(..)")
    }
}

/// Where kioskd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Its Unix socket (the staff CLI's way in).
    Unix(PathBuf),
    /// A loopback TCP address.
    Tcp(SocketAddr),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// Why a call did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the endpoint.
    #[error("kioskd is not running? cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: Endpoint,
        source: std::io::Error,
    },
    /// The connection broke or timed out mid-request.
    #[error("talking to kioskd at {endpoint}: {reason}")]
    Transport { endpoint: Endpoint, reason: String },
    /// kioskd refused: its HTTP status, stable error code and message.
    #[error("kioskd refused: {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        details: Option<serde_json::Value>,
    },
    /// The answer was not what the API documents.
    #[error("unexpected answer from kioskd (HTTP {status}): {reason}")]
    Unexpected { status: u16, reason: String },
    /// A staff call before [`Client::login`].
    #[error("not logged in as staff")]
    NotLoggedIn,
}

impl ClientError {
    /// The API's error code when kioskd refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether kioskd answered (and refused), as opposed to not being reachable.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ClientError::Api { .. })
    }
}

/// The JSON error body of the API (`daemon/src/api/error.rs`).
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorInner,
}

#[derive(Deserialize)]
struct ErrorInner {
    code: String,
    message: String,
    #[serde(default)]
    details: Option<serde_json::Value>,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub kiosk_id: String,
    pub uptime_ms: u64,
    pub store_schema: i64,
    pub intake: String,
    pub intake_detail: Option<String>,
    pub applicant_session_active: bool,
    pub sync_backlog: u64,
}

#[derive(Deserialize)]
struct LoginAnswer {
    staff_token: SecretString,
    staff_id: String,
}

/// The log's verification status (`audit` of `GET /v1/staff/status`, `verification` of
/// `GET /v1/staff/audit`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AuditVerification {
    pub entries: u64,
    pub checkpoints: u64,
    pub intact: bool,
    pub problem: Option<String>,
}

/// Sync to HQ as the staff status shows it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SyncStatus {
    pub backlog: u64,
    pub in_flight_batch: Option<u64>,
    pub attempts: u64,
    pub last_error: Option<String>,
    pub last_contact_ms: Option<i64>,
}

/// An open rights request.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RightsRequestLine {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub due: String,
}

/// `GET /v1/staff/status`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StaffStatus {
    pub sync: SyncStatus,
    pub rights_requests: Vec<RightsRequestLine>,
    pub audit: AuditVerification,
    pub devices: BTreeMap<String, String>,
}

/// One audit entry as staff see it (no identities, no personal data).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_ms: i64,
    pub actor_kind: String,
    pub action: String,
    pub object_kind: String,
}

/// `GET /v1/staff/audit`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub verification: AuditVerification,
}

/// A subject whose personal data the kiosk still holds, with masked values.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SubjectLine {
    pub subject_id: String,
    pub created_at_ms: i64,
    pub acked_at_ms: Option<i64>,
    /// Item → masked value.
    pub fields: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct SubjectsAnswer {
    subjects: Vec<SubjectLine>,
}

/// One clear value (`POST /v1/staff/reveal`); its `Debug` does not show it.
#[derive(Clone, Deserialize, Serialize)]
pub struct Revealed {
    pub value: SecretString,
}

impl fmt::Debug for Revealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Revealed(..)")
    }
}

/// A rights request after staff completed or refused it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RightsOutcome {
    pub request_id: String,
    pub state: String,
    #[serde(default)]
    pub ground: Option<String>,
}

/// A UKEY present (`GET /v1/staff/tokens`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct UkeyLine {
    pub serial: String,
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub initialized: bool,
    pub blank: bool,
    pub pin_state: String,
}

#[derive(Deserialize)]
struct TokensAnswer {
    tokens: Vec<UkeyLine>,
}

/// `POST /v1/staff/batches`: absent fields take kioskd's defaults. `Debug` hides the PINs.
#[derive(Clone, Default, Serialize)]
pub struct BatchRequest {
    /// Serials to issue; `None`: every blank token present.
    pub serials: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factory_so_pin: Option<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_so_pin: Option<SecretString>,
    /// `random` or `given`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_pin: Option<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<usize>,
}

impl fmt::Debug for BatchRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchRequest")
            .field("serials", &self.serials)
            .field("algorithm", &self.algorithm)
            .field("label_prefix", &self.label_prefix)
            .field("pin_mode", &self.pin_mode)
            .field("parallelism", &self.parallelism)
            .finish_non_exhaustive()
    }
}

/// A token of a batch that just started.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BatchTokenStart {
    pub serial: String,
    pub state: String,
    pub percent: u8,
}

/// `202` of `POST /v1/staff/batches`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BatchStarted {
    pub batch_id: String,
    pub tokens: Vec<BatchTokenStart>,
}

/// Why one token of a batch failed.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BatchTokenError {
    pub code: String,
    pub message: String,
}

/// One token of `GET /v1/staff/batches/{id}`; the initial PINs are shown once, and `Debug`
/// does not show them.
#[derive(Clone, Deserialize, Serialize)]
pub struct BatchToken {
    pub serial: String,
    pub label: String,
    pub state: String,
    pub percent: u8,
    pub error: Option<BatchTokenError>,
    pub public_key_pem: Option<String>,
    pub initial_pin: Option<SecretString>,
    pub initial_so_pin: Option<SecretString>,
}

impl fmt::Debug for BatchToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchToken")
            .field("serial", &self.serial)
            .field("label", &self.label)
            .field("state", &self.state)
            .field("percent", &self.percent)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// `GET /v1/staff/batches/{id}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BatchState {
    pub batch_id: String,
    /// `running` or `done`.
    pub state: String,
    pub algorithm: String,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub tokens: Vec<BatchToken>,
}

/// A connection-per-request client of one kioskd, optionally logged in as staff.
pub struct Client {
    endpoint: Endpoint,
    timeout: Duration,
    staff: Option<SecretString>,
    staff_id: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("staff_id", &self.staff_id)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the kioskd listening on `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            timeout: Duration::from_secs(60),
            staff: None,
            staff_id: None,
        }
    }

    /// A client of kioskd's Unix socket.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self::new(Endpoint::Unix(path.into()))
    }

    /// Bound on one request (connect to last byte); 60 s by default.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The staff member logged in (certificate subject), if any.
    pub fn staff_id(&self) -> Option<&str> {
        self.staff_id.as_deref()
    }

    /// One request with an optional JSON body; returns the status and the body bytes. The
    /// body buffer is wiped once sent (it may hold a PIN).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        match tokio::time::timeout(self.timeout, self.exchange(method, path, bearer, body)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Transport {
                endpoint: self.endpoint.clone(),
                reason: format!("no answer within {} s", self.timeout.as_secs()),
            }),
        }
    }

    /// One request with a JSON value; returns the status and the JSON answer (`Null` when
    /// the answer is empty or not JSON). For tests and scripts that look at raw answers.
    pub async fn request_json(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let body = body.map(|v| serde_json::to_vec(v).expect("JSON values serialize"));
        let (status, bytes) = self.request(method, path, bearer, body).await?;
        Ok((
            status.as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        ))
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let connect = |source| ClientError::Connect {
            endpoint: self.endpoint.clone(),
            source,
        };
        let transport = |e: hyper::Error| ClientError::Transport {
            endpoint: self.endpoint.clone(),
            reason: e.to_string(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost");
        if let Some(token) = bearer {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let payload = match body {
            Some(mut bytes) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                let payload = Bytes::copy_from_slice(&bytes);
                bytes.zeroize();
                payload
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(payload))
            .map_err(|e| ClientError::Transport {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            })?;
        let response = match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect)?;
                send(TokioIo::new(stream), request).await
            }
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(connect)?;
                send(TokioIo::new(stream), request).await
            }
        }
        .map_err(transport)?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(transport)?
            .to_bytes();
        Ok((status, bytes))
    }

    /// A request whose success body is `T` and whose refusal is the API's error JSON.
    async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| ClientError::Unexpected {
                status: 0,
                reason: format!("cannot encode the request: {e}"),
            })?),
            None => None,
        };
        let (status, bytes) = self.request(method, path, bearer, body).await?;
        decode(status, &bytes)
    }

    fn staff_token(&self) -> Result<&str, ClientError> {
        self.staff
            .as_ref()
            .map(SecretString::expose)
            .ok_or(ClientError::NotLoggedIn)
    }

    async fn staff_call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let token = self.staff_token()?;
        self.call(method, path, Some(token), body).await
    }

    /// The staff session token (for callers that make raw requests as the same staff).
    pub fn staff_session(&self) -> Option<&str> {
        self.staff.as_ref().map(SecretString::expose)
    }

    /// `GET /v1/health` (no login).
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(Method::GET, "/v1/health", None, NO_BODY).await
    }

    /// `POST /v1/staff/login` with the staff UKEY `token` and its PIN; the session is kept
    /// for the staff calls that follow. Returns the staff member's certificate subject.
    pub async fn login(&mut self, token: &str, pin: &str) -> Result<String, ClientError> {
        #[derive(Serialize)]
        struct Login<'a> {
            token: &'a str,
            pin: &'a str,
        }
        let body = Login { token, pin };
        let answer: LoginAnswer = self
            .call(Method::POST, "/v1/staff/login", None, Some(&body))
            .await?;
        self.staff = Some(answer.staff_token);
        self.staff_id = Some(answer.staff_id.clone());
        Ok(answer.staff_id)
    }

    /// `POST /v1/staff/logout`; the client forgets the session whatever the answer.
    pub async fn logout(&mut self) -> Result<(), ClientError> {
        let Some(token) = self.staff.take() else {
            return Ok(());
        };
        self.staff_id = None;
        let (status, bytes) = self
            .request(Method::POST, "/v1/staff/logout", Some(token.expose()), None)
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(refusal(status, &bytes))
        }
    }

    /// `GET /v1/staff/status`.
    pub async fn status(&self) -> Result<StaffStatus, ClientError> {
        self.staff_call(Method::GET, "/v1/staff/status", NO_BODY)
            .await
    }

    /// `GET /v1/staff/audit?limit=N`: the newest entries first, and the log's verification.
    pub async fn audit(&self, limit: Option<u32>) -> Result<AuditPage, ClientError> {
        let path = match limit {
            Some(n) => format!("/v1/staff/audit?limit={n}"),
            None => "/v1/staff/audit".to_string(),
        };
        self.staff_call(Method::GET, &path, NO_BODY).await
    }

    /// `GET /v1/staff/subjects`: the subjects whose data is still held, masked.
    pub async fn subjects(&self) -> Result<Vec<SubjectLine>, ClientError> {
        let answer: SubjectsAnswer = self
            .staff_call(Method::GET, "/v1/staff/subjects", NO_BODY)
            .await?;
        Ok(answer.subjects)
    }

    /// `POST /v1/staff/reveal`: one clear value, audited with `reason`.
    pub async fn reveal(
        &self,
        subject_id: &str,
        item: &str,
        reason: &str,
    ) -> Result<Revealed, ClientError> {
        let body = serde_json::json!({ "subject_id": subject_id, "item": item, "reason": reason });
        self.staff_call(Method::POST, "/v1/staff/reveal", Some(&body))
            .await
    }

    /// `POST /v1/staff/rights-requests/{id}/complete`.
    pub async fn complete_rights_request(&self, id: &str) -> Result<RightsOutcome, ClientError> {
        let path = format!("/v1/staff/rights-requests/{}/complete", segment(id));
        self.staff_call(Method::POST, &path, Some(&serde_json::json!({})))
            .await
    }

    /// `POST /v1/staff/rights-requests/{id}/refuse` on `ground`.
    pub async fn refuse_rights_request(
        &self,
        id: &str,
        ground: &str,
    ) -> Result<RightsOutcome, ClientError> {
        let path = format!("/v1/staff/rights-requests/{}/refuse", segment(id));
        let body = serde_json::json!({ "ground": ground });
        self.staff_call(Method::POST, &path, Some(&body)).await
    }

    /// `GET /v1/staff/tokens`: the UKEYs present.
    pub async fn tokens(&self) -> Result<Vec<UkeyLine>, ClientError> {
        let answer: TokensAnswer = self
            .staff_call(Method::GET, "/v1/staff/tokens", NO_BODY)
            .await?;
        Ok(answer.tokens)
    }

    /// `POST /v1/staff/batches`.
    pub async fn start_batch(&self, request: &BatchRequest) -> Result<BatchStarted, ClientError> {
        self.staff_call(Method::POST, "/v1/staff/batches", Some(request))
            .await
    }

    /// `GET /v1/staff/batches/{id}` (initial PINs are in the first answer after they exist).
    pub async fn batch(&self, id: &str) -> Result<BatchState, ClientError> {
        let path = format!("/v1/staff/batches/{}", segment(id));
        self.staff_call(Method::GET, &path, NO_BODY).await
    }
}

/// The body of a request without one.
const NO_BODY: Option<&()> = None;

async fn send<I>(
    io: I,
    request: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await;
    drop(sender);
    if response.is_err() {
        driver.abort();
    }
    response
}

/// Percent-encodes an id put into a path (ids are UUIDs; anything else is escaped).
fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn refusal(status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ClientError::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
            details: body.error.details,
        },
        Err(_) => ClientError::Unexpected {
            status: status.as_u16(),
            reason: "the error is not the API's JSON error".into(),
        },
    }
}

fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T, ClientError> {
    if !status.is_success() {
        return Err(refusal(status, bytes));
    }
    serde_json::from_slice(bytes).map_err(|e| ClientError::Unexpected {
        status: status.as_u16(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_the_api_code_and_message() {
        let body = br#"{"error":{"code":"wrong_pin","message":"wrong PIN (2 tries left)","details":{"retries_left":2}}}"#;
        let err = decode::<Health>(StatusCode::UNAUTHORIZED, body).unwrap_err();
        assert_eq!(err.code(), Some("wrong_pin"));
        assert!(err.is_refusal());
        assert_eq!(
            err.to_string(),
            "kioskd refused: wrong_pin: wrong PIN (2 tries left)"
        );
        let err = decode::<Health>(StatusCode::BAD_GATEWAY, b"<html>").unwrap_err();
        assert!(matches!(err, ClientError::Unexpected { status: 502, .. }));
    }

    #[tokio::test]
    async fn a_missing_socket_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kioskd.sock");
        let err = Client::unix(&path).health().await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("kioskd is not running? cannot connect to ")
                && text.contains(&path.display().to_string()),
            "{text}"
        );
    }

    #[test]
    fn ids_are_escaped_in_paths_and_pins_stay_out_of_debug() {
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        let request = BatchRequest {
            user_pin: Some(SecretString::new("135790")),
            ..BatchRequest::default()
        };
        assert!(!format!("{request:?}").contains("135790"));
        let revealed = Revealed {
            value: SecretString::new("110101199003071234"),
        };
        assert!(!format!("{revealed:?}").contains("1234"));
    }
}
