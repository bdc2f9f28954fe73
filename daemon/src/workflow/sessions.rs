//! Applicant sessions and consent: opening one (refused while another applicant is active
//! or while intake is paused for lack of disk), where it stands, consent — to the purpose,
//! then separately to each sensitive item and to transfers that need their own — and its
//! withdrawal, and closing it leaving no personal data behind. Nothing is pre-ticked: only
//! what the request names is granted.

use kiosk_config::Destination;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::plan::{self, Step};
use super::{Error, ErrorKind, Kiosk, Result, blocking};
use crate::audit::{self, Actor, AuditEvent};
use crate::clock::now_ms;
use crate::privacy::consent::{ConsentError, Ledger, Scope};
use crate::session::ApplicantSession;
use crate::store::Store;
use crate::store::subjects::Subjects;

#[derive(Serialize)]
pub struct ItemView {
    pub item: String,
    pub label: String,
    pub sensitivity: kiosk_config::Sensitivity,
    pub required: bool,
    pub separate_consent: bool,
    pub transfer_consent: Vec<Destination>,
}

#[derive(Serialize)]
pub struct MethodView {
    pub method: String,
    pub label: String,
    pub biometric: bool,
    /// Exactly what the method's external service receives.
    pub fields: Vec<String>,
    pub recipient: String,
}

/// A session just opened: its bearer token (shown once), what it will ask and why.
#[derive(Serialize)]
pub struct Opened {
    pub session_id: String,
    pub token: String,
    pub service: String,
    pub purpose: String,
    pub policy_version: String,
    pub items: Vec<ItemView>,
    pub methods: Vec<MethodView>,
    pub idle_timeout_secs: u64,
}

#[derive(Serialize)]
pub struct SessionView {
    pub session_id: String,
    pub service: String,
    pub consents: Vec<serde_json::Value>,
    pub workflow: WorkflowView,
}

/// Where the applicant is: the steps done, the next one and what it asks for (with why).
#[derive(Serialize)]
pub struct WorkflowView {
    pub state: Step,
    pub completed: Vec<Step>,
    pub steps: Vec<Step>,
    pub next: NextView,
}

#[derive(Serialize)]
pub struct NextView {
    pub step: Step,
    pub asks: Vec<plan::Ask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferConsent {
    pub item: String,
    pub destination: Destination,
}

/// What the applicant consents to; nothing else is granted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    /// Consent to the purpose (the service) itself.
    #[serde(default)]
    pub purpose: bool,
    /// Items consented to separately (sensitive and biometric ones need it).
    #[serde(default)]
    pub items: Vec<String>,
    /// Transfers that need their own consent (face image to a verifier).
    #[serde(default)]
    pub transfers: Vec<TransferConsent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawRequest {
    /// Items to withdraw; empty withdraws the purpose and everything under it.
    #[serde(default)]
    pub items: Vec<String>,
}

impl Kiosk {
    /// Open an applicant session for `service`.
    pub async fn open_session(&self, service: &str) -> Result<Opened> {
        let svc = self
            .catalog
            .service(service)
            .map_err(|e| Error::new(ErrorKind::BadRequest, "unknown_service", e.to_string()))?
            .clone();
        crate::intake::check(&self.store_dir(), self.config.store.min_free_bytes).map_err(|e| {
            tracing::warn!(error = %e, "intake paused");
            Error::new(
                ErrorKind::InsufficientStorage,
                "intake_paused",
                e.to_string(),
            )
        })?;
        let (session, token, expired) = self.sessions.open(service)?;
        if let Some(old) = expired {
            self.discard_session(&old, "expired").await?;
        }
        let items = svc
            .required
            .iter()
            .map(|i| (i, true))
            .chain(svc.optional.iter().map(|i| (i, false)))
            .filter_map(|(i, required)| {
                let d = self.catalog.items.get(i)?;
                Some(ItemView {
                    item: i.clone(),
                    label: d.label.clone(),
                    sensitivity: d.sensitivity,
                    required,
                    separate_consent: d.sensitivity.needs_separate_consent(),
                    transfer_consent: d.transfer_consent.clone(),
                })
            })
            .collect();
        let methods = svc
            .methods
            .iter()
            .filter_map(|m| {
                let d = self.catalog.methods.get(m)?;
                Some(MethodView {
                    method: m.clone(),
                    label: d.label.clone(),
                    biometric: d.biometric,
                    fields: d.fields.clone(),
                    recipient: d.recipient.clone(),
                })
            })
            .collect();
        self.record_event(
            Actor::Applicant(session.id.clone()),
            "session.open",
            None,
            json!({ "service": service }),
        )
        .await?;
        tracing::info!(session = %session.id, service = %service, "applicant session opened");
        Ok(Opened {
            session_id: session.id,
            token,
            service: service.to_string(),
            purpose: svc.label,
            policy_version: self.catalog.policy_version.clone(),
            items,
            methods,
            idle_timeout_secs: self.config.api.session_idle_secs,
        })
    }

    /// The session's consents and where its workflow stands.
    pub async fn session_view(&self, session: ApplicantSession) -> Result<SessionView> {
        let st = self.clone();
        let sid = session.id.clone();
        let service = session.service.clone();
        let (consents, face, fingerprint) = blocking(move || {
            let conn = st.store.conn()?;
            let ledger = Ledger {
                catalog: &st.catalog,
                session: &sid,
            };
            let consented = |item: &str| ledger.require(&conn, &service, None, item).is_ok();
            let (face, fingerprint) = (consented("face_image"), consented("fingerprint"));
            let mut stmt = conn.prepare(
                "SELECT service, item, scope, policy_version, granted_at, withdrawn_at FROM consents
                 WHERE session_id = ?1 ORDER BY id",
            )?;
            let rows = stmt
                .query_map([&sid], |r| {
                    Ok(json!({
                        "service": r.get::<_, String>(0)?,
                        "item": r.get::<_, Option<String>>(1)?,
                        "scope": r.get::<_, String>(2)?,
                        "policy_version": r.get::<_, String>(3)?,
                        "granted_at_ms": r.get::<_, i64>(4)?,
                        "withdrawn_at_ms": r.get::<_, Option<i64>>(5)?,
                    }))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((rows, face, fingerprint))
        })
        .await?;
        let progress = self.memory.progress(&session.id);
        let steps = plan::steps(&session.service, face, fingerprint);
        let next = plan::next(&steps, &progress.done);
        Ok(SessionView {
            workflow: WorkflowView {
                state: next,
                completed: progress.done.iter().copied().collect(),
                next: NextView {
                    step: next,
                    asks: plan::asks(&self.catalog, &session.service, next),
                },
                steps,
            },
            session_id: session.id,
            service: session.service,
            consents,
        })
    }

    /// Record what the applicant consents to (everything is validated before anything is
    /// written) and answer with the session as it now stands.
    pub async fn consent(
        &self,
        session: ApplicantSession,
        req: ConsentRequest,
    ) -> Result<SessionView> {
        for item in req
            .items
            .iter()
            .chain(req.transfers.iter().map(|t| &t.item))
        {
            self.catalog
                .permit(&session.service, None, item)
                .or_else(|e| {
                    // An item a verification method sends is declared through the method.
                    let methods = &self.catalog.service(&session.service)?.methods;
                    methods
                        .iter()
                        .find_map(|m| self.catalog.permit(&session.service, Some(m), item).ok())
                        .ok_or(e)
                })
                .map_err(ConsentError::from)?;
        }
        let purpose = req.purpose;
        self.in_ledger(session.clone(), move |ledger, tx, at, service| {
            if req.purpose {
                ledger.grant(tx, at, service, None, Scope::Collect)?;
            }
            for item in &req.items {
                ledger.grant(tx, at, service, Some(item), Scope::Collect)?;
            }
            for t in &req.transfers {
                ledger.grant(
                    tx,
                    at,
                    service,
                    Some(&t.item),
                    Scope::Transfer(t.destination),
                )?;
            }
            Ok(())
        })
        .await?;
        if purpose {
            self.memory.complete(&session.id, Step::Consents);
        }
        self.session_view(session).await
    }

    /// Withdraw consents (all of them when no item is named).
    pub async fn withdraw(
        &self,
        session: ApplicantSession,
        req: WithdrawRequest,
    ) -> Result<SessionView> {
        self.in_ledger(session.clone(), move |ledger, tx, at, service| {
            if req.items.is_empty() {
                ledger.withdraw(tx, at, service, None)?;
            }
            for item in &req.items {
                ledger.withdraw(tx, at, service, Some(item))?;
            }
            Ok(())
        })
        .await?;
        self.session_view(session).await
    }

    /// End the session: a step still running sees it gone when it takes the store lock and
    /// stores nothing; then what was stored before is purged.
    pub async fn close_session(&self, session: &ApplicantSession) -> Result<()> {
        self.sessions.close(&session.id);
        // A finished application already put its minimized, sealed record in the outbox: the
        // clear copy is not needed any longer, whatever the reason the session ends.
        let reason = if self.memory.progress(&session.id).done.contains(&Step::Done) {
            "completed"
        } else {
            "cancelled"
        };
        self.discard_session(&session.id, reason).await?;
        tracing::info!(session = %session.id, reason, "applicant session closed");
        Ok(())
    }

    /// Leave nothing personal behind from a session that did not complete: purge any subject
    /// it stored and drop its not yet sent records.
    pub async fn discard_session(&self, session_id: &str, reason: &'static str) -> Result<()> {
        self.memory.forget(session_id);
        let st = self.clone();
        let sid = session_id.to_string();
        blocking(move || {
            let mut conn = st.store.conn()?;
            let tx = conn.transaction()?;
            let at = now_ms();
            let subjects: Vec<String> = tx
                .prepare(
                    "SELECT subject_id FROM subjects WHERE session_id = ?1 AND purged_at IS NULL",
                )?
                .query_map([&sid], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let actor = Actor::Applicant(sid.clone());
            for s in &subjects {
                Subjects::purge(&tx, at, &actor, s, reason)
                    .map_err(|e| Error::internal(format!("purge failed: {e}")))?;
            }
            audit::append(
                &tx,
                at,
                &AuditEvent {
                    actor,
                    action: "session.close",
                    subject: None,
                    detail: json!({ "reason": reason, "purged_subjects": subjects.len() }),
                },
            )?;
            tx.commit()?;
            if !subjects.is_empty() {
                Store::scrub_wal(&conn)?;
            }
            Ok(())
        })
        .await
    }

    /// Run `f` with the session's consent ledger inside one store transaction.
    async fn in_ledger(
        &self,
        session: ApplicantSession,
        f: impl FnOnce(&Ledger<'_>, &rusqlite::Transaction<'_>, i64, &str) -> Result<(), ConsentError>
        + Send
        + 'static,
    ) -> Result<()> {
        let st = self.clone();
        blocking(move || {
            let ledger = Ledger {
                catalog: &st.catalog,
                session: &session.id,
            };
            let mut conn = st.store.conn()?;
            let tx = conn.transaction()?;
            f(&ledger, &tx, now_ms(), &session.service)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}
