//! `Token` over one PKCS#11 token: login/PIN handling, key pairs (P-256, vendor SM2), signing
//! with host-side hashing, certificates next to keys, and token-held secret keys
//! (HMAC-SHA256, AES-GCM wrapping).

use std::sync::Arc;

use async_trait::async_trait;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::module::map_error;
use super::session_pool::{CachedKey, SessionPool};
use crate::pin::Pin;
use crate::profile::{Sm2SignInput, Sm2SignatureFormat, VendorProfile};
use crate::soft_crypto;
use crate::token::Token;
use crate::types::{KeyAlgorithm, KeyInfo, SecretKeyKind, TokenInfo, UserKind};
use crate::uri::Pkcs11Uri;
use crate::{Result, TokenError, TokenSignature};

/// DER OID of prime256v1 (CKA_EC_PARAMS).
const EC_PARAMS_P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// DER OID 1.2.156.10197.1.301 (SM2 curve).
const EC_PARAMS_SM2: &[u8] = &[0x06, 0x08, 0x2A, 0x81, 0x1C, 0xCF, 0x55, 0x01, 0x82, 0x2D];
const GCM_NONCE_LEN: usize = 12;
const GCM_TAG_BITS: u64 = 128;

/// One PKCS#11 token with its session pool.
pub struct Pkcs11Token {
    pool: Arc<SessionPool>,
    profile: VendorProfile,
    distid: String,
}

fn auth(pin: &Pin) -> AuthPin {
    AuthPin::from(pin.expose())
}

fn user_type(user: UserKind) -> UserType {
    match user {
        UserKind::User => UserType::User,
        UserKind::So => UserType::So,
    }
}

/// A mechanism choice that can cross threads (`Mechanism` itself is not `Send`).
#[derive(Debug, Clone, Copy)]
enum MechanismChoice {
    EcKeyPairGen,
    Ecdsa,
    GenericSecretKeyGen,
    AesKeyGen,
    Vendor(u64),
}

impl MechanismChoice {
    fn build(self) -> Result<Mechanism<'static>> {
        Ok(match self {
            MechanismChoice::EcKeyPairGen => Mechanism::EccKeyPairGen,
            MechanismChoice::Ecdsa => Mechanism::Ecdsa,
            MechanismChoice::GenericSecretKeyGen => Mechanism::GenericSecretKeyGen,
            MechanismChoice::AesKeyGen => Mechanism::AesKeyGen,
            MechanismChoice::Vendor(value) => vendor_mechanism(value)?,
        })
    }
}

fn vendor_mechanism(value: u64) -> Result<Mechanism<'static>> {
    let mechanism = MechanismType::new_vendor_defined(value).map_err(|_| {
        TokenError::MechanismNotSupported(format!(
            "0x{value:08X} is below CKM_VENDOR_DEFINED and not a standard mechanism"
        ))
    })?;
    Ok(Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(
        mechanism, None,
    )))
}

/// Unwraps `CKA_EC_POINT` (DER OCTET STRING per the spec; some tokens return the bare point).
fn ec_point_from_attribute(algorithm: KeyAlgorithm, raw: &[u8]) -> Result<Vec<u8>> {
    if let Ok(inner) = <der::asn1::OctetString as der::Decode>::from_der(raw) {
        if let Ok(point) = soft_crypto::normalize_public_key(algorithm, inner.as_bytes()) {
            return Ok(point);
        }
    }
    soft_crypto::normalize_public_key(algorithm, raw)
}

impl Pkcs11Token {
    pub(super) fn new(pool: Arc<SessionPool>, profile: VendorProfile, distid: String) -> Self {
        Self {
            pool,
            profile,
            distid,
        }
    }

    pub(super) fn pool(&self) -> &Arc<SessionPool> {
        &self.pool
    }

    /// Adds retries/lock facts to a PIN error from the token's flags.
    async fn enrich_pin_error(&self, err: TokenError, user: UserKind) -> TokenError {
        if !matches!(err, TokenError::PinIncorrect { .. }) {
            return err;
        }
        match self.info().await {
            Ok(info) => {
                let state = if user == UserKind::So {
                    info.so_pin_state
                } else {
                    info.pin_state
                };
                match state {
                    crate::PinState::Locked => TokenError::PinLocked,
                    crate::PinState::FinalTry => TokenError::PinIncorrect {
                        retries_left: Some(1),
                    },
                    _ => err,
                }
            }
            Err(_) => err,
        }
    }

    fn algorithm_of(&self, key_type: KeyType, params: &[u8]) -> Option<KeyAlgorithm> {
        if let Some(sm2) = &self.profile.sm2 {
            if *key_type == sm2.ckk_sm2 {
                return Some(KeyAlgorithm::Sm2);
            }
        }
        if key_type == KeyType::EC {
            if params == EC_PARAMS_P256 {
                return Some(KeyAlgorithm::P256);
            }
            if params == EC_PARAMS_SM2 {
                return Some(KeyAlgorithm::Sm2);
            }
        }
        None
    }

    /// Finds key pairs (private key + public key with the same CKA_ID) on a session.
    fn find_keys_blocking(&self, session: &Session, label: Option<&str>) -> Result<Vec<CachedKey>> {
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        if let Some(label) = label {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        let handles = session.find_objects(&template).map_err(map_error)?;
        let mut keys = Vec::new();
        for private in handles.into_iter().take(1024) {
            let attrs = session
                .get_attributes(
                    private,
                    &[
                        AttributeType::Label,
                        AttributeType::Id,
                        AttributeType::KeyType,
                    ],
                )
                .map_err(map_error)?;
            let (mut label, mut id, mut key_type) = (String::new(), Vec::new(), None);
            for attr in attrs {
                match attr {
                    Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
                    Attribute::Id(i) => id = i,
                    Attribute::KeyType(k) => key_type = Some(k),
                    _ => {}
                }
            }
            let Some(key_type) = key_type else { continue };
            let public = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::Id(id.clone()),
                ])
                .map_err(map_error)?;
            let Some(&public) = public.first() else {
                continue;
            };
            let mut params = Vec::new();
            let mut point = Vec::new();
            for attr in session
                .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
                .map_err(map_error)?
            {
                match attr {
                    Attribute::EcParams(p) => params = p,
                    Attribute::EcPoint(p) => point = p,
                    _ => {}
                }
            }
            let Some(algorithm) = self.algorithm_of(key_type, &params) else {
                continue;
            };
            let Ok(public_key) = ec_point_from_attribute(algorithm, &point) else {
                continue;
            };
            let sm2_z = match algorithm {
                // A distinguishing id the token cannot use surfaces when signing.
                KeyAlgorithm::Sm2 => soft_crypto::sm2_z(&self.distid, &public_key).ok(),
                KeyAlgorithm::P256 => None,
            };
            keys.push(CachedKey {
                private,
                sm2_z,
                info: KeyInfo {
                    label,
                    id,
                    algorithm,
                    public_key,
                },
            });
        }
        Ok(keys)
    }

    /// Cached key by label, looked up on the token on a miss.
    async fn cached_key(&self, label: &str) -> Result<Arc<CachedKey>> {
        if let Some(key) = self
            .pool
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(label)
        {
            return Ok(Arc::clone(key));
        }
        let this = self.clone_handle();
        let wanted = label.to_owned();
        let found = self
            .pool
            .call(move |session, _| this.find_keys_blocking(session, Some(&wanted)))
            .await?;
        let key = Arc::new(
            found
                .into_iter()
                .next()
                .ok_or_else(|| TokenError::NoSuchKey(label.to_owned()))?,
        );
        self.pool
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(label.to_owned(), Arc::clone(&key));
        Ok(key)
    }

    fn clone_handle(&self) -> Arc<Pkcs11Token> {
        Arc::new(Pkcs11Token {
            pool: Arc::clone(&self.pool),
            profile: self.profile.clone(),
            distid: self.distid.clone(),
        })
    }

    async fn secret_key(&self, label: &str, kind_wanted: &[SecretKeyKind]) -> Result<ObjectHandle> {
        let cached = self
            .pool
            .secrets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(label)
            .copied();
        let (handle, kind) = match cached {
            Some(hit) => hit,
            None => {
                let wanted = label.to_owned();
                let hit = self
                    .pool
                    .call(move |session, _| {
                        let handles = session
                            .find_objects(&[
                                Attribute::Class(ObjectClass::SECRET_KEY),
                                Attribute::Label(wanted.as_bytes().to_vec()),
                            ])
                            .map_err(map_error)?;
                        let Some(&handle) = handles.first() else {
                            return Ok(None);
                        };
                        let attrs = session
                            .get_attributes(handle, &[AttributeType::KeyType])
                            .map_err(map_error)?;
                        let kind = match attrs.first() {
                            Some(Attribute::KeyType(k)) if *k == KeyType::AES => {
                                SecretKeyKind::Aes256Wrap
                            }
                            _ => SecretKeyKind::HmacSha256,
                        };
                        Ok(Some((handle, kind)))
                    })
                    .await?
                    .ok_or_else(|| TokenError::NoSuchKey(label.to_owned()))?;
                self.pool
                    .secrets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(label.to_owned(), hit);
                hit
            }
        };
        if !kind_wanted.contains(&kind) {
            return Err(TokenError::InvalidInput(format!(
                "key {label:?} is a {kind:?} key"
            )));
        }
        Ok(handle)
    }

    /// The mechanism, the token's input and whether it answers in DER, for signing
    /// `message` with `key` under the vendor profile.
    fn sign_plan(
        &self,
        key: &CachedKey,
        message: &[u8],
    ) -> Result<(MechanismChoice, Vec<u8>, bool)> {
        let algorithm = key.info.algorithm;
        Ok(match algorithm {
            KeyAlgorithm::P256 => (
                MechanismChoice::Ecdsa,
                soft_crypto::message_digest(algorithm, &key.info.public_key, "", message)?.to_vec(),
                false,
            ),
            KeyAlgorithm::Sm2 => {
                let sm2 = self.profile.sm2.as_ref().ok_or_else(|| {
                    TokenError::MechanismNotSupported(format!(
                        "profile {:?} has no SM2",
                        self.profile.name
                    ))
                })?;
                let input = match (sm2.sign_input, &key.sm2_z) {
                    (Sm2SignInput::Digest, Some(z)) => {
                        soft_crypto::sm2_digest_with_z(z, message).to_vec()
                    }
                    (Sm2SignInput::Digest, None) => soft_crypto::message_digest(
                        algorithm,
                        &key.info.public_key,
                        &self.distid,
                        message,
                    )?
                    .to_vec(),
                    (Sm2SignInput::Message, _) => message.to_vec(),
                };
                vendor_mechanism(sm2.ckm_sign)?;
                (
                    MechanismChoice::Vendor(sm2.ckm_sign),
                    input,
                    sm2.signature == Sm2SignatureFormat::Der,
                )
            }
        })
    }

    /// The vendor profile checked against this token's mechanism list.
    pub async fn check_mechanisms(&self) -> Result<()> {
        let profile = self.profile.clone();
        self.pool
            .call_ctx(move |pool| {
                let slot = pool.slot()?;
                profile.check_mechanisms(&super::mechanism_numbers(&pool.ctx, slot, &profile)?)
            })
            .await
    }

    /// The test signature of the start-up probe, read as the token returns it.
    async fn probe_signature(&self, key_label: &str) -> Result<()> {
        let key = self.cached_key(key_label).await?;
        let algorithm = key.info.algorithm;
        let message = crate::profile::PROBE_MESSAGE;
        let (mechanism, input, der_output) = self.sign_plan(&key, message)?;
        let ckm = match mechanism {
            MechanismChoice::Vendor(v) => v,
            _ => crate::profile::CKM_ECDSA,
        };
        let private = key.private;
        let output = self
            .pool
            .call(move |session, _| {
                session
                    .sign(&mechanism.build()?, private, &input)
                    .map_err(map_error)
            })
            .await?;
        let failed = |detail: String| TokenError::ProbeFailed {
            profile: self.profile.name.clone(),
            detail,
        };
        let raw = if der_output {
            soft_crypto::der_signature_to_raw(algorithm, &output).map_err(|_| {
                failed(format!(
                    "CKM 0x{ckm:08X} should return DER, token returned {} {}bytes",
                    output.len(),
                    if output.len() == 64 { "raw " } else { "" }
                ))
            })?
        } else if output.len() != 64 {
            let der = soft_crypto::der_signature_to_raw(algorithm, &output).is_ok();
            return Err(failed(format!(
                "CKM 0x{ckm:08X} should return raw r||s (64 bytes), token returned {} bytes{}",
                output.len(),
                if der { " of DER" } else { "" }
            )));
        } else {
            output
        };
        let input_kind = match self.profile.sm2.as_ref().map(|s| s.sign_input) {
            Some(Sm2SignInput::Digest) if algorithm == KeyAlgorithm::Sm2 => {
                "the SM3(Z_A || M) digest"
            }
            Some(Sm2SignInput::Message) if algorithm == KeyAlgorithm::Sm2 => "the message",
            _ => "the SHA-256 digest",
        };
        soft_crypto::verify(algorithm, &key.info.public_key, &self.distid, message, &raw).map_err(
            |_| {
                failed(format!(
                    "CKM 0x{ckm:08X} was given {input_kind}, but the token's signature does not \
                     verify with key {key_label:?} (distinguishing id {:?})",
                    self.distid
                ))
            },
        )
    }
}

fn is_stale_handle(rv: &str) -> bool {
    rv.contains("ObjectHandleInvalid") || rv.contains("KeyHandleInvalid")
}

/// Token facts from `C_GetTokenInfo`.
pub(super) fn token_info_from(slot: u64, info: &cryptoki::slot::TokenInfo) -> TokenInfo {
    use crate::PinState;
    let pin_state = if info.user_pin_locked() {
        PinState::Locked
    } else if info.user_pin_final_try() {
        PinState::FinalTry
    } else if info.user_pin_count_low() {
        PinState::CountLow
    } else if !info.user_pin_initialized() {
        PinState::NotInitialized
    } else if info.user_pin_to_be_changed() {
        PinState::ToBeChanged
    } else {
        PinState::Ok
    };
    let so_pin_state = if info.so_pin_locked() {
        PinState::Locked
    } else if info.so_pin_final_try() {
        PinState::FinalTry
    } else if info.so_pin_count_low() {
        PinState::CountLow
    } else {
        PinState::Ok
    };
    TokenInfo {
        label: info.label().trim().to_owned(),
        serial: info.serial_number().trim().to_owned(),
        manufacturer: info.manufacturer_id().trim().to_owned(),
        model: info.model().trim().to_owned(),
        pin_state,
        so_pin_state,
        slot: Some(slot),
        initialized: info.token_initialized(),
        login_required: info.login_required(),
        protected_authentication_path: info.protected_authentication_path(),
        user_retries_left: match pin_state {
            PinState::FinalTry => Some(1),
            PinState::Locked => Some(0),
            _ => None,
        },
    }
}

#[async_trait]
impl Token for Pkcs11Token {
    async fn info(&self) -> Result<TokenInfo> {
        self.pool
            .call_ctx(|pool| {
                let slot = pool.slot()?;
                let info = pool.ctx.get_token_info(slot).map_err(map_error)?;
                Ok(token_info_from(slot.id(), &info))
            })
            .await
    }

    async fn login(&self, user: UserKind, pin: &Pin) -> Result<()> {
        let pin = auth(pin);
        let result = self
            .pool
            .call(move |session, pool| {
                match session.login(user_type(user), Some(&pin)) {
                    Ok(()) => {}
                    Err(cryptoki::error::Error::Pkcs11(
                        cryptoki::error::RvError::UserAlreadyLoggedIn,
                        _,
                    )) => {}
                    Err(e) => return Err(map_error(e)),
                }
                pool.set_logged_in(user == UserKind::User);
                Ok(())
            })
            .await;
        match result {
            Err(e) => Err(self.enrich_pin_error(e, user).await),
            ok => ok,
        }
    }

    async fn logout(&self) -> Result<()> {
        self.pool
            .call(|session, pool| {
                pool.set_logged_in(false);
                match session.logout() {
                    Ok(())
                    | Err(cryptoki::error::Error::Pkcs11(
                        cryptoki::error::RvError::UserNotLoggedIn,
                        _,
                    )) => Ok(()),
                    Err(e) => Err(map_error(e)),
                }
            })
            .await
    }

    fn is_logged_in(&self) -> bool {
        self.pool.is_logged_in()
    }

    async fn change_pin(&self, user: UserKind, old: &Pin, new: &Pin) -> Result<()> {
        if new.is_empty() {
            return Err(TokenError::PinInvalid("empty"));
        }
        let (old_auth, new_auth) = (auth(old), auth(new));
        let result = self
            .pool
            .call(move |session, pool| {
                let was_logged_in = pool.is_logged_in();
                // C_SetPIN acts on the logged-in user, or the user in a public session.
                if user == UserKind::So {
                    match session.login(UserType::So, Some(&old_auth)) {
                        Ok(()) => {}
                        Err(e) => return Err(map_error(e)),
                    }
                }
                let result = session.set_pin(&old_auth, &new_auth).map_err(map_error);
                if user == UserKind::So {
                    let _ = session.logout();
                    pool.set_logged_in(false);
                } else {
                    pool.set_logged_in(was_logged_in);
                }
                result
            })
            .await;
        match result {
            Err(e) => Err(self.enrich_pin_error(e, user).await),
            ok => ok,
        }
    }

    async fn unblock_user_pin(&self, so_pin: &Pin, new_user_pin: &Pin) -> Result<()> {
        let (so, user) = (auth(so_pin), auth(new_user_pin));
        let result = self
            .pool
            .call(move |session, pool| {
                let _ = session.logout();
                pool.set_logged_in(false);
                session.login(UserType::So, Some(&so)).map_err(map_error)?;
                let result = session.init_pin(&user).map_err(map_error);
                let _ = session.logout();
                result
            })
            .await;
        match result {
            Err(e) => Err(self.enrich_pin_error(e, UserKind::So).await),
            ok => ok,
        }
    }

    async fn generate_key_pair(&self, label: &str, algorithm: KeyAlgorithm) -> Result<KeyInfo> {
        if label.is_empty() || label.len() > 128 {
            return Err(TokenError::InvalidInput(
                "key label must be 1..=128 bytes".into(),
            ));
        }
        let (mechanism, key_type, params) = match algorithm {
            KeyAlgorithm::P256 => (MechanismChoice::EcKeyPairGen, KeyType::EC, EC_PARAMS_P256),
            KeyAlgorithm::Sm2 => {
                let sm2 = self.profile.sm2.as_ref().ok_or_else(|| {
                    TokenError::MechanismNotSupported(format!(
                        "vendor profile {:?} names no SM2 mechanisms",
                        self.profile.name
                    ))
                })?;
                let key_type = KeyType::new_vendor_defined(sm2.ckk_sm2)
                    .or_else(|_| KeyType::try_from(sm2.ckk_sm2))
                    .map_err(|_| {
                        TokenError::MechanismNotSupported(format!("key type 0x{:08X}", sm2.ckk_sm2))
                    })?;
                vendor_mechanism(sm2.ckm_keygen)?;
                (
                    MechanismChoice::Vendor(sm2.ckm_keygen),
                    key_type,
                    EC_PARAMS_SM2,
                )
            }
        };
        let id = soft_crypto::random_bytes::<16>()?.to_vec();
        let this = self.clone_handle();
        let label_owned = label.to_owned();
        let key = self
            .pool
            .call(move |session, _| {
                if !this
                    .find_keys_blocking(session, Some(&label_owned))?
                    .is_empty()
                {
                    return Err(TokenError::KeyExists(label_owned));
                }
                let common = |extra: Vec<Attribute>| {
                    let mut t = vec![
                        Attribute::Token(true),
                        Attribute::KeyType(key_type),
                        Attribute::Label(label_owned.as_bytes().to_vec()),
                        Attribute::Id(id.clone()),
                    ];
                    t.extend(extra);
                    t
                };
                let public_template = common(vec![
                    Attribute::Verify(true),
                    Attribute::EcParams(params.to_vec()),
                    Attribute::Private(false),
                ]);
                let private_template = common(vec![
                    Attribute::Sign(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                ]);
                session
                    .generate_key_pair(&mechanism.build()?, &public_template, &private_template)
                    .map_err(map_error)?;
                this.find_keys_blocking(session, Some(&label_owned))?
                    .into_iter()
                    .next()
                    .ok_or_else(|| TokenError::NoSuchKey(label_owned.clone()))
            })
            .await?;
        let info = key.info.clone();
        self.pool
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(label.to_owned(), Arc::new(key));
        Ok(info)
    }

    async fn find_keys(&self, filter: &Pkcs11Uri) -> Result<Vec<KeyInfo>> {
        let this = self.clone_handle();
        let label = filter.object.clone();
        let keys = self
            .pool
            .call(move |session, _| this.find_keys_blocking(session, label.as_deref()))
            .await?;
        Ok(keys
            .into_iter()
            .map(|k| k.info)
            .filter(|k| filter.matches_key(k))
            .collect())
    }

    async fn sign(&self, key_label: &str, message: &[u8]) -> Result<TokenSignature> {
        let key = self.cached_key(key_label).await?;
        let algorithm = key.info.algorithm;
        let (mechanism, input, der_output) = self.sign_plan(&key, message)?;
        let sign_with = |private: ObjectHandle, input: Vec<u8>| {
            self.pool.call(move |session, _| {
                session
                    .sign(&mechanism.build()?, private, &input)
                    .map_err(map_error)
            })
        };
        let output = match sign_with(key.private, input.clone()).await {
            Err(TokenError::Pkcs11 { ref rv, .. }) if is_stale_handle(rv) => {
                // The cached handle went stale: the token was pulled (then `info` fails and the
                // pool resets) or re-personalised. Refresh the handle once: not a PIN retry.
                self.pool
                    .keys
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(key_label);
                self.info().await?;
                let fresh = self.cached_key(key_label).await?;
                sign_with(fresh.private, input).await?
            }
            other => other?,
        };
        let raw = if der_output {
            soft_crypto::der_signature_to_raw(algorithm, &output)?
        } else {
            output
        };
        Ok(TokenSignature { algorithm, raw })
    }

    fn sm2_distid(&self) -> &str {
        &self.distid
    }

    async fn probe(&self, key_label: Option<&str>) -> Result<()> {
        match key_label {
            None => self.check_mechanisms().await,
            Some(label) => self.probe_signature(label).await,
        }
    }

    async fn write_certificate(&self, key_label: &str, cert_der: &[u8]) -> Result<()> {
        let key = self.cached_key(key_label).await?;
        let parsed = crate::csr::parse_certificate(cert_der)?;
        if parsed.public_key != key.info.public_key {
            return Err(TokenError::InvalidInput(
                "certificate public key is not the key's".into(),
            ));
        }
        let cert = cert_der.to_vec();
        let label = key_label.to_owned();
        self.pool
            .call(move |session, _| {
                let old = session
                    .find_objects(&[
                        Attribute::Class(ObjectClass::CERTIFICATE),
                        Attribute::Id(key.info.id.clone()),
                    ])
                    .map_err(map_error)?;
                for handle in old {
                    session.destroy_object(handle).map_err(map_error)?;
                }
                session
                    .create_object(&[
                        Attribute::Class(ObjectClass::CERTIFICATE),
                        Attribute::CertificateType(CertificateType::X_509),
                        Attribute::Token(true),
                        Attribute::Private(false),
                        Attribute::Label(label.into_bytes()),
                        Attribute::Id(key.info.id.clone()),
                        Attribute::Subject(parsed.subject_der),
                        Attribute::Value(cert),
                    ])
                    .map_err(map_error)?;
                Ok(())
            })
            .await
    }

    async fn read_certificate(&self, key_label: &str) -> Result<Option<Vec<u8>>> {
        let key = self.cached_key(key_label).await?;
        self.pool
            .call(move |session, _| {
                let found = session
                    .find_objects(&[
                        Attribute::Class(ObjectClass::CERTIFICATE),
                        Attribute::Id(key.info.id.clone()),
                    ])
                    .map_err(map_error)?;
                let Some(&handle) = found.first() else {
                    return Ok(None);
                };
                let attrs = session
                    .get_attributes(handle, &[AttributeType::Value])
                    .map_err(map_error)?;
                Ok(attrs.into_iter().find_map(|a| match a {
                    Attribute::Value(v) => Some(v),
                    _ => None,
                }))
            })
            .await
    }

    async fn generate_secret_key(&self, label: &str, kind: SecretKeyKind) -> Result<()> {
        let (mechanism, key_type, usage) = match kind {
            SecretKeyKind::HmacSha256 => (
                MechanismChoice::GenericSecretKeyGen,
                KeyType::GENERIC_SECRET,
                vec![Attribute::Sign(true), Attribute::Verify(true)],
            ),
            SecretKeyKind::Aes256Wrap => (
                MechanismChoice::AesKeyGen,
                KeyType::AES,
                vec![Attribute::Encrypt(true), Attribute::Decrypt(true)],
            ),
            SecretKeyKind::HmacSm3 => {
                return Err(TokenError::MechanismNotSupported(
                    "HMAC-SM3 on PKCS#11 tokens".into(),
                ));
            }
        };
        let label = label.to_owned();
        self.pool
            .call(move |session, _| {
                let existing = session
                    .find_objects(&[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::Label(label.as_bytes().to_vec()),
                    ])
                    .map_err(map_error)?;
                if !existing.is_empty() {
                    return Err(TokenError::KeyExists(label));
                }
                let mut template = vec![
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(key_type),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::ValueLen(32u64.into()),
                    Attribute::Label(label.into_bytes()),
                ];
                template.extend(usage);
                session
                    .generate_key(&mechanism.build()?, &template)
                    .map_err(map_error)?;
                Ok(())
            })
            .await
    }

    async fn hmac(&self, key_label: &str, data: &[u8]) -> Result<Vec<u8>> {
        let handle = self
            .secret_key(key_label, &[SecretKeyKind::HmacSha256])
            .await?;
        let data = data.to_vec();
        self.pool
            .call(move |session, _| {
                session
                    .sign(&Mechanism::Sha256Hmac, handle, &data)
                    .map_err(map_error)
            })
            .await
    }

    async fn wrap_key(&self, key_label: &str, data_key: &[u8]) -> Result<Vec<u8>> {
        let handle = self
            .secret_key(key_label, &[SecretKeyKind::Aes256Wrap])
            .await?;
        let data = Zeroizing::new(data_key.to_vec());
        let nonce = soft_crypto::random_bytes::<GCM_NONCE_LEN>()?;
        self.pool
            .call(move |session, _| {
                let mut iv = nonce;
                let params =
                    GcmParams::new(&mut iv, &[], GCM_TAG_BITS.into()).map_err(map_error)?;
                let sealed = session
                    .encrypt(&Mechanism::AesGcm(params), handle, &data)
                    .map_err(map_error)?;
                Ok([nonce.to_vec(), sealed].concat())
            })
            .await
    }

    async fn unwrap_key(&self, key_label: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let handle = self
            .secret_key(key_label, &[SecretKeyKind::Aes256Wrap])
            .await?;
        if wrapped.len() < GCM_NONCE_LEN + 16 {
            return Err(TokenError::InvalidInput("wrapped key too short".into()));
        }
        let (nonce, sealed) = wrapped.split_at(GCM_NONCE_LEN);
        let mut iv = [0u8; GCM_NONCE_LEN];
        iv.copy_from_slice(nonce);
        let sealed = sealed.to_vec();
        self.pool
            .call(move |session, _| {
                let params =
                    GcmParams::new(&mut iv, &[], GCM_TAG_BITS.into()).map_err(map_error)?;
                session
                    .decrypt(&Mechanism::AesGcm(params), handle, &sealed)
                    .map(Zeroizing::new)
                    .map_err(|e| match map_error(e) {
                        TokenError::Pkcs11 { .. } => {
                            TokenError::InvalidInput("wrapped key does not open".into())
                        }
                        other => other,
                    })
            })
            .await
    }
}
