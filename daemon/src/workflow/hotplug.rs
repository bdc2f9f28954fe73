//! UKEYs arriving and leaving while the kiosk runs. The UKEY provider's token events (from the
//! USB watcher, the slot poller or any other refresh of its slot list) reach the screens: an
//! applicant's stream learns only whether a UKEY is present, the staff console's stream also
//! which token (its label and serial). And the staff console's live stream itself.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::Stream;
use hsm::TokenEvent;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::Kiosk;
use crate::events::for_staff;

/// One item of the staff console's event stream.
#[derive(Debug)]
pub enum StaffStreamItem {
    /// The stream is live (sent first).
    Hello,
    /// An event of the kiosk (`device`, `token`).
    Event {
        kind: &'static str,
        data: serde_json::Value,
    },
    /// A slow reader lost this many events.
    Lagged(u64),
}

/// How often the staff stream checks that its staff session is still open.
const STAFF_CHECK: Duration = Duration::from_secs(2);

/// The UKEYs present now: serial → label.
type Present = BTreeMap<String, String>;

impl Kiosk {
    /// Relay the UKEY provider's arrivals and removals to the screens until `stop`. The
    /// device token (when the UKEYs share its module) is not a UKEY and is never announced;
    /// the applicant's screen is told whether a UKEY other than a logged-in staff member's is
    /// present.
    pub async fn relay_ukey_events(self, stop: CancellationToken) {
        // Subscribe before listing: an arrival in between is seen as already present.
        let mut rx = self.ukeys.events();
        let mut present = self.present_ukeys().await;
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = rx.recv() => event,
            };
            match event {
                Ok(TokenEvent::Inserted { label, serial }) => {
                    if !self.is_device_token(&label) && !present.contains_key(&serial) {
                        present.insert(serial.clone(), label.clone());
                        self.announce_ukey(&present, true, &label, &serial);
                    }
                }
                Ok(TokenEvent::Removed { label, serial }) => {
                    if present.remove(&serial).is_some() {
                        self.announce_ukey(&present, false, &label, &serial);
                    }
                }
                Ok(TokenEvent::UsbArrived { .. } | TokenEvent::UsbRemoved) => {}
                Err(RecvError::Lagged(_)) => {
                    let now = self.present_ukeys().await;
                    for (serial, label) in &present {
                        if !now.contains_key(serial) {
                            self.announce_ukey(&now, false, label, serial);
                        }
                    }
                    for (serial, label) in &now {
                        if !present.contains_key(serial) {
                            self.announce_ukey(&now, true, label, serial);
                        }
                    }
                    present = now;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    fn is_device_token(&self, label: &str) -> bool {
        label == self.config.token.device_token
    }

    /// The initialised UKEYs the provider lists now (none if it cannot say).
    async fn present_ukeys(&self) -> Present {
        match self.ukeys.list_tokens().await {
            Ok(list) => list
                .into_iter()
                .filter(|t| t.initialized && !self.is_device_token(&t.label))
                .map(|t| (t.serial, t.label))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the UKEYs present");
                Present::new()
            }
        }
    }

    fn announce_ukey(&self, present: &Present, arrived: bool, label: &str, serial: &str) {
        tracing::info!(
            arrived,
            ukeys_present = present.len(),
            "a UKEY {}",
            if arrived { "arrived" } else { "left" }
        );
        self.events.token(arrived, label, serial);
        // The applicant's screen hears of applicants' UKEYs: not of a logged-in staff member's.
        let staff = self.staff.token_serials();
        let applicants = present.keys().any(|s| !staff.contains(s));
        self.events.device("ukey", applicants);
    }

    /// The staff console's live events (device presence, tokens arriving and leaving) for
    /// the staff session of `staff_token`; the stream ends when that session does.
    pub fn staff_events(
        &self,
        staff_token: String,
    ) -> impl Stream<Item = StaffStreamItem> + Send + use<> {
        let rx = self.events.subscribe();
        futures::stream::unfold(
            (rx, self.clone(), staff_token, true),
            |(mut rx, kiosk, token, first)| async move {
                if first {
                    return Some((StaffStreamItem::Hello, (rx, kiosk, token, false)));
                }
                loop {
                    let next = tokio::time::timeout(STAFF_CHECK, rx.recv()).await;
                    if !kiosk.staff.is_active(&token) {
                        return None;
                    }
                    let item = match next {
                        Err(_) => continue,
                        Ok(Ok(ev)) if for_staff(&ev) => StaffStreamItem::Event {
                            kind: ev.kind,
                            data: ev.data,
                        },
                        Ok(Ok(_)) => continue,
                        Ok(Err(RecvError::Lagged(n))) => StaffStreamItem::Lagged(n),
                        Ok(Err(RecvError::Closed)) => return None,
                    };
                    return Some((item, (rx, kiosk, token, false)));
                }
            },
        )
    }
}
