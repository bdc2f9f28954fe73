//! `kioskctl token`: staff administration of UKEYs, HSM tokens and the soft token through
//! the `hsm` crate (list, init, change-pin, unblock, keygen, pubkey, csr, import-cert, sign,
//! verify). PINs come from `KIOSK_PIN` / `KIOSK_SO_PIN` (new PINs from `KIOSK_NEW_PIN`) or a
//! no-echo prompt, never from a flag. Errors are one line on stderr and exit status 2.
//!
//! A command aimed at kioskd's device token (same module or soft-token directory, same label
//! as the configuration given with `--config`/`KIOSKD_CONFIG` or `--data-dir`) is refused
//! while a kioskd runs on that configuration's store (it holds `kioskd.lock` there): the
//! daemon owns the token's login state and the audit log; staff go through `kioskctl staff`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hsm::pkcs11::{Pkcs11Options, Pkcs11Provider};
use hsm::soft::{DEFAULT_MAX_TRIES, SoftOptions, SoftProvider};
use hsm::{KeyAlgorithm, Pin, Token, TokenError, TokenProvider, UserKind};
use zeroize::Zeroizing;

use crate::staff::DaemonConfigArgs;

/// Where the tokens are: a PKCS#11 module or the soft token directory.
#[derive(clap::Args, Clone)]
pub struct ProviderArgs {
    /// PKCS#11 module path, or `soft` for the soft token.
    #[arg(long, value_name = "PATH|soft")]
    module: String,
    /// Soft token directory (with `--module soft`).
    #[arg(long, value_name = "DIR", default_value = "kioskd-data/soft-token")]
    soft_dir: PathBuf,
    /// Vendor profile naming the token's SM2 numbers (`name` or `file.toml#name`).
    #[arg(long, default_value = "generic")]
    profile: String,
    /// SM2 distinguishing identifier.
    #[arg(long, default_value = hsm::soft_crypto::SM2_DEFAULT_DISTID)]
    distid: String,
    /// Timeout of one PKCS#11 call, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

#[derive(clap::Args, Clone)]
pub struct TokenArgs {
    #[command(flatten)]
    provider: ProviderArgs,
    /// Token label.
    #[arg(long, value_name = "LABEL")]
    token: String,
    #[command(flatten)]
    daemon: DaemonConfigArgs,
}

#[derive(clap::Args, Clone)]
pub struct KeyArgs {
    #[command(flatten)]
    token: TokenArgs,
    /// Key label on the token.
    #[arg(long, value_name = "KEYLABEL")]
    key: String,
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Print the tokens as a JSON array (label, serial, manufacturer, model, pin_state).
    List(ProviderArgs),
    /// Initialise a blank token (SO PIN from KIOSK_SO_PIN, user PIN from KIOSK_PIN).
    Init(TokenArgs),
    /// Change the user PIN (or the SO PIN with --so); new PIN from KIOSK_NEW_PIN or a prompt.
    ChangePin {
        #[command(flatten)]
        token: TokenArgs,
        #[arg(long)]
        so: bool,
    },
    /// Unblock the user PIN with the SO PIN; new user PIN from KIOSK_NEW_PIN or a prompt.
    Unblock(TokenArgs),
    /// Generate a key pair on the token and print its public key as PEM.
    Keygen {
        #[command(flatten)]
        key: KeyArgs,
        #[arg(long, value_name = "p256|sm2")]
        algo: String,
    },
    /// Print a key's public key as PEM.
    Pubkey(KeyArgs),
    /// Write a PEM PKCS#10 request signed by the token key.
    Csr {
        #[command(flatten)]
        key: KeyArgs,
        /// RFC 4514 subject, e.g. 'CN=...,O=...'.
        #[arg(long)]
        subject: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Store a certificate (PEM or DER) next to its key.
    ImportCert {
        #[command(flatten)]
        key: KeyArgs,
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
    /// Write a DER signature of a file (ECDSA-SHA256 or SM2-with-SM3).
    Sign {
        #[command(flatten)]
        key: KeyArgs,
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Verify a DER signature of a file with the key's public key.
    Verify {
        #[command(flatten)]
        key: KeyArgs,
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        #[arg(long, value_name = "FILE")]
        sig: PathBuf,
    },
}

/// Errors of the CLI: token errors and file errors, printed as one line.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error(
        "kioskd ({}) holds the device token {label}; stop it first or use `kioskctl staff`",
        pid.map(|p| format!("pid {p}")).unwrap_or_else(|| "pid unknown".into())
    )]
    DaemonHolds { pid: Option<u32>, label: String },
}

type CliResult<T> = Result<T, CliError>;

pub fn run(cmd: TokenCommand) -> ExitCode {
    let runtime = match crate::runtime("token", true) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(execute(cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kioskctl token: {e}");
            ExitCode::from(2)
        }
    }
}

fn read_file(path: &Path) -> CliResult<Vec<u8>> {
    std::fs::read(path).map_err(|source| CliError::File {
        path: path.display().to_string(),
        source,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> CliResult<()> {
    std::fs::write(path, bytes).map_err(|source| CliError::File {
        path: path.display().to_string(),
        source,
    })
}

/// A PIN from the environment, or asked for without echo.
fn pin_from(env: &str, prompt: &str) -> CliResult<Pin> {
    if let Ok(value) = std::env::var(env) {
        return Ok(Pin::new(value));
    }
    let value = rpassword::prompt_password(prompt).map_err(|e| {
        CliError::Usage(format!(
            "no {env} in the environment and no terminal to ask: {e}"
        ))
    })?;
    Ok(Pin::new(value))
}

fn open_provider(args: &ProviderArgs) -> CliResult<Arc<dyn TokenProvider>> {
    if args.module == "soft" {
        let secret = std::env::var("KIOSK_SOFT_SECRET").unwrap_or_else(|_| {
            kiosk_config::TokenSection::default()
                .soft_secret
                .expose()
                .to_owned()
        });
        return Ok(SoftProvider::open(SoftOptions {
            dir: args.soft_dir.clone(),
            secret: Zeroizing::new(secret),
            sm2_distid: args.distid.clone(),
            max_tries: DEFAULT_MAX_TRIES,
        })?);
    }
    let profile = hsm::resolve_profile(&args.profile, Path::new("."))?;
    Ok(Pkcs11Provider::open(
        Path::new(&args.module),
        Pkcs11Options {
            profile,
            sm2_distid: args.distid.clone(),
            call_timeout: Duration::from_millis(args.timeout_ms.max(1)),
            max_sessions: 2,
        },
    )?)
}

/// Whether `args` name the configured device token: same label, and the same PKCS#11
/// module or soft-token directory.
fn is_device_token(args: &TokenArgs, config: &kiosk_config::Config) -> bool {
    if args.token != config.token.device_token {
        return false;
    }
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    match config.token.provider {
        kiosk_config::TokenProvider::Soft => {
            args.provider.module == "soft"
                && same(
                    &args.provider.soft_dir,
                    &config.resolve(&config.token.soft_dir),
                )
        }
        _ => config.token.module.as_deref().is_some_and(|m| {
            args.provider.module != "soft" && same(Path::new(&args.provider.module), m)
        }),
    }
}

/// Refuses to touch the device token of a kioskd that runs (it holds its store's lock).
fn refuse_if_daemon_holds(args: &TokenArgs) -> CliResult<()> {
    let Some(config) = args.daemon.load().map_err(CliError::Usage)? else {
        return Ok(());
    };
    if !is_device_token(args, &config) {
        return Ok(());
    }
    match kioskd::lock::holder(&config.resolve(&config.store.path)) {
        Ok(None) => Ok(()),
        Ok(Some(pid)) => Err(CliError::DaemonHolds {
            pid,
            label: args.token.clone(),
        }),
        Err(e) => Err(CliError::Usage(e.to_string())),
    }
}

async fn open_token(args: &TokenArgs) -> CliResult<(Arc<dyn TokenProvider>, Arc<dyn Token>)> {
    refuse_if_daemon_holds(args)?;
    let provider = open_provider(&args.provider)?;
    let token = provider.open_token(&args.token).await?;
    Ok((provider, token))
}

async fn logged_in(args: &TokenArgs) -> CliResult<Arc<dyn Token>> {
    let (_, token) = open_token(args).await?;
    let pin = pin_from("KIOSK_PIN", "User PIN: ")?;
    token.login(UserKind::User, &pin).await?;
    Ok(token)
}

async fn public_key_pem(token: &dyn Token, key: &str) -> CliResult<String> {
    let info = token.key(key).await?;
    Ok(hsm::soft_crypto::public_key_pem(
        info.algorithm,
        &info.public_key,
    )?)
}

async fn execute(cmd: TokenCommand) -> CliResult<()> {
    match cmd {
        TokenCommand::List(args) => {
            let provider = open_provider(&args)?;
            let tokens: Vec<serde_json::Value> = provider
                .list_tokens()
                .await?
                .into_iter()
                .filter(|t| t.initialized)
                .map(|t| {
                    serde_json::json!({
                        "label": t.label,
                        "serial": t.serial,
                        "manufacturer": t.manufacturer,
                        "model": t.model,
                        "pin_state": t.pin_state,
                    })
                })
                .collect();
            let text = serde_json::to_string_pretty(&tokens)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            println!("{text}");
        }
        TokenCommand::Init(args) => {
            refuse_if_daemon_holds(&args)?;
            let provider = open_provider(&args.provider)?;
            let so = pin_from("KIOSK_SO_PIN", "New SO PIN: ")?;
            let user = pin_from("KIOSK_PIN", "New user PIN: ")?;
            let info = provider.init_token(&args.token, &so, &user).await?;
            println!(
                "initialised token {:?} (serial {})",
                info.label, info.serial
            );
        }
        TokenCommand::ChangePin { token, so } => {
            let (_, handle) = open_token(&token).await?;
            let (user, env, prompt) = if so {
                (UserKind::So, "KIOSK_SO_PIN", "Current SO PIN: ")
            } else {
                (UserKind::User, "KIOSK_PIN", "Current PIN: ")
            };
            let old = pin_from(env, prompt)?;
            let new = pin_from("KIOSK_NEW_PIN", "New PIN: ")?;
            handle.change_pin(user, &old, &new).await?;
            println!("PIN changed");
        }
        TokenCommand::Unblock(args) => {
            let (_, token) = open_token(&args).await?;
            let so = pin_from("KIOSK_SO_PIN", "SO PIN: ")?;
            let new = pin_from("KIOSK_NEW_PIN", "New user PIN: ")?;
            token.unblock_user_pin(&so, &new).await?;
            println!("user PIN unblocked");
        }
        TokenCommand::Keygen { key, algo } => {
            let algorithm: KeyAlgorithm = algo.parse()?;
            let token = logged_in(&key.token).await?;
            let info = token.generate_key_pair(&key.key, algorithm).await?;
            print!(
                "{}",
                hsm::soft_crypto::public_key_pem(info.algorithm, &info.public_key)?
            );
        }
        TokenCommand::Pubkey(key) => {
            let token = logged_in(&key.token).await?;
            print!("{}", public_key_pem(token.as_ref(), &key.key).await?);
        }
        TokenCommand::Csr { key, subject, out } => {
            let token = logged_in(&key.token).await?;
            let csr = hsm::csr::build_csr(token.as_ref(), &key.key, &subject).await?;
            write_file(&out, csr.pem.as_bytes())?;
        }
        TokenCommand::ImportCert { key, input } => {
            let token = logged_in(&key.token).await?;
            let der = hsm::csr::certificate_der(&read_file(&input)?)?;
            token.write_certificate(&key.key, &der).await?;
            let parsed = hsm::csr::parse_certificate(&der)?;
            println!(
                "stored certificate serial {} next to key {:?}",
                parsed.serial_hex, key.key
            );
        }
        TokenCommand::Sign { key, input, out } => {
            let token = logged_in(&key.token).await?;
            let message = read_file(&input)?;
            let signature = token.sign(&key.key, &message).await?;
            write_file(&out, &signature.to_der()?)?;
        }
        TokenCommand::Verify { key, input, sig } => {
            let token = logged_in(&key.token).await?;
            let info = token.key(&key.key).await?;
            let message = read_file(&input)?;
            let raw = hsm::soft_crypto::der_signature_to_raw(info.algorithm, &read_file(&sig)?)?;
            hsm::soft_crypto::verify(
                info.algorithm,
                &info.public_key,
                token.sm2_distid(),
                &message,
                &raw,
            )?;
            println!("signature OK");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrapper {
        #[command(subcommand)]
        cmd: TokenCommand,
    }

    fn run_args(args: &[&str]) -> CliResult<()> {
        let cmd = Wrapper::try_parse_from(std::iter::once("token").chain(args.iter().copied()))
            .map_err(|e| CliError::Usage(e.to_string()))?
            .cmd;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(execute(cmd))
    }

    #[test]
    fn soft_token_staff_flow_and_one_line_errors() {
        let dir = tempfile::tempdir().unwrap();
        let soft = dir.path().join("soft");
        let soft = soft.to_str().unwrap();
        let file = |n: &str| dir.path().join(n).display().to_string();
        // SAFETY: the only test in this binary touching these variables.
        unsafe {
            std::env::set_var("KIOSK_SO_PIN", "87654321");
            std::env::set_var("KIOSK_PIN", "1234");
        }
        let base = ["--module", "soft", "--soft-dir", soft, "--token", "staff"];
        run_args(&[&["init"], &base[..]].concat()).unwrap();
        run_args(&[&["keygen"], &base[..], &["--key", "k", "--algo", "sm2"]].concat()).unwrap();
        std::fs::write(file("msg"), b"form to sign").unwrap();
        let (msg, sig, csr) = (file("msg"), file("sig"), file("csr"));
        run_args(
            &[
                &["sign"],
                &base[..],
                &["--key", "k", "--in", &msg, "--out", &sig],
            ]
            .concat(),
        )
        .unwrap();
        run_args(
            &[
                &["verify"],
                &base[..],
                &["--key", "k", "--in", &msg, "--sig", &sig],
            ]
            .concat(),
        )
        .unwrap();
        run_args(
            &[
                &["csr"],
                &base[..],
                &["--key", "k", "--subject", "CN=Synthetic", "--out", &csr],
            ]
            .concat(),
        )
        .unwrap();
        assert!(
            std::fs::read_to_string(&csr)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
        );

        std::fs::write(file("msg"), b"tampered").unwrap();
        let err = run_args(
            &[
                &["verify"],
                &base[..],
                &["--key", "k", "--in", &msg, "--sig", &sig],
            ]
            .concat(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "signature does not verify");
        let err = run_args(&[&["pubkey"], &base[..], &["--key", "missing"]].concat()).unwrap_err();
        assert!(!err.to_string().contains('\n'));
        assert!(matches!(err, CliError::Token(TokenError::NoSuchKey(_))));
        assert!(
            run_args(&[&["keygen"], &base[..], &["--key", "x", "--algo", "rsa"]].concat()).is_err()
        );
    }
}
