//! kioskctl: the staff and technician CLI (device diagnostics, token administration, audit verification).

mod audit;
mod device;
mod outbox;
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
}

fn main() -> ExitCode {
    let cli: Cli = kiosk_config::cli_docs::parse();
    match cli.command {
        Command::Device(cmd) => device::run(cmd),
        Command::Token(cmd) => token::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Outbox(cmd) => outbox::run(cmd),
    }
}
