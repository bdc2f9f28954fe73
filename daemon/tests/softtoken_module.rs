//! The project's own PKCS#11 module (`libkiosk_softtoken.so`) under SM2 vendor profiles:
//! `kioskctl token` init, keygen, sign and csr, each judged by openssl with the default
//! distinguishing id (the path a real SM2 UKEY takes, which SoftHSM2 cannot run); and
//! kioskd's start-up probe refusing a device token whose profile does not match it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KIOSKCTL: &str = env!("CARGO_BIN_EXE_kioskctl");
const KIOSKD: &str = common::KIOSKD;
const DISTID: &str = "1234567812345678";

fn module_path() -> PathBuf {
    common::softtoken_module()
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn kioskctl_sm2_keygen_sign_and_csr_on_the_softtoken_verify_with_openssl() {
    let module = module_path();
    let store = tempfile::tempdir().unwrap();
    std::fs::write(
        store.path().join("softtoken.toml"),
        "slots = 1\nprofile = \"sansec-appid1\"\nkdf_iterations = 5000\n",
    )
    .unwrap();
    let work = store.path();
    let kioskctl = |args: &[&str]| {
        let mut all = vec!["token"];
        all.extend_from_slice(&args[..1]);
        all.extend_from_slice(&[
            "--module",
            module.to_str().unwrap(),
            "--profile",
            "sansec-appid1",
            "--token",
            "T",
        ]);
        all.extend_from_slice(&args[1..]);
        Command::new(KIOSKCTL)
            .args(&all)
            .env("KIOSK_SOFTTOKEN_DIR", store.path())
            .env("KIOSK_SO_PIN", "87654321")
            .env("KIOSK_PIN", "135790")
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let o = kioskctl(args);
        assert!(o.status.success(), "kioskctl {args:?}: {}", show(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(&["init"]);
    let pem = ok(&["keygen", "--key", "K", "--algo", "sm2"]);
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let p = |n: &str| work.join(n).display().to_string();
    std::fs::write(p("pub.pem"), &pem).unwrap();
    let o = Command::new("openssl")
        .args(["pkey", "-pubin", "-in", &p("pub.pem"), "-text", "-noout"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("SM2"),
        "{}",
        show(&o)
    );

    std::fs::write(p("msg"), b"applicant consent 2026-0099").unwrap();
    ok(&[
        "sign",
        "--key",
        "K",
        "--in",
        &p("msg"),
        "--out",
        &p("msg.sig"),
    ]);
    let verify = |file: &str| {
        Command::new("openssl")
            .args([
                "dgst",
                "-sm3",
                "-verify",
                &p("pub.pem"),
                "-sigopt",
                &format!("distid:{DISTID}"),
                "-signature",
                &p("msg.sig"),
                file,
            ])
            .output()
            .unwrap()
    };
    let o = verify(&p("msg"));
    assert!(
        o.status.success(),
        "openssl rejects the SM2 signature: {}",
        show(&o)
    );
    std::fs::write(p("other"), b"applicant consent 2026-0100").unwrap();
    assert!(!verify(&p("other")).status.success());

    ok(&[
        "csr",
        "--key",
        "K",
        "--subject",
        "CN=Zhang San,O=Branch 12",
        "--out",
        &p("req.pem"),
    ]);
    let o = Command::new("openssl")
        .args([
            "req",
            "-in",
            &p("req.pem"),
            "-verify",
            "-noout",
            "-vfyopt",
            &format!("distid:{DISTID}"),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "openssl rejects the SM2 CSR: {}",
        show(&o)
    );
    // The CSR carries the token key.
    let o = Command::new("openssl")
        .args(["req", "-in", &p("req.pem"), "-pubkey", "-noout"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), pem.trim());
}

/// A module store with an initialised device token (PINs as kioskd's defaults), and a data
/// directory whose kioskd config names the module with `vendor_profile` (and carries a
/// `profiles.toml` with `gm-vendor-a`, wrong about its signature encoding).
fn device_token_on_module(root: &Path, vendor_profile: &str) -> (PathBuf, PathBuf, PathBuf) {
    let module = module_path();
    let store = root.join("softtoken");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(
        store.join("softtoken.toml"),
        "slots = 4\nprofile = \"sansec\"\nkdf_iterations = 5000\n",
    )
    .unwrap();
    // The device token, initialised by staff with the PINs kioskd is configured with.
    let o = Command::new(KIOSKCTL)
        .args(["token", "init", "--module", module.to_str().unwrap()])
        .args(["--token", "kiosk-device"])
        .env("KIOSK_SOFTTOKEN_DIR", &store)
        .env("KIOSK_SO_PIN", "kiosk-device-so-pin")
        .env("KIOSK_PIN", "kiosk-device-pin")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A vendor profile that says CKM_SM3_SM2_APPID1 answers in DER: the module answers r||s.
    std::fs::write(
        data.join("profiles.toml"),
        r#"[profiles.gm-vendor-a]
description = "wrong about the signature encoding"
ckk_sm2 = 0x80000004
ckm_sm2_keygen = 0x80008001
ckm_sm2_sign = 0x80008102
sm2_sign_input = "message"
sm2_signature = "der"
"#,
    )
    .unwrap();
    let config = data.join("kioskd.toml");
    std::fs::write(
        &config,
        format!(
            "[kiosk]\nid = \"kiosk-probe\"\n\n[token]\nprovider = \"pkcs11\"\nmodule = \"{}\"\n\
             vendor_profile = \"{vendor_profile}\"\n",
            module.display()
        ),
    )
    .unwrap();
    (store, data, config)
}

/// Starts kioskd on the module with `vendor_profile` and returns its exit status and logs
/// (it must exit on its own within a minute).
fn kioskd_on_module(vendor_profile: &str) -> (Option<i32>, String) {
    let root = tempfile::tempdir().unwrap();
    let (store, data, config) = device_token_on_module(root.path(), vendor_profile);
    let mut child = Command::new(KIOSKD)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .env("KIOSKD_API_ADDR", "127.0.0.1:0")
        .env("KIOSK_SOFTTOKEN_DIR", &store)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut logs = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut logs);
    }
    (status, logs)
}

#[test]
fn kioskd_refuses_a_device_token_whose_profile_gets_the_signature_encoding_wrong() {
    let (status, logs) = kioskd_on_module("profiles.toml#gm-vendor-a");
    assert!(
        status.is_some_and(|c| c != 0),
        "kioskd must exit with an error, got {status:?}:\n{logs}"
    );
    assert!(
        logs.contains(
            "profile gm-vendor-a: CKM 0x80008102 should return DER, token returned 64 raw bytes"
        ),
        "the refusal must name profile, mechanism and what the token did:\n{logs}"
    );
    assert!(!logs.contains("serving"), "kioskd went ready:\n{logs}");
}

#[test]
fn kioskd_refuses_a_device_token_without_the_profiles_mechanisms() {
    let (status, logs) = kioskd_on_module("ibm");
    assert!(status.is_some_and(|c| c != 0), "{status:?}:\n{logs}");
    assert!(
        logs.contains("vendor profile \\\"ibm\\\" does not match the token")
            || logs.contains("vendor profile \"ibm\" does not match the token"),
        "{logs}"
    );
    assert!(logs.contains("0x8005000A"), "{logs}");
}

#[test]
fn kioskd_goes_ready_on_the_module_when_the_profile_matches() {
    let root = tempfile::tempdir().unwrap();
    let (store, data, _) = device_token_on_module(root.path(), "sansec-appid1");
    let config = std::fs::read_to_string(data.join("kioskd.toml")).unwrap();
    let k =
        common::Kioskd::start_with_env(&data, &config, &[("KIOSK_SOFTTOKEN_DIR", store.as_path())]);
    let logs = k.stop();
    assert!(
        !logs
            .iter()
            .any(|l| l.contains("does not match") || l.contains("profile sansec")),
        "{logs:?}"
    );
}

/// Wrong PINs on an SM2 UKEY (the module counts them itself, locking after 3) lock it through
/// kioskd's API, after which the right PIN fails too; staff unblock it at the desk with the
/// UKEY's SO PIN (a wrong SO PIN is refused with the token's retries left) and a new PIN,
/// which then works, as does a PIN change; no PIN reaches the logs and each action is
/// audited.
#[test]
fn a_ukey_locked_by_wrong_pins_is_unblocked_by_staff_with_the_so_pin_through_the_api() {
    const LABEL: &str = "UKEY-LOCK";
    let (so_pin, user_pin, new_pin, third_pin) = ("87654321", "135790", "246813", "975310");
    let module = module_path();
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("softtoken");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(
        store.join("softtoken.toml"),
        "slots = 2\nprofile = \"sansec\"\nkdf_iterations = 5000\n\
         user_pin_max_attempts = 3\nso_pin_max_attempts = 3\n",
    )
    .unwrap();
    let o = Command::new(KIOSKCTL)
        .args(["token", "init", "--module", module.to_str().unwrap()])
        .args(["--token", LABEL])
        .env("KIOSK_SOFTTOKEN_DIR", &store)
        .env("KIOSK_SO_PIN", so_pin)
        .env("KIOSK_PIN", user_pin)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = format!(
        "[kiosk]\nid = \"kiosk-unblock\"\n\n[ukey]\nprovider = \"pkcs11\"\nmodule = \"{}\"\n\
         vendor_profile = \"sansec\"\nalgorithm = \"sm2\"\n",
        module.display()
    );
    let k = common::Kioskd::start_with_env(&data, &config, &[("KIOSK_SOFTTOKEN_DIR", &store)]);
    // Signing needs the holder's user_pin first: a UKEY without a certificate answers
    // `no_certificate` only once the user_pin was right.
    let (id, token) = common::open_session(&k, "certificate_use");
    common::consent(&k, &id, &token, serde_json::json!(["pin"]));
    let sign = |pin: &str| {
        k.call(
            "POST",
            &format!("/v1/sessions/{id}/sign"),
            Some(&token),
            Some(serde_json::json!({ "pin": pin, "document_b64": "ZG9j" })),
        )
    };
    let mut codes = Vec::new();
    for _ in 0..3 {
        let (status, body) = sign("000000");
        codes.push((
            status,
            body["error"]["code"].as_str().unwrap_or("").to_string(),
        ));
    }
    assert_eq!(codes[0], (403, "pin_incorrect".to_string()), "{codes:?}");
    let (status, body) = sign(user_pin);
    assert_eq!(
        status, 423,
        "the right user_pin fails once the token locked: {body}"
    );
    assert_eq!(body["error"]["code"], "pin_locked");

    let staff = common::staff_login(&k);
    let (status, devices) = k.call("GET", "/v1/staff/devices", Some(&staff), None);
    assert_eq!(status, 200, "{devices}");
    let ukey = devices["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == LABEL)
        .unwrap_or_else(|| panic!("{devices}"));
    assert_eq!(ukey["pin_state"], "locked", "{devices}");
    let serial = ukey["serial"].as_str().unwrap().to_string();
    let unblock = |so: &str, new: &str| {
        k.call(
            "POST",
            "/v1/staff/ukeys/unblock",
            Some(&staff),
            Some(serde_json::json!({ "serial": serial, "so_pin": so, "new_pin": new })),
        )
    };
    // Only staff may: an applicant's bearer token is not a staff session.
    let (status, _) = k.call(
        "POST",
        "/v1/staff/ukeys/unblock",
        Some(&token),
        Some(serde_json::json!({ "serial": serial, "so_pin": so_pin, "new_pin": new_pin })),
    );
    assert_eq!(status, 401);
    let (status, body) = unblock("11111111", new_pin);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "so_pin_incorrect");
    assert_eq!(body["error"]["details"]["retries_left"], 2, "{body}");
    let (status, body) = unblock(so_pin, new_pin);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["serial"], serial.as_str());

    let (status, body) = sign(new_pin);
    assert_eq!(status, 409, "the new user_pin opens the UKEY: {body}");
    assert_eq!(body["error"]["code"], "no_certificate");
    // A user_pin change at the desk, the current user_pin given.
    let (status, body) = k.call(
        "POST",
        "/v1/staff/ukeys/pin",
        Some(&staff),
        Some(serde_json::json!({ "serial": serial, "pin": new_pin, "new_pin": third_pin })),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(sign(new_pin).0, 403, "the old user_pin no longer opens it");
    assert_eq!(sign(third_pin).1["error"]["code"], "no_certificate");

    let (status, audit) = k.call("GET", "/v1/staff/audit?limit=100", Some(&staff), None);
    assert_eq!(status, 200);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "staff.ukey.unblock_refused",
        "staff.ukey.unblock",
        "staff.ukey.pin_change",
    ] {
        assert!(actions.contains(&action), "{action} audited: {actions:?}");
    }
    let logs = k.stop();
    common::assert_logs_clean(&logs, &[so_pin, new_pin, third_pin, "11111111"]);
}
