//! `kioskctl staff` against a real kioskd over its Unix socket (status, audit, outbox, rights,
//! reveal, batch issuance), its exit codes (1: kioskd refused, with the API's code; 2: kioskd
//! unreachable, naming the socket), and the store lock: a second kioskd on the same store and
//! `kioskctl token` aimed at the running daemon's device token are refused.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{
    KIOSKD, Kioskd, consent, open_session, session_with_card, softhsm_conf, softhsm_module,
};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::types::AuthPin;
use firmware_interfaces::sim::fixtures;
use serde_json::{Value, json};

const KIOSKCTL: &str = env!("CARGO_BIN_EXE_kioskctl");

/// Runs kioskctl with `args` and the staff PIN `pin` (and extra environment).
fn kioskctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(KIOSKCTL)
        .args(args)
        .env_remove("KIOSKD_CONFIG")
        .env_remove("KIOSK_STAFF_TOKEN")
        .env_remove("KIOSK_PIN")
        .envs(env.iter().copied())
        .output()
        .expect("kioskctl runs")
}

fn staff(socket: &Path, args: &[&str]) -> Output {
    let socket = socket.to_str().unwrap();
    let all = [&["staff", "--socket", socket][..], args].concat();
    kioskctl(&all, &[("KIOSK_PIN", "staff-demo-pin")])
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn json_of(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).expect("--json prints JSON")
}

/// Card seeds whose ID number ends in an even digit: the stand-in carrier check answers
/// `match` for them, so their holders verify.
fn verifiable_seeds() -> impl Iterator<Item = u32> {
    (10..100).filter(|&seed| {
        let id = fixtures::resident_text(seed)
            .identity_number()
            .expose()
            .to_string();
        id.chars()
            .last()
            .and_then(|c| c.to_digit(10))
            .is_some_and(|d| d % 2 == 0)
    })
}

/// A rights request filed by a verified requester; returns its id.
fn file_rights_request(k: &Kioskd, seed: u32) -> String {
    let (sid, token) = session_with_card(k, "rights_request", seed);
    consent(k, &sid, &token, json!(["mobile"]));
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{sid}/verification"),
        Some(&token),
        Some(json!({ "method": "carrier_3factor", "mobile": "13900139000" })),
    );
    assert_eq!(status, 200, "{body}");
    let (status, filed) = k.call(
        "POST",
        &format!("/v1/sessions/{sid}/rights-requests"),
        Some(&token),
        Some(json!({"kind": "deletion"})),
    );
    assert_eq!(status, 201, "{filed}");
    assert_eq!(
        k.call("DELETE", &format!("/v1/sessions/{sid}"), Some(&token), None)
            .0,
        204
    );
    filed["request_id"].as_str().unwrap().to_owned()
}

#[test]
fn staff_desk_commands_go_through_the_running_kioskd() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let k = Kioskd::start(&data, "");
    let socket = data.join("kioskd.sock");

    let status = ok(&staff(&socket, &["status"]));
    assert!(status.contains("audit log: intact"), "{status}");
    assert!(status.contains("rights requests open: 0"), "{status}");
    // The socket also comes from the configuration's data directory.
    let out = kioskctl(
        &[
            "staff",
            "--data-dir",
            data.to_str().unwrap(),
            "--json",
            "status",
        ],
        &[("KIOSK_PIN", "staff-demo-pin")],
    );
    let st = json_of(&out);
    assert_eq!(st["audit"]["intact"], true, "{st}");
    assert!(st["sync"]["backlog"].is_u64(), "{st}");

    let audit = ok(&staff(&socket, &["audit", "--limit", "50"]));
    assert!(audit.starts_with("audit log intact"), "{audit}");
    assert!(
        audit.contains("staff.login") && audit.contains("staff.status"),
        "{audit}"
    );
    let page = json_of(&staff(&socket, &["--json", "audit", "--limit", "3"]));
    assert_eq!(page["entries"].as_array().unwrap().len(), 3, "{page}");
    assert_eq!(page["verification"]["intact"], true);

    // The outbox backlog comes from health, without a login.
    let out = kioskctl(
        &[
            "staff",
            "--socket",
            socket.to_str().unwrap(),
            "outbox",
            "status",
        ],
        &[],
    );
    let outbox = ok(&out);
    assert!(
        outbox.starts_with("outbox: ") && outbox.contains("waiting for HQ"),
        "{outbox}"
    );
    let (_, health) = k.call("GET", "/v1/health", None, None);
    let backlog = json_of(&kioskctl(
        &[
            "staff",
            "--socket",
            socket.to_str().unwrap(),
            "--json",
            "outbox",
            "status",
        ],
        &[],
    ));
    assert_eq!(backlog["backlog"], health["sync_backlog"]);

    // Rights requests: refused on a listed ground, completed; a second decision is refused by
    // kioskd (exit 1, its code).
    let mut seeds = verifiable_seeds();
    let first = file_rights_request(&k, seeds.next().unwrap());
    let second = file_rights_request(&k, seeds.next().unwrap());
    let listed = json_of(&staff(&socket, &["--json", "status"]));
    assert_eq!(listed["rights_requests"].as_array().unwrap().len(), 2);
    let out = ok(&staff(
        &socket,
        &["rights", "refuse", &first, "--ground", "abuse_of_rights"],
    ));
    assert!(
        out.contains(&first) && out.contains("refused") && out.contains("abuse_of_rights"),
        "{out}"
    );
    let out = staff(
        &socket,
        &["rights", "refuse", &second, "--ground", "because"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("kioskd refused: "),
        "{}",
        text(&out.stderr)
    );
    let done = json_of(&staff(&socket, &["--json", "rights", "complete", &second]));
    assert_eq!(done["request_id"], second.as_str());
    assert_eq!(done["state"], "done", "{done}");
    let out = staff(&socket, &["rights", "complete", &second]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    // Reveal: the masked list, then one clear value.
    let (sid, token) = session_with_card(&k, "cert_application", 11);
    let clear_id = fixtures::resident_text(11)
        .identity_number()
        .expose()
        .to_string();
    let subjects = ok(&staff(&socket, &["subjects"]));
    assert!(!subjects.contains(&clear_id), "masked only: {subjects}");
    let list = json_of(&staff(&socket, &["--json", "subjects"]));
    let subject = list.as_array().unwrap().last().unwrap()["subject_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = ok(&staff(
        &socket,
        &[
            "reveal",
            "--subject",
            &subject,
            "--item",
            "id_number",
            "--reason",
            "applicant asked to check the number",
        ],
    ));
    assert_eq!(shown.trim(), clear_id);
    let _ = (sid, token);

    // A wrong PIN: kioskd's refusal, exit 1 with the API's code.
    let out = kioskctl(
        &["staff", "--socket", socket.to_str().unwrap(), "status"],
        &[("KIOSK_PIN", "000000")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("wrong_pin"),
        "{}",
        text(&out.stderr)
    );

    // Bad input never reaches kioskd.
    let out = staff(&socket, &["batch", "issue", "--pin-mode", "given"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("KIOSK_NEW_PIN"));

    k.stop();
    // Every CLI session logged in and out through kioskd, and kioskd audited it.
    let conn = rusqlite::Connection::open(data.join("kiosk.sqlite")).unwrap();
    let count = |action: &str| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM audit_log WHERE action = ?1",
            [action],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert!(count("staff.login") >= 10);
    assert_eq!(count("staff.login"), count("staff.logout"));
    assert_eq!(count("staff.reveal"), 1);
    assert!(count("staff.login_failed") >= 1);
}

#[test]
fn an_unreachable_kioskd_is_exit_2_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-kioskd.sock");
    for args in [&["status"][..], &["outbox", "status"][..]] {
        let out = staff(&socket, args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains("kioskd is not running? cannot connect to")
                && err.contains(socket.to_str().unwrap()),
            "{err}"
        );
    }
}

#[test]
fn staff_issue_a_batch_of_blank_ukeys_and_see_it() {
    let dir = tempfile::tempdir().unwrap();
    let conf = softhsm_conf(dir.path());
    let module = softhsm_module();
    // SAFETY: set before the module loads and before kioskd (which inherits it) starts; the
    // other tests of this binary use soft tokens only and ignore it.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let ctx = Pkcs11::new(&module).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    for i in 0..2 {
        // The factory state: initialised with the factory SO PIN, user PIN never set.
        let free = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| !ctx.get_token_info(*s).unwrap().token_initialized())
            .expect("SoftHSM2 offers a free slot");
        ctx.init_token(free, &AuthPin::from("factory-so-1"), &format!("blank-{i}"))
            .unwrap();
    }
    ctx.finalize().unwrap();
    let config = format!(
        "[ukey]\nprovider = \"pkcs11\"\nmodule = \"{}\"\nfactory_so_pin = \"factory-so-1\"\n",
        module.display()
    );
    let data = dir.path().join("data");
    let k = Kioskd::start_with_env(&data, &config, &[("SOFTHSM2_CONF", &conf)]);
    let socket = data.join("kioskd.sock");

    let tokens = json_of(&staff(&socket, &["--json", "tokens"]));
    let blank = tokens
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["blank"] == true)
        .count();
    assert_eq!(blank, 2, "{tokens}");

    let batch = json_of(&staff(
        &socket,
        &[
            "--json",
            "batch",
            "issue",
            "--label-prefix",
            "UKEY",
            "--algorithm",
            "p256",
            "--wait",
        ],
    ));
    assert_eq!(batch["state"], "done", "{batch}");
    let issued = batch["tokens"].as_array().unwrap();
    assert_eq!(issued.len(), 2, "{batch}");
    for t in issued {
        assert_eq!(t["state"], "done", "{t}");
        assert_eq!(
            t["label"],
            format!("UKEY-{}", t["serial"].as_str().unwrap())
        );
        let pin = t["initial_pin"]
            .as_str()
            .expect("the initial PIN is shown once");
        assert!(pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit()));
    }
    let id = batch["batch_id"].as_str().unwrap();
    let shown = ok(&staff(&socket, &["batch", "show", id]));
    assert!(shown.starts_with(&format!("batch {id} done")), "{shown}");
    assert!(
        !shown.contains("initial PIN"),
        "PINs are shown once: {shown}"
    );
    let out = staff(&socket, &["batch", "show", "no-such-batch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("batch_not_found"));
    // Nothing blank is left: kioskd refuses a second batch with its code.
    let out = staff(&socket, &["batch", "issue"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no_blank_tokens"),
        "{}",
        text(&out.stderr)
    );
    k.stop();
}

#[test]
fn the_running_daemons_store_and_device_token_are_refused_to_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let k = Kioskd::start(&data, "");
    let pid = k.child.id();

    // A second kioskd on the same store refuses to start and names the first.
    let second = Command::new(KIOSKD)
        .arg("--config")
        .arg(data.join("kioskd-test.toml"))
        .arg("--data-dir")
        .arg(&data)
        .env("KIOSKD_API_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = text(&second.stderr);
    assert!(
        err.contains(&format!("another kioskd (pid {pid}) holds")) && err.contains("kioskd.lock"),
        "{err}"
    );
    // ... and left the first one's socket alone.
    let _ = open_session(&k, "cert_application");
    assert!(ok(&staff(&data.join("kioskd.sock"), &["status"])).contains("intact"));

    // kioskctl token on the daemon's device token is refused while it runs.
    let soft = data.join("soft-token");
    let args = [
        "token",
        "pubkey",
        "--module",
        "soft",
        "--soft-dir",
        soft.to_str().unwrap(),
        "--token",
        "kiosk-device",
        "--key",
        "device-key",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let env = [("KIOSK_PIN", "kiosk-device-pin")];
    let out = kioskctl(&args, &env);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "kioskd (pid {pid}) holds the device token kiosk-device; stop it first or use `kioskctl staff`"
        )),
        "{err}"
    );
    // Another token in the same directory is not the daemon's: not refused for that reason.
    let other = [
        &args[..6],
        &["--token", "someone-else", "--key", "k"],
        &args[10..],
    ]
    .concat();
    let out = kioskctl(&other, &env);
    assert!(!text(&out.stderr).contains("holds the device token"));

    k.stop();
    // Once kioskd has stopped, the technician may use the token directly.
    let out = kioskctl(&args, &env);
    assert!(
        ok(&out).starts_with("-----BEGIN PUBLIC KEY-----"),
        "{}",
        text(&out.stderr)
    );
}
