//! Hot-plug: a UKEY that arrives or leaves while kioskd runs reaches the applicant's event
//! stream (`GET /v1/sessions/{id}/events`: present or absent only) and the staff console's
//! (`GET /v1/staff/events`: which token) within a second. The UKEYs sit in the project's
//! PKCS#11 module, whose idle slots re-read their files: a token initialised by another
//! process appears, a slot file removed is a UKEY pulled. (SoftHSM2 cannot play this part:
//! it reads its token directory at `C_Initialize` only, so a token `softhsm2-util` creates
//! while kioskd runs never shows in `C_GetSlotList`.) This machine's kernel shows no USB, so
//! the slot poller (`[ukey] poll_ms`, default 500 ms) is what sees them.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::Kioskd;
use serde_json::Value;

const LABEL: &str = "HOLDER-UKEY-7";

/// One server-sent event: its name and JSON data.
type Sse = (String, Value);

/// Reads `path`'s server-sent events with `bearer` on a thread of its own.
fn follow(k: &Kioskd, path: &str, bearer: &str) -> Receiver<Sse> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into();
    let resp = agent
        .get(format!("{}{path}", k.base))
        .header("Authorization", format!("Bearer {bearer}"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{path}");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut event = String::new();
        for line in BufReader::new(resp.into_body().into_reader()).lines() {
            let Ok(line) = line else { return };
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let data = serde_json::from_str(data).unwrap_or(Value::Null);
                if tx.send((event.clone(), data)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Waits up to `within` for an event `name` whose data satisfies `matches`; every event seen
/// on the way is appended to `seen`. Returns how long it took.
fn expect(
    rx: &Receiver<Sse>,
    seen: &mut Vec<Sse>,
    name: &str,
    within: Duration,
    matches: impl Fn(&Value) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let left = within.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok((event, data)) => {
                let hit = event == name && matches(&data);
                seen.push((event, data));
                if hit {
                    return start.elapsed();
                }
            }
            Err(_) => panic!("no {name} event within {within:?}; saw {seen:?}"),
        }
    }
}

/// The module's slot files and their contents.
fn slot_files(store: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("slot-") && name.ends_with(".cbor")
        })
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

/// The threat: a UKEY pulled mid-application (or a new one inserted) that the screens do not
/// learn of, so the applicant waits on a page that says "insert your UKEY" for one that is
/// there, or staff hand over a UKEY the console does not show. Both streams must learn of an
/// arrival and a removal within a second, the applicant's without the token's label or serial.
#[test]
fn a_ukey_inserted_and_pulled_while_kioskd_runs_reaches_both_event_streams_within_a_second() {
    let module = common::softtoken_module();
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("softtoken");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(
        store.join("softtoken.toml"),
        "slots = 2\nprofile = \"sansec\"\nkdf_iterations = 5000\n",
    )
    .unwrap();
    let data = root.path().join("data");
    let config = format!(
        // A UKEY model's USB id is watched too: where the kernel shows no USB (this machine),
        // the slot poller still sees every UKEY.
        "[kiosk]\nid = \"kiosk-hotplug\"\n\n[token]\nusb_ids = [\"096e:0703\"]\n\n\
         [ukey]\nprovider = \"pkcs11\"\nmodule = \"{}\"\n\
         vendor_profile = \"sansec\"\nalgorithm = \"sm2\"\n",
        module.display()
    );
    let k = Kioskd::start_with_env(&data, &config, &[("KIOSK_SOFTTOKEN_DIR", &store)]);
    let staff = common::staff_login(&k);
    let (id, token) = common::open_session(&k, "cert_application");
    let applicant = follow(&k, &format!("/v1/sessions/{id}/events"), &token);
    let console = follow(&k, "/v1/staff/events", &staff);
    let (mut seen_applicant, mut seen_staff) = (Vec::new(), Vec::new());
    let ten = Duration::from_secs(10);
    expect(&applicant, &mut seen_applicant, "hello", ten, |_| true);
    expect(&console, &mut seen_staff, "hello", ten, |_| true);
    let blank = slot_files(&store);

    // Insert: another process initialises a token in a free slot of the module.
    let init = Command::new(env!("CARGO_BIN_EXE_kioskctl"))
        .args(["token", "init", "--module"])
        .arg(&module)
        .args(["--token", LABEL])
        .env("KIOSK_SOFTTOKEN_DIR", &store)
        .env("KIOSK_SO_PIN", "87654321")
        .env("KIOSK_PIN", "135790")
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let inserted = Instant::now();
    let second = Duration::from_secs(1);
    let present = |want: bool| move |d: &Value| d["device"] == "ukey" && d["present"] == want;
    let to_applicant = expect(
        &applicant,
        &mut seen_applicant,
        "device",
        second,
        present(true),
    );
    let arrival = expect(&console, &mut seen_staff, "token", second, |d| {
        d["present"] == true && d["label"] == LABEL && d["serial"].is_string()
    });
    assert!(inserted.elapsed() < second + Duration::from_millis(100));
    let serial = seen_staff.last().unwrap().1["serial"].clone();
    expect(&console, &mut seen_staff, "device", second, present(true));
    eprintln!("arrival: applicant {to_applicant:?}, staff {arrival:?}");

    // Pull: the slot's file goes away.
    let changed: Vec<PathBuf> = slot_files(&store)
        .into_iter()
        .filter(|f| !blank.contains(f))
        .map(|(path, _)| path)
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    std::fs::remove_file(&changed[0]).unwrap();
    let to_applicant = expect(
        &applicant,
        &mut seen_applicant,
        "device",
        second,
        present(false),
    );
    let removal = expect(&console, &mut seen_staff, "token", second, |d| {
        d["present"] == false && d["label"] == LABEL && d["serial"] == serial
    });
    expect(&console, &mut seen_staff, "device", second, present(false));
    eprintln!("removal: applicant {to_applicant:?}, staff {removal:?}");

    // The applicant's stream never named the token.
    for (event, data) in &seen_applicant {
        assert_ne!(event, "token", "{seen_applicant:?}");
        let text = data.to_string();
        assert!(
            !text.contains(LABEL) && !text.contains(serial.as_str().unwrap()),
            "the applicant's stream names the token: {text}"
        );
    }
    // The staff stream ends with the staff session (and does not keep it alive).
    let (status, _) = k.call("POST", "/v1/staff/logout", Some(&staff), None);
    assert_eq!(status, 204);
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match console.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(event) => seen_staff.push(event),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("the staff stream outlived the staff session")
            }
        }
    }
    // A staff stream without a staff token is refused.
    let (status, body) = k.call("GET", "/v1/staff/events", Some("not-staff"), None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "staff_unauthorized");
    let logs = k.stop();
    assert!(
        logs.iter()
            .any(|l| l.contains("polling the UKEY slot list")),
        "the poller did not start"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("watching USB hot-plug") || l.contains("no USB hot-plug events")),
        "token.usb_ids was not acted on"
    );
    assert!(
        !logs.iter().any(|l| l.contains(LABEL)),
        "the token's label reached the logs"
    );
}
