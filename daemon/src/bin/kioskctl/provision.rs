//! `kioskctl provision --hq URL --code CODE --ca-cert HQ_CA.pem`: enroll this kiosk at HQ with
//! a one-time code from `hq-ingest enroll-kiosk`.
//!
//! On kioskd's device token as configured (`[token]`; the user PIN from `KIOSK_PIN`, else the
//! configured `token.device_pin_file` or `token.device_pin`), the device key that signs
//! envelopes and the P-256 TLS key are made if missing, by the same code kioskd uses
//! (`kioskd::token_keys`, `kioskd::sync::hq_client`); a PKCS#10 request for the TLS key is
//! signed on the token (no private key leaves it) and sent with the code and the device key's
//! verifier over TLS 1.3 to HQ's enrollment listener, pinned to the given HQ CA. HQ answers
//! with the kiosk's client certificate and its record-encryption keys, written where
//! `[hq]` names them (`ca_cert`, `client_cert`, `record_key`; unset: under the data directory
//! in `hq/`), and HQ's audit witness key where `[hq] witness_key` names it (unset:
//! `hq/hq-witness-key.json` under the data directory). The store lock is held throughout: provisioning is refused while kioskd runs
//! on this store, and kioskd cannot start half way through.
//!
//! Errors are one line on stderr (exit status 2); the code is never printed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use hsm::{Pin, TokenError, UserKind};
use kiosk_config::{HqMode, LoadOptions, LoadedConfig};
use kioskd::sync::hq_client::{TLS_KEY_LABEL, ensure_tls_key};
use kioskd::token_keys::{self, DeviceTokenError};
use records::client::enroll::{ENROLL_PATH, EnrollAnswer, EnrollRefusal, EnrollRequest};
use zeroize::Zeroizing;

use crate::staff::{DaemonConfigArgs, PACKAGED_CONFIG};

#[derive(clap::Args)]
pub struct ProvisionArgs {
    /// HQ's enrollment listener, `https://host:port` (hq-ingest's `[enroll] listen`).
    #[arg(long, value_name = "URL")]
    hq: String,
    /// The one-time enrollment code from `hq-ingest enroll-kiosk` (dashes and case do not
    /// matter).
    #[arg(long, env = "KIOSK_ENROLL_CODE", hide_env_values = true)]
    code: String,
    /// HQ's CA certificate (PEM): the only CA trusted for this connection, and the one
    /// written for kioskd (`hq.ca_cert`).
    #[arg(long, value_name = "FILE")]
    ca_cert: PathBuf,
    #[command(flatten)]
    daemon: DaemonConfigArgs,
    /// Seconds to wait for HQ.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

/// Why provisioning failed (one line each).
#[derive(Debug, thiserror::Error)]
enum ProvisionError {
    #[error("{0}")]
    Config(String),
    #[error(
        "kioskd ({pid}) runs on this store; stop it first (systemctl stop kioskd), then provision"
    )]
    DaemonRuns { pid: String },
    #[error("{0}")]
    Lock(kioskd::lock::LockError),
    #[error(transparent)]
    DeviceToken(#[from] DeviceTokenError),
    #[error("device token: {0}")]
    Token(#[from] TokenError),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("HQ CA certificate {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("HQ unreachable at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "CA mismatch: the server at {url} does not present a certificate of the CA in {ca} ({reason})"
    )]
    CaMismatch {
        url: String,
        ca: String,
        reason: String,
    },
    #[error("HQ refused the enrollment: {message} ({code})")]
    Refused { code: String, message: String },
    #[error("unexpected answer from HQ: {0}")]
    BadAnswer(String),
}

type Result<T> = std::result::Result<T, ProvisionError>;

pub fn run(args: ProvisionArgs) -> ExitCode {
    let runtime = match crate::runtime("provision", true) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(provision(args)) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kioskctl provision: {e}");
            ExitCode::from(2)
        }
    }
}

/// kioskd's configuration, loaded as kioskd loads it (secrets included: provisioning logs in
/// to the device token).
fn load_config(args: &DaemonConfigArgs) -> Result<LoadedConfig> {
    let file = args.config.clone().or_else(|| {
        (args.data_dir.is_none() && Path::new(PACKAGED_CONFIG).is_file())
            .then(|| PathBuf::from(PACKAGED_CONFIG))
    });
    // The files provisioning writes need not exist yet.
    kiosk_config::load_before_writing(
        LoadOptions {
            file: file.as_deref(),
            data_dir: args.data_dir.as_deref(),
        },
        &[
            "hq.ca_cert",
            "hq.client_cert",
            "hq.record_key",
            "hq.witness_key",
        ],
    )
    .map_err(|e| {
        let origin = file
            .as_deref()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "the built-in configuration".into());
        ProvisionError::Config(format!("{origin}: {}", e.problems().join("; ")))
    })
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> ProvisionError + '_ {
    move |source| ProvisionError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Write `bytes` to `path` whole or not at all (a temporary file renamed over it).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(file_error(dir))?;
    }
    let tmp = path.with_extension("provision.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(file_error(&tmp))?;
    file.write_all(bytes).map_err(file_error(&tmp))?;
    file.sync_all().map_err(file_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(file_error(path))
}

/// The error with its causes, on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text.replace('\n', " ")
}

/// Where kioskd reads what provisioning writes: the configured `[hq]` paths, else defaults
/// under the data directory.
struct Targets {
    ca_cert: PathBuf,
    client_cert: PathBuf,
    record_key: PathBuf,
    /// HQ's witness key, for kioskd's `[hq] witness_key`.
    witness_key: PathBuf,
}

fn targets(loaded: &LoadedConfig) -> Targets {
    let hq = &loaded.config.hq;
    let pick = |configured: &Option<PathBuf>, default: &str| match configured {
        Some(p) => loaded.resolve(p),
        None => loaded.data_dir().join("hq").join(default),
    };
    Targets {
        ca_cert: pick(&hq.ca_cert, "hq-ca.pem"),
        client_cert: pick(&hq.client_cert, "kiosk.pem"),
        record_key: pick(&hq.record_key, "hq-record-key.json"),
        witness_key: pick(&hq.witness_key, "hq-witness-key.json"),
    }
}

async fn provision(mut args: ProvisionArgs) -> Result<String> {
    // Wiped however this returns.
    let code = Zeroizing::new(std::mem::take(&mut args.code));
    let loaded = load_config(&args.daemon)?;
    let config = &loaded.config;
    let kiosk_id = config.kiosk.id.clone();
    if config.hq.client_key.is_some() {
        return Err(ProvisionError::Config(
            "hq.client_key is set: kioskd would present that key, not the device token's TLS key this certificate is for; remove hq.client_key first".into(),
        ));
    }
    let url = args.hq.trim_end_matches('/').to_owned();
    if !url.starts_with("https://") {
        return Err(ProvisionError::Config(format!(
            "--hq {url}: give HQ's enrollment listener as https://host:port"
        )));
    }
    let ca_path = args.ca_cert.display().to_string();
    let ca_pem = std::fs::read(&args.ca_cert).map_err(file_error(&args.ca_cert))?;
    let roots =
        reqwest::Certificate::from_pem_bundle(&ca_pem).map_err(|e| ProvisionError::CaFile {
            path: ca_path.clone(),
            reason: e.to_string(),
        })?;
    if roots.is_empty() {
        return Err(ProvisionError::CaFile {
            path: ca_path,
            reason: "holds no certificate".into(),
        });
    }

    // One owner of the store and the device token: refused while kioskd runs, and kioskd
    // cannot start until provisioning is done.
    let data_dir = loaded.data_dir().to_path_buf();
    std::fs::create_dir_all(&data_dir).map_err(file_error(&data_dir))?;
    let store_path = loaded.resolve(&config.store.path);
    let _lock = kioskd::lock::DaemonLock::acquire(&store_path).map_err(|e| match e {
        kioskd::lock::LockError::Held { pid, .. } => ProvisionError::DaemonRuns {
            pid: pid.map_or_else(|| "pid unknown".into(), |p| format!("pid {p}")),
        },
        other => ProvisionError::Lock(other),
    })?;

    let pin = match std::env::var("KIOSK_PIN") {
        Ok(pin) => Pin::new(pin),
        Err(_) => token_keys::device_pin(&loaded)?,
    };
    let provider = hsm::open_provider(&config.token, &data_dir)?;
    let token = token_keys::open_device_token(&loaded, &provider, &pin).await?;
    if !token.is_logged_in() {
        // Once: a wrong PIN must not burn the token's retries.
        token.login(UserKind::User, &pin).await?;
    }
    drop(pin);
    let device_key = token_keys::ensure_device_key(
        &token,
        &config.token.device_key,
        token_keys::device_key_algorithm(config.hq.suite),
    )
    .await?;
    let verifier = token_keys::verifier_of(&device_key, token.as_ref());
    let tls_key = ensure_tls_key(&token).await?;
    let csr = hsm::csr::build_csr(token.as_ref(), TLS_KEY_LABEL, &format!("CN={kiosk_id}")).await?;

    let request = EnrollRequest {
        // The request wipes its copy when dropped.
        code: code.as_str().to_owned(),
        kiosk_id: kiosk_id.clone(),
        csr_pem: csr.pem.clone(),
        device_key: records::public_keys::verifier_to_json(&verifier),
    };
    let answer = send(&url, &ca_path, roots, &request, args.timeout_secs).await?;
    drop(request);

    // What HQ certified must be this kiosk's TLS key under this kiosk's id.
    let chain = answer.certificate_chain_pem.as_bytes();
    let leaf = hsm::csr::certificate_der(chain)
        .map_err(|e| ProvisionError::BadAnswer(format!("certificate chain: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| ProvisionError::BadAnswer(format!("certificate: {e}")))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok());
    if cn != Some(kiosk_id.as_str()) {
        return Err(ProvisionError::BadAnswer(format!(
            "the certificate names {cn:?}, not this kiosk {kiosk_id:?}"
        )));
    }
    if cert.public_key().subject_public_key.data.as_ref() != tls_key.public_key.as_slice() {
        return Err(ProvisionError::BadAnswer(
            "the certificate is not for this kiosk's TLS key".into(),
        ));
    }
    records::public_keys::recipient_public_from_json(&answer.record_public)
        .map_err(|e| ProvisionError::BadAnswer(format!("record_public: {e}")))?;
    records::public_keys::verifier_from_json(&answer.witness_public)
        .map_err(|e| ProvisionError::BadAnswer(format!("witness_public: {e}")))?;

    let targets = targets(&loaded);
    write_atomic(&targets.ca_cert, &ca_pem)?;
    write_atomic(&targets.client_cert, chain)?;
    write_atomic(&targets.record_key, answer.record_public.as_bytes())?;
    write_atomic(&targets.witness_key, answer.witness_public.as_bytes())?;

    let mut report = format!(
        "provisioned kiosk {} (branch {}): client certificate serial {} for the device token's key {TLS_KEY_LABEL}\n\
         wrote {}\n      {}\n      {}\n      {} (HQ's audit witness key {:?}: kioskd's [hq] witness_key, witness_name)\n",
        answer.kiosk_id,
        answer.branch,
        answer.serial,
        targets.client_cert.display(),
        targets.ca_cert.display(),
        targets.record_key.display(),
        targets.witness_key.display(),
        answer.witness_name,
    );
    let hq = &config.hq;
    if hq.mode != HqMode::Remote
        || hq.url.is_none()
        || hq.ca_cert.is_none()
        || hq.client_cert.is_none()
        || hq.record_key.is_none()
        || hq.witness_key.is_none()
    {
        report.push_str(&format!(
            "kioskd's configuration needs, in [hq]:\n  mode = \"remote\"\n  url = \"https://<HQ>:8443\"   # hq-ingest's mTLS listener\n  ca_cert = \"{}\"\n  client_cert = \"{}\"\n  record_key = \"{}\"\n  witness_key = \"{}\"\n",
            targets.ca_cert.display(),
            targets.client_cert.display(),
            targets.record_key.display(),
            targets.witness_key.display(),
        ));
    }
    Ok(report)
}

/// POST the request to HQ's enrollment route over TLS 1.3 pinned to `roots`.
async fn send(
    url: &str,
    ca_path: &str,
    roots: Vec<reqwest::Certificate>,
    request: &EnrollRequest,
    timeout_secs: u64,
) -> Result<EnrollAnswer> {
    let timeout = Duration::from_secs(timeout_secs.max(1));
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(true)
        .min_tls_version(reqwest::tls::Version::TLS_1_3)
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(concat!("kioskctl/", env!("CARGO_PKG_VERSION")));
    for root in roots {
        builder = builder.add_root_certificate(root);
    }
    let client = builder
        .build()
        .map_err(|e| ProvisionError::Config(format!("TLS client: {}", error_chain(&e))))?;
    let body = Zeroizing::new(
        serde_json::to_vec(request).map_err(|e| ProvisionError::Config(e.to_string()))?,
    );
    let response = client
        .post(format!("{url}{ENROLL_PATH}"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| {
            let reason = error_chain(&e);
            if reason.contains("invalid peer certificate") || reason.contains("UnknownIssuer") {
                ProvisionError::CaMismatch {
                    url: url.to_owned(),
                    ca: ca_path.to_owned(),
                    reason,
                }
            } else {
                ProvisionError::Unreachable {
                    url: url.to_owned(),
                    reason,
                }
            }
        })?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ProvisionError::Unreachable {
            url: url.to_owned(),
            reason: error_chain(&e),
        })?;
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .map_err(|e| ProvisionError::BadAnswer(format!("status {status}: {e}")));
    }
    match serde_json::from_slice::<EnrollRefusal>(&bytes) {
        Ok(refusal) => Err(ProvisionError::Refused {
            code: refusal.error,
            message: refusal.message.replace('\n', " "),
        }),
        Err(_) => Err(ProvisionError::BadAnswer(format!(
            "status {status} from {url}{ENROLL_PATH} (is this HQ's enrollment listener?)"
        ))),
    }
}
