//! Personal values read from cards: newtypes that never print in clear.
//!
//! `Debug` prints only the type name and `<redacted>`; `Display` prints the safe-default
//! masked form ([`crate::mask`]). The clear value is reachable only through `expose()`,
//! so every use of it is greppable. Values are wiped from memory when dropped.

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::gb11643::{self, IdNumberError};
use crate::mask::{self, MaskRule};

macro_rules! personal_text {
    ($(#[$meta:meta])* $name:ident, $rule:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
        pub struct $name(String);

        impl $name {
            /// The clear value. Callers must not log or persist it unprotected.
            pub fn expose(&self) -> &str {
                &self.0
            }

            /// The value masked by the safe default rule.
            pub fn masked(&self) -> String {
                mask::apply(Self::MASK, &self.0)
            }

            /// The default display mask of this kind of value.
            pub const MASK: MaskRule = $rule;

            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "(<redacted>)"))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.masked())
            }
        }
    };
}

personal_text!(
    /// A person's name (Chinese or Latin script).
    PersonName,
    mask::NAME
);
personal_text!(
    /// A postal address.
    Address,
    mask::ADDRESS
);
personal_text!(
    /// A GB 11643 citizen identity number (18 characters, check digit verified).
    IdNumber,
    mask::ID_NUMBER
);
personal_text!(
    /// Another document number (HK/Macao/Taiwan pass, 2017 foreign permanent residence card).
    DocumentNumber,
    mask::DOCUMENT_NUMBER
);

impl PersonName {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
}

impl Address {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
}

impl DocumentNumber {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
}

impl IdNumber {
    /// Accepts only a valid GB 11643 number (length, digits, check digit).
    pub fn parse(value: impl Into<String>) -> Result<Self, IdNumberError> {
        let value = Self(value.into());
        gb11643::validate(&value.0)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let name = PersonName::new("测试人名");
        let id = IdNumber::parse("11010519491231002X").expect("valid");
        let addr = Address::new("测试省测试市测试路一号");
        for shown in [
            format!("{name:?} {id:?} {addr:?}"),
            format!("{name} {id} {addr}"),
            format!("{:#?}", (&name, &id, &addr)),
        ] {
            assert!(!shown.contains("测试人名"), "{shown}");
            assert!(!shown.contains("11010519491231002X"), "{shown}");
            assert!(!shown.contains("测试路一号"), "{shown}");
        }
        assert_eq!(format!("{id}"), "1****************X");
        assert_eq!(id.expose(), "11010519491231002X");
    }

    #[test]
    fn id_number_rejects_bad_check_digit() {
        assert_eq!(
            IdNumber::parse("110105194912310021"),
            Err(IdNumberError::CheckDigit)
        );
    }
}
