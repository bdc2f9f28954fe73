//! The privacy engine: personal values that cannot be printed by accident,
//! consent, the minors rule, the minimizer (the only way to the outbox),
//! rights-request deadlines. The rules themselves are data in the catalog
//! (`kiosk_config::Catalog`).

pub mod consent;
pub mod deadline;
pub mod minimize;
pub mod minors;

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A personal value with the catalog item it belongs to. `Debug` and `Display`
/// never show the value; the clear text is reachable only through
/// [`Personal::expose`], and masked through [`Personal::masked`]. Zeroized on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Personal {
    #[zeroize(skip)]
    item: String,
    value: String,
}

impl Personal {
    pub fn new(item: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            item: item.into(),
            value: value.into(),
        }
    }

    /// The catalog item name.
    pub fn item(&self) -> &str {
        &self.item
    }

    /// The clear value. Every use is a place to review.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The value masked by the catalog's display rule for its item.
    pub fn masked(&self, catalog: &kiosk_config::Catalog) -> String {
        catalog.mask(&self.item, &self.value)
    }
}

impl fmt::Debug for Personal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Personal({}: <redacted>)", self.item)
    }
}

impl fmt::Display for Personal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} redacted>", self.item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_values_never_print() {
        let p = Personal::new("id_number", "11010519491231002X");
        assert!(!format!("{p:?}").contains("1101"));
        assert!(!format!("{p}").contains("1101"));
        assert!(!format!("{:?}", vec![p.clone()]).contains("002X"));
        let catalog = kiosk_config::Catalog::embedded();
        assert_eq!(p.masked(&catalog), "1****************X");
    }
}
