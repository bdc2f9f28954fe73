//! Staff batch issuance of blank UKEYs: many tokens in the factory state (initialised with a
//! transport SO PIN, user PIN never set) plugged in at once are each re-initialised with a new
//! label and SO PIN, given the holder's initial user PIN, and get a fresh non-extractable key
//! pair — in parallel, each token a small state machine
//! `queued → initialising → setting_pin → generating_key → done | failed{code,message}` whose
//! changes are published on a broadcast channel (the API streams them as server-sent events).
//! Initial PINs (random per token, or given by staff) live only in zeroizing [`Pin`]s, are never
//! logged, and are handed out once, with the token's final state ([`Batch::take_secrets`]).
//! [`Batches`] keeps the recent batches and refuses a token already in a running batch.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use hsm::{KeyAlgorithm, Pin, PinState, TokenError, TokenInfo, TokenProvider, UserKind};
use serde::Serialize;
use tokio::sync::{Semaphore, broadcast, watch};

use crate::clock::now_ms;

/// Digits of a random initial user PIN.
pub const USER_PIN_DIGITS: usize = 6;
/// Digits of a random new SO PIN.
pub const SO_PIN_DIGITS: usize = 8;
/// Longest label prefix (the token label is `{prefix}-{serial}`, at most 32 bytes).
pub const MAX_LABEL_PREFIX: usize = 15;
/// Most tokens in one batch.
pub const MAX_TOKENS: usize = 64;
/// Finished batches kept for their answers.
const KEPT_BATCHES: usize = 32;

/// Why a batch could not start.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("no blank token is present")]
    NoBlankTokens,
    #[error("token {0} is not present")]
    NotPresent(String),
    #[error("token {0} is not blank (its user PIN is already set, or it has no factory SO PIN)")]
    NotBlank(String),
    #[error("token {0} is already being issued by another batch")]
    Busy(String),
    #[error("invalid batch request: {0}")]
    Invalid(String),
    #[error("listing tokens: {0}")]
    Token(#[from] TokenError),
}

/// How each token's initial user PIN is chosen.
#[derive(Clone)]
pub enum PinMode {
    /// Random, six digits, per token; shown once to staff with the token's final state.
    Random,
    /// The same PIN, given by staff, for every token (not shown back).
    Given(Pin),
}

/// What to issue.
#[derive(Clone)]
pub struct BatchPlan {
    /// Tokens by serial; `None`: every blank token present.
    pub serials: Option<Vec<String>>,
    pub algorithm: KeyAlgorithm,
    /// Token labels become `{label_prefix}-{serial}`.
    pub label_prefix: String,
    /// Label of the holder's key pair.
    pub key_label: String,
    /// The SO PIN the tokens ship with.
    pub factory_so_pin: Pin,
    /// The SO PIN every token gets; `None`: random per token, shown once like the user PIN.
    pub new_so_pin: Option<Pin>,
    pub pin_mode: PinMode,
    /// Tokens issued at once; `None`: all of them.
    pub parallelism: Option<usize>,
}

/// Where one token is in its issuance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStage {
    Queued,
    Initialising,
    SettingPin,
    GeneratingKey,
    Done,
    Failed,
}

impl TokenStage {
    /// Progress shown for the stage (a failed token keeps the percent it reached).
    pub fn percent(self) -> u8 {
        match self {
            TokenStage::Queued => 0,
            TokenStage::Initialising => 10,
            TokenStage::SettingPin => 40,
            TokenStage::GeneratingKey => 60,
            TokenStage::Done => 100,
            TokenStage::Failed => 0,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, TokenStage::Done | TokenStage::Failed)
    }
}

/// A token's failure: a stable code and a message without secrets or personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenFailure {
    pub code: &'static str,
    pub message: String,
}

impl TokenFailure {
    fn from_token_error(stage: TokenStage, e: &TokenError) -> Self {
        let code = match e {
            TokenError::PinIncorrect { .. } if stage == TokenStage::Initialising => {
                "factory_so_pin_wrong"
            }
            TokenError::PinLocked if stage == TokenStage::Initialising => "so_pin_locked",
            TokenError::PinIncorrect { .. } | TokenError::PinLocked => "pin_rejected",
            TokenError::PinInvalid(_) => "pin_invalid",
            TokenError::TokenRemoved | TokenError::TokenNotPresent(_) => "token_removed",
            TokenError::TokenExists(_) => "label_taken",
            TokenError::KeyExists(_) => "key_exists",
            TokenError::MechanismNotSupported(_) | TokenError::ProfileMismatch { .. } => {
                "mechanism_not_supported"
            }
            TokenError::Timeout(_) => "token_timeout",
            _ => "token_error",
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

/// The public view of one token in a batch (no PINs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenProgress {
    pub serial: String,
    /// The label it has now (`blank-…` until re-initialised).
    pub label: String,
    pub state: TokenStage,
    pub percent: u8,
    pub error: Option<TokenFailure>,
    pub public_key_pem: Option<String>,
}

/// PINs a token was given, kept until staff have seen them once.
#[derive(Default)]
pub struct IssuedSecrets {
    /// Random initial user PIN (`None` when staff gave the PIN).
    pub user_pin: Option<Pin>,
    /// Random new SO PIN (`None` when staff gave it).
    pub so_pin: Option<Pin>,
}

/// What a batch publishes.
#[derive(Debug, Clone)]
pub enum BatchEvent {
    /// One token changed state.
    Token(TokenProgress),
    /// Every token reached `done` or `failed`.
    Done,
}

struct TokenEntry {
    progress: TokenProgress,
    secrets: IssuedSecrets,
}

/// A point-in-time view of a batch.
#[derive(Debug, Clone, Serialize)]
pub struct BatchSnapshot {
    pub batch_id: String,
    pub algorithm: KeyAlgorithm,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub tokens: Vec<TokenProgress>,
}

impl BatchSnapshot {
    pub fn is_done(&self) -> bool {
        self.finished_ms.is_some()
    }
}

/// One running or finished batch.
pub struct Batch {
    pub id: String,
    pub algorithm: KeyAlgorithm,
    pub started_ms: u64,
    finished_ms: Mutex<Option<u64>>,
    tokens: Mutex<Vec<TokenEntry>>,
    events: broadcast::Sender<BatchEvent>,
    done: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Batch {
    fn new(algorithm: KeyAlgorithm, tokens: &[TokenInfo]) -> Self {
        let (events, _) = broadcast::channel(16 * tokens.len().max(1) + 16);
        let (done, _) = watch::channel(false);
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            algorithm,
            started_ms: now_ms().max(0) as u64,
            finished_ms: Mutex::new(None),
            tokens: Mutex::new(
                tokens
                    .iter()
                    .map(|t| TokenEntry {
                        progress: TokenProgress {
                            serial: t.serial.clone(),
                            label: t.label.clone(),
                            state: TokenStage::Queued,
                            percent: 0,
                            error: None,
                            public_key_pem: None,
                        },
                        secrets: IssuedSecrets::default(),
                    })
                    .collect(),
            ),
            events,
            done,
        }
    }

    /// Every state change from now on (take a [`Batch::snapshot`] after subscribing to see
    /// where each token already is).
    pub fn subscribe(&self) -> broadcast::Receiver<BatchEvent> {
        self.events.subscribe()
    }

    pub fn snapshot(&self) -> BatchSnapshot {
        BatchSnapshot {
            batch_id: self.id.clone(),
            algorithm: self.algorithm,
            started_ms: self.started_ms,
            finished_ms: *lock(&self.finished_ms),
            tokens: lock(&self.tokens)
                .iter()
                .map(|t| t.progress.clone())
                .collect(),
        }
    }

    pub fn is_done(&self) -> bool {
        *self.done.borrow()
    }

    /// Waits until every token reached a final state.
    pub async fn wait_done(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Serials of the tokens whose PINs [`Batch::take_secrets`] would hand out now.
    pub fn secrets_ready(&self) -> Vec<String> {
        lock(&self.tokens)
            .iter()
            .filter(|t| t.progress.state.is_final())
            .filter(|t| t.secrets.user_pin.is_some() || t.secrets.so_pin.is_some())
            .map(|t| t.progress.serial.clone())
            .collect()
    }

    /// The PINs of every token that reached a final state and whose PINs were not taken yet;
    /// each is handed out exactly once.
    pub fn take_secrets(&self) -> HashMap<String, IssuedSecrets> {
        let mut tokens = lock(&self.tokens);
        tokens
            .iter_mut()
            .filter(|t| t.progress.state.is_final())
            .filter(|t| t.secrets.user_pin.is_some() || t.secrets.so_pin.is_some())
            .map(|t| (t.progress.serial.clone(), std::mem::take(&mut t.secrets)))
            .collect()
    }

    fn update(&self, index: usize, change: impl FnOnce(&mut TokenEntry)) {
        let progress = {
            let mut tokens = lock(&self.tokens);
            let Some(entry) = tokens.get_mut(index) else {
                return;
            };
            change(entry);
            entry.progress.clone()
        };
        let _ = self.events.send(BatchEvent::Token(progress));
    }

    fn set_stage(&self, index: usize, stage: TokenStage) {
        self.update(index, |e| {
            e.progress.state = stage;
            e.progress.percent = stage.percent();
        });
    }

    fn finish(&self) {
        *lock(&self.finished_ms) = Some(now_ms().max(0) as u64);
        self.done.send_replace(true);
        let _ = self.events.send(BatchEvent::Done);
    }
}

/// A token counts as blank when it is initialised (it has the factory SO PIN) and its user
/// PIN was never set. Uninitialised slots are not offered: they have no factory SO PIN.
pub fn is_blank(token: &TokenInfo) -> bool {
    token.initialized && token.pin_state == PinState::NotInitialized
}

/// A random PIN of `digits` decimal digits (uniform: bytes ≥ 250 are redrawn).
pub fn random_pin(digits: usize) -> Result<Pin, TokenError> {
    let mut pin = zeroize::Zeroizing::new(String::with_capacity(digits));
    while pin.len() < digits {
        let bytes = zeroize::Zeroizing::new(hsm::soft_crypto::random_bytes::<16>()?);
        for b in bytes.iter().filter(|b| **b < 250) {
            if pin.len() == digits {
                break;
            }
            pin.push(char::from(b'0' + b % 10));
        }
    }
    Ok(Pin::new(std::mem::take(&mut *pin)))
}

fn validate(plan: &BatchPlan) -> Result<(), BatchError> {
    let prefix = &plan.label_prefix;
    if prefix.is_empty()
        || prefix.len() > MAX_LABEL_PREFIX
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(BatchError::Invalid(format!(
            "label_prefix must be 1 to {MAX_LABEL_PREFIX} letters, digits, '-' or '_'"
        )));
    }
    if plan.key_label.is_empty() || plan.key_label.len() > 128 {
        return Err(BatchError::Invalid(
            "key label must be 1..=128 bytes".into(),
        ));
    }
    if plan.factory_so_pin.is_empty() {
        return Err(BatchError::Invalid("factory SO PIN is empty".into()));
    }
    if let PinMode::Given(pin) = &plan.pin_mode {
        if pin.expose().len() < 4 || pin.expose().len() > 64 {
            return Err(BatchError::Invalid(
                "user PIN must be 4 to 64 characters".into(),
            ));
        }
    }
    if plan.parallelism == Some(0) {
        return Err(BatchError::Invalid("parallelism must be at least 1".into()));
    }
    Ok(())
}

/// The token label for `serial`: `{prefix}-{serial}`, cut to 32 bytes.
pub fn token_label(prefix: &str, serial: &str) -> String {
    let mut label = format!("{prefix}-{serial}");
    while label.len() > 32 {
        label.pop();
    }
    label
}

/// The recent batches of this daemon.
#[derive(Default)]
pub struct Batches {
    batches: Mutex<VecDeque<Arc<Batch>>>,
    busy: Mutex<HashSet<String>>,
}

impl Batches {
    pub fn get(&self, id: &str) -> Option<Arc<Batch>> {
        lock(&self.batches).iter().find(|b| b.id == id).cloned()
    }

    /// Picks the tokens, registers the batch and starts issuing in the background.
    pub async fn start(
        self: &Arc<Self>,
        provider: Arc<dyn TokenProvider>,
        plan: BatchPlan,
    ) -> Result<Arc<Batch>, BatchError> {
        validate(&plan)?;
        let present = provider.list_tokens().await?;
        let chosen: Vec<TokenInfo> = match &plan.serials {
            None => present.into_iter().filter(is_blank).collect(),
            Some(serials) => {
                let mut seen = HashSet::new();
                let mut chosen = Vec::new();
                for serial in serials.iter().filter(|s| seen.insert(s.as_str())) {
                    let token = present
                        .iter()
                        .find(|t| &t.serial == serial)
                        .ok_or_else(|| BatchError::NotPresent(serial.clone()))?;
                    if !is_blank(token) {
                        return Err(BatchError::NotBlank(serial.clone()));
                    }
                    chosen.push(token.clone());
                }
                chosen
            }
        };
        if chosen.is_empty() {
            return Err(BatchError::NoBlankTokens);
        }
        if chosen.len() > MAX_TOKENS {
            return Err(BatchError::Invalid(format!(
                "at most {MAX_TOKENS} tokens per batch"
            )));
        }
        {
            let mut busy = lock(&self.busy);
            if let Some(taken) = chosen.iter().find(|t| busy.contains(&t.serial)) {
                return Err(BatchError::Busy(taken.serial.clone()));
            }
            busy.extend(chosen.iter().map(|t| t.serial.clone()));
        }
        let batch = Arc::new(Batch::new(plan.algorithm, &chosen));
        {
            let mut batches = lock(&self.batches);
            while batches.len() >= KEPT_BATCHES {
                match batches.iter().position(|b| b.is_done()) {
                    Some(oldest_done) => {
                        batches.remove(oldest_done);
                    }
                    None => break,
                }
            }
            batches.push_back(Arc::clone(&batch));
        }
        tracing::info!(batch = %batch.id, tokens = chosen.len(), algorithm = plan.algorithm.name(), "batch issuance started");
        let registry = Arc::clone(self);
        let runner = Arc::clone(&batch);
        tokio::spawn(async move {
            run(provider, plan, &runner, &chosen).await;
            let mut busy = lock(&registry.busy);
            for token in &chosen {
                busy.remove(&token.serial);
            }
        });
        Ok(batch)
    }
}

/// Issues every token, `parallelism` at a time, then marks the batch done.
async fn run(
    provider: Arc<dyn TokenProvider>,
    plan: BatchPlan,
    batch: &Arc<Batch>,
    tokens: &[TokenInfo],
) {
    let permits = Arc::new(Semaphore::new(
        plan.parallelism
            .unwrap_or(tokens.len())
            .clamp(1, tokens.len().max(1)),
    ));
    let plan = Arc::new(plan);
    let mut tasks = tokio::task::JoinSet::new();
    for (index, token) in tokens.iter().enumerate() {
        let (provider, plan, batch, permits) = (
            Arc::clone(&provider),
            Arc::clone(&plan),
            Arc::clone(batch),
            Arc::clone(&permits),
        );
        let serial = token.serial.clone();
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            issue_token(provider.as_ref(), &plan, &batch, index, &serial).await;
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            tracing::error!(batch = %batch.id, error = %e, "issuance task failed");
        }
    }
    // A task that died without a final state still ends the batch as failed.
    let unfinished: Vec<usize> = lock(&batch.tokens)
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.progress.state.is_final())
        .map(|(i, _)| i)
        .collect();
    for index in unfinished {
        batch.update(index, |e| {
            e.progress.state = TokenStage::Failed;
            e.progress.error = Some(TokenFailure {
                code: "internal",
                message: "issuance stopped unexpectedly".into(),
            });
        });
    }
    tracing::info!(batch = %batch.id, "batch issuance finished");
    batch.finish();
}

/// One token through its state machine; a failure ends it `failed` with a typed code.
async fn issue_token(
    provider: &dyn TokenProvider,
    plan: &BatchPlan,
    batch: &Batch,
    index: usize,
    serial: &str,
) {
    let mut stage = TokenStage::Initialising;
    let result = issue_token_steps(provider, plan, batch, index, serial, &mut stage).await;
    match result {
        Ok(public_key_pem) => {
            batch.update(index, |e| {
                e.progress.state = TokenStage::Done;
                e.progress.percent = TokenStage::Done.percent();
                e.progress.public_key_pem = Some(public_key_pem);
            });
        }
        Err(error) => {
            let failure = TokenFailure::from_token_error(stage, &error);
            tracing::warn!(batch = %batch.id, serial, stage = ?stage, code = failure.code, error = %error, "token issuance failed");
            batch.update(index, |e| {
                e.progress.state = TokenStage::Failed;
                e.progress.error = Some(failure);
            });
        }
    }
}

async fn issue_token_steps(
    provider: &dyn TokenProvider,
    plan: &BatchPlan,
    batch: &Batch,
    index: usize,
    serial: &str,
    stage: &mut TokenStage,
) -> Result<String, TokenError> {
    let label = token_label(&plan.label_prefix, serial);
    let (so_pin, random_so) = match &plan.new_so_pin {
        Some(pin) => (pin.clone(), false),
        None => (random_pin(SO_PIN_DIGITS)?, true),
    };
    let (user_pin, random_user) = match &plan.pin_mode {
        PinMode::Given(pin) => (pin.clone(), false),
        PinMode::Random => (random_pin(USER_PIN_DIGITS)?, true),
    };

    *stage = TokenStage::Initialising;
    batch.set_stage(index, *stage);
    let info = provider
        .reinit_token(serial, &plan.factory_so_pin, &label, &so_pin)
        .await?;
    // From here on the token answers to the new SO PIN: keep it for staff even if a later
    // step fails, so the token can be recovered.
    batch.update(index, |e| {
        e.progress.label = info.label.clone();
        if random_so {
            e.secrets.so_pin = Some(so_pin.clone());
        }
    });

    *stage = TokenStage::SettingPin;
    batch.set_stage(index, *stage);
    let token = provider.open_token(&info.label).await?;
    token.unblock_user_pin(&so_pin, &user_pin).await?;
    if random_user {
        batch.update(index, |e| e.secrets.user_pin = Some(user_pin.clone()));
    }

    *stage = TokenStage::GeneratingKey;
    batch.set_stage(index, *stage);
    token.login(UserKind::User, &user_pin).await?;
    let generated = token
        .generate_key_pair(&plan.key_label, plan.algorithm)
        .await;
    let _ = token.logout().await;
    let key = generated?;
    hsm::soft_crypto::public_key_pem(key.algorithm, &key.public_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use hsm::soft::{SoftOptions, SoftProvider};
    use hsm::{Token, TokenEvent};

    const FACTORY: &str = "factory-0000";

    /// The soft provider, except that one token "is pulled" once re-initialised.
    struct PullsOneToken {
        inner: Arc<SoftProvider>,
        pulled_serial: String,
        pulled_label: Mutex<Option<String>>,
    }

    #[async_trait]
    impl TokenProvider for PullsOneToken {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        async fn list_tokens(&self) -> hsm::Result<Vec<TokenInfo>> {
            self.inner.list_tokens().await
        }
        async fn open_token(&self, label: &str) -> hsm::Result<Arc<dyn Token>> {
            if lock(&self.pulled_label).as_deref() == Some(label) {
                return Err(TokenError::TokenRemoved);
            }
            self.inner.open_token(label).await
        }
        async fn init_token(&self, label: &str, so: &Pin, user: &Pin) -> hsm::Result<TokenInfo> {
            self.inner.init_token(label, so, user).await
        }
        async fn reinit_token(
            &self,
            serial: &str,
            so_pin: &Pin,
            new_label: &str,
            new_so_pin: &Pin,
        ) -> hsm::Result<TokenInfo> {
            let info = self
                .inner
                .reinit_token(serial, so_pin, new_label, new_so_pin)
                .await?;
            if serial == self.pulled_serial {
                *lock(&self.pulled_label) = Some(info.label.clone());
            }
            Ok(info)
        }
        async fn refresh(&self) -> hsm::Result<Vec<TokenEvent>> {
            self.inner.refresh().await
        }
        fn events(&self) -> broadcast::Receiver<TokenEvent> {
            self.inner.events()
        }
    }

    /// Soft tokens in the factory state (SO PIN set, user PIN never set); returns serials.
    async fn factory_tokens(soft: &SoftProvider, so_pins: &[&str]) -> Vec<String> {
        let mut serials = Vec::new();
        for (i, so) in so_pins.iter().enumerate() {
            let label = format!("blank-{i}");
            let made = soft
                .init_token(&label, &Pin::new(*so), &Pin::new("0000"))
                .await
                .unwrap();
            let blank = soft
                .reinit_token(&made.serial, &Pin::new(*so), &label, &Pin::new(*so))
                .await
                .unwrap();
            assert!(is_blank(&blank));
            serials.push(blank.serial);
        }
        serials
    }

    fn plan(serials: Option<Vec<String>>) -> BatchPlan {
        BatchPlan {
            serials,
            algorithm: KeyAlgorithm::P256,
            label_prefix: "UKEY".into(),
            key_label: "holder-sign".into(),
            factory_so_pin: Pin::new(FACTORY),
            new_so_pin: None,
            pin_mode: PinMode::Random,
            parallelism: Some(2),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_factory_pin_and_a_pulled_token_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let soft = SoftProvider::open(SoftOptions {
            dir: dir.path().to_path_buf(),
            secret: zeroize::Zeroizing::new("batch-test".into()),
            sm2_distid: "1234567812345678".into(),
            max_tries: 5,
        })
        .unwrap();
        let serials = factory_tokens(&soft, &[FACTORY, FACTORY, "other-factory", FACTORY]).await;
        let provider = Arc::new(PullsOneToken {
            inner: Arc::clone(&soft),
            pulled_serial: serials[3].clone(),
            pulled_label: Mutex::new(None),
        });
        let batches = Arc::new(Batches::default());
        let batch = batches.start(provider.clone(), plan(None)).await.unwrap();
        let mut events = batch.subscribe();
        // While it runs, the same tokens cannot join another batch.
        if !batch.is_done() {
            assert!(matches!(
                batches
                    .start(provider.clone(), plan(Some(vec![serials[0].clone()])))
                    .await,
                Err(BatchError::Busy(_) | BatchError::NotBlank(_))
            ));
        }
        tokio::time::timeout(std::time::Duration::from_secs(30), batch.wait_done())
            .await
            .expect("batch ends");
        let mut seen_done = false;
        while let Ok(event) = events.try_recv() {
            seen_done |= matches!(event, BatchEvent::Done);
        }
        assert!(seen_done || batch.is_done());

        let snapshot = batch.snapshot();
        let state_of = |serial: &str| {
            snapshot
                .tokens
                .iter()
                .find(|t| t.serial == serial)
                .unwrap()
                .clone()
        };
        for serial in &serials[..2] {
            let t = state_of(serial);
            assert_eq!(t.state, TokenStage::Done, "{t:?}");
            assert_eq!(t.percent, 100);
            assert_eq!(t.label, token_label("UKEY", serial));
            assert!(t.public_key_pem.unwrap().contains("BEGIN PUBLIC KEY"));
        }
        let wrong = state_of(&serials[2]);
        assert_eq!(wrong.state, TokenStage::Failed);
        assert_eq!(wrong.error.unwrap().code, "factory_so_pin_wrong");
        assert_eq!(wrong.label, "blank-2");
        let pulled = state_of(&serials[3]);
        assert_eq!(pulled.state, TokenStage::Failed);
        assert_eq!(pulled.error.unwrap().code, "token_removed");

        // PINs are handed out once: the issued tokens' user PINs open them.
        let mut secrets = batch.take_secrets();
        assert!(batch.take_secrets().is_empty(), "PINs handed out twice");
        assert!(
            !secrets.contains_key(&serials[2]),
            "no PIN for an untouched token"
        );
        // The pulled token's new SO PIN is kept for staff: it was set before the pull.
        assert!(secrets[&serials[3]].so_pin.is_some());
        for serial in &serials[..2] {
            let issued = secrets.remove(serial).unwrap();
            let token = soft.open_token(&token_label("UKEY", serial)).await.unwrap();
            token
                .login(UserKind::User, issued.user_pin.as_ref().unwrap())
                .await
                .unwrap();
            token.key("holder-sign").await.unwrap();
        }
        // The wrong-PIN token is still blank and can be issued with its own factory PIN.
        let untouched = soft.list_tokens().await.unwrap();
        assert!(
            untouched
                .iter()
                .any(|t| t.serial == serials[2] && is_blank(t))
        );
    }

    #[tokio::test]
    async fn start_refuses_bad_requests_without_touching_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let soft = SoftProvider::open(SoftOptions {
            dir: dir.path().to_path_buf(),
            secret: zeroize::Zeroizing::new("batch-test".into()),
            sm2_distid: "1234567812345678".into(),
            max_tries: 5,
        })
        .unwrap();
        let batches = Arc::new(Batches::default());
        assert!(matches!(
            batches.start(soft.clone(), plan(None)).await,
            Err(BatchError::NoBlankTokens)
        ));
        let issued = soft
            .init_token("issued", &Pin::new(FACTORY), &Pin::new("1234"))
            .await
            .unwrap();
        assert!(matches!(
            batches
                .start(soft.clone(), plan(Some(vec![issued.serial])))
                .await,
            Err(BatchError::NotBlank(_))
        ));
        assert!(matches!(
            batches
                .start(soft.clone(), plan(Some(vec!["nope".into()])))
                .await,
            Err(BatchError::NotPresent(_))
        ));
        let mut bad = plan(None);
        bad.label_prefix = "has space".into();
        assert!(matches!(
            batches.start(soft.clone(), bad).await,
            Err(BatchError::Invalid(_))
        ));
    }

    #[test]
    fn random_pins_are_digits_of_the_asked_length_and_vary() {
        let pins: HashSet<String> = (0..20)
            .map(|_| random_pin(USER_PIN_DIGITS).unwrap().expose().to_owned())
            .collect();
        assert!(
            pins.iter()
                .all(|p| p.len() == USER_PIN_DIGITS && p.bytes().all(|b| b.is_ascii_digit()))
        );
        assert!(pins.len() > 1, "20 random PINs were all equal");
    }

    #[test]
    fn labels_fit_in_32_bytes() {
        assert_eq!(token_label("UKEY", "abc"), "UKEY-abc");
        assert_eq!(
            token_label("UKEY-BRANCH-001", "0123456789abcdef0123").len(),
            32
        );
    }

    #[test]
    fn failures_get_stable_codes_by_stage() {
        let wrong = TokenError::PinIncorrect { retries_left: None };
        assert_eq!(
            TokenFailure::from_token_error(TokenStage::Initialising, &wrong).code,
            "factory_so_pin_wrong"
        );
        assert_eq!(
            TokenFailure::from_token_error(TokenStage::GeneratingKey, &wrong).code,
            "pin_rejected"
        );
        assert_eq!(
            TokenFailure::from_token_error(TokenStage::SettingPin, &TokenError::TokenRemoved).code,
            "token_removed"
        );
    }
}
