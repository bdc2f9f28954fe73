//! Rights requests taken at the kiosk (REQUIREMENTS §6): access (masked),
//! copy, correction, deletion, consent withdrawal, account cancellation,
//! automated decisions, posthumous arrangements. The requester is verified
//! first; each request has a deadline from the catalog (working days with the
//! configured holidays) and moves received → verified → done | refused with a
//! listed ground. Every step is audited and forwarded to HQ; a completed
//! deletion purges the person's data on the kiosk and sends a deletion notice
//! that HQ propagates to the recipients it shared the data with.

use kiosk_config::Catalog;
use records::wire::{self, Record, RightsRequestKind};
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::json;
use time::{Date, OffsetDateTime};

use crate::audit::{self, Actor, AuditError, AuditEvent};
use crate::privacy::deadline::Calendar;
use crate::store::outbox::{self, OutboxError, Outgoing};
use crate::store::subjects::{SubjectError, Subjects};

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    Received,
    Verified,
    Done,
    Refused,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Received => "received",
            RequestState::Verified => "verified",
            RequestState::Done => "done",
            RequestState::Refused => "refused",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "received" => RequestState::Received,
            "verified" => RequestState::Verified,
            "done" => RequestState::Done,
            "refused" => RequestState::Refused,
            _ => return None,
        })
    }
}

pub fn kind_name(kind: RightsRequestKind) -> &'static str {
    match kind {
        RightsRequestKind::Access => "access",
        RightsRequestKind::Copy => "copy",
        RightsRequestKind::Correction => "correction",
        RightsRequestKind::Deletion => "deletion",
        RightsRequestKind::ConsentWithdrawal => "consent_withdrawal",
        RightsRequestKind::AccountCancellation => "account_cancellation",
        RightsRequestKind::AutomatedDecision => "automated_decision",
        RightsRequestKind::Posthumous => "posthumous",
    }
}

pub fn parse_kind(s: &str) -> Option<RightsRequestKind> {
    use RightsRequestKind::*;
    [
        Access,
        Copy,
        Correction,
        Deletion,
        ConsentWithdrawal,
        AccountCancellation,
        AutomatedDecision,
        Posthumous,
    ]
    .into_iter()
    .find(|k| kind_name(*k) == s)
}

#[derive(Debug, thiserror::Error)]
pub enum RightsError {
    #[error("no such rights request")]
    NotFound,
    #[error("a request that is {from} cannot become {to}")]
    BadTransition {
        from: &'static str,
        to: &'static str,
    },
    #[error("{0:?} is not a refusal ground the policy lists")]
    UnknownGround(String),
    #[error("rights requests: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Subject(#[from] SubjectError),
}

/// A row of `rights_requests`: kind, state, received, due, refusal ground, subject digest.
type StoredRequest = (String, String, i64, String, Option<String>, Vec<u8>);

/// A request as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RightsRequest {
    pub id: String,
    pub kind: RightsRequestKind,
    pub state: RequestState,
    pub received_at_ms: i64,
    pub due: Date,
    pub refusal_ground: Option<String>,
}

/// The rights desk: catalog rules plus the working-day calendar.
pub struct Desk<'a> {
    pub catalog: &'a Catalog,
    pub calendar: &'a Calendar,
    /// Key id and algorithm of the keyed digests (for the records sent to HQ).
    pub digest_ref: (&'a str, &'a str),
}

fn date_of(ms: i64) -> Date {
    OffsetDateTime::from_unix_timestamp(ms / 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date()
}

impl Desk<'_> {
    fn subject_ref(&self, digest: [u8; 32]) -> wire::KeyedDigest {
        wire::KeyedDigest {
            algorithm: self.digest_ref.1.to_string(),
            key_id: self.digest_ref.0.to_string(),
            digest: wire::OpaqueBytes(digest.to_vec()),
        }
    }

    /// Take a request from a person whose identity the workflow verified
    /// (`subject_digest` names them). Returns the stored request.
    pub fn receive(
        &self,
        tx: &Transaction<'_>,
        at_ms: i64,
        actor: &Actor,
        subject_digest: [u8; 32],
        kind: RightsRequestKind,
    ) -> Result<RightsRequest, RightsError> {
        let id = uuid::Uuid::new_v4().to_string();
        let due = self.calendar.due_for(&self.catalog.rights, date_of(at_ms));
        tx.execute(
            "INSERT INTO rights_requests (id, subject_digest, kind, state, received_at, due_date, updated_at)
             VALUES (?1, ?2, ?3, 'received', ?4, ?5, ?4)",
            params![id, subject_digest.to_vec(), kind_name(kind), at_ms, due.to_string()],
        )?;
        audit::append(
            tx,
            at_ms,
            &AuditEvent {
                actor: actor.clone(),
                action: "rights.received",
                subject: Some(subject_digest),
                detail: json!({ "request_id": id, "kind": kind_name(kind), "due": due.to_string() }),
            },
        )?;
        let due_ts = due.midnight().assume_utc().unix_timestamp();
        let event = Record::RightsRequest(wire::RightsRequestEvent {
            subject_ref: self.subject_ref(subject_digest),
            request_id: id.clone(),
            kind,
            received_at: at_ms / 1000,
            deadline: due_ts,
        });
        outbox::enqueue(
            tx,
            at_ms,
            &Outgoing::non_personal(event).expect("rights events are not applicant records"),
        )?;
        Ok(RightsRequest {
            id,
            kind,
            state: RequestState::Received,
            received_at_ms: at_ms,
            due,
            refusal_ground: None,
        })
    }

    /// Load a request.
    pub fn get(tx: &Transaction<'_>, id: &str) -> Result<(RightsRequest, [u8; 32]), RightsError> {
        let row: Option<StoredRequest> = tx
            .query_row(
                "SELECT kind, state, received_at, due_date, refusal_ground, subject_digest
                 FROM rights_requests WHERE id = ?1",
                params![id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .optional()?;
        let (kind, state, received, due, ground, digest) = row.ok_or(RightsError::NotFound)?;
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        Ok((
            RightsRequest {
                id: id.to_string(),
                kind: parse_kind(&kind).ok_or(RightsError::NotFound)?,
                state: RequestState::parse(&state).ok_or(RightsError::NotFound)?,
                received_at_ms: received,
                due: Date::parse(&due, fmt).map_err(|_| RightsError::NotFound)?,
                refusal_ground: ground,
            },
            digest.try_into().map_err(|_| RightsError::NotFound)?,
        ))
    }

    fn transition(
        tx: &Transaction<'_>,
        at_ms: i64,
        actor: &Actor,
        id: &str,
        to: RequestState,
        ground: Option<&str>,
    ) -> Result<(RightsRequest, [u8; 32]), RightsError> {
        let (mut req, digest) = Self::get(tx, id)?;
        let allowed = matches!(
            (req.state, to),
            (RequestState::Received, RequestState::Verified)
                | (RequestState::Received, RequestState::Refused)
                | (RequestState::Verified, RequestState::Done)
                | (RequestState::Verified, RequestState::Refused)
        );
        if !allowed {
            return Err(RightsError::BadTransition {
                from: req.state.as_str(),
                to: to.as_str(),
            });
        }
        tx.execute(
            "UPDATE rights_requests SET state = ?2, refusal_ground = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, to.as_str(), ground, at_ms],
        )?;
        audit::append(
            tx,
            at_ms,
            &AuditEvent {
                actor: actor.clone(),
                action: match to {
                    RequestState::Verified => "rights.verified",
                    RequestState::Done => "rights.done",
                    RequestState::Refused => "rights.refused",
                    RequestState::Received => "rights.received",
                },
                subject: Some(digest),
                detail: json!({ "request_id": id, "kind": kind_name(req.kind), "ground": ground }),
            },
        )?;
        req.state = to;
        req.refusal_ground = ground.map(str::to_string);
        Ok((req, digest))
    }

    /// The requester's identity was verified.
    pub fn verified(
        &self,
        tx: &Transaction<'_>,
        at_ms: i64,
        actor: &Actor,
        id: &str,
    ) -> Result<RightsRequest, RightsError> {
        Ok(Self::transition(tx, at_ms, actor, id, RequestState::Verified, None)?.0)
    }

    /// Refuse on one of the policy's listed grounds.
    pub fn refuse(
        &self,
        tx: &Transaction<'_>,
        at_ms: i64,
        actor: &Actor,
        id: &str,
        ground: &str,
    ) -> Result<RightsRequest, RightsError> {
        if !self
            .catalog
            .rights
            .refusal_grounds
            .iter()
            .any(|g| g == ground)
        {
            return Err(RightsError::UnknownGround(ground.to_string()));
        }
        Ok(Self::transition(tx, at_ms, actor, id, RequestState::Refused, Some(ground))?.0)
    }

    /// Complete a verified request. A deletion purges the person's data held on
    /// the kiosk and sends a deletion notice to HQ for propagation.
    pub fn complete(
        &self,
        tx: &Transaction<'_>,
        at_ms: i64,
        actor: &Actor,
        id: &str,
    ) -> Result<RightsRequest, RightsError> {
        let (req, digest) = Self::transition(tx, at_ms, actor, id, RequestState::Done, None)?;
        if matches!(
            req.kind,
            RightsRequestKind::Deletion | RightsRequestKind::AccountCancellation
        ) {
            let subjects: Vec<String> = tx
                .prepare("SELECT subject_id FROM subjects WHERE subject_digest = ?1 AND purged_at IS NULL")?
                .query_map(params![digest.to_vec()], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for s in subjects {
                Subjects::purge(tx, at_ms, actor, &s, "rights_request")?;
            }
            let notice = Record::DeletionNotice(wire::DeletionNotice {
                subject_ref: self.subject_ref(digest),
                reason: kind_name(req.kind).to_string(),
                items: Vec::new(),
                requested_at: req.received_at_ms / 1000,
            });
            outbox::enqueue(
                tx,
                at_ms,
                &Outgoing::non_personal(notice)
                    .expect("deletion notices are not applicant records"),
            )?;
        }
        Ok(req)
    }

    /// Open requests with their due dates, oldest deadline first.
    pub fn open(
        conn: &rusqlite::Connection,
    ) -> Result<Vec<(String, String, String, String)>, RightsError> {
        Ok(conn
            .prepare(
                "SELECT id, kind, state, due_date FROM rights_requests
                 WHERE state IN ('received', 'verified') ORDER BY due_date, received_at",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SoftKeyVault;
    use crate::privacy::Personal;
    use crate::store::Store;
    use crate::store::crypto::FieldCipherKind;

    #[test]
    fn deletion_purges_locally_and_notifies_hq() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("k.sqlite")).unwrap();
        let catalog = Catalog::embedded();
        let calendar = Calendar::from_catalog(&catalog.holidays);
        let keys = SoftKeyVault::random();
        let subjects = Subjects {
            catalog: &catalog,
            keys: &keys,
            cipher: FieldCipherKind::Sm4Gcm,
        };
        let desk = Desk {
            catalog: &catalog,
            calendar: &calendar,
            digest_ref: ("k1", "hmac-sm3"),
        };
        let staff = Actor::Staff("staff-1".into());
        let id = Personal::new("id_number", "11010519491231002X");
        let digest = subjects.digest_of(&id).unwrap();
        let mut conn = store.conn().unwrap();
        let tx = conn.transaction().unwrap();
        let sid = subjects
            .create(
                &tx,
                1,
                &staff,
                "s",
                digest,
                &[Personal::new("name", "测试乙"), id],
            )
            .unwrap();
        // Monday 2026-11-23 10:00 UTC
        let at = 1_795_428_000_000;
        let req = desk
            .receive(&tx, at, &staff, digest, RightsRequestKind::Deletion)
            .unwrap();
        assert_eq!(req.due, time::macros::date!(2026 - 12 - 14));
        assert!(matches!(
            desk.complete(&tx, at, &staff, &req.id),
            Err(RightsError::BadTransition {
                from: "received",
                to: "done"
            })
        ));
        desk.verified(&tx, at, &staff, &req.id).unwrap();
        desk.complete(&tx, at, &staff, &req.id).unwrap();
        tx.commit().unwrap();
        let tx = conn.transaction().unwrap();
        assert!(matches!(
            subjects.read(&tx, at, &staff, &sid),
            Err(SubjectError::Purged)
        ));
        drop(tx);
        let kinds: Vec<String> = conn
            .prepare("SELECT kind FROM outbox ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(kinds, ["rights_request", "deletion_notice"]);
        assert!(Desk::open(&conn).unwrap().is_empty());
    }

    #[test]
    fn refusal_needs_a_listed_ground() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("k.sqlite")).unwrap();
        let catalog = Catalog::embedded();
        let calendar = Calendar::from_catalog(&catalog.holidays);
        let desk = Desk {
            catalog: &catalog,
            calendar: &calendar,
            digest_ref: ("k1", "hmac-sm3"),
        };
        let mut conn = store.conn().unwrap();
        let tx = conn.transaction().unwrap();
        let req = desk
            .receive(&tx, 0, &Actor::System, [3; 32], RightsRequestKind::Copy)
            .unwrap();
        assert!(matches!(
            desk.refuse(&tx, 0, &Actor::System, &req.id, "because"),
            Err(RightsError::UnknownGround(_))
        ));
        let r = desk
            .refuse(&tx, 0, &Actor::System, &req.id, "identity_not_verified")
            .unwrap();
        assert_eq!(r.state, RequestState::Refused);
        tx.commit().unwrap();
        assert_eq!(Desk::open(&conn).unwrap().len(), 0);
    }
}
