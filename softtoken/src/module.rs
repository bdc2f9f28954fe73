//! The module's state behind the C entry points: slots with their persisted tokens, login
//! state (per token, shared by its sessions, as PKCS#11 says), sessions with their search,
//! sign and verify operations, and objects. All of it sits behind one mutex in `ffi`; only
//! signing and verifying run outside it (on `Arc`ed keys), so many sessions sign at once.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use cryptoki_sys::*;
use zeroize::Zeroizing;

use crate::crypto::{self, CryptoError, Curve, EC_PARAMS_P256, EC_PARAMS_SM2};
use crate::store::{Config, PinRecord, Role, StoreError, StoredObject, TokenFile};
use crate::vendor::{self, SigFormat, Sm2Family, Sm2SignMechanism};

/// A PKCS#11 return code as an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("CK_RV 0x{0:08X}")]
pub struct Ck(pub CK_RV);

pub type R<T> = Result<T, Ck>;

impl From<StoreError> for Ck {
    fn from(_: StoreError) -> Self {
        Ck(CKR_DEVICE_ERROR)
    }
}

impl From<CryptoError> for Ck {
    fn from(e: CryptoError) -> Self {
        Ck(match e {
            CryptoError::InputLength => CKR_DATA_LEN_RANGE,
            CryptoError::BadSignature => CKR_SIGNATURE_INVALID,
            CryptoError::SignatureEncoding => CKR_SIGNATURE_LEN_RANGE,
            CryptoError::IdTooLong => CKR_MECHANISM_PARAM_INVALID,
            CryptoError::Rng | CryptoError::BadKey | CryptoError::Signing => CKR_FUNCTION_FAILED,
        })
    }
}

/// The module's own mechanism (no vendor numbers one) for `C_UnwrapKey` of a GM/T 0016
/// `ENVELOPEDKEYBLOB`: an SM2 key pair whose private key is SM4-ECB-encrypted under a random
/// key that is SM2-encrypted to the unwrapping key (an SM2 private key with `CKA_UNWRAP`).
pub const CKM_KIOSK_SM2_ENVELOPE: CK_MECHANISM_TYPE = 0xC105_0001;

/// Object handles: `(slot + 1) << 40 | id`; session objects have bit 39 set in `id`.
const SLOT_SHIFT: u32 = 40;
const SESSION_OBJECT: u64 = 1 << 39;
const MAX_PIN_LEN: usize = 64;

pub fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn boolean(b: bool) -> Vec<u8> {
    vec![u8::from(b)]
}

fn get_ulong(attrs: &BTreeMap<u64, Vec<u8>>, t: CK_ATTRIBUTE_TYPE) -> Option<CK_ULONG> {
    let v = attrs.get(&t)?;
    Some(CK_ULONG::from_ne_bytes(v.as_slice().try_into().ok()?))
}

fn get_bool(attrs: &BTreeMap<u64, Vec<u8>>, t: CK_ATTRIBUTE_TYPE) -> Option<bool> {
    match attrs.get(&t)?.as_slice() {
        [b] => Some(*b != 0),
        _ => None,
    }
}

fn template_map(template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> R<BTreeMap<u64, Vec<u8>>> {
    let mut map = BTreeMap::new();
    for (t, v) in template {
        if map.insert(*t, v.clone()).is_some() {
            return Err(Ck(CKR_TEMPLATE_INCONSISTENT));
        }
    }
    // Booleans and CK_ULONGs must have their sizes.
    for (t, v) in &map {
        let is_bool = matches!(
            *t,
            CKA_TOKEN
                | CKA_PRIVATE
                | CKA_MODIFIABLE
                | CKA_SIGN
                | CKA_VERIFY
                | CKA_SENSITIVE
                | CKA_EXTRACTABLE
                | CKA_DERIVE
                | CKA_ENCRYPT
                | CKA_DECRYPT
                | CKA_WRAP
                | CKA_UNWRAP
        );
        let is_ulong = matches!(
            *t,
            CKA_CLASS | CKA_KEY_TYPE | CKA_CERTIFICATE_TYPE | CKA_VALUE_LEN
        );
        if (is_bool && v.len() != 1) || (is_ulong && v.len() != std::mem::size_of::<CK_ULONG>()) {
            return Err(Ck(CKR_ATTRIBUTE_VALUE_INVALID));
        }
    }
    Ok(map)
}

/// What a sign or verify operation does.
#[derive(Clone, Copy)]
pub enum OpKind {
    Ecdsa,
    EcdsaSha256,
    Sm2(Sm2SignMechanism),
    HmacSha256,
}

/// The parameters of CKM_AES_GCM (CK_GCM_PARAMS), copied out of the caller's memory.
pub struct GcmParams {
    pub iv: Vec<u8>,
    pub aad: Vec<u8>,
    pub tag_bits: CK_ULONG,
}

/// An AES-GCM encrypt or decrypt operation.
#[derive(Clone)]
pub struct CryptOp {
    pub encrypt: bool,
    pub key: Arc<crypto::SigningKey>,
    pub iv: [u8; 12],
    pub aad: Vec<u8>,
}

impl CryptOp {
    /// Output length for an input of `n` bytes (tag appended or removed).
    pub fn out_len(&self, n: usize) -> usize {
        if self.encrypt {
            n + 16
        } else {
            n.saturating_sub(16)
        }
    }

    pub fn run(&self, data: &[u8]) -> R<Vec<u8>> {
        self.key
            .aes_gcm(self.encrypt, &self.iv, &self.aad, data)
            .map_err(|e| match e {
                CryptoError::BadSignature => Ck(CKR_ENCRYPTED_DATA_INVALID),
                _ => Ck(CKR_FUNCTION_FAILED),
            })
    }
}

/// A sign operation: its key and accumulated input (for `C_SignUpdate`).
#[derive(Clone)]
pub struct SignOp {
    pub kind: OpKind,
    pub id: Option<Vec<u8>>,
    pub key: Arc<crypto::SigningKey>,
    pub buffer: Vec<u8>,
}

#[derive(Clone)]
pub struct VerifyOp {
    pub kind: OpKind,
    pub id: Option<Vec<u8>>,
    pub key: Arc<crypto::VerifyingKey>,
    pub buffer: Vec<u8>,
}

impl SignOp {
    pub fn max_len(&self) -> usize {
        match self.kind {
            OpKind::Sm2(m) if m.format == SigFormat::Der => 72,
            OpKind::HmacSha256 => 32,
            _ => 64,
        }
    }

    pub fn sign(&self, data: &[u8]) -> R<Vec<u8>> {
        Ok(match self.kind {
            OpKind::Ecdsa => self.key.ecdsa_prehash(data)?,
            OpKind::EcdsaSha256 => self.key.ecdsa_sha256(data)?,
            OpKind::Sm2(m) => self
                .key
                .sm2_sign(m.input, m.format, self.id.as_deref(), data)?,
            OpKind::HmacSha256 => self.key.hmac_sha256(data)?,
        })
    }
}

impl VerifyOp {
    pub fn verify(&self, data: &[u8], sig: &[u8]) -> R<()> {
        use sha2::Digest;
        match self.kind {
            OpKind::Ecdsa => self.key.ecdsa_prehash(data, sig)?,
            OpKind::EcdsaSha256 => self.key.ecdsa_prehash(&sha2::Sha256::digest(data), sig)?,
            OpKind::Sm2(m) => {
                self.key
                    .sm2_verify(m.input, m.format, self.id.as_deref(), data, sig)?
            }
            OpKind::HmacSha256 => return Err(Ck(CKR_MECHANISM_INVALID)),
        }
        Ok(())
    }
}

pub struct Session {
    slot: usize,
    rw: bool,
    find: Option<Vec<CK_OBJECT_HANDLE>>,
    sign: Option<SignOp>,
    verify: Option<VerifyOp>,
    crypt: Option<CryptOp>,
}

struct Slot {
    family: Option<&'static Sm2Family>,
    profile: String,
    /// `None`: the slot file is damaged or was edited.
    file: Option<TokenFile>,
    login: Option<Role>,
    master: Option<Zeroizing<Vec<u8>>>,
    session_objects: BTreeMap<u64, (CK_SESSION_HANDLE, StoredObject)>,
    next_session_object: u64,
    signers: HashMap<u64, Arc<crypto::SigningKey>>,
}

impl Slot {
    fn file(&self) -> R<&TokenFile> {
        self.file.as_ref().ok_or(Ck(CKR_DEVICE_ERROR))
    }

    fn file_mut(&mut self) -> R<&mut TokenFile> {
        self.file.as_mut().ok_or(Ck(CKR_DEVICE_ERROR))
    }

    fn logout(&mut self) {
        self.login = None;
        self.master = None;
        self.signers.clear();
    }

    fn object(&self, id: u64) -> Option<&StoredObject> {
        if id & SESSION_OBJECT != 0 {
            self.session_objects.get(&id).map(|(_, o)| o)
        } else {
            self.file.as_ref()?.objects.get(&id)
        }
    }

    fn visible(&self, object: &StoredObject) -> bool {
        !get_bool(&object.attrs, CKA_PRIVATE).unwrap_or(false) || self.login == Some(Role::User)
    }
}

pub struct Module {
    dir: PathBuf,
    config: Config,
    integrity: Zeroizing<Vec<u8>>,
    slots: Vec<Slot>,
    sessions: HashMap<CK_SESSION_HANDLE, Session>,
    next_session: CK_SESSION_HANDLE,
}

/// Token facts as `C_GetTokenInfo` reports them.
pub struct TokenFacts {
    pub label: String,
    pub serial: String,
    pub model: String,
    pub flags: CK_FLAGS,
    pub sessions: usize,
    pub rw_sessions: usize,
    pub min_pin: usize,
}

/// One attribute answer of `C_GetAttributeValue`.
pub enum AttrValue<'a> {
    Value(&'a [u8]),
    Sensitive,
    Invalid,
}

impl Module {
    /// Opens the directory named by `KIOSK_SOFTTOKEN_DIR`.
    pub fn open_from_env() -> R<Self> {
        let dir = std::env::var_os("KIOSK_SOFTTOKEN_DIR").ok_or(Ck(CKR_GENERAL_ERROR))?;
        Self::open(PathBuf::from(dir))
    }

    pub fn open(dir: PathBuf) -> R<Self> {
        std::fs::create_dir_all(&dir).map_err(|_| Ck(CKR_GENERAL_ERROR))?;
        let config = Config::load_or_create(&dir).map_err(|_| Ck(CKR_GENERAL_ERROR))?;
        let integrity = crate::store::integrity_key(&dir).map_err(|_| Ck(CKR_GENERAL_ERROR))?;
        let mut slots = Vec::new();
        for index in 0..config.slots {
            let profile = config.profile_of(index).to_owned();
            let family = vendor::family_for_profile(&profile).map_err(|_| Ck(CKR_GENERAL_ERROR))?;
            slots.push(Slot {
                family,
                profile,
                file: TokenFile::load(&dir, index, &integrity).ok(),
                login: None,
                master: None,
                session_objects: BTreeMap::new(),
                next_session_object: SESSION_OBJECT | 1,
                signers: HashMap::new(),
            });
        }
        Ok(Self {
            dir,
            config,
            integrity,
            slots,
            sessions: HashMap::new(),
            next_session: 1,
        })
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    fn slot_index(&self, slot: CK_SLOT_ID) -> R<usize> {
        usize::try_from(slot)
            .ok()
            .filter(|s| *s < self.slots.len())
            .ok_or(Ck(CKR_SLOT_ID_INVALID))
    }

    fn sessions_on(&self, slot: usize) -> impl Iterator<Item = &Session> {
        self.sessions.values().filter(move |s| s.slot == slot)
    }

    /// Re-reads an idle slot's file (another process may have changed it).
    fn refresh(&mut self, slot: usize) {
        if self.sessions_on(slot).next().is_none() {
            let s = &mut self.slots[slot];
            s.logout();
            s.file = TokenFile::load(&self.dir, slot, &self.integrity).ok();
        }
    }

    fn save(&self, slot: usize) -> R<()> {
        self.slots[slot]
            .file()?
            .save(&self.dir, slot, &self.integrity)?;
        Ok(())
    }

    pub fn slot_description(&self, slot: CK_SLOT_ID) -> R<String> {
        let i = self.slot_index(slot)?;
        Ok(format!(
            "kiosk softtoken slot {i} ({})",
            self.slots[i].profile
        ))
    }

    pub fn token_facts(&mut self, slot: CK_SLOT_ID) -> R<TokenFacts> {
        let i = self.slot_index(slot)?;
        self.refresh(i);
        let s = &self.slots[i];
        let file = s.file()?;
        let mut flags = CKF_RNG | CKF_LOGIN_REQUIRED;
        if file.initialized {
            flags |= CKF_TOKEN_INITIALIZED;
        }
        if file.user.is_some() {
            flags |= CKF_USER_PIN_INITIALIZED;
            flags |= pin_flags(
                file.user_failures,
                self.config.user_pin_max_attempts,
                CKF_USER_PIN_COUNT_LOW,
                CKF_USER_PIN_FINAL_TRY,
                CKF_USER_PIN_LOCKED,
            );
            if file.user_pin_to_be_changed {
                flags |= CKF_USER_PIN_TO_BE_CHANGED;
            }
        }
        if file.initialized {
            flags |= pin_flags(
                file.so_failures,
                self.config.so_pin_max_attempts,
                CKF_SO_PIN_COUNT_LOW,
                CKF_SO_PIN_FINAL_TRY,
                CKF_SO_PIN_LOCKED,
            );
        }
        Ok(TokenFacts {
            label: file.label.clone(),
            serial: file.serial.clone(),
            model: format!("softtoken {}", s.family.map_or("p256", |f| f.name)),
            flags,
            sessions: self.sessions_on(i).count(),
            rw_sessions: self.sessions_on(i).filter(|s| s.rw).count(),
            min_pin: self.config.min_pin_len,
        })
    }

    /// `(mechanism, min key bits, max key bits, flags)` of a slot.
    pub fn mechanisms(&self, slot: CK_SLOT_ID) -> R<Vec<(CK_MECHANISM_TYPE, CK_FLAGS)>> {
        let i = self.slot_index(slot)?;
        let ec = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;
        let mut out = vec![
            (CKM_EC_KEY_PAIR_GEN, CKF_GENERATE_KEY_PAIR | ec),
            (CKM_ECDSA, CKF_SIGN | CKF_VERIFY | ec),
            (CKM_ECDSA_SHA256, CKF_SIGN | CKF_VERIFY | ec),
            (CKM_GENERIC_SECRET_KEY_GEN, CKF_GENERATE),
            (CKM_SHA256_HMAC, CKF_SIGN),
            (CKM_AES_KEY_GEN, CKF_GENERATE),
            (CKM_AES_GCM, CKF_ENCRYPT | CKF_DECRYPT),
        ];
        if let Some(f) = self.slots[i].family {
            out.push((f.ckm_keygen, CKF_GENERATE_KEY_PAIR));
            for m in f.sign {
                out.push((m.ckm, CKF_SIGN | CKF_VERIFY));
            }
            out.push((CKM_KIOSK_SM2_ENVELOPE, CKF_UNWRAP));
        }
        Ok(out)
    }

    fn check_pin_len(&self, pin: &[u8]) -> R<()> {
        if pin.len() < self.config.min_pin_len || pin.len() > MAX_PIN_LEN {
            return Err(Ck(CKR_PIN_LEN_RANGE));
        }
        Ok(())
    }

    /// Checks a PIN against the token's record, counting the failure (persisted before the
    /// answer) or clearing the count; returns the master key.
    fn check_pin(&mut self, slot: usize, role: Role, pin: &[u8]) -> R<Zeroizing<Vec<u8>>> {
        let max = match role {
            Role::So => self.config.so_pin_max_attempts,
            Role::User => self.config.user_pin_max_attempts,
        };
        let file = self.slots[slot].file_mut()?;
        if !file.initialized {
            return Err(Ck(CKR_TOKEN_NOT_RECOGNIZED));
        }
        let (record, failures) = match role {
            Role::So => (file.so.as_ref(), file.so_failures),
            Role::User => (file.user.as_ref(), file.user_failures),
        };
        let record = record.ok_or(Ck(CKR_USER_PIN_NOT_INITIALIZED))?;
        if failures >= max {
            return Err(Ck(CKR_PIN_LOCKED));
        }
        let opened = record.open(role, &file.serial, pin);
        let counter = match role {
            Role::So => &mut file.so_failures,
            Role::User => &mut file.user_failures,
        };
        match opened {
            Some(master) => {
                if *counter != 0 {
                    *counter = 0;
                    self.save(slot)?;
                }
                Ok(master)
            }
            None => {
                *counter += 1;
                let locked = *counter >= max;
                self.save(slot)?;
                Err(Ck(if locked {
                    CKR_PIN_LOCKED
                } else {
                    CKR_PIN_INCORRECT
                }))
            }
        }
    }

    pub fn init_token(&mut self, slot: CK_SLOT_ID, so_pin: &[u8], label: &str) -> R<()> {
        let i = self.slot_index(slot)?;
        if self.sessions_on(i).next().is_some() {
            return Err(Ck(CKR_SESSION_EXISTS));
        }
        self.refresh(i);
        self.check_pin_len(so_pin)?;
        if self.slots[i].file()?.initialized {
            self.check_pin(i, Role::So, so_pin)?;
        }
        let master = Zeroizing::new(crypto::random::<32>()?.to_vec());
        let iterations = self.config.kdf_iterations;
        let s = &mut self.slots[i];
        s.logout();
        s.session_objects.clear();
        let file = s.file_mut()?;
        file.so = Some(PinRecord::new(
            Role::So,
            &file.serial,
            so_pin,
            &master,
            iterations,
        )?);
        file.user = None;
        file.so_failures = 0;
        file.user_failures = 0;
        file.user_pin_to_be_changed = false;
        file.objects.clear();
        file.label = label.trim_end_matches([' ', '\0']).to_owned();
        file.initialized = true;
        self.save(i)
    }

    fn session(&self, h: CK_SESSION_HANDLE) -> R<&Session> {
        self.sessions.get(&h).ok_or(Ck(CKR_SESSION_HANDLE_INVALID))
    }

    fn session_mut(&mut self, h: CK_SESSION_HANDLE) -> R<&mut Session> {
        self.sessions
            .get_mut(&h)
            .ok_or(Ck(CKR_SESSION_HANDLE_INVALID))
    }

    pub fn open_session(&mut self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> R<CK_SESSION_HANDLE> {
        let i = self.slot_index(slot)?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Ck(CKR_SESSION_PARALLEL_NOT_SUPPORTED));
        }
        self.refresh(i);
        if !self.slots[i].file()?.initialized {
            return Err(Ck(CKR_TOKEN_NOT_RECOGNIZED));
        }
        let rw = flags & CKF_RW_SESSION != 0;
        if !rw && self.slots[i].login == Some(Role::So) {
            return Err(Ck(CKR_SESSION_READ_WRITE_SO_EXISTS));
        }
        let h = self.next_session;
        self.next_session += 1;
        self.sessions.insert(
            h,
            Session {
                slot: i,
                rw,
                find: None,
                sign: None,
                verify: None,
                crypt: None,
            },
        );
        Ok(h)
    }

    pub fn close_session(&mut self, h: CK_SESSION_HANDLE) -> R<()> {
        let session = self
            .sessions
            .remove(&h)
            .ok_or(Ck(CKR_SESSION_HANDLE_INVALID))?;
        let slot = session.slot;
        self.slots[slot]
            .session_objects
            .retain(|_, (owner, _)| *owner != h);
        if self.sessions_on(slot).next().is_none() {
            self.slots[slot].logout();
        }
        Ok(())
    }

    pub fn close_all_sessions(&mut self, slot: CK_SLOT_ID) -> R<()> {
        let i = self.slot_index(slot)?;
        self.sessions.retain(|_, s| s.slot != i);
        let s = &mut self.slots[i];
        s.session_objects.clear();
        s.logout();
        Ok(())
    }

    /// `(slot, state, flags)`.
    pub fn session_info(&self, h: CK_SESSION_HANDLE) -> R<(CK_SLOT_ID, CK_STATE, CK_FLAGS)> {
        let s = self.session(h)?;
        let state = match (self.slots[s.slot].login, s.rw) {
            (None, false) => CKS_RO_PUBLIC_SESSION,
            (None, true) => CKS_RW_PUBLIC_SESSION,
            (Some(Role::User), false) => CKS_RO_USER_FUNCTIONS,
            (Some(Role::User), true) => CKS_RW_USER_FUNCTIONS,
            (Some(Role::So), _) => CKS_RW_SO_FUNCTIONS,
        };
        let mut flags = CKF_SERIAL_SESSION;
        if s.rw {
            flags |= CKF_RW_SESSION;
        }
        Ok((s.slot as CK_SLOT_ID, state, flags))
    }

    pub fn login(&mut self, h: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &[u8]) -> R<()> {
        let slot = self.session(h)?.slot;
        let role = match user {
            CKU_SO => Role::So,
            CKU_USER => Role::User,
            CKU_CONTEXT_SPECIFIC => return Err(Ck(CKR_OPERATION_NOT_INITIALIZED)),
            _ => return Err(Ck(CKR_USER_TYPE_INVALID)),
        };
        match self.slots[slot].login {
            Some(r) if r == role => return Err(Ck(CKR_USER_ALREADY_LOGGED_IN)),
            Some(_) => return Err(Ck(CKR_USER_ANOTHER_ALREADY_LOGGED_IN)),
            None => {}
        }
        if role == Role::So && self.sessions_on(slot).any(|s| !s.rw) {
            return Err(Ck(CKR_SESSION_READ_ONLY_EXISTS));
        }
        let master = self.check_pin(slot, role, pin)?;
        let s = &mut self.slots[slot];
        s.login = Some(role);
        s.master = Some(master);
        Ok(())
    }

    pub fn logout(&mut self, h: CK_SESSION_HANDLE) -> R<()> {
        let slot = self.session(h)?.slot;
        if self.slots[slot].login.is_none() {
            return Err(Ck(CKR_USER_NOT_LOGGED_IN));
        }
        self.slots[slot].logout();
        for s in self.sessions.values_mut().filter(|s| s.slot == slot) {
            s.sign = None;
            s.verify = None;
            s.find = None;
            s.crypt = None;
        }
        Ok(())
    }

    pub fn init_pin(&mut self, h: CK_SESSION_HANDLE, pin: &[u8]) -> R<()> {
        let session = self.session(h)?;
        let slot = session.slot;
        if !session.rw {
            return Err(Ck(CKR_SESSION_READ_ONLY));
        }
        if self.slots[slot].login != Some(Role::So) {
            return Err(Ck(CKR_USER_NOT_LOGGED_IN));
        }
        self.check_pin_len(pin)?;
        let (iterations, to_change) = (
            self.config.kdf_iterations,
            self.config.user_pin_change_after_so_reset,
        );
        self.set_user_record(slot, pin, iterations, to_change, None)
    }

    fn set_user_record(
        &mut self,
        slot: usize,
        pin: &[u8],
        iterations: u32,
        to_be_changed: bool,
        master: Option<Zeroizing<Vec<u8>>>,
    ) -> R<()> {
        let s = &mut self.slots[slot];
        let master = match master {
            Some(m) => m,
            None => s.master.clone().ok_or(Ck(CKR_USER_NOT_LOGGED_IN))?,
        };
        let file = s.file_mut()?;
        file.user = Some(PinRecord::new(
            Role::User,
            &file.serial,
            pin,
            &master,
            iterations,
        )?);
        file.user_failures = 0;
        file.user_pin_to_be_changed = to_be_changed;
        self.save(slot)
    }

    /// `C_SetPIN`: the logged-in user's (or SO's) PIN. In a public session it changes the user
    /// PIN; while the user PIN is locked, the old PIN must be the SO PIN (PUK style, as
    /// `pkcs11-tool --unlock-pin --puk SO --new-pin NEW` sends it) and resets the user PIN.
    pub fn set_pin(&mut self, h: CK_SESSION_HANDLE, old: &[u8], new: &[u8]) -> R<()> {
        let session = self.session(h)?;
        let slot = session.slot;
        if !session.rw {
            return Err(Ck(CKR_SESSION_READ_ONLY));
        }
        self.check_pin_len(new)?;
        let iterations = self.config.kdf_iterations;
        match self.slots[slot].login {
            Some(Role::So) => {
                let master = self.check_pin(slot, Role::So, old)?;
                let file = self.slots[slot].file_mut()?;
                file.so = Some(PinRecord::new(
                    Role::So,
                    &file.serial,
                    new,
                    &master,
                    iterations,
                )?);
                self.save(slot)
            }
            Some(Role::User) => {
                let master = self.check_pin(slot, Role::User, old)?;
                self.set_user_record(slot, new, iterations, false, Some(master))
            }
            None => {
                let file = self.slots[slot].file()?;
                let user_locked =
                    file.user.is_none() || file.user_failures >= self.config.user_pin_max_attempts;
                if user_locked {
                    let master = self.check_pin(slot, Role::So, old)?;
                    self.set_user_record(slot, new, iterations, false, Some(master))
                } else {
                    let master = self.check_pin(slot, Role::User, old)?;
                    self.set_user_record(slot, new, iterations, false, Some(master))
                }
            }
        }
    }

    fn split_handle(&self, handle: CK_OBJECT_HANDLE, slot: usize) -> R<u64> {
        let object_slot = (handle >> SLOT_SHIFT) as usize;
        if object_slot != slot + 1 {
            return Err(Ck(CKR_OBJECT_HANDLE_INVALID));
        }
        Ok(handle & ((1 << SLOT_SHIFT) - 1))
    }

    fn handle_of(slot: usize, id: u64) -> CK_OBJECT_HANDLE {
        ((slot as u64 + 1) << SLOT_SHIFT) | id
    }

    /// The visible object behind a handle in a session: `(slot, id, object)`.
    fn object(
        &self,
        h: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
    ) -> R<(usize, u64, &StoredObject)> {
        let slot = self.session(h)?.slot;
        let id = self.split_handle(handle, slot)?;
        let s = &self.slots[slot];
        let object = s.object(id).ok_or(Ck(CKR_OBJECT_HANDLE_INVALID))?;
        if !s.visible(object) {
            return Err(Ck(CKR_OBJECT_HANDLE_INVALID));
        }
        Ok((slot, id, object))
    }

    /// Stores a new object on the token (`CKA_TOKEN`) or in the session.
    fn insert(&mut self, h: CK_SESSION_HANDLE, object: StoredObject) -> R<CK_OBJECT_HANDLE> {
        let session = self.session(h)?;
        let slot = session.slot;
        let on_token = get_bool(&object.attrs, CKA_TOKEN).unwrap_or(false);
        if on_token && !session.rw {
            return Err(Ck(CKR_SESSION_READ_ONLY));
        }
        if get_bool(&object.attrs, CKA_PRIVATE).unwrap_or(false)
            && self.slots[slot].login != Some(Role::User)
        {
            return Err(Ck(CKR_USER_NOT_LOGGED_IN));
        }
        let s = &mut self.slots[slot];
        let id = if on_token {
            let file = s.file_mut()?;
            let id = file.next_object_id;
            file.next_object_id += 1;
            file.objects.insert(id, object);
            self.save(slot)?;
            id
        } else {
            let id = s.next_session_object;
            s.next_session_object += 1;
            s.session_objects.insert(id, (h, object));
            id
        };
        Ok(Self::handle_of(slot, id))
    }

    pub fn create_object(
        &mut self,
        h: CK_SESSION_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> R<CK_OBJECT_HANDLE> {
        let given = template_map(template)?;
        let class = get_ulong(&given, CKA_CLASS).ok_or(Ck(CKR_TEMPLATE_INCOMPLETE))?;
        let mut attrs = BTreeMap::new();
        attrs.insert(CKA_TOKEN, boolean(false));
        attrs.insert(CKA_PRIVATE, boolean(false));
        attrs.insert(CKA_MODIFIABLE, boolean(true));
        attrs.insert(CKA_LABEL, Vec::new());
        match class {
            CKO_DATA => {
                attrs.insert(CKA_APPLICATION, Vec::new());
                attrs.insert(CKA_OBJECT_ID, Vec::new());
                attrs.insert(CKA_VALUE, Vec::new());
            }
            CKO_CERTIFICATE => {
                if !given.contains_key(&CKA_VALUE) || !given.contains_key(&CKA_CERTIFICATE_TYPE) {
                    return Err(Ck(CKR_TEMPLATE_INCOMPLETE));
                }
                attrs.insert(CKA_ID, Vec::new());
                attrs.insert(CKA_TRUSTED, boolean(false));
                attrs.insert(CKA_CERTIFICATE_CATEGORY, ulong(0));
                attrs.insert(CKA_SUBJECT, Vec::new());
                attrs.insert(CKA_ISSUER, Vec::new());
                attrs.insert(CKA_SERIAL_NUMBER, Vec::new());
            }
            CKO_PUBLIC_KEY => {
                let key_type =
                    get_ulong(&given, CKA_KEY_TYPE).ok_or(Ck(CKR_TEMPLATE_INCOMPLETE))?;
                let point = given
                    .get(&CKA_EC_POINT)
                    .ok_or(Ck(CKR_TEMPLATE_INCOMPLETE))?;
                let params = given.get(&CKA_EC_PARAMS).cloned();
                let slot = self.session(h)?.slot;
                let curve = self
                    .curve_of(slot, key_type, params.as_deref())
                    .ok_or(Ck(CKR_ATTRIBUTE_VALUE_INVALID))?;
                let point = crypto::point_from_attribute(point);
                let spki =
                    crypto::spki_der(curve, point).map_err(|_| Ck(CKR_ATTRIBUTE_VALUE_INVALID))?;
                attrs.insert(CKA_EC_PARAMS, curve_params(curve).to_vec());
                attrs.insert(CKA_PUBLIC_KEY_INFO, spki);
                attrs.insert(CKA_ID, Vec::new());
                attrs.insert(CKA_VERIFY, boolean(true));
                attrs.insert(CKA_LOCAL, boolean(false));
            }
            _ => return Err(Ck(CKR_ATTRIBUTE_VALUE_INVALID)),
        }
        for (t, v) in given {
            if t == CKA_EC_POINT {
                attrs.insert(
                    t,
                    crypto::ec_point_attribute(crypto::point_from_attribute(&v)),
                );
            } else if t == CKA_LOCAL || t == CKA_PUBLIC_KEY_INFO {
                return Err(Ck(CKR_ATTRIBUTE_READ_ONLY));
            } else {
                attrs.insert(t, v);
            }
        }
        self.insert(
            h,
            StoredObject {
                attrs,
                sealed_secret: None,
            },
        )
    }

    fn curve_of(&self, slot: usize, key_type: CK_KEY_TYPE, params: Option<&[u8]>) -> Option<Curve> {
        let family = self.slots[slot].family;
        if family.is_some_and(|f| f.ckk_sm2 == key_type) {
            return match params {
                None => Some(Curve::Sm2),
                Some(p) if p == EC_PARAMS_SM2 => Some(Curve::Sm2),
                _ => None,
            };
        }
        if key_type == CKK_EC {
            return match params? {
                p if p == EC_PARAMS_P256 => Some(Curve::P256),
                p if p == EC_PARAMS_SM2 => Some(Curve::Sm2),
                _ => None,
            };
        }
        None
    }

    pub fn destroy_object(&mut self, h: CK_SESSION_HANDLE, handle: CK_OBJECT_HANDLE) -> R<()> {
        let (slot, id, object) = self.object(h, handle)?;
        let on_token = id & SESSION_OBJECT == 0;
        if on_token && !self.session(h)?.rw {
            return Err(Ck(CKR_SESSION_READ_ONLY));
        }
        if get_bool(&object.attrs, CKA_PRIVATE).unwrap_or(false)
            && self.slots[slot].login != Some(Role::User)
        {
            return Err(Ck(CKR_USER_NOT_LOGGED_IN));
        }
        let s = &mut self.slots[slot];
        s.signers.remove(&id);
        if on_token {
            s.file_mut()?.objects.remove(&id);
            self.save(slot)
        } else {
            s.session_objects.remove(&id);
            Ok(())
        }
    }

    pub fn get_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
        types: &[CK_ATTRIBUTE_TYPE],
    ) -> R<Vec<AttrValue<'_>>> {
        let (_, _, object) = self.object(h, handle)?;
        let private_key = matches!(
            get_ulong(&object.attrs, CKA_CLASS),
            Some(CKO_PRIVATE_KEY | CKO_SECRET_KEY)
        );
        Ok(types
            .iter()
            .map(|t| match object.attrs.get(t) {
                _ if private_key && *t == CKA_VALUE => AttrValue::Sensitive,
                Some(v) => AttrValue::Value(v),
                None => AttrValue::Invalid,
            })
            .collect())
    }

    pub fn set_attributes(
        &mut self,
        h: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> R<()> {
        let (slot, id, object) = self.object(h, handle)?;
        let on_token = id & SESSION_OBJECT == 0;
        if on_token && !self.session(h)?.rw {
            return Err(Ck(CKR_SESSION_READ_ONLY));
        }
        if !get_bool(&object.attrs, CKA_MODIFIABLE).unwrap_or(true) {
            return Err(Ck(CKR_ACTION_PROHIBITED));
        }
        let changes = template_map(template)?;
        for t in changes.keys() {
            if !matches!(
                *t,
                CKA_LABEL | CKA_ID | CKA_SUBJECT | CKA_START_DATE | CKA_END_DATE | CKA_APPLICATION
            ) {
                return Err(Ck(CKR_ATTRIBUTE_READ_ONLY));
            }
        }
        let s = &mut self.slots[slot];
        let object = if on_token {
            s.file_mut()?.objects.get_mut(&id)
        } else {
            s.session_objects.get_mut(&id).map(|(_, o)| o)
        }
        .ok_or(Ck(CKR_OBJECT_HANDLE_INVALID))?;
        object.attrs.extend(changes);
        if on_token {
            self.save(slot)?;
        }
        Ok(())
    }

    pub fn find_init(
        &mut self,
        h: CK_SESSION_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> R<()> {
        let session = self.session(h)?;
        if session.find.is_some() {
            return Err(Ck(CKR_OPERATION_ACTIVE));
        }
        let slot = session.slot;
        let s = &self.slots[slot];
        let token_objects = s.file()?.objects.iter();
        let session_objects = s.session_objects.iter().map(|(id, (_, o))| (id, o));
        let mut found: Vec<CK_OBJECT_HANDLE> = token_objects
            .chain(session_objects)
            .filter(|(_, o)| s.visible(o))
            .filter(|(_, o)| {
                template
                    .iter()
                    .all(|(t, v)| o.attrs.get(t).is_some_and(|have| have == v))
            })
            .map(|(id, _)| Self::handle_of(slot, *id))
            .collect();
        found.reverse();
        self.session_mut(h)?.find = Some(found);
        Ok(())
    }

    pub fn find(&mut self, h: CK_SESSION_HANDLE, max: usize) -> R<Vec<CK_OBJECT_HANDLE>> {
        let found = self
            .session_mut(h)?
            .find
            .as_mut()
            .ok_or(Ck(CKR_OPERATION_NOT_INITIALIZED))?;
        let mut out = Vec::new();
        while out.len() < max {
            match found.pop() {
                Some(handle) => out.push(handle),
                None => break,
            }
        }
        Ok(out)
    }

    pub fn find_final(&mut self, h: CK_SESSION_HANDLE) -> R<()> {
        self.session_mut(h)?
            .find
            .take()
            .map(|_| ())
            .ok_or(Ck(CKR_OPERATION_NOT_INITIALIZED))
    }

    pub fn generate_key_pair(
        &mut self,
        h: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        public: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
        private: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> R<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let slot = self.session(h)?.slot;
        let public = template_map(public)?;
        let private = template_map(private)?;
        let family = self.slots[slot].family;
        let (curve, key_type) = if mechanism == CKM_EC_KEY_PAIR_GEN {
            let params = public
                .get(&CKA_EC_PARAMS)
                .ok_or(Ck(CKR_TEMPLATE_INCOMPLETE))?;
            if params.as_slice() != EC_PARAMS_P256 {
                return Err(Ck(CKR_CURVE_NOT_SUPPORTED));
            }
            (Curve::P256, CKK_EC)
        } else if let Some(f) = family.filter(|f| f.ckm_keygen == mechanism) {
            if public
                .get(&CKA_EC_PARAMS)
                .is_some_and(|p| p.as_slice() != EC_PARAMS_SM2)
            {
                return Err(Ck(CKR_CURVE_NOT_SUPPORTED));
            }
            (Curve::Sm2, f.ckk_sm2)
        } else {
            return Err(Ck(CKR_MECHANISM_INVALID));
        };
        for t in [&public, &private] {
            if get_ulong(t, CKA_KEY_TYPE).is_some_and(|k| k != key_type) {
                return Err(Ck(CKR_TEMPLATE_INCONSISTENT));
            }
        }
        if get_bool(&private, CKA_EXTRACTABLE) == Some(true)
            || get_bool(&private, CKA_SENSITIVE) == Some(false)
        {
            return Err(Ck(CKR_TEMPLATE_INCONSISTENT));
        }
        let (key, secret) = crypto::SigningKey::generate(curve)?;
        let point = key.public_point();
        let spki = crypto::spki_der(curve, &point)?;
        let params = curve_params(curve).to_vec();

        let mut pub_attrs = BTreeMap::new();
        for (t, v) in [
            (CKA_CLASS, ulong(CKO_PUBLIC_KEY)),
            (CKA_TOKEN, boolean(false)),
            (CKA_PRIVATE, boolean(false)),
            (CKA_MODIFIABLE, boolean(true)),
            (CKA_LABEL, Vec::new()),
            (CKA_ID, Vec::new()),
            (CKA_VERIFY, boolean(true)),
            (CKA_ENCRYPT, boolean(false)),
            (CKA_WRAP, boolean(false)),
            (CKA_DERIVE, boolean(false)),
            (CKA_TRUSTED, boolean(false)),
            (CKA_SUBJECT, Vec::new()),
        ] {
            pub_attrs.insert(t, v);
        }
        pub_attrs.extend(public);
        for (t, v) in [
            (CKA_KEY_TYPE, ulong(key_type)),
            (CKA_EC_PARAMS, params.clone()),
            (CKA_EC_POINT, crypto::ec_point_attribute(&point)),
            (CKA_PUBLIC_KEY_INFO, spki.clone()),
            (CKA_LOCAL, boolean(true)),
            (CKA_KEY_GEN_MECHANISM, ulong(mechanism)),
        ] {
            pub_attrs.insert(t, v);
        }

        let mut priv_attrs = BTreeMap::new();
        for (t, v) in [
            (CKA_CLASS, ulong(CKO_PRIVATE_KEY)),
            (CKA_TOKEN, boolean(false)),
            (CKA_MODIFIABLE, boolean(true)),
            (CKA_LABEL, Vec::new()),
            (CKA_ID, Vec::new()),
            (CKA_SIGN, boolean(true)),
            (CKA_SIGN_RECOVER, boolean(false)),
            (CKA_DECRYPT, boolean(false)),
            (CKA_UNWRAP, boolean(false)),
            (CKA_DERIVE, boolean(false)),
            (CKA_SUBJECT, Vec::new()),
            (CKA_ALWAYS_AUTHENTICATE, boolean(false)),
            (CKA_WRAP_WITH_TRUSTED, boolean(false)),
        ] {
            priv_attrs.insert(t, v);
        }
        priv_attrs.extend(private);
        for (t, v) in [
            (CKA_KEY_TYPE, ulong(key_type)),
            (CKA_PRIVATE, boolean(true)),
            (CKA_SENSITIVE, boolean(true)),
            (CKA_ALWAYS_SENSITIVE, boolean(true)),
            (CKA_EXTRACTABLE, boolean(false)),
            (CKA_NEVER_EXTRACTABLE, boolean(true)),
            (CKA_EC_PARAMS, params),
            (CKA_PUBLIC_KEY_INFO, spki),
            (CKA_LOCAL, boolean(true)),
            (CKA_KEY_GEN_MECHANISM, ulong(mechanism)),
        ] {
            priv_attrs.insert(t, v);
        }
        priv_attrs.remove(&CKA_VALUE);
        priv_attrs.remove(&CKA_EC_POINT);

        if self.slots[slot].login != Some(Role::User) {
            return Err(Ck(CKR_USER_NOT_LOGGED_IN));
        }
        // The private key's id decides its sealing context, so it goes in first.
        let priv_on_token = get_bool(&priv_attrs, CKA_TOKEN).unwrap_or(false);
        if (priv_on_token || get_bool(&pub_attrs, CKA_TOKEN).unwrap_or(false))
            && !self.session(h)?.rw
        {
            return Err(Ck(CKR_SESSION_READ_ONLY));
        }
        let s = &mut self.slots[slot];
        let master = s.master.clone().ok_or(Ck(CKR_USER_NOT_LOGGED_IN))?;
        let priv_id = if priv_on_token {
            s.file()?.next_object_id
        } else {
            s.next_session_object
        };
        let sealed = s.file()?.seal_secret(&master, priv_id, &secret)?;
        let priv_handle = self.insert(
            h,
            StoredObject {
                attrs: priv_attrs,
                sealed_secret: Some(sealed),
            },
        )?;
        debug_assert_eq!(priv_handle & ((1 << SLOT_SHIFT) - 1), priv_id);
        self.slots[slot].signers.insert(priv_id, Arc::new(key));
        let pub_handle = self.insert(
            h,
            StoredObject {
                attrs: pub_attrs,
                sealed_secret: None,
            },
        )?;
        Ok((pub_handle, priv_handle))
    }

    /// `C_UnwrapKey` of a GM/T 0016 envelope: imports the SM2 key pair (private key sealed
    /// like generated ones, not `CKA_LOCAL`, not `CKA_ALWAYS_SENSITIVE`) and a public key
    /// object with the same label and id; returns the private key's handle.
    pub fn unwrap_key(
        &mut self,
        h: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> R<CK_OBJECT_HANDLE> {
        let slot = self.session(h)?.slot;
        let family = self.slots[slot].family.ok_or(Ck(CKR_MECHANISM_INVALID))?;
        if mechanism != CKM_KIOSK_SM2_ENVELOPE {
            return Err(Ck(CKR_MECHANISM_INVALID));
        }
        let (_, uid, object) = self.object(h, unwrapping)?;
        let key_type = get_ulong(&object.attrs, CKA_KEY_TYPE).unwrap_or(CK_UNAVAILABLE_INFORMATION);
        if get_ulong(&object.attrs, CKA_CLASS) != Some(CKO_PRIVATE_KEY)
            || self.curve_of(
                slot,
                key_type,
                object.attrs.get(&CKA_EC_PARAMS).map(Vec::as_slice),
            ) != Some(Curve::Sm2)
        {
            return Err(Ck(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT));
        }
        if get_bool(&object.attrs, CKA_UNWRAP) != Some(true) {
            return Err(Ck(CKR_KEY_FUNCTION_NOT_PERMITTED));
        }
        let given = template_map(template)?;
        if get_ulong(&given, CKA_CLASS).is_some_and(|c| c != CKO_PRIVATE_KEY)
            || get_ulong(&given, CKA_KEY_TYPE).is_some_and(|k| k != family.ckk_sm2)
            || get_bool(&given, CKA_EXTRACTABLE) == Some(true)
            || get_bool(&given, CKA_SENSITIVE) == Some(false)
        {
            return Err(Ck(CKR_TEMPLATE_INCONSISTENT));
        }
        let ukey = self.signing_key(slot, uid, |s| {
            crypto::SigningKey::from_secret(Curve::Sm2, s)
        })?;
        let (d, point) =
            crypto::open_sm2_envelope(&ukey, wrapped).map_err(|_| Ck(CKR_WRAPPED_KEY_INVALID))?;
        let spki = crypto::spki_der(Curve::Sm2, &point)?;
        let on_token = get_bool(&given, CKA_TOKEN).unwrap_or(false);
        let label = given.get(&CKA_LABEL).cloned().unwrap_or_default();
        let id = given.get(&CKA_ID).cloned().unwrap_or_default();
        let mut priv_attrs = BTreeMap::new();
        for (t, v) in [
            (CKA_CLASS, ulong(CKO_PRIVATE_KEY)),
            (CKA_TOKEN, boolean(false)),
            (CKA_MODIFIABLE, boolean(true)),
            (CKA_LABEL, Vec::new()),
            (CKA_ID, Vec::new()),
            (CKA_SIGN, boolean(true)),
            (CKA_DECRYPT, boolean(false)),
            (CKA_UNWRAP, boolean(false)),
            (CKA_DERIVE, boolean(false)),
            (CKA_SUBJECT, Vec::new()),
        ] {
            priv_attrs.insert(t, v);
        }
        priv_attrs.extend(given);
        for (t, v) in [
            (CKA_KEY_TYPE, ulong(family.ckk_sm2)),
            (CKA_PRIVATE, boolean(true)),
            (CKA_SENSITIVE, boolean(true)),
            (CKA_ALWAYS_SENSITIVE, boolean(false)),
            (CKA_EXTRACTABLE, boolean(false)),
            (CKA_NEVER_EXTRACTABLE, boolean(false)),
            (CKA_LOCAL, boolean(false)),
            (CKA_EC_PARAMS, EC_PARAMS_SM2.to_vec()),
            (CKA_PUBLIC_KEY_INFO, spki.clone()),
        ] {
            priv_attrs.insert(t, v);
        }
        priv_attrs.remove(&CKA_VALUE);
        let mut pub_attrs = BTreeMap::new();
        for (t, v) in [
            (CKA_CLASS, ulong(CKO_PUBLIC_KEY)),
            (CKA_KEY_TYPE, ulong(family.ckk_sm2)),
            (CKA_TOKEN, boolean(on_token)),
            (CKA_PRIVATE, boolean(false)),
            (CKA_MODIFIABLE, boolean(true)),
            (CKA_LABEL, label),
            (CKA_ID, id),
            (CKA_VERIFY, boolean(true)),
            (CKA_ENCRYPT, boolean(false)),
            (CKA_EC_PARAMS, EC_PARAMS_SM2.to_vec()),
            (CKA_EC_POINT, crypto::ec_point_attribute(&point)),
            (CKA_PUBLIC_KEY_INFO, spki),
            (CKA_LOCAL, boolean(false)),
        ] {
            pub_attrs.insert(t, v);
        }
        if self.slots[slot].login != Some(Role::User) {
            return Err(Ck(CKR_USER_NOT_LOGGED_IN));
        }
        if on_token && !self.session(h)?.rw {
            return Err(Ck(CKR_SESSION_READ_ONLY));
        }
        let s = &self.slots[slot];
        let master = s.master.clone().ok_or(Ck(CKR_USER_NOT_LOGGED_IN))?;
        let priv_id = if on_token {
            s.file()?.next_object_id
        } else {
            s.next_session_object
        };
        let sealed = s.file()?.seal_secret(&master, priv_id, &d)?;
        let handle = self.insert(
            h,
            StoredObject {
                attrs: priv_attrs,
                sealed_secret: Some(sealed),
            },
        )?;
        self.insert(
            h,
            StoredObject {
                attrs: pub_attrs,
                sealed_secret: None,
            },
        )?;
        Ok(handle)
    }

    /// The operation a mechanism names on a key of this type.
    fn op_kind(
        &self,
        slot: usize,
        attrs: &BTreeMap<u64, Vec<u8>>,
        mechanism: CK_MECHANISM_TYPE,
        param: &[u8],
    ) -> R<(OpKind, Curve, Option<Vec<u8>>)> {
        let key_type = get_ulong(attrs, CKA_KEY_TYPE).ok_or(Ck(CKR_KEY_TYPE_INCONSISTENT))?;
        let curve = self
            .curve_of(slot, key_type, attrs.get(&CKA_EC_PARAMS).map(Vec::as_slice))
            .ok_or(Ck(CKR_KEY_TYPE_INCONSISTENT))?;
        let family = self.slots[slot].family;
        let kind = match (curve, mechanism) {
            (Curve::P256, CKM_ECDSA) => OpKind::Ecdsa,
            (Curve::P256, CKM_ECDSA_SHA256) => OpKind::EcdsaSha256,
            (Curve::Sm2, m) => match family.and_then(|f| f.sign_mechanism(m)) {
                Some(sm) => OpKind::Sm2(*sm),
                None if family.is_some_and(|f| f.ckm_keygen == m) => {
                    return Err(Ck(CKR_KEY_TYPE_INCONSISTENT));
                }
                None if m == CKM_ECDSA || m == CKM_ECDSA_SHA256 => {
                    return Err(Ck(CKR_KEY_TYPE_INCONSISTENT));
                }
                None => return Err(Ck(CKR_MECHANISM_INVALID)),
            },
            (Curve::P256, m) if family.is_some_and(|f| f.sign_mechanism(m).is_some()) => {
                return Err(Ck(CKR_KEY_TYPE_INCONSISTENT));
            }
            _ => return Err(Ck(CKR_MECHANISM_INVALID)),
        };
        let id = match kind {
            OpKind::Sm2(m) if m.input == vendor::Sm2Input::MessageWithZ && !param.is_empty() => {
                if param.len() > 8191 {
                    return Err(Ck(CKR_MECHANISM_PARAM_INVALID));
                }
                Some(param.to_vec())
            }
            _ if !param.is_empty() => return Err(Ck(CKR_MECHANISM_PARAM_INVALID)),
            _ => None,
        };
        Ok((kind, curve, id))
    }

    /// The key behind a private or secret key object, unsealed once per login and cached.
    fn signing_key(
        &mut self,
        slot: usize,
        id: u64,
        make: impl FnOnce(&[u8]) -> Result<crypto::SigningKey, CryptoError>,
    ) -> R<Arc<crypto::SigningKey>> {
        if let Some(k) = self.slots[slot].signers.get(&id) {
            return Ok(Arc::clone(k));
        }
        let s = &self.slots[slot];
        let master = s.master.as_ref().ok_or(Ck(CKR_USER_NOT_LOGGED_IN))?;
        let sealed = s
            .object(id)
            .and_then(|o| o.sealed_secret.as_ref())
            .ok_or(Ck(CKR_KEY_HANDLE_INVALID))?;
        let secret = s.file()?.unseal_secret(master, id, sealed)?;
        let k = Arc::new(make(&secret)?);
        self.slots[slot].signers.insert(id, Arc::clone(&k));
        Ok(k)
    }

    pub fn sign_init(
        &mut self,
        h: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        param: &[u8],
        key: CK_OBJECT_HANDLE,
    ) -> R<()> {
        if self.session(h)?.sign.is_some() {
            return Err(Ck(CKR_OPERATION_ACTIVE));
        }
        let (slot, id, object) = self.object(h, key)?;
        let class = get_ulong(&object.attrs, CKA_CLASS);
        if get_bool(&object.attrs, CKA_SIGN) != Some(true) {
            return Err(Ck(CKR_KEY_FUNCTION_NOT_PERMITTED));
        }
        let (kind, distid, key) = if class == Some(CKO_SECRET_KEY) {
            if get_ulong(&object.attrs, CKA_KEY_TYPE) != Some(CKK_GENERIC_SECRET) {
                return Err(Ck(CKR_KEY_TYPE_INCONSISTENT));
            }
            if mechanism != CKM_SHA256_HMAC || !param.is_empty() {
                return Err(Ck(CKR_MECHANISM_INVALID));
            }
            let key = self.signing_key(slot, id, |s| {
                Ok(crypto::SigningKey::Hmac(Zeroizing::new(s.to_vec())))
            })?;
            (OpKind::HmacSha256, None, key)
        } else if class == Some(CKO_PRIVATE_KEY) {
            let (kind, curve, distid) = self.op_kind(slot, &object.attrs, mechanism, param)?;
            let key = self.signing_key(slot, id, |s| crypto::SigningKey::from_secret(curve, s))?;
            (kind, distid, key)
        } else {
            return Err(Ck(CKR_KEY_TYPE_INCONSISTENT));
        };
        self.session_mut(h)?.sign = Some(SignOp {
            kind,
            id: distid,
            key,
            buffer: Vec::new(),
        });
        Ok(())
    }

    /// `C_EncryptInit` / `C_DecryptInit` with CKM_AES_GCM (96-bit IV, 128-bit tag).
    pub fn crypt_init(
        &mut self,
        h: CK_SESSION_HANDLE,
        encrypt: bool,
        mechanism: CK_MECHANISM_TYPE,
        gcm: &GcmParams,
        key: CK_OBJECT_HANDLE,
    ) -> R<()> {
        let (iv, aad, tag_bits) = (gcm.iv.as_slice(), gcm.aad.as_slice(), gcm.tag_bits);
        if self.session(h)?.crypt.is_some() {
            return Err(Ck(CKR_OPERATION_ACTIVE));
        }
        if mechanism != CKM_AES_GCM {
            return Err(Ck(CKR_MECHANISM_INVALID));
        }
        let iv: [u8; 12] = iv.try_into().map_err(|_| Ck(CKR_MECHANISM_PARAM_INVALID))?;
        if tag_bits != 128 {
            return Err(Ck(CKR_MECHANISM_PARAM_INVALID));
        }
        let (slot, id, object) = self.object(h, key)?;
        if get_ulong(&object.attrs, CKA_CLASS) != Some(CKO_SECRET_KEY)
            || get_ulong(&object.attrs, CKA_KEY_TYPE) != Some(CKK_AES)
        {
            return Err(Ck(CKR_KEY_TYPE_INCONSISTENT));
        }
        let usage = if encrypt { CKA_ENCRYPT } else { CKA_DECRYPT };
        if get_bool(&object.attrs, usage) != Some(true) {
            return Err(Ck(CKR_KEY_FUNCTION_NOT_PERMITTED));
        }
        let key = self.signing_key(slot, id, |s| {
            Ok(crypto::SigningKey::Aes(Zeroizing::new(s.to_vec())))
        })?;
        self.session_mut(h)?.crypt = Some(CryptOp {
            encrypt,
            key,
            iv,
            aad: aad.to_vec(),
        });
        Ok(())
    }

    pub fn crypt_op(&self, h: CK_SESSION_HANDLE, encrypt: bool) -> R<CryptOp> {
        self.session(h)?
            .crypt
            .clone()
            .filter(|op| op.encrypt == encrypt)
            .ok_or(Ck(CKR_OPERATION_NOT_INITIALIZED))
    }

    pub fn end_crypt(&mut self, h: CK_SESSION_HANDLE) {
        if let Some(s) = self.sessions.get_mut(&h) {
            s.crypt = None;
        }
    }

    /// `C_GenerateKey`: a generic secret (HMAC) or an AES-256 key, sensitive and never
    /// extractable, sealed like private keys.
    pub fn generate_key(
        &mut self,
        h: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> R<CK_OBJECT_HANDLE> {
        let slot = self.session(h)?.slot;
        let given = template_map(template)?;
        let key_type = match mechanism {
            CKM_GENERIC_SECRET_KEY_GEN => CKK_GENERIC_SECRET,
            CKM_AES_KEY_GEN => CKK_AES,
            _ => return Err(Ck(CKR_MECHANISM_INVALID)),
        };
        if get_ulong(&given, CKA_CLASS).is_some_and(|c| c != CKO_SECRET_KEY)
            || get_ulong(&given, CKA_KEY_TYPE).is_some_and(|k| k != key_type)
            || get_bool(&given, CKA_EXTRACTABLE) == Some(true)
            || get_bool(&given, CKA_SENSITIVE) == Some(false)
        {
            return Err(Ck(CKR_TEMPLATE_INCONSISTENT));
        }
        let len = get_ulong(&given, CKA_VALUE_LEN).ok_or(Ck(CKR_TEMPLATE_INCOMPLETE))? as usize;
        let len_ok = match key_type {
            CKK_AES => len == 32,
            _ => (16..=64).contains(&len),
        };
        if !len_ok {
            return Err(Ck(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        if self.slots[slot].login != Some(Role::User) {
            return Err(Ck(CKR_USER_NOT_LOGGED_IN));
        }
        let mut secret = Zeroizing::new(vec![0u8; len]);
        getrandom::fill(&mut secret).map_err(|_| Ck(CKR_DEVICE_ERROR))?;
        let mut attrs = BTreeMap::new();
        for (t, v) in [
            (CKA_TOKEN, boolean(false)),
            (CKA_MODIFIABLE, boolean(true)),
            (CKA_LABEL, Vec::new()),
            (CKA_ID, Vec::new()),
            (CKA_SIGN, boolean(false)),
            (CKA_VERIFY, boolean(false)),
            (CKA_ENCRYPT, boolean(false)),
            (CKA_DECRYPT, boolean(false)),
            (CKA_WRAP, boolean(false)),
            (CKA_UNWRAP, boolean(false)),
            (CKA_DERIVE, boolean(false)),
        ] {
            attrs.insert(t, v);
        }
        attrs.extend(given);
        for (t, v) in [
            (CKA_CLASS, ulong(CKO_SECRET_KEY)),
            (CKA_KEY_TYPE, ulong(key_type)),
            (CKA_PRIVATE, boolean(true)),
            (CKA_SENSITIVE, boolean(true)),
            (CKA_ALWAYS_SENSITIVE, boolean(true)),
            (CKA_EXTRACTABLE, boolean(false)),
            (CKA_NEVER_EXTRACTABLE, boolean(true)),
            (CKA_LOCAL, boolean(true)),
            (CKA_KEY_GEN_MECHANISM, ulong(mechanism)),
            (CKA_VALUE_LEN, ulong(len as CK_ULONG)),
        ] {
            attrs.insert(t, v);
        }
        attrs.remove(&CKA_VALUE);
        let on_token = get_bool(&attrs, CKA_TOKEN).unwrap_or(false);
        if on_token && !self.session(h)?.rw {
            return Err(Ck(CKR_SESSION_READ_ONLY));
        }
        let s = &self.slots[slot];
        let master = s.master.clone().ok_or(Ck(CKR_USER_NOT_LOGGED_IN))?;
        let id = if on_token {
            s.file()?.next_object_id
        } else {
            s.next_session_object
        };
        let sealed = s.file()?.seal_secret(&master, id, &secret)?;
        self.insert(
            h,
            StoredObject {
                attrs,
                sealed_secret: Some(sealed),
            },
        )
    }

    pub fn sign_op(&self, h: CK_SESSION_HANDLE) -> R<SignOp> {
        self.session(h)?
            .sign
            .clone()
            .ok_or(Ck(CKR_OPERATION_NOT_INITIALIZED))
    }

    pub fn sign_update(&mut self, h: CK_SESSION_HANDLE, part: &[u8]) -> R<()> {
        let op = self
            .session_mut(h)?
            .sign
            .as_mut()
            .ok_or(Ck(CKR_OPERATION_NOT_INITIALIZED))?;
        op.buffer.extend_from_slice(part);
        Ok(())
    }

    pub fn end_sign(&mut self, h: CK_SESSION_HANDLE) {
        if let Some(s) = self.sessions.get_mut(&h) {
            s.sign = None;
        }
    }

    pub fn verify_init(
        &mut self,
        h: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        param: &[u8],
        key: CK_OBJECT_HANDLE,
    ) -> R<()> {
        if self.session(h)?.verify.is_some() {
            return Err(Ck(CKR_OPERATION_ACTIVE));
        }
        let (slot, _, object) = self.object(h, key)?;
        if get_ulong(&object.attrs, CKA_CLASS) != Some(CKO_PUBLIC_KEY) {
            return Err(Ck(CKR_KEY_TYPE_INCONSISTENT));
        }
        if get_bool(&object.attrs, CKA_VERIFY) != Some(true) {
            return Err(Ck(CKR_KEY_FUNCTION_NOT_PERMITTED));
        }
        let (kind, curve, distid) = self.op_kind(slot, &object.attrs, mechanism, param)?;
        let point = object
            .attrs
            .get(&CKA_EC_POINT)
            .ok_or(Ck(CKR_KEY_HANDLE_INVALID))?;
        let key = Arc::new(crypto::VerifyingKey::new(
            curve,
            crypto::point_from_attribute(point),
        )?);
        self.session_mut(h)?.verify = Some(VerifyOp {
            kind,
            id: distid,
            key,
            buffer: Vec::new(),
        });
        Ok(())
    }

    /// Takes the verify operation (verification always ends it).
    pub fn take_verify(&mut self, h: CK_SESSION_HANDLE) -> R<VerifyOp> {
        self.session_mut(h)?
            .verify
            .take()
            .ok_or(Ck(CKR_OPERATION_NOT_INITIALIZED))
    }

    pub fn verify_update(&mut self, h: CK_SESSION_HANDLE, part: &[u8]) -> R<()> {
        let op = self
            .session_mut(h)?
            .verify
            .as_mut()
            .ok_or(Ck(CKR_OPERATION_NOT_INITIALIZED))?;
        op.buffer.extend_from_slice(part);
        Ok(())
    }

    pub fn check_session(&self, h: CK_SESSION_HANDLE) -> R<()> {
        self.session(h).map(|_| ())
    }
}

fn curve_params(curve: Curve) -> &'static [u8] {
    match curve {
        Curve::P256 => EC_PARAMS_P256,
        Curve::Sm2 => EC_PARAMS_SM2,
    }
}

/// PIN state flags from the failure count: COUNT_LOW after any failure since the last
/// success (PKCS#11 2.40's definition), FINAL_TRY with one try left, LOCKED with none.
fn pin_flags(failures: u32, max: u32, low: CK_FLAGS, last: CK_FLAGS, locked: CK_FLAGS) -> CK_FLAGS {
    if failures >= max {
        locked
    } else if failures + 1 == max {
        last
    } else if failures > 0 {
        low
    } else {
        0
    }
}
