//! systemd integration: `READY=1`/`STOPPING=1` through sd_notify and watchdog
//! pings at half the interval systemd asks for, sent only while kioskd answers (its liveness
//! probe: event loop, store, device token). Everything is a no-op when
//! `NOTIFY_SOCKET` is not set.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Tell systemd the daemon is ready to serve.
pub fn notify_ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tell systemd the daemon is stopping.
pub fn notify_stopping() {
    send(&[NotifyState::Stopping]);
}

/// The longest a liveness probe may take before the kiosk counts as wedged.
const PROBE_BOUND: Duration = Duration::from_secs(2);

/// Ping the watchdog until `cancel` fires, if systemd enabled one — but only while `alive`
/// answers `Ok` within its bound (a quarter of the interval, at most 2 s). While it does not,
/// no ping is sent (said once, at error level, with its reason), so systemd restarts kioskd.
pub async fn watchdog<F, Fut, E>(cancel: CancellationToken, alive: F)
where
    F: Fn(Duration) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(100));
    let bound = (interval / 4).min(PROBE_BOUND);
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog: pinging while the event loop, the store and the device token answer"
    );
    ping_while_alive(period, bound, cancel, alive, || {
        send(&[NotifyState::Watchdog])
    })
    .await;
}

/// Every `period`, probe `alive` with `bound` and `ping` only if it answered.
async fn ping_while_alive<F, Fut, E>(
    period: Duration,
    bound: Duration,
    cancel: CancellationToken,
    alive: F,
    ping: impl Fn(),
) where
    F: Fn(Duration) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let answer = tokio::select! {
            _ = cancel.cancelled() => return,
            answer = alive(bound) => answer,
        };
        match answer {
            Ok(()) => {
                if failing {
                    tracing::warn!("kioskd answers again; watchdog pings resume");
                    failing = false;
                }
                ping();
            }
            Err(e) => {
                if !failing {
                    tracing::error!(
                        reason = %e,
                        "kioskd is wedged; watchdog pings stop so that systemd restarts it"
                    );
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A wedged part must stop the pings (else systemd never restarts a hung kiosk), and
    /// pings resume once it answers again.
    #[tokio::test]
    async fn pings_stop_while_the_probe_fails_and_resume_when_it_answers() {
        let healthy = Arc::new(AtomicBool::new(true));
        let pings = Arc::new(AtomicUsize::new(0));
        let cancel = CancellationToken::new();
        let probe = {
            let healthy = healthy.clone();
            move |_bound: Duration| {
                let ok = healthy.load(Ordering::SeqCst);
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err("store did not answer")
                    }
                }
            }
        };
        let task = tokio::spawn({
            let (pings, cancel) = (pings.clone(), cancel.clone());
            async move {
                let ping = move || {
                    pings.fetch_add(1, Ordering::SeqCst);
                };
                ping_while_alive(
                    Duration::from_millis(10),
                    Duration::from_millis(5),
                    cancel,
                    probe,
                    ping,
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(pings.load(Ordering::SeqCst) >= 3, "no pings while healthy");
        healthy.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let stopped_at = pings.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            pings.load(Ordering::SeqCst),
            stopped_at,
            "pinged while wedged"
        );
        healthy.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            pings.load(Ordering::SeqCst) > stopped_at,
            "pings did not resume"
        );
        cancel.cancel();
        task.await.unwrap();
    }
}
