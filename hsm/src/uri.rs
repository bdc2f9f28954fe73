//! RFC 7512 PKCS#11 URIs: parsing (with percent-decoding), printing, and matching tokens and
//! objects against them.

use std::fmt;

use crate::types::{KeyInfo, TokenInfo};
use crate::{Result, TokenError};

/// Object classes an URI can name (`type=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    Private,
    Public,
    Cert,
    SecretKey,
    Data,
}

impl ObjectType {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "private" => ObjectType::Private,
            "public" => ObjectType::Public,
            "cert" => ObjectType::Cert,
            "secret-key" => ObjectType::SecretKey,
            "data" => ObjectType::Data,
            other => return Err(TokenError::InvalidUri(format!("unknown type {other:?}"))),
        })
    }
    fn as_str(self) -> &'static str {
        match self {
            ObjectType::Private => "private",
            ObjectType::Public => "public",
            ObjectType::Cert => "cert",
            ObjectType::SecretKey => "secret-key",
            ObjectType::Data => "data",
        }
    }
}

/// A parsed `pkcs11:` URI. Absent attributes match anything. `pin-value` is refused on
/// purpose: PINs never travel in URIs or config strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub manufacturer: Option<String>,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub slot_id: Option<u64>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub object_type: Option<ObjectType>,
    pub module_path: Option<String>,
    pub max_sessions: Option<usize>,
}

const MAX_URI_LEN: usize = 4096;

impl Pkcs11Uri {
    /// URI naming a key by label on a token by label.
    pub fn for_key(token: &str, key: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            object: Some(key.to_owned()),
            ..Self::default()
        }
    }

    pub fn parse(input: &str) -> Result<Self> {
        if input.len() > MAX_URI_LEN {
            return Err(TokenError::InvalidUri("longer than 4096 bytes".into()));
        }
        let rest = input
            .strip_prefix("pkcs11:")
            .ok_or_else(|| TokenError::InvalidUri("must start with \"pkcs11:\"".into()))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut uri = Pkcs11Uri::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| TokenError::InvalidUri(format!("attribute {attr:?} has no '='")))?;
            let bytes = percent_decode(value)?;
            let text = || {
                String::from_utf8(bytes.clone())
                    .map_err(|_| TokenError::InvalidUri(format!("{name} is not UTF-8")))
            };
            match name {
                "token" => set_once(&mut uri.token, text()?, name)?,
                "manufacturer" => set_once(&mut uri.manufacturer, text()?, name)?,
                "serial" => set_once(&mut uri.serial, text()?, name)?,
                "model" => set_once(&mut uri.model, text()?, name)?,
                "object" => set_once(&mut uri.object, text()?, name)?,
                "id" => set_once(&mut uri.id, bytes.clone(), name)?,
                "type" => set_once(&mut uri.object_type, ObjectType::parse(&text()?)?, name)?,
                "slot-id" => {
                    let id = text()?
                        .parse::<u64>()
                        .map_err(|_| TokenError::InvalidUri("slot-id is not a number".into()))?;
                    set_once(&mut uri.slot_id, id, name)?
                }
                // Library and slot description attributes are accepted and ignored.
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-manufacturer"
                | "slot-description" => {}
                other if other.starts_with("x-") => {}
                other => {
                    return Err(TokenError::InvalidUri(format!(
                        "unknown attribute {other:?}"
                    )));
                }
            }
        }
        for attr in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|a| !a.is_empty())
        {
            let (name, value) = attr.split_once('=').unwrap_or((attr, ""));
            let value = String::from_utf8(percent_decode(value)?)
                .map_err(|_| TokenError::InvalidUri(format!("{name} is not UTF-8")))?;
            match name {
                "module-path" => uri.module_path = Some(value),
                "max-sessions" => {
                    uri.max_sessions = Some(value.parse().map_err(|_| {
                        TokenError::InvalidUri("max-sessions is not a number".into())
                    })?)
                }
                "pin-value" => {
                    return Err(TokenError::InvalidUri(
                        "pin-value is refused: PINs come from the environment or a prompt".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(uri)
    }

    /// Whether a token matches the token attributes of this URI.
    pub fn matches_token(&self, info: &TokenInfo) -> bool {
        fn eq(want: &Option<String>, have: &str) -> bool {
            want.as_deref().is_none_or(|w| w == have)
        }
        eq(&self.token, &info.label)
            && eq(&self.serial, &info.serial)
            && eq(&self.manufacturer, &info.manufacturer)
            && eq(&self.model, &info.model)
            && self.slot_id.is_none_or(|s| info.slot == Some(s))
    }

    /// Whether a key pair matches the object attributes of this URI.
    pub fn matches_key(&self, key: &KeyInfo) -> bool {
        self.object.as_deref().is_none_or(|o| o == key.label)
            && self.id.as_deref().is_none_or(|id| id == key.id.as_slice())
            && self.object_type.is_none_or(|t| {
                matches!(
                    t,
                    ObjectType::Private | ObjectType::Public | ObjectType::Cert
                )
            })
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<()> {
    if slot.is_some() {
        return Err(TokenError::InvalidUri(format!("{name} given twice")));
    }
    *slot = Some(value);
    Ok(())
}

fn percent_decode(s: &str) -> Result<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or_else(|| TokenError::InvalidUri("truncated %-escape".into()))?;
            let hex = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| TokenError::InvalidUri("bad %-escape".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

fn percent_encode(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let mut push = |name: &str, value: &[u8]| {
            let mut s = format!("{name}=");
            percent_encode(value, &mut s);
            parts.push(s);
        };
        if let Some(v) = &self.token {
            push("token", v.as_bytes());
        }
        if let Some(v) = &self.manufacturer {
            push("manufacturer", v.as_bytes());
        }
        if let Some(v) = &self.serial {
            push("serial", v.as_bytes());
        }
        if let Some(v) = &self.model {
            push("model", v.as_bytes());
        }
        if let Some(v) = self.slot_id {
            push("slot-id", v.to_string().as_bytes());
        }
        if let Some(v) = &self.object {
            push("object", v.as_bytes());
        }
        if let Some(v) = &self.id {
            push("id", v);
        }
        if let Some(v) = self.object_type {
            push("type", v.as_str().as_bytes());
        }
        write!(f, "pkcs11:{}", parts.join(";"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{KeyAlgorithm, PinState};

    fn token(label: &str, serial: &str) -> TokenInfo {
        TokenInfo {
            label: label.into(),
            serial: serial.into(),
            manufacturer: "SoftHSM project".into(),
            model: "SoftHSM v2".into(),
            pin_state: PinState::Ok,
            so_pin_state: PinState::Ok,
            slot: Some(7),
            initialized: true,
            login_required: true,
            protected_authentication_path: false,
            user_retries_left: None,
        }
    }

    #[test]
    fn parses_rfc7512_examples_with_escapes() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;\
             object=my-key;type=private;id=%01%02%ff?module-path=/usr/lib/p11.so&max-sessions=4",
        )
        .expect("valid uri");
        assert_eq!(uri.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(uri.manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(uri.object.as_deref(), Some("my-key"));
        assert_eq!(uri.id.as_deref(), Some(&[1u8, 2, 0xff][..]));
        assert_eq!(uri.object_type, Some(ObjectType::Private));
        assert_eq!(uri.module_path.as_deref(), Some("/usr/lib/p11.so"));
        assert_eq!(uri.max_sessions, Some(4));
        let again = Pkcs11Uri::parse(&uri.to_string()).expect("round trip");
        assert_eq!(again.token, uri.token);
        assert_eq!(again.id, uri.id);
    }

    #[test]
    fn rejects_bad_uris_and_pin_values() {
        for bad in [
            "pkcs12:token=a",
            "pkcs11:token=a;token=b",
            "pkcs11:token=%4",
            "pkcs11:token=%zz",
            "pkcs11:bogus=1",
            "pkcs11:slot-id=x",
            "pkcs11:token=a?pin-value=1234",
        ] {
            assert!(Pkcs11Uri::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn matches_tokens_and_keys() {
        let uri = Pkcs11Uri::parse("pkcs11:token=kiosk;serial=abc;object=device;id=%2a").unwrap();
        assert!(uri.matches_token(&token("kiosk", "abc")));
        assert!(!uri.matches_token(&token("kiosk", "abd")));
        assert!(!uri.matches_token(&token("other", "abc")));
        let key = KeyInfo {
            label: "device".into(),
            id: vec![0x2a],
            algorithm: KeyAlgorithm::P256,
            public_key: vec![],
        };
        assert!(uri.matches_key(&key));
        assert!(!uri.matches_key(&KeyInfo {
            id: vec![1],
            ..key.clone()
        }));
        assert!(Pkcs11Uri::parse("pkcs11:").unwrap().matches_key(&key));
    }
}
