//! The process lifecycle: open the store, start the API listeners and
//! background tasks, report READY to systemd, then on SIGTERM/SIGINT stop
//! accepting, give in-flight work a bounded grace period, flush the store and
//! return.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiosk_config::LoadedConfig;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState};
use crate::store::{Store, StoreError};
use crate::systemd;

/// Why the daemon could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("background task failed: {0}")]
    Task(String),
}

/// Command-line overrides that are not part of the file.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// `KIOSKD_API_ADDR`: replaces `api.listen`.
    pub api_addr: Option<SocketAddr>,
}

/// Run until SIGTERM or SIGINT.
pub async fn run(loaded: LoadedConfig, opts: RunOptions) -> Result<(), AppError> {
    let shutdown = CancellationToken::new();
    let signals = spawn_signal_listener(shutdown.clone())?;
    let result = serve(loaded, opts, shutdown).await;
    signals.abort();
    result
}

/// Serve until `shutdown` is cancelled (by a signal or by the caller).
pub async fn serve(
    loaded: LoadedConfig,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let started = Instant::now();
    let config = Arc::new(loaded.config.clone());
    let store_path = loaded.resolve(&config.store.path);
    let store = {
        let path = store_path.clone();
        tokio::task::spawn_blocking(move || Store::open(&path))
            .await
            .map_err(|e| AppError::Task(e.to_string()))??
    };
    tracing::info!(store = %store_path.display(), "store open");

    let state = AppState {
        config: config.clone(),
        store: store.clone(),
        started,
    };
    let app = api::router(state);
    let tracker = TaskTracker::new();

    let listen = opts.api_addr.or(config.api.listen);
    if let Some(addr) = listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| AppError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        tracing::info!(url = %format!("http://{local}/"), "kioskd serving the kiosk page and API");
        let app = app.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "TCP API listener failed");
            }
        });
    }
    if let Some(sock) = &config.api.unix_socket {
        let path = loaded.resolve(sock);
        let listener = bind_unix(&path)?;
        tracing::info!(socket = %path.display(), "kioskd serving the API on a Unix socket");
        let app = app.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "Unix-socket API listener failed");
            }
            let _ = std::fs::remove_file(&path);
        });
    }
    tracker.spawn(systemd::watchdog(shutdown.clone()));

    systemd::notify_ready("serving");
    tracing::info!(
        ready_ms = started.elapsed().as_millis() as u64,
        kiosk = %config.kiosk.id,
        "kioskd ready"
    );

    shutdown.cancelled().await;
    systemd::notify_stopping();
    tracing::info!("shutting down: no new requests, finishing in-flight work");
    tracker.close();
    let grace = Duration::from_secs(config.api.shutdown_grace_secs);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "in-flight work did not finish within the grace period; stopping anyway"
        );
    }
    tokio::task::spawn_blocking(move || store.flush())
        .await
        .map_err(|e| AppError::Task(e.to_string()))??;
    tracing::info!("store flushed; kioskd stopped");
    Ok(())
}

fn spawn_signal_listener(
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, AppError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(AppError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AppError::Signals)?;
    Ok(tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "stop requested");
        shutdown.cancel();
    }))
}

/// Bind a Unix socket, replacing a stale socket file left by a crash but never
/// deleting anything that is not a socket.
fn bind_unix(path: &Path) -> Result<UnixListener, AppError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let err = |source| AppError::Bind {
        addr: path.display().to_string(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path).map_err(err)?;
        } else {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    // Owner and group (the staff group under systemd) only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

/// The data directory's default when neither `--data-dir` nor the file says:
/// systemd's `STATE_DIRECTORY` if set, else `./kioskd-data`.
pub fn default_data_dir() -> Option<PathBuf> {
    std::env::var_os("STATE_DIRECTORY").map(|s| {
        // STATE_DIRECTORY may list several directories separated by ':'.
        let s = s.to_string_lossy().into_owned();
        PathBuf::from(s.split(':').next().unwrap_or_default())
    })
}
