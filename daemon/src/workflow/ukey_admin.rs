//! Staff care of a holder's UKEY at the desk: unblocking a locked user PIN with the token's
//! SO PIN (kept by the branch, never by the holder) and a new user PIN, and changing the
//! user PIN with the current one. Each PIN is tried once: the attempt is reserved against the
//! token's serial in the store before it reaches the token (SO PINs counted apart from user
//! PINs), one login at a time per token; the token's own counters stay the authority. Every
//! action is audited with the staff member and the token's serial, never a PIN. The kiosk's
//! own tokens are never touched here.

use std::sync::Arc;

use hsm::{Pin, Token, TokenError, UserKind};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ukey::{UKEY_PIN_LIMIT, attempt_outcome, ukey_login_lock};
use super::{Error, ErrorKind, Kiosk, Result};
use crate::staff::StaffSession;
use crate::store::pin_attempts::{self, Kind, Outcome, Reservation};

/// Wrong SO PINs the desk lets staff enter for one UKEY before it stops asking for
/// `SO_PIN_BACKOFF_MS` (the token's own SO counter may be lower).
pub const MAX_SO_PIN_FAILURES: u32 = 3;
const SO_PIN_BACKOFF_MS: i64 = 30 * 60 * 1000;
const SO_PIN_LIMIT: pin_attempts::Limit = pin_attempts::Limit {
    max_failures: MAX_SO_PIN_FAILURES,
    window_ms: SO_PIN_BACKOFF_MS,
};

/// Unblock: the token's SO PIN and the holder's new user PIN; wiped when dropped.
#[derive(Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
pub struct UnblockInput {
    pub serial: String,
    pub so_pin: String,
    pub new_pin: String,
}

/// PIN change: the current user PIN and the new one; wiped when dropped.
#[derive(Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
pub struct ChangePinInput {
    pub serial: String,
    pub pin: String,
    pub new_pin: String,
}

/// The token's user PIN after the action.
#[derive(Serialize)]
pub struct PinReset {
    pub serial: String,
    pub pin_state: hsm::PinState,
}

/// A PIN the desk checks before it goes to the token (the token has its own rules too).
fn check_new_pin(pin: &str) -> Result<()> {
    if (6..=16).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::unprocessable(
            "pin_invalid",
            "the new PIN is 6 to 16 digits",
        ))
    }
}

impl Kiosk {
    /// The holder's UKEY with `serial` (never one of the kiosk's own tokens).
    async fn ukey_by_serial(&self, serial: &str) -> Result<Arc<dyn Token>> {
        let _ = self.ukeys.refresh().await;
        let info = self
            .ukeys
            .list_tokens()
            .await?
            .into_iter()
            .find(|t| t.serial == serial && t.initialized && !self.is_kiosk_token(&t.label))
            .ok_or_else(|| {
                Error::not_found_code("token_not_present", "no such UKEY is inserted")
            })?;
        Ok(self.ukeys.open_token(&info.label).await?)
    }

    /// Reserve one attempt of `kind` on `serial` (its number, 1-based), or refuse with `code`
    /// when the limit is reached.
    async fn reserve(
        &self,
        kind: Kind,
        serial: &str,
        limit: pin_attempts::Limit,
        code: &'static str,
    ) -> Result<u32> {
        match self.reserve_attempt(kind, serial, limit).await? {
            Reservation::Granted { attempt } => Ok(attempt),
            Reservation::Refused { retry_after_ms } => Err(Error::new(
                ErrorKind::TooMany,
                code,
                "too many wrong PINs for this UKEY at this kiosk; try again later",
            )
            .with_details(json!({ "retry_after_ms": retry_after_ms }))),
        }
    }

    /// Unblock the holder's user PIN with the SO PIN and set `new_pin`.
    pub async fn unblock_ukey(
        &self,
        staff: &StaffSession,
        input: UnblockInput,
    ) -> Result<PinReset> {
        check_new_pin(&input.new_pin)?;
        let token = self.ukey_by_serial(&input.serial).await?;
        let gate = ukey_login_lock(&input.serial);
        let _one_at_a_time = gate.lock().await;
        let attempt = self
            .reserve(
                Kind::UkeySo,
                &input.serial,
                SO_PIN_LIMIT,
                "so_pin_attempts_exceeded",
            )
            .await?;
        let result = token
            .unblock_user_pin(
                &Pin::new(input.so_pin.as_str()),
                &Pin::new(input.new_pin.as_str()),
            )
            .await;
        match result {
            Ok(()) => {
                // The holder's own counter at this kiosk starts again with the new PIN.
                self.settle_attempts(&[Kind::UkeySo, Kind::Ukey], &input.serial, Outcome::Success)
                    .await?;
            }
            Err(TokenError::PinIncorrect { retries_left }) => {
                self.settle_attempts(&[Kind::UkeySo], &input.serial, Outcome::Failure)
                    .await?;
                // The lower of the token's count (when it says) and this kiosk's.
                let kiosk_left = MAX_SO_PIN_FAILURES.saturating_sub(attempt);
                let left = retries_left.map_or(kiosk_left, |t| t.min(kiosk_left));
                self.audit_staff(
                    staff,
                    "staff.ukey.unblock_refused",
                    json!({ "serial": input.serial }),
                )
                .await?;
                return Err(
                    Error::new(ErrorKind::Forbidden, "so_pin_incorrect", "wrong SO PIN")
                        .with_details(json!({ "retries_left": left })),
                );
            }
            Err(TokenError::PinLocked) => {
                self.settle_attempts(&[Kind::UkeySo], &input.serial, Outcome::Failure)
                    .await?;
                return Err(Error::new(
                    ErrorKind::Locked,
                    "so_pin_locked",
                    "the UKEY's SO PIN is locked; the UKEY cannot be unblocked at the branch",
                ));
            }
            Err(e) => {
                self.settle_attempts(&[Kind::UkeySo], &input.serial, Outcome::NotTried)
                    .await?;
                return Err(e.into());
            }
        }
        self.audit_staff(
            staff,
            "staff.ukey.unblock",
            json!({ "serial": input.serial }),
        )
        .await?;
        tracing::info!(staff = %staff.staff_id, serial = %input.serial, "UKEY user PIN unblocked");
        self.pin_reset(&token, &input.serial).await
    }

    /// Change the holder's user PIN, the current one given.
    pub async fn change_ukey_pin(
        &self,
        staff: &StaffSession,
        input: ChangePinInput,
    ) -> Result<PinReset> {
        check_new_pin(&input.new_pin)?;
        let token = self.ukey_by_serial(&input.serial).await?;
        let gate = ukey_login_lock(&input.serial);
        let _one_at_a_time = gate.lock().await;
        self.reserve(
            Kind::Ukey,
            &input.serial,
            UKEY_PIN_LIMIT,
            "pin_attempts_exceeded",
        )
        .await?;
        if token.is_logged_in() {
            let _ = token.logout().await;
        }
        let result = token
            .change_pin(
                UserKind::User,
                &Pin::new(input.pin.as_str()),
                &Pin::new(input.new_pin.as_str()),
            )
            .await;
        let outcome = attempt_outcome(&result);
        self.settle_attempts(&[Kind::Ukey], &input.serial, outcome)
            .await?;
        result?;
        self.audit_staff(
            staff,
            "staff.ukey.pin_change",
            json!({ "serial": input.serial }),
        )
        .await?;
        self.pin_reset(&token, &input.serial).await
    }

    async fn pin_reset(&self, token: &Arc<dyn Token>, serial: &str) -> Result<PinReset> {
        let info = token.info().await?;
        Ok(PinReset {
            serial: serial.to_string(),
            pin_state: info.pin_state,
        })
    }
}
