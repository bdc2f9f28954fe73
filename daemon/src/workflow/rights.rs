//! Rights requests (REQUIREMENTS §6). An applicant in a `rights_request` session whose
//! identity was verified (the ID-card step, then one verification method) files a request;
//! it gets a deadline from the catalog and is forwarded to HQ. Staff complete or refuse it
//! with one of the policy's grounds. A completed deletion purges what the kiosk holds and
//! tells HQ to propagate. The desk itself is [`crate::rights::Desk`].

use serde::{Deserialize, Serialize};

use super::plan::Step;
use super::{Error, ErrorKind, Kiosk, Result, blocking};
use crate::audit::Actor;
use crate::clock::now_ms;
use crate::privacy::deadline::Calendar;
use crate::rights::{self, Desk};
use crate::session::ApplicantSession;
use crate::staff::StaffSession;

/// The kind of request filed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRequest {
    /// access | copy | correction | deletion | consent_withdrawal | account_cancellation | automated_decision | posthumous
    pub kind: String,
}

/// A request filed and verified, with its deadline.
#[derive(Serialize)]
pub struct Filed {
    pub request_id: String,
    pub kind: &'static str,
    pub state: &'static str,
    pub due: String,
}

/// Where a request stands after staff acted on it.
#[derive(Serialize)]
pub struct Handled {
    pub request_id: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ground: Option<Option<String>>,
}

fn not_verified(message: &'static str) -> Error {
    Error::conflict("identity_not_verified", message)
}

impl Kiosk {
    /// Run `f` with the rights desk inside one store transaction (committed when `f`
    /// succeeds).
    async fn with_desk<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Desk<'_>, &rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let st = self.clone();
        blocking(move || {
            let calendar = Calendar::from_catalog(&st.catalog.holidays);
            let desk = Desk {
                catalog: &st.catalog,
                calendar: &calendar,
                digest_ref: (
                    crate::token_keys::DIGEST_KEY_LABEL,
                    st.keys.digest_algorithm,
                ),
            };
            let mut conn = st.store.conn()?;
            let tx = conn.transaction()?;
            let out = f(&desk, &tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// File a rights request in the verified requester's name.
    pub async fn file_rights_request(
        &self,
        session: &ApplicantSession,
        req: FileRequest,
    ) -> Result<Filed> {
        Self::require_service(
            session,
            "rights_request",
            "open a rights_request session for this",
        )?;
        // Card possession is not identity: the ID card step and identity verification come
        // first (the workflow plan), so a found card is not enough to file in someone's name.
        self.require_ready(session, Step::Rights).map_err(|e| {
            let missing = e.details.clone().unwrap_or_default();
            not_verified(
                "verify the requester's identity first: read their ID card, then one verification method",
            )
            .with_details(missing)
        })?;
        let kind = rights::parse_kind(&req.kind).ok_or_else(|| {
            Error::new(
                ErrorKind::BadRequest,
                "unknown_kind",
                format!("no rights request kind {:?}", req.kind),
            )
        })?;
        let session = session.clone();
        self.with_desk(move |desk, tx| {
            // The requester was verified by the ID-card step of this session.
            let digest: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT subject_digest FROM subjects WHERE session_id = ?1 AND purged_at IS NULL ORDER BY created_at DESC LIMIT 1",
                    [&session.id],
                    |r| r.get(0),
                )
                .ok();
            let digest: [u8; 32] = digest
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| not_verified("read the requester's ID card first"))?;
            let actor = Actor::Applicant(session.id.clone());
            let r = desk.receive(tx, now_ms(), &actor, digest, kind)?;
            desk.verified(tx, now_ms(), &actor, &r.id)?;
            Ok(Filed {
                request_id: r.id,
                kind: rights::kind_name(r.kind),
                state: "verified",
                due: r.due.to_string(),
            })
        })
        .await
    }

    /// Staff complete a rights request.
    pub async fn complete_rights_request(
        &self,
        staff: &StaffSession,
        id: String,
    ) -> Result<Handled> {
        let actor = Actor::Staff(staff.staff_id.clone());
        self.with_desk(move |desk, tx| {
            let r = desk.complete(tx, now_ms(), &actor, &id)?;
            Ok(Handled {
                request_id: r.id,
                state: r.state.as_str(),
                ground: None,
            })
        })
        .await
    }

    /// Staff refuse a rights request on one of the policy's grounds.
    pub async fn refuse_rights_request(
        &self,
        staff: &StaffSession,
        id: String,
        ground: String,
    ) -> Result<Handled> {
        let actor = Actor::Staff(staff.staff_id.clone());
        self.with_desk(move |desk, tx| {
            let r = desk.refuse(tx, now_ms(), &actor, &id, &ground)?;
            Ok(Handled {
                request_id: r.id,
                state: r.state.as_str(),
                ground: Some(r.refusal_ground),
            })
        })
        .await
    }
}
