//! `kioskctl device`: technician diagnostics for the ID-card reader and the fingerprint
//! module, against any device speaking the protocol (real, behind a serial server, or
//! simulated). Output is one JSON object; personal fields are masked with the safe defaults.
//! Errors are one line naming the port and what was tried; exit status 2 when no device
//! answered, 1 for a device that answered but could not deliver (no card, removed, ...).
//! With kioskd's configuration (`--config`/`KIOSKD_CONFIG` or `--data-dir`), a port that a
//! running kioskd holds as its reader or module is refused (exit 2), naming the daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use drivers::fingerprint::{Ef01Sensor, Ef01Settings, FingerprintError, FingerprintSensor};
use drivers::idcard::{IdCardError, IdCardReader, SamReader, SamSettings};
use drivers::link::{Connector, SerialConnector, TcpConnector};
use drivers::report::{MaskedCard, SensorReport};
use serde_json::json;

use crate::staff::DaemonConfigArgs;

#[derive(clap::Subcommand)]
pub enum DeviceCommand {
    /// Resident-ID-card reader (SAM module).
    #[command(subcommand)]
    Idcard(IdcardCommand),
    /// EF01 fingerprint module (R30x / AS608 / ZFM).
    #[command(subcommand)]
    Fingerprint(FingerprintCommand),
}

#[derive(clap::Subcommand)]
pub enum IdcardCommand {
    /// Read the card on the reader and print it as JSON (name, address, ID number masked).
    Read(PortArgs),
}

#[derive(clap::Subcommand)]
pub enum FingerprintCommand {
    /// Print the module's parameters as JSON (capacity, security_level, packet_size, baud).
    Info(PortArgs),
}

#[derive(clap::Args)]
pub struct PortArgs {
    /// Serial device path (e.g. /dev/ttyUSB0), or tcp://HOST:PORT for a serial server.
    #[arg(long, value_name = "PATH")]
    port: String,
    /// Fixed baud rate; without it the speeds are probed.
    #[arg(long, value_name = "N")]
    baud: Option<u32>,
    /// Per-command timeout in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    timeout_ms: u64,
    #[command(flatten)]
    daemon: DaemonConfigArgs,
}

/// Whether `port` (a path or `tcp://HOST:PORT`) is the configured device `section`.
fn is_configured(port: &str, section: &kiosk_config::SerialDeviceSection) -> bool {
    match section.mode {
        kiosk_config::SerialMode::Serial => section.port.as_deref().is_some_and(|p| {
            let ours = std::path::Path::new(port);
            match (ours.canonicalize(), p.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => ours == p,
            }
        }),
        kiosk_config::SerialMode::Tcp => section
            .tcp
            .as_deref()
            .is_some_and(|t| port.strip_prefix("tcp://") == Some(t)),
        _ => false,
    }
}

/// Refuses a port that a running kioskd holds as its `what` (`idcard` or `fingerprint`).
fn refuse_if_daemon_holds(args: &PortArgs, what: &str) -> Result<(), String> {
    let Some(config) = args.daemon.load()? else {
        return Ok(());
    };
    let (section, name) = match what {
        "idcard" => (&config.devices.idcard, "ID-card reader"),
        _ => (&config.devices.fingerprint, "fingerprint module"),
    };
    if !is_configured(&args.port, section) {
        return Ok(());
    }
    match kioskd::lock::holder(&config.resolve(&config.store.path)) {
        Ok(None) => Ok(()),
        Ok(Some(pid)) => Err(format!(
            "kioskd ({}) holds the {name} {}; stop it first",
            pid.map(|p| format!("pid {p}"))
                .unwrap_or_else(|| "pid unknown".into()),
            args.port
        )),
        Err(e) => Err(e.to_string()),
    }
}

pub fn run(cmd: DeviceCommand) -> ExitCode {
    let runtime = match crate::runtime("device", false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let held = match &cmd {
        DeviceCommand::Idcard(IdcardCommand::Read(args)) => refuse_if_daemon_holds(args, "idcard"),
        DeviceCommand::Fingerprint(FingerprintCommand::Info(args)) => {
            refuse_if_daemon_holds(args, "fingerprint")
        }
    };
    if let Err(e) = held {
        eprintln!("kioskctl device: {e}");
        return ExitCode::from(2);
    }
    match cmd {
        DeviceCommand::Idcard(IdcardCommand::Read(args)) => runtime.block_on(idcard_read(args)),
        DeviceCommand::Fingerprint(FingerprintCommand::Info(args)) => {
            runtime.block_on(fingerprint_info(args))
        }
    }
}

fn print_json(value: &serde_json::Value) -> ExitCode {
    match serde_json::to_string(value) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kioskctl device: cannot encode JSON: {e}");
            ExitCode::from(1)
        }
    }
}

async fn idcard_read(args: PortArgs) -> ExitCode {
    let settings = SamSettings {
        baud: args.baud,
        command_timeout: Some(Duration::from_millis(args.timeout_ms)),
        ..SamSettings::default()
    };
    let result = match args.port.strip_prefix("tcp://") {
        Some(addr) => read_with(SamReader::new(TcpConnector::new(addr), settings)).await,
        None => {
            let connector =
                SerialConnector::new(PathBuf::from(&args.port), args.baud.unwrap_or(115_200));
            read_with(SamReader::new(connector, settings)).await
        }
    };
    match result {
        Ok(card) => print_json(&json!({
            "card_type": card.card_type,
            "name": card.name,
            "sex": card.sex,
            "nation": card.nation,
            "birth_date": card.birth_date,
            "address": card.address,
            "id_number": card.id_number,
            "authority": card.authority,
            "valid_from": card.valid_from,
            "valid_to": card.valid_to,
        })),
        Err((device, e)) => {
            let device_missing = matches!(
                e,
                IdCardError::NoResponse { .. }
                    | IdCardError::Open { .. }
                    | IdCardError::DeviceGone(_)
            );
            match e {
                // These already name the device and what was tried.
                IdCardError::NoResponse { .. } | IdCardError::Open { .. } => {
                    eprintln!("kioskctl: {e}")
                }
                other => eprintln!("kioskctl: {device}: {other}"),
            }
            ExitCode::from(if device_missing { 2 } else { 1 })
        }
    }
}

async fn read_with<C: Connector>(
    mut reader: SamReader<C>,
) -> Result<MaskedCard, (String, IdCardError)> {
    let device = reader.describe();
    match reader.read_card().await {
        Ok(read) => Ok(MaskedCard::from_text(&read.text)),
        Err(e) => Err((device, e)),
    }
}

async fn fingerprint_info(args: PortArgs) -> ExitCode {
    let settings = Ef01Settings {
        baud: args.baud,
        command_timeout: Duration::from_millis(args.timeout_ms),
        ..Ef01Settings::default()
    };
    let result = match args.port.strip_prefix("tcp://") {
        Some(addr) => info_with(Ef01Sensor::new(TcpConnector::new(addr), settings)).await,
        None => {
            let connector =
                SerialConnector::new(PathBuf::from(&args.port), args.baud.unwrap_or(57_600));
            info_with(Ef01Sensor::new(connector, settings)).await
        }
    };
    match result {
        Ok(r) => print_json(&json!({
            "capacity": r.capacity,
            "security_level": r.security_level,
            "packet_size": r.packet_size,
            "baud": r.baud,
        })),
        Err((device, e)) => {
            let device_missing = matches!(
                e,
                FingerprintError::NoResponse { .. }
                    | FingerprintError::Open { .. }
                    | FingerprintError::DeviceGone(_)
            );
            match e {
                FingerprintError::NoResponse { .. } | FingerprintError::Open { .. } => {
                    eprintln!("kioskctl: {e}")
                }
                other => eprintln!("kioskctl: {device}: {other}"),
            }
            ExitCode::from(if device_missing { 2 } else { 1 })
        }
    }
}

async fn info_with<C: Connector>(
    mut sensor: Ef01Sensor<C>,
) -> Result<SensorReport, (String, FingerprintError)> {
    let device = sensor.describe();
    sensor
        .info()
        .await
        .map(SensorReport::from)
        .map_err(|e| (device, e))
}
