//! The process's metrics: the `kioskd_*` families (`prometheus-client`) and their text
//! exposition, served by the API as `GET /metrics` (the API's `metrics` module is the HTTP side).
//!
//! Request-level figures are labelled by the route *template* (`/v1/sessions/{id}/ukey`),
//! the method, the status class and the API error code: never a path with an id in it, never
//! a body value. The only body value taken is the `service` of `POST /v1/sessions`, a name
//! from the privacy catalog, kept only if the catalog declares it ([`service_of`]).
//! Store-backed figures (outbox backlog and age, time since HQ's last ack, intake state) are
//! read when scraped.

use std::sync::OnceLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::workflow::Kiosk;

type Labels = Vec<(&'static str, String)>;

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    sessions: Family<Labels, Counter>,
    steps: Family<Labels, Histogram>,
    issuance: Histogram,
    issuances: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    pin_lockouts: Counter,
    backlog: Gauge,
    oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    last_ack_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    in_flight_attempts: Gauge,
    witness_alert: Gauge,
    intake_open: Gauge,
    session_active: Gauge,
    uptime: Gauge<f64, std::sync::atomic::AtomicU64>,
}

fn step_histogram() -> Histogram {
    // 5 ms .. ~80 s
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::with_prefix("kioskd");
        let requests = Family::<Labels, Counter>::default();
        r.register(
            "api_requests",
            "API requests by route template, method and status class",
            requests.clone(),
        );
        let sessions = Family::<Labels, Counter>::default();
        r.register(
            "sessions",
            "Applicant sessions asked for, by service and outcome (opened, refused)",
            sessions.clone(),
        );
        let steps = Family::<Labels, Histogram>::new_with_constructor(step_histogram);
        r.register(
            "step_duration_seconds",
            "Duration of each step of an applicant's way (card_read, fingerprint, verification, face, issuance, ...)",
            steps.clone(),
        );
        let issuance = step_histogram();
        r.register(
            "issuance_duration_seconds",
            "Whole issuance (key pair on the UKEY, CSR, CA round trip, certificate stored) of issuances that succeeded",
            issuance.clone(),
        );
        let issuances = Family::<Labels, Counter>::default();
        r.register(
            "issuances",
            "Issuances by outcome (issued, failed)",
            issuances.clone(),
        );
        let errors = Family::<Labels, Counter>::default();
        r.register(
            "errors",
            "API errors by kind (device, token, verification, store, ca, request) and code",
            errors.clone(),
        );
        let pin_lockouts = Counter::default();
        r.register(
            "pin_lockouts",
            "UKEY PINs found or left locked",
            pin_lockouts.clone(),
        );
        let backlog = Gauge::default();
        r.register(
            "outbox_backlog_records",
            "Records in the outbox not yet acknowledged by HQ",
            backlog.clone(),
        );
        let oldest_age = Gauge::default();
        r.register(
            "outbox_oldest_record_age_seconds",
            "Age of the oldest record not yet acknowledged by HQ (0 when none)",
            oldest_age.clone(),
        );
        let last_ack_age = Gauge::default();
        r.register(
            "hq_last_ack_age_seconds",
            "Time since HQ last acknowledged a batch (-1: never)",
            last_ack_age.clone(),
        );
        let in_flight_attempts = Gauge::default();
        r.register(
            "sync_in_flight_attempts",
            "Send attempts of the batch in flight (0 when none)",
            in_flight_attempts.clone(),
        );
        let witness_alert = Gauge::default();
        r.register(
            "witness_alert",
            "1 while HQ's last cosignature of the audit log was refused (bad or foreign), else 0",
            witness_alert.clone(),
        );
        let intake_open = Gauge::default();
        r.register(
            "intake_open",
            "1 while new applicants are taken in, 0 while intake is paused (disk space)",
            intake_open.clone(),
        );
        let session_active = Gauge::default();
        r.register(
            "applicant_session_active",
            "1 while an applicant session is open",
            session_active.clone(),
        );
        let uptime = Gauge::default();
        r.register(
            "uptime_seconds",
            "Time since kioskd started",
            uptime.clone(),
        );
        // Every known series from the start, so a scraper sees zeros, not gaps.
        for outcome in ["issued", "failed"] {
            let _ = issuances.get_or_create(&vec![("outcome", outcome.into())]);
        }
        for step in STEPS {
            let _ = steps.get_or_create(&vec![("step", (*step).into())]);
        }
        for service in catalog().services.keys() {
            for outcome in ["opened", "refused"] {
                let _ = sessions.get_or_create(&vec![
                    ("service", service.clone()),
                    ("outcome", outcome.into()),
                ]);
            }
        }
        Self {
            registry: r,
            requests,
            sessions,
            steps,
            issuance,
            issuances,
            errors,
            pin_lockouts,
            backlog,
            oldest_age,
            last_ack_age,
            in_flight_attempts,
            witness_alert,
            intake_open,
            session_active,
            uptime,
        }
    }
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The steps [`step_of`] names.
const STEPS: &[&str] = &[
    "session_open",
    "consent",
    "card_read",
    "fingerprint",
    "verification",
    "face",
    "issuance",
    "signature",
    "certificate_lifecycle",
];

/// The step a route template is part of, if it is one.
fn step_of(method: &str, route: &str) -> Option<&'static str> {
    if method != "POST" {
        return None;
    }
    Some(match route {
        "/v1/sessions" => "session_open",
        "/v1/sessions/{id}/consents" => "consent",
        "/v1/sessions/{id}/idcard" => "card_read",
        "/v1/sessions/{id}/fingerprint" => "fingerprint",
        "/v1/sessions/{id}/verification" => "verification",
        "/v1/sessions/{id}/face" => "face",
        "/v1/sessions/{id}/ukey" => "issuance",
        "/v1/sessions/{id}/sign" => "signature",
        "/v1/sessions/{id}/certificate/{action}" => "certificate_lifecycle",
        _ => return None,
    })
}

/// Kind of an API error code (a fixed vocabulary; codes are `&'static str` constants).
fn kind_of(code: &str) -> &'static str {
    let has = |w: &str| code.contains(w);
    if has("pin") || has("token") || has("ukey") || has("key") {
        "token"
    } else if has("card") || has("fingerprint") || has("camera") || has("face") || has("device") {
        "device"
    } else if has("verif") || has("carrier") {
        "verification"
    } else if has("store") || has("disk") || has("intake") {
        "store"
    } else if has("ca_") || has("certificate") || has("hq") {
        "ca"
    } else {
        "request"
    }
}

fn catalog() -> &'static kiosk_config::Catalog {
    static CATALOG: OnceLock<kiosk_config::Catalog> = OnceLock::new();
    CATALOG.get_or_init(kiosk_config::Catalog::embedded)
}

/// The service named in a `POST /v1/sessions` body, if the catalog declares it.
pub fn service_of(body: &[u8]) -> String {
    let named = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("service")?.as_str().map(str::to_owned));
    match named {
        Some(s) if catalog().service(&s).is_ok() => s,
        Some(_) => "unknown".into(),
        None => "none".into(),
    }
}

/// One routed request that ended: its route template, method, status, how long it took,
/// the service a `POST /v1/sessions` named (see [`service_of`]) and its API error code.
pub struct Observed<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub elapsed: f64,
    pub service: Option<String>,
    pub error_code: Option<&'static str>,
}

/// Count and time one routed request.
pub fn observe(o: Observed<'_>) {
    let (route, method, elapsed) = (o.route, o.method, o.elapsed);
    let success = (200..300).contains(&o.status);
    let m = global();
    m.requests
        .get_or_create(&vec![
            ("route", route.to_owned()),
            ("method", method.to_owned()),
            ("status", format!("{}xx", o.status / 100)),
        ])
        .inc();
    if let Some(service) = o.service {
        let outcome = if success { "opened" } else { "refused" };
        m.sessions
            .get_or_create(&vec![("service", service), ("outcome", outcome.into())])
            .inc();
    }
    if let Some(step) = step_of(method, route) {
        m.steps
            .get_or_create(&vec![("step", step.to_owned())])
            .observe(elapsed);
        if step == "issuance" {
            let outcome = if success {
                m.issuance.observe(elapsed);
                "issued"
            } else {
                "failed"
            };
            m.issuances
                .get_or_create(&vec![("outcome", outcome.into())])
                .inc();
        }
    }
    if let Some(code) = o.error_code {
        m.errors
            .get_or_create(&vec![("kind", kind_of(code).into()), ("code", code.into())])
            .inc();
        if code.contains("pin") && (code.contains("lock") || code.contains("blocked")) {
            m.pin_lockouts.inc();
        }
    }
}

/// Outbox figures read from the store when scraped.
fn refresh_store(state: &Kiosk) {
    let m = global();
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    if let Ok(status) = crate::sync::status(&state.store) {
        m.backlog
            .set(i64::try_from(status.backlog).unwrap_or(i64::MAX));
        m.in_flight_attempts
            .set(if status.in_flight_batch.is_some() {
                i64::try_from(status.attempts).unwrap_or(i64::MAX)
            } else {
                0
            });
        m.last_ack_age.set(match status.last_contact_ms {
            Some(t) => ((now_ms as f64) - t as f64).max(0.0) / 1000.0,
            None => -1.0,
        });
    }
    if let Ok(w) = crate::sync::witness_status(&state.store) {
        m.witness_alert.set(i64::from(w.state == "invalid"));
    }
    if let Ok(conn) = state.store.conn() {
        let oldest: Option<i64> = conn
            .query_row(
                "SELECT min(created_at) FROM outbox WHERE acked_at IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap_or(None);
        m.oldest_age.set(match oldest {
            Some(t) => ((now_ms as f64) - t as f64).max(0.0) / 1000.0,
            None => 0.0,
        });
    }
}

/// The text exposition of every family, with the scraped figures read now (blocking: call
/// it off the async runtime).
pub fn render(state: &Kiosk) -> Result<String, std::fmt::Error> {
    let m = global();
    let open = crate::intake::check(&state.store_dir(), state.config.store.min_free_bytes).is_ok();
    m.intake_open.set(i64::from(open));
    m.session_active.set(i64::from(state.sessions.active()));
    m.uptime.set(state.started.elapsed().as_secs_f64());
    refresh_store(state);
    let mut out = String::new();
    encode(&mut out, &m.registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_steps_and_codes_to_kinds() {
        for route in [
            "/v1/sessions",
            "/v1/sessions/{id}/consents",
            "/v1/sessions/{id}/idcard",
            "/v1/sessions/{id}/fingerprint",
            "/v1/sessions/{id}/verification",
            "/v1/sessions/{id}/face",
            "/v1/sessions/{id}/ukey",
            "/v1/sessions/{id}/sign",
            "/v1/sessions/{id}/certificate/{action}",
        ] {
            let step = step_of("POST", route).unwrap();
            assert!(STEPS.contains(&step), "{step}");
        }
        assert_eq!(step_of("POST", "/v1/sessions/{id}/ukey"), Some("issuance"));
        assert_eq!(step_of("GET", "/v1/sessions/{id}/ukey"), None);
        assert_eq!(kind_of("pin_locked"), "token");
        assert_eq!(kind_of("card_not_present"), "device");
        assert_eq!(kind_of("store_unavailable"), "store");
    }

    #[test]
    fn only_catalog_services_become_labels() {
        assert_eq!(
            service_of(br#"{"service":"13800138000"}"#),
            "unknown",
            "a personal value typed as a service never becomes a label"
        );
        assert_eq!(service_of(b"not json"), "none");
    }
}
