//! kioskd in its embedded default (`hq.mode = "local"`) with the real hq-ingest child and
//! PostgreSQL: synthetic applicants filled into the outbox arrive at HQ exactly once, only as
//! the catalog allows, the backlog drains to 0 and the kiosk keeps no personal data.

mod common;
mod sync_support;

use std::time::Duration;

use common::Kioskd;
use sync_support::*;

const CONFIG: &str = r#"
[kiosk]
id = "kiosk-sync-local"

[hq]
mode = "local"
batch_records = 100
retry_min_ms = 100
retry_max_ms = 1000
"#;

#[test]
fn local_hq_receives_every_record_once_and_the_kiosk_keeps_nothing() {
    let hq_bin = hq_ingest();
    assert!(hq_bin.is_file());
    let dir = data_dir();
    let kiosk = Kioskd::start(dir.path(), CONFIG);
    wait_for("the local HQ", Duration::from_secs(120), || {
        kiosk.logs().iter().any(|l| l.contains("local HQ ready"))
    });
    fill(dir.path(), 500, 0, None);
    assert!(backlog(&kiosk) > 0, "records wait in the outbox");
    wait_for("the outbox to drain", Duration::from_secs(120), || {
        backlog(&kiosk) == 0
    });
    let rows = hq_records(&local_hq_db(dir.path()), "kiosk-sync-local");
    let applicants = assert_exactly_once(&rows, 500);
    assert_only_allowed(
        &applicants,
        &dir.path().join("hq-local/pki/hq-record-key.hex"),
    );
    wait_for(
        "the purge after the last ack",
        Duration::from_secs(30),
        || kiosk_personal_fields(dir.path()) == 0,
    );
    kiosk.stop();
}

/// The local HQ stops by itself on SIGTERM while its parent still holds its stdin open (how
/// it notices a parent that died). It used to hang in a stdin read the runtime waited for,
/// until kioskd's grace ran out and it killed the child.
#[test]
fn the_local_hq_stops_on_sigterm_while_its_parent_lives() {
    let hq_bin = hq_ingest();
    let dir = data_dir();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let signer = records::signing::SoftSigner::generate_p256();
        let verifier = records::public_keys::verifier_to_json(&signer.verifier());
        let hq = kioskd::sync::local_hq::LocalHqProcess::start(
            &hq_bin,
            dir.path(),
            "kiosk-stop",
            &verifier,
        )
        .await
        .expect("the local HQ starts");
        // Generous: the point is that it exits at all, not how fast.
        let status = hq.stop(Duration::from_secs(60)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "the local HQ exits on SIGTERM by itself (status {status:?}; None: it had to be killed)"
        );
    });
}

/// kioskd killed with `kill -9` and restarted at once (what `Restart=on-failure` does): the
/// new local HQ takes the kept PostgreSQL cluster over, and the crashed local HQ's watchdog,
/// waking after its owner died, leaves alone the server it did not start. It used to run
/// `pg_ctl stop` on it, and every CA request then answered `ca_unavailable`.
#[test]
fn a_crashed_local_hqs_watchdog_does_not_stop_the_server_its_successor_started() {
    use std::io::BufRead as _;
    let hq_bin = hq_ingest();
    let dir = data_dir();
    let signer = records::signing::SoftSigner::generate_p256();
    let verifier = records::public_keys::verifier_to_json(&signer.verifier());
    let local = dir.path().join("hq-local");
    std::fs::create_dir_all(&local).unwrap();
    let verifier_file = local.join("kiosk-verifier.json");
    std::fs::write(&verifier_file, &verifier).unwrap();
    // The first owner, as kioskd starts it; killed with SIGKILL once ready.
    let mut first = std::process::Command::new(&hq_bin)
        .arg("local")
        .arg("--dir")
        .arg(&local)
        .args(["--kiosk-id", "kiosk-takeover", "--kiosk-verifier"])
        .arg(&verifier_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(first.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.contains("url"), "first local HQ ready: {ready:?}");
    let pid_file = local.join("pg/data/postmaster.pid");
    let pid_of = || -> i32 {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse().ok())
            .unwrap_or(0)
    };
    let first_server = pid_of();
    assert!(first_server > 0);
    // Its watchdog (a fork of it) is paused across the crash and the takeover, so that it
    // wakes after the successor's server is up, whatever the timing of this machine.
    let watchdogs = children_running(first.id(), &hq_bin);
    assert!(!watchdogs.is_empty(), "the first local HQ has a watchdog");
    for w in &watchdogs {
        nix::sys::signal::kill(*w, nix::sys::signal::Signal::SIGSTOP).unwrap();
    }
    first.kill().unwrap();
    first.wait().unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let second = kioskd::sync::local_hq::LocalHqProcess::start(
            &hq_bin,
            dir.path(),
            "kiosk-takeover",
            &verifier,
        )
        .await
        .expect("the successor takes the cluster over");
        let second_server = pid_of();
        assert!(second_server > 0 && second_server != first_server);
        for w in &watchdogs {
            nix::sys::signal::kill(*w, nix::sys::signal::Signal::SIGCONT).unwrap();
        }
        // The old watchdog polls its parent every second; give it time to wake and act.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(
            pid_of(),
            second_server,
            "the successor's server still holds the cluster"
        );
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(second_server), None).is_ok(),
            "the successor's postmaster is alive"
        );
        let status = second.stop(Duration::from_secs(60)).await;
        assert!(status.is_some_and(|s| s.success()));
    });
}

/// Processes whose parent is `parent` and whose program is `exe` (a forked watchdog).
fn children_running(parent: u32, exe: &std::path::Path) -> Vec<nix::unistd::Pid> {
    let exe = std::fs::canonicalize(exe).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...: the fields after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            ppid == Some(parent)
                && std::fs::read_link(format!("/proc/{pid}/exe"))
                    .ok()
                    .as_deref()
                    == Some(&exe)
        })
        .map(nix::unistd::Pid::from_raw)
        .collect()
}
