//! The face-capture step. Needs the separate consent to the face image; looks at N frames,
//! keeps the best acceptable one in memory only (it never touches disk and never goes to
//! HQ) and answers with the quality figures, never the image.

use drivers::binding::FaceImage;
use drivers::camera::CameraError;
use serde::Serialize;

use super::plan::Step;
use super::{Error, Kiosk, Result};
use crate::session::ApplicantSession;

#[derive(Serialize)]
pub struct FaceQuality {
    pub sharpness: f32,
    pub mean_luma: f32,
    pub centre_offset: f32,
    pub score: f32,
}

/// A face was kept; which frame and how good it was.
#[derive(Serialize)]
pub struct FaceCaptured {
    pub accepted: bool,
    pub frame_index: usize,
    pub quality: FaceQuality,
}

impl Kiosk {
    /// Capture the applicant's face for the comparison with the ID photo.
    pub async fn capture_face(&self, session: &ApplicantSession) -> Result<FaceCaptured> {
        self.require_consent(session, &["face_image"]).await?;
        let capture = {
            let mut camera = self.devices.camera.lock().await;
            camera.capture_face(self.devices.frames_per_capture).await
        }
        .map_err(|e| match e {
            CameraError::NoAcceptableFace { .. } => {
                Error::unprocessable("no_acceptable_face", e.to_string())
            }
            other => Error::unavailable("camera_unavailable", other.to_string()),
        })?;
        let q = capture.quality;
        self.memory.put_face(
            &session.id,
            FaceImage {
                width: capture.frame.width as u32,
                height: capture.frame.height as u32,
                grey: capture.frame.luma.clone(),
            },
        );
        self.memory.complete(&session.id, Step::Face);
        tracing::info!(session = %session.id, frame = capture.index, "face captured (kept in memory only)");
        Ok(FaceCaptured {
            accepted: true,
            frame_index: capture.index,
            quality: FaceQuality {
                sharpness: q.sharpness,
                mean_luma: q.mean_luma,
                centre_offset: q.centre_offset,
                score: q.score,
            },
        })
    }
}
