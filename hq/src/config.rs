//! hq-ingest's configuration file (`hq-ingest --config /etc/hq-ingest/hq-ingest.toml`): one
//! strict TOML file (unknown keys are errors naming the file, line and key), with secrets
//! referenced, never inlined: a file path, or `credential:NAME` for a systemd credential
//! (`LoadCredential=NAME:/path` in the unit; read from `$CREDENTIALS_DIRECTORY/NAME`).
//!
//! Relative paths are relative to the configuration file's directory. Problems are reported
//! in the same form as kioskd's own configuration ([`kiosk_config::Problem`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiosk_config::{ConfigError, Problem};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Environment variable systemd sets to the directory of the unit's credentials.
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";

/// Prefix of a secret that is a systemd credential.
pub const CREDENTIAL_PREFIX: &str = "credential:";

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HqConfig {
    /// PostgreSQL.
    pub database: DatabaseSection,
    /// Listeners.
    #[serde(default)]
    pub listen: ListenSection,
    /// The mTLS server identity and the CA of kiosk client certificates.
    pub tls: TlsSection,
    /// HQ's record-decryption and witness keys.
    pub keys: KeysSection,
    /// The CA issuing applicants' certificates (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaSection>,
    /// The scheduled retention job.
    #[serde(default)]
    pub retention: RetentionSection,
    /// Kiosk enrollment (optional): the listener new kiosks provision through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enroll: Option<EnrollSection>,
}

/// `[enroll]`: kiosk provisioning ([`crate::enroll`]). New kiosks trade a one-time code from
/// `hq-ingest enroll-kiosk` for a client certificate signed by the kiosk CA (`tls.kiosk_ca`
/// and this key) on a TLS listener of its own, without client authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollSection {
    /// The enrollment listener (TLS with `tls.cert`, no client certificates).
    pub listen: SocketAddr,
    /// The kiosk CA's private key (PKCS#8 PEM) that signs kiosk client certificates; its
    /// certificate is `tls.kiosk_ca`.
    pub kiosk_ca_key: SecretRef,
    /// Validity of a kiosk client certificate, in days.
    #[serde(default = "default_kiosk_cert_days")]
    pub validity_days: u32,
}

fn default_kiosk_cert_days() -> u32 {
    365
}

/// `[database]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// libpq connection string without the password, e.g.
    /// `host=/run/postgresql dbname=hq user=hq-ingest`.
    pub url: String,
    /// The password, when the server asks for one (peer authentication over the Unix socket
    /// needs none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// Connections in the pool.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

fn default_pool_size() -> usize {
    16
}

/// `[listen]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// The mTLS listener kiosks send to.
    #[serde(default = "default_mtls")]
    pub mtls: SocketAddr,
    /// Plain HTTP listener for `/health` and `/metrics` (keep it on loopback or a management
    /// network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
}

fn default_mtls() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}

impl Default for ListenSection {
    fn default() -> Self {
        Self {
            mtls: default_mtls(),
            metrics: None,
        }
    }
}

/// `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA that issued kiosk client certificates (PEM).
    pub kiosk_ca: PathBuf,
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: SecretRef,
    /// Kiosk CRL written by `hq-ingest revoke-kiosk`; reloaded whenever it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kiosk_crl: Option<PathBuf>,
}

/// `[keys]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysSection {
    /// HQ record-decryption key (hex).
    pub record_key: SecretRef,
    /// HQ witness signing key (hex SM2 scalar).
    pub witness_key: SecretRef,
    /// Witness key name in cosignature lines.
    #[serde(default = "default_witness_name")]
    pub witness_name: String,
}

fn default_witness_name() -> String {
    "hq-witness".into()
}

/// `[ca]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSection {
    /// Issuing CA certificate (PEM).
    pub cert: PathBuf,
    /// Issuing CA private key (PKCS#8 PEM, P-256 or SM2).
    pub key: SecretRef,
    /// Longest validity of issued certificates, in days (caps the issuance policy's).
    #[serde(default = "default_validity_days")]
    pub validity_days: u32,
    /// Issuance policy (TOML; default: the embedded hq/policy/issuance.toml).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuance_policy: Option<PathBuf>,
}

fn default_validity_days() -> u32 {
    365
}

/// `[retention]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Run the retention job from the service.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How often (`90s`, `30m`, `6h`, `1d`); the first run is right after start-up.
    #[serde(default = "default_interval")]
    pub interval: Interval,
    /// The privacy catalog whose `[hq_retention]` gives the periods (default: the catalog
    /// built into kioskd and hq-ingest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}

fn default_interval() -> Interval {
    Interval(Duration::from_secs(86_400))
}

impl Default for RetentionSection {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_interval(),
            catalog: None,
        }
    }
}

/// A duration written `<n>s`, `<n>m`, `<n>h` or `<n>d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Duration);

impl Interval {
    /// Parse `90s`, `30m`, `6h`, `1d`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let unit = text.chars().last()?;
        let n: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
        let secs = match unit {
            's' => n,
            'm' => n.checked_mul(60)?,
            'h' => n.checked_mul(3600)?,
            'd' => n.checked_mul(86_400)?,
            _ => return None,
        };
        Some(Self(Duration::from_secs(secs)))
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        match s {
            s if s % 86_400 == 0 && s > 0 => write!(f, "{}d", s / 86_400),
            s if s % 3600 == 0 && s > 0 => write!(f, "{}h", s / 3600),
            s if s % 60 == 0 && s > 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

impl Serialize for Interval {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Interval::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid interval {text:?}: expected a number and a unit s, m, h or d (e.g. \"24h\")"
            ))
        })
    }
}

/// Where a secret comes from: a file, or a systemd credential. The reference is what the
/// configuration holds and prints; the secret itself is only read by [`SecretRef::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// A file (relative: to the configuration file's directory).
    File(PathBuf),
    /// `credential:NAME`: `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
}

/// A secret that could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A credential was named but the process has none.
    #[error(
        "{key}: credential {name:?} requested but ${CREDENTIALS_ENV} is not set (fix: add `LoadCredential={name}:/path/to/file` to the unit, or give a file path instead)"
    )]
    NoCredentials {
        /// The configuration key.
        key: String,
        /// The credential's name.
        name: String,
    },
    /// The file is missing or unreadable.
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        /// The configuration key.
        key: String,
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl SecretRef {
    /// The file holding the secret, `key` being the configuration key (for messages).
    pub fn path(&self, key: &str) -> Result<PathBuf, SecretError> {
        match self {
            SecretRef::File(p) => Ok(p.clone()),
            SecretRef::Credential(name) => match std::env::var_os(CREDENTIALS_ENV) {
                Some(dir) => Ok(Path::new(&dir).join(name)),
                None => Err(SecretError::NoCredentials {
                    key: key.into(),
                    name: name.clone(),
                }),
            },
        }
    }

    /// Read the secret (zeroized when dropped).
    pub fn read(&self, key: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, SecretError> {
        let path = self.path(key)?;
        std::fs::read(&path)
            .map(zeroize::Zeroizing::new)
            .map_err(|source| SecretError::Read {
                key: key.into(),
                path: path.display().to_string(),
                source,
            })
    }

    fn resolve(&mut self, base: &Path) {
        if let SecretRef::File(p) = self {
            *p = resolve(base, p);
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::File(p) => write!(f, "{}", p.display()),
            SecretRef::Credential(name) => write!(f, "{CREDENTIAL_PREFIX}{name}"),
        }
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.strip_prefix(CREDENTIAL_PREFIX) {
            Some(name)
                if !name.is_empty() && !name.contains('/') && name != "." && name != ".." =>
            {
                Ok(SecretRef::Credential(name.to_owned()))
            }
            Some(_) => Err(serde::de::Error::custom(format!(
                "invalid credential reference {text:?}: expected `credential:NAME` with a plain file name"
            ))),
            None if text.is_empty() => Err(serde::de::Error::custom("empty path")),
            None => Ok(SecretRef::File(PathBuf::from(text))),
        }
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl HqConfig {
    /// Parse and validate `text` (from `file`, for messages and relative paths).
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let mut config: HqConfig = parse_strict(text, file)?;
        let problems = config.check(file, text);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        let base = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::path::absolute(&base).unwrap_or(base);
        config.resolve_paths(&base);
        Ok(config)
    }

    /// Read, parse and validate a file.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            path: file.to_path_buf(),
            source,
        })?;
        Self::parse(&text, file)
    }

    /// The effective configuration as TOML (secrets appear as their references only).
    pub fn effective_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration model always serializes")
    }

    /// The retention periods: the `[hq_retention]` of the configured privacy catalog.
    pub fn retention_policy(&self) -> Result<crate::retention::RetentionPolicy, ConfigError> {
        let catalog = kiosk_config::Catalog::load(self.retention.catalog.as_deref())?;
        Ok(crate::retention::RetentionPolicy::from_catalog(&catalog))
    }

    /// Files the service will read, with their keys: (key, path or credential).
    pub fn referenced_files(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("tls.kiosk_ca", self.tls.kiosk_ca.display().to_string()),
            ("tls.cert", self.tls.cert.display().to_string()),
            ("tls.key", self.tls.key.to_string()),
            ("keys.record_key", self.keys.record_key.to_string()),
            ("keys.witness_key", self.keys.witness_key.to_string()),
        ];
        if let Some(p) = &self.database.password {
            out.push(("database.password", p.to_string()));
        }
        if let Some(crl) = &self.tls.kiosk_crl {
            out.push(("tls.kiosk_crl", crl.display().to_string()));
        }
        if let Some(ca) = &self.ca {
            out.push(("ca.cert", ca.cert.display().to_string()));
            out.push(("ca.key", ca.key.to_string()));
            if let Some(policy) = &ca.issuance_policy {
                out.push(("ca.issuance_policy", policy.display().to_string()));
            }
        }
        if let Some(c) = &self.retention.catalog {
            out.push(("retention.catalog", c.display().to_string()));
        }
        if let Some(e) = &self.enroll {
            out.push(("enroll.kiosk_ca_key", e.kiosk_ca_key.to_string()));
        }
        out
    }

    fn resolve_paths(&mut self, base: &Path) {
        self.tls.kiosk_ca = resolve(base, &self.tls.kiosk_ca);
        self.tls.cert = resolve(base, &self.tls.cert);
        self.tls.key.resolve(base);
        if let Some(crl) = &mut self.tls.kiosk_crl {
            *crl = resolve(base, crl);
        }
        self.keys.record_key.resolve(base);
        self.keys.witness_key.resolve(base);
        if let Some(p) = &mut self.database.password {
            p.resolve(base);
        }
        if let Some(ca) = &mut self.ca {
            ca.cert = resolve(base, &ca.cert);
            ca.key.resolve(base);
            if let Some(policy) = &mut ca.issuance_policy {
                *policy = resolve(base, policy);
            }
        }
        if let Some(c) = &mut self.retention.catalog {
            *c = resolve(base, c);
        }
        if let Some(e) = &mut self.enroll {
            e.kiosk_ca_key.resolve(base);
        }
    }

    fn check(&self, file: &Path, text: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut push = |key: &str, message: String, fix: &str| {
            problems.push(Problem {
                file: Some(file.to_path_buf()),
                line: line_of_key(text, key),
                key: key.into(),
                message,
                fix: fix.into(),
            })
        };
        if let Err(e) = self.database.url.parse::<tokio_postgres::Config>() {
            push(
                "database.url",
                format!("not a libpq connection string: {e}"),
                "e.g. \"host=/run/postgresql dbname=hq user=hq-ingest\"",
            );
        } else if self.database.url.contains("password") {
            push(
                "database.url",
                "holds a password".into(),
                "move it to database.password = \"credential:NAME\" or a file path",
            );
        }
        if self.database.pool_size == 0 {
            push("database.pool_size", "must be at least 1".into(), "e.g. 16");
        }
        if self.keys.witness_name.trim().is_empty() || self.keys.witness_name.contains(' ') {
            push(
                "keys.witness_name",
                "must be a non-empty name without spaces".into(),
                "e.g. \"hq-witness\"",
            );
        }
        if let Some(ca) = &self.ca
            && ca.validity_days == 0
        {
            push("ca.validity_days", "must be at least 1".into(), "e.g. 365");
        }
        if self.retention.interval.0 < Duration::from_secs(60) {
            push(
                "retention.interval",
                "shorter than a minute".into(),
                "e.g. \"24h\"",
            );
        }
        if let Some(e) = &self.enroll {
            if e.validity_days == 0 {
                push(
                    "enroll.validity_days",
                    "must be at least 1".into(),
                    "e.g. 365",
                );
            }
            if e.listen.port() != 0
                && (e.listen == self.listen.mtls || Some(e.listen) == self.listen.metrics)
            {
                push(
                    "enroll.listen",
                    "same address as another listener".into(),
                    "give the enrollment listener its own port, e.g. 8444",
                );
            }
        }
        if let Some(m) = self.listen.metrics
            && m == self.listen.mtls
            && m.port() != 0
        {
            push(
                "listen.metrics",
                "same address as listen.mtls".into(),
                "give the plain listener its own port",
            );
        }
        problems
    }
}

/// Parse into a strict model, reporting the file, line and key of the first error.
fn parse_strict<T: serde::de::DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigError> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| {
        ConfigError::Invalid(vec![Problem {
            file: Some(file.to_path_buf()),
            line: e.span().map(|s| line_of(text, s.start)),
            key: "(syntax)".into(),
            message: e.message().trim().to_string(),
            fix: "correct the TOML syntax".into(),
        }])
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().trim().to_string();
        let fix = if message.starts_with("unknown field") {
            "remove the key or correct its spelling (unknown keys are not ignored)"
        } else if message.starts_with("missing field") {
            "add the key (see /usr/share/doc/hq-ingest/examples/hq-ingest.toml)"
        } else {
            "give the key a value of the expected type"
        };
        ConfigError::Invalid(vec![Problem {
            file: Some(file.to_path_buf()),
            line: inner.span().map(|s| line_of(text, s.start)),
            key,
            message,
            fix: fix.into(),
        }])
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line of `section.key` in `text` (best effort: the first `key =` after `[section]`).
fn line_of_key(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.rsplit_once('.')?;
    let mut in_section = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_section = t.trim_start_matches('[').trim_end_matches(']').trim() == section;
        } else if in_section && t.split('=').next().map(str::trim) == Some(key) && t.contains('=') {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[database]
url = "host=/run/postgresql dbname=hq user=hq-ingest"

[tls]
kiosk_ca = "kiosk-ca.pem"
cert = "/etc/hq-ingest/server.pem"
key = "credential:server.key"

[keys]
record_key = "credential:record-key"
witness_key = "witness.hex"
"#;

    #[test]
    fn minimal_file_gets_defaults_and_absolute_paths() {
        let c = HqConfig::parse(MINIMAL, Path::new("/etc/hq-ingest/hq-ingest.toml")).unwrap();
        assert_eq!(c.listen.mtls, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(c.database.pool_size, 16);
        assert_eq!(c.tls.kiosk_ca, Path::new("/etc/hq-ingest/kiosk-ca.pem"));
        assert_eq!(c.tls.key, SecretRef::Credential("server.key".into()));
        assert_eq!(
            c.keys.witness_key,
            SecretRef::File("/etc/hq-ingest/witness.hex".into())
        );
        assert!(c.retention.enabled);
        assert_eq!(c.retention.interval.0, Duration::from_secs(86_400));
        // Round trip: the effective configuration parses again to the same thing.
        let again = HqConfig::parse(&c.effective_toml(), Path::new("/x/y.toml")).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = MINIMAL.replace("[keys]", "[keys]\nrecord_kee = \"x\"");
        let e = HqConfig::parse(&text, Path::new("/etc/hq-ingest/hq-ingest.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("/etc/hq-ingest/hq-ingest.toml:11: keys.record_kee: unknown field"),
            "{msg}"
        );
        assert!(msg.contains("unknown keys are not ignored"), "{msg}");
    }

    #[test]
    fn unknown_section_is_an_error() {
        let text = format!("{MINIMAL}\n[retentoin]\nenabled = false\n");
        let msg = HqConfig::parse(&text, Path::new("f.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("retentoin"), "{msg}");
    }

    #[test]
    fn password_in_the_url_is_refused() {
        let text = MINIMAL.replace("user=hq-ingest", "user=hq-ingest password=hunter2");
        let msg = HqConfig::parse(&text, Path::new("f.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("database.url: holds a password"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn intervals() {
        assert_eq!(Interval::parse("90s").unwrap().0, Duration::from_secs(90));
        assert_eq!(
            Interval::parse("6h").unwrap().0,
            Duration::from_secs(21_600)
        );
        assert_eq!(Interval::parse("1d").unwrap().to_string(), "1d");
        assert!(Interval::parse("1w").is_none());
        assert!(Interval::parse("h").is_none());
        let text = format!("{MINIMAL}\n[retention]\ninterval = \"10s\"\n");
        let msg = HqConfig::parse(&text, Path::new("f.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("retention.interval"), "{msg}");
    }

    #[test]
    fn credential_without_credentials_directory_names_the_fix() {
        // Only meaningful when the test runs outside a unit with credentials.
        if std::env::var_os(CREDENTIALS_ENV).is_some() {
            return;
        }
        let e = SecretRef::Credential("server.key".into())
            .read("tls.key")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("LoadCredential=server.key:/path/to/file"),
            "{e}"
        );
    }

    #[test]
    fn enroll_section_resolves_its_key_and_needs_its_own_port() {
        let text = format!(
            "{MINIMAL}\n[enroll]\nlisten = \"0.0.0.0:8444\"\nkiosk_ca_key = \"private/kiosk-ca.key\"\n"
        );
        let c = HqConfig::parse(&text, Path::new("/etc/hq-ingest/hq-ingest.toml")).unwrap();
        let enroll = c.enroll.as_ref().unwrap();
        assert_eq!(
            enroll.kiosk_ca_key,
            SecretRef::File("/etc/hq-ingest/private/kiosk-ca.key".into())
        );
        assert_eq!(enroll.validity_days, 365);
        assert!(
            c.referenced_files()
                .iter()
                .any(|(k, _)| *k == "enroll.kiosk_ca_key")
        );
        let again = HqConfig::parse(&c.effective_toml(), Path::new("/x/y.toml")).unwrap();
        assert_eq!(again, c);
        let clash = text.replace("0.0.0.0:8444", "0.0.0.0:8443");
        let msg = HqConfig::parse(&clash, Path::new("f.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("enroll.listen"), "{msg}");
    }

    #[test]
    fn credential_names_cannot_escape_the_directory() {
        let text = MINIMAL.replace("credential:server.key", "credential:../etc/shadow");
        assert!(HqConfig::parse(&text, Path::new("f.toml")).is_err());
    }
}
