//! The simulated UKEY slot of a simulated kiosk: soft tokens under `[ukey] soft_dir` that the
//! demo and the tests "insert" and "pull" (`/v1/sim/ukey`). Like the device simulators'
//! fault switches, it can pull the UKEY in the middle of the next key generation, so the
//! issuance's handling of a UKEY removed mid-operation is exercised end to end. It wraps the
//! soft provider and passes every other call through unchanged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use hsm::{
    KeyAlgorithm, KeyInfo, Pin, Pkcs11Uri, Result, SecretKeyKind, Token, TokenError, TokenEvent,
    TokenInfo, TokenProvider, TokenSignature, UserKind,
};
use tokio::sync::broadcast;
use zeroize::Zeroizing;

/// The switches and the directory of the simulated slot.
pub struct SimUkeySlot {
    dir: PathBuf,
    pull_during_next_keygen: AtomicBool,
}

impl SimUkeySlot {
    /// Pull the inserted UKEY(s) during the next key generation.
    pub fn arm_pull_during_keygen(&self) {
        self.pull_during_next_keygen.store(true, Ordering::SeqCst);
    }

    /// Pull every inserted UKEY: their token files move to `pulled/`.
    pub fn pull_all(&self) -> std::io::Result<()> {
        pull_all(&self.dir)
    }
}

fn pull_all(dir: &Path) -> std::io::Result<()> {
    let pulled = dir.join("pulled");
    std::fs::create_dir_all(&pulled)?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".token.json") {
            match std::fs::rename(entry.path(), pulled.join(&name)) {
                // Pulled meanwhile by a concurrent request: gone is what was asked.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    Ok(())
}

/// The soft UKEY provider with the simulated slot's switches.
pub struct SimUkeys {
    inner: Arc<dyn TokenProvider>,
    slot: Arc<SimUkeySlot>,
}

impl SimUkeys {
    pub fn wrap(inner: Arc<dyn TokenProvider>, dir: PathBuf) -> (Arc<Self>, Arc<SimUkeySlot>) {
        let slot = Arc::new(SimUkeySlot {
            dir,
            pull_during_next_keygen: AtomicBool::new(false),
        });
        (
            Arc::new(Self {
                inner,
                slot: slot.clone(),
            }),
            slot,
        )
    }
}

#[async_trait]
impl TokenProvider for SimUkeys {
    fn describe(&self) -> String {
        format!("simulated UKEY slot ({})", self.inner.describe())
    }

    async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        self.inner.list_tokens().await
    }

    async fn open_token(&self, label: &str) -> Result<Arc<dyn Token>> {
        Ok(Arc::new(SimUkey {
            inner: self.inner.open_token(label).await?,
            slot: self.slot.clone(),
        }))
    }

    async fn init_token(&self, label: &str, so_pin: &Pin, user_pin: &Pin) -> Result<TokenInfo> {
        self.inner.init_token(label, so_pin, user_pin).await
    }

    async fn reinit_token(
        &self,
        serial: &str,
        so_pin: &Pin,
        new_label: &str,
        new_so_pin: &Pin,
    ) -> Result<TokenInfo> {
        self.inner
            .reinit_token(serial, so_pin, new_label, new_so_pin)
            .await
    }

    async fn refresh(&self) -> Result<Vec<TokenEvent>> {
        self.inner.refresh().await
    }

    fn events(&self) -> broadcast::Receiver<TokenEvent> {
        self.inner.events()
    }
}

/// One simulated UKEY.
struct SimUkey {
    inner: Arc<dyn Token>,
    slot: Arc<SimUkeySlot>,
}

#[async_trait]
impl Token for SimUkey {
    async fn info(&self) -> Result<TokenInfo> {
        self.inner.info().await
    }

    async fn login(&self, user: UserKind, pin: &Pin) -> Result<()> {
        self.inner.login(user, pin).await
    }

    async fn logout(&self) -> Result<()> {
        self.inner.logout().await
    }

    fn is_logged_in(&self) -> bool {
        self.inner.is_logged_in()
    }

    async fn change_pin(&self, user: UserKind, old: &Pin, new: &Pin) -> Result<()> {
        self.inner.change_pin(user, old, new).await
    }

    async fn unblock_user_pin(&self, so_pin: &Pin, new_user_pin: &Pin) -> Result<()> {
        self.inner.unblock_user_pin(so_pin, new_user_pin).await
    }

    async fn generate_key_pair(&self, label: &str, algorithm: KeyAlgorithm) -> Result<KeyInfo> {
        if self
            .slot
            .pull_during_next_keygen
            .swap(false, Ordering::SeqCst)
        {
            self.slot
                .pull_all()
                .map_err(|e| TokenError::Store(e.to_string()))?;
            return Err(TokenError::TokenRemoved);
        }
        self.inner.generate_key_pair(label, algorithm).await
    }

    async fn find_keys(&self, filter: &Pkcs11Uri) -> Result<Vec<KeyInfo>> {
        self.inner.find_keys(filter).await
    }

    async fn key(&self, label: &str) -> Result<KeyInfo> {
        self.inner.key(label).await
    }

    async fn sign(&self, key_label: &str, message: &[u8]) -> Result<TokenSignature> {
        self.inner.sign(key_label, message).await
    }

    fn sm2_distid(&self) -> &str {
        self.inner.sm2_distid()
    }

    async fn write_certificate(&self, key_label: &str, cert_der: &[u8]) -> Result<()> {
        self.inner.write_certificate(key_label, cert_der).await
    }

    async fn read_certificate(&self, key_label: &str) -> Result<Option<Vec<u8>>> {
        self.inner.read_certificate(key_label).await
    }

    async fn generate_secret_key(&self, label: &str, kind: SecretKeyKind) -> Result<()> {
        self.inner.generate_secret_key(label, kind).await
    }

    async fn hmac(&self, key_label: &str, data: &[u8]) -> Result<Vec<u8>> {
        self.inner.hmac(key_label, data).await
    }

    async fn wrap_key(&self, key_label: &str, data_key: &[u8]) -> Result<Vec<u8>> {
        self.inner.wrap_key(key_label, data_key).await
    }

    async fn unwrap_key(&self, key_label: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.inner.unwrap_key(key_label, wrapped).await
    }
}
