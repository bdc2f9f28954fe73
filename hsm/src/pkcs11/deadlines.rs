//! Call deadlines of one session pool, kept by one watchdog thread instead of a runtime
//! timer per call: registering a call is a map insert, and the watchdog ticks (a fraction of
//! the call timeout) while calls are in flight, answering every overdue caller with
//! `Timeout` while its PKCS#11 call keeps its worker until the module returns. A per-call
//! `tokio::time::timeout` cost about as much CPU as the worker hop itself (measured with
//! `cargo bench -p hsm --bench signing`). The watchdog parks after a second without calls.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// What to do when a call is overdue (answer its caller with `Timeout`).
pub type Expire = Box<dyn FnOnce() + Send>;

struct Pending {
    deadline: Instant,
    expire: Expire,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    next_id: u64,
    watchdog_running: bool,
    watchdog_parked: bool,
}

/// The deadlines of in-flight calls.
pub struct Deadlines {
    timeout: Duration,
    tick: Duration,
    state: Mutex<State>,
    wake: Condvar,
}

/// How long the watchdog keeps ticking without calls before it parks.
const IDLE_BEFORE_PARK: Duration = Duration::from_secs(1);
/// How often a parked watchdog checks whether its pool still exists.
const PARKED_RECHECK: Duration = Duration::from_secs(5);

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Deadlines {
    pub fn new(timeout: Duration) -> Arc<Self> {
        let tick = (timeout / 20).clamp(Duration::from_millis(1), Duration::from_millis(100));
        Arc::new(Self {
            timeout,
            tick,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        })
    }

    /// Registers a call due in `timeout`; `expire` runs on the watchdog if it is not
    /// [`Deadlines::finish`]ed by then.
    pub fn start(self: &Arc<Self>, expire: Expire) -> u64 {
        let mut state = lock(&self.state);
        let id = state.next_id;
        state.next_id = state.next_id.wrapping_add(1);
        state.pending.insert(
            id,
            Pending {
                deadline: Instant::now() + self.timeout,
                expire,
            },
        );
        if !state.watchdog_running {
            state.watchdog_running = true;
            let weak = Arc::downgrade(self);
            let started = std::thread::Builder::new()
                .name("pkcs11-deadlines".into())
                .spawn(move || watchdog(weak));
            if started.is_err() {
                // No watchdog thread: the next call tries again; this one has no deadline.
                state.watchdog_running = false;
            }
        } else if state.watchdog_parked {
            state.watchdog_parked = false;
            self.wake.notify_one();
        }
        id
    }

    /// The call ended (answered or not): its deadline no longer applies.
    pub fn finish(&self, id: u64) {
        lock(&self.state).pending.remove(&id);
    }

    /// Runs the `expire` of every overdue call; whether calls are still in flight.
    fn expire_overdue(&self) -> bool {
        let now = Instant::now();
        let overdue: Vec<Expire> = {
            let mut state = lock(&self.state);
            let ids: Vec<u64> = state
                .pending
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| state.pending.remove(&id).map(|p| p.expire))
                .collect()
        };
        for expire in overdue {
            expire();
        }
        !lock(&self.state).pending.is_empty()
    }

    /// Parks the watchdog until a call starts, or for a while (so that a watchdog whose pool
    /// was dropped notices it and ends).
    fn park(&self) {
        let mut state = lock(&self.state);
        if !state.pending.is_empty() {
            return;
        }
        state.watchdog_parked = true;
        let (mut state, _) = self
            .wake
            .wait_timeout_while(state, PARKED_RECHECK, |s| s.watchdog_parked)
            .unwrap_or_else(|p| p.into_inner());
        state.watchdog_parked = false;
    }
}

fn watchdog(deadlines: Weak<Deadlines>) {
    let mut idle_since = Instant::now();
    loop {
        let Some(this) = deadlines.upgrade() else {
            return;
        };
        if this.expire_overdue() {
            idle_since = Instant::now();
        } else if idle_since.elapsed() >= IDLE_BEFORE_PARK {
            this.park();
            idle_since = Instant::now();
        }
        let tick = this.tick;
        drop(this);
        std::thread::sleep(tick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn an_overdue_call_is_expired_and_a_finished_one_is_not() {
        let deadlines = Deadlines::new(Duration::from_millis(40));
        let (expired, seen) = mpsc::channel();
        let slow = {
            let expired = expired.clone();
            deadlines.start(Box::new(move || expired.send("slow").unwrap()))
        };
        let fast = deadlines.start(Box::new(move || expired.send("fast").unwrap()));
        deadlines.finish(fast);
        let started = Instant::now();
        assert_eq!(seen.recv_timeout(Duration::from_secs(5)), Ok("slow"));
        assert!(started.elapsed() >= Duration::from_millis(30));
        // The finished call never expires; expiring the slow one removed it.
        assert!(seen.recv_timeout(Duration::from_millis(200)).is_err());
        deadlines.finish(slow);
    }

    #[test]
    fn the_watchdog_parks_when_idle_and_wakes_for_the_next_call() {
        let deadlines = Deadlines::new(Duration::from_millis(20));
        let (expired, seen) = mpsc::channel();
        let first = expired.clone();
        deadlines.start(Box::new(move || first.send(1).unwrap()));
        assert_eq!(seen.recv_timeout(Duration::from_secs(5)), Ok(1));
        let parked = Instant::now() + Duration::from_secs(4);
        while !lock(&deadlines.state).watchdog_parked {
            assert!(Instant::now() < parked, "watchdog never parked");
            std::thread::sleep(Duration::from_millis(20));
        }
        deadlines.start(Box::new(move || expired.send(2).unwrap()));
        assert_eq!(seen.recv_timeout(Duration::from_secs(5)), Ok(2));
    }
}
