//! Staff batch issuance over the real binary: blank SoftHSM2 UKEYs in the factory state (label
//! `blank-N`, factory SO PIN, user PIN never set) are issued in parallel through
//! `POST /v1/staff/batches`, followed over server-sent events to `done`; each token then has its
//! label, the initial PIN shown once opens it, and its key is sensitive and never extractable.
//! A token with another factory SO PIN fails alone and stays blank. Non-staff are refused.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use common::{Kioskd, open_session, softhsm_conf, softhsm_module, staff_login};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use serde_json::{Value, json};

const FACTORY_SO_PIN: &str = "factory-so-1";
const OTHER_FACTORY_SO_PIN: &str = "other-factory-9";
const TOKENS: usize = 8;

fn open_module(module: &Path) -> Pkcs11 {
    let ctx = Pkcs11::new(module).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    ctx
}

/// Puts a token in the factory state in the free slot; returns its serial.
fn factory_token(ctx: &Pkcs11, label: &str, so_pin: &str) -> String {
    let free = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| !ctx.get_token_info(*s).unwrap().token_initialized())
        .expect("SoftHSM2 offers a free slot");
    ctx.init_token(free, &AuthPin::from(so_pin), label).unwrap();
    ctx.get_slots_with_token()
        .unwrap()
        .into_iter()
        .map(|s| ctx.get_token_info(s).unwrap())
        .find(|i| i.label().trim() == label)
        .map(|i| i.serial_number().trim().to_owned())
        .unwrap()
}

/// Reads the batch's server-sent events until `done`; returns every token state per serial.
fn follow_events(k: &Kioskd, staff: &str, batch_id: &str) -> HashMap<String, Vec<String>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let resp = agent
        .get(format!("{}/v1/staff/batches/{batch_id}/events", k.base))
        .header("Authorization", format!("Bearer {staff}"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut states: HashMap<String, Vec<String>> = HashMap::new();
    let mut event = String::new();
    for line in BufReader::new(resp.into_body().into_reader()).lines() {
        let line = line.unwrap();
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let data: Value = serde_json::from_str(data).unwrap();
            match event.as_str() {
                "token" => {
                    assert!(data.get("initial_pin").is_none(), "PIN in an event: {data}");
                    let seen = states
                        .entry(data["serial"].as_str().unwrap().to_owned())
                        .or_default();
                    let state = data["state"].as_str().unwrap().to_owned();
                    if seen.last() != Some(&state) {
                        seen.push(state);
                    }
                }
                "done" => return states,
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
    panic!("event stream ended without done");
}

/// The (label, user PIN initialised, key attributes) of the token with `serial`, read with a
/// fresh module instance (SoftHSM2 re-reads its store at C_Initialize).
struct TokenFacts {
    label: String,
    user_pin_initialized: bool,
    key: Option<(bool, bool, Vec<u8>)>,
}

fn token_facts(module: &Path, serial: &str, user_pin: Option<&str>) -> TokenFacts {
    let ctx = open_module(module);
    let (slot, info) = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .map(|s| (s, ctx.get_token_info(s).unwrap()))
        .find(|(_, i)| i.serial_number().trim() == serial)
        .expect("token present");
    let mut facts = TokenFacts {
        label: info.label().trim().to_owned(),
        user_pin_initialized: info.user_pin_initialized(),
        key: None,
    };
    if let Some(pin) = user_pin {
        let session = ctx.open_ro_session(slot).unwrap();
        session
            .login(UserType::User, Some(&AuthPin::from(pin)))
            .expect("the initial PIN opens the token");
        let private = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(b"holder-sign".to_vec()),
            ])
            .unwrap();
        let public = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Label(b"holder-sign".to_vec()),
            ])
            .unwrap();
        if let (Some(&private), Some(&public)) = (private.first(), public.first()) {
            let (mut sensitive, mut extractable) = (false, true);
            for attr in session
                .get_attributes(
                    private,
                    &[AttributeType::Sensitive, AttributeType::Extractable],
                )
                .unwrap()
            {
                match attr {
                    Attribute::Sensitive(v) => sensitive = v,
                    Attribute::Extractable(v) => extractable = v,
                    _ => {}
                }
            }
            let point = session
                .get_attributes(public, &[AttributeType::EcPoint])
                .unwrap()
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(p) => Some(p),
                    _ => None,
                })
                .unwrap();
            facts.key = Some((sensitive, extractable, point));
        }
        session.logout().unwrap();
    }
    drop(ctx);
    facts
}

/// Base64 body of a PEM block, decoded.
fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

#[test]
fn staff_issue_blank_ukeys_in_parallel_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let conf = softhsm_conf(dir.path());
    // SAFETY: the only test in this binary touching the environment; set before the module
    // loads and before kioskd (which inherits it) starts.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let module = softhsm_module();

    let ctx = open_module(&module);
    let mut serials: Vec<String> = (0..TOKENS)
        .map(|i| factory_token(&ctx, &format!("blank-{i}"), FACTORY_SO_PIN))
        .collect();
    let odd_one = factory_token(&ctx, "blank-other", OTHER_FACTORY_SO_PIN);
    ctx.finalize().unwrap();

    let config = format!(
        "[ukey]\nprovider = \"pkcs11\"\nmodule = \"{}\"\nfactory_so_pin = \"{FACTORY_SO_PIN}\"\n",
        module.display()
    );
    let k = Kioskd::start(&dir.path().join("data"), &config);

    // Non-staff are refused, without side effects.
    assert_eq!(k.call("GET", "/v1/staff/tokens", None, None).0, 401);
    let (_sid, applicant) = open_session(&k, "cert_application");
    assert_eq!(
        k.call("GET", "/v1/staff/tokens", Some(&applicant), None).0,
        401
    );
    let (status, body) = k.call(
        "POST",
        "/v1/staff/batches",
        Some(&applicant),
        Some(json!({ "serials": null, "pin_mode": "random" })),
    );
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "staff_unauthorized");

    let staff = staff_login(&k);
    let (status, listed) = k.call("GET", "/v1/staff/tokens", Some(&staff), None);
    assert_eq!(status, 200, "{listed}");
    let blank: HashSet<&str> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["blank"] == json!(true))
        .map(|t| t["serial"].as_str().unwrap())
        .collect();
    serials.push(odd_one.clone());
    assert_eq!(blank, serials.iter().map(String::as_str).collect());

    // A bad request changes nothing.
    let (status, body) = k.call(
        "POST",
        "/v1/staff/batches",
        Some(&staff),
        Some(json!({ "serials": ["no-such-serial"], "pin_mode": "random" })),
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "token_not_present");

    let (status, started) = k.call(
        "POST",
        "/v1/staff/batches",
        Some(&staff),
        Some(json!({
            "serials": null,
            "algorithm": "p256",
            "label_prefix": "UKEY",
            "pin_mode": "random",
        })),
    );
    assert_eq!(status, 202, "{started}");
    let batch_id = started["batch_id"].as_str().unwrap().to_owned();
    assert_eq!(started["tokens"].as_array().unwrap().len(), TOKENS + 1);
    assert!(
        started["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "queued" && t["percent"] == 0)
    );

    let states = follow_events(&k, &staff, &batch_id);
    for serial in &serials[..TOKENS] {
        let seen = &states[serial];
        // Late subscribers may start mid-way, but the order never goes back.
        let order = [
            "queued",
            "initialising",
            "setting_pin",
            "generating_key",
            "done",
        ];
        let ranks: Vec<usize> = seen
            .iter()
            .map(|s| order.iter().position(|o| o == s).unwrap())
            .collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{serial}: {seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some("done"), "{seen:?}");
    }
    assert_eq!(states[&odd_one].last().map(String::as_str), Some("failed"));

    let (status, answer) = k.call(
        "GET",
        &format!("/v1/staff/batches/{batch_id}"),
        Some(&staff),
        None,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], "done");
    assert!(answer["finished_ms"].as_u64().unwrap() >= answer["started_ms"].as_u64().unwrap());
    let tokens = answer["tokens"].as_array().unwrap();
    let mut pins = Vec::new();
    for t in tokens {
        let serial = t["serial"].as_str().unwrap();
        if serial == odd_one {
            assert_eq!(t["state"], "failed");
            assert_eq!(t["error"]["code"], "factory_so_pin_wrong", "{t}");
            assert!(t["initial_pin"].is_null() && t["initial_so_pin"].is_null());
            continue;
        }
        assert_eq!(t["state"], "done", "{t}");
        assert_eq!(t["percent"], 100);
        assert_eq!(t["label"], format!("UKEY-{serial}"));
        let pin = t["initial_pin"].as_str().unwrap().to_owned();
        assert!(pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(t["initial_so_pin"].as_str().unwrap().len(), 8);
        pins.push((
            serial.to_owned(),
            pin,
            t["public_key_pem"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(pins.len(), TOKENS);

    // The PINs were shown once.
    let (_, again) = k.call(
        "GET",
        &format!("/v1/staff/batches/{batch_id}"),
        Some(&staff),
        None,
    );
    assert!(
        again["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["initial_pin"].is_null() && t["initial_so_pin"].is_null()),
        "{again}"
    );

    // On the tokens: label, the PIN opens it, the key is sensitive and never extractable and
    // is the one the answer reported.
    for (serial, pin, pem) in &pins {
        let facts = token_facts(&module, serial, Some(pin));
        assert_eq!(facts.label, format!("UKEY-{serial}"));
        assert!(facts.user_pin_initialized);
        let (sensitive, extractable, point) = facts.key.expect("holder key on the token");
        assert!(sensitive && !extractable);
        let spki = pem_der(pem);
        // CKA_EC_POINT is an OCTET STRING holding the 65-byte point the SPKI ends with.
        assert!(point.ends_with(&spki[spki.len() - 65..]));
    }
    let untouched = token_facts(&module, &odd_one, None);
    assert_eq!(untouched.label, "blank-other");
    assert!(!untouched.user_pin_initialized);

    let logs = k.stop();
    for (_, pin, _) in &pins {
        let quoted = format!("\"{pin}\"");
        assert!(
            logs.iter().all(|l| !l.contains(&quoted)),
            "an initial PIN was logged"
        );
    }
    assert!(
        logs.iter().all(|l| !l.contains(FACTORY_SO_PIN)),
        "the factory SO PIN was logged"
    );

    // Staff actions are audited (serials and outcomes, never PINs).
    let conn = rusqlite::Connection::open(dir.path().join("data").join("kiosk.sqlite")).unwrap();
    let audited: Vec<(String, String)> = conn
        .prepare("SELECT action, detail FROM audit_log WHERE action LIKE 'staff.%' ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let actions: Vec<&str> = audited.iter().map(|(a, _)| a.as_str()).collect();
    for action in [
        "staff.ukeys.list",
        "staff.batch.start",
        "staff.batch.done",
        "staff.batch.pins_shown",
    ] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }
    for (_, detail) in &audited {
        assert!(
            pins.iter()
                .all(|(_, pin, _)| !detail.contains(&format!("\"{pin}\"")))
        );
        assert!(!detail.contains(FACTORY_SO_PIN));
    }
}
