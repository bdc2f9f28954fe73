//! The staff desk: login with a staff UKEY and PIN, logout, the kiosk's status (devices,
//! sync backlog and last HQ contact, open rights requests with deadlines, audit
//! verification), the personal data still held (masked), one clear value revealed with a
//! reason, the recent audit entries (never details, digests or identities) and the devices
//! and UKEYs present. Every staff action is written to the audit log with the staff
//! member's certificate subject.

use hsm::Pin;
use serde::Serialize;
use serde_json::json;

use super::{Error, ErrorKind, Kiosk, Result, blocking};
use crate::audit::{self, Actor, AuditEvent};
use crate::clock::now_ms;
use crate::staff::StaffSession;

/// Most entries one audit page may ask for.
pub const MAX_AUDIT_LIMIT: u32 = 500;
/// Entries of an audit page that names no limit.
pub const DEFAULT_AUDIT_LIMIT: u32 = 50;

/// A staff login: the bearer token of the staff session and who it is.
#[derive(Serialize)]
pub struct LoggedIn {
    pub staff_token: String,
    pub staff_id: String,
}

/// The audit log's verification as the desk shows it.
#[derive(Serialize)]
pub struct AuditCheck {
    pub entries: u64,
    pub checkpoints: u64,
    pub intact: bool,
    pub problem: Option<String>,
}

/// One audit entry as the console shows it: no personal data, no identities.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct AuditLine {
    pub seq: u64,
    pub at_ms: i64,
    /// `system`, `applicant` or `staff` (never who).
    pub actor_kind: String,
    pub action: String,
    /// `person` when the entry concerns a person (named by keyed digest in
    /// the log, not shown here), otherwise the kind of thing acted on.
    pub object_kind: String,
}

/// The most recent audit entries and the log's verification.
#[derive(Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditLine>,
    pub verification: AuditCheck,
}

#[derive(Serialize)]
pub struct TokenLine {
    pub label: String,
    pub serial: String,
    pub initialized: bool,
    pub pin_state: hsm::PinState,
}

/// The kiosk's devices and the UKEYs present.
#[derive(Serialize)]
pub struct DevicesView {
    pub idcard: &'static str,
    pub fingerprint: &'static str,
    pub camera: kiosk_config::CameraMode,
    pub ukey_provider: String,
    /// The key type this kiosk generates on UKEYs (`[ukey] algorithm`): the batch form's
    /// default.
    pub ukey_algorithm: kiosk_config::UkeyAlgorithm,
    pub tokens: Vec<TokenLine>,
    pub tokens_error: Option<String>,
}

/// The kind of an actor as stored in the log (`staff:<subject>` → `staff`).
pub fn actor_kind(actor: &str) -> &str {
    match actor.split_once(':') {
        Some((kind, _)) => kind,
        None => actor,
    }
}

/// What an entry acted on, without naming it.
pub fn object_kind(action: &str, has_subject: bool) -> &str {
    if has_subject {
        return "person";
    }
    action.split('.').next().unwrap_or(action)
}

/// The last `limit` entries, newest first.
pub fn recent_entries(
    conn: &rusqlite::Connection,
    limit: u32,
) -> Result<Vec<AuditLine>, rusqlite::Error> {
    let mut stmt = conn.prepare(
        "SELECT seq, at, actor, action, subject IS NOT NULL FROM audit_log ORDER BY seq DESC LIMIT ?1",
    )?;
    stmt.query_map([i64::from(limit)], |r| {
        let actor: String = r.get(2)?;
        let action: String = r.get(3)?;
        let has_subject: bool = r.get(4)?;
        Ok(AuditLine {
            seq: r.get::<_, i64>(0)?.max(0) as u64,
            at_ms: r.get(1)?,
            actor_kind: actor_kind(&actor).to_string(),
            object_kind: object_kind(&action, has_subject).to_string(),
            action,
        })
    })?
    .collect()
}

/// Verify the whole audit log (entries, Merkle tree, signed checkpoints).
fn check_audit(conn: &rusqlite::Connection) -> Result<AuditCheck> {
    let (key_name, key) = match audit::device_key(conn)? {
        Some((n, k)) => (n, Some(k)),
        None => (String::new(), None),
    };
    let report = audit::verify(conn, &key_name, key.as_ref())?;
    Ok(AuditCheck {
        entries: report.entries,
        checkpoints: report.checkpoints,
        intact: report.tamper.is_none(),
        problem: report.tamper.map(|t| t.to_string()),
    })
}

fn device_mode(simulated: bool) -> &'static str {
    if simulated { "simulated" } else { "serial" }
}

impl Kiosk {
    /// Log a staff member in with their staff UKEY's label and PIN (failures are audited).
    pub async fn staff_login(&self, token: &str, pin: Pin) -> Result<LoggedIn> {
        match self.staff.login(token, &pin).await {
            Ok((session, token)) => {
                self.audit_staff(&session, "staff.login", json!({ "serial": session.serial }))
                    .await?;
                tracing::info!(staff = %session.staff_id, "staff logged in");
                Ok(LoggedIn {
                    staff_token: token,
                    staff_id: session.staff_id,
                })
            }
            Err(e) => {
                let reason = e.to_string();
                self.record_event(
                    Actor::System,
                    "staff.login_failed",
                    None,
                    json!({ "reason": reason }),
                )
                .await?;
                Err(e.into())
            }
        }
    }

    /// End the staff session behind `bearer`.
    pub async fn staff_logout(&self, staff: &StaffSession, bearer: &str) -> Result<()> {
        self.staff.logout(bearer);
        self.audit_staff(staff, "staff.logout", json!({})).await
    }

    /// A staff action, audited under the staff member's certificate subject.
    pub(crate) async fn audit_staff(
        &self,
        staff: &StaffSession,
        action: &'static str,
        detail: serde_json::Value,
    ) -> Result<()> {
        self.record_event(Actor::Staff(staff.staff_id.clone()), action, None, detail)
            .await
    }

    /// The kiosk's status for the desk.
    pub async fn staff_status(&self, staff: &StaffSession) -> Result<serde_json::Value> {
        let st = self.clone();
        let body = blocking(move || {
            let sync = crate::sync::status(&st.store).map_err(|e| Error::internal(e.to_string()))?;
            let witness = crate::sync::witness_status(&st.store)
                .map_err(|e| Error::internal(e.to_string()))?;
            let conn = st.store.conn()?;
            let rights =
                crate::rights::Desk::open(&conn).map_err(|e| Error::internal(e.to_string()))?;
            let audit = check_audit(&conn)?;
            let rights: Vec<_> = rights
                .iter()
                .map(|(id, kind, state, due)| json!({"id": id, "kind": kind, "state": state, "due": due}))
                .collect();
            Ok(json!({
                "sync": sync,
                "witness": witness,
                "rights_requests": rights,
                "audit": audit,
                "devices": {
                    "idcard": device_mode(st.devices.idcard_sim.is_some()),
                    "fingerprint": device_mode(st.devices.fingerprint_sim.is_some()),
                },
            }))
        })
        .await?;
        self.audit_staff(staff, "staff.status", json!({})).await?;
        Ok(body)
    }

    /// The personal data still held, masked (each read audited).
    pub async fn held_subjects(&self, staff: &StaffSession) -> Result<serde_json::Value> {
        let st = self.clone();
        let actor = Actor::Staff(staff.staff_id.clone());
        let list = blocking(move || {
            let mut conn = st.store.conn()?;
            let ids: Vec<(String, i64, Option<i64>)> = conn
                .prepare("SELECT subject_id, created_at, acked_at FROM subjects WHERE purged_at IS NULL ORDER BY created_at")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let subjects = st.subjects();
            let tx = conn.transaction()?;
            let mut out = Vec::new();
            for (id, created, acked) in ids {
                let values = subjects
                    .read(&tx, now_ms(), &actor, &id)
                    .map_err(|e| Error::internal(e.to_string()))?;
                let fields: serde_json::Map<String, serde_json::Value> = values
                    .iter()
                    .map(|p| (p.item().to_string(), json!(p.masked(&st.catalog))))
                    .collect();
                out.push(json!({ "subject_id": id, "created_at_ms": created, "acked_at_ms": acked, "fields": fields }));
            }
            tx.commit()?;
            Ok(out)
        })
        .await?;
        Ok(json!({ "subjects": list }))
    }

    /// One clear value, with the reason staff need it (audited with the value's subject).
    pub async fn reveal(
        &self,
        staff: &StaffSession,
        subject_id: String,
        item: String,
        reason: String,
    ) -> Result<String> {
        if reason.trim().len() < 4 {
            return Err(Error::unprocessable(
                "reason_required",
                "say why the clear value is needed",
            ));
        }
        let st = self.clone();
        let actor = Actor::Staff(staff.staff_id.clone());
        blocking(move || {
            let mut conn = st.store.conn()?;
            let subjects = st.subjects();
            let tx = conn.transaction()?;
            let values =
                subjects
                    .read(&tx, now_ms(), &actor, &subject_id)
                    .map_err(|e| match e {
                        crate::store::subjects::SubjectError::NotFound
                        | crate::store::subjects::SubjectError::Purged => {
                            Error::not_found("no such subject, or its data was purged")
                        }
                        other => Error::internal(other.to_string()),
                    })?;
            let digest: Vec<u8> = tx.query_row(
                "SELECT subject_digest FROM subjects WHERE subject_id = ?1",
                [&subject_id],
                |r| r.get(0),
            )?;
            let value = values
                .into_iter()
                .find(|p| p.item() == item)
                .ok_or_else(|| Error::not_found("the subject has no such item"))?;
            audit::append(
                &tx,
                now_ms(),
                &AuditEvent {
                    actor,
                    action: "staff.reveal",
                    subject: digest.try_into().ok(),
                    detail: json!({ "subject_id": subject_id, "item": item, "reason": reason }),
                },
            )?;
            tx.commit()?;
            Ok(value.expose().to_string())
        })
        .await
    }

    /// The most recent `limit` audit entries (default 50, at most 500) and the log's
    /// verification.
    pub async fn audit_page(&self, staff: &StaffSession, limit: Option<u32>) -> Result<AuditPage> {
        let limit = limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
        if limit == 0 || limit > MAX_AUDIT_LIMIT {
            return Err(Error::new(
                ErrorKind::BadRequest,
                "bad_limit",
                format!("limit must be between 1 and {MAX_AUDIT_LIMIT}"),
            ));
        }
        let st = self.clone();
        let page = blocking(move || {
            let conn = st.store.conn()?;
            Ok(AuditPage {
                entries: recent_entries(&conn, limit)?,
                verification: check_audit(&conn)?,
            })
        })
        .await?;
        self.audit_staff(staff, "staff.audit_view", json!({ "limit": limit }))
            .await?;
        Ok(page)
    }

    /// The reader, sensor, camera and the UKEYs present (a provider that cannot list is
    /// reported, not an error).
    pub async fn devices_view(&self, staff: &StaffSession) -> Result<DevicesView> {
        let (tokens, tokens_error) = match self.ukeys.list_tokens().await {
            Ok(list) => (
                list.into_iter()
                    .map(|t| TokenLine {
                        label: t.label,
                        serial: t.serial,
                        initialized: t.initialized,
                        pin_state: t.pin_state,
                    })
                    .collect(),
                None,
            ),
            Err(e) => {
                tracing::warn!(error = %e, "listing UKEYs failed");
                (Vec::new(), Some(e.to_string()))
            }
        };
        let view = DevicesView {
            idcard: device_mode(self.devices.idcard_sim.is_some()),
            fingerprint: device_mode(self.devices.fingerprint_sim.is_some()),
            camera: self.config.devices.camera.mode,
            ukey_provider: self.ukeys.describe(),
            ukey_algorithm: self.config.ukey.algorithm,
            tokens,
            tokens_error,
        };
        self.audit_staff(staff, "staff.devices", json!({})).await?;
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_kind_never_carries_the_identity() {
        assert_eq!(actor_kind("staff:CN=Zhang San"), "staff");
        assert_eq!(actor_kind("applicant:5f3a"), "applicant");
        assert_eq!(actor_kind("system"), "system");
    }

    #[test]
    fn object_kind_hides_the_person() {
        assert_eq!(object_kind("personal.read", true), "person");
        assert_eq!(object_kind("session.open", false), "session");
        assert_eq!(object_kind("staff", false), "staff");
    }

    #[test]
    fn recent_entries_newest_first_without_details() {
        let conn = rusqlite::Connection::open_in_memory().expect("in-memory db");
        conn.execute_batch(
            "CREATE TABLE audit_log (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL,
             action TEXT NOT NULL, subject TEXT, detail TEXT NOT NULL, leaf_hash BLOB NOT NULL);
             INSERT INTO audit_log VALUES (0, 10, 'system', 'kiosk.start', NULL, '{}', x'00');
             INSERT INTO audit_log VALUES (1, 20, 'staff:CN=Someone', 'staff.reveal', 'abcd', '{\"reason\":\"asked\"}', x'00');
             INSERT INTO audit_log VALUES (2, 30, 'applicant:s1', 'session.open', NULL, '{}', x'00');",
        )
        .expect("schema");
        let lines = recent_entries(&conn, 2).expect("query");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].seq, 2);
        assert_eq!(lines[1].seq, 1);
        assert_eq!(lines[1].actor_kind, "staff");
        assert_eq!(lines[1].object_kind, "person");
        let text = serde_json::to_string(&lines).expect("json");
        assert!(!text.contains("Someone") && !text.contains("abcd") && !text.contains("asked"));
    }
}
