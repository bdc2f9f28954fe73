//! The PKCS#11 provider (`cryptoki`): UKEYs and HSMs through a vendor module. Lists slots and
//! tokens, initialises blank tokens, keeps one [`Pkcs11Token`] (with its session pool) per
//! token serial, checks the vendor profile against each token's mechanism list, and reports
//! token arrival/removal when its slot list is refreshed (polling or USB hot-plug).

mod deadlines;
mod module;
mod session_pool;
mod token;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cryptoki::context::Pkcs11;
use cryptoki::session::UserType;
use tokio::sync::broadcast;

pub use module::{map_error, run_blocking, shared_module};
pub use token::Pkcs11Token;

use self::session_pool::SessionPool;
use crate::pin::Pin;
use crate::profile::VendorProfile;
use crate::token::{Token, TokenProvider};
use crate::types::{TokenEvent, TokenInfo};
use crate::{Result, TokenError};

/// Options of a PKCS#11 provider.
#[derive(Debug, Clone)]
pub struct Pkcs11Options {
    pub profile: VendorProfile,
    pub sm2_distid: String,
    pub call_timeout: Duration,
    /// Sessions per token (concurrent operations).
    pub max_sessions: usize,
}

/// A loaded PKCS#11 module.
pub struct Pkcs11Provider {
    path: PathBuf,
    ctx: Pkcs11,
    options: Pkcs11Options,
    tokens: Mutex<HashMap<String, Arc<Pkcs11Token>>>,
    present: Mutex<BTreeMap<String, String>>,
    events: broadcast::Sender<TokenEvent>,
}

/// Serialises token initialisation across providers sharing a module.
static INIT_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pkcs11Provider {
    /// Loads (once per process) and initialises the module at `path`.
    pub fn open(path: &Path, options: Pkcs11Options) -> Result<Arc<Self>> {
        let ctx = shared_module(path)?;
        let (events, _) = broadcast::channel(64);
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            ctx,
            options,
            tokens: Mutex::new(HashMap::new()),
            present: Mutex::new(BTreeMap::new()),
            events,
        }))
    }

    /// The shared cryptoki context (for benchmarks and diagnostics).
    pub fn context(&self) -> &Pkcs11 {
        &self.ctx
    }

    /// Start-up check: the token's mechanism list must contain what the vendor profile names.
    pub async fn check_profile(&self, label: &str) -> Result<()> {
        let ctx = self.ctx.clone();
        let profile = self.options.profile.clone();
        let label = label.to_owned();
        run_blocking(self.options.call_timeout, move || {
            let slot = find_slot(&ctx, &label)?.0;
            profile.check_mechanisms(&mechanism_numbers(&ctx, slot, &profile)?)
        })
        .await
    }

    /// Opens a token and returns the concrete type (for the benchmark and tests).
    pub async fn open_pkcs11_token(&self, label: &str) -> Result<Arc<Pkcs11Token>> {
        let ctx = self.ctx.clone();
        let wanted = label.to_owned();
        let (slot, info) =
            run_blocking(self.options.call_timeout, move || find_slot(&ctx, &wanted)).await?;
        if let Some(existing) = lock(&self.tokens).get(&info.serial) {
            return Ok(Arc::clone(existing));
        }
        let pool = Arc::new(SessionPool::new(
            self.ctx.clone(),
            slot,
            info.label.clone(),
            info.serial.clone(),
            self.options.call_timeout,
            self.options.max_sessions,
        ));
        let token = Arc::new(Pkcs11Token::new(
            pool,
            self.options.profile.clone(),
            self.options.sm2_distid.clone(),
        ));
        Ok(Arc::clone(
            lock(&self.tokens).entry(info.serial).or_insert(token),
        ))
    }
}

/// Which of the mechanisms the profile needs (ECDSA P-256 and its SM2 numbers) the slot
/// offers, asked one by one with `C_GetMechanismInfo` (a missing one answers
/// `CKR_MECHANISM_INVALID`). Not `get_mechanism_list`: `cryptoki` drops every number it does
/// not know from that list, vendor-defined ones included, and logs an error for each.
pub(crate) fn mechanism_numbers(
    ctx: &Pkcs11,
    slot: cryptoki::slot::Slot,
    profile: &VendorProfile,
) -> Result<Vec<u64>> {
    use cryptoki::mechanism::MechanismType;
    let mut wanted = vec![
        crate::profile::CKM_EC_KEY_PAIR_GEN,
        crate::profile::CKM_ECDSA,
    ];
    if let Some(sm2) = &profile.sm2 {
        wanted.extend([sm2.ckm_keygen, sm2.ckm_sign]);
    }
    let mut offered = Vec::new();
    for m in wanted {
        // (`try_from` on a vendor number would log an error too.)
        let mechanism = if m >= 0x8000_0000 {
            MechanismType::new_vendor_defined(m)
        } else {
            MechanismType::try_from(m)
        };
        let Ok(mechanism) = mechanism else {
            continue;
        };
        match ctx.get_mechanism_info(slot, mechanism) {
            Ok(_) => offered.push(m),
            Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::MechanismInvalid, _)) => {}
            Err(e) => return Err(map_error(e)),
        }
    }
    Ok(offered)
}

fn find_slot(ctx: &Pkcs11, label: &str) -> Result<(cryptoki::slot::Slot, TokenInfo)> {
    for slot in ctx.get_slots_with_token().map_err(map_error)? {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        if info.token_initialized() && info.label().trim() == label {
            return Ok((slot, token::token_info_from(slot.id(), &info)));
        }
    }
    Err(TokenError::TokenNotPresent(label.to_owned()))
}

/// The slot of the (initialised) token with this serial number.
fn find_slot_by_serial(ctx: &Pkcs11, serial: &str) -> Result<(cryptoki::slot::Slot, TokenInfo)> {
    for slot in ctx.get_slots_with_token().map_err(map_error)? {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        if info.token_initialized() && info.serial_number().trim() == serial {
            return Ok((slot, token::token_info_from(slot.id(), &info)));
        }
    }
    Err(TokenError::TokenNotPresent(format!("serial {serial}")))
}

fn list_blocking(ctx: &Pkcs11) -> Result<Vec<TokenInfo>> {
    let mut out = Vec::new();
    for slot in ctx.get_slots_with_token().map_err(map_error)? {
        // A slot whose token cannot be read right now (being removed, broken) is skipped.
        match ctx.get_token_info(slot) {
            Ok(info) => out.push(token::token_info_from(slot.id(), &info)),
            Err(e) => tracing::debug!(slot = slot.id(), error = %e, "skipping unreadable slot"),
        }
    }
    Ok(out)
}

#[async_trait]
impl TokenProvider for Pkcs11Provider {
    fn describe(&self) -> String {
        format!("pkcs11:{}", self.path.display())
    }

    async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let ctx = self.ctx.clone();
        run_blocking(self.options.call_timeout, move || list_blocking(&ctx)).await
    }

    async fn open_token(&self, label: &str) -> Result<Arc<dyn Token>> {
        Ok(self.open_pkcs11_token(label).await? as Arc<dyn Token>)
    }

    async fn init_token(&self, label: &str, so_pin: &Pin, user_pin: &Pin) -> Result<TokenInfo> {
        if label.is_empty() || label.len() > 32 {
            return Err(TokenError::InvalidInput(
                "token label must be 1..=32 bytes".into(),
            ));
        }
        // One initialisation at a time: two staff requests must not pick the same blank slot.
        let _guard = INIT_LOCK.lock().await;
        let ctx = self.ctx.clone();
        let (label, so, user) = (
            label.to_owned(),
            cryptoki::types::AuthPin::from(so_pin.expose()),
            cryptoki::types::AuthPin::from(user_pin.expose()),
        );
        run_blocking(self.options.call_timeout, move || {
            if find_slot(&ctx, &label).is_ok() {
                return Err(TokenError::TokenExists(label));
            }
            let mut blank = None;
            for slot in ctx.get_slots_with_token().map_err(map_error)? {
                if let Ok(info) = ctx.get_token_info(slot) {
                    if !info.token_initialized() {
                        blank = Some(slot);
                        break;
                    }
                }
            }
            let slot = blank.ok_or(TokenError::NoFreeSlot)?;
            ctx.init_token(slot, &so, &label).map_err(map_error)?;
            // Some modules (SoftHSM) move the new token to another slot id.
            let (slot, _) = find_slot(&ctx, &label)?;
            let session = ctx.open_rw_session(slot).map_err(map_error)?;
            session.login(UserType::So, Some(&so)).map_err(map_error)?;
            let result = session.init_pin(&user).map_err(map_error);
            let _ = session.logout();
            result?;
            Ok(find_slot(&ctx, &label)?.1)
        })
        .await
    }

    async fn reinit_token(
        &self,
        serial: &str,
        so_pin: &Pin,
        new_label: &str,
        new_so_pin: &Pin,
    ) -> Result<TokenInfo> {
        if new_label.is_empty() || new_label.len() > 32 {
            return Err(TokenError::InvalidInput(
                "token label must be 1..=32 bytes".into(),
            ));
        }
        if new_so_pin.is_empty() {
            return Err(TokenError::PinInvalid("empty"));
        }
        // C_InitToken fails while any session is open on the token: drop ours. Not under
        // INIT_LOCK: this token is named by serial, so re-initialising many at once is safe.
        if let Some(cached) = lock(&self.tokens).remove(serial) {
            cached.pool().forget();
        }
        let ctx = self.ctx.clone();
        let (serial, label) = (serial.to_owned(), new_label.to_owned());
        let (so, new_so) = (
            cryptoki::types::AuthPin::from(so_pin.expose()),
            cryptoki::types::AuthPin::from(new_so_pin.expose()),
        );
        run_blocking(self.options.call_timeout, move || {
            let (slot, _) = find_slot_by_serial(&ctx, &serial)?;
            if let Ok((_, other)) = find_slot(&ctx, &label) {
                if other.serial != serial {
                    return Err(TokenError::TokenExists(label));
                }
            }
            // Checks the current SO PIN once; a wrong one changes nothing on the token.
            ctx.init_token(slot, &so, &label).map_err(map_error)?;
            let (slot, _) = find_slot_by_serial(&ctx, &serial)?;
            let session = ctx.open_rw_session(slot).map_err(map_error)?;
            session.login(UserType::So, Some(&so)).map_err(map_error)?;
            let changed = session.set_pin(&so, &new_so).map_err(map_error);
            let _ = session.logout();
            drop(session);
            changed?;
            Ok(find_slot_by_serial(&ctx, &serial)?.1)
        })
        .await
    }

    async fn refresh(&self) -> Result<Vec<TokenEvent>> {
        let now: BTreeMap<String, String> = self
            .list_tokens()
            .await?
            .into_iter()
            .filter(|t| t.initialized)
            .map(|t| (t.serial, t.label))
            .collect();
        let mut events = Vec::new();
        {
            let mut present = lock(&self.present);
            for (serial, label) in present.iter() {
                if !now.contains_key(serial) {
                    events.push(TokenEvent::Removed {
                        label: label.clone(),
                        serial: serial.clone(),
                    });
                }
            }
            for (serial, label) in &now {
                if !present.contains_key(serial) {
                    events.push(TokenEvent::Inserted {
                        label: label.clone(),
                        serial: serial.clone(),
                    });
                }
            }
            *present = now;
        }
        for event in &events {
            if let TokenEvent::Removed { serial, .. } = event {
                if let Some(token) = lock(&self.tokens).get(serial) {
                    token.pool().forget();
                }
            }
            let _ = self.events.send(event.clone());
        }
        Ok(events)
    }

    fn events(&self) -> broadcast::Receiver<TokenEvent> {
        self.events.subscribe()
    }
}
