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

/// A SoftHSM2 configuration with one UKEY as staff hand it out (label, user PIN).
fn softhsm_with_ukey(dir: &Path) -> PathBuf {
    let conf = common::softhsm_conf(dir);
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

[store]
checkpoint_secs = 1

[ukey]
provider = "pkcs11"
module = "{}"
"#,
        module.display()
    )
}

/// Waits until kioskd's link to the CA (the local HQ's or a separate one) is up.
fn wait_for_ca_link(k: &Kioskd, within: Duration) {
    wait_for("the link to the CA", within, || {
        k.logs().iter().any(|l| l.contains("CA link ready"))
    });
}

/// Close a session; nothing is left behind (204).
fn end_session(k: &Kioskd, id: &str, token: &str) {
    let (status, body) = k.call("DELETE", &format!("/v1/sessions/{id}"), Some(token), None);
    assert_eq!(status, 204, "{body}");
}

/// A certificate-use session whose holder consented: ready to sign with their PIN.
fn signing_session(k: &Kioskd) -> (String, String) {
    let (id, token) = open_session(k, "certificate_use");
    consent(k, &id, &token, json!(["pin"]));
    (id, token)
}

fn post(k: &Kioskd, path: &str, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    k.call("POST", path, Some(token), Some(body))
}

/// Consent, card, fingerprint and carrier verification: the applicant is ready for the UKEY.
fn verified_applicant(k: &Kioskd, seed: u32) -> (String, String) {
    card_and_carrier(k, "cert_application", seed, true)
}

/// A session for `service` whose applicant read card `seed`, had their finger compared with
/// it if `fingerprint`, and passed the carrier check.
fn card_and_carrier(k: &Kioskd, service: &str, seed: u32, fingerprint: bool) -> (String, String) {
    let (id, token) = open_session(k, service);
    let items = if fingerprint {
        json!(["id_number", "fingerprint"])
    } else {
        json!(["id_number"])
    };
    consent(k, &id, &token, items);
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
    if fingerprint {
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
    }
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
    let module = common::softhsm_module();
    let k = Kioskd::start_with_env(dir.path(), &config(&module), &[("SOFTHSM2_CONF", &conf)]);
    wait_for_ca_link(&k, Duration::from_secs(120));
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
    end_session(&k, &id, &token);

    // HQ holds the applicant record and the certificate event exactly once, minimized.
    wait_for("the outbox to drain", Duration::from_secs(120), || {
        backlog(&k) == 0
    });
    // The kiosk's audit checkpoints went with the records; HQ's witness cosigned them and the
    // kiosk checked each cosignature against the local HQ's witness key.
    let (_, health) = k.call("GET", "/v1/health", None, None);
    assert_eq!(health["witness"]["state"], "verified", "{health}");
    assert!(
        health["witness"]["cosigned_size"].as_u64().unwrap() > 0,
        "{health}"
    );
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
    let module = common::softhsm_module();
    let k = Kioskd::start_with_env(dir.path(), &config(&module), &[("SOFTHSM2_CONF", &conf)]);
    wait_for_ca_link(&k, Duration::from_secs(120));
    let seed = matching_seed();
    let (id, token) = verified_applicant(&k, seed);
    let path = format!("/v1/sessions/{id}/ukey");
    let mut last_left = u64::MAX;
    for _ in 0..kioskd::workflow::ukey::MAX_PIN_FAILURES_PER_SESSION {
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
    end_session(&k, &id, &token);
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

/// The embedded defaults: a simulated soft UKEY inserted through the simulator endpoint.
const SOFT_UKEY_CONFIG: &str = r#"
[kiosk]
id = "kiosk-e2e-soft"

[hq]
mode = "local"
batch_records = 50
retry_min_ms = 100
retry_max_ms = 1000
"#;

#[test]
fn the_holder_signs_with_their_certificate_and_suspends_resumes_renews_and_revokes_it() {
    let dir = data_dir();
    let k = Kioskd::start(dir.path(), SOFT_UKEY_CONFIG);
    wait_for_ca_link(&k, Duration::from_secs(120));
    let seed = matching_seed();
    // The UKEY is pulled in the middle of key generation: a clear code, nothing issued or
    // queued; the applicant inserts it again (here: another one) and the issuance completes.
    let faulty = json!({ "pull_during_keygen": true });
    let (status, inserted) = k.call("POST", "/v1/sim/ukey", None, Some(faulty));
    assert_eq!(status, 201, "{inserted}");
    let pin = inserted["initial_pin"].as_str().unwrap().to_string();
    let (id, token) = verified_applicant(&k, seed);
    let path = format!("/v1/sessions/{id}/ukey");
    let (status, body) = post(&k, &path, &token, json!({ "pin": pin }));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "ukey_removed");
    assert_eq!(backlog(&k), 0, "nothing queued for HQ");
    let (_, ukey) = k.call("GET", &path, Some(&token), None);
    assert_eq!(ukey["present"], false, "{ukey}");
    let (status, inserted) = k.call("POST", "/v1/sim/ukey", None, None);
    assert_eq!(status, 201, "{inserted}");
    let (status, issued) = post(
        &k,
        &format!("/v1/sessions/{id}/ukey"),
        &token,
        json!({ "pin": pin }),
    );
    assert_eq!(status, 200, "{issued}");
    let first_serial = issued["certificate"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    end_session(&k, &id, &token);

    // Certificate use: sign a document; the signature verifies with the certificate's key.
    let (id, token) = signing_session(&k);
    let document = "合同 #42: the holder agrees".as_bytes();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, document);
    let path = format!("/v1/sessions/{id}/sign");
    let (status, body) = post(
        &k,
        &path,
        &token,
        json!({ "pin": "999999", "document_b64": b64 }),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["details"]["retries_left"].as_u64().is_some());
    let (status, signed) = post(
        &k,
        &path,
        &token,
        json!({ "pin": pin, "document_b64": b64 }),
    );
    assert_eq!(status, 200, "{signed}");
    assert_eq!(signed["certificate_serial"], first_serial.as_str());
    let sig = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        signed["signature_b64"].as_str().unwrap(),
    )
    .unwrap();
    let cert_pem = fetch_certificate_pem(&dir.path().join("ukeys"), &first_serial);
    openssl_verifies(dir.path(), &cert_pem, document, &sig);
    end_session(&k, &id, &token);

    // Lifecycle, each action after the holder read their card and was verified again.
    let lifecycle = |action: &str, extra: serde_json::Value| -> serde_json::Value {
        let (id, token) = card_and_carrier(&k, "lifecycle", seed, false);
        let mut req = json!({ "pin": pin });
        if let Some(reason) = extra.get("reason") {
            req["reason"] = reason.clone();
        }
        let (status, body) = post(
            &k,
            &format!("/v1/sessions/{id}/certificate/{action}"),
            &token,
            req,
        );
        assert_eq!(status, 200, "{action}: {body}");
        assert_eq!(
            k.call("DELETE", &format!("/v1/sessions/{id}"), Some(&token), None)
                .0,
            204
        );
        body
    };
    assert_eq!(lifecycle("suspend", json!({}))["status"], "held");
    assert_eq!(lifecycle("resume", json!({}))["status"], "good");
    let renewed = lifecycle("renew", json!({}));
    let second_serial = renewed["serial"].as_str().unwrap().to_string();
    assert_ne!(
        second_serial, first_serial,
        "renewal issues a new certificate"
    );
    let revoked = lifecycle("revoke", json!({ "reason": "keyCompromise" }));
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["serial"], second_serial.as_str());

    // Someone else cannot act on this UKEY's certificate: their verified identity differs.
    let other = (seed + 1..400)
        .find(|s| {
            fixtures::resident_text(*s)
                .identity_number()
                .expose()
                .chars()
                .last()
                .and_then(|c| c.to_digit(10))
                .is_some_and(|d| d % 2 == 0)
        })
        .unwrap();
    let (id, token) = card_and_carrier(&k, "lifecycle", other, false);
    let (status, body) = post(
        &k,
        &format!("/v1/sessions/{id}/certificate/suspend"),
        &token,
        json!({ "pin": pin }),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "not_holder");
    end_session(&k, &id, &token);

    // HQ learns every certificate event (issued, suspended, resumed, renewed, revoked).
    wait_for("the outbox to drain", Duration::from_secs(120), || {
        backlog(&k) == 0
    });
    let rows = hq_records(&local_hq_db(dir.path()), "kiosk-e2e-soft");
    let events = rows.iter().filter(|r| r.1.contains("certificate")).count();
    assert_eq!(
        events,
        5,
        "{:?}",
        rows.iter().map(|r| &r.1).collect::<Vec<_>>()
    );

    // Pulled: the kiosk says so.
    assert_eq!(k.call("DELETE", "/v1/sim/ukey", None, None).0, 204);
    let (id, token) = open_session(&k, "certificate_use");
    let (_, ukey) = k.call(
        "GET",
        &format!("/v1/sessions/{id}/ukey"),
        Some(&token),
        None,
    );
    assert_eq!(ukey["present"], false, "{ukey}");
    let logs = k.stop();
    let text = fixtures::resident_text(seed);
    assert_logs_clean(
        &logs,
        &[
            text.name().expose(),
            text.identity_number().expose(),
            "13900139000",
        ],
    );
}

/// The certificate a soft UKEY holds, as PEM (read from the token file's public parts by the
/// hsm crate, the same way kioskctl does).
fn fetch_certificate_pem(ukey_dir: &Path, serial: &str) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let provider = hsm::soft::SoftProvider::open(hsm::soft::SoftOptions {
            dir: ukey_dir.to_path_buf(),
            secret: zeroize::Zeroizing::new("kioskd-demo-soft-ukey-secret".into()),
            sm2_distid: "1234567812345678".into(),
            max_tries: 10,
        })
        .unwrap();
        use hsm::TokenProvider as _;
        let tokens = provider.list_tokens().await.unwrap();
        let token = provider.open_token(&tokens[0].label).await.unwrap();
        let der = token
            .read_certificate("holder-sign")
            .await
            .unwrap()
            .unwrap();
        let parsed = hsm::csr::parse_certificate(&der).unwrap();
        assert_eq!(parsed.serial_hex.replace(':', "").to_lowercase(), serial);
        pem::encode(&pem::Pem::new("CERTIFICATE", der))
    })
}

/// `openssl` (an independent implementation) verifies the DER signature over `document`.
fn openssl_verifies(dir: &Path, cert_pem: &str, document: &[u8], signature_der: &[u8]) {
    let cert = dir.join("holder.pem");
    let key = dir.join("holder-pub.pem");
    let doc = dir.join("document.bin");
    let sig = dir.join("document.sig");
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&doc, document).unwrap();
    std::fs::write(&sig, signature_der).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&key, &out.stdout).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&key)
        .arg("-signature")
        .arg(&sig)
        .arg(&doc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn with_hq_down_the_application_completes_and_its_record_syncs_later() {
    const KIOSK: &str = "kiosk-e2e-offline";
    let bin = hq_ingest();
    let dir = data_dir();
    let pki = hq_ingest::dev_pki::generate(&dir.path().join("pki")).unwrap();
    let (cert, key) = pki.kiosk_files(KIOSK).unwrap();
    let (ca_cert, ca_key) = pki.issuing_ca().unwrap();
    let (hq_port, ca_port) = (free_port(), free_port());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cluster = hq_ingest::pg_cluster::TempCluster::start().unwrap();
    let db = rt.block_on(cluster.create_database("hq")).unwrap();
    // The CA is its own service; HQ's ingest is down.
    let _ca = serve_with(
        &bin,
        &db,
        &pki,
        ca_port,
        &[
            "--ca-cert".as_ref(),
            ca_cert.as_os_str(),
            "--ca-key".as_ref(),
            ca_key.as_os_str(),
        ],
    );
    let config = format!(
        r#"
[kiosk]
id = "{KIOSK}"

[hq]
mode = "remote"
url = "https://127.0.0.1:{hq_port}"
ca_cert = "{}"
client_cert = "{}"
client_key = "{}"
record_key = "{}"
batch_records = 50
retry_min_ms = 100
retry_max_ms = 400

[ca]
url = "https://127.0.0.1:{ca_port}"
"#,
        pki.ca_cert.display(),
        cert.display(),
        key.display(),
        pki.record_public.display()
    );
    let k = Kioskd::start(&dir.path().join("kiosk"), &config);
    wait_for_ca_link(&k, Duration::from_secs(60));
    let registered = Command::new(&bin)
        .args(["register-kiosk", "--database-url", &db, "--kiosk-id", KIOSK])
        .arg("--public-key")
        .arg(k.data_dir.join("kiosk-device-key.json"))
        .output()
        .unwrap();
    assert!(registered.status.success());

    let (status, inserted) = k.call("POST", "/v1/sim/ukey", None, None);
    assert_eq!(status, 201, "{inserted}");
    let (id, token) = verified_applicant(&k, matching_seed());
    let (status, issued) = post(
        &k,
        &format!("/v1/sessions/{id}/ukey"),
        &token,
        json!({ "pin": inserted["initial_pin"] }),
    );
    assert_eq!(
        status, 200,
        "the application completes with HQ down: {issued}"
    );
    end_session(&k, &id, &token);
    wait_for("a failed send", Duration::from_secs(30), || {
        k.logs().iter().any(|l| l.contains("sync to HQ failed"))
    });
    assert_eq!(backlog(&k), 2, "the record and the certificate event wait");
    // The clear copy left with the session; the outbox holds the minimized, sealed record.
    assert_eq!(kiosk_personal_fields(&k.data_dir), 0);

    let _hq = serve(&bin, &db, &pki, hq_port);
    wait_for("the backlog to drain", Duration::from_secs(120), || {
        backlog(&k) == 0
    });
    let rows = hq_records(&db, KIOSK);
    let applicants = assert_exactly_once(&rows, 1);
    assert_only_allowed(&applicants, &pki.record_key);
    k.stop();
}

#[test]
fn an_enterprise_agent_is_verified_as_an_individual_and_a_card_pulled_mid_read_leaves_nothing() {
    let dir = data_dir();
    let k = Kioskd::start(dir.path(), SOFT_UKEY_CONFIG);
    wait_for_ca_link(&k, Duration::from_secs(120));
    let seed = matching_seed();

    // The card leaves the reader mid-read: a clear code, nothing stored, the step can be redone.
    let (id, token) = open_session(&k, "enterprise_cert_application");
    consent(&k, &id, &token, json!(["id_number"]));
    let pulled = json!({ "seed": seed, "pull_during_read": true });
    assert_eq!(k.call("POST", "/v1/sim/idcard", None, Some(pulled)).0, 204);
    let (status, body) = post(&k, &format!("/v1/sessions/{id}/idcard"), &token, json!({}));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "card_removed");
    assert_eq!(kiosk_personal_fields(dir.path()), 0);
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
    let (status, body) = post(&k, &format!("/v1/sessions/{id}/idcard"), &token, json!({}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &k,
        &format!("/v1/sessions/{id}/verification"),
        &token,
        json!({ "method": "carrier_3factor", "mobile": "13900139000" }),
    );
    assert_eq!(status, 200, "{body}");

    // No UKEY before the enterprise is declared; a bad credit code is refused.
    let (status, inserted) = k.call("POST", "/v1/sim/ukey", None, None);
    assert_eq!(status, 201, "{inserted}");
    let pin = json!({ "pin": inserted["initial_pin"] });
    let (status, body) = post(&k, &format!("/v1/sessions/{id}/ukey"), &token, pin.clone());
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["details"]["missing"], "enterprise");
    let mut declared = json!({
        "enterprise_name": "示例科技有限公司",
        "credit_code": "91350100M000100Y44",
        "legal_rep_name": "测试乙",
    });
    let code = (0..31)
        .map(|i| {
            format!(
                "91350100M000100Y4{}",
                &"0123456789ABCDEFGHJKLMNPQRTUWXY"[i..i + 1]
            )
        })
        .find(|c| kioskd::workflow::enterprise::is_credit_code(c))
        .unwrap();
    let wrong = if code.ends_with('0') {
        "91350100M000100Y41"
    } else {
        "91350100M000100Y40"
    };
    declared["credit_code"] = json!(wrong);
    let path = format!("/v1/sessions/{id}/enterprise");
    let (status, body) = post(&k, &path, &token, declared.clone());
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["details"]["item"], "credit_code");
    declared["credit_code"] = json!(code);
    let (status, body) = post(&k, &path, &token, declared);
    assert_eq!(status, 200, "{body}");
    let (status, issued) = post(&k, &format!("/v1/sessions/{id}/ukey"), &token, pin);
    assert_eq!(status, 200, "{issued}");
    assert!(
        issued["certificate"]["subject"]
            .as_str()
            .unwrap()
            .contains("O=示例科技有限公司")
    );
    end_session(&k, &id, &token);

    // HQ gets the enterprise's fields as the catalog says (name and code plain, the
    // representative sealed), with the agent's record.
    wait_for("the outbox to drain", Duration::from_secs(120), || {
        backlog(&k) == 0
    });
    let rows = hq_records(&local_hq_db(dir.path()), "kiosk-e2e-soft");
    let applicants = assert_exactly_once(&rows, 1);
    assert_eq!(applicants[0].service, "enterprise_cert_application");
    let items = items_of(&applicants[0]);
    for needed in [
        "enterprise_name",
        "credit_code",
        "legal_rep_name",
        "name",
        "certificate",
    ] {
        assert!(
            items.iter().any(|i| i == needed),
            "{needed} missing from {items:?}"
        );
    }
    assert_only_allowed(
        &applicants,
        &dir.path().join("hq-local/pki/hq-record-key.hex"),
    );
    let logs = k.stop();
    assert_logs_clean(&logs, &["测试乙", "13900139000"]);
}

/// An SM2 UKEY on the project's PKCS#11 module (`libkiosk_softtoken.so` numbering SM2 as the
/// `sansec` vendor profile: the kiosk hands the token the SM3 digest with Z_A, the token
/// answers raw r‖s): the applicant's application issues an SM2 certificate from the local
/// HQ's SM2 issuing CA; `pkcs11-tool` reads it back from the token, `openssl verify` chains it
/// to the CA, and a document the holder signs at the kiosk verifies with `openssl dgst -sm3`
/// and the default distinguishing id.
#[test]
fn an_sm2_application_on_the_pkcs11_module_chains_to_the_sm2_ca_and_verifies_with_openssl() {
    const DISTID: &str = "1234567812345678";
    let module = common::softtoken_module();
    let dir = data_dir();
    let store = dir.path().join("softtoken");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(
        store.join("softtoken.toml"),
        "slots = 2\nprofile = \"sansec\"\nkdf_iterations = 5000\n",
    )
    .unwrap();
    // The applicant's UKEY as staff hand it out: initialised, with its user PIN.
    let init = Command::new(env!("CARGO_BIN_EXE_kioskctl"))
        .args(["token", "init", "--module"])
        .arg(&module)
        .args(["--token", UKEY_LABEL])
        .env("KIOSK_SOFTTOKEN_DIR", &store)
        .env("KIOSK_SO_PIN", SO_PIN)
        .env("KIOSK_PIN", USER_PIN)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let config = format!(
        "{}vendor_profile = \"sansec\"\nalgorithm = \"sm2\"\nsm2_distid = \"{DISTID}\"\n",
        config(&module)
    );
    let k = Kioskd::start_with_env(dir.path(), &config, &[("KIOSK_SOFTTOKEN_DIR", &store)]);
    wait_for_ca_link(&k, Duration::from_secs(120));
    let (id, token) = verified_applicant(&k, matching_seed());
    let (status, issued) = post(
        &k,
        &format!("/v1/sessions/{id}/ukey"),
        &token,
        json!({ "pin": USER_PIN }),
    );
    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["certificate"]["algorithm"], "sm2", "{issued}");
    assert_eq!(issued["form_signature"]["verified"], true);
    end_session(&k, &id, &token);

    // The holder signs a document at the kiosk with the new key.
    let (id, token) = signing_session(&k);
    let document = "合同 #43: SM2 on a PKCS#11 UKEY".as_bytes();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, document);
    let (status, signed) = post(
        &k,
        &format!("/v1/sessions/{id}/sign"),
        &token,
        json!({ "pin": USER_PIN, "document_b64": b64 }),
    );
    assert_eq!(status, 200, "{signed}");
    assert_eq!(signed["algorithm"], "sm2");
    let signature = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        signed["signature_b64"].as_str().unwrap(),
    )
    .unwrap();
    end_session(&k, &id, &token);
    k.stop();

    // OpenSC's pkcs11-tool reads the certificate back from the token.
    let work = dir.path();
    let cert_der = work.join("holder.der");
    let read = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&module)
        .args([
            "--token-label",
            UKEY_LABEL,
            "--read-object",
            "--type",
            "cert",
        ])
        .args(["--label", "holder-sign", "--output-file"])
        .arg(&cert_der)
        .env("KIOSK_SOFTTOKEN_DIR", &store)
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "pkcs11-tool: {}{}",
        String::from_utf8_lossy(&read.stdout),
        String::from_utf8_lossy(&read.stderr)
    );
    let openssl = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let cert_pem = work.join("holder.pem");
    openssl(&[
        &os("x509"),
        &os("-inform"),
        &os("DER"),
        &os("-in"),
        cert_der.as_os_str(),
        &os("-out"),
        cert_pem.as_os_str(),
    ]);
    let text = openssl(&[
        &os("x509"),
        &os("-in"),
        cert_pem.as_os_str(),
        &os("-text"),
        &os("-noout"),
    ]);
    assert!(text.contains("SM2"), "an SM2 certificate: {text}");
    // It chains to the local HQ's SM2 issuing CA: OpenSSL 3.0 checks an SM2 certificate
    // signature only with the distinguishing id named (GM/T 0015's default here), and a
    // different id must fail.
    let ca = work.join("hq-local/pki/hq-issuing-ca-sm2.pem");
    assert!(ca.is_file(), "the local HQ issued with its SM2 CA");
    let distid = format!("distid:{DISTID}");
    let verified = openssl(&[
        &os("verify"),
        &os("-vfyopt"),
        &os(&distid),
        &os("-CAfile"),
        ca.as_os_str(),
        cert_pem.as_os_str(),
    ]);
    assert!(verified.contains(": OK"), "{verified}");
    let wrong_id = Command::new("openssl")
        .args(["verify", "-vfyopt", "distid:8765432112345678", "-CAfile"])
        .arg(&ca)
        .arg(&cert_pem)
        .output()
        .unwrap();
    assert!(!wrong_id.status.success(), "another id must not verify");
    // The kiosk's signature verifies with the certificate's key and the default id.
    let public = work.join("holder-pub.pem");
    let (doc, sig) = (work.join("document.bin"), work.join("document.sig"));
    std::fs::write(&doc, document).unwrap();
    std::fs::write(&sig, &signature).unwrap();
    openssl(&[
        &os("x509"),
        &os("-in"),
        cert_pem.as_os_str(),
        &os("-pubkey"),
        &os("-noout"),
        &os("-out"),
        public.as_os_str(),
    ]);
    let dgst = openssl(&[
        &os("dgst"),
        &os("-sm3"),
        &os("-verify"),
        public.as_os_str(),
        &os("-sigopt"),
        &os(&distid),
        &os("-signature"),
        sig.as_os_str(),
        doc.as_os_str(),
    ]);
    assert!(dgst.contains("Verified OK"), "{dgst}");
    // Another document does not verify with that signature.
    std::fs::write(&doc, b"another document").unwrap();
    let other = Command::new("openssl")
        .args(["dgst", "-sm3", "-verify"])
        .arg(&public)
        .args(["-sigopt", &distid, "-signature"])
        .arg(&sig)
        .arg(&doc)
        .output()
        .unwrap();
    assert!(!other.status.success());
}
