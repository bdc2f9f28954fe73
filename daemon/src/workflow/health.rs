//! The kiosk's health as a screen or a probe sees it: version, uptime, store schema, whether
//! intake is open (disk space), whether an applicant is being served, the sync backlog; and
//! its liveness as systemd's watchdog needs it: do the event loop, the store and the device
//! token answer within a bound.

use std::time::Duration;

use serde::Serialize;

use super::{Error, Kiosk, Result, blocking};

/// Which part of the kiosk did not answer within the bound, and how (no personal values:
/// a part's name and a technical reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part} did not answer: {reason}")]
pub struct Unresponsive {
    /// `event loop`, `store` or `device token`.
    pub part: &'static str,
    pub reason: String,
}

#[derive(Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    pub kiosk_id: String,
    pub uptime_ms: u128,
    pub store_schema: i64,
    pub intake: &'static str,
    pub intake_detail: Option<String>,
    pub applicant_session_active: bool,
    pub sync_backlog: u64,
    /// HQ's witness of the audit log: `state` (`none`, `verified`, `unverified`,
    /// `invalid`) and, when a cosignature was refused, why.
    pub witness: Option<crate::sync::WitnessStatus>,
}

impl Kiosk {
    /// The kiosk's health now.
    pub async fn health(&self) -> Result<Health> {
        let st = self.clone();
        let (store_schema, sync_backlog, witness) = blocking(move || {
            let schema = st.store.schema_version()?;
            let backlog = crate::sync::status(&st.store)
                .map(|s| s.backlog)
                .unwrap_or(0);
            let witness = crate::sync::witness_status(&st.store).ok();
            Ok((schema, backlog, witness))
        })
        .await?;
        let intake = crate::intake::check(&self.store_dir(), self.config.store.min_free_bytes);
        Ok(Health {
            status: "ok",
            version: env!("CARGO_PKG_VERSION"),
            kiosk_id: self.config.kiosk.id.clone(),
            uptime_ms: self.started.elapsed().as_millis(),
            store_schema,
            intake: if intake.is_ok() { "open" } else { "paused" },
            intake_detail: intake.err().map(|e| e.to_string()),
            applicant_session_active: self.sessions.active(),
            sync_backlog,
            witness,
        })
    }
}

impl Kiosk {
    /// Whether the kiosk is alive: a task spawned on the event loop runs, the store answers a
    /// trivial query (its schema version) and the device token its info, each within `bound`. A part that hangs
    /// is left hanging (its blocking thread is not stopped); the caller stops vouching for
    /// the kiosk, and systemd restarts it.
    pub async fn liveness(&self, bound: Duration) -> std::result::Result<(), Unresponsive> {
        let within = |part: &'static str, outcome: Option<Result<()>>| match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(Unresponsive {
                part,
                reason: e.message,
            }),
            None => Err(Unresponsive {
                part,
                reason: format!("no answer within {} ms", bound.as_millis()),
            }),
        };
        let event_loop = tokio::time::timeout(bound, tokio::spawn(async {})).await;
        within(
            "event loop",
            event_loop
                .ok()
                .map(|r| r.map_err(|_| Error::internal("a task failed"))),
        )?;
        let st = self.clone();
        // The schema version: the connection's lock, then the database file's header.
        let store = blocking(move || Ok(st.store.schema_version().map(drop)?));
        within("store", tokio::time::timeout(bound, store).await.ok())?;
        let token = self.keys.signer.token();
        let info = async move { token.info().await.map(drop).map_err(Error::from) };
        within("device token", tokio::time::timeout(bound, info).await.ok())
    }
}
