//! The applicant's UKEY: finding the one inserted (never the kiosk's own tokens), its
//! status, and the holder's login. PINs are zeroized, tried once per request (never retried
//! by the kiosk) and limited per UKEY serial in the store on top of the token's own counter;
//! the PIN state goes to the events stream. The certificate use cases on it are in the
//! `certificate` module.

use std::sync::Arc;

use hsm::{KeyAlgorithm, Pin, PinState, Token, TokenError, UserKind};
use serde::Serialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::{Error, ErrorKind, Kiosk, Result, blocking};
use crate::audit::Actor;
use crate::clock::now_ms;
use crate::privacy::Personal;
use crate::session::ApplicantSession;
use crate::store::pin_attempts::{self, Kind, Outcome, Reservation};
use crate::store::subjects::Subjects;

/// Wrong PINs the kiosk lets anyone enter for one UKEY (counted per UKEY serial in the store,
/// across sessions and restarts) before it stops asking for `UKEY_PIN_BACKOFF_MS` (the token's
/// own counter may be higher, or absent as on SoftHSM2).
pub const MAX_PIN_FAILURES_PER_SESSION: u32 = 5;
/// How long a UKEY that reached the limit is not asked for its PIN again.
const UKEY_PIN_BACKOFF_MS: i64 = 30 * 60 * 1000;
pub(crate) const UKEY_PIN_LIMIT: pin_attempts::Limit = pin_attempts::Limit {
    max_failures: MAX_PIN_FAILURES_PER_SESSION,
    window_ms: UKEY_PIN_BACKOFF_MS,
};

/// One holder login at a time per UKEY serial (a PKCS#11 login is per token and process:
/// a second login racing the first would be answered "already logged in").
pub(crate) fn ukey_login_lock(serial: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    > = std::sync::LazyLock::new(Default::default);
    LOCKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(serial.to_string())
        .or_default()
        .clone()
}

fn pin_state_name(s: PinState) -> &'static str {
    match s {
        PinState::Ok => "ok",
        PinState::CountLow => "count_low",
        PinState::FinalTry => "final_try",
        PinState::Locked => "locked",
        PinState::NotInitialized => "not_initialized",
        PinState::ToBeChanged => "to_be_changed",
    }
}

/// The PIN state of the inserted UKEY as the screen shows it.
#[derive(Serialize)]
pub struct PinView {
    pub state: Option<&'static str>,
    pub retries_left: Option<u32>,
}

/// Whether a UKEY is inserted, and its PIN state.
#[derive(Serialize)]
pub struct UkeyStatus {
    pub present: bool,
    pub serial: Option<String>,
    pub blank: bool,
    pub pin: PinView,
}

/// The verified holder: their subject, its keyed digest and their card items (read audited).
pub struct Holder {
    pub subject_id: String,
    pub digest: [u8; 32],
    pub values: Vec<Personal>,
}

/// How a PIN the token was given counts: a wrong or locked PIN stays counted, one that never
/// reached the token is given back.
pub(crate) fn attempt_outcome<T>(result: &std::result::Result<T, TokenError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(TokenError::PinIncorrect { .. } | TokenError::PinLocked) => Outcome::Failure,
        Err(_) => Outcome::NotTried,
    }
}

/// The key type the kiosk generates on UKEYs (`[ukey] algorithm`).
pub fn algorithm_of(config: &kiosk_config::Config) -> KeyAlgorithm {
    match config.ukey.algorithm {
        kiosk_config::UkeyAlgorithm::P256 => KeyAlgorithm::P256,
        kiosk_config::UkeyAlgorithm::Sm2 => KeyAlgorithm::Sm2,
    }
}

impl Kiosk {
    /// Labels on the UKEY provider that are not applicants' UKEYs (the kiosk's own tokens
    /// when they share a PKCS#11 module).
    pub(crate) fn is_kiosk_token(&self, label: &str) -> bool {
        label == self.config.token.device_token || label == self.config.staff.demo_token
    }

    /// The one applicant UKEY inserted.
    pub(crate) async fn find_ukey(&self) -> Result<(Arc<dyn Token>, hsm::TokenInfo)> {
        let _ = self.ukeys.refresh().await;
        let tokens = self.ukeys.list_tokens().await?;
        let mut present: Vec<_> = tokens
            .into_iter()
            .filter(|t| t.initialized && !self.is_kiosk_token(&t.label))
            .collect();
        match present.len() {
            0 => Err(Error::conflict("ukey_absent", "insert your UKEY")),
            1 => {
                let info = present.remove(0);
                let token = self.ukeys.open_token(&info.label).await?;
                Ok((token, info))
            }
            _ => Err(Error::conflict(
                "ukey_ambiguous",
                "more than one UKEY is inserted; leave only yours",
            )),
        }
    }

    /// Whether a UKEY is inserted and its PIN state.
    pub async fn ukey_status(&self, _session: &ApplicantSession) -> Result<UkeyStatus> {
        match self.find_ukey().await {
            Ok((_, info)) => Ok(UkeyStatus {
                present: true,
                serial: Some(info.serial),
                blank: info.pin_state == PinState::NotInitialized,
                pin: PinView {
                    state: Some(pin_state_name(info.pin_state)),
                    retries_left: info.user_retries_left,
                },
            }),
            Err(e) if e.code == "ukey_absent" => Ok(UkeyStatus {
                present: false,
                serial: None,
                blank: false,
                pin: PinView {
                    state: None,
                    retries_left: None,
                },
            }),
            Err(e) => Err(e),
        }
    }

    /// The inserted UKEY with the holder logged in by `pin` (signing and the lifecycle
    /// actions).
    pub(crate) async fn holder_ukey(
        &self,
        session: &ApplicantSession,
        pin: Zeroizing<String>,
    ) -> Result<Arc<dyn Token>> {
        let (token, _) = self.find_ukey().await?;
        self.login_holder(session, &token, pin).await?;
        Ok(token)
    }

    /// Log in as the holder with `pin`, once. The attempt is reserved against the UKEY's
    /// serial in the store before the PIN goes to the token (no race, no reset by a new
    /// session or a restart); the screen learns the retries left (from the token when it
    /// says, else from the limit).
    pub(crate) async fn login_holder(
        &self,
        session: &ApplicantSession,
        token: &Arc<dyn Token>,
        pin: Zeroizing<String>,
    ) -> Result<()> {
        let serial = token.info().await?.serial;
        let gate = ukey_login_lock(&serial);
        let _one_at_a_time = gate.lock().await;
        let used = self.reserve_pin_attempt(session, &serial).await?;
        if token.is_logged_in() {
            let _ = token.logout().await;
        }
        let result = token.login(UserKind::User, &Pin::new(pin.as_str())).await;
        self.settle_attempts(&[Kind::Ukey], &serial, attempt_outcome(&result))
            .await?;
        match result {
            Ok(()) => {
                self.events.pin(&session.id, "ok", None);
                Ok(())
            }
            Err(TokenError::PinIncorrect { retries_left }) => {
                Err(self.wrong_pin(session, used, retries_left).await?)
            }
            Err(TokenError::PinLocked) => {
                self.events.pin(&session.id, "locked", Some(0));
                Err(TokenError::PinLocked.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reserve one attempt of `kind` on the token `serial` in the store (before the PIN goes
    /// to the token: no race, no reset by a new session or a restart).
    pub(crate) async fn reserve_attempt(
        &self,
        kind: Kind,
        serial: &str,
        limit: pin_attempts::Limit,
    ) -> Result<Reservation> {
        let (st, key) = (self.clone(), serial.to_string());
        blocking(move || {
            let mut conn = st.store.conn()?;
            Ok(pin_attempts::reserve(
                &mut conn,
                kind,
                &key,
                now_ms(),
                limit,
            )?)
        })
        .await
    }

    /// Settle the reserved attempts of `kinds` on `serial` with `outcome`.
    pub(crate) async fn settle_attempts(
        &self,
        kinds: &'static [Kind],
        serial: &str,
        outcome: Outcome,
    ) -> Result<()> {
        let (st, key) = (self.clone(), serial.to_string());
        blocking(move || {
            let conn = st.store.conn()?;
            for kind in kinds {
                pin_attempts::settle(&conn, *kind, &key, outcome)?;
            }
            Ok(())
        })
        .await
    }

    /// Reserve one PIN attempt for the UKEY `serial`; the attempt's number when granted.
    async fn reserve_pin_attempt(&self, session: &ApplicantSession, serial: &str) -> Result<u32> {
        match self
            .reserve_attempt(Kind::Ukey, serial, UKEY_PIN_LIMIT)
            .await?
        {
            Reservation::Granted { attempt } => Ok(attempt),
            Reservation::Refused { .. } => {
                self.events.pin(&session.id, "locked", Some(0));
                Err(Error::new(
                    ErrorKind::TooMany,
                    "pin_attempts_exceeded",
                    "too many wrong PINs for this UKEY; ask branch staff for help",
                )
                .with_details(json!({ "retries_left": 0 })))
            }
        }
    }

    /// A wrong PIN: the retries left (the lower of the token's and the kiosk's), told to the
    /// screen and the audit log.
    async fn wrong_pin(
        &self,
        session: &ApplicantSession,
        used: u32,
        retries_left: Option<u32>,
    ) -> Result<Error> {
        let session_left = MAX_PIN_FAILURES_PER_SESSION.saturating_sub(used);
        let left = retries_left.map_or(session_left, |t| t.min(session_left));
        let shown = match left {
            0 => "locked",
            1 => "final_try",
            _ => "count_low",
        };
        self.events.pin(&session.id, shown, Some(left));
        self.record_event(
            Actor::Applicant(session.id.clone()),
            "ukey.pin_incorrect",
            None,
            json!({ "retries_left": left }),
        )
        .await?;
        Ok(
            Error::new(ErrorKind::Forbidden, "pin_incorrect", "wrong PIN")
                .with_details(json!({ "retries_left": left, "state": shown })),
        )
    }

    /// The session's card items (read audited) and the subject's keyed digest.
    pub(crate) async fn holder_values(&self, session: &ApplicantSession) -> Result<Holder> {
        let st = self.clone();
        let s = session.clone();
        blocking(move || {
            let mut conn = st.store.conn()?;
            let subject_id = Subjects::of_session(&conn, &s.id)
                .map_err(|e| Error::internal(e.to_string()))?
                .ok_or_else(|| Error::conflict("step_out_of_order", "read the ID card first"))?;
            let subjects = st.subjects();
            let tx = conn.transaction()?;
            let values = subjects
                .read(&tx, now_ms(), &Actor::Applicant(s.id.clone()), &subject_id)
                .map_err(|e| Error::internal(e.to_string()))?;
            tx.commit()?;
            let id_number = values
                .iter()
                .find(|p| p.item() == "id_number")
                .ok_or_else(|| Error::internal("the subject has no ID number"))?;
            let digest = subjects
                .digest_of(id_number)
                .map_err(Error::token_unavailable)?;
            Ok(Holder {
                subject_id,
                digest,
                values,
            })
        })
        .await
    }
}
