//! The session pool of one PKCS#11 token: idle sessions are reused, a semaphore caps how many
//! run at once, login state and object handles are cached, and every call runs through
//! [`SessionPool::call`] which moves it off the runtime with a timeout. When the token says
//! the sessions are gone (removed, re-inserted, closed) the pool forgets sessions, login and
//! handles, and re-finds the token's slot by serial on the next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cryptoki::context::Pkcs11;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use tokio::sync::Semaphore;

use super::module::{map_error, run_blocking};
use crate::types::{KeyInfo, SecretKeyKind};
use crate::{Result, TokenError};

/// A cached private key handle with what we know about the key.
#[derive(Clone)]
pub struct CachedKey {
    pub private: ObjectHandle,
    pub info: KeyInfo,
}

pub struct SessionPool {
    pub ctx: Pkcs11,
    pub label: String,
    pub serial: String,
    pub timeout: Duration,
    slot: Mutex<Option<Slot>>,
    idle: Mutex<Vec<Session>>,
    permits: Arc<Semaphore>,
    logged_in: AtomicBool,
    pub keys: Mutex<HashMap<String, CachedKey>>,
    pub secrets: Mutex<HashMap<String, (ObjectHandle, SecretKeyKind)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SessionPool {
    pub fn new(
        ctx: Pkcs11,
        slot: Slot,
        label: String,
        serial: String,
        timeout: Duration,
        max_sessions: usize,
    ) -> Self {
        Self {
            ctx,
            label,
            serial,
            timeout,
            slot: Mutex::new(Some(slot)),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max_sessions.max(1))),
            logged_in: AtomicBool::new(false),
            keys: Mutex::new(HashMap::new()),
            secrets: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_logged_in(&self) -> bool {
        self.logged_in.load(Ordering::Acquire)
    }

    pub fn set_logged_in(&self, value: bool) {
        self.logged_in.store(value, Ordering::Release);
    }

    /// Current slot of the token, re-found by serial after a removal.
    pub fn slot(&self) -> Result<Slot> {
        if let Some(slot) = *lock(&self.slot) {
            return Ok(slot);
        }
        let slots = self.ctx.get_slots_with_token().map_err(map_error)?;
        for slot in slots {
            let Ok(info) = self.ctx.get_token_info(slot) else {
                continue;
            };
            if info.serial_number().trim() == self.serial && info.label().trim() == self.label {
                *lock(&self.slot) = Some(slot);
                return Ok(slot);
            }
        }
        Err(TokenError::TokenNotPresent(self.label.clone()))
    }

    /// Forgets sessions, login state and handles: the token went away.
    pub fn forget(&self) {
        let sessions = std::mem::take(&mut *lock(&self.idle));
        drop(sessions);
        *lock(&self.slot) = None;
        self.set_logged_in(false);
        lock(&self.keys).clear();
        lock(&self.secrets).clear();
    }

    fn checkout(&self) -> Result<Session> {
        if let Some(session) = lock(&self.idle).pop() {
            return Ok(session);
        }
        let slot = self.slot()?;
        self.ctx.open_rw_session(slot).map_err(|e| {
            let mapped = map_error(e);
            if mapped.is_token_gone() {
                *lock(&self.slot) = None;
            }
            mapped
        })
    }

    /// Runs `f` with a session of this token, off the runtime, within the call timeout.
    pub async fn call<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Session, &SessionPool) -> Result<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| TokenError::TokenRemoved)?;
        let pool = Arc::clone(self);
        run_blocking(self.timeout, move || {
            let _permit = permit;
            let session = pool.checkout()?;
            let result = f(&session, &pool);
            match &result {
                Err(e) if e.is_token_gone() => {
                    drop(session);
                    pool.forget();
                }
                Err(TokenError::NotLoggedIn) => {
                    pool.set_logged_in(false);
                    lock(&pool.idle).push(session);
                }
                _ => lock(&pool.idle).push(session),
            }
            result
        })
        .await
    }

    /// Runs a context-level call (no session) off the runtime.
    pub async fn call_ctx<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&SessionPool) -> Result<T> + Send + 'static,
    {
        let pool = Arc::clone(self);
        run_blocking(self.timeout, move || {
            let result = f(&pool);
            if matches!(&result, Err(e) if e.is_token_gone()) {
                pool.forget();
            }
            result
        })
        .await
    }
}
