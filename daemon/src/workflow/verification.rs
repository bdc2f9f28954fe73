//! Binding the person to the card and verifying their identity: a live finger compared with
//! the card's fingerprint blocks (needs the separate fingerprint consent), and identity
//! verification with the chosen method — carrier 3-factor, bank-card 4-factor or the face
//! comparison with the ID photo — sending exactly the method's declared fields to its
//! service and recording every hand-over. Face comparison is never the only way: the
//! service's non-biometric methods are always offered beside it (the catalog refuses a
//! service without one).

use std::time::Duration;

use drivers::FingerprintError;
use drivers::binding::{BindingError, CardFingerprintMatcher, FaceComparer, LiveFingerprint};
use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use super::plan::{Step, TYPED_ITEMS};
use super::{Error, ErrorKind, Kiosk, Result, blocking};
use crate::audit::Actor;
use crate::clock::now_ms;
use crate::privacy::Personal;
use crate::privacy::consent::Ledger;
use crate::session::ApplicantSession;
use crate::verify::handover::{HandoverContext, record_attempt};
use crate::verify::{Field, PersonalBytes, Verdict, VerificationRequest, VerifyError};

/// How long the applicant has to place a finger.
const FINGER_TIMEOUT: Duration = Duration::from_secs(30);

/// The comparers of the binding step: the licensed vendor components in production, scripted
/// stand-ins with simulated devices (they never claim a real comparison).
pub struct Binding {
    pub fingerprint: Box<dyn CardFingerprintMatcher>,
    pub face: Box<dyn FaceComparer>,
}

/// The finger matched the card.
#[derive(Serialize)]
pub struct FingerMatched {
    pub matched: bool,
}

/// What the applicant types for a verification method (numbers are checked for form).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationInput {
    pub method: String,
    pub mobile: Option<String>,
    pub bank_card: Option<String>,
    pub bank_mobile: Option<String>,
}

/// The identity was confirmed by `method`.
#[derive(Serialize)]
pub struct Verified {
    pub method: String,
    pub verdict: &'static str,
}

fn finger_error(e: FingerprintError) -> Error {
    let (kind, code) = match &e {
        FingerprintError::NoFinger(_) => (ErrorKind::Conflict, "no_finger"),
        FingerprintError::PoorImage(_) => (ErrorKind::Unprocessable, "poor_fingerprint"),
        _ => (ErrorKind::Unavailable, "sensor_unavailable"),
    };
    tracing::warn!(error = %e, "fingerprint capture failed");
    Error::new(kind, code, e.to_string())
}

fn binding_error(e: BindingError) -> Error {
    match e {
        BindingError::Unavailable(what) => Error::unavailable(
            "matcher_unavailable",
            format!("no {what} is installed; choose a non-biometric verification method"),
        ),
        BindingError::Failed(why) => Error::unprocessable("comparison_failed", why),
    }
}

/// A grey face image as a binary PGM (P5), the format the comparison service receives.
fn face_pgm(face: &drivers::binding::FaceImage) -> Vec<u8> {
    let mut out = format!("P5\n{} {}\n255\n", face.width, face.height).into_bytes();
    out.extend_from_slice(&face.grey);
    out
}

fn verify_error(e: &VerifyError) -> Error {
    match e {
        VerifyError::Failed { failure, .. } if failure.is_retryable() => Error::unavailable(
            "verifier_unavailable",
            format!("{e}; try again or choose another method"),
        ),
        VerifyError::Failed { .. } => {
            Error::new(ErrorKind::Upstream, "verifier_refused", e.to_string())
        }
        VerifyError::NotConfigured { .. } => Error::unavailable(
            "verifier_unavailable",
            format!("{e}; choose another method"),
        ),
        VerifyError::MissingField { item, .. } => {
            Error::unprocessable("field_required", e.to_string())
                .with_details(json!({ "item": item }))
        }
        _ => Error::unprocessable("verification_invalid", e.to_string()),
    }
}

/// The typed numbers, checked for form: mobiles are 11 digits, bank cards 12 to 19.
fn typed_numbers(input: VerificationInput) -> Result<Vec<Personal>> {
    let typed: Vec<Personal> = [
        ("mobile", input.mobile),
        ("bank_card", input.bank_card),
        ("bank_mobile", input.bank_mobile),
    ]
    .into_iter()
    .filter_map(|(item, v)| v.map(|v| Personal::new(item, Zeroizing::new(v).as_str())))
    .collect();
    for p in &typed {
        let digits = p.expose().bytes().all(|b| b.is_ascii_digit());
        let ok = match p.item() {
            "mobile" | "bank_mobile" => p.expose().len() == 11 && digits,
            _ => (12..=19).contains(&p.expose().len()) && digits,
        };
        if !ok {
            return Err(Error::unprocessable(
                "invalid_number",
                format!("the {} is not well-formed", p.item()),
            )
            .with_details(json!({ "item": p.item() })));
        }
    }
    Ok(typed)
}

impl Kiosk {
    /// Compare a live finger with the card's fingerprint blocks.
    pub async fn match_fingerprint(&self, session: &ApplicantSession) -> Result<FingerMatched> {
        self.require_ready(session, Step::Fingerprint)?;
        self.require_consent(session, &["fingerprint"]).await?;
        let card = self.memory.card(&session.id).unwrap_or_default();
        if card.fingerprints.is_empty() {
            return Err(Error::unprocessable(
                "card_has_no_fingerprint",
                "the ID card carries no fingerprint; choose another verification method",
            ));
        }
        let step = |phase: &str, pct: u8| self.events.step(&session.id, "fingerprint", phase, pct);
        step("place_finger", 10);
        let image = {
            let mut sensor = self.devices.fingerprint.lock().await;
            tokio::time::timeout(FINGER_TIMEOUT, sensor.capture_image())
                .await
                .map_err(|_| {
                    finger_error(FingerprintError::NoFinger(FINGER_TIMEOUT.as_millis() as u64))
                })?
                .map_err(finger_error)?
        };
        step("comparing", 70);
        let live = LiveFingerprint(Zeroizing::new(image.pixels.to_vec()));
        let result = self
            .binding
            .fingerprint
            .compare(&live, &card.fingerprints)
            .await
            .map_err(binding_error)?;
        self.record_event(
            Actor::Applicant(session.id.clone()),
            "binding.fingerprint",
            None,
            json!({ "matched": result.is_match }),
        )
        .await?;
        if !result.is_match {
            return Err(Error::unprocessable(
                "fingerprint_no_match",
                "the finger does not match the card; try again or choose another method",
            ));
        }
        self.memory.complete(&session.id, Step::Fingerprint);
        step("matched", 100);
        Ok(FingerMatched { matched: true })
    }

    /// Verify the applicant's identity with one of the service's methods.
    pub async fn verify_identity(
        &self,
        session: &ApplicantSession,
        input: VerificationInput,
    ) -> Result<Verified> {
        let method = input.method.clone();
        let offered = self
            .catalog
            .service(&session.service)
            .map(|s| s.methods.contains(&method))
            .unwrap_or(false);
        if !offered {
            return Err(Error::new(
                ErrorKind::BadRequest,
                "unknown_method",
                format!("{method:?} is not a verification method of this service"),
            ));
        }
        self.require_ready(session, Step::Verification)?;
        let typed = typed_numbers(input)?;
        // Consents, then the card's items from the store (the read is audited).
        let st = self.clone();
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
        let holder = self.holder_values(session).await?;
        let request = self.verification_request(session, &method, &holder.values, &typed);
        self.events.step(&session.id, "verification", "sending", 30);
        let result = self.verifier.verify(request).await;
        self.record_handover(session, holder.digest, &result)
            .await?;
        let outcome = result.map_err(|e| {
            tracing::warn!(method = %method, error = %e, "verification failed");
            verify_error(&e)
        })?;
        if outcome.verdict != Verdict::Match {
            return Err(Error::unprocessable(
                "verification_failed",
                "the service could not confirm your identity; check the numbers or choose another method",
            )
            .with_details(json!({ "verdict": outcome.verdict.as_str() })));
        }
        let kept: Vec<Personal> = typed
            .into_iter()
            .filter(|p| TYPED_ITEMS.contains(&p.item()))
            .collect();
        self.memory.put_typed(&session.id, kept);
        self.memory.update_progress(&session.id, |p| {
            p.done.insert(Step::Verification);
            p.verified_by = Some(method.clone());
        });
        self.events
            .step(&session.id, "verification", "verified", 100);
        tracing::info!(session = %session.id, method = %method, "identity verified");
        Ok(Verified {
            method,
            verdict: "match",
        })
    }

    /// Exactly the method's declared fields, from the card and what was typed.
    fn verification_request(
        &self,
        session: &ApplicantSession,
        method: &str,
        card_items: &[Personal],
        typed: &[Personal],
    ) -> VerificationRequest {
        let mut request = VerificationRequest::new(method.to_string());
        let declared = self
            .catalog
            .method(method)
            .map(|d| d.fields.clone())
            .unwrap_or_default();
        let wants = |item: &str| declared.iter().any(|f| f == item);
        for p in card_items.iter().chain(typed.iter()) {
            if wants(p.item()) {
                request.push(Field::Text(p.clone()));
            }
        }
        if wants("id_photo") {
            if let Some(photo) = self.memory.card(&session.id).and_then(|c| c.photo) {
                request.push(Field::Bytes(PersonalBytes::new(
                    "id_photo",
                    photo.expose().to_vec(),
                )));
            }
        }
        if wants("face_image") {
            if let Some(face) = self.memory.face(&session.id) {
                request.push(Field::Bytes(PersonalBytes::new(
                    "face_image",
                    face_pgm(&face),
                )));
            }
        }
        request
    }

    /// Every hand-over is recorded, whatever came back.
    async fn record_handover(
        &self,
        session: &ApplicantSession,
        digest: [u8; 32],
        result: &Result<crate::verify::VerificationOutcome, VerifyError>,
    ) -> Result<()> {
        let st = self.clone();
        let s = session.clone();
        let recorded = result.clone();
        blocking(move || {
            let mut conn = st.store.conn()?;
            let tx = conn.transaction()?;
            let mut ctx = HandoverContext::applicant(&s.id, &s.service);
            ctx.subject = Some(digest);
            record_attempt(&tx, now_ms(), &ctx, &recorded)
                .map_err(|e| Error::internal(e.to_string()))?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}
