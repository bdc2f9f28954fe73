//! The real `kioskd` binary: readiness through a fake `NOTIFY_SOCKET`, clean exit
//! on SIGTERM, `check-config` on good and bad files.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const KIOSKD: &str = env!("CARGO_BIN_EXE_kioskd");

fn spawn_kioskd(data_dir: &Path, notify: &Path) -> Child {
    Command::new(KIOSKD)
        .arg("--data-dir")
        .arg(data_dir)
        .env("KIOSKD_API_ADDR", "127.0.0.1:0")
        .env("NOTIFY_SOCKET", notify)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kioskd starts")
}

/// Wait for a datagram containing `needle`, up to `deadline`.
fn wait_for_notify(sock: &UnixDatagram, needle: &str, deadline: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == needle);
                seen.push(msg);
                if hit {
                    return seen;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break;
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    panic!("no {needle:?} within {deadline:?}; saw {seen:?}");
}

fn wait_exit(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < deadline,
            "kioskd did not exit within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn reports_ready_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    let mut child = spawn_kioskd(&dir.path().join("data"), &notify_path);

    let seen = wait_for_notify(&sock, "READY=1", Duration::from_secs(30));
    assert!(seen.iter().any(|m| m.contains("STATUS=")), "{seen:?}");
    assert!(dir.path().join("data/kiosk.sqlite").exists());

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(5));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
    assert!(stderr.contains("store flushed"), "{stderr}");
    wait_for_notify(&sock, "STOPPING=1", Duration::from_secs(1));
    // The Unix socket is removed on a clean stop.
    assert!(!dir.path().join("data/kioskd.sock").exists());
}

#[test]
fn refuses_to_start_on_a_corrupt_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("kiosk.sqlite"), vec![0xa5; 4096]).unwrap();
    let out = Command::new(KIOSKD)
        .arg("--data-dir")
        .arg(&data)
        .env("KIOSKD_API_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a usable kioskd database"), "{stderr}");
    assert_eq!(
        std::fs::read(data.join("kiosk.sqlite")).unwrap(),
        vec![0xa5; 4096]
    );
}

#[test]
fn check_config_prints_problems_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[api]\nlisten = \"0.0.0.0:80\"\n[store]\ncolour = 1\n",
    )
    .unwrap();
    let out = Command::new(KIOSKD)
        .args(["check-config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:4: store.colour: unknown field"),
        "{stderr}"
    );
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("good.toml");
    std::fs::write(
        &file,
        "[token]\nsoft_secret = \"correct-horse-battery-staple\"\n",
    )
    .unwrap();
    let out = Command::new(KIOSKD)
        .args(["check-config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[devices.idcard]"), "{stdout}");
    assert!(stdout.contains("soft_secret = \"<redacted>\""), "{stdout}");
    assert!(!stdout.contains("correct-horse"), "{stdout}");
}
