//! hq-ingest as a system service: everything [`HqConfig`] describes, started in order
//! (keys and TLS read, database migrated, listeners bound), then `READY=1` to systemd, the
//! retention job on its schedule, and on SIGTERM/SIGINT `STOPPING=1`, a drain of the requests
//! in flight (every batch acknowledged is committed; none is cut in half) and a clean exit.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{HqConfig, SecretError};
use crate::{ca, db, ingest, keys, metrics, retention, server, tls};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A secret.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A plain (non-secret) file.
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        /// Configuration key.
        key: &'static str,
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The configuration (catalog).
    #[error(transparent)]
    Config(#[from] kiosk_config::ConfigError),
    /// Keys.
    #[error(transparent)]
    Keys(#[from] keys::KeyFileError),
    /// TLS.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Database.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// Listeners.
    #[error(transparent)]
    Server(#[from] server::ServerError),
    /// The CA.
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    /// The database server cannot be reached.
    #[error("database.url: cannot connect to PostgreSQL: {0}")]
    Connect(String),
    /// The issuance policy.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// Signal handlers.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

fn read_file(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ServiceError> {
    std::fs::read(path).map_err(|source| ServiceError::Read {
        key,
        path: path.display().to_string(),
        source,
    })
}

/// A key file reached through a [`crate::config::SecretRef`], checked readable first so the
/// message names the configuration key.
fn secret_path(
    secret: &crate::config::SecretRef,
    key: &'static str,
) -> Result<std::path::PathBuf, ServiceError> {
    let path = secret.path(key)?;
    std::fs::File::open(&path).map_err(|source| SecretError::Read {
        key: key.into(),
        path: path.display().to_string(),
        source,
    })?;
    Ok(path)
}

/// The database connection settings, with the password read from its secret.
pub fn database_config(config: &HqConfig) -> Result<tokio_postgres::Config, ServiceError> {
    let mut pg: tokio_postgres::Config = config
        .database
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| db::DbError::Config(e.to_string()))?;
    if let Some(secret) = &config.database.password {
        let bytes = secret.read("database.password")?;
        let text = std::str::from_utf8(&bytes).unwrap_or_default();
        pg.password(text.trim_end_matches(['\n', '\r']));
    }
    Ok(pg)
}

/// A service whose listeners are bound and whose database is migrated.
pub struct Started {
    /// The listeners.
    pub server: server::RunningServer,
    pool: deadpool_postgres::Pool,
    retention: Option<(retention::RetentionPolicy, Duration)>,
}

/// Start everything [`HqConfig`] describes, up to serving (not yet notifying systemd).
pub async fn start(config: &HqConfig) -> Result<Started, ServiceError> {
    let server_cert = read_file("tls.cert", &config.tls.cert)?;
    let server_key = config.tls.key.read("tls.key")?;
    let tls_config = tls::server_config_with_crl(
        &read_file("tls.kiosk_ca", &config.tls.kiosk_ca)?,
        &server_cert,
        &server_key,
        config.tls.kiosk_crl.as_deref(),
    )?;
    let recipient =
        keys::load_soft_recipient(&secret_path(&config.keys.record_key, "keys.record_key")?)?;
    let enroll_parts = match &config.enroll {
        Some(section) => {
            let validity = Duration::from_secs(u64::from(section.validity_days) * 86_400);
            let kiosk_ca = ca::Issuer::load(
                &config.tls.kiosk_ca,
                &secret_path(&section.kiosk_ca_key, "enroll.kiosk_ca_key")?,
                validity,
            )?;
            let tls = tls::enroll_server_config(&server_cert, &server_key)?;
            Some((section.listen, kiosk_ca, tls))
        }
        None => None,
    };
    let record_public = keys::recipient_public_to_json(&recipient.public_keys());
    let witness =
        keys::load_witness_key(&secret_path(&config.keys.witness_key, "keys.witness_key")?)?;
    let witness_public = keys::verifier_to_json(&witness.verifier());
    let retention = if config.retention.enabled {
        Some((config.retention_policy()?, config.retention.interval.0))
    } else {
        None
    };
    let pg = database_config(config)?;
    let (mut client, conn) = pg.connect(tokio_postgres::NoTls).await.map_err(|e| {
        use std::error::Error as _;
        ServiceError::Connect(match e.source() {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        })
    })?;
    let driver = tokio::spawn(conn);
    let applied = db::migrate(&mut client).await?;
    drop(client);
    let _ = driver.await;
    if !applied.is_empty() {
        tracing::info!(?applied, "database migrations applied");
    }
    let pool = db::pool_from_config(pg, config.database.pool_size)?;
    let ingestor = ingest::Ingestor::new(
        pool.clone(),
        Arc::new(recipient),
        Arc::new(witness),
        config.keys.witness_name.clone(),
        Arc::new(ingest::SystemClock),
        Arc::new(metrics::Metrics::new()),
    );
    let ca = match &config.ca {
        Some(section) => {
            let validity = Duration::from_secs(u64::from(section.validity_days) * 86_400);
            let issuer = ca::Issuer::load(
                &section.cert,
                &secret_path(&section.key, "ca.key")?,
                validity,
            )?;
            tracing::info!(algorithm = issuer.algorithm(), "CA enabled");
            let policy = match &section.issuance_policy {
                Some(path) => crate::policy::IssuancePolicy::load(path)?,
                None => crate::policy::IssuancePolicy::embedded(),
            };
            Some(ca::CaService::with_policy(issuer, pool.clone(), policy)?)
        }
        None => None,
    };
    let enroll = enroll_parts.map(|(addr, kiosk_ca, tls)| server::EnrollListener {
        service: crate::enroll::EnrollService::new(
            pool.clone(),
            kiosk_ca,
            record_public,
            witness_public,
            config.keys.witness_name.clone(),
        ),
        addr,
        tls,
    });
    let server = server::start_services(
        ingestor,
        ca,
        enroll,
        tls_config,
        config.listen.mtls,
        config.listen.metrics,
    )
    .await?;
    Ok(Started {
        server,
        pool,
        retention,
    })
}

/// Run the retention job now and then every `interval` until `cancel`. A run in progress when
/// `cancel` fires is rolled back (its transaction is dropped), never half applied.
pub async fn retention_schedule(
    pool: deadpool_postgres::Pool,
    policy: retention::RetentionPolicy,
    interval: Duration,
    cancel: CancellationToken,
) {
    tracing::info!(
        every_s = interval.as_secs(),
        years_after_invalid = policy.years_after_invalid,
        government_years_after_expiry = policy.government_years_after_expiry,
        months_after_cancellation = policy.months_after_cancellation,
        "retention scheduled"
    );
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let run = async {
            let mut conn = pool.get().await?;
            let client: &mut tokio_postgres::Client = &mut conn;
            retention::run_exclusive(client, time::OffsetDateTime::now_utc(), &policy).await
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = run => if let Err(e) = r {
                tracing::error!(error = %e, "retention run failed; retried at the next interval");
            }
        }
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// The whole service: start, `READY=1`, serve and run retention until SIGTERM or SIGINT, then
/// `STOPPING=1` and drain. Returns once everything stopped.
pub async fn run(config: HqConfig) -> Result<(), ServiceError> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed first: a SIGTERM during start-up must not kill the process half way.
    let mut term = signal(SignalKind::terminate()).map_err(ServiceError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServiceError::Signals)?;
    let started = start(&config).await?;
    let cancel = CancellationToken::new();
    let retention = started.retention.map(|(policy, every)| {
        tokio::spawn(retention_schedule(
            started.pool.clone(),
            policy,
            every,
            cancel.clone(),
        ))
    });
    let addr = started.server.addr;
    let status = format!("serving kiosks on {addr}");
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    tracing::info!(%addr, metrics = ?started.server.metrics_addr, enroll = ?started.server.enroll_addr, "hq-ingest ready");
    println!("listening on {addr}");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("draining requests in flight"),
    ]);
    cancel.cancel();
    let drained = started.server.shutdown().await;
    if let Some(task) = retention {
        let _ = task.await;
    }
    started.pool.close();
    tracing::info!(drained, "hq-ingest stopped");
    Ok(())
}
