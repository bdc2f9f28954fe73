//! Hot-plug: a `nusb` watcher reports arrival and removal of configured USB VID:PID pairs
//! (UKEYs, HSMs) and makes the provider refresh its slots; where USB events are unavailable
//! a poller re-reads the slot list (`C_GetSlotList`) at an interval.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::token::TokenProvider;
use crate::types::TokenEvent;
use crate::{Result, TokenError};

/// A USB vendor and product id pair (`"096e:0703"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsbId {
    pub vendor_id: u16,
    pub product_id: u16,
}

impl std::str::FromStr for UsbId {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            TokenError::Config(format!(
                "USB id {s:?} is not VID:PID in hex (e.g. 096e:0703)"
            ))
        };
        let (v, p) = s.split_once(':').ok_or_else(bad)?;
        if v.len() != 4 || p.len() != 4 {
            return Err(bad());
        }
        Ok(Self {
            vendor_id: u16::from_str_radix(v, 16).map_err(|_| bad())?,
            product_id: u16::from_str_radix(p, 16).map_err(|_| bad())?,
        })
    }
}

/// Polls the provider's slot list every `interval`; events go to the provider's subscribers.
pub fn spawn_slot_poller(provider: Arc<dyn TokenProvider>, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Said once when refreshes start failing and once when they work again: a poll every
        // half second must not flood the log while the middleware is down.
        let mut failing = false;
        loop {
            ticker.tick().await;
            match provider.refresh().await {
                Err(e) if !failing => {
                    tracing::warn!(provider = %provider.describe(), error = %e, "slot refresh failed");
                    failing = true;
                }
                Ok(_) if failing => {
                    tracing::info!(provider = %provider.describe(), "slot refresh works again");
                    failing = false;
                }
                _ => {}
            }
        }
    })
}

/// Watches USB hot-plug for the configured ids and refreshes the provider's slots on every
/// matching arrival or any removal. Fails where the platform has no hot-plug support; the
/// caller then falls back to [`spawn_slot_poller`].
pub fn spawn_usb_watcher(
    provider: Arc<dyn TokenProvider>,
    ids: Vec<UsbId>,
    on_event: tokio::sync::mpsc::UnboundedSender<TokenEvent>,
) -> Result<JoinHandle<()>> {
    let mut watch = nusb::watch_devices()
        .map_err(|e| TokenError::Config(format!("USB hot-plug unavailable: {e}")))?;
    Ok(tokio::spawn(async move {
        while let Some(event) = watch.next().await {
            let token_event = match event {
                nusb::hotplug::HotplugEvent::Connected(info) => {
                    let id = UsbId {
                        vendor_id: info.vendor_id(),
                        product_id: info.product_id(),
                    };
                    if !ids.contains(&id) {
                        continue;
                    }
                    TokenEvent::UsbArrived {
                        vendor_id: id.vendor_id,
                        product_id: id.product_id,
                    }
                }
                nusb::hotplug::HotplugEvent::Disconnected(_) => TokenEvent::UsbRemoved,
            };
            let _ = on_event.send(token_event);
            // The middleware may need a moment to expose the slot; a refresh that misses it is
            // caught by the poller or the next event.
            if let Err(e) = provider.refresh().await {
                tracing::warn!(error = %e, "slot refresh after USB event failed");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_usb_ids() {
        let id: UsbId = "096e:0703".parse().unwrap();
        assert_eq!(
            id,
            UsbId {
                vendor_id: 0x096e,
                product_id: 0x0703
            }
        );
        for bad in ["096e", "096e:07031", "zzzz:0703", ""] {
            assert!(bad.parse::<UsbId>().is_err());
        }
    }
}
