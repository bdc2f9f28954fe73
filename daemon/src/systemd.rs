//! systemd integration: `READY=1`/`STOPPING=1` through sd_notify and watchdog
//! pings at half the interval systemd asks for. Everything is a no-op when
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

/// Ping the watchdog until `cancel` fires, if systemd enabled one.
pub async fn watchdog(cancel: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => send(&[NotifyState::Watchdog]),
        }
    }
}
