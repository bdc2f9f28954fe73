//! The kiosk's peripherals as the daemon holds them: each behind an async
//! mutex (one operation at a time per device), opened from configuration; in
//! `simulated` mode the simulator's control handle is kept so the demo and the
//! tests can present cards and place fingers.

use drivers::config::{DeviceConfigError, open_fingerprint_sensor, open_idcard_reader};
use drivers::sim::{FingerprintSim, IdCardSim};
use drivers::{FingerprintSensor, IdCardReader};
use tokio::sync::Mutex;

pub struct Devices {
    pub idcard: Mutex<Box<dyn IdCardReader>>,
    pub idcard_sim: Option<IdCardSim>,
    pub fingerprint: Mutex<Box<dyn FingerprintSensor>>,
    pub fingerprint_sim: Option<FingerprintSim>,
}

impl Devices {
    pub fn open(config: &kiosk_config::DevicesSection) -> Result<Self, DeviceConfigError> {
        let idcard = open_idcard_reader(&config.idcard)?;
        let fingerprint = open_fingerprint_sensor(&config.fingerprint)?;
        Ok(Self {
            idcard: Mutex::new(idcard.reader),
            idcard_sim: idcard.simulator,
            fingerprint: Mutex::new(fingerprint.sensor),
            fingerprint_sim: fingerprint.simulator,
        })
    }
}
