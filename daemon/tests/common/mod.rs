//! Running the real `kioskd` binary in tests: a temp data dir, an optional
//! config file, the API address read from its JSON start-up log, and all of
//! its log output kept so tests can scan it for personal data.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const KIOSKD: &str = env!("CARGO_BIN_EXE_kioskd");

pub struct Kioskd {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Kioskd {
    /// Start kioskd on `data_dir` with `config` (TOML text, may be empty) and wait until it serves.
    pub fn start(data_dir: &Path, config: &str) -> Self {
        Self::start_with_env(data_dir, config, &[])
    }

    /// [`Self::start`] with extra environment variables (e.g. `SOFTHSM2_CONF`).
    pub fn start_with_env(data_dir: &Path, config: &str, env: &[(&str, &Path)]) -> Self {
        std::fs::create_dir_all(data_dir).unwrap();
        let cfg = data_dir.join("kioskd-test.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut child = Command::new(KIOSKD)
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--log-format")
            .arg("json")
            .env("KIOSKD_API_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "debug")
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kioskd starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = serving_url(&line) {
                    let _ = tx.send(url);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url.trim_end_matches('/').to_string(),
            Err(_) => {
                let _ = child.kill();
                panic!("kioskd did not start:\n{}", logs.lock().unwrap().join("\n"));
            }
        };
        Self {
            child,
            base,
            data_dir: data_dir.to_path_buf(),
            logs,
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    }

    /// Send a request through [`kioskd::client`] (POSTs without a body send `{}`); returns
    /// (status, JSON body or Null).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let addr = self
            .base
            .trim_start_matches("http://")
            .parse()
            .expect("kioskd serves on a loopback address");
        let client = kioskd::client::Client::new(kioskd::client::Endpoint::Tcp(addr))
            .with_timeout(Duration::from_secs(30));
        let method = hyper::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let body = match method {
            hyper::Method::GET | hyper::Method::DELETE => None,
            _ => Some(body.unwrap_or(serde_json::json!({}))),
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(client.request_json(method, path, token, body.as_ref()))
            .expect("kioskd answers")
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> Vec<String> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "kioskd exited with {status:?}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "kioskd did not stop"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Let the reader thread drain the pipe.
        std::thread::sleep(Duration::from_millis(50));
        let logs = self.logs();
        // Every run of the real daemon is a log scan: no synthetic person's
        // name, ID number or address may appear in any line.
        let needles = synthetic_personal_values();
        let refs: Vec<&str> = needles.iter().map(String::as_str).collect();
        assert_logs_clean(&logs, &refs);
        logs
    }
}

impl Drop for Kioskd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serving_url(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()? == "kioskd serving the kiosk page and API" {
        return Some(v.get("url")?.as_str()?.to_string());
    }
    None
}

/// Names, ID numbers and addresses of every synthetic identity the tests can
/// present (all card layouts, seeds 0..100).
pub fn synthetic_personal_values() -> Vec<String> {
    use firmware_interfaces::sim::fixtures;
    let mut out = std::collections::BTreeSet::new();
    for seed in 0..100 {
        for text in [
            fixtures::resident_text(seed),
            fixtures::hk_macao_taiwan_text(seed),
            fixtures::foreign_2017_text(seed),
            fixtures::foreign_2023_text(seed),
        ] {
            out.insert(text.name().expose().to_string());
            out.insert(text.identity_number().expose().to_string());
            if let Some(a) = text.address() {
                out.insert(a.expose().to_string());
            }
        }
    }
    out.retain(|v| v.chars().count() >= 2);
    out.into_iter().collect()
}

/// Assert that no log line contains any of `secrets`.
pub fn assert_logs_clean(logs: &[String], secrets: &[&str]) {
    for line in logs {
        for s in secrets {
            assert!(
                !line.contains(s),
                "personal data {s:?} in a log line: {line}"
            );
        }
    }
}

/// Open an applicant session for `service`; returns (session id, token).
pub fn open_session(k: &Kioskd, service: &str) -> (String, String) {
    let (status, opened) = k.call(
        "POST",
        "/v1/sessions",
        None,
        Some(serde_json::json!({ "service": service })),
    );
    assert_eq!(status, 201, "{opened}");
    (
        opened["session_id"].as_str().unwrap().into(),
        opened["token"].as_str().unwrap().into(),
    )
}

/// Consent to the session's purpose and, separately, to `items`.
pub fn consent(k: &Kioskd, id: &str, token: &str, items: serde_json::Value) {
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/consents"),
        Some(token),
        Some(serde_json::json!({ "purpose": true, "items": items })),
    );
    assert_eq!(status, 200, "{body}");
}

/// A session for `service` whose applicant consented and had the synthetic
/// resident card `seed` read; returns (session id, token).
pub fn session_with_card(k: &Kioskd, service: &str, seed: u32) -> (String, String) {
    let (id, token) = open_session(k, service);
    consent(k, &id, &token, serde_json::json!(["id_number"]));
    assert_eq!(
        k.call(
            "POST",
            "/v1/sim/idcard",
            None,
            Some(serde_json::json!({ "seed": seed }))
        )
        .0,
        204
    );
    let (status, body) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/idcard"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    (id, token)
}

/// Log in as the embedded demo staff member; returns the staff token.
pub fn staff_login(k: &Kioskd) -> String {
    let (status, login) = k.call(
        "POST",
        "/v1/staff/login",
        None,
        Some(serde_json::json!({ "token": "staff-demo", "pin": "staff-demo-pin" })),
    );
    assert_eq!(status, 200, "{login}");
    login["staff_token"].as_str().unwrap().to_string()
}

/// Path of SoftHSM2's PKCS#11 module.
pub fn softhsm_module() -> PathBuf {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("libsofthsm2.so not found: install softhsm2")
}

/// The project's PKCS#11 module `libkiosk_softtoken.so`, built into this test's target
/// directory (a no-op when it is fresh).
pub fn softtoken_module() -> PathBuf {
    let kioskd = Path::new(KIOSKD);
    let profile_dir = kioskd.parent().expect("kioskd in <target>/<profile>");
    let target = profile_dir.parent().expect("target dir");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "softtoken",
            "--lib",
            "--target-dir",
        ])
        .arg(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build -p softtoken failed");
    let so = profile_dir.join("libkiosk_softtoken.so");
    assert!(so.exists(), "{} missing", so.display());
    so
}

/// A SoftHSM2 configuration of its own under `dir` (a test process and its kioskd child read
/// it from `SOFTHSM2_CONF`).
pub fn softhsm_conf(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    conf
}
