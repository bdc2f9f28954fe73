//! Binding a person to their card: comparing a live finger with the card's fingerprint
//! blocks (needs a licensed GA/T 1012 matcher) and a live face with the card photo (needs
//! the vendor WLT decoder and a face comparer). These are vendor components behind traits;
//! the stand-ins here serve tests and the demo and never claim a real comparison.

use async_trait::async_trait;
use firmware_interfaces::sam::{CardFingerprint, DecodedPhoto};
use zeroize::Zeroizing;

/// A live fingerprint image or template as the licensed matcher expects it.
#[derive(Clone)]
pub struct LiveFingerprint(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for LiveFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveFingerprint({} bytes)", self.0.len())
    }
}

/// A live face image (8-bit grey, row-major) — never written to disk.
#[derive(Clone)]
pub struct FaceImage {
    pub width: u32,
    pub height: u32,
    pub grey: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for FaceImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaceImage({}x{})", self.width, self.height)
    }
}

/// A comparison result with the component's own score and threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub is_match: bool,
    pub score: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    #[error("no licensed {0} is configured")]
    Unavailable(&'static str),
    #[error("the comparer failed: {0}")]
    Failed(String),
}

/// GA/T 1012 fingerprint comparison (live finger vs card fingerprint blocks).
#[async_trait]
pub trait CardFingerprintMatcher: Send + Sync {
    async fn compare(
        &self,
        live: &LiveFingerprint,
        card: &[CardFingerprint],
    ) -> Result<Comparison, BindingError>;
}

/// Face comparison (live face vs decoded card photo).
#[async_trait]
pub trait FaceComparer: Send + Sync {
    async fn compare(
        &self,
        live: &FaceImage,
        card_photo: &DecodedPhoto,
    ) -> Result<Comparison, BindingError>;
}

/// The default when no vendor component is installed: always `Unavailable`, so the
/// workflow falls back to another verification method.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMatcher;

#[async_trait]
impl CardFingerprintMatcher for NoMatcher {
    async fn compare(
        &self,
        _: &LiveFingerprint,
        _: &[CardFingerprint],
    ) -> Result<Comparison, BindingError> {
        Err(BindingError::Unavailable("GA/T 1012 fingerprint matcher"))
    }
}

#[async_trait]
impl FaceComparer for NoMatcher {
    async fn compare(&self, _: &FaceImage, _: &DecodedPhoto) -> Result<Comparison, BindingError> {
        Err(BindingError::Unavailable("face comparer"))
    }
}

/// A scripted stand-in for tests and the demo: answers the configured outcome.
#[derive(Debug, Clone, Copy)]
pub struct ScriptedMatcher {
    pub outcome: Comparison,
}

#[async_trait]
impl CardFingerprintMatcher for ScriptedMatcher {
    async fn compare(
        &self,
        _: &LiveFingerprint,
        card: &[CardFingerprint],
    ) -> Result<Comparison, BindingError> {
        if card.is_empty() {
            return Err(BindingError::Failed(
                "the card carries no fingerprints".into(),
            ));
        }
        Ok(self.outcome)
    }
}

#[async_trait]
impl FaceComparer for ScriptedMatcher {
    async fn compare(&self, _: &FaceImage, _: &DecodedPhoto) -> Result<Comparison, BindingError> {
        Ok(self.outcome)
    }
}
