//! `kioskd`: the kiosk daemon. `kioskd` runs it; `kioskd check-config FILE`
//! validates a configuration file and prints the effective configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kiosk_config::{LoadOptions, LogFormat};
use kioskd::app::{self, RunOptions};

#[derive(Parser)]
#[command(
    name = "kioskd",
    version,
    about = "Self-service kiosk daemon: ID-card reader, fingerprint, camera, UKEYs and HSMs via PKCS#11, minimized encrypted sync to HQ"
)]
struct Cli {
    /// Configuration file (TOML). Without it the embedded defaults run: simulated devices, soft token, local HQ.
    #[arg(long, global = true, env = "KIOSKD_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (store, soft token, socket); overrides kiosk.data_dir.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log format; overrides log.format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<CliLogFormat>,
    /// API listener address; overrides api.listen.
    #[arg(long, env = "KIOSKD_API_ADDR")]
    api_addr: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum CliLogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate a configuration file: print its problems and exit 1, or print the effective configuration (secrets redacted).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli: Cli = kiosk_config::cli_docs::parse();
    match cli.command {
        Some(Command::CheckConfig { ref file }) => check_config(file, cli.data_dir.as_deref()),
        Some(Command::Run) | None => match run(cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kioskd: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn check_config(file: &std::path::Path, data_dir: Option<&std::path::Path>) -> ExitCode {
    match kiosk_config::load(LoadOptions {
        file: Some(file),
        data_dir,
    }) {
        Ok(loaded) => {
            print!("{}", loaded.effective_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            for p in e.problems() {
                eprintln!("{p}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli.data_dir.clone().or_else(app::default_data_dir);
    let loaded = kiosk_config::load(LoadOptions {
        file: cli.config.as_deref(),
        data_dir: data_dir.as_deref(),
    })
    .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    let format = match cli.log_format {
        Some(CliLogFormat::Json) => LogFormat::Json,
        Some(CliLogFormat::Human) => LogFormat::Human,
        None => loaded.config.log.format,
    };
    kioskd::logging::init(&loaded.config.log.level, format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(app::run(
        loaded,
        RunOptions {
            api_addr: cli.api_addr,
        },
    ))?;
    Ok(())
}
