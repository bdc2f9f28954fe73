//! The kiosk's use cases as plain Rust: the applicant's application step by step (session
//! and consent, card read, binding and verification, enterprise declaration, face, issuance,
//! signing, certificate lifecycle, rights requests) and the staff desk (login, status,
//! reveal, rights completion, batch issuance). Each use case is a function on [`Kiosk`], the
//! type that holds the dependencies (store, tokens, devices, CA link, sealer, events), with
//! typed inputs, typed outcomes and one error type, [`Error`]. None of them knows HTTP: the
//! API (the `api` module) and any other front door only authenticate, decode, call one use case
//! and map its outcome.
//!
//! Each step checks the session's consent against the catalog before it collects anything,
//! states the purpose at the moment it asks for an ID, mobile or bank number, and records
//! what it did in the audit log in the same transaction as the data it stores.
//!
//! May call: the store, privacy, audit, tokens (`hsm`), devices (`drivers`), sync, the CA
//! client. Must never call: the `api` and `app` modules (they call it).

pub mod batches;
pub mod certificate;
pub mod enterprise;
pub mod error;
pub mod face;
pub mod health;
pub mod hotplug;
pub mod idcard;
pub mod issuance;
pub mod plan;
pub mod rights;
pub mod sessions;
pub mod simulator;
pub mod staff;
pub mod ukey;
pub mod ukey_admin;
pub mod verification;

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

pub use error::{Error, ErrorKind, Result};

use crate::audit::{self, Actor, AuditEvent};
use crate::clock::now_ms;
use crate::privacy::consent::Ledger;
use crate::session::ApplicantSession;
use crate::store::Store;
use plan::Step;

/// What every use case can reach: the kiosk's resources, each with one owner.
#[derive(Clone)]
pub struct Kiosk {
    pub config: Arc<kiosk_config::Config>,
    pub store: Store,
    pub started: Instant,
    pub catalog: Arc<kiosk_config::Catalog>,
    pub keys: Arc<crate::token_keys::KioskKeys>,
    pub sessions: Arc<crate::session::Sessions>,
    pub devices: Arc<crate::devices::Devices>,
    pub staff: Arc<crate::staff::StaffAuth>,
    /// What applicant sessions hold in memory only (biometrics, guardians).
    pub memory: Arc<crate::session::SessionMemory>,
    /// Where applicants' UKEYs (and blank UKEYs for batch issuance) are reached (`[ukey]`).
    pub ukeys: Arc<dyn hsm::TokenProvider>,
    /// Live events for the screens (devices, step progress, PIN state).
    pub events: crate::events::Events,
    /// Identity verification services (carrier, bank, photo comparison).
    pub verifier: Arc<dyn crate::verify::Verifier>,
    /// Card-binding comparers (finger vs card, face vs card photo).
    pub binding: Arc<verification::Binding>,
    /// HQ's record key for sealing applicant records (set when the link to HQ is up).
    pub hq_recipient: Arc<crate::sync::HqRecipient>,
    /// The certificate authority (set when the link to HQ/the CA is up).
    pub ca: Arc<crate::ca_client::CaLink>,
    /// The simulated UKEY slot (simulated kiosks with soft UKEYs only).
    pub ukey_sim: Option<Arc<crate::ukey_sim::SimUkeySlot>>,
    /// Staff batch issuances running or finished since the start.
    pub batches: Arc<crate::batch::Batches>,
}

impl Kiosk {
    /// The directory of the store (its free space gates intake).
    pub fn store_dir(&self) -> std::path::PathBuf {
        self.store
            .path()
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Append one audit entry in a transaction of its own.
    pub async fn record_event(
        &self,
        actor: Actor,
        action: &'static str,
        subject: Option<[u8; 32]>,
        detail: serde_json::Value,
    ) -> Result<()> {
        let st = self.clone();
        blocking(move || {
            let mut conn = st.store.conn()?;
            audit::record(
                &mut conn,
                now_ms(),
                &AuditEvent {
                    actor,
                    action,
                    subject,
                    detail,
                },
            )?;
            Ok(())
        })
        .await
    }

    /// Refuse a step whose prerequisites are not done, naming the missing one.
    pub fn require_ready(&self, session: &ApplicantSession, step: Step) -> Result<()> {
        let done = self.memory.progress(&session.id).done;
        plan::ready_for(step, &done).map_err(|missing| {
            Error::conflict(
                "step_out_of_order",
                format!(
                    "the {} step needs the {} step first",
                    step.as_str(),
                    missing.as_str()
                ),
            )
            .with_details(json!({ "missing": missing.as_str() }))
        })
    }

    /// Refuse a use case that belongs to another service than the session's.
    pub fn require_service(
        session: &ApplicantSession,
        service: &str,
        message: &'static str,
    ) -> Result<()> {
        if session.service == service {
            Ok(())
        } else {
            Err(Error::conflict("wrong_service", message))
        }
    }

    /// Check the collection consent of each of `items` for the session's service.
    pub async fn require_consent(
        &self,
        session: &ApplicantSession,
        items: &'static [&'static str],
    ) -> Result<()> {
        let st = self.clone();
        let s = session.clone();
        blocking(move || {
            let conn = st.store.conn()?;
            let ledger = Ledger {
                catalog: &st.catalog,
                session: &s.id,
            };
            for item in items {
                ledger.require(&conn, &s.service, None, item)?;
            }
            Ok(())
        })
        .await
    }

    /// The subjects table's reader with this kiosk's keys and cipher.
    pub fn subjects(&self) -> crate::store::subjects::Subjects<'_> {
        crate::store::subjects::Subjects {
            catalog: &self.catalog,
            keys: self.keys.vault.as_ref(),
            cipher: self.config.store.cipher.into(),
        }
    }
}

/// Run store work on a blocking thread.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::internal("a store task failed"))?
}
