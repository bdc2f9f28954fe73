//! `GET /metrics` on a demo kioskd: Prometheus text with at least ten `kioskd_` families;
//! after one applicant's issuance the issuance histogram holds a sample; no label holds the
//! applicant's ID number, name or mobile (labels are route templates, codes and catalog names).

mod common;
mod sync_support;

use std::time::Duration;

use common::{Kioskd, consent, open_session};
use firmware_interfaces::sim::fixtures;
use serde_json::json;
use sync_support::*;

const CONFIG: &str = r#"
[kiosk]
id = "kiosk-metrics"

[hq]
mode = "local"
retry_min_ms = 100
retry_max_ms = 1000
"#;

const MOBILE: &str = "13900139000";

fn matching_seed() -> u32 {
    (0..200)
        .find(|s| {
            fixtures::resident_text(*s)
                .identity_number()
                .expose()
                .chars()
                .last()
                .and_then(|c| c.to_digit(10))
                .is_some_and(|d| d % 2 == 0)
        })
        .unwrap()
}

fn metrics(k: &Kioskd) -> String {
    let mut resp = Kioskd::agent()
        .get(format!("{}/metrics", k.base))
        .call()
        .expect("kioskd answers");
    assert_eq!(resp.status().as_u16(), 200);
    resp.body_mut().read_to_string().unwrap()
}

/// `name{labels} value` lines of a family.
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .collect()
}

fn value(line: &str) -> f64 {
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn after_one_issuance_the_issuance_histogram_has_a_sample_and_no_label_is_personal() {
    let _ = hq_ingest();
    let dir = data_dir();
    let k = Kioskd::start(dir.path(), CONFIG);
    wait_for("the CA link", Duration::from_secs(120), || {
        k.logs().iter().any(|l| l.contains("CA link ready"))
    });

    let before = metrics(&k);
    let families: Vec<&str> = before
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter(|l| l.starts_with("kioskd_"))
        .collect();
    assert!(families.len() >= 10, "{families:?}");
    let count = |text: &str| {
        samples(text, "kioskd_issuance_duration_seconds_count")
            .first()
            .map(|l| value(l))
            .unwrap_or(0.0)
    };
    assert_eq!(count(&before), 0.0, "{before}");

    // One applicant: consent, card, fingerprint, carrier check, UKEY, issuance.
    let seed = matching_seed();
    let text = fixtures::resident_text(seed);
    let (status, inserted) = k.call("POST", "/v1/sim/ukey", None, None);
    assert_eq!(status, 201, "{inserted}");
    let pin = inserted["initial_pin"].as_str().unwrap().to_string();
    let (id, token) = open_session(&k, "cert_application");
    consent(&k, &id, &token, json!(["id_number", "fingerprint"]));
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
    let post =
        |path: String, body: serde_json::Value| k.call("POST", &path, Some(&token), Some(body));
    let (status, body) = post(format!("/v1/sessions/{id}/idcard"), json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        k.call("POST", "/v1/sim/fingerprint", None, Some(json!({})))
            .0,
        204
    );
    let (status, body) = post(format!("/v1/sessions/{id}/fingerprint"), json!({}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        format!("/v1/sessions/{id}/verification"),
        json!({ "method": "carrier_3factor", "mobile": MOBILE }),
    );
    assert_eq!(status, 200, "{body}");
    // A wrong PIN first (a token error by kind), then the issuance.
    let (status, _) = post(
        format!("/v1/sessions/{id}/ukey"),
        json!({ "pin": "000000" }),
    );
    assert_eq!(status, 403);
    let (status, issued) = post(format!("/v1/sessions/{id}/ukey"), json!({ "pin": pin }));
    assert_eq!(status, 200, "{issued}");

    let after = metrics(&k);
    assert_eq!(count(&after), 1.0, "{after}");
    let sum = samples(&after, "kioskd_issuance_duration_seconds_sum");
    assert!(value(sum[0]) > 0.0, "{after}");
    let step = |s: &str| {
        samples(&after, "kioskd_step_duration_seconds_count")
            .iter()
            .any(|l| l.contains(&format!("step=\"{s}\"")) && value(l) >= 1.0)
    };
    for s in ["card_read", "fingerprint", "verification", "issuance"] {
        assert!(step(s), "no {s} sample:\n{after}");
    }
    assert!(
        samples(&after, "kioskd_sessions_total")
            .iter()
            .any(|l| l.contains("service=\"cert_application\"") && l.contains("outcome=\"opened\"")),
        "{after}"
    );
    assert!(
        samples(&after, "kioskd_errors_total")
            .iter()
            .any(|l| l.contains("kind=\"token\"") && l.contains("code=\"pin_incorrect\"")),
        "{after}"
    );
    assert_eq!(value(samples(&after, "kioskd_intake_open")[0]), 1.0);
    // Labels never hold a personal value: not the ID number, the name, the mobile or the
    // session id (the route is its template).
    for personal in [
        text.identity_number().expose(),
        text.name().expose(),
        MOBILE,
        id.as_str(),
    ] {
        assert!(
            !after.contains(personal),
            "{personal:?} in /metrics:\n{after}"
        );
    }
    assert!(
        after.contains("route=\"/v1/sessions/{id}/ukey\""),
        "{after}"
    );
    assert_eq!(
        k.call("DELETE", &format!("/v1/sessions/{id}"), Some(&token), None)
            .0,
        204
    );
    k.stop();
}
