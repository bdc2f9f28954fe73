//! The local HQ of the embedded defaults (`hq.mode = "local"`): kioskd runs the `hq-ingest`
//! binary as a child (`hq-ingest local`), which keeps PostgreSQL, a demo PKI and the mTLS
//! service under `<data_dir>/hq-local`, registers this kiosk's device key and answers with one
//! JSON line ([`LocalHqReady`]) once it serves. The child stops when kioskd asks (SIGTERM) or
//! when its stdin closes because kioskd went away.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use records::client::LocalHqReady;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Environment variable naming the hq-ingest binary (else: next to the kioskd executable).
pub const HQ_INGEST_ENV: &str = "KIOSKD_HQ_INGEST";

/// How long the child may take to start PostgreSQL and serve.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum LocalHqError {
    #[error(
        "the hq-ingest binary was not found (looked for {0}); set {HQ_INGEST_ENV} or install it next to kioskd"
    )]
    Missing(String),
    #[error("starting {path}: {source}")]
    Spawn {
        path: String,
        source: std::io::Error,
    },
    #[error("writing the kiosk verifier {path}: {source}")]
    Verifier {
        path: String,
        source: std::io::Error,
    },
    #[error("local HQ did not become ready: {0}")]
    NotReady(String),
    /// `hq-ingest local` said why it cannot start (one line, with the fix when it knows one).
    #[error("local HQ cannot start: {0}")]
    Failed(String),
}

/// What `hq-ingest local` prints instead of its ready line when it cannot start.
#[derive(serde::Deserialize)]
struct LocalHqFailure {
    error: String,
}

/// Where the hq-ingest binary is: `$KIOSKD_HQ_INGEST`, else beside the running executable.
pub fn find_hq_ingest() -> Result<PathBuf, LocalHqError> {
    if let Some(p) = std::env::var_os(HQ_INGEST_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(LocalHqError::Missing(p.display().to_string()))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("hq-ingest")));
    match beside {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => Err(LocalHqError::Missing(p.display().to_string())),
        None => Err(LocalHqError::Missing("hq-ingest".into())),
    }
}

/// A running `hq-ingest local` child.
pub struct LocalHqProcess {
    child: Child,
    /// Held open: the child stops when it closes (`Child::wait` would close it if left there).
    _stdin: Option<tokio::process::ChildStdin>,
    pub ready: LocalHqReady,
}

impl LocalHqProcess {
    /// Write the device key's verifier JSON, start `hq-ingest local` and wait for its ready line.
    pub async fn start(
        binary: &Path,
        data_dir: &Path,
        kiosk_id: &str,
        verifier_json: &str,
    ) -> Result<Self, LocalHqError> {
        Self::start_issuing(binary, data_dir, kiosk_id, verifier_json, "p256").await
    }

    /// [`LocalHqProcess::start`] with the local CA issuing with `issuing_ca` (`p256` or `sm2`,
    /// as the kiosk's `[ukey] algorithm`).
    pub async fn start_issuing(
        binary: &Path,
        data_dir: &Path,
        kiosk_id: &str,
        verifier_json: &str,
        issuing_ca: &str,
    ) -> Result<Self, LocalHqError> {
        let dir = data_dir.join("hq-local");
        let verifier = dir.join("kiosk-verifier.json");
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&verifier, verifier_json))
            .map_err(|source| LocalHqError::Verifier {
                path: verifier.display().to_string(),
                source,
            })?;
        let mut child = Command::new(binary)
            .arg("local")
            .arg("--dir")
            .arg(&dir)
            .arg("--kiosk-id")
            .arg(kiosk_id)
            .arg("--kiosk-verifier")
            .arg(&verifier)
            .arg("--issuing-ca")
            .arg(issuing_ca)
            // The child is not the service's main process: systemd's notify socket and
            // watchdog are kioskd's own (a child pinging them would hide a wedged kioskd).
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| LocalHqError::Spawn {
                path: binary.display().to_string(),
                source,
            })?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LocalHqError::NotReady("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(READY_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| LocalHqError::NotReady(format!("no answer in {READY_TIMEOUT:?}")))?
            .map_err(|e| LocalHqError::NotReady(e.to_string()))?;
        let Some(line) = line else {
            let status = child.wait().await.ok();
            return Err(LocalHqError::NotReady(format!(
                "hq-ingest exited ({status:?}); see its log above"
            )));
        };
        let ready: LocalHqReady = match serde_json::from_str(&line) {
            Ok(ready) => ready,
            Err(e) => {
                let _ = child.wait().await;
                return Err(match serde_json::from_str::<LocalHqFailure>(&line) {
                    Ok(failure) => LocalHqError::Failed(failure.error),
                    Err(_) => LocalHqError::NotReady(format!("unexpected ready line: {e}")),
                });
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            _stdin: stdin,
            ready,
        })
    }

    /// Wait until the child exits by itself.
    pub async fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.wait().await.ok()
    }

    /// Ask the child to stop (SIGTERM) and wait up to `grace`: its exit status, or `None` when
    /// it had to be killed.
    pub async fn stop(mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                tracing::warn!("local HQ did not stop in time; killing it");
                let _ = self.child.kill().await;
                None
            }
        }
    }
}
