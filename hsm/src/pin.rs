//! PINs: a zeroizing newtype that never prints its value.

use std::fmt;

use zeroize::Zeroizing;

/// A user or SO PIN. The bytes are wiped when dropped; `Debug`/`Display` print a mask.
/// Providers use a `Pin` for exactly one login attempt and never retry it by themselves.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Wraps a PIN, taking ownership so the caller's copy is the one that gets wiped.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The PIN itself, for the one call that hands it to the token.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(****)")
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_is_masked_in_debug_and_display() {
        let pin = Pin::new("246810");
        assert!(!format!("{pin:?}").contains("246810"));
        assert!(!format!("{pin}").contains("246810"));
        assert_eq!(pin.expose(), "246810");
    }
}
