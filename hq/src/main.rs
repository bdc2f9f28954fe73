//! hq-ingest: receives, verifies, decrypts and stores kiosk records in PostgreSQL.
//!
//! As a service: `hq-ingest --config /etc/hq-ingest/hq-ingest.toml` (see [`hq_ingest::config`];
//! `hq-ingest check-config FILE` validates such a file). Subcommands: `serve` (the same service
//! from flags), `migrate`, `register-kiosk`, `retention`, `dev-pki`, `local` (the
//! whole HQ for one kiosk on loopback, started by kioskd in `hq.mode = "local"`),
//! `dev-kiosk-send`. `serve --ca-cert --ca-key` (and always `local`) also serve the CA that
//! issues applicants' certificates.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use hq_ingest::config::{self, HqConfig};
use hq_ingest::{ca, db, dev_pki, keys, retention, service, tls};

#[derive(Parser)]
#[command(
    name = "hq-ingest",
    version,
    about = "HQ receiving service for kioskd records",
    long_about = "HQ receiving service for kioskd records: verifies, decrypts and stores the \
                  batches kiosks send over mutual TLS in PostgreSQL, witnesses every kiosk's \
                  audit log, runs retention and (optionally) the CA issuing applicants' \
                  certificates. As a service: `hq-ingest --config /etc/hq-ingest/hq-ingest.toml`."
)]
struct Cli {
    /// Run the service from this configuration file (TOML; see `check-config`). Notifies
    /// systemd when ready (Type=notify) and drains requests in flight on SIGTERM.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run the mTLS ingest service.
    Serve {
        /// libpq connection string.
        #[arg(long, env = "HQ_DATABASE_URL")]
        database_url: String,
        /// mTLS listen address.
        #[arg(long, default_value = "0.0.0.0:8443")]
        listen: SocketAddr,
        /// Plain HTTP listener for /health and /metrics.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// CA that issued kiosk client certificates (PEM).
        #[arg(long)]
        kiosk_ca: PathBuf,
        /// Server certificate chain (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Server private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// HQ record-decryption key (hex, software key).
        #[arg(long)]
        record_key: PathBuf,
        /// HQ witness signing key (hex SM2 scalar).
        #[arg(long)]
        witness_key: PathBuf,
        /// Witness key name in cosignature lines.
        #[arg(long, default_value = "hq-witness")]
        witness_name: String,
        /// Database pool size.
        #[arg(long, default_value_t = 16)]
        pool_size: usize,
        /// Issuing CA certificate (PEM) for applicants' certificates: with `--ca-key`, serves
        /// the CA (EST enroll/re-enroll, revoke, hold, release, status) to kiosks.
        #[arg(long, requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// The issuing CA's private key (PKCS#8 PEM, P-256 or SM2).
        #[arg(long, requires = "ca_cert")]
        ca_key: Option<PathBuf>,
        /// Longest validity of issued certificates, in days (caps the issuance policy's).
        #[arg(long, default_value_t = 365)]
        ca_validity_days: u32,
        /// Issuance policy (TOML, see hq/policy/issuance.toml, the embedded default).
        #[arg(long)]
        issuance_policy: Option<PathBuf>,
        /// Kiosk CRL written by `revoke-kiosk`; reloaded whenever it changes.
        #[arg(long)]
        kiosk_crl: Option<PathBuf>,
        /// Serve kiosk enrollment (`kioskctl provision`) on this TLS listener, without client
        /// certificates; needs `--kiosk-ca-key`.
        #[arg(long, requires = "kiosk_ca_key")]
        enroll_listen: Option<SocketAddr>,
        /// The kiosk CA's private key (PKCS#8 PEM; its certificate is `--kiosk-ca`), which
        /// signs the client certificates of enrolled kiosks.
        #[arg(long, requires = "enroll_listen")]
        kiosk_ca_key: Option<PathBuf>,
    },
    /// Make a one-time enrollment code for a new kiosk and print it (once: HQ keeps only its
    /// hash). The kiosk runs `kioskctl provision --code CODE` against the enrollment listener
    /// within `--ttl-minutes`; the code then no longer works.
    EnrollKiosk {
        /// Kiosk id (its client certificate CN; kioskd's `kiosk.id`).
        #[arg(long)]
        id: String,
        /// Branch office the kiosk stands in.
        #[arg(long)]
        branch: String,
        /// The service's configuration file (for its database settings).
        #[arg(long, value_name = "FILE", conflicts_with = "database_url")]
        config: Option<PathBuf>,
        /// libpq connection string (instead of `--config`).
        #[arg(long, env = "HQ_DATABASE_URL")]
        database_url: Option<String>,
        /// Minutes the code stays valid (0: expired at once).
        #[arg(long, default_value_t = 24 * 60)]
        ttl_minutes: u64,
        /// The HQ operator making it (audit).
        #[arg(long, env = "USER", default_value = "hq-operator")]
        operator: String,
    },
    /// Revoke a kiosk: refused by the CA routes and on every new connection, its client
    /// certificates put on the kiosk CRL (signed with the kiosk CA's key, written to `--crl`,
    /// which `serve --kiosk-crl` loads), audited in `ca_audit`.
    RevokeKiosk {
        /// libpq connection string.
        #[arg(long, env = "HQ_DATABASE_URL")]
        database_url: String,
        /// Kiosk id (client certificate CN).
        #[arg(long)]
        id: String,
        /// The kiosk CA's certificate (PEM).
        #[arg(long)]
        kiosk_ca: PathBuf,
        /// The kiosk CA's private key (PKCS#8 PEM).
        #[arg(long)]
        kiosk_ca_key: PathBuf,
        /// The kiosk CRL file to write.
        #[arg(long)]
        crl: PathBuf,
        /// A client certificate of the kiosk not yet seen by HQ (PEM), also revoked.
        #[arg(long)]
        cert: Vec<PathBuf>,
        /// RFC 5280 reason.
        #[arg(long, default_value = "keyCompromise")]
        reason: String,
        /// The HQ operator doing it (audit).
        #[arg(long, env = "USER", default_value = "hq-operator")]
        operator: String,
    },
    /// HQ staff changes a certificate's status (revoke, hold, release) without a kiosk, e.g.
    /// on a holder's written request at HQ; audited in `ca_audit` under the operator's name.
    CaStatus {
        /// libpq connection string.
        #[arg(long, env = "HQ_DATABASE_URL")]
        database_url: String,
        /// Certificate serial (hex).
        #[arg(long)]
        serial: String,
        /// `revoke`, `hold` or `release`.
        #[arg(long)]
        action: String,
        /// RFC 5280 reason of a revocation.
        #[arg(long, default_value = "unspecified")]
        reason: String,
        /// The HQ operator doing it (audit).
        #[arg(long, env = "USER", default_value = "hq-operator")]
        operator: String,
        /// The issuing CA's certificate (PEM).
        #[arg(long)]
        ca_cert: PathBuf,
        /// The issuing CA's private key (PKCS#8 PEM).
        #[arg(long)]
        ca_key: PathBuf,
    },
    /// Validate a configuration file: print its problems and exit 1, or print the effective
    /// configuration (secrets appear as their file or credential names only).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Apply database migrations.
    Migrate {
        /// libpq connection string.
        #[arg(long, env = "HQ_DATABASE_URL")]
        database_url: String,
    },
    /// Register a kiosk's envelope-signing public key (JSON from the kiosk).
    RegisterKiosk {
        /// libpq connection string.
        #[arg(long, env = "HQ_DATABASE_URL")]
        database_url: String,
        /// Kiosk id (= client certificate CN).
        #[arg(long)]
        kiosk_id: String,
        /// Public key JSON file (`algorithm`, `public_key_hex`, `sm2_distid`).
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Run the retention job once (the service also runs it on a schedule).
    Retention {
        /// libpq connection string.
        #[arg(long, env = "HQ_DATABASE_URL")]
        database_url: String,
        /// Privacy catalog whose `[hq_retention]` gives the periods (default: the built-in one).
        #[arg(long)]
        catalog: Option<PathBuf>,
    },
    /// Test/demo kiosk sender: drains pre-sealed envelopes from a durable file queue
    /// (`batch-00000001.cbor`, ...; progress in `acked`) to HQ, retrying transport failures.
    DevKioskSend {
        /// Queue directory.
        #[arg(long)]
        queue: PathBuf,
        /// HQ address `host:port`.
        #[arg(long)]
        hq: String,
        /// HQ CA (PEM).
        #[arg(long)]
        ca: PathBuf,
        /// Kiosk client certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Kiosk client key (PEM).
        #[arg(long)]
        key: PathBuf,
    },
    /// The whole HQ on loopback for one kiosk (kioskd's local mode): PostgreSQL, demo PKI and
    /// the mTLS service, all kept in `--dir`. Registers the kiosk's device key, issues its
    /// client certificate, prints one JSON line (`records::client::LocalHqReady`) on stdout
    /// once serving, and stops on SIGTERM/SIGINT or when stdin closes (its parent went away).
    Local {
        /// State directory (`pki/`, `pg/`).
        #[arg(long)]
        dir: PathBuf,
        /// Kiosk id (client certificate CN).
        #[arg(long)]
        kiosk_id: String,
        /// The kiosk's device-key verifier JSON (`algorithm`, `public_key_hex`, `sm2_distid`).
        #[arg(long)]
        kiosk_verifier: PathBuf,
        /// Key type of the demo issuing CA: `p256`, or `sm2` for a kiosk issuing SM2
        /// certificates (the CA then signs SM2-with-SM3).
        #[arg(long, default_value = "p256")]
        issuing_ca: hq_ingest::dev_pki::IssuingAlgorithm,
    },
    /// Write a demo PKI (CA, server and kiosk certificates, HQ keys) into a directory.
    DevPki {
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(conn);
    Ok(client)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli: Cli = kiosk_config::cli_docs::parse();
    let command = match (cli.command, cli.config) {
        (Some(command), None) => command,
        (None, Some(file)) => return run_service(&file).await,
        (Some(_), Some(_)) => {
            anyhow::bail!("--config runs the service: give it without a subcommand")
        }
        (None, None) => {
            Cli::command().print_help()?;
            std::process::exit(2);
        }
    };
    match command {
        Cmd::Serve {
            database_url,
            listen,
            metrics_listen,
            kiosk_ca,
            cert,
            key,
            record_key,
            witness_key,
            witness_name,
            pool_size,
            ca_cert,
            ca_key,
            ca_validity_days,
            issuance_policy,
            kiosk_crl,
            enroll_listen,
            kiosk_ca_key,
        } => {
            let serve = HqConfig {
                database: config::DatabaseSection {
                    url: database_url,
                    password: None,
                    pool_size,
                },
                listen: config::ListenSection {
                    mtls: listen,
                    metrics: metrics_listen,
                },
                tls: config::TlsSection {
                    kiosk_ca,
                    cert,
                    key: config::SecretRef::File(key),
                    kiosk_crl,
                },
                keys: config::KeysSection {
                    record_key: config::SecretRef::File(record_key),
                    witness_key: config::SecretRef::File(witness_key),
                    witness_name,
                },
                ca: match (ca_cert, ca_key) {
                    (Some(cert), Some(key)) => Some(config::CaSection {
                        cert,
                        key: config::SecretRef::File(key),
                        validity_days: ca_validity_days,
                        issuance_policy,
                    }),
                    _ => None,
                },
                // Retention runs from the configured service (or `hq-ingest retention`).
                retention: config::RetentionSection {
                    enabled: false,
                    ..Default::default()
                },
                enroll: match (enroll_listen, kiosk_ca_key) {
                    (Some(listen), Some(key)) => Some(config::EnrollSection {
                        listen,
                        kiosk_ca_key: config::SecretRef::File(key),
                        validity_days: 365,
                    }),
                    _ => None,
                },
            };
            service::run(serve).await?;
        }
        Cmd::CheckConfig { file } => check_config(&file),
        Cmd::EnrollKiosk {
            id,
            branch,
            config,
            database_url,
            ttl_minutes,
            operator,
        } => {
            let pg = match (config, database_url) {
                (Some(file), _) => {
                    let config = HqConfig::load(&file)
                        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
                    service::database_config(&config)?
                }
                (None, Some(url)) => url.parse().context("--database-url")?,
                (None, None) => anyhow::bail!("give --config FILE or --database-url"),
            };
            let (mut client, conn) = pg
                .connect(tokio_postgres::NoTls)
                .await
                .context("connecting to PostgreSQL")?;
            tokio::spawn(conn);
            db::migrate(&mut client).await?;
            let ttl = std::time::Duration::from_secs(ttl_minutes.saturating_mul(60));
            let issued =
                hq_ingest::enroll::create_code(&mut client, &id, &branch, ttl, &operator).await?;
            let expires = issued
                .expires_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            // The code on stdout alone (scripts read it); the rest on stderr.
            println!("{}", issued.code.grouped().as_str());
            eprintln!(
                "enrollment code for kiosk {id} at {branch}, valid once until {expires}: on the kiosk run\n  kioskctl provision --hq https://<this HQ>:<enroll port> --ca-cert hq-ca.pem --code <the code>"
            );
        }
        Cmd::RevokeKiosk {
            database_url,
            id,
            kiosk_ca,
            kiosk_ca_key,
            crl,
            cert,
            reason,
            operator,
        } => {
            let mut serials = Vec::new();
            for path in &cert {
                let pem =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                for der in tls::certs_from_pem(&pem, "kiosk certificate")? {
                    serials.push(tls::serial_hex(&der).context("unparsable kiosk certificate")?);
                }
            }
            let signer = ca::Issuer::load(&kiosk_ca, &kiosk_ca_key, ca::DEFAULT_VALIDITY)?;
            db::migrate(&mut connect(&database_url).await?).await?;
            let pool = db::pool(&database_url, 2)?;
            let report = hq_ingest::kiosk_revocation::revoke_kiosk(
                &pool, &id, &serials, &reason, &operator, &signer, &crl,
            )
            .await?;
            println!(
                "revoked {id} (registered: {}); {} certificate(s) of it and {} in all on {}",
                report.registered,
                report.serials.len(),
                report.crl_entries,
                crl.display()
            );
        }
        Cmd::CaStatus {
            database_url,
            serial,
            action,
            reason,
            operator,
            ca_cert,
            ca_key,
        } => {
            let change = match action.as_str() {
                "revoke" => ca::StatusChange::Revoke(&reason),
                "hold" => ca::StatusChange::Hold,
                "release" => ca::StatusChange::Release,
                other => anyhow::bail!("--action is revoke, hold or release, not {other:?}"),
            };
            db::migrate(&mut connect(&database_url).await?).await?;
            let issuer = ca::Issuer::load(&ca_cert, &ca_key, ca::DEFAULT_VALIDITY)?;
            let service = ca::CaService::new(issuer, db::pool(&database_url, 2)?)?;
            let actor = ca::Actor::HqStaff(operator);
            match service.change_status(&actor, &serial, change, None).await {
                Ok(status) => println!("{}", serde_json::to_string(&status)?),
                Err(e) => {
                    service
                        .audit_refusal(&actor, change.action(), Some(&serial), &e)
                        .await;
                    return Err(e.into());
                }
            }
        }
        Cmd::Migrate { database_url } => {
            let applied = db::migrate(&mut connect(&database_url).await?).await?;
            println!("applied migrations: {applied:?}");
        }
        Cmd::RegisterKiosk {
            database_url,
            kiosk_id,
            public_key,
        } => {
            let text = std::fs::read_to_string(&public_key)
                .with_context(|| format!("reading {}", public_key.display()))?;
            let key = keys::verifier_from_json(&text)?;
            db::register_kiosk(&connect(&database_url).await?, &kiosk_id, &key).await?;
            println!("registered {kiosk_id}");
        }
        Cmd::Retention {
            database_url,
            catalog,
        } => {
            let catalog = kiosk_config::Catalog::load(catalog.as_deref())?;
            let report = retention::run(
                &mut connect(&database_url).await?,
                time::OffsetDateTime::now_utc(),
                &retention::RetentionPolicy::from_catalog(&catalog),
            )
            .await?;
            println!("{report:?}");
        }
        Cmd::DevKioskSend {
            queue,
            hq,
            ca,
            cert,
            key,
        } => {
            let client = hq_ingest::client::HqClient::new(
                &hq,
                "localhost",
                &std::fs::read(&ca)?,
                &std::fs::read(&cert)?,
                &tls::ClientKey::Pem(std::fs::read(&key)?),
            )?;
            let sent = hq_ingest::dev_queue::drain(&queue, &client).await?;
            println!("drained through batch {sent}");
        }
        Cmd::Local {
            dir,
            kiosk_id,
            kiosk_verifier,
            issuing_ca,
        } => {
            if let Err(e) = run_local(&dir, &kiosk_id, &kiosk_verifier, issuing_ca).await {
                // Where kioskd waits for the ready line: one line saying why, nothing more
                // (kioskd logs it once, not once per retry).
                let why = match e.downcast_ref::<hq_ingest::local::LocalHqError>() {
                    Some(e) => e.one_line(),
                    None => format!("{e:#}").replace('\n', "; "),
                };
                println!("{}", serde_json::json!({ "error": why }));
                std::process::exit(1);
            }
        }
        Cmd::DevPki { dir } => {
            let pki = dev_pki::generate(&dir)?;
            println!("{pki:#?}");
        }
    }
    Ok(())
}

/// `hq-ingest --config FILE`.
async fn run_service(file: &std::path::Path) -> anyhow::Result<()> {
    let config =
        HqConfig::load(file).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    service::run(config).await?;
    Ok(())
}

/// `hq-ingest check-config FILE`: problems on stderr and exit 1, or the effective
/// configuration on stdout; files that cannot be read yet are named on stderr.
fn check_config(file: &std::path::Path) {
    let config = match HqConfig::load(file) {
        Ok(c) => c,
        Err(e) => {
            for p in e.problems() {
                eprintln!("{p}");
            }
            std::process::exit(1);
        }
    };
    if let Err(e) = config.retention_policy() {
        for p in e.problems() {
            eprintln!("{p}");
        }
        std::process::exit(1);
    }
    print!("{}", config.effective_toml());
    for (key, source) in config.referenced_files() {
        let path = match source.strip_prefix(config::CREDENTIAL_PREFIX) {
            Some(name) => match std::env::var_os(config::CREDENTIALS_ENV) {
                Some(dir) => std::path::Path::new(&dir).join(name),
                // Only the service's own environment has it: nothing to check here.
                None => continue,
            },
            None => PathBuf::from(&source),
        };
        if let Err(e) = std::fs::metadata(&path) {
            eprintln!(
                "note: {key}: {}: {e} (needed when the service starts)",
                path.display()
            );
        }
    }
}

async fn run_local(
    dir: &std::path::Path,
    kiosk_id: &str,
    kiosk_verifier: &std::path::Path,
    issuing_ca: hq_ingest::dev_pki::IssuingAlgorithm,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let text = std::fs::read_to_string(kiosk_verifier)
        .with_context(|| format!("reading {}", kiosk_verifier.display()))?;
    let verifier = keys::verifier_from_json(&text)?;
    let mut term = signal(SignalKind::terminate())?;
    let hq = hq_ingest::local::LocalHq::open_issuing(dir, issuing_ca).await?;
    hq.register_kiosk(kiosk_id, &verifier).await?;
    let (client_cert, client_key) = hq.pki.kiosk_files(kiosk_id)?;
    let ready = records::client::LocalHqReady {
        url: format!("https://{}", hq.server.addr),
        ca_cert: hq.pki.ca_cert.clone(),
        client_cert,
        client_key,
        record_public: hq.pki.record_public.clone(),
        witness_public: hq.pki.witness_public.clone(),
    };
    println!("{}", serde_json::to_string(&ready)?);
    tracing::info!(url = %ready.url, kiosk = kiosk_id, "local HQ serving");
    // The parent holds our stdin open while it lives. It is watched from a plain thread, not
    // `tokio::io::stdin` (a runtime blocking task): the runtime waits for its blocking tasks
    // when it shuts down, and a read that never returns kept this process alive until the
    // parent's grace period ran out and it was killed.
    let (stdin_closed_tx, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            use std::io::Read as _;
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 64];
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = stdin_closed_tx.send(());
        })
        .context("starting the parent watch thread")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = stdin_closed => {}
    }
    tracing::info!("local HQ stopping");
    hq.shutdown().await;
    Ok(())
}
