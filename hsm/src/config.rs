//! Building providers from `kiosk_config::TokenSection`: the soft token (embedded default) or
//! a PKCS#11 module with its vendor profile, and the device token/key the daemon signs with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kiosk_config::{TokenProvider as ProviderKind, TokenSection};
use zeroize::Zeroizing;

use crate::pkcs11::{Pkcs11Options, Pkcs11Provider};
use crate::profile::ProfileSet;
use crate::soft::{DEFAULT_MAX_TRIES, SoftOptions, SoftProvider};
use crate::token::{Token, TokenProvider};
use crate::{Result, TokenError};

/// Sessions per PKCS#11 token.
const DEFAULT_MAX_SESSIONS: usize = 8;

/// The device token and the label of the device key on it.
pub struct DeviceToken {
    pub provider: Arc<dyn TokenProvider>,
    pub token: Arc<dyn Token>,
    pub key_label: String,
}

fn resolve(data_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        data_dir.join(p)
    }
}

/// The configured provider. `vendor_profile` is an embedded profile name or
/// `path/to/profiles.toml#name` (override file, relative to the data directory).
pub fn open_provider(section: &TokenSection, data_dir: &Path) -> Result<Arc<dyn TokenProvider>> {
    match section.provider {
        ProviderKind::Soft => Ok(SoftProvider::open(SoftOptions {
            dir: resolve(data_dir, &section.soft_dir),
            secret: Zeroizing::new(section.soft_secret.expose().to_owned()),
            sm2_distid: section.sm2_distid.clone(),
            max_tries: DEFAULT_MAX_TRIES,
        })? as Arc<dyn TokenProvider>),
        ProviderKind::Pkcs11 => {
            let module = section.module.as_deref().ok_or_else(|| {
                TokenError::Config("token.module is required for provider = \"pkcs11\"".into())
            })?;
            let profile = resolve_profile(&section.vendor_profile, data_dir)?;
            Ok(Pkcs11Provider::open(
                module,
                Pkcs11Options {
                    profile,
                    sm2_distid: section.sm2_distid.clone(),
                    call_timeout: Duration::from_millis(section.call_timeout_ms.max(1)),
                    max_sessions: DEFAULT_MAX_SESSIONS,
                },
            )? as Arc<dyn TokenProvider>)
        }
    }
}

/// `name` (embedded profile) or `path/to/profiles.toml#name` (override file).
pub fn resolve_profile(spec: &str, data_dir: &Path) -> Result<crate::profile::VendorProfile> {
    match spec.split_once('#') {
        Some((file, name)) => {
            ProfileSet::with_override_file(&resolve(data_dir, Path::new(file)))?.get(name)
        }
        None => ProfileSet::embedded()?.get(spec),
    }
}

/// Opens the provider and the device token. For PKCS#11 the vendor profile is checked
/// against the token's mechanism list first (start-up check, clear error when it misses).
pub async fn open_from_config(section: &TokenSection, data_dir: &Path) -> Result<DeviceToken> {
    if section.provider == ProviderKind::Pkcs11 {
        let module = section.module.as_deref().ok_or_else(|| {
            TokenError::Config("token.module is required for provider = \"pkcs11\"".into())
        })?;
        let provider = Pkcs11Provider::open(
            module,
            Pkcs11Options {
                profile: resolve_profile(&section.vendor_profile, data_dir)?,
                sm2_distid: section.sm2_distid.clone(),
                call_timeout: Duration::from_millis(section.call_timeout_ms.max(1)),
                max_sessions: DEFAULT_MAX_SESSIONS,
            },
        )?;
        provider.check_profile(&section.device_token).await?;
        let token = provider.open_token(&section.device_token).await?;
        return Ok(DeviceToken {
            provider,
            token,
            key_label: section.device_key.clone(),
        });
    }
    let provider = open_provider(section, data_dir)?;
    let token = provider.open_token(&section.device_token).await?;
    Ok(DeviceToken {
        provider,
        token,
        key_label: section.device_key.clone(),
    })
}
