//! Secrets that appear in configuration: never printed, zeroized on drop.
//!
//! A secret is written in `kioskd.toml` in one of three ways:
//!
//! - `key = "value"`: inline in the TOML (demo mode only);
//! - `key = { file = "/etc/kioskd/secret" }`: a file readable only by the service user
//!   (no group or other permission bits);
//! - `key = { credential = "name" }`: a systemd credential, read from
//!   `$CREDENTIALS_DIRECTORY/name` (`LoadCredential=name:/path` or `SetCredentialEncrypted=`
//!   in the unit).
//!
//! Files and credentials are read when the configuration is loaded ([`crate::load`]), so
//! [`ConfigSecret::expose`] always has the value. A value nobody configured is the built-in
//! demo default ([`ConfigSecret::is_builtin`]); production mode refuses built-in and inline
//! secrets.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Where a secret's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The embedded demo default: nobody configured it.
    BuiltIn,
    /// Written in the TOML itself.
    Inline,
    /// A file (relative paths are relative to the data directory).
    File(PathBuf),
    /// A systemd credential name under `$CREDENTIALS_DIRECTORY`.
    Credential(String),
}

/// A secret configuration value. `Debug`, `Display` and `Serialize` never print the value;
/// it is reachable only through [`ConfigSecret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigSecret {
    value: Zeroizing<String>,
    source: SecretSource,
}

/// Why a secret file or credential could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{} is readable by group or others (mode {mode:o})", path.display())]
    Permissive { path: PathBuf, mode: u32 },
    #[error("{} is empty", path.display())]
    Empty { path: PathBuf },
    #[error("systemd credential {0:?} requested but $CREDENTIALS_DIRECTORY is not set")]
    NoCredentialsDirectory(String),
    #[error("{0:?} is not a valid credential name")]
    BadCredentialName(String),
}

impl ConfigSecret {
    /// A built-in demo default.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: Zeroizing::new(value.into()),
            source: SecretSource::BuiltIn,
        }
    }

    /// A value given inline (as the TOML would).
    pub fn inline(value: impl Into<String>) -> Self {
        Self {
            value: Zeroizing::new(value.into()),
            source: SecretSource::Inline,
        }
    }

    /// A secret to be read from `path` by [`ConfigSecret::load`].
    pub fn from_file(path: impl Into<PathBuf>) -> Self {
        Self {
            value: Zeroizing::new(String::new()),
            source: SecretSource::File(path.into()),
        }
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// Whether this is the embedded demo default.
    pub fn is_builtin(&self) -> bool {
        self.source == SecretSource::BuiltIn
    }

    /// Whether the value is written in the TOML or built in (not from a file or credential).
    pub fn is_in_config(&self) -> bool {
        matches!(self.source, SecretSource::BuiltIn | SecretSource::Inline)
    }

    /// Read the value of a file or credential secret (`resolve` makes a relative file path
    /// absolute). The file must be readable by its owner only; one trailing newline is dropped.
    pub fn load(&mut self, resolve: impl Fn(&Path) -> PathBuf) -> Result<(), SecretError> {
        let path = match &self.source {
            SecretSource::BuiltIn | SecretSource::Inline => return Ok(()),
            SecretSource::File(p) => resolve(p),
            SecretSource::Credential(name) => credential_path(name)?,
        };
        self.value = read_private(&path)?;
        Ok(())
    }
}

/// `$CREDENTIALS_DIRECTORY/name`.
pub fn credential_path(name: &str) -> Result<PathBuf, SecretError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(SecretError::BadCredentialName(name.to_string()));
    }
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
        .ok_or_else(|| SecretError::NoCredentialsDirectory(name.to_string()))?;
    Ok(PathBuf::from(dir).join(name))
}

/// Read a secret file that only its owner may read.
pub fn read_private(path: &Path) -> Result<Zeroizing<String>, SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let read_err = |e: std::io::Error| SecretError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Permissive {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut text = Zeroizing::new(std::fs::read_to_string(path).map_err(read_err)?);
    while text.ends_with('\n') || text.ends_with('\r') {
        text.pop();
    }
    if text.is_empty() {
        return Err(SecretError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for ConfigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            SecretSource::File(p) => write!(f, "<redacted from file {}>", p.display()),
            SecretSource::Credential(n) => write!(f, "<redacted from credential {n}>"),
            _ => f.write_str(REDACTED),
        }
    }
}

impl fmt::Display for ConfigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum SourceTable {
    File(PathBuf),
    Credential(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SecretRepr {
    Inline(String),
    Source(SourceTable),
}

impl Serialize for ConfigSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.source {
            SecretSource::File(p) => SourceTable::File(p.clone()).serialize(s),
            SecretSource::Credential(n) => SourceTable::Credential(n.clone()).serialize(s),
            _ => s.serialize_str(REDACTED),
        }
    }
}

impl<'de> Deserialize<'de> for ConfigSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match SecretRepr::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a string, { file = \"/path\" } or { credential = \"name\" }",
            )
        })? {
            SecretRepr::Inline(v) => Ok(Self::inline(v)),
            SecretRepr::Source(SourceTable::File(p)) => Ok(Self::from_file(p)),
            SecretRepr::Source(SourceTable::Credential(n)) => Ok(Self {
                value: Zeroizing::new(String::new()),
                source: SecretSource::Credential(n),
            }),
        }
    }
}
