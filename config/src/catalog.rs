//! The privacy catalog: every personal data item declared once (sensitivity,
//! display mask, transfer rule per destination, retention), every service and
//! verification method with the items it may collect, rights-request deadlines,
//! HQ retention and the minors rule.
//!
//! The catalog is data (`catalog/default.toml` is shipped in the binary); this
//! module parses and validates it and answers the questions code must ask:
//! [`Catalog::permit`] before collecting, [`Catalog::mask`] before showing,
//! [`Catalog::transfer`] before anything leaves the kiosk.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Problem};

/// The catalog shipped in the binary.
pub const DEFAULT_CATALOG: &str = include_str!("../catalog/default.toml");

/// How sensitive an item is (PIPL art. 28).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    General,
    Sensitive,
    Biometric,
}

impl Sensitivity {
    /// Sensitive and biometric items need their own, separate consent.
    pub fn needs_separate_consent(self) -> bool {
        !matches!(self, Sensitivity::General)
    }
}

/// How a value may leave the kiosk towards one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transfer {
    /// Encrypted to the destination's key.
    Encrypt,
    /// Replaced by a keyed digest (HMAC-SM3 by default) for matching.
    KeyedDigest,
    /// Replaced by its display mask.
    Mask,
    /// Never sent.
    Drop,
    /// Sent as is (only over TLS, only to the declared recipient).
    Plain,
}

impl Transfer {
    /// Whether a value sent as `self` can reveal more of an item than that item's own rule
    /// `inner` allows. Dropping reveals nothing, a keyed digest reveals nothing that can be
    /// read back, `plain` allows anything; any other pair (encrypting what is only masked,
    /// masking what is encrypted) counts as revealing more.
    pub fn exposes_more_than(self, inner: Transfer) -> bool {
        let within = self == Transfer::Drop
            || inner == Transfer::Plain
            || self == inner
            || (self == Transfer::KeyedDigest && inner != Transfer::Drop);
        !within
    }
}

/// Where data may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    /// Headquarters (the synced record).
    Hq,
    /// A third-party verification service.
    Verifier,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Destination::Hq => "hq",
            Destination::Verifier => "verifier",
        })
    }
}

/// How long an item lives on the kiosk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalRetention {
    /// Kept (encrypted) until HQ acknowledged the record, then purged.
    UntilHqAck,
    /// Kept in memory for the applicant session only; never written to disk.
    Session,
    /// Never stored at all (PINs).
    NeverStored,
}

/// A display mask: keep the first and last characters, star the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskRule {
    pub keep_first: usize,
    pub keep_last: usize,
    /// Show nothing at all (images, templates, PINs).
    pub hidden: bool,
}

impl Default for MaskRule {
    fn default() -> Self {
        Self {
            keep_first: 1,
            keep_last: 1,
            hidden: false,
        }
    }
}

impl MaskRule {
    /// Mask `value` by characters (not bytes: names and addresses are Chinese).
    /// At least one character is always starred unless the rule keeps all.
    pub fn apply(&self, value: &str) -> String {
        if self.hidden {
            return "******".into();
        }
        let chars: Vec<char> = value.chars().collect();
        let n = chars.len();
        if self.keep_first >= n && self.keep_last == 0 {
            return value.to_string();
        }
        // Never reveal the whole value through overlapping keeps.
        let (first, last) = if self.keep_first + self.keep_last >= n {
            let first = self.keep_first.min(n.saturating_sub(1));
            (first, 0)
        } else {
            (self.keep_first, self.keep_last)
        };
        let mut out = String::with_capacity(value.len());
        out.extend(&chars[..first]);
        out.extend(std::iter::repeat_n('*', n - first - last));
        out.extend(&chars[n - last..]);
        out
    }
}

/// One declared personal data item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemDecl {
    pub label: String,
    pub sensitivity: Sensitivity,
    pub display: MaskRule,
    /// Transfer rule per destination; a destination not listed is `drop`.
    #[serde(default)]
    pub transfer: BTreeMap<Destination, Transfer>,
    /// Destinations that need their own separate consent to the transfer.
    #[serde(default)]
    pub transfer_consent: Vec<Destination>,
    /// Other items whose values this item's value carries inside it (a certificate carries
    /// the holder's name in its subject). Such an item may not leave in a weaker form than
    /// any item it contains: the catalog refuses it.
    #[serde(default)]
    pub contains: Vec<String>,
    pub retention: LocalRetention,
}

/// A service offered at the kiosk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDecl {
    pub label: String,
    pub required: Vec<String>,
    #[serde(default)]
    pub optional: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
}

/// A verification method and exactly what its external service receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodDecl {
    pub label: String,
    pub recipient: String,
    pub fields: Vec<String>,
    pub biometric: bool,
}

/// Deadlines and grounds for rights requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RightsDecl {
    pub deadline_days: u32,
    pub working_days: bool,
    pub refusal_grounds: Vec<String>,
}

/// Public holidays and adjusted working days, `YYYY-MM-DD`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HolidaysDecl {
    pub days: Vec<String>,
    pub extra_workdays: Vec<String>,
}

/// HQ-side retention (executed by hq-ingest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HqRetentionDecl {
    pub after_revocation_years: u32,
    pub after_expiry_government_years: u32,
    pub anonymize_after_cancellation_months: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinorsDecl {
    pub guardian_required_under: u32,
}

/// The whole catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub version: String,
    pub policy_version: String,
    pub items: BTreeMap<String, ItemDecl>,
    pub services: BTreeMap<String, ServiceDecl>,
    pub methods: BTreeMap<String, MethodDecl>,
    pub rights: RightsDecl,
    #[serde(default)]
    pub holidays: HolidaysDecl,
    pub hq_retention: HqRetentionDecl,
    pub minors: MinorsDecl,
}

/// Why the catalog refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("no such service {0:?} in the privacy catalog")]
    UnknownService(String),
    #[error("no such verification method {0:?} in the privacy catalog")]
    UnknownMethod(String),
    #[error("verification method {method:?} is not offered for service {service:?}")]
    MethodNotOffered { service: String, method: String },
    #[error("item {0:?} is not declared in the privacy catalog")]
    UnknownItem(String),
    #[error(
        "item {item:?} is not declared for purpose {purpose}: the catalog does not allow collecting it"
    )]
    NotDeclared { item: String, purpose: String },
}

/// What may be collected, for which purpose: the answer to [`Catalog::permit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit<'a> {
    pub item: &'a str,
    pub decl: &'a ItemDecl,
    /// Required by the service or the method (not merely optional).
    pub required: bool,
    /// Sensitive or biometric: needs its own consent.
    pub separate_consent: bool,
}

impl Catalog {
    /// Parse and validate catalog text.
    pub fn parse(text: &str, file: Option<&Path>) -> Result<Self, ConfigError> {
        let catalog: Catalog = crate::parse_as(text, file)?;
        let problems = catalog.check(file);
        if problems.is_empty() {
            Ok(catalog)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The catalog shipped in the binary.
    pub fn embedded() -> Self {
        Self::parse(DEFAULT_CATALOG, None).expect("the embedded catalog is valid (tested)")
    }

    /// Load the configured catalog file, or the embedded one.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Ok(Self::embedded()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Self::parse(&text, Some(p))
            }
        }
    }

    fn check(&self, file: Option<&Path>) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut push = |key: String, message: String, fix: &str| {
            problems.push(Problem {
                file: file.map(Path::to_path_buf),
                line: None,
                key,
                message,
                fix: fix.to_string(),
            })
        };
        for (name, svc) in &self.services {
            for item in svc.required.iter().chain(&svc.optional) {
                if !self.items.contains_key(item) {
                    push(
                        format!("services.{name}"),
                        format!("names item {item:?} that is not declared"),
                        "declare it under [items] or remove it",
                    );
                }
            }
            for m in &svc.methods {
                if !self.methods.contains_key(m) {
                    push(
                        format!("services.{name}.methods"),
                        format!("names method {m:?} that is not declared"),
                        "declare it under [methods] or remove it",
                    );
                }
            }
            let offers_biometric = svc
                .methods
                .iter()
                .any(|m| self.methods.get(m).is_some_and(|d| d.biometric));
            let offers_other = svc
                .methods
                .iter()
                .any(|m| self.methods.get(m).is_some_and(|d| !d.biometric));
            if offers_biometric && !offers_other {
                push(
                    format!("services.{name}.methods"),
                    "offers face recognition as the only verification method".into(),
                    "add a non-biometric method: face recognition may never be the only way (2025 face-recognition rules)",
                );
            }
        }
        for (name, m) in &self.methods {
            for f in &m.fields {
                match self.items.get(f) {
                    None => push(
                        format!("methods.{name}.fields"),
                        format!("names item {f:?} that is not declared"),
                        "declare it under [items]",
                    ),
                    Some(decl)
                        if decl.transfer.get(&Destination::Verifier).copied()
                            != Some(Transfer::Plain) =>
                    {
                        push(
                            format!("items.{f}.transfer"),
                            format!(
                                "is sent to verifier by method {name:?} but has no `verifier = \"plain\"` rule"
                            ),
                            "declare the transfer or remove the field from the method",
                        )
                    }
                    Some(_) => {}
                }
            }
        }
        for (name, item) in &self.items {
            for (dest, rule) in &item.transfer {
                for inner in &item.contains {
                    let Some(inner_decl) = self.items.get(inner) else {
                        push(
                            format!("items.{name}.contains"),
                            format!("names item {inner:?} that is not declared"),
                            "declare it under [items] or remove it",
                        );
                        continue;
                    };
                    let inner_rule = inner_decl
                        .transfer
                        .get(dest)
                        .copied()
                        .unwrap_or(Transfer::Drop);
                    if rule.exposes_more_than(inner_rule) {
                        push(
                            format!("items.{name}.transfer"),
                            format!(
                                "sends {name:?} to {dest:?} as {rule:?} but it carries {inner:?}, which goes there only as {inner_rule:?}"
                            ),
                            "send the item as \"encrypt\", \"keyed_digest\" or \"drop\"",
                        );
                    }
                }
            }
            if item.sensitivity == Sensitivity::Biometric
                && item
                    .transfer
                    .get(&Destination::Hq)
                    .copied()
                    .unwrap_or(Transfer::Drop)
                    != Transfer::Drop
                && !item.transfer_consent.contains(&Destination::Hq)
            {
                push(
                    format!("items.{name}.transfer"),
                    "sends a biometric to HQ without a separate transfer consent".into(),
                    "set hq = \"drop\", or list \"hq\" in transfer_consent",
                );
            }
            if item.retention != LocalRetention::UntilHqAck
                && matches!(
                    item.transfer.get(&Destination::Hq),
                    Some(
                        Transfer::Encrypt
                            | Transfer::KeyedDigest
                            | Transfer::Plain
                            | Transfer::Mask
                    )
                )
            {
                push(
                    format!("items.{name}.retention"),
                    "is sent to HQ but not kept until HQ acknowledges it".into(),
                    "use retention = \"until_hq_ack\" or transfer hq = \"drop\"",
                );
            }
        }
        for (i, d) in self
            .holidays
            .days
            .iter()
            .chain(&self.holidays.extra_workdays)
            .enumerate()
        {
            if !is_iso_date(d) {
                push(
                    format!("holidays[{i}]"),
                    format!("{d:?} is not a YYYY-MM-DD date"),
                    "write dates as YYYY-MM-DD",
                );
            }
        }
        if self.rights.deadline_days == 0 {
            push(
                "rights.deadline_days".into(),
                "must be greater than 0".into(),
                "use the policy's deadline, e.g. 15",
            );
        }
        problems
    }

    pub fn item(&self, item: &str) -> Result<&ItemDecl, CatalogError> {
        self.items
            .get(item)
            .ok_or_else(|| CatalogError::UnknownItem(item.to_string()))
    }

    pub fn service(&self, service: &str) -> Result<&ServiceDecl, CatalogError> {
        self.services
            .get(service)
            .ok_or_else(|| CatalogError::UnknownService(service.to_string()))
    }

    pub fn method(&self, method: &str) -> Result<&MethodDecl, CatalogError> {
        self.methods
            .get(method)
            .ok_or_else(|| CatalogError::UnknownMethod(method.to_string()))
    }

    /// May `item` be collected for `service` (verified by `method`, if any)?
    /// An item is permitted when the service requires or optionally takes it, or
    /// the chosen method sends it to its verifier.
    pub fn permit<'a>(
        &'a self,
        service: &str,
        method: Option<&str>,
        item: &'a str,
    ) -> Result<Permit<'a>, CatalogError> {
        let svc = self.service(service)?;
        let decl = self.item(item)?;
        let mut required = svc.required.iter().any(|i| i == item);
        let mut allowed = required || svc.optional.iter().any(|i| i == item);
        if let Some(m) = method {
            if !svc.methods.iter().any(|x| x == m) {
                return Err(CatalogError::MethodNotOffered {
                    service: service.into(),
                    method: m.into(),
                });
            }
            if self.method(m)?.fields.iter().any(|f| f == item) {
                allowed = true;
                required = true;
            }
        }
        if !allowed {
            return Err(CatalogError::NotDeclared {
                item: item.into(),
                purpose: match method {
                    Some(m) => format!("{service}/{m}"),
                    None => service.into(),
                },
            });
        }
        Ok(Permit {
            item,
            decl,
            required,
            separate_consent: decl.sensitivity.needs_separate_consent(),
        })
    }

    /// The display form of `value` for `item`; an undeclared item shows nothing.
    pub fn mask(&self, item: &str, value: &str) -> String {
        match self.items.get(item) {
            Some(decl) => decl.display.apply(value),
            None => "******".into(),
        }
    }

    /// How `item` may leave towards `dest`; undeclared means `Drop`.
    pub fn transfer(&self, item: &str, dest: Destination) -> Transfer {
        self.items
            .get(item)
            .and_then(|d| d.transfer.get(&dest).copied())
            .unwrap_or(Transfer::Drop)
    }
}

fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_is_valid() {
        let c = Catalog::embedded();
        assert!(c.items.contains_key("id_number"));
        assert_eq!(c.minors.guardian_required_under, 14);
    }

    #[test]
    fn masks_follow_the_safe_defaults() {
        let c = Catalog::embedded();
        assert_eq!(
            c.mask("id_number", "11010519491231002X"),
            "1****************X"
        );
        assert_eq!(c.mask("mobile", "13812341234"), "138****1234");
        assert_eq!(
            c.mask("bank_card", "6222021234567890123"),
            "622202*********0123"
        );
        assert_eq!(c.mask("name", "张三丰"), "张**");
        assert_eq!(c.mask("name", "张三"), "张*");
        assert_eq!(c.mask("face_image", "anything"), "******");
        assert_eq!(c.mask("not_declared", "x"), "******");
    }

    #[test]
    fn a_short_value_is_never_shown_whole() {
        let rule = MaskRule {
            keep_first: 3,
            keep_last: 4,
            hidden: false,
        };
        assert_eq!(rule.apply("12345"), "123**");
        assert_eq!(rule.apply("1"), "*");
        assert_eq!(rule.apply(""), "");
    }

    #[test]
    fn permit_refuses_undeclared_items_naming_item_and_purpose() {
        let c = Catalog::embedded();
        let err = c.permit("certificate_use", None, "address").unwrap_err();
        assert_eq!(
            err,
            CatalogError::NotDeclared {
                item: "address".into(),
                purpose: "certificate_use".into()
            }
        );
        assert!(err.to_string().contains("\"address\""));
        assert!(err.to_string().contains("certificate_use"));
        // The bank card is collected only for the bank-card method.
        assert!(c.permit("cert_application", None, "bank_card").is_err());
        let p = c
            .permit("cert_application", Some("bank_card_4factor"), "bank_card")
            .unwrap();
        assert!(p.required && p.separate_consent);
        assert!(matches!(
            c.permit("cert_application", Some("telepathy"), "name"),
            Err(CatalogError::MethodNotOffered { .. })
        ));
    }

    #[test]
    fn biometrics_need_separate_consent_and_stay_on_the_kiosk() {
        let c = Catalog::embedded();
        for item in ["face_image", "fingerprint", "id_photo"] {
            let p = c.permit("cert_application", None, item).unwrap();
            assert!(p.separate_consent, "{item}");
            assert_eq!(c.transfer(item, Destination::Hq), Transfer::Drop, "{item}");
        }
        assert_eq!(c.transfer("undeclared", Destination::Hq), Transfer::Drop);
    }

    #[test]
    fn face_recognition_may_not_be_the_only_method() {
        let text = DEFAULT_CATALOG.replace(
            "methods = [\"carrier_3factor\", \"bank_card_4factor\", \"biometric_compare\"]\n\n[services.enterprise",
            "methods = [\"biometric_compare\"]\n\n[services.enterprise",
        );
        assert_ne!(text, DEFAULT_CATALOG);
        let err = Catalog::parse(&text, None).unwrap_err();
        assert!(
            err.to_string().contains("only verification method"),
            "{err}"
        );
    }

    #[test]
    fn a_biometric_sent_to_hq_without_transfer_consent_is_rejected() {
        let text = DEFAULT_CATALOG.replace(
            "transfer = { hq = \"drop\" }\nretention = \"session\"\n\n[items.bank_card]",
            "transfer = { hq = \"encrypt\" }\nretention = \"until_hq_ack\"\n\n[items.bank_card]",
        );
        assert_ne!(text, DEFAULT_CATALOG);
        let err = Catalog::parse(&text, None).unwrap_err();
        assert!(
            err.to_string().contains("items.fingerprint.transfer"),
            "{err}"
        );
    }

    #[test]
    fn certificate_leaks_the_holders_name_in_clear_is_refused() {
        // The certificate's subject carries the holder's name (CN), which goes to HQ only
        // encrypted: sending the certificate `plain` would carry the name in clear.
        let text = DEFAULT_CATALOG.replace(
            "contains = [\"name\"]\ntransfer = { hq = \"encrypt\" }",
            "contains = [\"name\"]\ntransfer = { hq = \"plain\" }",
        );
        assert_ne!(text, DEFAULT_CATALOG);
        let err = Catalog::parse(&text, None).unwrap_err().to_string();
        assert!(err.contains("items.certificate.transfer"), "{err}");
        assert!(err.contains("\"name\""), "{err}");
        // ... and the shipped catalog sends it in a form that keeps the name sealed.
        let c = Catalog::embedded();
        let cert = c.transfer("certificate", Destination::Hq);
        assert!(!cert.exposes_more_than(c.transfer("name", Destination::Hq)));
    }

    #[test]
    fn transfer_exposure_order() {
        use Transfer::*;
        assert!(Plain.exposes_more_than(Encrypt));
        assert!(Mask.exposes_more_than(Encrypt));
        assert!(Encrypt.exposes_more_than(Mask));
        assert!(Encrypt.exposes_more_than(KeyedDigest));
        assert!(KeyedDigest.exposes_more_than(Drop));
        assert!(!Encrypt.exposes_more_than(Encrypt));
        assert!(!KeyedDigest.exposes_more_than(Encrypt));
        assert!(!Drop.exposes_more_than(Drop));
        assert!(!Plain.exposes_more_than(Plain));
    }

    #[test]
    fn unknown_keys_in_the_catalog_are_errors() {
        let text = format!("{DEFAULT_CATALOG}\n[items.name.extra]\nx = 1\n");
        assert!(Catalog::parse(&text, None).is_err());
    }
}
