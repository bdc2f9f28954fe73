//! Stand-in verification services on loopback, for tests and the demo: one
//! axum server answering the three catalog methods at `POST /verify/{method}`
//! with the protocol of the [module docs](super).
//!
//! It enforces minimum necessary from the receiving side: a request whose field
//! set is not exactly the method's declared one (or whose values are not
//! well-formed: empty text, bad base64 for photos) is answered `400` and
//! recorded as a [`Violation`] a test can assert on. Answers are deterministic:
//! with no enrolled persons, an ID number whose last character is an even digit
//! matches, an odd digit does not, anything else (`X`) is inconclusive; with
//! [`StandIn::set_persons`], a request matches when every text field it carries
//! equals the enrolled person's with the same ID number (unknown ID number:
//! inconclusive). Switches make it slow ([`StandIn::set_delay`]), answer `503`
//! a number of times ([`StandIn::fail_next`]) or go down ([`StandIn::shutdown`]).
//! It never logs a field value.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use kiosk_config::{Catalog, VerifierEndpoint};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::{Verdict, is_binary_item};

/// Largest request body the stand-in reads (a face image and an ID photo).
const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// A synthetic person the stand-in knows (never a real identity).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SyntheticPerson {
    pub name: String,
    pub id_number: String,
    pub mobile: String,
    pub bank_card: String,
    pub bank_mobile: String,
}

impl std::fmt::Debug for SyntheticPerson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyntheticPerson(<redacted>)")
    }
}

impl SyntheticPerson {
    fn value(&self, item: &str) -> Option<&str> {
        Some(match item {
            "name" => &self.name,
            "id_number" => &self.id_number,
            "mobile" => &self.mobile,
            "bank_card" => &self.bank_card,
            "bank_mobile" => &self.bank_mobile,
            _ => return None,
        })
    }
}

/// A request the stand-in received (item names only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The method named by the path.
    pub method: String,
    pub request_id: Option<String>,
    /// The field names the request carried, sorted.
    pub items: Vec<String>,
    /// The status answered.
    pub status: u16,
}

/// A request that broke the protocol or minimum necessary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub method: String,
    /// Fields sent that the method does not declare.
    pub undeclared: Vec<String>,
    /// Declared fields that were not sent.
    pub missing: Vec<String>,
    /// What else was wrong (item names, never values).
    pub problem: String,
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    violations: Vec<Violation>,
    fail_next: u32,
    delay: Duration,
    persons: Vec<SyntheticPerson>,
    answered: u64,
}

struct Shared {
    catalog: Arc<Catalog>,
    inner: Mutex<Inner>,
    requests: watch::Sender<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not silence the stand-in's records.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle of a running stand-in; the server stops when it is dropped.
pub struct StandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn").field("addr", &self.addr).finish()
    }
}

/// Start a stand-in for the embedded catalog's methods on `addr` (use port 0).
pub async fn spawn(addr: SocketAddr) -> std::io::Result<(SocketAddr, StandIn)> {
    spawn_with_catalog(addr, Arc::new(Catalog::embedded())).await
}

/// Start a stand-in enforcing `catalog`'s method declarations.
pub async fn spawn_with_catalog(
    addr: SocketAddr,
    catalog: Arc<Catalog>,
) -> std::io::Result<(SocketAddr, StandIn)> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("stand-in verifiers listen on loopback only, not {addr}"),
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let shared = Arc::new(Shared {
        catalog,
        inner: Mutex::new(Inner::default()),
        requests: watch::channel(0).0,
    });
    let app = Router::new()
        .route("/verify/{method}", post(handle))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(shared.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "stand-in verifier stopped");
        }
    });
    tracing::info!(addr = %local, "stand-in verifiers listening");
    Ok((
        local,
        StandIn {
            addr: local,
            shared,
            task: Some(task),
        },
    ))
}

impl StandIn {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to configure for `method`.
    pub fn url(&self, method: &str) -> String {
        format!("http://{}/verify/{method}", self.addr)
    }

    /// An endpoint configuration pointing at this stand-in.
    pub fn endpoint(&self, method: &str, timeout_ms: u64, retries: u32) -> VerifierEndpoint {
        VerifierEndpoint {
            url: Some(self.url(method)),
            ca_cert: None,
            timeout_ms,
            retries,
        }
    }

    /// Delay every answer by `delay` (to test timeouts).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Answer the next `n` well-formed requests with `503`.
    pub fn fail_next(&self, n: u32) {
        self.shared.lock().fail_next = n;
    }

    /// Decide by these enrolled persons instead of the check-digit rule.
    pub fn set_persons(&self, persons: Vec<SyntheticPerson>) {
        self.shared.lock().persons = persons;
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().received.clone()
    }

    /// Every violation seen so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.shared.lock().violations.clone()
    }

    /// How many requests arrived so far.
    pub fn requests(&self) -> usize {
        *self.shared.requests.borrow()
    }

    /// Wait until at least `n` requests arrived; `false` if `within` passed first.
    pub async fn wait_for_requests(&self, n: usize, within: Duration) -> bool {
        let mut rx = self.shared.requests.subscribe();
        tokio::time::timeout(within, rx.wait_for(|count| *count >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stop listening: new connections are refused from now on.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    body: Bytes,
) -> Response {
    shared.requests.send_modify(|c| *c += 1);
    let checked = check(&shared.catalog, &method, &body);
    let items = checked
        .as_ref()
        .map(|c| c.items.clone())
        .unwrap_or_else(|v| v.sent.clone());
    let request_id = checked.as_ref().ok().map(|c| c.request_id.clone());
    let record = |status: StatusCode| {
        shared.lock().received.push(Received {
            method: method.clone(),
            request_id: request_id.clone(),
            items: items.clone(),
            status: status.as_u16(),
        });
    };
    let request = match checked {
        Ok(r) => r,
        Err(rejected) => {
            tracing::warn!(
                method = %method,
                undeclared = ?rejected.violation.undeclared,
                missing = ?rejected.violation.missing,
                problem = %rejected.violation.problem,
                "stand-in verifier rejected a request"
            );
            record(StatusCode::BAD_REQUEST);
            let message = rejected.violation.problem.clone();
            shared.lock().violations.push(rejected.violation);
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    let delay = shared.lock().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let fail = {
        let mut inner = shared.lock();
        let fail = inner.fail_next > 0;
        inner.fail_next = inner.fail_next.saturating_sub(1);
        fail
    };
    if fail {
        record(StatusCode::SERVICE_UNAVAILABLE);
        return (StatusCode::SERVICE_UNAVAILABLE, "stand-in: try again").into_response();
    }
    let (verdict, n) = {
        let mut inner = shared.lock();
        inner.answered += 1;
        (decide(&inner.persons, &request.fields), inner.answered)
    };
    record(StatusCode::OK);
    tracing::debug!(method = %method, verdict = verdict.as_str(), "stand-in verifier answered");
    let reference = format!("standin-{method}-{n:06}");
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json!({ "result": verdict, "reference": reference }).to_string(),
    )
        .into_response()
}

struct Checked {
    request_id: String,
    items: Vec<String>,
    fields: Map<String, Value>,
}

struct Rejected {
    sent: Vec<String>,
    violation: Violation,
}

/// Check a request body against the method's declaration.
fn check(catalog: &Catalog, method: &str, body: &[u8]) -> Result<Checked, Rejected> {
    let reject = |sent: Vec<String>, undeclared, missing, problem: String| Rejected {
        sent,
        violation: Violation {
            method: method.to_string(),
            undeclared,
            missing,
            problem,
        },
    };
    let Ok(decl) = catalog.method(method) else {
        return Err(reject(
            vec![],
            vec![],
            vec![],
            format!("unknown method {method:?}"),
        ));
    };
    let Ok(Value::Object(mut root)) = serde_json::from_slice::<Value>(body) else {
        return Err(reject(
            vec![],
            vec![],
            vec![],
            "body is not a JSON object".into(),
        ));
    };
    let Some(Value::Object(fields)) = root.remove("fields") else {
        return Err(reject(
            vec![],
            vec![],
            vec![],
            "no \"fields\" object".into(),
        ));
    };
    let mut sent: Vec<String> = fields.keys().cloned().collect();
    sent.sort();
    let declared: BTreeSet<&str> = decl.fields.iter().map(String::as_str).collect();
    let given: BTreeSet<&str> = fields.keys().map(String::as_str).collect();
    let undeclared: Vec<String> = given.difference(&declared).map(|s| s.to_string()).collect();
    let missing: Vec<String> = declared.difference(&given).map(|s| s.to_string()).collect();
    if !undeclared.is_empty() || !missing.is_empty() {
        let problem = format!(
            "field set is not the declared one: undeclared {undeclared:?}, missing {missing:?}"
        );
        return Err(reject(sent, undeclared, missing, problem));
    }
    if root.get("method").and_then(Value::as_str) != Some(method) {
        return Err(reject(
            sent,
            vec![],
            vec![],
            "\"method\" does not name this method".into(),
        ));
    }
    let request_id = match root.get("request_id").and_then(Value::as_str) {
        Some(id) if (1..=128).contains(&id.len()) => id.to_string(),
        _ => {
            return Err(reject(
                sent,
                vec![],
                vec![],
                "bad or missing \"request_id\"".into(),
            ));
        }
    };
    if let Some(extra) = root
        .keys()
        .find(|k| !matches!(k.as_str(), "method" | "request_id"))
    {
        let problem = format!("unexpected top-level key {extra:?}");
        return Err(reject(sent, vec![], vec![], problem));
    }
    for (item, value) in &fields {
        let well_formed = match value.as_str() {
            None => false,
            Some(text) if is_binary_item(catalog, item) => {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .is_ok_and(|bytes| !bytes.is_empty())
            }
            Some(text) => !text.trim().is_empty(),
        };
        if !well_formed {
            let problem = format!("field {item:?} is not a well-formed value");
            return Err(reject(sent, vec![], vec![], problem));
        }
    }
    Ok(Checked {
        request_id,
        items: sent,
        fields,
    })
}

/// The deterministic answer (see the module docs).
fn decide(persons: &[SyntheticPerson], fields: &Map<String, Value>) -> Verdict {
    let text = |item: &str| fields.get(item).and_then(Value::as_str);
    let Some(id_number) = text("id_number") else {
        return Verdict::Inconclusive;
    };
    if persons.is_empty() {
        return match id_number.chars().last().and_then(|c| c.to_digit(10)) {
            Some(d) if d % 2 == 0 => Verdict::Match,
            Some(_) => Verdict::NoMatch,
            None => Verdict::Inconclusive,
        };
    }
    let Some(person) = persons.iter().find(|p| p.id_number == id_number) else {
        return Verdict::Inconclusive;
    };
    let all_equal = fields.iter().all(|(item, value)| match person.value(item) {
        Some(known) => value.as_str() == Some(known),
        None => true, // photos: the stand-in does not compare faces
    });
    if all_equal {
        Verdict::Match
    } else {
        Verdict::NoMatch
    }
}
