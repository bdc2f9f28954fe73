//! Why a use case did not happen: the kind of refusal (what a front door maps to its own
//! status), a stable machine-readable code, a message a person can act on and, for the
//! screen, particulars that are never personal data. Internal details (SQL, paths, token
//! errors) are logged here, where they are converted, and never carried out.

use drivers::IdCardError;
use hsm::TokenError;
use serde_json::json;

use crate::batch::BatchError;
use crate::privacy::consent::ConsentError;
use crate::rights::RightsError;
use crate::session::SessionError;
use crate::staff::StaffError;
use crate::workflow::idcard::IdCardStepError;

/// The kind of a refusal, independent of any transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is malformed or names something that does not exist in the catalog.
    BadRequest,
    /// No valid session or staff login.
    Unauthorized,
    /// Authenticated, but not allowed (not the holder, not a staff token, a minor...).
    Forbidden,
    /// The thing named is not there.
    NotFound,
    /// The state does not allow it now (step order, busy, absent device).
    Conflict,
    /// Well-formed but refused by a rule (consent, validation).
    Unprocessable,
    /// A PIN is locked.
    Locked,
    /// Too many attempts; wait.
    TooMany,
    /// A dependency (store, token, HQ, a device) is unavailable; try again later.
    Unavailable,
    /// The disk is too full to take personal data.
    InsufficientStorage,
    /// A device or service did not answer in time.
    Timeout,
    /// An upstream service (the CA, a verifier) refused.
    Upstream,
    /// A bug or an unexpected failure (details are logged).
    Internal,
}

/// A use case's refusal or failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    /// A stable code (`pin_incorrect`, `step_out_of_order`...).
    pub code: &'static str,
    pub message: String,
    /// Machine-readable particulars the screen needs (e.g. `{"retries_left": 2}`), never
    /// personal data.
    pub details: Option<serde_json::Value>,
}

/// A use case's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The same error with particulars for the screen.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, "not_found", message)
    }

    /// Something named is not there, with its own code.
    pub fn not_found_code(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unprocessable, code, message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, code, message)
    }

    /// The device keys (on the token) could not be used.
    pub fn token_unavailable(e: impl std::fmt::Display) -> Self {
        Self::unavailable("token_unavailable", e.to_string())
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        Self::unavailable("store_unavailable", "the kiosk store is unavailable")
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        crate::store::StoreError::from(e).into()
    }
}

impl From<crate::audit::AuditError> for Error {
    fn from(e: crate::audit::AuditError) -> Self {
        tracing::error!(error = %e, "audit log write failed");
        Self::unavailable(
            "audit_unavailable",
            "the audit log could not be written; nothing was changed",
        )
    }
}

impl From<SessionError> for Error {
    fn from(e: SessionError) -> Self {
        let (kind, code) = match e {
            SessionError::Busy => (ErrorKind::Conflict, "session_busy"),
            SessionError::NotFound => (ErrorKind::NotFound, "session_not_found"),
            SessionError::Unauthorized => (ErrorKind::Unauthorized, "session_unauthorized"),
        };
        Self::new(kind, code, e.to_string())
    }
}

impl From<ConsentError> for Error {
    fn from(e: ConsentError) -> Self {
        let code = match &e {
            ConsentError::Catalog(_) => "not_declared",
            ConsentError::NoPurposeConsent { .. } => "consent_required",
            ConsentError::SeparateConsentRequired { .. } => "separate_consent_required",
            ConsentError::Withdrawn { .. } => "consent_withdrawn",
            ConsentError::TransferConsentRequired { .. } => "transfer_consent_required",
            ConsentError::Sql(_) | ConsentError::Audit(_) => {
                tracing::error!(error = %e, "consent store failed");
                return Self::internal("the consent could not be recorded");
            }
        };
        Self::unprocessable(code, e.to_string())
    }
}

impl From<IdCardStepError> for Error {
    fn from(e: IdCardStepError) -> Self {
        match e {
            IdCardStepError::Consent(c) => c.into(),
            IdCardStepError::Minor(m) => {
                Self::new(ErrorKind::Forbidden, "guardian_required", m.to_string())
            }
            IdCardStepError::Device(d) => {
                let (kind, code) = match &d {
                    IdCardError::NoCard => (ErrorKind::Conflict, "no_card"),
                    IdCardError::CardRemoved => (ErrorKind::Conflict, "card_removed"),
                    IdCardError::Timeout { .. } => (ErrorKind::Timeout, "device_timeout"),
                    _ => (ErrorKind::Unavailable, "device_unavailable"),
                };
                tracing::warn!(error = %d, "ID-card read failed");
                Self::new(kind, code, d.to_string())
            }
        }
    }
}

impl From<StaffError> for Error {
    fn from(e: StaffError) -> Self {
        let (kind, code) = match &e {
            StaffError::NoToken => (ErrorKind::NotFound, "no_token"),
            StaffError::NotStaffToken => (ErrorKind::Forbidden, "not_a_staff_token"),
            StaffError::TokenBusy => (ErrorKind::Conflict, "token_busy"),
            StaffError::WrongPin { .. } => (ErrorKind::Unauthorized, "wrong_pin"),
            StaffError::PinLocked => (ErrorKind::Locked, "pin_locked"),
            StaffError::NoCertificate | StaffError::BadCertificate(_) => {
                (ErrorKind::Forbidden, "bad_certificate")
            }
            StaffError::RateLimited(_) => (ErrorKind::TooMany, "rate_limited"),
            StaffError::Unauthorized => (ErrorKind::Unauthorized, "staff_unauthorized"),
            StaffError::Token(_) | StaffError::Ca(_) | StaffError::Store(_) => {
                tracing::warn!(error = %e, "staff login failed");
                (ErrorKind::Unavailable, "token_unavailable")
            }
        };
        Self::new(kind, code, e.to_string())
    }
}

impl From<RightsError> for Error {
    fn from(e: RightsError) -> Self {
        match &e {
            RightsError::NotFound => Self::not_found("no such rights request"),
            RightsError::BadTransition { .. } => Self::conflict("bad_transition", e.to_string()),
            RightsError::UnknownGround(_) => Self::unprocessable("unknown_ground", e.to_string()),
            _ => {
                tracing::error!(error = %e, "rights request failed");
                Self::internal("the rights request could not be recorded")
            }
        }
    }
}

impl From<BatchError> for Error {
    fn from(e: BatchError) -> Self {
        let (kind, code) = match &e {
            BatchError::NoBlankTokens => (ErrorKind::Conflict, "no_blank_tokens"),
            BatchError::NotPresent(_) => (ErrorKind::NotFound, "token_not_present"),
            BatchError::NotBlank(_) => (ErrorKind::Conflict, "token_not_blank"),
            BatchError::Busy(_) => (ErrorKind::Conflict, "token_busy"),
            BatchError::Invalid(_) => (ErrorKind::Unprocessable, "invalid_body"),
            BatchError::Token(_) => {
                tracing::warn!(error = %e, "UKEY provider unavailable");
                (ErrorKind::Unavailable, "token_unavailable")
            }
        };
        Self::new(kind, code, e.to_string())
    }
}

/// A UKEY's error as the screen should see it.
impl From<TokenError> for Error {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::PinIncorrect { retries_left } => {
                Self::new(ErrorKind::Forbidden, "pin_incorrect", "wrong PIN")
                    .with_details(json!({ "retries_left": retries_left }))
            }
            TokenError::PinLocked => Self::new(
                ErrorKind::Locked,
                "pin_locked",
                "the UKEY's PIN is locked; branch staff can unblock it",
            ),
            TokenError::PinInvalid(why) => Self::unprocessable("pin_invalid", why),
            TokenError::TokenRemoved | TokenError::TokenNotPresent(_) => Self::conflict(
                "ukey_removed",
                "the UKEY was removed; insert it again and retry",
            ),
            TokenError::Timeout(_) => Self::new(
                ErrorKind::Timeout,
                "ukey_timeout",
                "the UKEY did not answer in time",
            ),
            TokenError::MechanismNotSupported(m) => {
                Self::unprocessable("ukey_unsupported", format!("the UKEY cannot do {m}"))
            }
            e @ (TokenError::ProbeFailed { .. } | TokenError::ProfileMismatch { .. }) => {
                tracing::warn!(error = %e, "UKEY refused: its vendor profile does not match it");
                Self::unprocessable("ukey_refused", e.to_string())
            }
            other => {
                tracing::warn!(error = %other, "UKEY operation failed");
                Self::unavailable(
                    "ukey_failed",
                    "the UKEY operation failed; remove and insert it, then retry",
                )
            }
        }
    }
}

impl From<crate::ca_client::CaError> for Error {
    fn from(e: crate::ca_client::CaError) -> Self {
        tracing::warn!(error = %e, "certificate authority request failed");
        if e.is_retryable() {
            Self::unavailable(
                "ca_unavailable",
                "the certificate authority cannot be reached; nothing was issued, try again later",
            )
        } else {
            Self::new(ErrorKind::Upstream, "ca_refused", e.to_string())
        }
    }
}
