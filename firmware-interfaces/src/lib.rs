//! Pure codecs and simulators for the kiosk's serial peripherals.
//!
//! Nothing here does I/O, spawns, sleeps or logs: every function maps bytes to typed
//! values (or back), and the simulators are state machines fed with bytes
//! (`on_bytes(&mut self, &[u8]) -> Vec<u8>`).
//!
//! - [`sam`]: the resident-ID-card SAM module protocol (`AA AA AA 96 69` frames), the
//!   256-byte text block of the four card layouts, photo and card fingerprint blocks.
//! - [`ef01`]: the `EF 01` packet protocol of R30x/AS608/ZFM fingerprint modules.
//! - [`personal`]: newtypes for personal values whose `Debug`/`Display` never show them in clear.
//! - [`mask`]: the display masking rules (safe defaults, replaceable by the privacy layer).
//! - [`gb11643`]: the citizen identity number check digit.
//! - [`sim`]: device-side simulators and synthetic identities.

pub mod cursor;
pub mod ef01;
pub mod framing;
pub mod gb11643;
pub mod mask;
pub mod personal;
pub mod sam;
pub mod sim;
