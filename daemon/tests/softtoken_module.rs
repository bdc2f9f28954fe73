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
