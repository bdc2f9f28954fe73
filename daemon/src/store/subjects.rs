//! Personal data at rest: one row per subject (person) with a fresh data key
//! wrapped by the key vault (held on the token), and one sealed value per item,
//! bound to its subject and item. Reading and writing are audited in the same
//! transaction. Purging deletes the values and destroys the wrapped key
//! (crypto-shredding), so nothing recoverable remains even in free pages the
//! WAL has not yet overwritten.

use kiosk_config::Catalog;
use kiosk_config::catalog::LocalRetention;
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::json;
use zeroize::Zeroizing;

use super::crypto::{FieldCipherKind, FieldKey};
use crate::audit::{self, Actor, AuditError, AuditEvent};
use crate::keys::{KeyError, KeyVault};
use crate::privacy::Personal;

#[derive(Debug, thiserror::Error)]
pub enum SubjectError {
    #[error("{item:?} must never be written to disk (catalog retention {retention:?})")]
    NotStorable {
        item: String,
        retention: LocalRetention,
    },
    #[error(transparent)]
    Catalog(#[from] kiosk_config::CatalogError),
    #[error("no such subject")]
    NotFound,
    #[error("the subject's data was purged")]
    Purged,
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("subject store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("stored value of {0:?} is not text")]
    NotText(String),
}

/// Stores and reads personal data for the catalog's items.
pub struct Subjects<'a> {
    pub catalog: &'a Catalog,
    pub keys: &'a dyn KeyVault,
    pub cipher: FieldCipherKind,
}

fn aad(subject_id: &str, item: &str) -> Vec<u8> {
    format!("kioskd/v1/{subject_id}/{item}").into_bytes()
}

impl Subjects<'_> {
    /// Keyed digest that names a person (by ID number) in the store and the audit log.
    pub fn digest_of(&self, id_number: &Personal) -> Result<[u8; 32], KeyError> {
        self.keys
            .keyed_digest("subject", id_number.expose().as_bytes())
    }

    /// The live subject collected in applicant session `session`, if any.
    pub fn of_session(
        conn: &rusqlite::Connection,
        session: &str,
    ) -> Result<Option<String>, SubjectError> {
        use rusqlite::OptionalExtension;
        Ok(conn
            .query_row(
                "SELECT subject_id FROM subjects WHERE session_id = ?1 AND purged_at IS NULL
                 ORDER BY rowid DESC LIMIT 1",
                [session],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Write a new subject with `values`; returns its id.
    pub fn create(
        &self,
        tx: &Transaction<'_>,
        at_ms: i64,
        actor: &Actor,
        session: &str,
        subject_digest: [u8; 32],
        values: &[Personal],
    ) -> Result<String, SubjectError> {
        for v in values {
            let decl = self.catalog.item(v.item())?;
            if decl.retention != LocalRetention::UntilHqAck {
                return Err(SubjectError::NotStorable {
                    item: v.item().to_string(),
                    retention: decl.retention,
                });
            }
        }
        let subject_id = uuid::Uuid::new_v4().to_string();
        let key = FieldKey::generate(self.cipher)?;
        let wrapped = self.keys.wrap(key.bytes())?;
        tx.execute(
            "INSERT INTO subjects (subject_id, session_id, subject_digest, cipher, wrapped_key, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![subject_id, session, subject_digest.to_vec(), self.cipher.name(), wrapped, at_ms],
        )?;
        let mut items = Vec::with_capacity(values.len());
        for v in values {
            let sealed = key.seal(v.expose().as_bytes(), &aad(&subject_id, v.item()))?;
            tx.execute(
                "INSERT INTO personal_fields (subject_id, item, sealed) VALUES (?1, ?2, ?3)",
                params![subject_id, v.item(), sealed],
            )?;
            items.push(v.item().to_string());
        }
        audit::append(
            tx,
            at_ms,
            &AuditEvent {
                actor: actor.clone(),
                action: "personal.write",
                subject: Some(subject_digest),
                detail: json!({ "subject_id": subject_id, "items": items }),
            },
        )?;
        Ok(subject_id)
    }

    /// Read a subject's values (audited).
    pub fn read(
        &self,
        tx: &Transaction<'_>,
        at_ms: i64,
        actor: &Actor,
        subject_id: &str,
    ) -> Result<Vec<Personal>, SubjectError> {
        let row: Option<(Vec<u8>, String, Option<Vec<u8>>)> = tx
            .query_row(
                "SELECT subject_digest, cipher, wrapped_key FROM subjects WHERE subject_id = ?1",
                params![subject_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (digest, cipher, wrapped) = row.ok_or(SubjectError::NotFound)?;
        let wrapped = wrapped.ok_or(SubjectError::Purged)?;
        let kind =
            FieldCipherKind::from_name(&cipher).ok_or(SubjectError::Key(KeyError::Unwrap))?;
        let raw: Zeroizing<Vec<u8>> = self.keys.unwrap(&wrapped)?;
        let key = FieldKey::new(kind, &raw);
        let mut stmt = tx.prepare(
            "SELECT item, sealed FROM personal_fields WHERE subject_id = ?1 ORDER BY item",
        )?;
        let rows = stmt.query_map(params![subject_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        let mut items = Vec::new();
        for row in rows {
            let (item, sealed) = row?;
            let clear = key.open(&sealed, &aad(subject_id, &item))?;
            let text = String::from_utf8(clear.to_vec())
                .map_err(|_| SubjectError::NotText(item.clone()))?;
            items.push(item.clone());
            out.push(Personal::new(item, text));
        }
        audit::append(
            tx,
            at_ms,
            &AuditEvent {
                actor: actor.clone(),
                action: "personal.read",
                subject: digest.try_into().ok(),
                detail: json!({ "subject_id": subject_id, "items": items }),
            },
        )?;
        Ok(out)
    }

    /// Record that HQ acknowledged the subject's record.
    pub fn mark_acked(
        tx: &Transaction<'_>,
        subject_id: &str,
        at_ms: i64,
    ) -> Result<(), SubjectError> {
        tx.execute(
            "UPDATE subjects SET acked_at = ?2 WHERE subject_id = ?1 AND acked_at IS NULL",
            params![subject_id, at_ms],
        )?;
        Ok(())
    }

    /// Mark HQ's acknowledgement of `subject_ids` and purge them (values deleted, data keys
    /// destroyed) with ONE audit entry listing every purged subject id, instead of one entry
    /// per subject: the ack of a batch purges hundreds of applicants in one transaction.
    /// Subjects already purged are skipped. Returns how many were purged.
    pub fn purge_acknowledged(
        tx: &Transaction<'_>,
        at_ms: i64,
        actor: &Actor,
        subject_ids: &[String],
        reason: &str,
    ) -> Result<usize, SubjectError> {
        let mut live = tx
            .prepare_cached("SELECT 1 FROM subjects WHERE subject_id = ?1 AND purged_at IS NULL")?;
        let mut acked = tx.prepare_cached(
            "UPDATE subjects SET acked_at = ?2 WHERE subject_id = ?1 AND acked_at IS NULL",
        )?;
        let mut fields = tx.prepare_cached("DELETE FROM personal_fields WHERE subject_id = ?1")?;
        let mut shred = tx.prepare_cached(
            "UPDATE subjects SET wrapped_key = NULL, purged_at = ?2 WHERE subject_id = ?1",
        )?;
        let mut purged = Vec::new();
        let mut field_count = 0;
        for subject_id in subject_ids {
            acked.execute(params![subject_id, at_ms])?;
            if !live.exists(params![subject_id])? {
                continue;
            }
            field_count += fields.execute(params![subject_id])?;
            shred.execute(params![subject_id, at_ms])?;
            purged.push(subject_id.as_str());
        }
        if !purged.is_empty() {
            audit::append(
                tx,
                at_ms,
                &AuditEvent {
                    actor: actor.clone(),
                    action: "personal.purge",
                    subject: None,
                    detail: json!({ "subject_ids": purged, "fields": field_count, "reason": reason }),
                },
            )?;
        }
        Ok(purged.len())
    }

    /// Delete a subject's values and destroy its data key (audited). Idempotent.
    pub fn purge(
        tx: &Transaction<'_>,
        at_ms: i64,
        actor: &Actor,
        subject_id: &str,
        reason: &str,
    ) -> Result<bool, SubjectError> {
        let digest: Option<Vec<u8>> = tx
            .query_row(
                "SELECT subject_digest FROM subjects WHERE subject_id = ?1 AND purged_at IS NULL",
                params![subject_id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(digest) = digest else {
            return Ok(false);
        };
        let n = tx.execute(
            "DELETE FROM personal_fields WHERE subject_id = ?1",
            params![subject_id],
        )?;
        tx.execute(
            "UPDATE subjects SET wrapped_key = NULL, purged_at = ?2 WHERE subject_id = ?1",
            params![subject_id, at_ms],
        )?;
        audit::append(
            tx,
            at_ms,
            &AuditEvent {
                actor: actor.clone(),
                action: "personal.purge",
                subject: digest.try_into().ok(),
                detail: json!({ "subject_id": subject_id, "fields": n, "reason": reason }),
            },
        )?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SoftKeyVault;
    use crate::store::Store;

    const NAME: &str = "测试甲";
    const ID: &str = "11010519491231002X";

    #[test]
    fn values_are_encrypted_at_rest_and_purge_shreds_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.sqlite");
        let store = Store::open(&path).unwrap();
        let catalog = Catalog::embedded();
        let keys = SoftKeyVault::random();
        let subjects = Subjects {
            catalog: &catalog,
            keys: &keys,
            cipher: FieldCipherKind::Sm4Gcm,
        };
        let actor = Actor::Applicant("s1".into());
        let id = Personal::new("id_number", ID);
        let digest = subjects.digest_of(&id).unwrap();
        let mut conn = store.conn().unwrap();
        let tx = conn.transaction().unwrap();
        let sid = subjects
            .create(
                &tx,
                1,
                &actor,
                "s1",
                digest,
                &[Personal::new("name", NAME), id.clone()],
            )
            .unwrap();
        tx.commit().unwrap();
        drop(conn);
        store.flush().unwrap();
        let raw = std::fs::read(&path).unwrap();
        for needle in [NAME.as_bytes(), ID.as_bytes()] {
            assert!(
                !raw.windows(needle.len()).any(|w| w == needle),
                "plaintext in the store file"
            );
        }

        let mut conn = store.conn().unwrap();
        let tx = conn.transaction().unwrap();
        let back = subjects.read(&tx, 2, &actor, &sid).unwrap();
        tx.commit().unwrap();
        assert_eq!(
            back.iter().map(|p| p.expose()).collect::<Vec<_>>(),
            vec![ID, NAME]
        );

        let tx = conn.transaction().unwrap();
        assert!(Subjects::purge(&tx, 3, &Actor::System, &sid, "hq_ack").unwrap());
        assert!(!Subjects::purge(&tx, 4, &Actor::System, &sid, "hq_ack").unwrap());
        tx.commit().unwrap();
        let tx = conn.transaction().unwrap();
        assert!(matches!(
            subjects.read(&tx, 5, &actor, &sid),
            Err(SubjectError::Purged)
        ));
        drop(tx);
        let actions: Vec<String> = conn
            .prepare("SELECT action FROM audit_log ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            actions,
            ["personal.write", "personal.read", "personal.purge"]
        );
    }

    #[test]
    fn biometrics_and_pins_never_reach_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("k.sqlite")).unwrap();
        let catalog = Catalog::embedded();
        let keys = SoftKeyVault::random();
        let subjects = Subjects {
            catalog: &catalog,
            keys: &keys,
            cipher: FieldCipherKind::Aes256Gcm,
        };
        let mut conn = store.conn().unwrap();
        let tx = conn.transaction().unwrap();
        for item in ["face_image", "fingerprint", "pin", "bank_card"] {
            let err = subjects
                .create(
                    &tx,
                    1,
                    &Actor::System,
                    "s",
                    [0; 32],
                    &[Personal::new(item, "x")],
                )
                .unwrap_err();
            assert!(
                matches!(err, SubjectError::NotStorable { .. }),
                "{item}: {err}"
            );
        }
    }
}
