//! Binding the person to the card and verifying their identity:
//! `POST /v1/sessions/{id}/fingerprint` compares a live finger with the card's fingerprint
//! blocks (needs the separate fingerprint consent); `POST /v1/sessions/{id}/verification`
//! verifies the identity with the chosen method — carrier 3-factor, bank-card 4-factor or the
//! face comparison with the ID photo — sending exactly the method's declared fields to its
//! service and recording every hand-over. Face comparison is never the only way: the service's
//! non-biometric methods are always offered beside it (the catalog refuses a service without
//! one). Simulator controls for the finger live here too (`/v1/sim/fingerprint`).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use drivers::FingerprintError;
use drivers::binding::{BindingError, CardFingerprintMatcher, FaceComparer, LiveFingerprint};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::sessions::{blocking, session_of};
use super::{ApiError, AppState};
use crate::app::now_ms;
use crate::audit::Actor;
use crate::privacy::Personal;
use crate::privacy::consent::Ledger;
use crate::session::ApplicantSession;
use crate::verify::handover::{HandoverContext, record_attempt};
use crate::verify::{Field, PersonalBytes, Verdict, VerificationRequest, VerifyError};
use crate::workflow::plan::{self, Step, TYPED_ITEMS};

/// How long the applicant has to place a finger.
const FINGER_TIMEOUT: Duration = Duration::from_secs(30);

/// The comparers of the binding step: the licensed vendor components in production, scripted
/// stand-ins with simulated devices (they never claim a real comparison).
pub struct Binding {
    pub fingerprint: Box<dyn CardFingerprintMatcher>,
    pub face: Box<dyn FaceComparer>,
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions/{id}/fingerprint", post(fingerprint))
        .route("/v1/sessions/{id}/verification", post(verification))
        .route(
            "/v1/sim/fingerprint",
            post(sim_place_finger).delete(sim_remove_finger),
        )
}

/// Refuse a step whose prerequisites are not done, naming the missing one.
pub fn require_ready(
    state: &AppState,
    session: &ApplicantSession,
    step: Step,
) -> Result<(), ApiError> {
    let done = state.memory.progress(&session.id).done;
    plan::ready_for(step, &done).map_err(|missing| {
        ApiError::new(
            StatusCode::CONFLICT,
            "step_out_of_order",
            format!(
                "the {} step needs the {} step first",
                step.as_str(),
                missing.as_str()
            ),
        )
        .with_details(json!({ "missing": missing.as_str() }))
    })
}

/// Check the collection consent of `item` for the session's service.
pub async fn require_consent(
    state: &AppState,
    session: &ApplicantSession,
    item: &'static str,
) -> Result<(), ApiError> {
    let st = state.clone();
    let s = session.clone();
    blocking(move || {
        let conn = st.store.conn()?;
        Ledger {
            catalog: &st.catalog,
            session: &s.id,
        }
        .require(&conn, &s.service, None, item)?;
        Ok(())
    })
    .await
}

fn finger_error(e: FingerprintError) -> ApiError {
    let (status, code) = match &e {
        FingerprintError::NoFinger(_) => (StatusCode::CONFLICT, "no_finger"),
        FingerprintError::PoorImage(_) => (StatusCode::UNPROCESSABLE_ENTITY, "poor_fingerprint"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "sensor_unavailable"),
    };
    tracing::warn!(error = %e, "fingerprint capture failed");
    ApiError::new(status, code, e.to_string())
}

fn binding_error(e: BindingError) -> ApiError {
    match e {
        BindingError::Unavailable(what) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "matcher_unavailable",
            format!("no {what} is installed; choose a non-biometric verification method"),
        ),
        BindingError::Failed(why) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "comparison_failed", why)
        }
    }
}

async fn fingerprint(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let session = session_of(&state, &headers, &id)?;
    require_ready(&state, &session, Step::Fingerprint)?;
    require_consent(&state, &session, "fingerprint").await?;
    let card = state.memory.card(&session.id).unwrap_or_default();
    if card.fingerprints.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "card_has_no_fingerprint",
            "the ID card carries no fingerprint; choose another verification method",
        ));
    }
    state
        .events
        .step(&session.id, "fingerprint", "place_finger", 10);
    let image = {
        let mut sensor = state.devices.fingerprint.lock().await;
        tokio::time::timeout(FINGER_TIMEOUT, sensor.capture_image())
            .await
            .map_err(|_| {
                finger_error(FingerprintError::NoFinger(FINGER_TIMEOUT.as_millis() as u64))
            })?
            .map_err(finger_error)?
    };
    state
        .events
        .step(&session.id, "fingerprint", "comparing", 70);
    let live = LiveFingerprint(Zeroizing::new(image.pixels.to_vec()));
    let result = state
        .binding
        .fingerprint
        .compare(&live, &card.fingerprints)
        .await
        .map_err(binding_error)?;
    crate::api::sessions::record_event(
        &state,
        Actor::Applicant(session.id.clone()),
        "binding.fingerprint",
        None,
        json!({ "matched": result.is_match }),
    )
    .await?;
    if !result.is_match {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "fingerprint_no_match",
            "the finger does not match the card; try again or choose another method",
        ));
    }
    state.memory.complete(&session.id, Step::Fingerprint);
    state
        .events
        .step(&session.id, "fingerprint", "matched", 100);
    Ok(Json(json!({ "matched": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerificationBody {
    method: String,
    mobile: Option<String>,
    bank_card: Option<String>,
    bank_mobile: Option<String>,
}

/// A grey face image as a binary PGM (P5), the format the comparison service receives.
fn face_pgm(face: &drivers::binding::FaceImage) -> Vec<u8> {
    let mut out = format!("P5\n{} {}\n255\n", face.width, face.height).into_bytes();
    out.extend_from_slice(&face.grey);
    out
}

fn verify_error(e: &VerifyError) -> ApiError {
    match e {
        VerifyError::Failed { failure, .. } if failure.is_retryable() => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "verifier_unavailable",
            format!("{e}; try again or choose another method"),
        ),
        VerifyError::Failed { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "verifier_refused", e.to_string())
        }
        VerifyError::NotConfigured { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "verifier_unavailable",
            format!("{e}; choose another method"),
        ),
        VerifyError::MissingField { item, .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "field_required",
            e.to_string(),
        )
        .with_details(json!({ "item": item })),
        _ => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "verification_invalid",
            e.to_string(),
        ),
    }
}

async fn verification(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<VerificationBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let session = session_of(&state, &headers, &id)?;
    let method = body.method.clone();
    let offered = state
        .catalog
        .service(&session.service)
        .map(|s| s.methods.contains(&method))
        .unwrap_or(false);
    if !offered {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_method",
            format!("{method:?} is not a verification method of this service"),
        ));
    }
    require_ready(&state, &session, Step::Verification)?;
    let typed: Vec<Personal> = [
        ("mobile", body.mobile),
        ("bank_card", body.bank_card),
        ("bank_mobile", body.bank_mobile),
    ]
    .into_iter()
    .filter_map(|(item, v)| v.map(|v| Personal::new(item, Zeroizing::new(v).as_str())))
    .collect();
    for p in &typed {
        let ok = match p.item() {
            "mobile" | "bank_mobile" => {
                p.expose().len() == 11 && p.expose().bytes().all(|b| b.is_ascii_digit())
            }
            _ => {
                (12..=19).contains(&p.expose().len())
                    && p.expose().bytes().all(|b| b.is_ascii_digit())
            }
        };
        if !ok {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_number",
                format!("the {} is not well-formed", p.item()),
            )
            .with_details(json!({ "item": p.item() })));
        }
    }
    // Consents, then the card's items from the store (the read is audited).
    let st = state.clone();
    let s = session.clone();
    let m = method.clone();
    blocking(move || {
        let conn = st.store.conn()?;
        let ledger = Ledger {
            catalog: &st.catalog,
            session: &s.id,
        };
        crate::verify::require_consents(&ledger, &conn, &s.service, &m)?;
        Ok(())
    })
    .await?;
    let (_, digest, card_items) = super::ukey::holder_values(&state, &session).await?;
    let subject = Some(digest);
    let mut request = VerificationRequest::new(method.clone());
    let declared = state
        .catalog
        .method(&method)
        .map(|d| d.fields.clone())
        .unwrap_or_default();
    for p in card_items.iter().chain(typed.iter()) {
        if declared.iter().any(|f| f == p.item()) {
            request.push(Field::Text(p.clone()));
        }
    }
    if declared.iter().any(|f| f == "id_photo") {
        let photo = state.memory.card(&session.id).and_then(|c| c.photo);
        if let Some(photo) = photo {
            request.push(Field::Bytes(PersonalBytes::new(
                "id_photo",
                photo.expose().to_vec(),
            )));
        }
    }
    if declared.iter().any(|f| f == "face_image") {
        if let Some(face) = state.memory.face(&session.id) {
            request.push(Field::Bytes(PersonalBytes::new(
                "face_image",
                face_pgm(&face),
            )));
        }
    }
    state
        .events
        .step(&session.id, "verification", "sending", 30);
    let result = state.verifier.verify(request).await;
    // Every hand-over is recorded, whatever came back.
    let st = state.clone();
    let s = session.clone();
    let recorded = match &result {
        Ok(o) => Ok(o.clone()),
        Err(e) => Err(e.clone()),
    };
    blocking(move || {
        let mut conn = st.store.conn()?;
        let tx = conn.transaction()?;
        let mut ctx = HandoverContext::applicant(&s.id, &s.service);
        ctx.subject = subject;
        record_attempt(&tx, now_ms(), &ctx, &recorded)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        tx.commit()?;
        Ok(())
    })
    .await?;
    let outcome = result.map_err(|e| {
        tracing::warn!(method = %method, error = %e, "verification failed");
        verify_error(&e)
    })?;
    match outcome.verdict {
        Verdict::Match => {}
        other => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "verification_failed",
                "the service could not confirm your identity; check the numbers or choose another method",
            )
            .with_details(json!({ "verdict": other.as_str() })));
        }
    }
    let kept: Vec<Personal> = typed
        .into_iter()
        .filter(|p| TYPED_ITEMS.contains(&p.item()))
        .collect();
    state.memory.put_typed(&session.id, kept);
    state.memory.update_progress(&session.id, |p| {
        p.done.insert(Step::Verification);
        p.verified_by = Some(method.clone());
    });
    state
        .events
        .step(&session.id, "verification", "verified", 100);
    tracing::info!(session = %session.id, method = %method, "identity verified");
    Ok(Json(json!({ "method": method, "verdict": "match" })))
}

fn fingerprint_sim(state: &AppState) -> Result<&drivers::sim::FingerprintSim, ApiError> {
    state.devices.fingerprint_sim.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_simulated",
            "the fingerprint sensor is not simulated",
        )
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SimFingerBody {
    #[serde(default)]
    seed: u32,
    /// A finger too poor to extract features.
    #[serde(default)]
    poor: bool,
}

async fn sim_place_finger(
    State(state): State<AppState>,
    body: Option<Json<SimFingerBody>>,
) -> Result<StatusCode, ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    fingerprint_sim(&state)?.place_finger(firmware_interfaces::sim::fingerprint::SimFinger {
        seed: body.seed,
        quality: if body.poor {
            firmware_interfaces::sim::fingerprint::FingerQuality::Poor
        } else {
            firmware_interfaces::sim::fingerprint::FingerQuality::Good
        },
    });
    state.events.device("fingerprint", true);
    Ok(StatusCode::NO_CONTENT)
}

async fn sim_remove_finger(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    fingerprint_sim(&state)?.remove_finger();
    state.events.device("fingerprint", false);
    Ok(StatusCode::NO_CONTENT)
}
