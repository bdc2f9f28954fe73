//! The systemd watchdog means something: kioskd pings it only while its event loop, its store
//! and its device token answer. The device token here is the project's PKCS#11 module, whose
//! test-only fault knob (`KIOSK_SOFTTOKEN_HANG_FILE`) makes every call block while a file
//! exists, as a wedged USB token or HSM link does. The test plays systemd: `NOTIFY_SOCKET` is
//! a Unix datagram socket it reads, `WATCHDOG_USEC` the interval.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Kioskd;

/// The notify messages that arrive within `window`, each with when it arrived.
fn collect(socket: &UnixDatagram, window: Duration) -> Vec<(Instant, String)> {
    let end = Instant::now() + window;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return got;
        }
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => got.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            )),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return got;
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }
}

fn pings(messages: &[(Instant, String)]) -> usize {
    messages
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .count()
}

fn init_device_token(module: &Path, store: &Path) {
    std::fs::create_dir_all(store).unwrap();
    std::fs::write(
        store.join("softtoken.toml"),
        "slots = 2\nprofile = \"sansec\"\nkdf_iterations = 5000\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_kioskctl"))
        .args(["token", "init", "--module"])
        .arg(module)
        .args(["--token", "kiosk-device"])
        .env("KIOSK_SOFTTOKEN_DIR", store)
        .env("KIOSK_SO_PIN", "kiosk-device-so-pin")
        .env("KIOSK_PIN", "kiosk-device-pin")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The threat: a device token whose calls hang (a wedged UKEY or HSM link) leaves a kiosk
/// that looks up to systemd but cannot sign a record or serve an applicant, for ever. Its
/// watchdog pings must stop while the token does not answer (so systemd restarts kioskd),
/// said once in the log with the reason, and resume once the token answers again.
#[test]
fn a_hanging_device_token_stops_the_watchdog_pings_until_it_answers_again() {
    let module = common::softtoken_module();
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("softtoken");
    init_device_token(&module, &store);
    let notify = root.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify).unwrap();
    let hang = root.path().join("hang");
    let config = format!(
        "[kiosk]\nid = \"kiosk-watchdog\"\n\n[token]\nprovider = \"pkcs11\"\nmodule = \"{}\"\n\
         vendor_profile = \"sansec-appid1\"\n",
        module.display()
    );
    let k = Kioskd::start_with_env(
        &root.path().join("data"),
        &config,
        &[
            ("KIOSK_SOFTTOKEN_DIR", &store),
            ("KIOSK_SOFTTOKEN_HANG_FILE", &hang),
            ("NOTIFY_SOCKET", &notify),
            // 2 s: pings every second, each after a probe bounded at 500 ms.
            ("WATCHDOG_USEC", Path::new("2000000")),
        ],
    );

    let healthy = collect(&socket, Duration::from_secs(4));
    assert!(
        healthy.iter().any(|(_, m)| m.contains("READY=1")),
        "{healthy:?}"
    );
    assert!(
        pings(&healthy) >= 3,
        "too few pings while healthy: {healthy:?}"
    );

    // The device token wedges: after at most one ping already on its way, none.
    std::fs::write(&hang, b"").unwrap();
    collect(&socket, Duration::from_millis(1500));
    let wedged = collect(&socket, Duration::from_secs(5));
    assert_eq!(pings(&wedged), 0, "pinged while the token hung: {wedged:?}");
    let said: Vec<String> = k
        .logs()
        .into_iter()
        .filter(|l| l.contains("watchdog pings stop"))
        .collect();
    assert_eq!(said.len(), 1, "said once: {said:?}");
    assert!(
        said[0].contains("ERROR") && said[0].contains("device token"),
        "{}",
        said[0]
    );

    // It answers again: the pings resume.
    std::fs::remove_file(&hang).unwrap();
    let recovered = collect(&socket, Duration::from_secs(5));
    assert!(
        pings(&recovered) >= 2,
        "pings did not resume: {recovered:?}"
    );
    assert!(
        k.logs().iter().any(|l| l.contains("watchdog pings resume")),
        "recovery not logged"
    );
    k.stop();
}
