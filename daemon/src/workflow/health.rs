//! The kiosk's health as a screen or a probe sees it: version, uptime, store schema, whether
//! intake is open (disk space), whether an applicant is being served, the sync backlog.

use serde::Serialize;

use super::{Kiosk, Result, blocking};

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
