//! The local retention sweeper (REQUIREMENTS §5): nothing personal outlives
//! its safe delivery to HQ. Subjects whose records HQ acknowledged are
//! purged (values deleted, data key destroyed) and the purge is audited.
//! The sweep is driven by stored state only, so it is idempotent and picks up
//! where it left off after a restart or a crash. HQ-side rules (5 years after
//! revocation, ...) are catalog data executed by hq-ingest.

use rusqlite::{Connection, params};

use crate::audit::Actor;
use crate::store::Store;
use crate::store::subjects::{SubjectError, Subjects};

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub purged_subjects: usize,
}

/// Purge every acknowledged, not yet purged subject, one transaction each (a
/// crash mid-sweep leaves every subject either whole or purged).
pub fn sweep(conn: &mut Connection, at_ms: i64) -> Result<SweepReport, SubjectError> {
    let due: Vec<String> = conn
        .prepare(
            "SELECT subject_id FROM subjects
             WHERE acked_at IS NOT NULL AND acked_at <= ?1 AND purged_at IS NULL
             ORDER BY acked_at",
        )?
        .query_map(params![at_ms], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut report = SweepReport::default();
    for subject in due {
        let tx = conn.transaction()?;
        if Subjects::purge(&tx, at_ms, &Actor::System, &subject, "hq_acknowledged")? {
            report.purged_subjects += 1;
        }
        tx.commit()?;
    }
    if report.purged_subjects > 0 {
        Store::scrub_wal(conn)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SoftKeyVault;
    use crate::privacy::Personal;
    use crate::store::Store;
    use crate::store::crypto::FieldCipherKind;
    use kiosk_config::Catalog;

    #[test]
    fn sweeps_exactly_the_acknowledged_subjects_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("k.sqlite")).unwrap();
        let catalog = Catalog::embedded();
        let keys = SoftKeyVault::random();
        let subjects = Subjects {
            catalog: &catalog,
            keys: &keys,
            cipher: FieldCipherKind::Sm4Gcm,
        };
        let mut conn = store.conn().unwrap();
        let mut ids = Vec::new();
        for i in 0..4u8 {
            let tx = conn.transaction().unwrap();
            ids.push(
                subjects
                    .create(
                        &tx,
                        1,
                        &Actor::System,
                        "s",
                        [i; 32],
                        &[Personal::new("name", format!("测试{i}"))],
                    )
                    .unwrap(),
            );
            tx.commit().unwrap();
        }
        let tx = conn.transaction().unwrap();
        Subjects::mark_acked(&tx, &ids[0], 10).unwrap();
        Subjects::mark_acked(&tx, &ids[2], 20).unwrap();
        // Acknowledged only in the future of the sweep's clock: not yet due.
        Subjects::mark_acked(&tx, &ids[3], 1_000).unwrap();
        tx.commit().unwrap();

        assert_eq!(sweep(&mut conn, 100).unwrap().purged_subjects, 2);
        assert_eq!(
            sweep(&mut conn, 100).unwrap().purged_subjects,
            0,
            "idempotent"
        );
        let left: Vec<String> = conn
            .prepare("SELECT DISTINCT subject_id FROM personal_fields ORDER BY subject_id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut expected = vec![ids[1].clone(), ids[3].clone()];
        expected.sort();
        assert_eq!(left, expected);
        let keys_left: i64 = conn
            .query_row(
                "SELECT count(*) FROM subjects WHERE wrapped_key IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(keys_left, 2);
    }
}
