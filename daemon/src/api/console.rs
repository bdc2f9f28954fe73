//! Read-only staff endpoints the staff console page (`/staff`) needs beside
//! `GET /v1/staff/status`: `GET /v1/staff/audit?limit=N` (the most recent audit
//! entries — sequence, time, kind of actor, action, kind of object — and the
//! log's verification status; never the entry details, subject digests or
//! staff identities) and `GET /v1/staff/devices` (reader, sensor, camera, the
//! UKEYs present and the key type generated on them). Both need a staff login and are themselves audited.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::sessions::blocking;
use super::staff::staff_of;
use super::{ApiError, AppState};
use crate::audit::Actor;

/// Most entries one audit page may ask for.
pub const MAX_AUDIT_LIMIT: u32 = 500;
const DEFAULT_AUDIT_LIMIT: u32 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/staff/audit", get(audit_log))
        .route("/v1/staff/devices", get(devices))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<u32>,
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

async fn audit_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let staff = staff_of(&state, &headers)?;
    let limit = q.limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
    if limit == 0 || limit > MAX_AUDIT_LIMIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_limit",
            format!("limit must be between 1 and {MAX_AUDIT_LIMIT}"),
        ));
    }
    let st = state.clone();
    let body = blocking(move || {
        let conn = st.store.conn()?;
        let entries = recent_entries(&conn, limit)?;
        let (key_name, key) = match crate::audit::device_key(&conn)? {
            Some((n, k)) => (n, Some(k)),
            None => (String::new(), None),
        };
        let report = crate::audit::verify(&conn, &key_name, key.as_ref())?;
        Ok(json!({
            "entries": entries,
            "verification": {
                "entries": report.entries,
                "checkpoints": report.checkpoints,
                "intact": report.tamper.is_none(),
                "problem": report.tamper.map(|t| t.to_string()),
            },
        }))
    })
    .await?;
    super::sessions::record_event(
        &state,
        Actor::Staff(staff.staff_id),
        "staff.audit_view",
        None,
        json!({ "limit": limit }),
    )
    .await?;
    Ok(Json(body))
}

#[derive(Serialize)]
struct TokenLine {
    label: String,
    serial: String,
    initialized: bool,
    pin_state: hsm::PinState,
}

async fn devices(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let staff = staff_of(&state, &headers)?;
    let mode = |simulated: bool| if simulated { "simulated" } else { "serial" };
    // A token provider that cannot list is reported, not an error of the page.
    let (tokens, tokens_error) = match state.ukeys.list_tokens().await {
        Ok(list) => (
            list.into_iter()
                .map(|t| TokenLine {
                    label: t.label,
                    serial: t.serial,
                    initialized: t.initialized,
                    pin_state: t.pin_state,
                })
                .collect::<Vec<_>>(),
            None,
        ),
        Err(e) => {
            tracing::warn!(error = %e, "listing UKEYs failed");
            (Vec::new(), Some(e.to_string()))
        }
    };
    let body = json!({
        "idcard": mode(state.devices.idcard_sim.is_some()),
        "fingerprint": mode(state.devices.fingerprint_sim.is_some()),
        "camera": state.config.devices.camera.mode,
        "ukey_provider": state.ukeys.describe(),
        // The key type this kiosk generates on UKEYs (`[ukey] algorithm`): the batch form's default.
        "ukey_algorithm": state.config.ukey.algorithm,
        "tokens": tokens,
        "tokens_error": tokens_error,
    });
    super::sessions::record_event(
        &state,
        Actor::Staff(staff.staff_id),
        "staff.devices",
        None,
        json!({}),
    )
    .await?;
    Ok(Json(body))
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
