use std::path::Path;

use super::*;

fn load_text(text: &str, dir: &Path) -> Result<LoadedConfig, ConfigError> {
    let file = dir.join("kioskd.toml");
    std::fs::write(&file, text).unwrap();
    load(LoadOptions {
        file: Some(&file),
        data_dir: Some(&dir.join("data")),
    })
}

fn only_problem(err: ConfigError) -> Problem {
    match err {
        ConfigError::Invalid(mut p) => {
            assert_eq!(p.len(), 1, "expected one problem, got {p:?}");
            p.remove(0)
        }
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn defaults_validate_and_run_without_hardware() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(LoadOptions {
        file: None,
        data_dir: Some(dir.path()),
    })
    .expect("defaults are valid");
    let c = &loaded.config;
    assert_eq!(c.devices.idcard.mode, SerialMode::Simulated);
    assert_eq!(c.devices.camera.mode, CameraMode::Synthetic);
    assert_eq!(c.token.provider, TokenProvider::Soft);
    assert_eq!(c.hq.mode, HqMode::Local);
    assert!(c.api.listen.unwrap().ip().is_loopback());
    assert_eq!(loaded.data_dir(), dir.path());
    assert_eq!(
        loaded.resolve(&c.store.path),
        dir.path().join("kiosk.sqlite")
    );
}

#[test]
fn an_empty_file_is_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load_text("", dir.path()).unwrap();
    let mut expected = Config::default();
    expected.kiosk.data_dir = dir.path().join("data");
    assert_eq!(loaded.config, expected);
}

#[test]
fn bad_type_names_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_text("[api]\nsession_idle_secs = \"soon\"\n", dir.path()).unwrap_err();
    let p = only_problem(err);
    assert_eq!(p.key, "api.session_idle_secs");
    assert_eq!(p.line, Some(2));
    assert!(p.message.contains("invalid type"), "{}", p.message);
    let shown = p.to_string();
    assert!(
        shown.contains("kioskd.toml:2: api.session_idle_secs"),
        "{shown}"
    );
}

#[test]
fn unknown_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_text(
        "[store]\npath = \"k.sqlite\"\nencrypt = false\n",
        dir.path(),
    )
    .unwrap_err();
    let p = only_problem(err);
    assert_eq!(p.key, "store.encrypt");
    assert_eq!(p.line, Some(3));
    assert!(p.message.contains("unknown field"), "{}", p.message);
    assert!(p.fix.contains("remove the key"), "{}", p.fix);
}

#[test]
fn unknown_enum_value_lists_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_text("[token]\nprovider = \"tpm\"\n", dir.path()).unwrap_err();
    let p = only_problem(err);
    assert_eq!(p.key, "token.provider");
    assert!(
        p.message.contains("soft") && p.message.contains("pkcs11"),
        "{}",
        p.message
    );
}

#[test]
fn syntax_error_has_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_text("[api\n", dir.path()).unwrap_err();
    let p = only_problem(err);
    assert_eq!(p.key, "(syntax)");
    assert_eq!(p.line, Some(1));
}

#[test]
fn unwritable_store_directory_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // A path under a regular file can never be created, whatever our privileges.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let text = format!(
        "[store]\npath = \"{}/sub/kiosk.sqlite\"\n",
        blocker.display()
    );
    let p = only_problem(load_text(&text, dir.path()).unwrap_err());
    assert_eq!(p.key, "store.path");
    assert_eq!(p.line, Some(2));
    assert!(p.message.contains("is not writable"), "{}", p.message);
}

#[test]
fn unwritable_data_dir_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = load(LoadOptions {
        file: None,
        data_dir: Some(&blocker.join("data")),
    })
    .unwrap_err();
    let p = only_problem(err);
    assert_eq!(p.key, "kiosk.data_dir");
    assert!(p.fix.contains("--data-dir"));
}

#[test]
fn semantic_problems_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[api]
listen = "0.0.0.0:8480"

[devices.idcard]
mode = "serial"
baud = 12345

[token]
provider = "pkcs11"
usb_ids = ["096e-0703"]

[hq]
mode = "remote"
url = "http://hq.example"
"#;
    let err = load_text(text, dir.path()).unwrap_err();
    let ConfigError::Invalid(problems) = err else {
        panic!("expected Invalid");
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "api.listen",
        "devices.idcard.port",
        "devices.idcard.baud",
        "token.module",
        "token.usb_ids[0]",
        "hq.url",
        "hq.ca_cert",
        "hq.client_cert",
        "hq.record_key",
    ] {
        assert!(keys.contains(&k), "missing {k} in {keys:?}");
    }
    let listen = problems.iter().find(|p| p.key == "api.listen").unwrap();
    assert_eq!(listen.line, Some(3));
    let baud = problems
        .iter()
        .find(|p| p.key == "devices.idcard.baud")
        .unwrap();
    assert_eq!(baud.line, Some(7));
}

#[test]
fn effective_config_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load_text(
        "[token]\nsoft_secret = \"a-very-secret-passphrase-42\"\n",
        dir.path(),
    )
    .unwrap();
    assert_eq!(
        loaded.config.token.soft_secret.expose(),
        "a-very-secret-passphrase-42"
    );
    let shown = loaded.effective_toml();
    assert!(!shown.contains("a-very-secret-passphrase-42"));
    assert!(shown.contains("soft_secret = \"<redacted>\""), "{shown}");
    assert!(!format!("{:?}", loaded.config).contains("a-very-secret"));
}

/// A UKEY that arrives must reach the screens within a second: a slot poll slower than that,
/// or no poll at all, is refused with the key named.
#[test]
fn ukey_poll_interval_is_at_most_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load_text("[ukey]\npoll_ms = 250\n", dir.path()).unwrap();
    assert_eq!(loaded.config.ukey.poll_ms, 250);
    assert_eq!(Config::default().ukey.poll_ms, 500);
    for bad in ["0", "1001"] {
        let err = load_text(&format!("[ukey]\npoll_ms = {bad}\n"), dir.path()).unwrap_err();
        let ConfigError::Invalid(problems) = err else {
            panic!("expected Invalid");
        };
        assert!(problems.iter().any(|p| p.key == "ukey.poll_ms"), "{bad}");
    }
}

#[test]
fn usb_ids_parse() {
    assert_eq!(validate::parse_usb_id("096e:0703"), Some((0x096e, 0x0703)));
    assert_eq!(validate::parse_usb_id("96e:0703"), None);
    assert_eq!(validate::parse_usb_id("zzzz:0703"), None);
}

#[test]
fn relative_data_dir_in_a_file_is_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kioskd.toml");
    std::fs::write(&file, "[kiosk]\ndata_dir = \"state\"\n").unwrap();
    let loaded = load(LoadOptions {
        file: Some(&file),
        data_dir: None,
    })
    .unwrap();
    assert_eq!(loaded.data_dir(), dir.path().join("state"));
}

/// Threat: a kiosk put into service on the published demo defaults (soft token, built-in
/// secrets, demo staff CA, simulated devices, stand-ins, local HQ). Production mode refuses
/// every one of them at once, each with its key and fix.
#[test]
fn production_mode_refuses_every_demo_default_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_text("[kiosk]\nmode = \"production\"\n", dir.path()).unwrap_err();
    let ConfigError::Invalid(problems) = err else {
        panic!("expected Invalid");
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "token.provider",
        "ukey.provider",
        "token.soft_secret",
        "token.device_pin",
        "token.device_so_pin",
        "ukey.soft_secret",
        "ukey.factory_so_pin",
        "staff.ca_cert",
        "staff.policy_oid",
        "staff.demo_pin",
        "devices.idcard.mode",
        "devices.fingerprint.mode",
        "devices.camera.mode",
        "verifiers.carrier_3factor.url",
        "hq.mode",
        "ca.url",
    ] {
        assert!(keys.contains(&k), "missing {k} in {keys:?}");
    }
    for p in &problems {
        assert!(p.file.is_some() && !p.fix.is_empty(), "{p}");
    }
    // The same file in demo mode is the defaults, announced rather than refused.
    let loaded = load_text("[kiosk]\nmode = \"demo\"\n", dir.path()).unwrap();
    assert_eq!(demo_features(&loaded.config).len(), problems.len());
}

fn private_file(dir: &Path, name: &str, value: &str, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, value).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// Threat: production secrets written into the TOML (readable by whoever reads the config,
/// printed by tools) or left in world-readable files. They come from private files or systemd
/// credentials only.
#[test]
fn production_secrets_come_from_private_files_or_credentials_never_the_toml() {
    let dir = tempfile::tempdir().unwrap();
    let module = private_file(dir.path(), "module.so", "", 0o644);
    let staff_ca = private_file(dir.path(), "staff-ca.pem", "", 0o644);
    let pin = private_file(dir.path(), "device.pin", "246810\n", 0o600);
    let loose = private_file(dir.path(), "loose.pin", "12345678", 0o644);
    let base = format!(
        r#"
[kiosk]
mode = "production"
[devices.idcard]
mode = "serial"
port = "/dev/ttyUSB0"
[devices.fingerprint]
mode = "serial"
port = "/dev/ttyUSB1"
[devices.camera]
mode = "v4l2"
device = "/dev/video0"
detector_model = "{m}"
[verifiers.carrier_3factor]
url = "https://carrier.example"
[hq]
mode = "remote"
url = "https://hq.example"
ca_cert = "{m}"
client_cert = "{m}"
record_key = "{m}"
[ca]
url = "https://ca.example"
[staff]
ca_cert = "{ca}"
policy_oid = "1.2.3.4.5"
[ukey]
provider = "pkcs11"
module = "{m}"
"#,
        m = module.display(),
        ca = staff_ca.display()
    );
    // Secrets inline in the TOML: refused, with the file/credential fix.
    let inline = format!(
        "{base}factory_so_pin = \"87654321\"\n[token]\nprovider = \"pkcs11\"\nmodule = \"{}\"\ndevice_pin = \"246810\"\n",
        module.display()
    );
    let ConfigError::Invalid(problems) = load_text(&inline, dir.path()).unwrap_err() else {
        panic!("expected Invalid");
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["token.device_pin", "ukey.factory_so_pin"],
        "{problems:?}"
    );
    assert!(
        problems[0]
            .message
            .contains("written in the configuration file")
    );
    assert!(problems[0].fix.contains("LoadCredential="));
    // A world-readable secret file is refused too.
    let permissive = format!(
        "{base}factory_so_pin = {{ file = \"{}\" }}\n[token]\nprovider = \"pkcs11\"\nmodule = \"{}\"\ndevice_pin = {{ file = \"{}\" }}\n",
        loose.display(),
        module.display(),
        pin.display()
    );
    let ConfigError::Invalid(problems) = load_text(&permissive, dir.path()).unwrap_err() else {
        panic!("expected Invalid");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "ukey.factory_so_pin");
    assert!(problems[0].fix.contains("chmod 600"));
    // From a private file and a systemd credential: accepted, values read, never printed.
    let creds = tempfile::tempdir().unwrap();
    private_file(creds.path(), "factory-so-pin", "87654321", 0o400);
    // SAFETY: set before any thread of this test reads the environment; only this test
    // uses CREDENTIALS_DIRECTORY.
    unsafe { std::env::set_var("CREDENTIALS_DIRECTORY", creds.path()) };
    let good = format!(
        "{base}factory_so_pin = {{ credential = \"factory-so-pin\" }}\n[token]\nprovider = \"pkcs11\"\nmodule = \"{}\"\ndevice_pin = {{ file = \"{}\" }}\n",
        module.display(),
        pin.display()
    );
    let loaded = load_text(&good, dir.path()).unwrap();
    assert_eq!(loaded.config.token.device_pin.expose(), "246810");
    assert_eq!(loaded.config.ukey.factory_so_pin.expose(), "87654321");
    let shown = loaded.effective_toml();
    assert!(
        !shown.contains("246810") && !shown.contains("87654321"),
        "{shown}"
    );
    assert!(shown.contains("factory-so-pin"), "{shown}");
    // The effective configuration parses again.
    parse(&shown, None).unwrap();
}
