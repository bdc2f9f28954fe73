//! Staff over the real binary: login with the staff UKEY and its PIN (the
//! embedded demo staff token), rate-limited failures, the masked view of held
//! personal data, and a reveal that needs the staff role and is audited.

mod common;

use common::{Kioskd, consent, open_session, session_with_card, staff_login};
use firmware_interfaces::sim::fixtures;
use serde_json::json;

fn staff_call(
    k: &Kioskd,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    k.call(method, path, Some(token), body)
}

#[test]
fn staff_login_reveal_is_audited_and_needs_the_role() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let k = Kioskd::start(&data, "");

    let (status, body) = k.call(
        "POST",
        "/v1/staff/login",
        None,
        Some(json!({"token": "staff-demo", "pin": "000000"})),
    );
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "wrong_pin");
    let (status, body) = k.call(
        "POST",
        "/v1/staff/login",
        None,
        Some(json!({"token": "no-such-ukey", "pin": "x"})),
    );
    assert_eq!(status, 404, "{body}");
    let (status, login) = k.call(
        "POST",
        "/v1/staff/login",
        None,
        Some(json!({"token": "staff-demo", "pin": "staff-demo-pin"})),
    );
    assert_eq!(status, 200, "{login}");
    let staff = login["staff_token"].as_str().unwrap().to_string();
    assert!(
        login["staff_id"]
            .as_str()
            .unwrap()
            .contains("Demo Staff 001")
    );

    // An applicant leaves their card data.
    let (_sid, token) = session_with_card(&k, "cert_application", 11);
    let token = token.as_str();
    let clear_id = fixtures::resident_text(11)
        .identity_number()
        .expose()
        .to_string();

    // The applicant's token is not a staff token.
    assert_eq!(
        k.call("GET", "/v1/staff/subjects", Some(token), None).0,
        401
    );
    let (status, list) = staff_call(&k, "GET", "/v1/staff/subjects", &staff, None);
    assert_eq!(status, 200, "{list}");
    let subject = &list["subjects"][0];
    assert!(
        !list.to_string().contains(&clear_id),
        "staff list shows masked values only"
    );
    let subject_id = subject["subject_id"].as_str().unwrap();

    let reveal = json!({"subject_id": subject_id, "item": "id_number", "reason": "applicant asked to check the number"});
    assert_eq!(
        k.call(
            "POST",
            "/v1/staff/reveal",
            Some(token),
            Some(reveal.clone())
        )
        .0,
        401
    );
    assert_eq!(
        k.call("POST", "/v1/staff/reveal", None, Some(reveal.clone()))
            .0,
        401
    );
    let (status, shown) = staff_call(&k, "POST", "/v1/staff/reveal", &staff, Some(reveal));
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["value"], clear_id.as_str());

    let (status, st) = staff_call(&k, "GET", "/v1/staff/status", &staff, None);
    assert_eq!(status, 200, "{st}");
    assert_eq!(st["audit"]["intact"], true, "{st}");
    assert_eq!(
        staff_call(&k, "POST", "/v1/staff/logout", &staff, None).0,
        204
    );
    assert_eq!(
        staff_call(&k, "GET", "/v1/staff/status", &staff, None).0,
        401
    );
    k.stop();

    let conn = rusqlite::Connection::open(data.join("kiosk.sqlite")).unwrap();
    let actions: Vec<(String, String)> = conn
        .prepare("SELECT actor, action FROM audit_log WHERE action LIKE 'staff.%' ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let names: Vec<&str> = actions.iter().map(|(_, a)| a.as_str()).collect();
    for a in [
        "staff.login_failed",
        "staff.login",
        "staff.reveal",
        "staff.status",
        "staff.logout",
    ] {
        assert!(names.contains(&a), "{a} not audited: {names:?}");
    }
    let reveal_actor = &actions.iter().find(|(_, a)| a == "staff.reveal").unwrap().0;
    assert!(reveal_actor.starts_with("staff:") && reveal_actor.contains("Demo Staff 001"));
    let detail: String = conn
        .query_row(
            "SELECT detail FROM audit_log WHERE action = 'staff.reveal'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        !detail.contains(&clear_id),
        "the audit entry names the item, never the value"
    );
}

#[test]
fn failed_staff_logins_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kioskd::start(&dir.path().join("data"), "[staff]\nmax_failures = 3\n");
    // Failures count per staff UKEY (issue 13: a label that names no token touches none and
    // locks no one out), so the three failures are wrong PINs on the staff UKEY itself.
    for _ in 0..3 {
        assert_eq!(
            k.call(
                "POST",
                "/v1/staff/login",
                None,
                Some(json!({"token": "staff-demo", "pin": "1"}))
            )
            .0,
            401
        );
    }
    let (status, body) = k.call(
        "POST",
        "/v1/staff/login",
        None,
        Some(json!({"token": "staff-demo", "pin": "staff-demo-pin"})),
    );
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    k.stop();
}

#[test]
fn a_deletion_request_is_filed_by_the_verified_person_and_completed_by_staff() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let k = Kioskd::start(&data, "");
    // Without an ID card read in the session, nothing can be filed.
    let (sid, token) = open_session(&k, "rights_request");
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{sid}/rights-requests"),
        Some(&token),
        Some(json!({"kind": "deletion"})),
    );
    assert_eq!(status, 409, "identity first: {body}");
    assert_eq!(body["error"]["code"], "identity_not_verified");
    assert_eq!(
        k.call("DELETE", &format!("/v1/sessions/{sid}"), Some(&token), None)
            .0,
        204
    );

    // The requester's identity is verified before the request (issue 13): the carrier check,
    // which the stand-in answers `match` for an ID number ending in an even digit (seed 10).
    let (sid, token) = session_with_card(&k, "rights_request", 10);
    consent(&k, &sid, &token, json!(["mobile"]));
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{sid}/verification"),
        Some(&token),
        Some(json!({ "method": "carrier_3factor", "mobile": "13900139000" })),
    );
    assert_eq!(status, 200, "{body}");
    let token = token.as_str();
    let path = format!("/v1/sessions/{sid}/rights-requests");
    let (status, filed) = k.call(
        "POST",
        &path,
        Some(token),
        Some(json!({"kind": "deletion"})),
    );
    assert_eq!(status, 201, "{filed}");
    assert_eq!(filed["state"], "verified");
    assert_eq!(filed["due"].as_str().unwrap().len(), 10);
    let request = filed["request_id"].as_str().unwrap();

    let staff = staff_login(&k);
    let staff = staff.as_str();
    let (_, st) = k.call("GET", "/v1/staff/status", Some(staff), None);
    assert_eq!(st["rights_requests"][0]["id"], request);
    let (status, body) = k.call(
        "POST",
        &format!("/v1/staff/rights-requests/{request}/refuse"),
        Some(staff),
        Some(json!({"ground": "because"})),
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = k.call(
        "POST",
        &format!("/v1/staff/rights-requests/{request}/complete"),
        Some(staff),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let (_, list) = k.call("GET", "/v1/staff/subjects", Some(staff), None);
    assert_eq!(
        list["subjects"].as_array().unwrap().len(),
        0,
        "the person's data is purged: {list}"
    );
    k.stop();
    let conn = rusqlite::Connection::open(data.join("kiosk.sqlite")).unwrap();
    let kinds: Vec<String> = conn
        .prepare("SELECT kind FROM outbox ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        kinds.contains(&"rights_request".to_string())
            && kinds.contains(&"deletion_notice".to_string()),
        "{kinds:?}"
    );
}
