//! The verification clients against the loopback stand-in services: exactly the
//! declared fields travel, refusals happen before any traffic, timeouts,
//! retries on 503 only, server down, hand-over records, and no personal value
//! in the audit log or the logs. All identities are synthetic.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiosk_config::Catalog;
use kiosk_config::catalog::DEFAULT_CATALOG;
use kioskd::privacy::Personal;
use kioskd::store::Store;
use kioskd::verify::handover::{HandoverContext, record_attempt};
use kioskd::verify::http::{Backoff, HttpVerifier};
use kioskd::verify::standin::{self, StandIn, SyntheticPerson};
use kioskd::verify::{Failure, PersonalBytes, Verdict, VerificationRequest, Verifier, VerifyError};

const METHODS: [&str; 3] = ["carrier_3factor", "bank_card_4factor", "biometric_compare"];

// Synthetic values (not real people); the last ID digit drives the stand-in's rule.
const NAME: &str = "测试丙";
const ID_EVEN: &str = "110101200001010024";
const ID_ODD: &str = "110101200001010013";
const ID_X: &str = "11010120000101001X";
const MOBILE: &str = "13900009999";
const BANK_CARD: &str = "6222000011112222333";
const BANK_MOBILE: &str = "13700008888";
const ADDRESS: &str = "测试省测试市样例路1号";
const PHOTO: &[u8] = b"\xff\xd8synthetic-id-photo";
const FACE: &[u8] = b"\x89PNGsynthetic-face";

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Every value the kiosk could hold, more than any method declares.
fn everything(method: &str, id_number: &str) -> VerificationRequest {
    VerificationRequest::new(method)
        .with(Personal::new("name", NAME))
        .with(Personal::new("id_number", id_number))
        .with(Personal::new("mobile", MOBILE))
        .with(Personal::new("bank_card", BANK_CARD))
        .with(Personal::new("bank_mobile", BANK_MOBILE))
        .with(Personal::new("address", ADDRESS))
        .with(PersonalBytes::new("id_photo", PHOTO))
        .with(PersonalBytes::new("face_image", FACE))
}

fn client(standin: &StandIn, timeout_ms: u64, retries: u32) -> HttpVerifier {
    let mut v = HttpVerifier::new(Arc::new(Catalog::embedded())).with_backoff(Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(20),
    });
    for m in METHODS {
        v.add_endpoint(m, &standin.endpoint(m, timeout_ms, retries), None)
            .unwrap();
    }
    v
}

fn declared_sorted(method: &str) -> Vec<String> {
    let mut f = Catalog::embedded().method(method).unwrap().fields.clone();
    f.sort();
    f
}

#[tokio::test]
async fn each_method_sends_exactly_its_declared_fields() {
    let (_, standin) = standin::spawn(loopback()).await.unwrap();
    let verifier = client(&standin, 5_000, 0);
    for method in METHODS {
        let outcome = verifier.verify(everything(method, ID_EVEN)).await.unwrap();
        assert_eq!(outcome.verdict, Verdict::Match, "{method}");
        assert_eq!(outcome.handover.sends, 1);
        let catalog = Catalog::embedded();
        assert_eq!(
            outcome.handover.recipient,
            catalog.method(method).unwrap().recipient
        );
        let last = standin.received().pop().unwrap();
        assert_eq!(last.method, method);
        assert_eq!(last.status, 200);
        // The undeclared values offered (address, the other methods' items) were not sent.
        assert_eq!(last.items, declared_sorted(method), "{method}");
        assert_eq!(
            last.request_id.as_deref(),
            Some(outcome.handover.request_id.as_str())
        );
    }
    assert_eq!(standin.violations(), vec![]);
    assert_eq!(standin.requests(), 3);
}

#[tokio::test]
async fn answers_follow_the_data() {
    let (_, standin) = standin::spawn(loopback()).await.unwrap();
    let verifier = client(&standin, 5_000, 0);
    let verdict = |id: &'static str| {
        let v = &verifier;
        async move {
            v.verify(everything("carrier_3factor", id))
                .await
                .unwrap()
                .verdict
        }
    };
    assert_eq!(verdict(ID_EVEN).await, Verdict::Match);
    assert_eq!(verdict(ID_ODD).await, Verdict::NoMatch);
    assert_eq!(verdict(ID_X).await, Verdict::Inconclusive);
    standin.set_persons(vec![SyntheticPerson {
        name: NAME.into(),
        id_number: ID_ODD.into(),
        mobile: MOBILE.into(),
        bank_card: BANK_CARD.into(),
        bank_mobile: BANK_MOBILE.into(),
    }]);
    assert_eq!(verdict(ID_ODD).await, Verdict::Match);
    assert_eq!(verdict(ID_EVEN).await, Verdict::Inconclusive);
    let wrong_mobile = VerificationRequest::new("carrier_3factor")
        .with(Personal::new("name", NAME))
        .with(Personal::new("id_number", ID_ODD))
        .with(Personal::new("mobile", "13900000000"));
    let outcome = verifier.verify(wrong_mobile).await.unwrap();
    assert_eq!(outcome.verdict, Verdict::NoMatch);
    assert!(outcome.reference.starts_with("standin-carrier_3factor-"));
}

#[tokio::test]
async fn a_missing_field_is_refused_before_any_traffic() {
    let (_, standin) = standin::spawn(loopback()).await.unwrap();
    let verifier = client(&standin, 5_000, 3);
    let request = VerificationRequest::new("biometric_compare")
        .with(Personal::new("name", NAME))
        .with(Personal::new("id_number", ID_EVEN))
        .with(PersonalBytes::new("id_photo", PHOTO));
    let err = verifier.verify(request).await.unwrap_err();
    assert!(
        matches!(&err, VerifyError::MissingField { item, .. } if item == "face_image"),
        "{err}"
    );
    assert!(err.handover().is_none());
    assert_eq!(standin.requests(), 0);
}

#[tokio::test]
async fn the_standin_rejects_any_other_field_set() {
    let (_, standin) = standin::spawn(loopback()).await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let extra = serde_json::json!({
        "method": "carrier_3factor", "request_id": "r1",
        "fields": {"name": NAME, "mobile": MOBILE, "id_number": ID_EVEN, "address": ADDRESS}
    });
    let missing = serde_json::json!({
        "method": "carrier_3factor", "request_id": "r2",
        "fields": {"name": NAME, "id_number": ID_EVEN}
    });
    for body in [&extra, &missing] {
        let status = http
            .post(standin.url("carrier_3factor"))
            .json(body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 400);
    }
    let v = standin.violations();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].undeclared, ["address"]);
    assert_eq!(v[1].missing, ["mobile"]);
    // The record names items only.
    assert!(!format!("{v:?}").contains(ID_EVEN));
}

#[tokio::test]
async fn a_slow_service_times_out() {
    let (_, standin) = standin::spawn(loopback()).await.unwrap();
    standin.set_delay(Duration::from_secs(30));
    let verifier = client(&standin, 300, 0);
    let err = verifier
        .verify(everything("carrier_3factor", ID_EVEN))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::Failed {
                failure: Failure::Timeout,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    // The service got the data (it is only slow to answer): that is a hand-over.
    assert!(standin.wait_for_requests(1, Duration::from_secs(5)).await);
    assert_eq!(err.handover().map(|h| h.sends), Some(1));
}

#[tokio::test]
async fn a_503_is_retried_and_then_succeeds() {
    let (_, standin) = standin::spawn(loopback()).await.unwrap();
    standin.fail_next(2);
    let verifier = client(&standin, 5_000, 2);
    let outcome = verifier
        .verify(everything("bank_card_4factor", ID_EVEN))
        .await
        .unwrap();
    assert_eq!(outcome.verdict, Verdict::Match);
    assert_eq!(outcome.handover.sends, 3);
    let statuses: Vec<u16> = standin.received().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
    let ids: Vec<_> = standin
        .received()
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    assert!(
        ids.iter().all(|id| id == &ids[0]),
        "retries keep the request id"
    );

    // More failures than retries: a typed error after retries + 1 attempts.
    standin.fail_next(5);
    let err = verifier
        .verify(everything("bank_card_4factor", ID_EVEN))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::Failed { failure: Failure::ServerError(503), attempts: 3, handover: Some(h), .. }
                if h.sends == 3
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_400_is_not_retried() {
    // A stand-in whose catalog declares fewer fields refuses what the client sends.
    let narrowed = DEFAULT_CATALOG.replace(
        "fields = [\"name\", \"mobile\", \"id_number\"]",
        "fields = [\"name\", \"mobile\"]",
    );
    assert_ne!(narrowed, DEFAULT_CATALOG);
    let catalog = Arc::new(Catalog::parse(&narrowed, None).unwrap());
    let (_, standin) = standin::spawn_with_catalog(loopback(), catalog)
        .await
        .unwrap();
    let verifier = client(&standin, 5_000, 4);
    let err = verifier
        .verify(everything("carrier_3factor", ID_EVEN))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::Failed {
                failure: Failure::Refused(400),
                attempts: 1,
                handover: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(standin.requests(), 1);
    assert_eq!(standin.violations()[0].undeclared, ["id_number"]);
}

#[tokio::test]
async fn a_service_that_is_down_is_a_typed_error_and_no_hand_over() {
    let (_, standin) = standin::spawn(loopback()).await.unwrap();
    let verifier = client(&standin, 2_000, 2);
    standin.shutdown().await;
    let err = verifier
        .verify(everything("carrier_3factor", ID_EVEN))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::Failed {
                failure: Failure::Unreachable(_),
                attempts: 3,
                handover: None,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_method_without_endpoint_is_not_configured() {
    let verifier = HttpVerifier::new(Arc::new(Catalog::embedded()));
    let err = verifier
        .verify(everything("carrier_3factor", ID_EVEN))
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::NotConfigured { .. }), "{err}");
}

fn table_text(conn: &rusqlite::Connection, sql: &str) -> String {
    let mut stmt = conn.prepare(sql).unwrap();
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows.join("\n")
}

fn assert_no_personal_value(text: &str, what: &str) {
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    for value in [
        NAME,
        ID_EVEN,
        ID_ODD,
        MOBILE,
        BANK_CARD,
        BANK_MOBILE,
        ADDRESS,
        "测试",
        &b64(PHOTO),
        &b64(FACE),
        "synthetic-",
    ] {
        assert!(
            !text.contains(value),
            "{what} contains a personal value: {value}"
        );
    }
}

#[tokio::test]
async fn every_hand_over_is_recorded_without_personal_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("kiosk.sqlite")).unwrap();
    let (_, standin) = standin::spawn(loopback()).await.unwrap();
    standin.fail_next(1);
    let verifier = client(&standin, 5_000, 1);
    let ctx = HandoverContext::applicant("session-7", "cert_application");

    let ok = verifier
        .verify(everything("biometric_compare", ID_EVEN))
        .await;
    let refused = verifier
        .verify(VerificationRequest::new("carrier_3factor").with(Personal::new("name", NAME)))
        .await;
    assert!(refused.is_err());
    {
        let mut conn = store.conn().unwrap();
        let tx = conn.transaction().unwrap();
        let id = record_attempt(&tx, 1_000, &ctx, &ok).unwrap();
        assert!(id.is_some());
        // Nothing was sent, so nothing is recorded.
        assert_eq!(record_attempt(&tx, 1_001, &ctx, &refused).unwrap(), None);
        tx.commit().unwrap();
    }
    // A timeout after sending is a hand-over too.
    standin.set_delay(Duration::from_secs(30));
    let timed_out = client(&standin, 500, 0)
        .verify(everything("carrier_3factor", ID_ODD))
        .await;
    {
        let mut conn = store.conn().unwrap();
        let tx = conn.transaction().unwrap();
        assert!(
            record_attempt(&tx, 2_000, &ctx, &timed_out)
                .unwrap()
                .is_some()
        );
        tx.commit().unwrap();
    }

    let conn = store.conn().unwrap();
    let rows: Vec<(String, String, String, String, String, i64)> = conn
        .prepare(
            "SELECT session_id, recipient, method, items, purpose, at FROM handovers ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2);
    let (session, recipient, method, items, purpose, at) = &rows[0];
    assert_eq!(session, "session-7");
    assert_eq!(recipient, "photo-comparison-service");
    assert_eq!(method, "biometric_compare");
    let items: Vec<String> = serde_json::from_str(items).unwrap();
    assert_eq!(items, ["name", "id_number", "id_photo", "face_image"]);
    assert_eq!(purpose, "cert_application");
    assert_eq!(*at, 1_000);
    assert_eq!(rows[1].2, "carrier_3factor");

    let details = table_text(
        &conn,
        "SELECT detail FROM audit_log WHERE action = 'handover.verifier' ORDER BY seq",
    );
    let entries: Vec<serde_json::Value> = details
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["result"], "match");
    assert_eq!(entries[0]["sends"], 2, "the 503 and the answered retry");
    assert_eq!(entries[0]["recipient"], "photo-comparison-service");
    assert_eq!(entries[1]["result"], "timeout");
    let ok = ok.unwrap();
    assert_eq!(entries[0]["request_id"], ok.handover.request_id.as_str());
    assert_eq!(entries[0]["reference"], ok.reference.as_str());

    let everything_stored = [
        table_text(
            &conn,
            "SELECT actor || action || coalesce(subject, '') || detail FROM audit_log",
        ),
        table_text(
            &conn,
            "SELECT session_id || recipient || method || items || purpose FROM handovers",
        ),
    ]
    .join("\n");
    assert_no_personal_value(&everything_stored, "the audit log or hand-over table");
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn no_personal_value_reaches_the_logs() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (_, standin) = standin::spawn(loopback()).await.unwrap();
    let verifier = client(&standin, 5_000, 1);
    for method in METHODS {
        verifier.verify(everything(method, ID_EVEN)).await.unwrap();
    }
    standin.fail_next(1);
    verifier
        .verify(everything("carrier_3factor", ID_ODD))
        .await
        .unwrap();
    // A violation (logged by the stand-in) and a refusal.
    let narrowed = DEFAULT_CATALOG.replace(
        "fields = [\"name\", \"mobile\", \"id_number\"]",
        "fields = [\"name\", \"mobile\"]",
    );
    let (_, strict) = standin::spawn_with_catalog(
        loopback(),
        Arc::new(Catalog::parse(&narrowed, None).unwrap()),
    )
    .await
    .unwrap();
    let err = client(&strict, 5_000, 0)
        .verify(everything("carrier_3factor", ID_EVEN))
        .await
        .unwrap_err();
    tracing::info!(error = %err, "refused as expected");
    standin.set_delay(Duration::from_secs(30));
    let err = client(&standin, 100, 0)
        .verify(everything("bank_card_4factor", ID_EVEN))
        .await
        .unwrap_err();
    tracing::info!(error = %err, debug = ?err, "timed out as expected");

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // The capture works: the client's and the stand-in's events are there.
    assert!(logs.contains("verification answered"), "{logs}");
    assert!(logs.contains("verification attempt failed"), "{logs}");
    assert!(
        logs.contains("stand-in verifier rejected a request"),
        "{logs}"
    );
    assert_no_personal_value(&logs, "the logs");
}

/// Run a command, failing the test with its stderr if it fails.
fn run(cmd: &mut std::process::Command) {
    let out = cmd
        .output()
        .expect("command runs (openssl and socat are installed)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA (P-256) written under `dir` with `openssl`; returns its certificate.
fn make_ca(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.pem"));
    run(std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", &format!("/CN={name}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    cert
}

/// A server certificate for 127.0.0.1 signed by CA `ca`; returns certificate + key PEM.
fn make_server_cert(dir: &std::path::Path, ca: &str) -> std::path::PathBuf {
    let key = dir.join("server.key");
    let csr = dir.join("server.csr");
    let cert = dir.join("server.pem");
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(std::process::Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    run(std::process::Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-set_serial", "2"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(dir.join(format!("{ca}.pem")))
        .arg("-CAkey")
        .arg(dir.join(format!("{ca}.key")))
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    let mut both = std::fs::read(&cert).unwrap();
    both.extend(std::fs::read(&key).unwrap());
    let combined = dir.join("server-with-key.pem");
    std::fs::write(&combined, both).unwrap();
    combined
}

/// Kills the TLS front (socat) when the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TLS front (socat) for the stand-in; returns the child and its port once it accepts.
async fn tls_front(standin: &StandIn, server_pem: &std::path::Path) -> (Child, u16) {
    // Port 0 is not available to socat's listener: take a free port from the kernel.
    let port = std::net::TcpListener::bind(loopback())
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("socat")
        .arg(format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={}",
            server_pem.display()
        ))
        .arg(format!("TCP:{}", standin.addr()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("socat runs");
    let child = Child(child);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "socat did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (child, port)
}

#[tokio::test]
async fn https_with_the_pinned_ca_and_nothing_sent_to_an_impostor() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "service-ca");
    let other_ca = make_ca(dir.path(), "other-ca");
    let server_pem = make_server_cert(dir.path(), "service-ca");
    let (_, standin) = standin::spawn(loopback()).await.unwrap();
    let (_socat, port) = tls_front(&standin, &server_pem).await;
    let endpoint = kiosk_config::VerifierEndpoint {
        url: Some(format!("https://127.0.0.1:{port}/verify/carrier_3factor")),
        ca_cert: None,
        timeout_ms: 5_000,
        retries: 0,
    };
    let catalog = Arc::new(Catalog::embedded());

    let mut pinned = HttpVerifier::new(catalog.clone());
    let service_ca = std::fs::read(dir.path().join("service-ca.pem")).unwrap();
    pinned
        .add_endpoint("carrier_3factor", &endpoint, Some(&service_ca))
        .unwrap();
    let outcome = pinned
        .verify(everything("carrier_3factor", ID_EVEN))
        .await
        .unwrap();
    assert_eq!(outcome.verdict, Verdict::Match);
    assert_eq!(
        standin.received()[0].items,
        declared_sorted("carrier_3factor")
    );

    // Pinned to another CA: the handshake fails and no data leaves.
    let mut wrong = HttpVerifier::new(catalog);
    wrong
        .add_endpoint(
            "carrier_3factor",
            &endpoint,
            Some(&std::fs::read(other_ca).unwrap()),
        )
        .unwrap();
    let err = wrong
        .verify(everything("carrier_3factor", ID_EVEN))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::Failed {
                failure: Failure::Unreachable(_),
                handover: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(standin.requests(), 1);
}
