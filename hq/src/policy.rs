//! HQ's issuance policy, as data: for each kiosk service the subject attributes a certificate
//! may carry (`CN`, `serialNumber` = the holder's keyed digest, `O` for enterprise services,
//! `C`), its key usage, extended key usage, validity and certificate policy OID, and the
//! per-kiosk issuance rate limit. The default is `hq/policy/issuance.toml`, embedded;
//! `hq-ingest serve --issuance-policy FILE` replaces it.
//!
//! [`Profile::check_subject`] checks a request's subject against a profile and builds the
//! certificate's subject from it (only allowed attributes, each value checked, string types
//! PrintableString or UTF8String); anything else is refused naming the attribute.

use std::collections::BTreeMap;
use std::time::Duration;

use const_oid::ObjectIdentifier;
use der::asn1::{Any, SetOfVec};
use der::{Decode, Encode, Tag, Tagged};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::pkix::KeyUsages;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};

/// The embedded default policy.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../policy/issuance.toml");

/// id-kp-clientAuth: never in a subscriber's certificate.
pub const EKU_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
/// id-kp-serverAuth: never in a subscriber's certificate.
pub const EKU_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");

/// Longest attribute value accepted (RFC 5280 upper bounds: CN and O 64).
const MAX_VALUE_CHARS: usize = 64;

/// A subject attribute the policy can allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attribute {
    /// commonName (the holder's name).
    CommonName,
    /// serialNumber (first 16 bytes of the holder's keyed digest, hex).
    SerialNumber,
    /// organizationName (enterprise services).
    Organization,
    /// countryName.
    Country,
}

impl Attribute {
    const ALL: [Attribute; 4] = [
        Attribute::CommonName,
        Attribute::SerialNumber,
        Attribute::Organization,
        Attribute::Country,
    ];

    /// Its OID.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Attribute::CommonName => const_oid::db::rfc4519::CN,
            Attribute::SerialNumber => const_oid::db::rfc4519::SERIAL_NUMBER,
            Attribute::Organization => const_oid::db::rfc4519::O,
            Attribute::Country => const_oid::db::rfc4519::C,
        }
    }

    /// Its short name (`CN`, `serialNumber`, `O`, `C`), as in the policy file.
    pub fn name(self) -> &'static str {
        match self {
            Attribute::CommonName => "CN",
            Attribute::SerialNumber => "serialNumber",
            Attribute::Organization => "O",
            Attribute::Country => "C",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    fn from_oid(oid: ObjectIdentifier) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.oid() == oid)
    }
}

/// Short name of an attribute type for error messages (the dotted OID when not a common one).
pub fn attribute_name(oid: ObjectIdentifier) -> String {
    use const_oid::db::rfc4519 as a;
    let known: &[(ObjectIdentifier, &str)] = &[
        (a::CN, "CN"),
        (a::SERIAL_NUMBER, "serialNumber"),
        (a::C, "C"),
        (a::L, "L"),
        (a::ST, "ST"),
        (a::O, "O"),
        (a::OU, "OU"),
        (a::TITLE, "title"),
        (a::SN, "SN"),
        (a::GIVEN_NAME, "GN"),
        (a::UID, "UID"),
        (a::DC, "DC"),
        (
            const_oid::db::rfc2985::PKCS_9_AT_EMAIL_ADDRESS,
            "emailAddress",
        ),
    ];
    known
        .iter()
        .find(|(o, _)| *o == oid)
        .map_or_else(|| oid.to_string(), |(_, n)| (*n).to_owned())
}

/// Why the policy file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not TOML of the expected shape.
    #[error("issuance policy: {0}")]
    Syntax(String),
    /// A value the policy may not hold.
    #[error("issuance policy: services.{service}.{key}: {reason}")]
    Invalid {
        /// Which service.
        service: String,
        /// Which key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// Reading the file failed.
    #[error("issuance policy {path}: {reason}")]
    Read {
        /// Path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Why a request's subject is refused (each names the attribute concerned).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// An attribute the service's profile does not allow.
    #[error("subject attribute {attribute} is not allowed by the issuance policy of {service}")]
    NotAllowed {
        /// Attribute short name or dotted OID.
        attribute: String,
        /// Service.
        service: String,
    },
    /// An allowed attribute with a value the policy refuses, twice, or missing.
    #[error("subject attribute {attribute}: {reason}")]
    Invalid {
        /// Attribute short name.
        attribute: String,
        /// Why.
        reason: String,
    },
}

impl SubjectError {
    /// The attribute concerned.
    pub fn attribute(&self) -> &str {
        match self {
            SubjectError::NotAllowed { attribute, .. }
            | SubjectError::Invalid { attribute, .. } => attribute,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: String,
    rate_limit: RateLimitFile,
    services: BTreeMap<String, ProfileFile>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitFile {
    per_kiosk: u32,
    window_seconds: u64,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    required: Vec<String>,
    #[serde(default)]
    optional: Vec<String>,
    country: Option<String>,
    key_usage: Vec<String>,
    extended_key_usage: Vec<String>,
    validity_days: u32,
    policy_oid: String,
}

/// The per-kiosk issuance limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Certificates per kiosk within `window`.
    pub per_kiosk: u32,
    /// The sliding window.
    pub window: Duration,
}

/// What a certificate of one service carries.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The service.
    pub service: String,
    required: Vec<Attribute>,
    optional: Vec<Attribute>,
    country: Option<String>,
    /// Key usage bits.
    pub key_usage: Vec<KeyUsages>,
    /// Extended key usages (never clientAuth or serverAuth).
    pub extended_key_usage: Vec<ObjectIdentifier>,
    /// Validity.
    pub validity: Duration,
    /// Certificate policy OID.
    pub policy_oid: ObjectIdentifier,
}

/// The whole policy.
#[derive(Clone, Debug)]
pub struct IssuancePolicy {
    /// Version label of the policy file (recorded in the audit).
    pub version: String,
    /// Per-kiosk issuance limit.
    pub rate_limit: RateLimit,
    profiles: BTreeMap<String, Profile>,
}

fn key_usage(name: &str) -> Option<KeyUsages> {
    Some(match name {
        "digitalSignature" => KeyUsages::DigitalSignature,
        "nonRepudiation" | "contentCommitment" => KeyUsages::NonRepudiation,
        "keyEncipherment" => KeyUsages::KeyEncipherment,
        "dataEncipherment" => KeyUsages::DataEncipherment,
        "keyAgreement" => KeyUsages::KeyAgreement,
        _ => return None,
    })
}

impl IssuancePolicy {
    /// The embedded default (`hq/policy/issuance.toml`).
    pub fn embedded() -> Self {
        Self::from_toml(DEFAULT_POLICY_TOML).expect("the embedded issuance policy is valid")
    }

    /// Read a policy file.
    pub fn load(path: &std::path::Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text)
    }

    /// Parse and check a policy.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        if file.rate_limit.per_kiosk == 0 || file.rate_limit.window_seconds == 0 {
            return Err(PolicyError::Syntax(
                "rate_limit.per_kiosk and rate_limit.window_seconds must be positive".into(),
            ));
        }
        let mut profiles = BTreeMap::new();
        for (service, p) in file.services {
            let invalid = |key: &'static str, reason: String| PolicyError::Invalid {
                service: service.clone(),
                key,
                reason,
            };
            let attributes = |key: &'static str, names: &[String]| {
                names
                    .iter()
                    .map(|n| {
                        Attribute::from_name(n).ok_or_else(|| {
                            invalid(key, format!("{n} (allowed: CN, serialNumber, O, C)"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let required = attributes("required", &p.required)?;
            let optional = attributes("optional", &p.optional)?;
            for a in [Attribute::CommonName, Attribute::SerialNumber] {
                if !required.contains(&a) {
                    return Err(invalid("required", format!("must include {}", a.name())));
                }
            }
            let country_allowed =
                required.contains(&Attribute::Country) || optional.contains(&Attribute::Country);
            if country_allowed && p.country.is_none() {
                return Err(invalid(
                    "country",
                    "C is allowed but no country is set".into(),
                ));
            }
            let key_usage = p
                .key_usage
                .iter()
                .map(|n| {
                    key_usage(n).ok_or_else(|| {
                        invalid("key_usage", format!("{n} is not a subscriber key usage"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if key_usage.is_empty() {
                return Err(invalid("key_usage", "empty".into()));
            }
            let extended_key_usage = p
                .extended_key_usage
                .iter()
                .map(|o| {
                    ObjectIdentifier::new(o)
                        .map_err(|e| invalid("extended_key_usage", format!("{o}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if extended_key_usage.is_empty() {
                return Err(invalid("extended_key_usage", "empty".into()));
            }
            if let Some(bad) = extended_key_usage
                .iter()
                .find(|o| **o == EKU_CLIENT_AUTH || **o == EKU_SERVER_AUTH)
            {
                return Err(invalid(
                    "extended_key_usage",
                    format!("{bad} (clientAuth/serverAuth) is never in a subscriber's certificate"),
                ));
            }
            if !(1..=3650).contains(&p.validity_days) {
                return Err(invalid("validity_days", "1 to 3650".into()));
            }
            let policy_oid = ObjectIdentifier::new(&p.policy_oid)
                .map_err(|e| invalid("policy_oid", e.to_string()))?;
            profiles.insert(
                service.clone(),
                Profile {
                    service: service.clone(),
                    required,
                    optional,
                    country: p.country,
                    key_usage,
                    extended_key_usage,
                    validity: Duration::from_secs(u64::from(p.validity_days) * 86_400),
                    policy_oid,
                },
            );
        }
        if profiles.is_empty() {
            return Err(PolicyError::Syntax("no service".into()));
        }
        Ok(Self {
            version: file.version,
            rate_limit: RateLimit {
                per_kiosk: file.rate_limit.per_kiosk,
                window: Duration::from_secs(file.rate_limit.window_seconds),
            },
            profiles,
        })
    }

    /// The profile of `service`, if the policy has one.
    pub fn profile(&self, service: &str) -> Option<&Profile> {
        self.profiles.get(service)
    }

    /// Services the policy issues for.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }

    /// Replace the rate limit (tests, operators' overrides).
    pub fn with_rate_limit(mut self, rate_limit: RateLimit) -> Self {
        self.rate_limit = rate_limit;
        self
    }
}

fn value_text(attribute: Attribute, value: &Any) -> Result<String, SubjectError> {
    let invalid = |reason: &str| SubjectError::Invalid {
        attribute: attribute.name().into(),
        reason: reason.into(),
    };
    let printable_only = matches!(attribute, Attribute::SerialNumber | Attribute::Country);
    let text = match value.tag() {
        Tag::PrintableString => der::asn1::PrintableStringRef::try_from(value)
            .map(|s| s.as_str().to_owned())
            .map_err(|_| invalid("not a valid PrintableString"))?,
        Tag::Utf8String if !printable_only => der::asn1::Utf8StringRef::try_from(value)
            .map(|s| s.as_str().to_owned())
            .map_err(|_| invalid("not a valid UTF8String"))?,
        _ => {
            return Err(invalid(if printable_only {
                "must be a PrintableString"
            } else {
                "must be a UTF8String or PrintableString"
            }));
        }
    };
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_VALUE_CHARS {
        return Err(invalid("must be 1 to 64 characters"));
    }
    if text.chars().any(char::is_control) || text.trim() != text {
        return Err(invalid("control characters or surrounding spaces"));
    }
    Ok(text)
}

impl Profile {
    /// Check `subject` against this profile for the holder whose keyed digest is `holder`, and
    /// build the certificate's subject: the allowed attributes in the request's order, each
    /// re-encoded from its checked value.
    pub fn check_subject(&self, subject: &Name, holder: &[u8; 32]) -> Result<Name, SubjectError> {
        let mut seen: Vec<Attribute> = Vec::new();
        let mut out = RdnSequence::default();
        let build = |e: der::Error| SubjectError::Invalid {
            attribute: "subject".into(),
            reason: e.to_string(),
        };
        for rdn in subject.iter_rdn() {
            if rdn.len() != 1 {
                let names: Vec<String> = rdn.iter().map(|a| attribute_name(a.oid)).collect();
                return Err(SubjectError::Invalid {
                    attribute: names.join("+"),
                    reason: "multi-valued RDNs are not allowed".into(),
                });
            }
            for atv in rdn.iter() {
                let attribute = Attribute::from_oid(atv.oid)
                    .filter(|a| self.required.contains(a) || self.optional.contains(a))
                    .ok_or_else(|| SubjectError::NotAllowed {
                        attribute: attribute_name(atv.oid),
                        service: self.service.clone(),
                    })?;
                if seen.contains(&attribute) {
                    return Err(SubjectError::Invalid {
                        attribute: attribute.name().into(),
                        reason: "appears more than once".into(),
                    });
                }
                seen.push(attribute);
                let text = value_text(attribute, &atv.value)?;
                match attribute {
                    Attribute::SerialNumber => {
                        let expected = hex::encode(&holder[..16]);
                        if !text.eq_ignore_ascii_case(&expected) {
                            return Err(SubjectError::Invalid {
                                attribute: attribute.name().into(),
                                reason: "is not the keyed digest of the holder the kiosk names"
                                    .into(),
                            });
                        }
                    }
                    Attribute::Country => {
                        if Some(text.as_str()) != self.country.as_deref() {
                            return Err(SubjectError::Invalid {
                                attribute: attribute.name().into(),
                                reason: format!(
                                    "must be {}",
                                    self.country.as_deref().unwrap_or("absent")
                                ),
                            });
                        }
                    }
                    Attribute::CommonName | Attribute::Organization => {}
                }
                let tag = atv.value.tag();
                let value = Any::new(tag, text.as_bytes()).map_err(build)?;
                let mut set = SetOfVec::new();
                set.insert(AttributeTypeAndValue {
                    oid: attribute.oid(),
                    value,
                })
                .map_err(build)?;
                out.push(RelativeDistinguishedName::from(set));
            }
        }
        if let Some(missing) = self.required.iter().find(|a| !seen.contains(a)) {
            return Err(SubjectError::Invalid {
                attribute: missing.name().into(),
                reason: format!("is required by the issuance policy of {}", self.service),
            });
        }
        Name::from_der(&out.to_der().map_err(build)?).map_err(build)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    const HOLDER: [u8; 32] = [0xab; 32];

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    #[test]
    fn the_embedded_policy_loads_and_never_grants_client_auth() {
        let policy = IssuancePolicy::embedded();
        assert!(policy.services().count() >= 3);
        for service in policy.services() {
            let p = policy.profile(service).unwrap();
            assert!(!p.extended_key_usage.contains(&EKU_CLIENT_AUTH));
            assert!(!p.extended_key_usage.is_empty());
        }
        let bad = DEFAULT_POLICY_TOML.replace("1.3.6.1.5.5.7.3.36", "1.3.6.1.5.5.7.3.2");
        assert!(matches!(
            IssuancePolicy::from_toml(&bad),
            Err(PolicyError::Invalid {
                key: "extended_key_usage",
                ..
            })
        ));
        let bad = DEFAULT_POLICY_TOML.replace("\"nonRepudiation\"", "\"keyCertSign\"");
        assert!(IssuancePolicy::from_toml(&bad).is_err());
    }

    #[test]
    fn subjects_outside_the_profile_are_refused_naming_the_attribute() {
        let policy = IssuancePolicy::embedded();
        let personal = policy.profile("cert_application").unwrap();
        let serial = hex::encode(&HOLDER[..16]);
        let good = name(&format!("CN=Test Holder,serialNumber={serial},C=CN"));
        let built = personal.check_subject(&good, &HOLDER).unwrap();
        assert_eq!(built.to_der().unwrap(), good.to_der().unwrap());

        let with_ou = name(&format!(
            "CN=Test Holder,OU=Admins,serialNumber={serial},C=CN"
        ));
        let e = personal.check_subject(&with_ou, &HOLDER).unwrap_err();
        assert_eq!(e.attribute(), "OU");
        let with_o = name(&format!("CN=Test Holder,serialNumber={serial},O=Corp,C=CN"));
        assert_eq!(
            personal
                .check_subject(&with_o, &HOLDER)
                .unwrap_err()
                .attribute(),
            "O"
        );
        let enterprise = policy.profile("enterprise_cert_application").unwrap();
        enterprise.check_subject(&with_o, &HOLDER).unwrap();
        assert_eq!(
            enterprise
                .check_subject(&good, &HOLDER)
                .unwrap_err()
                .attribute(),
            "O"
        );

        let other_holder =
            name("CN=Test Holder,serialNumber=00112233445566778899aabbccddeeff,C=CN");
        assert_eq!(
            personal
                .check_subject(&other_holder, &HOLDER)
                .unwrap_err()
                .attribute(),
            "serialNumber"
        );
        let wrong_country = name(&format!("CN=Test Holder,serialNumber={serial},C=US"));
        assert_eq!(
            personal
                .check_subject(&wrong_country, &HOLDER)
                .unwrap_err()
                .attribute(),
            "C"
        );
        let twice = name(&format!("CN=A,CN=B,serialNumber={serial},C=CN"));
        assert_eq!(
            personal
                .check_subject(&twice, &HOLDER)
                .unwrap_err()
                .attribute(),
            "CN"
        );
        let missing = name(&format!("serialNumber={serial},C=CN"));
        assert_eq!(
            personal
                .check_subject(&missing, &HOLDER)
                .unwrap_err()
                .attribute(),
            "CN"
        );
    }
}
