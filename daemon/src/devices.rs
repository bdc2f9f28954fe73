//! The kiosk's peripherals as the daemon holds them: each behind an async
//! mutex (one operation at a time per device), opened from configuration; in
//! `simulated` mode the simulator's control handle is kept so the demo and the
//! tests can present cards and place fingers.

use drivers::camera::{Camera, FaceCamera, FixtureSource};
use drivers::config::{DeviceConfigError, open_fingerprint_sensor, open_idcard_reader};
use drivers::sim::{FingerprintSim, IdCardSim};
use drivers::{FingerprintSensor, IdCardReader};
use tokio::sync::Mutex;

pub struct Devices {
    pub idcard: Mutex<Box<dyn IdCardReader>>,
    pub idcard_sim: Option<IdCardSim>,
    pub fingerprint: Mutex<Box<dyn FingerprintSensor>>,
    pub fingerprint_sim: Option<FingerprintSim>,
    pub camera: Mutex<Box<dyn Camera>>,
    /// Frames a face capture considers.
    pub frames_per_capture: usize,
}

/// Why the devices could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    #[error(transparent)]
    Serial(#[from] DeviceConfigError),
    #[error(
        "devices.camera.mode = {0:?} is not built into this kioskd (build with the `v4l2` feature for cameras)"
    )]
    Camera(kiosk_config::CameraMode),
    #[error("devices.camera.fixture_dir: {0}")]
    Fixture(#[from] drivers::camera::CameraError),
}

impl Devices {
    pub fn open(config: &kiosk_config::DevicesSection) -> Result<Self, DevicesError> {
        let idcard = open_idcard_reader(&config.idcard)?;
        let fingerprint = open_fingerprint_sensor(&config.fingerprint)?;
        let camera: Box<dyn Camera> = match config.camera.mode {
            kiosk_config::CameraMode::Synthetic => {
                Box::new(FaceCamera::new(FixtureSource::synthetic()))
            }
            kiosk_config::CameraMode::Fixture => {
                let dir = config
                    .camera
                    .fixture_dir
                    .as_deref()
                    .ok_or(DevicesError::Camera(kiosk_config::CameraMode::Fixture))?;
                Box::new(FaceCamera::new(FixtureSource::from_dir(dir)?))
            }
            other => return Err(DevicesError::Camera(other)),
        };
        Ok(Self {
            camera: Mutex::new(camera),
            frames_per_capture: config.camera.frames_per_capture as usize,
            idcard: Mutex::new(idcard.reader),
            idcard_sim: idcard.simulator,
            fingerprint: Mutex::new(fingerprint.sensor),
            fingerprint_sim: fingerprint.simulator,
        })
    }
}
