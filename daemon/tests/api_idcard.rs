//! The ID-card step over the real binary and the real serial driver on a pty
//! to the simulated SAM module: consent first (the ID number separately),
//! the minors rule on the birthday boundary, masked answers, nothing personal
//! in clear in the store file or in any log line.

mod common;

use common::{Kioskd, assert_logs_clean, consent, open_session};
use firmware_interfaces::sim::fixtures;
use serde_json::json;

fn cancel(k: &Kioskd, id: &str, token: &str) {
    assert_eq!(
        k.call("DELETE", &format!("/v1/sessions/{id}"), Some(token), None)
            .0,
        204
    );
}

#[test]
fn reads_a_card_masks_everything_and_keeps_consent_rules() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kioskd::start(&dir.path().join("data"), "");
    let text = fixtures::resident_text(7);
    let name = text.name().expose().to_string();
    let id_number = text.identity_number().expose().to_string();
    let address = text.address().unwrap().expose().to_string();

    // No card on the reader.
    let (id, token) = open_session(&k, "cert_application");
    consent(&k, &id, &token, json!(["id_number"]));
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/idcard"),
        Some(&token),
        None,
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "no_card");
    cancel(&k, &id, &token);

    // Without the separate consent for the ID number, nothing is read into the store.
    assert_eq!(
        k.call("POST", "/v1/sim/idcard", None, Some(json!({"seed": 7})))
            .0,
        204
    );
    let (id, token) = open_session(&k, "cert_application");
    consent(&k, &id, &token, json!([]));
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/idcard"),
        Some(&token),
        None,
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "separate_consent_required");
    cancel(&k, &id, &token);

    // With it: masked values, a purpose per item, the optional sensitive `nation` withheld.
    assert_eq!(
        k.call("POST", "/v1/sim/idcard", None, Some(json!({"seed": 7})))
            .0,
        204
    );
    let (id, token) = open_session(&k, "cert_application");
    consent(&k, &id, &token, json!(["id_number"]));
    let (status, card) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/idcard"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{card}");
    assert_eq!(card["card_type"], "resident");
    let f = &card["fields"];
    let masked_id = f["id_number"]["value"].as_str().unwrap();
    assert_eq!(masked_id.chars().count(), 18);
    assert!(masked_id.starts_with(&id_number[..1]) && masked_id.ends_with(&id_number[17..]));
    assert!(masked_id.contains("****************"));
    assert_eq!(f["name"]["value"], "测**");
    assert!(
        f["id_number"]["purpose"]
            .as_str()
            .unwrap()
            .contains("certificate application")
    );
    assert!(
        card["withheld"]
            .as_array()
            .unwrap()
            .contains(&json!("nation"))
    );
    let shown = card.to_string();
    for secret in [&name, &id_number, &address] {
        assert!(!shown.contains(secret.as_str()), "{secret} shown unmasked");
    }
    cancel(&k, &id, &token);

    let logs = k.stop();
    assert!(!logs.is_empty());
    assert_logs_clean(&logs, &[&name, &id_number, &address]);
    let raw = std::fs::read(dir.path().join("data/kiosk.sqlite")).unwrap();
    for secret in [&name, &id_number, &address] {
        let b = secret.as_bytes();
        assert!(
            !raw.windows(b.len()).any(|w| w == b),
            "{secret} in clear in the store"
        );
    }
}

#[test]
fn under_fourteen_is_refused_without_a_guardian_and_fourteen_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kioskd::start(&dir.path().join("data"), "");
    let today = time::OffsetDateTime::now_utc().date();
    let fourteenth_birthday_today = today.replace_year(today.year() - 14).unwrap_or(today);
    let turns_fourteen_tomorrow = fourteenth_birthday_today.next_day().unwrap();
    for (birth, expected) in [
        (turns_fourteen_tomorrow, 403),
        (fourteenth_birthday_today, 200),
    ] {
        let (id, token) = open_session(&k, "cert_application");
        consent(&k, &id, &token, json!(["id_number"]));
        let b = format!(
            "{:04}-{:02}-{:02}",
            birth.year(),
            birth.month() as u8,
            birth.day()
        );
        assert_eq!(
            k.call(
                "POST",
                "/v1/sim/idcard",
                None,
                Some(json!({"seed": 3, "birth_date": b}))
            )
            .0,
            204
        );
        let (status, body) = k.call(
            "POST",
            &format!("/v1/sessions/{id}/idcard"),
            Some(&token),
            None,
        );
        assert_eq!(status, expected, "born {b}: {body}");
        if expected == 403 {
            assert_eq!(body["error"]["code"], "guardian_required");
        }
        cancel(&k, &id, &token);
    }
    k.stop();
}

#[test]
fn face_capture_needs_its_own_consent_and_returns_no_image() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kioskd::start(&dir.path().join("data"), "");
    let (id, token) = open_session(&k, "cert_application");
    consent(&k, &id, &token, json!(["id_number"]));
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/face"),
        Some(&token),
        None,
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "separate_consent_required");
    consent(&k, &id, &token, json!(["face_image"]));
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/face"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], true);
    assert!(body["quality"]["sharpness"].as_f64().unwrap() > 0.0);
    assert!(
        body.to_string().len() < 400,
        "no image in the answer: {body}"
    );
    cancel(&k, &id, &token);
    k.stop();
    // Nothing of the face reached the disk: no table holds it.
    let conn = rusqlite::Connection::open(dir.path().join("data/kiosk.sqlite")).unwrap();
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM personal_fields WHERE item = 'face_image'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn a_minor_is_served_after_an_adult_guardian_verifies_and_consents() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kioskd::start(&dir.path().join("data"), "");
    let today = time::OffsetDateTime::now_utc().date();
    let ymd = |d: time::Date| format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day());
    let minor = ymd(today.replace_year(today.year() - 10).unwrap_or(today));
    let teen = ymd(today.replace_year(today.year() - 16).unwrap_or(today));
    let (id, token) = open_session(&k, "cert_application");
    consent(&k, &id, &token, json!(["id_number", "guardian_id_number"]));
    let present = |seed: u32, birth: &str| {
        assert_eq!(
            k.call(
                "POST",
                "/v1/sim/idcard",
                None,
                Some(json!({"seed": seed, "birth_date": birth}))
            )
            .0,
            204
        );
    };
    present(21, &minor);
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/idcard"),
        Some(&token),
        None,
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "guardian_required");

    // A 16-year-old cannot be the guardian.
    present(22, &teen);
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/guardian"),
        Some(&token),
        None,
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "guardian_not_adult");

    // An adult guardian (the fixture's 1990 birth date) verifies and consents.
    assert_eq!(
        k.call("POST", "/v1/sim/idcard", None, Some(json!({"seed": 23})))
            .0,
        204
    );
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/guardian"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["guardian"]["name"], "测**");

    present(21, &minor);
    let (status, card) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/idcard"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{card}");
    assert!(
        card["fields"]["guardian_id_number"]["value"]
            .as_str()
            .unwrap()
            .contains("****")
    );
    cancel(&k, &id, &token);
    k.stop();
}
