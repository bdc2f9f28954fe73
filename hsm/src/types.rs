//! Plain data exchanged through the `Token` trait: algorithms, PIN state, token and key facts,
//! signatures in raw and DER form.

use serde::Serialize;

/// Asymmetric key algorithms kioskd uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256, signing SHA-256 digests.
    P256,
    /// SM2 signatures over SM3(Z_A ‖ M) (GB/T 32918).
    Sm2,
}

impl KeyAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::P256 => "p256",
            KeyAlgorithm::Sm2 => "sm2",
        }
    }
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = crate::TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "p256" | "p-256" | "ecdsa-p256" | "secp256r1" => Ok(KeyAlgorithm::P256),
            "sm2" => Ok(KeyAlgorithm::Sm2),
            other => Err(crate::TokenError::InvalidInput(format!(
                "unknown key algorithm {other:?} (expected p256 or sm2)"
            ))),
        }
    }
}

/// Symmetric keys held in the token for the daemon's keyed digests and data-key wrapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretKeyKind {
    /// HMAC-SHA-256 (PKCS#11 `CKM_SHA256_HMAC` on a generic secret; soft provider).
    HmacSha256,
    /// HMAC-SM3 (soft provider; PKCS#11 only where the vendor profile names it).
    HmacSm3,
    /// AES-256 key wrapping data keys with AES-GCM (PKCS#11 `CKM_AES_GCM`; soft provider).
    Aes256Wrap,
}

/// Who logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserKind {
    User,
    So,
}

/// What the token says about its user PIN, so a UI can warn before a lockout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PinState {
    /// No failed attempts recorded.
    Ok,
    /// The token has counted at least one wrong PIN.
    CountLow,
    /// The next wrong PIN locks the PIN.
    FinalTry,
    /// Locked: only the SO PIN (unblock) can help.
    Locked,
    /// The user PIN was never set (blank or freshly initialised token).
    NotInitialized,
    /// The token asks for the PIN to be changed before use.
    ToBeChanged,
}

/// One token (UKEY, HSM partition, or soft token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub label: String,
    pub serial: String,
    pub manufacturer: String,
    pub model: String,
    pub pin_state: PinState,
    pub so_pin_state: PinState,
    /// PKCS#11 slot id (`None` for the soft token).
    pub slot: Option<u64>,
    pub initialized: bool,
    pub login_required: bool,
    pub protected_authentication_path: bool,
    /// Retries left when the provider knows it (soft token), `None` otherwise.
    pub user_retries_left: Option<u32>,
}

/// A key pair on a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub label: String,
    /// `CKA_ID` (hex in JSON); a certificate with the same id belongs to this key.
    #[serde(serialize_with = "serialize_hex")]
    pub id: Vec<u8>,
    pub algorithm: KeyAlgorithm,
    /// Uncompressed SEC1 public point (65 bytes).
    #[serde(serialize_with = "serialize_hex")]
    pub public_key: Vec<u8>,
}

fn serialize_hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// A signature made by a token key: `raw` is r‖s (64 bytes), [`TokenSignature::to_der`]
/// gives the X9.62 / GM/T 0009 `SEQUENCE { r, s }` (implemented in `soft_crypto`, which
/// depends on this module and not the other way round).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSignature {
    pub algorithm: KeyAlgorithm,
    pub raw: Vec<u8>,
}

/// Something that happened to a slot or a USB device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenEvent {
    /// A token appeared (PKCS#11 slot polling or a soft token created).
    Inserted { label: String, serial: String },
    /// A token went away.
    Removed { label: String, serial: String },
    /// A watched USB device (configured VID:PID) arrived; slots are refreshed.
    UsbArrived { vendor_id: u16, product_id: u16 },
    /// A USB device went away; slots are refreshed.
    UsbRemoved,
}
