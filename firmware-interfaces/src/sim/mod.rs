//! Device-side simulators (pure state machines: bytes in, bytes out) and synthetic
//! identities. Drivers run them behind pseudo-terminals for tests and the embedded default.

pub mod fingerprint;
pub mod fixtures;
pub mod idcard;

pub use fingerprint::{Ef01Simulator, FingerQuality, SimFinger};
pub use idcard::{SamFaults, SamSimulator, SimCard};

/// A tiny deterministic generator for synthetic bytes (not for anything secret).
pub(crate) fn synthetic_bytes(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}
