//! The kiosk's peripherals as the daemon holds them: each behind an async
//! mutex (one operation at a time per device), opened from configuration; in
//! `simulated` mode the simulator's control handle is kept so the demo and the
//! tests can present cards and place fingers.

use drivers::camera::{Camera, ContrastBlobDetector, FaceCamera, FaceDetector, FixtureSource};
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
    #[error(
        "devices.camera.detector_model is set but this kioskd has no SeetaFace detector (build with the `rustface` feature)"
    )]
    NoDetector,
    #[error("devices.camera.detector_model {path}: {source}")]
    Model {
        path: String,
        source: std::io::Error,
    },
    #[error("devices.camera.fixture_dir: {0}")]
    Fixture(#[from] drivers::camera::CameraError),
    #[error("devices.camera.device: {0}")]
    Device(drivers::camera::CameraError),
}

/// The face detector: SeetaFace from `detector_model` (feature `rustface`), else the
/// built-in contrast detector (demo frames).
fn detector(camera: &kiosk_config::CameraSection) -> Result<Box<dyn FaceDetector>, DevicesError> {
    let Some(path) = &camera.detector_model else {
        return Ok(Box::new(ContrastBlobDetector::default()));
    };
    #[cfg(feature = "rustface")]
    {
        let seeta =
            drivers::camera::seeta::SeetaFaceDetector::from_model_file(path).map_err(|source| {
                DevicesError::Model {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        Ok(Box::new(seeta))
    }
    #[cfg(not(feature = "rustface"))]
    {
        let _ = path;
        Err(DevicesError::NoDetector)
    }
}

/// A camera over `source` with the configured detector.
fn face_camera<S: drivers::camera::FrameSource + 'static>(
    source: S,
    camera: &kiosk_config::CameraSection,
) -> Result<Box<dyn Camera>, DevicesError> {
    let mut face = FaceCamera::new(source);
    face.detector = detector(camera)?;
    Ok(Box::new(face))
}

/// The configured camera (paths already resolved against the configuration file).
pub fn open_camera(camera: &kiosk_config::CameraSection) -> Result<Box<dyn Camera>, DevicesError> {
    use kiosk_config::CameraMode;
    match camera.mode {
        CameraMode::Synthetic => face_camera(FixtureSource::synthetic(), camera),
        CameraMode::Fixture => {
            let dir = camera
                .fixture_dir
                .as_deref()
                .ok_or(DevicesError::Camera(CameraMode::Fixture))?;
            face_camera(FixtureSource::from_dir(dir)?, camera)
        }
        #[cfg(feature = "v4l2")]
        CameraMode::V4l2 => {
            let device = camera
                .device
                .as_deref()
                .ok_or(DevicesError::Camera(CameraMode::V4l2))?;
            let source = drivers::camera::v4l2::V4l2Source::open(
                device,
                camera.width,
                camera.height,
                std::time::Duration::from_millis(camera.frame_timeout_ms),
            )
            .map_err(DevicesError::Device)?;
            face_camera(source, camera)
        }
        #[cfg(not(feature = "v4l2"))]
        CameraMode::V4l2 => Err(DevicesError::Camera(CameraMode::V4l2)),
    }
}

impl Devices {
    pub fn open(config: &kiosk_config::DevicesSection) -> Result<Self, DevicesError> {
        let idcard = open_idcard_reader(&config.idcard)?;
        let fingerprint = open_fingerprint_sensor(&config.fingerprint)?;
        let camera = open_camera(&config.camera)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(mode: kiosk_config::CameraMode) -> kiosk_config::CameraSection {
        kiosk_config::CameraSection {
            mode,
            ..kiosk_config::CameraSection::default()
        }
    }

    #[cfg(not(feature = "rustface"))]
    #[test]
    fn a_detector_model_without_the_rustface_build_is_named() {
        let mut c = camera(kiosk_config::CameraMode::Synthetic);
        c.detector_model = Some("/usr/share/kioskd/seeta_fd_frontal_v1.0.bin".into());
        let err = open_camera(&c).err().expect("refused");
        assert!(err.to_string().contains("`rustface` feature"), "{err}");
    }

    #[cfg(not(feature = "v4l2"))]
    #[test]
    fn v4l2_without_the_v4l2_build_is_named() {
        let mut c = camera(kiosk_config::CameraMode::V4l2);
        c.device = Some("/dev/video0".into());
        let err = open_camera(&c).err().expect("refused");
        assert!(err.to_string().contains("`v4l2` feature"), "{err}");
    }

    #[cfg(feature = "v4l2")]
    #[test]
    fn v4l2_names_a_missing_device() {
        let mut c = camera(kiosk_config::CameraMode::V4l2);
        c.device = Some("/dev/video-kioskd-missing".into());
        let err = open_camera(&c).err().expect("no such device");
        assert!(
            err.to_string()
                .starts_with("devices.camera.device: the camera went away"),
            "{err}"
        );
    }

    #[cfg(feature = "rustface")]
    #[test]
    fn a_missing_detector_model_is_named() {
        let mut c = camera(kiosk_config::CameraMode::Synthetic);
        c.detector_model = Some("/nonexistent/seeta.bin".into());
        let err = open_camera(&c).err().expect("no model");
        assert!(err.to_string().contains("/nonexistent/seeta.bin"), "{err}");
    }
}
