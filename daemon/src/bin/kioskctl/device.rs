//! `kioskctl device`: technician diagnostics for the ID-card reader and the fingerprint
//! module, against any device speaking the protocol (real, behind a serial server, or
//! simulated). Output is one JSON object; personal fields are masked with the safe defaults.
//! Errors are one line naming the port and what was tried; exit status 2 when no device
//! answered, 1 for a device that answered but could not deliver (no card, removed, ...).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use drivers::fingerprint::{Ef01Sensor, Ef01Settings, FingerprintError, FingerprintSensor};
use drivers::idcard::{IdCardError, IdCardReader, SamReader, SamSettings};
use drivers::link::{Connector, SerialConnector, TcpConnector};
use drivers::report::{MaskedCard, SensorReport};
use serde_json::json;

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
}

pub fn run(cmd: DeviceCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kioskctl device: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
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
