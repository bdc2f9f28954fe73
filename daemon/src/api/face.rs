//! `POST /v1/sessions/{id}/face`: the face-capture step. Needs the separate
//! consent to the face image; looks at N frames, keeps the best acceptable one
//! in memory only (it never touches disk and never goes to HQ) and answers with
//! the quality figures, never the image.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use drivers::binding::FaceImage;
use drivers::camera::CameraError;
use serde_json::json;

use super::sessions::{blocking, session_of};
use super::{ApiError, AppState};
use crate::privacy::consent::Ledger;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/sessions/{id}/face", post(capture))
}

async fn capture(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let session = session_of(&state, &headers, &id)?;
    let st = state.clone();
    let s = session.clone();
    blocking(move || {
        let conn = st.store.conn()?;
        let ledger = Ledger {
            catalog: &st.catalog,
            session: &s.id,
        };
        ledger.require(&conn, &s.service, None, "face_image")?;
        Ok(())
    })
    .await?;
    let capture = {
        let mut camera = state.devices.camera.lock().await;
        camera.capture_face(state.devices.frames_per_capture).await
    }
    .map_err(|e| match e {
        CameraError::NoAcceptableFace { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_acceptable_face",
            e.to_string(),
        ),
        other => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "camera_unavailable",
            other.to_string(),
        ),
    })?;
    let q = capture.quality;
    state.memory.put_face(
        &session.id,
        FaceImage {
            width: capture.frame.width as u32,
            height: capture.frame.height as u32,
            grey: capture.frame.luma.clone(),
        },
    );
    state
        .memory
        .complete(&session.id, crate::workflow::plan::Step::Face);
    tracing::info!(session = %session.id, frame = capture.index, "face captured (kept in memory only)");
    Ok(Json(json!({
        "accepted": true,
        "frame_index": capture.index,
        "quality": {
            "sharpness": q.sharpness,
            "mean_luma": q.mean_luma,
            "centre_offset": q.centre_offset,
            "score": q.score,
        },
    })))
}
