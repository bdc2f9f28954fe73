//! The kiosk's event bus: what the screen shows live (a device arrived or left, a card is
//! present, a step's progress, a UKEY's PIN state). Events carry no personal values; an event
//! tagged with a session is delivered only to that session's stream, an untagged one (device
//! presence) to every stream. A staff-only event (a token's label and serial) reaches only the
//! staff console's stream, never an applicant's. Slow readers lose old events, never block
//! the kiosk.

use serde::Serialize;
use tokio::sync::broadcast;

/// How many events a slow reader may fall behind before it skips.
const CAPACITY: usize = 256;

/// One event as the `/events` stream sends it (`event: <kind>`, `data: <json>`).
#[derive(Debug, Clone, Serialize)]
pub struct KioskEvent {
    /// Only this session's stream receives it (`None`: every stream).
    #[serde(skip)]
    pub session: Option<String>,
    /// Only the staff console's stream receives it (it names a token).
    #[serde(skip)]
    pub staff_only: bool,
    /// `step`, `device`, `pin` or (staff only) `token`.
    #[serde(skip)]
    pub kind: &'static str,
    pub data: serde_json::Value,
}

/// The publisher side, shared by the API and the device watchers.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<KioskEvent>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Events {
    pub fn subscribe(&self) -> broadcast::Receiver<KioskEvent> {
        self.tx.subscribe()
    }

    fn send(&self, event: KioskEvent) {
        // No reader is not an error: the screen may not be listening.
        let _ = self.tx.send(event);
    }

    /// A step of `session` reached `phase` (`percent` of the step done).
    pub fn step(&self, session: &str, step: &str, phase: &str, percent: u8) {
        self.send(KioskEvent {
            session: Some(session.to_string()),
            staff_only: false,
            kind: "step",
            data: serde_json::json!({ "step": step, "phase": phase, "percent": percent.min(100) }),
        });
    }

    /// A device arrived or left (`idcard`, `ukey`, `fingerprint`).
    pub fn device(&self, device: &str, present: bool) {
        self.send(KioskEvent {
            session: None,
            staff_only: false,
            kind: "device",
            data: serde_json::json!({ "device": device, "present": present }),
        });
    }

    /// The PIN state of the UKEY `session` is using.
    pub fn pin(&self, session: &str, state: &str, retries_left: Option<u32>) {
        self.send(KioskEvent {
            session: Some(session.to_string()),
            staff_only: false,
            kind: "pin",
            data: serde_json::json!({ "state": state, "retries_left": retries_left }),
        });
    }

    /// A token arrived (`present`) or left, for the staff console: its label and serial
    /// (a token's, not a person's).
    pub fn token(&self, present: bool, label: &str, serial: &str) {
        self.send(KioskEvent {
            session: None,
            staff_only: true,
            kind: "token",
            data: serde_json::json!({ "present": present, "label": label, "serial": serial }),
        });
    }
}

/// Whether `event` belongs on `session`'s stream.
pub fn for_session(event: &KioskEvent, session: &str) -> bool {
    !event.staff_only && event.session.as_deref().is_none_or(|s| s == session)
}

/// Whether `event` belongs on the staff console's stream: device presence and tokens, not an
/// applicant session's steps or PIN state.
pub fn for_staff(event: &KioskEvent) -> bool {
    event.session.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn session_events_reach_only_their_session_and_device_events_reach_all() {
        let bus = Events::default();
        let mut rx = bus.subscribe();
        bus.step("a", "ukey", "generating_key", 140);
        bus.device("ukey", true);
        let first = rx.recv().await.unwrap();
        assert!(for_session(&first, "a") && !for_session(&first, "b"));
        assert_eq!(first.data["percent"], 100);
        let second = rx.recv().await.unwrap();
        assert!(for_session(&second, "a") && for_session(&second, "b"));
        assert_eq!(second.kind, "device");
    }

    /// A token's label and serial are for staff: an applicant's stream never carries them.
    #[tokio::test]
    async fn token_names_reach_the_staff_stream_only() {
        let bus = Events::default();
        let mut rx = bus.subscribe();
        bus.token(true, "holder-ukey", "0123");
        bus.step("a", "ukey", "generating_key", 10);
        let token = rx.recv().await.unwrap();
        assert!(!for_session(&token, "a") && for_staff(&token));
        assert_eq!(token.data["serial"], "0123");
        let step = rx.recv().await.unwrap();
        assert!(!for_staff(&step));
    }
}
