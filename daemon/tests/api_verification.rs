//! The binding and verification steps over the real binary: the fingerprint on the simulated
//! sensor compared with the card, identity verification by a method of the service against
//! stand-in services started by the test (which check that exactly the declared fields
//! arrive), the purpose stated with every number asked, every hand-over recorded, retries and
//! failures reported with stable codes, steps refused out of order — and no personal value in
//! any log line.

mod common;

use common::{Kioskd, assert_logs_clean, consent, open_session};
use firmware_interfaces::sim::fixtures;
use serde_json::json;

/// A resident card seed whose ID number ends in an even digit (`true`: the stand-in answers
/// `match`) or an odd one (`false`: `no_match`).
fn seed_with(even: bool) -> u32 {
    (0..200)
        .find(|s| {
            let id = fixtures::resident_text(*s)
                .identity_number()
                .expose()
                .to_string();
            let last = id.chars().last().unwrap();
            last.is_ascii_digit() && ((last as u8 - b'0') % 2 == 0) == even
        })
        .expect("a seed of each parity")
}

struct Setup {
    _rt: tokio::runtime::Runtime,
    standin: kioskd::verify::standin::StandIn,
    k: Kioskd,
    _dir: tempfile::TempDir,
}

fn start() -> Setup {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, standin) = rt
        .block_on(kioskd::verify::standin::spawn(
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::new();
    for m in ["carrier_3factor", "bank_card_4factor", "biometric_compare"] {
        config.push_str(&format!(
            "[verifiers.{m}]\nurl = \"{}\"\ntimeout_ms = 2000\nretries = 1\n",
            standin.url(m)
        ));
    }
    let k = Kioskd::start(&dir.path().join("data"), &config);
    Setup {
        _rt: rt,
        standin,
        k,
        _dir: dir,
    }
}

fn read_card(k: &Kioskd, id: &str, token: &str, seed: u32) {
    assert_eq!(
        k.call(
            "POST",
            "/v1/sim/idcard",
            None,
            Some(json!({ "seed": seed }))
        )
        .0,
        204
    );
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/idcard"),
        Some(token),
        None,
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn fingerprint_then_carrier_verification_with_exactly_the_declared_fields() {
    let s = start();
    let k = &s.k;
    let seed = seed_with(true);
    let text = fixtures::resident_text(seed);
    let (id, token) = open_session(k, "cert_application");
    consent(k, &id, &token, json!(["id_number", "fingerprint"]));

    // Out of order: nothing is compared or sent before the card is read.
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/verification"),
        Some(&token),
        Some(json!({ "method": "carrier_3factor", "mobile": "13800138000" })),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["details"]["missing"], "idcard");

    read_card(k, &id, &token, seed);
    let (_, view) = k.call("GET", &format!("/v1/sessions/{id}"), Some(&token), None);
    assert_eq!(view["workflow"]["next"]["step"], "fingerprint", "{view}");

    // The finger on the sensor is compared with the card's fingerprint blocks.
    assert_eq!(
        k.call(
            "POST",
            "/v1/sim/fingerprint",
            None,
            Some(json!({"seed": 1}))
        )
        .0,
        204
    );
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/fingerprint"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["matched"], true);

    // The next step asks for the mobile number and says why.
    let (_, view) = k.call("GET", &format!("/v1/sessions/{id}"), Some(&token), None);
    assert_eq!(view["workflow"]["next"]["step"], "verification");
    let asks = view["workflow"]["next"]["asks"].as_array().unwrap();
    let mobile = asks
        .iter()
        .find(|a| a["item"] == "mobile")
        .expect("mobile is asked for");
    assert!(
        mobile["purpose"].as_str().unwrap().contains("carrier"),
        "{mobile}"
    );

    // A malformed number is refused before anything is sent.
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/verification"),
        Some(&token),
        Some(json!({ "method": "carrier_3factor", "mobile": "12345" })),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_number");
    assert_eq!(s.standin.requests(), 0);

    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/verification"),
        Some(&token),
        Some(json!({ "method": "carrier_3factor", "mobile": "13800138000" })),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verdict"], "match");
    let received = s.standin.received();
    assert_eq!(received.len(), 1);
    assert!(
        s.standin.violations().is_empty(),
        "the service got undeclared fields"
    );
    let (_, view) = k.call("GET", &format!("/v1/sessions/{id}"), Some(&token), None);
    assert_eq!(view["workflow"]["next"]["step"], "ukey", "{view}");

    // The hand-over is in the audit log (item names only).
    let staff = common::staff_login(k);
    let (status, audit) = k.call("GET", "/v1/staff/status", Some(&staff), None);
    assert_eq!(status, 200, "{audit}");
    let logs = s.k.logs();
    assert!(logs.iter().any(|l| l.contains("identity verified")));
    assert_logs_clean(
        &logs,
        &[
            text.name().expose(),
            text.identity_number().expose(),
            "13800138000",
        ],
    );
}

#[test]
fn a_failed_or_unreachable_verification_is_reported_and_another_method_can_follow() {
    let s = start();
    let k = &s.k;
    let (id, token) = open_session(k, "cert_application");
    consent(k, &id, &token, json!(["id_number"]));
    read_card(k, &id, &token, seed_with(false));

    // No match: a stable code, the step stays open.
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/verification"),
        Some(&token),
        Some(json!({ "method": "carrier_3factor", "mobile": "13800138000" })),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "verification_failed");
    assert_eq!(body["error"]["details"]["verdict"], "no_match");

    // The bank card number is sensitive: it needs its own consent before it is sent.
    let bank = json!({ "method": "bank_card_4factor", "bank_card": "6222020200112233445", "bank_mobile": "13800138000" });
    let path = format!("/v1/sessions/{id}/verification");
    let (status, body) = k.call("POST", &path, Some(&token), Some(bank.clone()));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "separate_consent_required");
    let sent_before = s.standin.requests();
    assert_eq!(sent_before, 1, "only the carrier check went out");
    consent(k, &id, &token, json!(["bank_card", "bank_mobile"]));

    // The service failing on every attempt: retryable, reported as unavailable.
    s.standin.fail_next(10);
    let (status, body) = k.call("POST", &path, Some(&token), Some(bank));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "verifier_unavailable");

    // Fingerprint without its separate consent: refused, nothing captured.
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/fingerprint"),
        Some(&token),
        None,
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "separate_consent_required");

    // A method the service does not offer.
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/verification"),
        Some(&token),
        Some(json!({ "method": "telepathy" })),
    );
    assert_eq!(status, 400, "{body}");
    assert!(s.standin.violations().is_empty());
    assert_logs_clean(&s.k.logs(), &["6222020200112233445", "13800138000"]);
}
