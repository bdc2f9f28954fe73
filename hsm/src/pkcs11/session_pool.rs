//! The session pool of one PKCS#11 token: one dedicated worker thread per PKCS#11 session.
//! Each worker keeps its session open between calls; the async side only hands a job to an
//! idle worker (a bounded channel) and awaits its answer (a oneshot) within the call
//! timeout (kept by the pool's deadline watchdog, not a runtime timer per call), so a signature costs no blocking-pool hop, no session checkout and no handle
//! look-up. A semaphore caps concurrent calls at the number of sessions; workers are started
//! on demand up to that cap. Login state and key handles are cached for the whole token
//! (PKCS#11 login is per token, shared by its sessions). When the token says the sessions are
//! gone (removed, re-inserted, closed) the pool forgets login and handles, bumps its
//! generation so every worker drops its dead session before its next job, and re-finds the
//! token's slot by serial on the next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::deadlines::Deadlines;
use super::module::{map_error, run_blocking};
use crate::types::{KeyInfo, SecretKeyKind};
use crate::{Result, TokenError};

/// A cached private key handle with what we know about the key.
pub struct CachedKey {
    pub private: ObjectHandle,
    pub info: KeyInfo,
    /// SM2 keys: `Z_A` under the token's distinguishing id (hashed once, not per signature).
    pub sm2_z: Option<[u8; 32]>,
}

/// The session a worker keeps, tagged with the pool generation it was opened in.
#[derive(Default)]
struct WorkerSession {
    open: Option<(Session, u64)>,
}

type JobFn = Box<dyn FnOnce(&mut WorkerSession, ReturnToIdle) + Send>;

/// One call for a worker: `run` gets the worker's session and the guard that returns the
/// worker to the idle list (it drops the guard before answering the caller).
struct Job {
    run: JobFn,
    guard: ReturnToIdle,
}

/// What a worker is asked to do.
enum WorkerMessage {
    Call(Job),
    /// Close the session now (the token is gone or about to be re-initialised) and confirm.
    CloseSession(SyncSender<()>),
}

/// The sending end of one worker's channel.
struct WorkerHandle {
    messages: SyncSender<WorkerMessage>,
}

pub struct SessionPool {
    pub ctx: Pkcs11,
    pub label: String,
    pub serial: String,
    pub timeout: Duration,
    max_sessions: usize,
    slot: Mutex<Option<Slot>>,
    /// Bumped by [`SessionPool::forget`]: sessions opened in an older generation are dead.
    generation: AtomicU64,
    /// Workers waiting for a job, most recently used last (it is the likeliest still awake).
    idle: Mutex<Vec<WorkerHandle>>,
    workers: AtomicUsize,
    /// The worker threads, joined when the pool goes (see `Drop`).
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    deadlines: Arc<Deadlines>,
    permits: Arc<Semaphore>,
    logged_in: AtomicBool,
    pub keys: Mutex<HashMap<String, Arc<CachedKey>>>,
    pub secrets: Mutex<HashMap<String, (ObjectHandle, SecretKeyKind)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Returns a worker to the idle list when its job ends, even by unwinding, and only then
/// frees the caller's permit (so a permit holder always finds or may start a worker); ends
/// the call's deadline.
struct ReturnToIdle {
    pool: Arc<SessionPool>,
    handle: Option<WorkerHandle>,
    permit: Option<OwnedSemaphorePermit>,
    deadline: u64,
}

impl Drop for ReturnToIdle {
    fn drop(&mut self) {
        self.pool.deadlines.finish(self.deadline);
        if let Some(handle) = self.handle.take() {
            lock(&self.pool.idle).push(handle);
        }
        drop(self.permit.take());
    }
}

/// Where a call's answer goes: taken once, by its worker or by its deadline.
type AnswerSlot<T> = Arc<Mutex<Option<oneshot::Sender<Result<T>>>>>;

fn answer<T>(slot: &AnswerSlot<T>, result: Result<T>) {
    if let Some(sender) = lock(slot).take() {
        let _ = sender.send(result);
    }
}

/// How long an idle worker keeps polling for its next call before it sleeps: a caller that
/// signs in a loop hands the next call over within a few microseconds, and waking a sleeping
/// thread costs more (on a VM, tens of microseconds) than the polling.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(50);

/// Idle workers polling right now, across all pools: at most one fewer than the CPUs, so
/// that polling never takes the CPU that busy workers (and the token) need.
static POLLING: AtomicUsize = AtomicUsize::new(0);

fn may_poll() -> bool {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let limit = *LIMIT.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get().saturating_sub(1))
            .unwrap_or(0)
    });
    POLLING
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

/// The worker's next message: polled for a while when a polling slot is free, then waited
/// for. `None` when the pool is gone.
fn next_message(messages: &Receiver<WorkerMessage>) -> Option<WorkerMessage> {
    if may_poll() {
        let polled = poll(messages);
        POLLING.fetch_sub(1, Ordering::AcqRel);
        if !matches!(polled, Err(TryRecvError::Empty)) {
            return polled.ok();
        }
    }
    messages.recv().ok()
}

/// Polls `messages` for up to [`SPIN_BEFORE_SLEEP`]; `Empty` when nothing came.
fn poll(messages: &Receiver<WorkerMessage>) -> std::result::Result<WorkerMessage, TryRecvError> {
    let start = Instant::now();
    loop {
        match messages.try_recv() {
            Err(TryRecvError::Empty) if start.elapsed() < SPIN_BEFORE_SLEEP => {
                std::thread::yield_now();
            }
            other => return other,
        }
    }
}

fn worker_loop(messages: Receiver<WorkerMessage>) {
    let mut session = WorkerSession::default();
    while let Some(message) = next_message(&messages) {
        match message {
            WorkerMessage::Call(Job { run, guard }) => {
                // A panicking job must not take the worker (and its place in the pool) with
                // it; its session may be in an unknown state, so it is closed.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(&mut session, guard)
                }));
                if ran.is_err() {
                    session.open = None;
                }
            }
            WorkerMessage::CloseSession(done) => {
                session.open = None;
                let _ = done.send(());
            }
        }
    }
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
        let max_sessions = max_sessions.max(1);
        Self {
            ctx,
            label,
            serial,
            timeout,
            max_sessions,
            slot: Mutex::new(Some(slot)),
            generation: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
            workers: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
            deadlines: Deadlines::new(timeout),
            permits: Arc::new(Semaphore::new(max_sessions)),
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

    /// Forgets sessions, login state and handles: the token went away (or is about to be
    /// re-initialised, which PKCS#11 refuses while a session is open). Idle workers close
    /// their sessions before this returns (bounded by the call timeout); a busy worker closes
    /// its session, now of an old generation, before its next job.
    pub fn forget(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        *lock(&self.slot) = None;
        self.set_logged_in(false);
        lock(&self.keys).clear();
        lock(&self.secrets).clear();
        let closing: Vec<_> = lock(&self.idle)
            .iter()
            .filter_map(|worker| {
                let (done, closed) = sync_channel(1);
                // An idle worker's channel has room; a failure means the worker is gone.
                worker
                    .messages
                    .try_send(WorkerMessage::CloseSession(done))
                    .ok()
                    .map(|()| closed)
            })
            .collect();
        let deadline = Instant::now() + self.timeout;
        for closed in closing {
            let _ = closed.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
    }

    /// The worker's session, (re)opened if it has none or its generation is stale.
    fn session<'w>(&self, worker: &'w mut WorkerSession) -> Result<&'w Session> {
        let generation = self.generation.load(Ordering::Acquire);
        if matches!(&worker.open, Some((_, opened)) if *opened != generation) {
            worker.open = None;
        }
        if worker.open.is_none() {
            let slot = self.slot()?;
            let session = self.ctx.open_rw_session(slot).map_err(|e| {
                let mapped = map_error(e);
                if mapped.is_token_gone() {
                    *lock(&self.slot) = None;
                }
                mapped
            })?;
            worker.open = Some((session, generation));
        }
        match &worker.open {
            Some((session, _)) => Ok(session),
            None => Err(TokenError::TokenRemoved),
        }
    }

    /// Runs `f` with the worker's session and keeps the pool's state in line with the result.
    fn run_job<T, F>(&self, worker: &mut WorkerSession, f: F) -> Result<T>
    where
        F: FnOnce(&Session, &SessionPool) -> Result<T>,
    {
        let result = self.session(worker).and_then(|session| f(session, self));
        match &result {
            Err(e) if e.is_token_gone() => {
                worker.open = None;
                self.forget();
            }
            Err(TokenError::NotLoggedIn) => self.set_logged_in(false),
            _ => {}
        }
        result
    }

    /// An idle worker, or a new one while fewer than `max_sessions` run. The caller holds a
    /// permit, so busy workers are fewer than `max_sessions` and one of the two exists.
    fn idle_worker(&self) -> Result<WorkerHandle> {
        if let Some(handle) = lock(&self.idle).pop() {
            return Ok(handle);
        }
        let started = self.workers.fetch_add(1, Ordering::AcqRel);
        if started >= self.max_sessions {
            self.workers.fetch_sub(1, Ordering::AcqRel);
            return Err(worker_error("no idle session worker".into()));
        }
        // A worker is handed a call only when idle: room for that call and one close request.
        let (messages, receiver) = sync_channel::<WorkerMessage>(2);
        let spawned = std::thread::Builder::new()
            .name(format!("pkcs11-session-{started}"))
            .spawn(move || worker_loop(receiver));
        match spawned {
            Ok(thread) => lock(&self.threads).push(thread),
            Err(e) => {
                self.workers.fetch_sub(1, Ordering::AcqRel);
                return Err(worker_error(format!("cannot start a session worker: {e}")));
            }
        }
        Ok(WorkerHandle { messages })
    }

    /// Runs `f` with a session of this token on a session worker, within the call timeout.
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
        let handle = self.idle_worker()?;
        let messages = handle.messages.clone();
        let (sender, answered) = oneshot::channel();
        let slot: AnswerSlot<T> = Arc::new(Mutex::new(Some(sender)));
        let timeout = self.timeout;
        let expired = Arc::clone(&slot);
        let deadline = self.deadlines.start(Box::new(move || {
            answer(&expired, Err(TokenError::Timeout(timeout)));
        }));
        let job = Job {
            run: Box::new(move |worker: &mut WorkerSession, guard: ReturnToIdle| {
                let result = guard.pool.run_job(worker, f);
                // Back to idle (and the permit freed) before the caller sees the answer.
                drop(guard);
                answer(&slot, result);
            }),
            guard: ReturnToIdle {
                pool: Arc::clone(self),
                handle: Some(handle),
                permit: Some(permit),
                deadline,
            },
        };
        if let Err(rejected) = messages.try_send(WorkerMessage::Call(job)) {
            // Only a worker whose thread is gone refuses a call (an idle one has room for
            // it): forget that worker rather than return it to the idle list.
            if let TrySendError::Full(WorkerMessage::Call(mut job))
            | TrySendError::Disconnected(WorkerMessage::Call(mut job)) = rejected
            {
                job.guard.handle = None;
            }
            self.workers.fetch_sub(1, Ordering::AcqRel);
            return Err(worker_error("session worker stopped".into()));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(worker_error("session worker dropped the call".into())))
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

/// Closes every session before the pool is gone: each worker's channel closes, the worker
/// drops its session (`C_CloseSession`) and ends, and is joined here. Left to finish on their
/// own, workers closed sessions while the process exited, racing the module's own teardown
/// (SoftHSM2 aborted with a double free). Every worker is idle by now: a call in progress
/// holds the pool. The one exception is the worker whose finished call dropped the last
/// reference; it is this thread, ends after its call, and is not joined.
impl Drop for SessionPool {
    fn drop(&mut self) {
        lock(&self.idle).clear();
        let me = std::thread::current().id();
        for thread in std::mem::take(&mut *lock(&self.threads)) {
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
    }
}

fn worker_error(rv: String) -> TokenError {
    TokenError::Pkcs11 {
        function: "worker".into(),
        rv,
    }
}
