//! kioskctl: the staff and technician CLI: the staff desk through the running kioskd (`staff`,
//! over its Unix socket), and technician diagnostics directly on the hardware while kioskd is
//! stopped (device diagnostics, token administration, offline audit verification).

mod audit;
mod device;
mod outbox;
mod provision;
mod staff;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kioskctl", version, about = "kioskd staff and technician CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Staff desk through the running kioskd (status, audit, batches, rights, reveal, outbox).
    Staff(staff::StaffArgs),
    /// Diagnose the kiosk's peripherals (ID-card reader, fingerprint module).
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// Administer UKEYs and HSM tokens through PKCS#11 or the soft token.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Verify the kiosk's tamper-evident audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Fill the outbox with synthetic records (tests, benchmarks).
    #[command(subcommand)]
    Outbox(outbox::OutboxCommand),
    /// Enroll this kiosk at HQ with a one-time code from `hq-ingest enroll-kiosk`: makes the
    /// device and TLS keys on the device token, sends a CSR over TLS pinned to HQ's CA and
    /// writes the client certificate, HQ's CA and HQ's record key where `[hq]` expects them.
    /// Refused while kioskd runs on the store.
    Provision(provision::ProvisionArgs),
}

/// The async runtime of a command (two workers when `multi`), or exit 2 saying why.
fn runtime(command: &str, multi: bool) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = if multi {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("kioskctl {command}: cannot start the async runtime: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli: Cli = kiosk_config::cli_docs::parse();
    match cli.command {
        Command::Staff(args) => staff::run(args),
        Command::Device(cmd) => device::run(cmd),
        Command::Token(cmd) => token::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Outbox(cmd) => outbox::run(cmd),
        Command::Provision(args) => provision::run(args),
    }
}
