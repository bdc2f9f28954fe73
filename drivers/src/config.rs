//! Opening devices from the kiosk configuration (`[devices.idcard]`, `[devices.fingerprint]`).
//!
//! `mode = "simulated"` starts the simulator behind a pty and drives it with the real
//! serial driver (the embedded default); `serial` opens `port`; `tcp` connects to `tcp`.
//! Nothing touches the device until the first operation, so a missing device is reported
//! by that operation (and reconnected later) rather than at start-up.

use std::time::Duration;

use firmware_interfaces::sam::SamBaud;
use kiosk_config::{SerialDeviceSection, SerialMode};

use crate::fingerprint::{Ef01Sensor, Ef01Settings, FingerprintSensor};
use crate::idcard::{IdCardReader, SamReader, SamSettings};
use crate::link::{SerialConnector, TcpConnector};
use crate::sim::{FingerprintSim, IdCardSim, spawn_fingerprint_pty, spawn_idcard_pty};

/// Template slots of the simulated fingerprint module.
pub const SIMULATED_FINGERPRINT_CAPACITY: u16 = 200;

#[derive(Debug, thiserror::Error)]
pub enum DeviceConfigError {
    #[error("[devices.{device}] mode = \"serial\" needs `port` (e.g. port = \"/dev/ttyUSB0\")")]
    MissingPort { device: &'static str },
    #[error("[devices.{device}] mode = \"tcp\" needs `tcp` (e.g. tcp = \"192.0.2.10:4001\")")]
    MissingTcp { device: &'static str },
    #[error("cannot start the simulated {device}: {source}")]
    Simulator {
        device: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// An ID-card reader and, in simulated mode, the simulator's control handle (present /
/// remove cards). Keep the handle alive as long as the reader: dropping it stops the device.
pub struct OpenedIdCardReader {
    pub reader: Box<dyn IdCardReader>,
    pub simulator: Option<IdCardSim>,
}

pub struct OpenedFingerprintSensor {
    pub sensor: Box<dyn FingerprintSensor>,
    pub simulator: Option<FingerprintSim>,
}

fn sam_settings(section: &SerialDeviceSection) -> SamSettings {
    SamSettings {
        baud: section.baud,
        command_timeout: Some(Duration::from_millis(section.timeout_ms)),
        ..SamSettings::default()
    }
}

fn ef01_settings(section: &SerialDeviceSection) -> Ef01Settings {
    Ef01Settings {
        baud: section.baud,
        command_timeout: Duration::from_millis(section.timeout_ms),
        ..Ef01Settings::default()
    }
}

pub fn open_idcard_reader(
    section: &SerialDeviceSection,
) -> Result<OpenedIdCardReader, DeviceConfigError> {
    let device = "idcard";
    let settings = sam_settings(section);
    Ok(match section.mode {
        SerialMode::Simulated => {
            let sim = spawn_idcard_pty(SamBaud::B115200)
                .map_err(|source| DeviceConfigError::Simulator { device, source })?;
            let reader = SamReader::new(SerialConnector::new(sim.path(), 115_200), settings);
            OpenedIdCardReader {
                reader: Box::new(reader),
                simulator: Some(sim),
            }
        }
        SerialMode::Serial => {
            let port = section
                .port
                .clone()
                .ok_or(DeviceConfigError::MissingPort { device })?;
            let reader = SamReader::new(
                SerialConnector::new(port, section.baud.unwrap_or(115_200)),
                settings,
            );
            OpenedIdCardReader {
                reader: Box::new(reader),
                simulator: None,
            }
        }
        SerialMode::Tcp => {
            let addr = section
                .tcp
                .clone()
                .ok_or(DeviceConfigError::MissingTcp { device })?;
            OpenedIdCardReader {
                reader: Box::new(SamReader::new(TcpConnector::new(addr), settings)),
                simulator: None,
            }
        }
    })
}

pub fn open_fingerprint_sensor(
    section: &SerialDeviceSection,
) -> Result<OpenedFingerprintSensor, DeviceConfigError> {
    let device = "fingerprint";
    let settings = ef01_settings(section);
    Ok(match section.mode {
        SerialMode::Simulated => {
            let sim = spawn_fingerprint_pty(SIMULATED_FINGERPRINT_CAPACITY, 6)
                .map_err(|source| DeviceConfigError::Simulator { device, source })?;
            let sensor = Ef01Sensor::new(SerialConnector::new(sim.path(), 57_600), settings);
            OpenedFingerprintSensor {
                sensor: Box::new(sensor),
                simulator: Some(sim),
            }
        }
        SerialMode::Serial => {
            let port = section
                .port
                .clone()
                .ok_or(DeviceConfigError::MissingPort { device })?;
            let sensor = Ef01Sensor::new(
                SerialConnector::new(port, section.baud.unwrap_or(57_600)),
                settings,
            );
            OpenedFingerprintSensor {
                sensor: Box::new(sensor),
                simulator: None,
            }
        }
        SerialMode::Tcp => {
            let addr = section
                .tcp
                .clone()
                .ok_or(DeviceConfigError::MissingTcp { device })?;
            OpenedFingerprintSensor {
                sensor: Box::new(Ef01Sensor::new(TcpConnector::new(addr), settings)),
                simulator: None,
            }
        }
    })
}
