//! Applicant sessions: one at a time per kiosk (one person stands at the
//! screen), identified by a random id and authenticated by a random bearer
//! token that the kiosk page holds in memory; expired after
//! `api.session_idle_secs` without a request. A session sees only its own data.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a session request fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("another applicant is using the kiosk")]
    Busy,
    #[error("no such session, or it expired")]
    NotFound,
    #[error("the session token is missing or wrong")]
    Unauthorized,
}

/// The live applicant session.
#[derive(Debug, Clone)]
pub struct ApplicantSession {
    pub id: String,
    pub service: String,
    token_digest: [u8; 32],
    last_seen: Instant,
}

/// The kiosk's single applicant slot.
pub struct Sessions {
    slot: Mutex<Option<ApplicantSession>>,
    idle: Duration,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("system randomness");
    hex::encode(b)
}

impl Sessions {
    pub fn new(idle: Duration) -> Self {
        Self {
            slot: Mutex::new(None),
            idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ApplicantSession>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open a session for `service`; returns (id, token). An expired session
    /// is replaced (its id is returned second so the caller can clean it up).
    pub fn open(
        &self,
        service: &str,
    ) -> Result<(ApplicantSession, String, Option<String>), SessionError> {
        let mut slot = self.lock();
        let mut expired = None;
        if let Some(s) = slot.as_ref() {
            if s.last_seen.elapsed() < self.idle {
                return Err(SessionError::Busy);
            }
            expired = Some(s.id.clone());
        }
        let token = random_hex(32);
        let session = ApplicantSession {
            id: uuid::Uuid::new_v4().to_string(),
            service: service.to_string(),
            token_digest: digest(&token),
            last_seen: Instant::now(),
        };
        *slot = Some(session.clone());
        Ok((session, token, expired))
    }

    /// Check the bearer token of session `id` and refresh its idle timer.
    pub fn authenticate(
        &self,
        id: &str,
        token: Option<&str>,
    ) -> Result<ApplicantSession, SessionError> {
        let mut slot = self.lock();
        let s = slot.as_mut().ok_or(SessionError::NotFound)?;
        if s.id != id || s.last_seen.elapsed() >= self.idle {
            return Err(SessionError::NotFound);
        }
        let token = token.ok_or(SessionError::Unauthorized)?;
        // Constant-time: a timing difference must not reveal how much of a guess matched.
        if !bool::from(digest(token).ct_eq(&s.token_digest)) {
            return Err(SessionError::Unauthorized);
        }
        s.last_seen = Instant::now();
        Ok(s.clone())
    }

    /// End session `id` (cancel or finish).
    pub fn close(&self, id: &str) -> bool {
        let mut slot = self.lock();
        if slot.as_ref().is_some_and(|s| s.id == id) {
            *slot = None;
            return true;
        }
        false
    }

    /// Whether `id` is the open session (used under the store lock so that a
    /// step finishing after a cancel cannot store anything).
    pub fn is_open(&self, id: &str) -> bool {
        self.lock().as_ref().is_some_and(|s| s.id == id)
    }

    /// Take the session out if it has been idle too long (the idle sweeper).
    pub fn take_expired(&self) -> Option<String> {
        let mut slot = self.lock();
        if slot
            .as_ref()
            .is_some_and(|s| s.last_seen.elapsed() >= self.idle)
        {
            return slot.take().map(|s| s.id);
        }
        None
    }

    pub fn active(&self) -> bool {
        self.lock()
            .as_ref()
            .is_some_and(|s| s.last_seen.elapsed() < self.idle)
    }
}

/// What an applicant session holds in memory only (zeroized on drop,
/// forgotten when the session ends): live biometrics and a verified guardian.
#[derive(Default)]
pub struct SessionMemory {
    faces: Mutex<std::collections::HashMap<String, drivers::binding::FaceImage>>,
    guardians: Mutex<std::collections::HashMap<String, Guardian>>,
    progress: Mutex<std::collections::HashMap<String, Progress>>,
    cards: Mutex<std::collections::HashMap<String, CardBiometrics>>,
    typed: Mutex<std::collections::HashMap<String, Vec<crate::privacy::Personal>>>,
}

/// How far an applicant's workflow got (no personal values).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub done: std::collections::BTreeSet<crate::workflow::plan::Step>,
    /// The method that verified the applicant's identity.
    pub verified_by: Option<String>,
    /// Serial (hex) of the certificate issued or acted on in this session.
    pub certificate_serial: Option<String>,
    /// Wrong UKEY PINs entered in this session.
    pub pin_failures: u32,
}

/// The card's photo and fingerprint blocks, kept for the session's comparisons only, and only
/// with the applicant's consent to each (zeroized on drop by their types).
#[derive(Debug, Clone, Default)]
pub struct CardBiometrics {
    pub photo: Option<firmware_interfaces::sam::WltPhoto>,
    pub fingerprints: Vec<firmware_interfaces::sam::CardFingerprint>,
}

/// A guardian verified through the identity flow, with the items that go
/// with the minor's record.
#[derive(Debug, Clone)]
pub struct Guardian {
    pub verified: crate::privacy::minors::VerifiedGuardian,
    pub items: Vec<crate::privacy::Personal>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SessionMemory {
    pub fn put_face(&self, session: &str, face: drivers::binding::FaceImage) {
        lock(&self.faces).insert(session.to_string(), face);
    }

    pub fn face(&self, session: &str) -> Option<drivers::binding::FaceImage> {
        lock(&self.faces).get(session).cloned()
    }

    pub fn put_guardian(&self, session: &str, guardian: Guardian) {
        lock(&self.guardians).insert(session.to_string(), guardian);
    }

    pub fn guardian(&self, session: &str) -> Option<Guardian> {
        lock(&self.guardians).get(session).cloned()
    }

    /// What the workflow of `session` has done so far.
    pub fn progress(&self, session: &str) -> Progress {
        lock(&self.progress)
            .get(session)
            .cloned()
            .unwrap_or_default()
    }

    /// Change the progress of `session`.
    pub fn update_progress(&self, session: &str, f: impl FnOnce(&mut Progress)) {
        f(lock(&self.progress).entry(session.to_string()).or_default());
    }

    /// Mark `step` done for `session`.
    pub fn complete(&self, session: &str, step: crate::workflow::plan::Step) {
        self.update_progress(session, |p| {
            p.done.insert(step);
        });
    }

    pub fn put_card(&self, session: &str, card: CardBiometrics) {
        lock(&self.cards).insert(session.to_string(), card);
    }

    pub fn card(&self, session: &str) -> Option<CardBiometrics> {
        lock(&self.cards).get(session).cloned()
    }

    /// Keep what the applicant typed for a verification that succeeded (their mobile, ...):
    /// it goes with their record through the minimizer, and is forgotten with the session.
    pub fn put_typed(&self, session: &str, values: Vec<crate::privacy::Personal>) {
        lock(&self.typed).insert(session.to_string(), values);
    }

    pub fn typed(&self, session: &str) -> Vec<crate::privacy::Personal> {
        lock(&self.typed).get(session).cloned().unwrap_or_default()
    }

    /// Forget everything held for `session`.
    pub fn forget(&self, session: &str) {
        lock(&self.typed).remove(session);
        lock(&self.faces).remove(session);
        lock(&self.guardians).remove(session);
        lock(&self.progress).remove(session);
        lock(&self.cards).remove(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_applicant_at_a_time_with_a_token() {
        let s = Sessions::new(Duration::from_secs(60));
        let (a, token, _) = s.open("cert_application").unwrap();
        assert_eq!(s.open("cert_application").unwrap_err(), SessionError::Busy);
        assert_eq!(
            s.authenticate(&a.id, Some("wrong")).unwrap_err(),
            SessionError::Unauthorized
        );
        assert_eq!(
            s.authenticate(&a.id, None).unwrap_err(),
            SessionError::Unauthorized
        );
        assert_eq!(
            s.authenticate("other", Some(&token)).unwrap_err(),
            SessionError::NotFound
        );
        assert_eq!(
            s.authenticate(&a.id, Some(&token)).unwrap().service,
            "cert_application"
        );
        assert!(s.close(&a.id));
        assert!(s.open("lifecycle").is_ok());
    }

    #[test]
    fn idle_sessions_expire_and_are_replaced() {
        let s = Sessions::new(Duration::ZERO);
        let (a, token, _) = s.open("cert_application").unwrap();
        assert_eq!(
            s.authenticate(&a.id, Some(&token)).unwrap_err(),
            SessionError::NotFound
        );
        let (_, _, expired) = s.open("cert_application").unwrap();
        assert_eq!(expired.as_deref(), Some(a.id.as_str()));
    }
}
