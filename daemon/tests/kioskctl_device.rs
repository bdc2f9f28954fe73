//! `kioskctl device` against simulated modules on real pseudo-terminals: the
//! ID card as one masked JSON object, the fingerprint module's parameters, and
//! a one-line error with exit status 2 when nothing answers.

use std::process::Command;

use drivers::sim::{spawn_fingerprint_pty, spawn_idcard_pty};
use firmware_interfaces::sam::command::SamBaud;
use firmware_interfaces::sim::fixtures;

const KIOSKCTL: &str = env!("CARGO_BIN_EXE_kioskctl");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(KIOSKCTL).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn reads_a_card_as_masked_json_at_a_probed_baud() {
    let sim = spawn_idcard_pty(SamBaud::B9600).unwrap();
    let text = fixtures::resident_text(5);
    sim.present_card(fixtures::card(text.clone(), 5));
    let port = sim.path().to_str().unwrap().to_string();
    let (code, stdout, stderr) = run(&["device", "idcard", "read", "--port", &port]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    for key in [
        "card_type",
        "name",
        "sex",
        "nation",
        "birth_date",
        "address",
        "id_number",
        "authority",
        "valid_from",
        "valid_to",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["birth_date"], "1990-01-02");
    let id = text.identity_number().expose().to_string();
    assert!(
        !stdout.contains(&id) && !stdout.contains(text.name().expose()),
        "unmasked: {stdout}"
    );
    assert!(v["id_number"].as_str().unwrap().ends_with(&id[17..]));
}

#[test]
fn prints_the_fingerprint_module_parameters() {
    let sim = spawn_fingerprint_pty(300, 6).unwrap();
    let port = sim.path().to_str().unwrap().to_string();
    let (code, stdout, stderr) = run(&["device", "fingerprint", "info", "--port", &port]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["capacity"], 300);
    assert_eq!(v["baud"], 57600);
    assert!(v["packet_size"].as_u64().unwrap() >= 32);
}

#[test]
fn no_module_is_one_line_naming_the_port_and_exit_two() {
    // A pty whose other side nobody speaks the protocol on.
    let quiet = spawn_fingerprint_pty(10, 6).unwrap();
    let port = quiet.path().to_str().unwrap().to_string();
    let (code, _, stderr) = run(&[
        "device",
        "idcard",
        "read",
        "--port",
        &port,
        "--timeout-ms",
        "200",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&port), "{stderr}");
    let (code, _, stderr) = run(&[
        "device",
        "fingerprint",
        "info",
        "--port",
        "/dev/does-not-exist",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/dev/does-not-exist"), "{stderr}");
}

mod common;

#[test]
fn a_reader_port_that_a_running_kioskd_holds_is_refused_naming_it() {
    let sim = spawn_idcard_pty(SamBaud::B115200).unwrap();
    sim.present_card(fixtures::card(fixtures::resident_text(6), 6));
    let port = sim.path().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let k = common::Kioskd::start(
        &data,
        &format!("[devices.idcard]\nmode = \"serial\"\nport = \"{port}\"\n"),
    );
    let pid = k.child.id();
    let config = data.join("kioskd-test.toml");
    let args = [
        "device",
        "idcard",
        "read",
        "--port",
        &port,
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stderr.contains(&format!(
            "kioskd (pid {pid}) holds the ID-card reader {port}; stop it first"
        )),
        "{stderr}"
    );
    k.stop();
    // Once kioskd has stopped, the technician reads the card directly.
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("id_number"), "{stdout}");
}
