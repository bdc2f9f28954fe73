//! `kioskctl staff`: the staff desk through the running kioskd, over its Unix socket with
//! [`kioskd::client`]: status, audit, batch issuance, rights requests, reveal, outbox status.
//! kioskd stays the only owner of the tokens, the store and the audit log: every action is
//! checked and audited there. Each command logs in with the staff UKEY (PIN from `KIOSK_PIN`
//! or a no-echo prompt, never a flag) and logs out at the end.
//!
//! Exit status: 0 done; 1 kioskd refused (its error code and message are printed), or the
//! audit log is not intact; 2 kioskd cannot be reached or the input is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use kioskd::client::{BatchRequest, BatchState, Client, ClientError, SecretString};
use serde::Serialize;

/// The socket used when neither `--socket` nor a configuration names one.
pub const DEFAULT_SOCKET: &str = "/run/kioskd/kioskd.sock";

/// The configuration the packaged systemd unit runs kioskd with.
pub const PACKAGED_CONFIG: &str = "/etc/kioskd/kioskd.toml";

/// Where kioskd's configuration is (shared with `kioskctl token`'s device-token check).
#[derive(clap::Args, Clone, Debug)]
pub struct DaemonConfigArgs {
    /// kioskd's configuration file (for its socket, store and device token).
    #[arg(long, env = "KIOSKD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// kioskd's data directory; overrides the file's kiosk.data_dir.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DaemonConfigArgs {
    /// kioskd's configuration as kioskd would read it (parsed, not validated: its secret
    /// files need not be readable by staff), with the data directory made absolute. Without
    /// `--config` and `--data-dir`, the packaged [`PACKAGED_CONFIG`] when it exists and can be
    /// read (the systemd unit runs kioskd on it), else `None`.
    pub fn load(&self) -> Result<Option<kiosk_config::Config>, String> {
        if self.config.is_none() && self.data_dir.is_none() {
            let packaged = DaemonConfigArgs {
                config: Some(PathBuf::from(PACKAGED_CONFIG)),
                data_dir: None,
            };
            return Ok(Path::new(PACKAGED_CONFIG)
                .is_file()
                .then(|| packaged.load().ok().flatten())
                .flatten());
        }
        let mut config = match &self.config {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                let mut config = kiosk_config::parse(&text, Some(file))
                    .map_err(|e| format!("{}: {}", file.display(), e.problems().join("; ")))?;
                if config.kiosk.data_dir.is_relative() {
                    let base = file.parent().unwrap_or(Path::new("."));
                    config.kiosk.data_dir = base.join(&config.kiosk.data_dir);
                }
                config
            }
            None => kiosk_config::Config::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.kiosk.data_dir = dir.clone();
        }
        if config.kiosk.data_dir.is_relative() {
            let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
            config.kiosk.data_dir = cwd.join(&config.kiosk.data_dir);
        }
        Ok(Some(config))
    }
}

#[derive(clap::Args)]
pub struct StaffArgs {
    /// kioskd's Unix socket (default: the configuration's api.unix_socket, else
    /// /run/kioskd/kioskd.sock).
    #[arg(long, value_name = "PATH", global = true)]
    socket: Option<PathBuf>,
    #[command(flatten)]
    daemon: DaemonConfigArgs,
    /// Label of the staff UKEY to log in with (default: the demo staff token of a demo
    /// configuration).
    #[arg(long, env = "KIOSK_STAFF_TOKEN", value_name = "LABEL", global = true)]
    token: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: StaffCommand,
}

#[derive(clap::Subcommand)]
enum StaffCommand {
    /// Sync backlog and last HQ contact, open rights requests, audit log, devices.
    Status,
    /// The most recent audit entries (no identities, no personal data) and the log's
    /// verification; exit 1 when the log is not intact.
    Audit {
        /// How many entries (1 to 500).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Subjects whose personal data the kiosk still holds (masked values).
    Subjects,
    /// Show one clear value of a subject (audited with the reason).
    Reveal {
        #[arg(long, value_name = "ID")]
        subject: String,
        /// Item, e.g. `id_number`.
        #[arg(long)]
        item: String,
        /// Why the clear value is needed (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Complete or refuse an applicant's rights request.
    #[command(subcommand)]
    Rights(RightsCommand),
    /// The UKEYs present (serial, label, blank or not).
    Tokens,
    /// Issue blank UKEYs in a batch and follow it.
    #[command(subcommand)]
    Batch(BatchCommand),
    /// The outbox: records waiting for HQ (from kioskd's health; no login needed).
    #[command(subcommand)]
    Outbox(OutboxCommand),
}

#[derive(clap::Subcommand)]
enum RightsCommand {
    /// Mark a rights request done.
    Complete { id: String },
    /// Refuse a rights request on a ground (recorded and told to the applicant).
    Refuse {
        id: String,
        #[arg(long)]
        ground: String,
    },
}

#[derive(clap::Subcommand)]
enum BatchCommand {
    /// Start a batch (factory SO PIN from KIOSK_FACTORY_SO_PIN, else kioskd's
    /// `[ukey] factory_so_pin`; new SO PIN from KIOSK_NEW_SO_PIN, else random per token;
    /// with `--pin-mode given` the user PIN from KIOSK_NEW_PIN).
    Issue {
        /// Serials to issue (repeat); none: every blank UKEY present.
        #[arg(long = "serial", value_name = "SERIAL")]
        serials: Vec<String>,
        /// p256 or sm2 (default: kioskd's `[ukey] algorithm`).
        #[arg(long)]
        algorithm: Option<String>,
        #[arg(long)]
        label_prefix: Option<String>,
        /// random (shown once) or given (KIOSK_NEW_PIN).
        #[arg(long, default_value = "random", value_parser = ["random", "given"])]
        pin_mode: String,
        /// Tokens issued at once (default: all).
        #[arg(long)]
        parallelism: Option<usize>,
        /// Wait until the batch ends and print every token's outcome and initial PINs.
        #[arg(long)]
        wait: bool,
    },
    /// A batch's state (initial PINs appear once, in the first answer after they exist).
    Show { id: String },
}

#[derive(clap::Subcommand)]
enum OutboxCommand {
    /// Records waiting for HQ and whether intake is open.
    Status,
}

/// What went wrong, and the exit status it gives.
enum Failure {
    Client(ClientError),
    Input(String),
    AuditNotIntact,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

pub fn run(args: StaffArgs) -> ExitCode {
    let runtime = match crate::runtime("staff", false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(execute(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Client(e @ ClientError::Api { .. })) => {
            eprintln!("kioskctl staff: {e}");
            ExitCode::from(1)
        }
        Err(Failure::AuditNotIntact) => ExitCode::from(1),
        Err(Failure::Client(e)) => {
            eprintln!("kioskctl staff: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Input(e)) => {
            eprintln!("kioskctl staff: {e}");
            ExitCode::from(2)
        }
    }
}

fn socket_of(args: &StaffArgs, config: Option<&kiosk_config::Config>) -> PathBuf {
    if let Some(path) = &args.socket {
        return path.clone();
    }
    config
        .and_then(|c| c.api.unix_socket.as_deref().map(|s| c.resolve(s)))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

fn staff_token(args: &StaffArgs, config: Option<&kiosk_config::Config>) -> Result<String, Failure> {
    if let Some(label) = &args.token {
        return Ok(label.clone());
    }
    let staff = config.map(|c| c.staff.clone()).unwrap_or_default();
    if staff.ca_cert.is_none() {
        // No staff CA configured: kioskd runs the demo staff CA and its one demo token.
        return Ok(staff.demo_token);
    }
    Err(Failure::Input(
        "name the staff UKEY with --token LABEL (or KIOSK_STAFF_TOKEN)".into(),
    ))
}

fn env_secret(name: &str) -> Option<SecretString> {
    std::env::var(name).ok().map(SecretString::new)
}

fn pin() -> Result<SecretString, Failure> {
    if let Some(pin) = env_secret("KIOSK_PIN") {
        return Ok(pin);
    }
    rpassword::prompt_password("Staff UKEY PIN: ")
        .map(SecretString::new)
        .map_err(|e| {
            Failure::Input(format!(
                "no KIOSK_PIN in the environment and no terminal to ask: {e}"
            ))
        })
}

fn print_json<T: Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::Input(e.to_string()))?;
    println!("{text}");
    Ok(())
}

async fn execute(args: StaffArgs) -> Result<(), Failure> {
    let config = args.daemon.load().map_err(Failure::Input)?;
    let mut client = Client::unix(socket_of(&args, config.as_ref()));
    if let StaffCommand::Outbox(OutboxCommand::Status) = &args.command {
        let health = client.health().await?;
        if args.json {
            return print_json(&serde_json::json!({
                "backlog": health.sync_backlog,
                "intake": health.intake,
                "intake_detail": health.intake_detail,
                "kiosk_id": health.kiosk_id,
            }));
        }
        println!(
            "outbox: {} record(s) waiting for HQ; intake {}{}",
            health.sync_backlog,
            health.intake,
            health
                .intake_detail
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
        return Ok(());
    }
    let label = staff_token(&args, config.as_ref())?;
    // Bad input is refused before the staff UKEY is touched.
    let batch_request = match &args.command {
        StaffCommand::Batch(BatchCommand::Issue {
            serials,
            algorithm,
            label_prefix,
            pin_mode,
            parallelism,
            ..
        }) => Some(batch_request(
            serials,
            algorithm,
            label_prefix,
            pin_mode,
            *parallelism,
        )?),
        _ => None,
    };
    let pin = pin()?;
    let staff_id = client.login(&label, pin.expose()).await?;
    drop(pin);
    if !args.json {
        eprintln!("logged in as {staff_id}");
    }
    let result = staff_command(&client, &args, batch_request).await;
    let logout = client.logout().await;
    result?;
    logout?;
    Ok(())
}

fn batch_request(
    serials: &[String],
    algorithm: &Option<String>,
    label_prefix: &Option<String>,
    pin_mode: &str,
    parallelism: Option<usize>,
) -> Result<BatchRequest, Failure> {
    let user_pin = if pin_mode == "given" {
        Some(env_secret("KIOSK_NEW_PIN").ok_or_else(|| {
            Failure::Input("--pin-mode given takes the user PIN from KIOSK_NEW_PIN".into())
        })?)
    } else {
        None
    };
    Ok(BatchRequest {
        serials: (!serials.is_empty()).then(|| serials.to_vec()),
        algorithm: algorithm.clone(),
        label_prefix: label_prefix.clone(),
        factory_so_pin: env_secret("KIOSK_FACTORY_SO_PIN"),
        new_so_pin: env_secret("KIOSK_NEW_SO_PIN"),
        pin_mode: Some(pin_mode.to_string()),
        user_pin,
        parallelism,
    })
}

fn time_of(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

async fn staff_command(
    client: &Client,
    args: &StaffArgs,
    batch_request: Option<BatchRequest>,
) -> Result<(), Failure> {
    let json = args.json;
    match &args.command {
        StaffCommand::Status => {
            let st = client.status().await?;
            if json {
                return print_json(&st);
            }
            println!(
                "audit log: {}, {} entries, {} checkpoints{}",
                if st.audit.intact {
                    "intact"
                } else {
                    "NOT INTACT"
                },
                st.audit.entries,
                st.audit.checkpoints,
                st.audit
                    .problem
                    .as_deref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            );
            println!(
                "sync: backlog {}, last HQ contact {}{}",
                st.sync.backlog,
                st.sync
                    .last_contact_ms
                    .map(time_of)
                    .unwrap_or_else(|| "never".into()),
                st.sync
                    .last_error
                    .as_deref()
                    .map(|e| format!(", last error: {e}"))
                    .unwrap_or_default()
            );
            println!("rights requests open: {}", st.rights_requests.len());
            for r in &st.rights_requests {
                println!("  {}  {}  {}  due {}", r.id, r.kind, r.state, r.due);
            }
            let devices: Vec<String> = st.devices.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("devices: {}", devices.join(", "));
        }
        StaffCommand::Audit { limit } => {
            let page = client.audit(Some(*limit)).await?;
            if json {
                print_json(&page)?;
            } else {
                let v = &page.verification;
                println!(
                    "audit log {}: {} entries, {} checkpoints{}",
                    if v.intact { "intact" } else { "NOT INTACT" },
                    v.entries,
                    v.checkpoints,
                    v.problem
                        .as_deref()
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default()
                );
                for e in &page.entries {
                    println!(
                        "{:>6}  {}  {:<9}  {:<28}  {}",
                        e.seq,
                        time_of(e.at_ms),
                        e.actor_kind,
                        e.action,
                        e.object_kind
                    );
                }
            }
            if !page.verification.intact {
                return Err(Failure::AuditNotIntact);
            }
        }
        StaffCommand::Subjects => {
            let subjects = client.subjects().await?;
            if json {
                return print_json(&subjects);
            }
            println!("{} subject(s) with personal data held", subjects.len());
            for s in &subjects {
                let fields: Vec<String> =
                    s.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "  {}  since {}  {}{}",
                    s.subject_id,
                    time_of(s.created_at_ms),
                    fields.join(" "),
                    if s.acked_at_ms.is_some() {
                        "  (acked by HQ)"
                    } else {
                        ""
                    }
                );
            }
        }
        StaffCommand::Reveal {
            subject,
            item,
            reason,
        } => {
            let shown = client.reveal(subject, item, reason).await?;
            if json {
                return print_json(&shown);
            }
            println!("{}", shown.value.expose());
        }
        StaffCommand::Rights(cmd) => {
            let outcome = match cmd {
                RightsCommand::Complete { id } => client.complete_rights_request(id).await?,
                RightsCommand::Refuse { id, ground } => {
                    client.refuse_rights_request(id, ground).await?
                }
            };
            if json {
                return print_json(&outcome);
            }
            println!(
                "rights request {}: {}{}",
                outcome.request_id,
                outcome.state,
                outcome
                    .ground
                    .as_deref()
                    .map(|g| format!(" (ground: {g})"))
                    .unwrap_or_default()
            );
        }
        StaffCommand::Tokens => {
            let tokens = client.tokens().await?;
            if json {
                return print_json(&tokens);
            }
            for t in &tokens {
                println!(
                    "{}  {}  {}{}",
                    t.serial,
                    t.label,
                    t.model,
                    if t.blank { "  (blank)" } else { "" }
                );
            }
        }
        StaffCommand::Batch(BatchCommand::Issue { wait, .. }) => {
            let request = batch_request.expect("built before login");
            let started = client.start_batch(&request).await?;
            if !wait {
                if json {
                    return print_json(&started);
                }
                println!(
                    "batch {} started: {} token(s); follow it with `kioskctl staff batch show {}`",
                    started.batch_id,
                    started.tokens.len(),
                    started.batch_id
                );
                return Ok(());
            }
            let state = follow(client, &started.batch_id).await?;
            print_batch(&state, json)?;
        }
        StaffCommand::Batch(BatchCommand::Show { id }) => {
            let state = client.batch(id).await?;
            print_batch(&state, json)?;
        }
        StaffCommand::Outbox(_) => unreachable!("answered before login"),
    }
    Ok(())
}

/// Polls a batch until it ends, keeping the initial PINs of every answer (each is shown once).
async fn follow(client: &Client, id: &str) -> Result<BatchState, Failure> {
    let mut pins: BTreeMap<String, (Option<SecretString>, Option<SecretString>)> = BTreeMap::new();
    loop {
        let mut state = client.batch(id).await?;
        for t in &mut state.tokens {
            let entry = pins.entry(t.serial.clone()).or_default();
            if let Some(pin) = t.initial_pin.take() {
                entry.0 = Some(pin);
            }
            if let Some(pin) = t.initial_so_pin.take() {
                entry.1 = Some(pin);
            }
        }
        if state.state == "done" {
            for t in &mut state.tokens {
                if let Some((user, so)) = pins.remove(&t.serial) {
                    t.initial_pin = user;
                    t.initial_so_pin = so;
                }
            }
            return Ok(state);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn print_batch(state: &BatchState, json: bool) -> Result<(), Failure> {
    if json {
        return print_json(state);
    }
    println!(
        "batch {} {} ({}): {} token(s)",
        state.batch_id,
        state.state,
        state.algorithm,
        state.tokens.len()
    );
    for t in &state.tokens {
        let mut line = format!("  {}  {}  {} {}%", t.serial, t.label, t.state, t.percent);
        if let Some(e) = &t.error {
            line.push_str(&format!("  error {}: {}", e.code, e.message));
        }
        if let Some(pin) = &t.initial_pin {
            line.push_str(&format!("  initial PIN {}", pin.expose()));
        }
        if let Some(pin) = &t.initial_so_pin {
            line.push_str(&format!("  SO PIN {}", pin.expose()));
        }
        println!("{line}");
    }
    Ok(())
}
