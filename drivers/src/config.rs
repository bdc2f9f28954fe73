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
use crate::sim::{
    FingerprintSim, IdCardSim, PacedSimulator, PtyDevice, spawn_fingerprint_pty, spawn_idcard_pty,
};

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

/// How a serial device is reached for its configured mode: a serial connector
/// (with the simulator's handle in `simulated` mode) or a TCP connector.
enum DeviceLink<S> {
    Serial(SerialConnector, Option<S>),
    Tcp(TcpConnector),
}

fn device_link<S: PacedSimulator>(
    section: &SerialDeviceSection,
    device: &'static str,
    baud: u32,
    spawn: impl FnOnce() -> std::io::Result<PtyDevice<S>>,
) -> Result<DeviceLink<PtyDevice<S>>, DeviceConfigError> {
    Ok(match section.mode {
        SerialMode::Simulated => {
            let sim = spawn().map_err(|source| DeviceConfigError::Simulator { device, source })?;
            DeviceLink::Serial(SerialConnector::new(sim.path(), baud), Some(sim))
        }
        SerialMode::Serial => {
            let port = section
                .port
                .clone()
                .ok_or(DeviceConfigError::MissingPort { device })?;
            DeviceLink::Serial(
                SerialConnector::new(port, section.baud.unwrap_or(baud)),
                None,
            )
        }
        SerialMode::Tcp => {
            let addr = section
                .tcp
                .clone()
                .ok_or(DeviceConfigError::MissingTcp { device })?;
            DeviceLink::Tcp(TcpConnector::new(addr))
        }
    })
}

pub fn open_idcard_reader(
    section: &SerialDeviceSection,
) -> Result<OpenedIdCardReader, DeviceConfigError> {
    let settings = sam_settings(section);
    let link = device_link(section, "idcard", 115_200, || {
        spawn_idcard_pty(SamBaud::B115200)
    })?;
    Ok(match link {
        DeviceLink::Serial(connector, simulator) => OpenedIdCardReader {
            reader: Box::new(SamReader::new(connector, settings)),
            simulator,
        },
        DeviceLink::Tcp(connector) => OpenedIdCardReader {
            reader: Box::new(SamReader::new(connector, settings)),
            simulator: None,
        },
    })
}

pub fn open_fingerprint_sensor(
    section: &SerialDeviceSection,
) -> Result<OpenedFingerprintSensor, DeviceConfigError> {
    let settings = ef01_settings(section);
    let link = device_link(section, "fingerprint", 57_600, || {
        spawn_fingerprint_pty(SIMULATED_FINGERPRINT_CAPACITY, 6)
    })?;
    Ok(match link {
        DeviceLink::Serial(connector, simulator) => OpenedFingerprintSensor {
            sensor: Box::new(Ef01Sensor::new(connector, settings)),
            simulator,
        },
        DeviceLink::Tcp(connector) => OpenedFingerprintSensor {
            sensor: Box::new(Ef01Sensor::new(connector, settings)),
            simulator: None,
        },
    })
}
