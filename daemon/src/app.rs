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

use kiosk_config::{KioskMode, TokenProvider};
use records::signing::RecordSigner;

use crate::api::{self, AppState};
use crate::store::{Store, StoreError};
use crate::systemd;
use crate::token_keys::{self, KioskKeys};

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
    #[error(transparent)]
    Config(#[from] kiosk_config::ConfigError),
    #[error("device token: {0}")]
    Token(#[from] hsm::TokenError),
    #[error("reading {path}: {source}")]
    PinFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("devices: {0}")]
    Devices(#[from] crate::devices::DevicesError),
    #[error("staff authentication: {0}")]
    Staff(#[from] crate::staff::StaffError),
    #[error("verification services: {0}")]
    Verify(#[from] crate::verify::VerifyError),
    #[error("starting the stand-in verification services: {0}")]
    StandIn(std::io::Error),
    #[error(
        "{addr} (from {origin}) is not a loopback address; bind the local API to 127.0.0.1 or [::1]: it must not be reachable from the network"
    )]
    NotLoopback {
        addr: SocketAddr,
        origin: &'static str,
    },
    #[error("api.unix_socket_group {group:?}: {reason}")]
    SocketGroup { group: String, reason: String },
    #[error("production mode refuses demo stand-ins:\n{0}")]
    Production(String),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
}

/// Command-line overrides that are not part of the file.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// `KIOSKD_API_ADDR`: replaces `api.listen`.
    pub api_addr: Option<SocketAddr>,
}

/// Run until SIGTERM or SIGINT.
pub async fn run(loaded: LoadedConfig, opts: RunOptions) -> Result<(), AppError> {
    // The file's `api.listen` is validated with the config; the override is checked here,
    // before anything starts, so that neither way can put the API on the network.
    if let Some(addr) = opts.api_addr
        && !addr.ip().is_loopback()
    {
        return Err(AppError::NotLoopback {
            addr,
            origin: "KIOSKD_API_ADDR / --api-addr",
        });
    }
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
    check_mode(&loaded)?;
    let config = Arc::new(loaded.config.clone());
    let store_path = loaded.resolve(&config.store.path);
    // Held until serve returns: one kioskd per store, and kioskctl leaves its token alone.
    let _lock = crate::lock::DaemonLock::acquire(&store_path)?;
    let store = {
        let path = store_path.clone();
        tokio::task::spawn_blocking(move || Store::open(&path))
            .await
            .map_err(|e| AppError::Task(e.to_string()))??
    };
    tracing::info!(store = %store_path.display(), "store open");

    let catalog = Arc::new(kiosk_config::Catalog::load(
        config
            .privacy
            .catalog
            .as_deref()
            .map(|p| loaded.resolve(p))
            .as_deref(),
    )?);
    let provider = hsm::open_provider(&config.token, loaded.data_dir())?;
    let keys = open_device_keys(&loaded, &store, &provider).await?;
    let ukeys = open_ukey_provider(&loaded, &provider)?;
    tracing::info!(
        token = %config.token.device_token,
        signer = keys.signer.algorithm().name(),
        digest = keys.digest_algorithm,
        "device token ready"
    );

    let mut devices_config = config.devices.clone();
    if let Some(model) = &devices_config.camera.detector_model {
        devices_config.camera.detector_model = Some(loaded.resolve(model));
    }
    if let Some(dir) = &devices_config.camera.fixture_dir {
        devices_config.camera.fixture_dir = Some(loaded.resolve(dir));
    }
    let devices = Arc::new(crate::devices::Devices::open(&devices_config)?);
    let simulated = devices.idcard_sim.is_some() && devices.fingerprint_sim.is_some();
    let (verifier, _standin) = open_verifier(&config, catalog.clone(), simulated).await?;
    // A simulated kiosk's soft UKEYs sit in a simulated slot (insert, pull, faults).
    let (ukeys, ukey_sim) = if simulated && config.ukey.provider == TokenProvider::Soft {
        let (wrapped, slot) =
            crate::ukey_sim::SimUkeys::wrap(ukeys, loaded.resolve(&config.ukey.soft_dir));
        (wrapped as Arc<dyn hsm::TokenProvider>, Some(slot))
    } else {
        (ukeys, None)
    };
    let staff = Arc::new(open_staff(&loaded, provider.clone(), &store, &keys).await?);
    let state = AppState {
        config: config.clone(),
        store: store.clone(),
        started,
        catalog,
        keys: Arc::new(keys),
        sessions: Arc::new(crate::session::Sessions::new(Duration::from_secs(
            config.api.session_idle_secs,
        ))),
        devices,
        staff,
        memory: Arc::new(crate::session::SessionMemory::default()),
        ukeys,
        events: crate::events::Events::default(),
        verifier,
        binding: Arc::new(open_binding(simulated)),
        hq_recipient: Arc::new(crate::sync::HqRecipient::default()),
        ca: Arc::new(crate::ca_client::CaLink::with_config(config.ca.clone())),
        ukey_sim,
        batches: Arc::new(crate::batch::Batches::default()),
    };
    let app = without_simulators_in_production(api::router(state.clone()), &config);
    let tracker = TaskTracker::new();

    // The Unix socket first: whoever waits for the TCP listener's log line (tests, scripts)
    // finds the socket there too.
    if let Some(sock) = &config.api.unix_socket {
        let path = loaded.resolve(sock);
        let listener = bind_unix(&path, config.api.unix_socket_group.as_deref())?;
        tracing::info!(socket = %path.display(), "kioskd serving the API on a Unix socket");
        spawn_listener(
            &tracker,
            listener,
            app.clone(),
            shutdown.clone(),
            "Unix-socket",
            Some(path),
        );
    }
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
        spawn_listener(
            &tracker,
            listener,
            app.clone(),
            shutdown.clone(),
            "TCP",
            None,
        );
    }
    let kiosk = state.clone();
    tracker.spawn(systemd::watchdog(shutdown.clone(), move |bound| {
        let kiosk = kiosk.clone();
        async move { kiosk.liveness(bound).await }
    }));
    tracker.spawn(state.staff.clone().watch_tokens(shutdown.clone()));
    start_ukey_hotplug(&state, &tracker, shutdown.clone());
    tracker.spawn(housekeeping(state.clone(), shutdown.clone()));
    start_sync(&loaded, &state, &tracker, shutdown.clone());

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

/// Open the device token (creating the embedded soft token on first start),
/// log in once and make sure the kiosk's keys exist.
async fn open_device_keys(
    loaded: &LoadedConfig,
    store: &Store,
    provider: &Arc<dyn hsm::TokenProvider>,
) -> Result<KioskKeys, AppError> {
    let section = &loaded.config.token;
    let pin = token_keys::device_pin(loaded).map_err(|e| match e {
        token_keys::DeviceTokenError::PinFile { path, source } => {
            AppError::PinFile { path, source }
        }
        token_keys::DeviceTokenError::PrivatePinFile(_) => AppError::Production(e.to_string()),
        token_keys::DeviceTokenError::Token(e) => AppError::Token(e),
    })?;
    let token = token_keys::open_device_token(loaded, provider, &pin).await?;
    let algorithm = token_keys::device_key_algorithm(loaded.config.hq.suite);
    let known = meta_get(store, "keys.digest_algorithm")?;
    let keys = token_keys::prepare(
        token,
        &section.device_key,
        algorithm,
        &pin,
        known.as_deref(),
    )
    .await?;
    let verifier = keys.signer.verifier();
    let digest = keys.digest_algorithm;
    let key_name = loaded.config.kiosk.id.clone();
    let st = store.clone();
    tokio::task::spawn_blocking(move || -> Result<(), AppError> {
        let conn = st.conn()?;
        conn.execute(
            "INSERT INTO kiosk_meta (key, value) VALUES ('keys.digest_algorithm', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [digest],
        )
        .map_err(StoreError::from)?;
        crate::audit::record_device_key(&conn, &key_name, &verifier)?;
        Ok(())
    })
    .await
    .map_err(|e| AppError::Task(e.to_string()))??;
    Ok(keys)
}

/// The identity verification client. With simulated devices and no verifier configured at
/// all (the embedded defaults), the loopback stand-in services are started and used, so the
/// demo runs the real client over the real protocol; a deployment configures the real URLs.
async fn open_verifier(
    config: &kiosk_config::Config,
    catalog: Arc<kiosk_config::Catalog>,
    simulated: bool,
) -> Result<
    (
        Arc<dyn crate::verify::Verifier>,
        Option<crate::verify::standin::StandIn>,
    ),
    AppError,
> {
    let v = &config.verifiers;
    let none_configured = [
        &v.carrier_3factor,
        &v.bank_card_4factor,
        &v.biometric_compare,
    ]
    .iter()
    .all(|e| e.url.is_none());
    if simulated && none_configured {
        let (_, standin) = crate::verify::standin::spawn_with_catalog(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            catalog.clone(),
        )
        .await
        .map_err(AppError::StandIn)?;
        let mut verifier = crate::verify::http::HttpVerifier::new(catalog);
        for (method, ep) in [
            ("carrier_3factor", &v.carrier_3factor),
            ("bank_card_4factor", &v.bank_card_4factor),
            ("biometric_compare", &v.biometric_compare),
        ] {
            verifier.add_endpoint(
                method,
                &standin.endpoint(method, ep.timeout_ms, ep.retries),
                None,
            )?;
        }
        tracing::warn!(
            addr = %standin.addr(),
            "simulated devices and no verification service configured: using the loopback stand-in services"
        );
        return Ok((Arc::new(verifier), Some(standin)));
    }
    let verifier = crate::verify::http::HttpVerifier::from_config(catalog, config)?;
    Ok((Arc::new(verifier), None))
}

/// The card-binding comparers: scripted stand-ins with simulated devices, else none until a
/// licensed vendor component is installed (the page then offers the other methods).
fn open_binding(simulated: bool) -> crate::workflow::verification::Binding {
    use drivers::binding::{Comparison, NoMatcher, ScriptedMatcher};
    if simulated {
        let m = ScriptedMatcher {
            outcome: Comparison {
                is_match: true,
                score: 0.9,
            },
        };
        crate::workflow::verification::Binding {
            fingerprint: Box::new(m),
            face: Box::new(m),
        }
    } else {
        crate::workflow::verification::Binding {
            fingerprint: Box::new(NoMatcher),
            face: Box::new(NoMatcher),
        }
    }
}

/// The provider of applicants' UKEYs. A PKCS#11 module already loaded for the device token is
/// shared (a module is initialised once per process).
fn open_ukey_provider(
    loaded: &LoadedConfig,
    device: &Arc<dyn hsm::TokenProvider>,
) -> Result<Arc<dyn hsm::TokenProvider>, AppError> {
    let config = &loaded.config;
    let same_module = config.ukey.provider == TokenProvider::Pkcs11
        && config.token.provider == TokenProvider::Pkcs11
        && config.ukey.module == config.token.module;
    if same_module {
        return Ok(device.clone());
    }
    Ok(hsm::open_provider(
        &config.ukey.provider_section(),
        loaded.data_dir(),
    )?)
}

/// Staff authentication against the configured staff CA (and its CRL), or the demo CA and
/// token of demo mode. The device token is reserved: staff login never opens it.
async fn open_staff(
    loaded: &LoadedConfig,
    provider: Arc<dyn hsm::TokenProvider>,
    store: &Store,
    keys: &KioskKeys,
) -> Result<crate::staff::StaffAuth, AppError> {
    let section = &loaded.config.staff;
    let ca_der = match &section.ca_cert {
        Some(path) => {
            let path = loaded.resolve(path);
            let pem = std::fs::read_to_string(&path)
                .map_err(|source| AppError::PinFile { path, source })?;
            crate::staff::rustls_pem_to_der(&pem)?
        }
        None if loaded.config.kiosk.mode == KioskMode::Production => {
            return Err(AppError::Production(
                "staff.ca_cert: no staff CA configured".into(),
            ));
        }
        None => {
            crate::staff::demo_setup(&provider, &loaded.data_dir().join("demo-staff"), section)
                .await?
        }
    };
    let device = keys.signer.token().info().await?;
    let reserved = crate::staff::ReservedTokens {
        labels: vec![loaded.config.token.device_token.clone()],
        serials: vec![device.serial],
    };
    let policy = crate::staff::StaffPolicy {
        ca_der,
        crl: section.crl.as_deref().map(|p| loaded.resolve(p)),
        policy_oid: section.policy_oid.clone(),
    };
    Ok(crate::staff::StaffAuth::new(
        provider,
        policy,
        reserved,
        store.clone(),
        section,
    ))
}

/// Production mode starts only without demo stand-ins (the configuration's validation
/// already refused them; this guards callers that build a configuration themselves). In demo
/// mode each stand-in is announced in the log, once.
fn check_mode(loaded: &LoadedConfig) -> Result<(), AppError> {
    let features = kiosk_config::demo_features(&loaded.config);
    if loaded.config.kiosk.mode == KioskMode::Production {
        if features.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = features
            .iter()
            .map(|f| format!("{}: {} (fix: {})", f.key, f.what, f.fix))
            .collect();
        return Err(AppError::Production(lines.join("\n")));
    }
    for f in &features {
        tracing::warn!(key = %f.key, "DEMO mode: {} (production: {})", f.what, f.fix);
    }
    Ok(())
}

/// In production mode the simulator routes (`/v1/sim/...`) do not exist.
fn without_simulators_in_production(
    app: axum::Router,
    config: &kiosk_config::Config,
) -> axum::Router {
    if config.kiosk.mode != KioskMode::Production {
        return app;
    }
    app.layer(axum::middleware::from_fn(refuse_simulator_routes))
}

async fn refuse_simulator_routes(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if request.uri().path().starts_with("/v1/sim/") || request.uri().path() == "/v1/sim" {
        return crate::api::ApiError::not_found("no simulator in production mode").into_response();
    }
    next.run(request).await
}

fn meta_get(store: &Store, key: &str) -> Result<Option<String>, AppError> {
    let conn = store.conn()?;
    Ok(crate::store::meta::get(&conn, key).map_err(StoreError::from)?)
}

/// Watch applicants' UKEYs arrive and leave: the relay to the screens' event streams, and for
/// a PKCS#11 UKEY module the slot poller (every `ukey.poll_ms`; the only source where the
/// kernel shows no USB events) plus, when `token.usb_ids` are configured and USB hot-plug
/// events can be seen, the USB watcher that refreshes the slots at once. Soft UKEYs are
/// announced by the simulator.
fn start_ukey_hotplug(state: &AppState, tracker: &TaskTracker, shutdown: CancellationToken) {
    tracker.spawn(state.clone().relay_ukey_events(shutdown.clone()));
    let config = &state.config;
    if config.ukey.provider != TokenProvider::Pkcs11 {
        return;
    }
    let period = Duration::from_millis(config.ukey.poll_ms);
    let mut tasks = vec![hsm::hotplug::spawn_slot_poller(state.ukeys.clone(), period)];
    let ids: Vec<hsm::hotplug::UsbId> = config
        .token
        .usb_ids
        .iter()
        .filter_map(|id| id.parse().ok())
        .collect();
    if !ids.is_empty() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        match hsm::hotplug::spawn_usb_watcher(state.ukeys.clone(), ids, tx) {
            Ok(watcher) => {
                tracing::info!("watching USB hot-plug for token.usb_ids");
                tasks.push(watcher);
                tasks.push(tokio::spawn(async move {
                    while let Some(event) = rx.recv().await {
                        tracing::debug!(?event, "USB hot-plug event");
                    }
                }));
            }
            Err(e) => {
                tracing::warn!(error = %e, "no USB hot-plug events; polling the slot list only")
            }
        }
    }
    tracing::info!(poll_ms = config.ukey.poll_ms, "polling the UKEY slot list");
    tracker.spawn(async move {
        shutdown.cancelled().await;
        for task in tasks {
            task.abort();
        }
    });
}

// ---- sync to HQ: start-up of the sender (crate::sync::hq_client, crate::sync::local_hq) ----

/// Start the link to HQ (a local `hq-ingest` child or the remote HQ) and the sender. Never
/// fails start-up: without HQ the records wait in the outbox.
fn start_sync(
    loaded: &LoadedConfig,
    state: &AppState,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    let config = loaded.config.clone();
    // An SM2 kiosk's local HQ issues with an SM2 CA, as Chinese CAs do.
    let local_issuing_ca = match config.ukey.algorithm {
        kiosk_config::UkeyAlgorithm::P256 => "p256",
        kiosk_config::UkeyAlgorithm::Sm2 => "sm2",
    };
    let link = crate::sync::hq_client::SyncLink {
        hq: config.hq.clone(),
        kiosk_id: config.kiosk.id.clone(),
        data_dir: loaded.data_dir().to_path_buf(),
        resolve: Arc::new(move |p: &Path| config.resolve(p)),
        store: state.store.clone(),
        signer: state.keys.signer.clone(),
        recipient: state.hq_recipient.clone(),
        ca: Some(state.ca.clone()),
        local_issuing_ca,
    };
    tracker.spawn(crate::sync::hq_client::run(link, shutdown));
}

// ---- end of sync to HQ ----

/// Periodic work: sign an audit checkpoint when the log grew, sweep retention.
async fn housekeeping(state: AppState, cancel: CancellationToken) {
    let period = Duration::from_secs(state.config.store.checkpoint_secs.max(1));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(expired) = state.sessions.take_expired() {
            tracing::info!(session = %expired, "applicant session expired; discarding what it collected");
            if let Err(e) = state.discard_session(&expired, "expired").await {
                tracing::warn!(error = %e.message, "discarding an expired session failed");
            }
        }
        let st = state.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut conn = st.store.conn().map_err(|e| e.to_string())?;
            let now = crate::clock::now_ms();
            let origin = format!("kioskd/{}", st.config.kiosk.id);
            // Signed and queued for HQ to witness in one transaction.
            crate::sync::checkpoint_for_hq(
                &mut conn,
                now,
                &origin,
                &st.config.kiosk.id,
                st.keys.signer.as_ref(),
            )
            .map_err(|e| e.to_string())?;
            crate::retention::sweep(&mut conn, now).map_err(|e| e.to_string())?;
            Ok(())
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "housekeeping failed; will retry"),
            Err(e) => tracing::warn!(error = %e, "housekeeping task panicked"),
        }
    }
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

/// Serve `app` on `listener` until `stop`, then remove `cleanup` (a socket file).
fn spawn_listener<L>(
    tracker: &TaskTracker,
    listener: L,
    app: axum::Router,
    stop: CancellationToken,
    what: &'static str,
    cleanup: Option<PathBuf>,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tracker.spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, listener = what, "API listener failed");
        }
        if let Some(path) = cleanup {
            let _ = std::fs::remove_file(&path);
        }
    });
}

/// Bind a Unix socket, replacing a stale socket file left by a crash but never
/// deleting anything that is not a socket.
fn bind_unix(path: &Path, group: Option<&str>) -> Result<UnixListener, AppError> {
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
    // Owner and group only; the group is the staff's (`api.unix_socket_group`), so that
    // staff use kioskctl without being in the daemon's own group.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    if let Some(name) = group {
        let socket_group = |reason: String| AppError::SocketGroup {
            group: name.to_string(),
            reason,
        };
        let gid = nix::unistd::Group::from_name(name)
            .map_err(|e| socket_group(e.to_string()))?
            .ok_or_else(|| socket_group("no such group".into()))?
            .gid;
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| {
            socket_group(format!(
                "{e} (kioskd must be a member: SupplementaryGroups={name} in its unit)"
            ))
        })?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// The staff socket belonged to the daemon's own group while `kioskd-staff` went unused:
    /// staff had to join the daemon's group to use kioskctl. The socket now takes the group
    /// `api.unix_socket_group` names, and a group that does not exist is a clear error.
    #[tokio::test]
    async fn the_staff_socket_belongs_to_the_configured_staff_group() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        // `daemon` exists on every Debian system and is not the group tests run as.
        let staff = nix::unistd::Group::from_name("daemon").unwrap().unwrap();
        let path = dir.path().join("k.sock");
        let _listener = bind_unix(&path, Some("daemon")).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.gid(), staff.gid.as_raw());
        assert_eq!(meta.mode() & 0o777, 0o660);
        let err = bind_unix(&dir.path().join("j.sock"), Some("no-such-kioskd-group"))
            .expect_err("an unknown group is refused");
        assert!(err.to_string().contains("no-such-kioskd-group"), "{err}");
    }

    async fn status_of(app: axum::Router, path: &str) -> u16 {
        let request = axum::http::Request::post(path)
            .body(axum::body::Body::empty())
            .unwrap();
        app.oneshot(request).await.unwrap().status().as_u16()
    }

    /// Finding 4: the simulator routes (insert a UKEY, present a card, place a finger) must
    /// not exist on a kiosk in production mode.
    #[tokio::test]
    async fn simulator_routes_do_not_exist_in_production_mode() {
        let app = || {
            axum::Router::new()
                .route("/v1/sim/ukey", axum::routing::post(|| async { "inserted" }))
                .route("/v1/health", axum::routing::post(|| async { "ok" }))
        };
        let mut config = kiosk_config::Config::default();
        assert_eq!(
            status_of(
                without_simulators_in_production(app(), &config),
                "/v1/sim/ukey"
            )
            .await,
            200
        );
        config.kiosk.mode = KioskMode::Production;
        let production = without_simulators_in_production(app(), &config);
        assert_eq!(status_of(production.clone(), "/v1/sim/ukey").await, 404);
        assert_eq!(status_of(production, "/v1/health").await, 200);
    }
}
