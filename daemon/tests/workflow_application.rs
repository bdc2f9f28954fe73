//! The main job end to end over the real binary: an applicant applies for a certificate at a
//! kiosk with simulated devices on ptys, SoftHSM2 as their UKEY, the stand-in verification
//! services and the real local HQ (hq-ingest + PostgreSQL + its CA). Afterwards the
//! certificate is on the token and chains to the CA, the signed form verifies, HQ holds the
//! minimized record and the certificate event exactly once, and the kiosk holds no personal
//! data. Failure paths: wrong PINs to the lockout, the UKEY absent, a cancel in the middle —
//! each ends clean.

mod common;
mod sync_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Kioskd, assert_logs_clean, consent, open_session};
use firmware_interfaces::sim::fixtures;
use serde_json::json;
use sync_support::*;

const USER_PIN: &str = "583926";
const SO_PIN: &str = "87654321";
const UKEY_LABEL: &str = "UKEY-E2E";

fn softhsm_module() -> PathBuf {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("libsofthsm2.so (install softhsm2)")
}

/// A SoftHSM2 configuration with one UKEY as staff hand it out (label, user PIN).
fn softhsm_with_ukey(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            UKEY_LABEL,
            "--so-pin",
            SO_PIN,
            "--pin",
            USER_PIN,
        ])
        .output()
        .expect("softhsm2-util runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    conf
}

/// A resident card seed whose ID number ends in an even digit: the stand-in carrier answers
/// `match` for it.
fn matching_seed() -> u32 {
    (0..200)
        .find(|s| {
            let id = fixtures::resident_text(*s)
                .identity_number()
                .expose()
                .to_string();
            id.chars()
                .last()
                .and_then(|c| c.to_digit(10))
                .is_some_and(|d| d % 2 == 0)
        })
        .unwrap()
}

fn config(module: &Path) -> String {
    format!(
        r#"
[kiosk]
id = "kiosk-e2e"

[hq]
mode = "local"
batch_records = 50
retry_min_ms = 100
retry_max_ms = 1000

[ukey]
provider = "pkcs11"
module = "{}"
"#,
        module.display()
    )
}

fn post(k: &Kioskd, path: &str, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    k.call("POST", path, Some(token), Some(body))
}

/// Consent, card, fingerprint and carrier verification: the applicant is ready for the UKEY.
fn verified_applicant(k: &Kioskd, seed: u32) -> (String, String) {
    let (id, token) = open_session(k, "cert_application");
    consent(k, &id, &token, json!(["id_number", "fingerprint"]));
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
    let (status, body) = post(k, &format!("/v1/sessions/{id}/idcard"), &token, json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        k.call("POST", "/v1/sim/fingerprint", None, Some(json!({})))
            .0,
        204
    );
    let (status, body) = post(
        k,
        &format!("/v1/sessions/{id}/fingerprint"),
        &token,
        json!({}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        k,
        &format!("/v1/sessions/{id}/verification"),
        &token,
        json!({ "method": "carrier_3factor", "mobile": "13900139000" }),
    );
    assert_eq!(status, 200, "{body}");
    (id, token)
}

#[test]
fn an_applicant_gets_a_certificate_on_their_ukey_and_hq_gets_only_the_minimized_record() {
    let hq_bin = hq_ingest();
    assert!(hq_bin.is_file());
    let dir = data_dir();
    let hsm_dir = tempfile::tempdir().unwrap();
    let conf = softhsm_with_ukey(hsm_dir.path());
    let module = softhsm_module();
    let k = Kioskd::start_with_env(dir.path(), &config(&module), &[("SOFTHSM2_CONF", &conf)]);
    wait_for("the local HQ and its CA", Duration::from_secs(120), || {
        k.logs().iter().any(|l| l.contains("CA link ready"))
    });
    let seed = matching_seed();
    let text = fixtures::resident_text(seed);
    let (id, token) = verified_applicant(&k, seed);

    let (status, ukey) = k.call(
        "GET",
        &format!("/v1/sessions/{id}/ukey"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{ukey}");
    assert_eq!(ukey["present"], true);

    // A wrong PIN first: refused, with the retries left for the screen.
    let path = format!("/v1/sessions/{id}/ukey");
    let (status, body) = post(&k, &path, &token, json!({ "pin": "000000" }));
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "pin_incorrect");
    assert!(body["error"]["details"]["retries_left"].as_u64().unwrap() >= 1);

    let (status, issued) = post(&k, &path, &token, json!({ "pin": USER_PIN }));
    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["record_queued"], true);
    assert_eq!(issued["form_signature"]["verified"], true);
    let serial = issued["certificate"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = issued["certificate"]["subject"].as_str().unwrap();
    assert!(
        !shown.contains(text.name().expose()),
        "the name is masked on screen: {shown}"
    );
    let (_, view) = k.call("GET", &format!("/v1/sessions/{id}"), Some(&token), None);
    assert_eq!(view["workflow"]["next"]["step"], "done", "{view}");
    assert_eq!(
        k.call("DELETE", &format!("/v1/sessions/{id}"), Some(&token), None)
            .0,
        204
    );

    // HQ holds the applicant record and the certificate event exactly once, minimized.
    wait_for("the outbox to drain", Duration::from_secs(120), || {
        backlog(&k) == 0
    });
    let rows = hq_records(&local_hq_db(dir.path()), "kiosk-e2e");
    let applicants = assert_exactly_once(&rows, 1);
    assert_eq!(applicants.len(), 1);
    assert_eq!(applicants[0].service, "cert_application");
    let items = items_of(&applicants[0]);
    for needed in [
        "certificate",
        "signature_value",
        "document_digest",
        "mobile",
        "name",
    ] {
        assert!(
            items.iter().any(|i| i == needed),
            "{needed} missing from {items:?}"
        );
    }
    for never in ["fingerprint", "face_image", "nation", "id_photo", "pin"] {
        assert!(!items.iter().any(|i| i == never), "{never} reached HQ");
    }
    assert_only_allowed(
        &applicants,
        &dir.path().join("hq-local/pki/hq-record-key.hex"),
    );
    let kinds: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
    assert!(kinds.iter().any(|k| k.contains("certificate")), "{kinds:?}");
    wait_for("the purge after the ack", Duration::from_secs(30), || {
        kiosk_personal_fields(dir.path()) == 0
    });
    let logs = k.stop();
    assert_logs_clean(
        &logs,
        &[
            text.name().expose(),
            text.identity_number().expose(),
            "13900139000",
            USER_PIN,
        ],
    );

    // The certificate is on the UKEY next to the key, and chains to the issuing CA.
    let cert_der = read_certificate_from_ukey(&conf, &module);
    let cert = hsm::csr::parse_certificate(&cert_der).unwrap();
    assert_eq!(cert.serial_hex.replace(':', "").to_lowercase(), serial);
    assert!(!cert.subject.contains(text.identity_number().expose()));
    let pem_path = hsm_dir.path().join("holder.pem");
    std::fs::write(
        &pem_path,
        pem::encode(&pem::Pem::new("CERTIFICATE", cert_der.clone())),
    )
    .unwrap();
    let verify = Command::new("openssl")
        .args(["verify", "-partial_chain", "-CAfile"])
        .arg(dir.path().join("hq-local/pki/hq-issuing-ca.pem"))
        .arg(&pem_path)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// Read the holder's certificate with `pkcs11-tool` (OpenSC), a client independent of kioskd.
fn read_certificate_from_ukey(conf: &Path, module: &Path) -> Vec<u8> {
    let out = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", conf)
        .arg("--module")
        .arg(module)
        .args([
            "--token-label",
            UKEY_LABEL,
            "--read-object",
            "--type",
            "cert",
            "--label",
            "holder-sign",
        ])
        .output()
        .expect("pkcs11-tool runs (install opensc)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn wrong_pins_lock_out_an_absent_ukey_is_named_and_a_cancel_leaves_nothing() {
    let dir = data_dir();
    let hsm_dir = tempfile::tempdir().unwrap();
    let conf = softhsm_with_ukey(hsm_dir.path());
    let module = softhsm_module();
    let k = Kioskd::start_with_env(dir.path(), &config(&module), &[("SOFTHSM2_CONF", &conf)]);
    wait_for("the local HQ and its CA", Duration::from_secs(120), || {
        k.logs().iter().any(|l| l.contains("CA link ready"))
    });
    let seed = matching_seed();
    let (id, token) = verified_applicant(&k, seed);
    let path = format!("/v1/sessions/{id}/ukey");
    let mut last_left = u64::MAX;
    for _ in 0..kioskd::api::ukey::MAX_PIN_FAILURES_PER_SESSION {
        let (status, body) = post(&k, &path, &token, json!({ "pin": "000000" }));
        assert_eq!(status, 403, "{body}");
        let left = body["error"]["details"]["retries_left"].as_u64().unwrap();
        assert!(
            left < last_left,
            "retries left count down: {left} after {last_left}"
        );
        last_left = left;
    }
    assert_eq!(last_left, 0);
    // Locked for this session: even the right PIN is not tried on the token any more.
    let (status, body) = post(&k, &path, &token, json!({ "pin": USER_PIN }));
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "pin_attempts_exceeded");
    assert_eq!(
        k.call("DELETE", &path.replace("/ukey", ""), Some(&token), None)
            .0,
        204
    );

    // Cancelled after verification: the subject is purged, nothing entered the outbox.
    let (id, token) = verified_applicant(&k, seed);
    assert_eq!(
        k.call("DELETE", &format!("/v1/sessions/{id}"), Some(&token), None)
            .0,
        204
    );
    assert_eq!(kiosk_personal_fields(dir.path()), 0);
    assert_eq!(backlog(&k), 0);

    // Steps out of order: no UKEY work before verification.
    let (id, token) = open_session(&k, "cert_application");
    consent(&k, &id, &token, json!(["id_number"]));
    let (status, body) = post(
        &k,
        &format!("/v1/sessions/{id}/ukey"),
        &token,
        json!({ "pin": USER_PIN }),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "step_out_of_order");
    let logs = k.stop();
    assert_logs_clean(&logs, &[USER_PIN]);
}
