//! kioskd's configuration: the typed model of `kioskd.toml`, loading, and
//! validation whose every message names the file, the line, the key and the fix.
//!
//! An empty file (or no file at all) is a complete configuration: simulated
//! devices, the soft token, SQLite under the data directory and a local HQ.
//! Unknown keys are errors, never silently ignored.

#[cfg(feature = "cli-docs")]
pub mod cli_docs;

pub mod catalog;
mod mode;
mod model;
mod secret;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use catalog::{Catalog, CatalogError, Destination, Sensitivity, Transfer};
pub use mode::{DemoFeature, demo_features};
pub use model::*;
pub use secret::{ConfigSecret, SecretError, SecretSource, credential_path, read_private};
pub use validate::{SUPPORTED_BAUDS, parse_usb_id};

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, or `None` for the built-in defaults.
    pub file: Option<PathBuf>,
    /// 1-based line of the key in the file, when it appears there.
    pub line: Option<usize>,
    /// Dotted key, e.g. `store.path`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: ", file.display())?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, _) => f.write_str("<defaults>: ")?,
        }
        write!(f, "{}: {}", self.key, self.message)?;
        if !self.fix.is_empty() {
            write!(f, " (fix: {})", self.fix)?;
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read configuration: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// The individual problems (one for a read error).
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(p) => p.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// Where the configuration comes from and what the command line overrides.
#[derive(Debug, Default, Clone)]
pub struct LoadOptions<'a> {
    /// The TOML file; `None` runs on the embedded defaults.
    pub file: Option<&'a Path>,
    /// `--data-dir`, overriding `kiosk.data_dir`.
    pub data_dir: Option<&'a Path>,
}

/// A configuration that parsed and validated, with its data directory made absolute.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
}

impl LoadedConfig {
    /// The data directory (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.config.kiosk.data_dir
    }

    /// Resolve a configured path against the data directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.config.resolve(path)
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn effective_toml(&self) -> String {
        toml::to_string_pretty(&self.config).expect("the config model always serializes")
    }
}

impl Config {
    /// Resolve a configured path against the data directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.kiosk.data_dir.join(path)
        }
    }
}

/// Parse TOML text into a [`Config`], reporting the key and line of the first error.
pub fn parse(text: &str, file: Option<&Path>) -> Result<Config, ConfigError> {
    parse_as(text, file)
}

/// Parse TOML text into any strict model, reporting the key and line of the first error.
pub(crate) fn parse_as<T: serde::de::DeserializeOwned>(
    text: &str,
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| {
        ConfigError::Invalid(vec![Problem {
            file: file.map(Path::to_path_buf),
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
            "remove the key or correct its spelling (unknown keys are not ignored)".to_string()
        } else if message.starts_with("unknown variant") {
            "use one of the values listed".to_string()
        } else {
            "give the key a value of the expected type".to_string()
        };
        ConfigError::Invalid(vec![Problem {
            file: file.map(Path::to_path_buf),
            line: inner.span().map(|s| line_of(text, s.start)),
            key,
            message,
            fix,
        }])
    })
}

/// Load, apply overrides, make the data directory absolute, and validate.
pub fn load(opts: LoadOptions<'_>) -> Result<LoadedConfig, ConfigError> {
    load_with(opts, &[])
}

/// [`load`] for a tool about to write the files named by the dotted keys `to_be_written`
/// (`kioskctl provision` writes `hq.client_cert`, ...): those files need not exist yet; every
/// other check applies.
pub fn load_before_writing(
    opts: LoadOptions<'_>,
    to_be_written: &[&str],
) -> Result<LoadedConfig, ConfigError> {
    load_with(opts, to_be_written)
}

fn load_with(opts: LoadOptions<'_>, to_be_written: &[&str]) -> Result<LoadedConfig, ConfigError> {
    let (mut config, text) = match opts.file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            (parse(&text, Some(path))?, text)
        }
        None => (Config::default(), String::new()),
    };
    if let Some(dir) = opts.data_dir {
        config.kiosk.data_dir = dir.to_path_buf();
    } else if let Some(file) = opts.file
        && config.kiosk.data_dir.is_relative()
    {
        // A relative data_dir in a file is relative to that file.
        let base = file.parent().unwrap_or(Path::new("."));
        config.kiosk.data_dir = base.join(&config.kiosk.data_dir);
    }
    config.kiosk.data_dir = absolute(&config.kiosk.data_dir);
    let mut problems = load_secrets(&mut config, opts.file, &text);
    problems.extend(
        validate::validate(&config, opts.file, &text)
            .into_iter()
            .filter(|p| !(to_be_written.contains(&p.key.as_str()) && validate::is_missing_file(p))),
    );
    if problems.is_empty() {
        Ok(LoadedConfig {
            config,
            source: opts.file.map(Path::to_path_buf),
        })
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

impl Config {
    /// Every secret of the configuration with its dotted key.
    pub fn secrets_mut(&mut self) -> [(&'static str, &mut ConfigSecret); 6] {
        [
            ("token.soft_secret", &mut self.token.soft_secret),
            ("token.device_pin", &mut self.token.device_pin),
            ("token.device_so_pin", &mut self.token.device_so_pin),
            ("ukey.soft_secret", &mut self.ukey.soft_secret),
            ("ukey.factory_so_pin", &mut self.ukey.factory_so_pin),
            ("staff.demo_pin", &mut self.staff.demo_pin),
        ]
    }
}

/// Read every secret given as a file or a systemd credential.
fn load_secrets(config: &mut Config, file: Option<&Path>, text: &str) -> Vec<Problem> {
    let data_dir = config.kiosk.data_dir.clone();
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            data_dir.join(p)
        }
    };
    let mut problems = Vec::new();
    for (key, secret) in config.secrets_mut() {
        if let Err(e) = secret.load(resolve) {
            let fix = match &e {
                SecretError::Permissive { .. } => {
                    "chmod 600 the file and chown it to the kioskd user".to_string()
                }
                SecretError::NoCredentialsDirectory(name) => format!(
                    "add LoadCredential={name}:/path/of/the/secret to kioskd.service (or give {{ file = \"/path\" }})"
                ),
                _ => "correct the path, or put the secret into the file".to_string(),
            };
            problems.push(Problem {
                file: file.map(Path::to_path_buf),
                line: validate::locate_key(text, key),
                key: key.to_string(),
                message: e.to_string(),
                fix,
            });
        }
    }
    problems
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests;
