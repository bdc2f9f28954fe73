//! Vendor profiles as data: how each PKCS#11 token spells SM2 (key type, key-generation and
//! signing mechanisms, input and signature formats), embedded from `profiles.toml` and
//! overridable with a TOML file of the same shape; and the start-up check of a profile
//! against the token's mechanism list.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::{Result, TokenError};

const EMBEDDED: &str = include_str!("profiles.toml");

/// `CKM_EC_KEY_PAIR_GEN` and `CKM_ECDSA` (PKCS#11 2.40 numbers).
pub const CKM_EC_KEY_PAIR_GEN: u64 = 0x1040;
pub const CKM_ECDSA: u64 = 0x1041;

/// What the start-up probe signs.
pub const PROBE_MESSAGE: &[u8] = b"kioskd start-up probe: vendor profile check";

/// What an SM2 signing mechanism consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sm2SignInput {
    /// e = SM3(Z_A ‖ M), computed on the host with the configured distinguishing id.
    Digest,
    /// The message; the token computes Z_A (with its built-in id) and the hash.
    Message,
}

/// How the token returns an SM2 signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sm2SignatureFormat {
    Raw,
    Der,
}

/// SM2 numbers of one vendor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sm2Mechanisms {
    pub ckk_sm2: u64,
    pub ckm_keygen: u64,
    pub ckm_sign: u64,
    pub sign_input: Sm2SignInput,
    pub signature: Sm2SignatureFormat,
}

/// One vendor profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorProfile {
    pub name: String,
    pub description: String,
    /// `None`: the token has no SM2 (SM2 requests fail with `MechanismNotSupported`).
    pub sm2: Option<Sm2Mechanisms>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    #[serde(default)]
    description: String,
    ckk_sm2: Option<u64>,
    ckm_sm2_keygen: Option<u64>,
    ckm_sm2_sign: Option<u64>,
    sm2_sign_input: Option<Sm2SignInput>,
    sm2_signature: Option<Sm2SignatureFormat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    profiles: BTreeMap<String, RawProfile>,
}

/// All known profiles: embedded ones, then those of an override file (same name replaces).
#[derive(Debug, Clone)]
pub struct ProfileSet {
    profiles: BTreeMap<String, VendorProfile>,
}

impl ProfileSet {
    /// The embedded profiles.
    pub fn embedded() -> Result<Self> {
        let mut set = Self {
            profiles: BTreeMap::new(),
        };
        set.merge_toml(EMBEDDED, "embedded profiles.toml")?;
        Ok(set)
    }

    /// Embedded profiles overridden by a file.
    pub fn with_override_file(path: &Path) -> Result<Self> {
        let mut set = Self::embedded()?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| TokenError::Config(format!("{}: {e}", path.display())))?;
        set.merge_toml(&text, &path.display().to_string())?;
        Ok(set)
    }

    /// Adds or replaces profiles from TOML text.
    pub fn merge_toml(&mut self, text: &str, origin: &str) -> Result<()> {
        let file: ProfileFile =
            toml::from_str(text).map_err(|e| TokenError::Config(format!("{origin}: {e}")))?;
        for (name, raw) in file.profiles {
            let sm2 = match (raw.ckk_sm2, raw.ckm_sm2_keygen, raw.ckm_sm2_sign) {
                (None, None, None) => None,
                (Some(ckk_sm2), Some(ckm_keygen), Some(ckm_sign)) => Some(Sm2Mechanisms {
                    ckk_sm2,
                    ckm_keygen,
                    ckm_sign,
                    sign_input: raw.sm2_sign_input.unwrap_or(Sm2SignInput::Digest),
                    signature: raw.sm2_signature.unwrap_or(Sm2SignatureFormat::Raw),
                }),
                _ => {
                    return Err(TokenError::Config(format!(
                        "{origin}: profile {name:?} must set all of ckk_sm2, ckm_sm2_keygen, \
                         ckm_sm2_sign or none"
                    )));
                }
            };
            self.profiles.insert(
                name.clone(),
                VendorProfile {
                    name,
                    description: raw.description,
                    sm2,
                },
            );
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<VendorProfile> {
        self.profiles
            .get(name)
            .cloned()
            .ok_or_else(|| TokenError::UnknownProfile(name.to_owned()))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }
}

impl VendorProfile {
    /// Start-up check: every mechanism the profile names (and ECDSA P-256) must be in the
    /// token's mechanism list. The error lists what is missing, by name and number.
    pub fn check_mechanisms(&self, token_mechanisms: &[u64]) -> Result<()> {
        let mut wanted = vec![
            ("CKM_EC_KEY_PAIR_GEN", CKM_EC_KEY_PAIR_GEN),
            ("CKM_ECDSA", CKM_ECDSA),
        ];
        if let Some(sm2) = &self.sm2 {
            wanted.push(("SM2 key generation", sm2.ckm_keygen));
            wanted.push(("SM2 signing", sm2.ckm_sign));
        }
        let missing: Vec<String> = wanted
            .into_iter()
            .filter(|(_, m)| !token_mechanisms.contains(m))
            .map(|(name, m)| format!("{name} (0x{m:08X})"))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(TokenError::ProfileMismatch {
                profile: self.name.clone(),
                missing: missing.join(", "),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_profiles_parse_and_carry_vendor_numbers() {
        let set = ProfileSet::embedded().unwrap();
        assert!(set.get("softhsm2").unwrap().sm2.is_none());
        let sansec = set.get("sansec").unwrap().sm2.unwrap();
        assert_eq!(sansec.ckk_sm2, 0x8000_0004);
        assert_eq!(sansec.ckm_sign, 0x8000_8104);
        assert!(matches!(
            set.get("nope"),
            Err(TokenError::UnknownProfile(_))
        ));
    }

    #[test]
    fn override_replaces_and_adds_and_rejects_half_profiles() {
        let mut set = ProfileSet::embedded().unwrap();
        set.merge_toml(
            "[profiles.sansec]\nckk_sm2 = 1\nckm_sm2_keygen = 0x80000010\nckm_sm2_sign = 0x80000011\n\
             [profiles.mine]\ndescription = \"x\"\n",
            "test",
        )
        .unwrap();
        assert_eq!(set.get("sansec").unwrap().sm2.unwrap().ckk_sm2, 1);
        assert!(set.get("mine").is_ok());
        let err = set
            .merge_toml("[profiles.half]\nckk_sm2 = 1\n", "test")
            .unwrap_err();
        assert!(err.to_string().contains("half"));
    }

    #[test]
    fn mechanism_check_names_what_is_missing() {
        let set = ProfileSet::embedded().unwrap();
        let list = [CKM_EC_KEY_PAIR_GEN, CKM_ECDSA, 0x250];
        set.get("softhsm2")
            .unwrap()
            .check_mechanisms(&list)
            .unwrap();
        let err = set
            .get("sansec")
            .unwrap()
            .check_mechanisms(&list)
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("SM2 key generation (0x80008001)"), "{text}");
        assert!(text.contains("SM2 signing (0x80008104)"), "{text}");
    }
}
