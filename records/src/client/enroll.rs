//! The kiosk provisioning contract between `kioskctl provision` and hq-ingest's enrollment
//! listener: `POST /v1/enroll` with an [`EnrollRequest`] (JSON), answered by an
//! [`EnrollAnswer`] (200) or an [`EnrollRefusal`] (4xx/5xx). One definition, used by both ends.

use zeroize::Zeroize;

/// Path of the enrollment route.
pub const ENROLL_PATH: &str = "/v1/enroll";

/// Largest request body HQ reads (a CSR and a verifier are a few kilobytes).
pub const MAX_ENROLL_REQUEST_BYTES: usize = 64 * 1024;

/// What a kiosk sends to enroll. The one-time code is a secret: it is never printed by
/// `Debug` and is wiped when the request is dropped.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time enrollment code from `hq-ingest enroll-kiosk`.
    pub code: String,
    /// The kiosk id the kiosk is configured with (must be the code's).
    pub kiosk_id: String,
    /// PEM PKCS#10 request for the kiosk's TLS client key (P-256, made on its device token).
    pub csr_pem: String,
    /// The kiosk's envelope-signing device key (verifier JSON, [`crate::public_keys`]).
    pub device_key: String,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("code", &"<redacted>")
            .field("kiosk_id", &self.kiosk_id)
            .finish_non_exhaustive()
    }
}

impl Drop for EnrollRequest {
    fn drop(&mut self) {
        self.code.zeroize();
    }
}

/// HQ's answer to an accepted enrollment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnrollAnswer {
    /// The kiosk id certified (client certificate CN).
    pub kiosk_id: String,
    /// The branch HQ registered the kiosk under.
    pub branch: String,
    /// Lower-case hex serial of the client certificate.
    pub serial: String,
    /// The client certificate followed by the kiosk CA's certificate (PEM).
    pub certificate_chain_pem: String,
    /// HQ's record-encryption public keys (JSON, [`crate::public_keys`]).
    pub record_public: String,
    /// HQ's witness public key (verifier JSON), which the kiosk pins to check HQ's
    /// cosignatures of its audit log.
    pub witness_public: String,
    /// The witness key's name in cosignature lines.
    pub witness_name: String,
}

/// HQ's refusal: a stable `error` code and a one-line message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnrollRefusal {
    /// Stable code, e.g. `enrollment_code_used`.
    pub error: String,
    /// One line for the operator.
    pub message: String,
}
