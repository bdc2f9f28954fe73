//! Consent records per applicant session: the purpose (service), the policy
//! version shown, the time, a separate consent for each sensitive or biometric
//! item, separate consent for transfers the catalog marks (face images to a
//! verifier), and withdrawal — which blocks further processing of the item but
//! keeps the record of what was done before. Every grant and withdrawal is
//! audited in the same transaction.

use kiosk_config::{Catalog, CatalogError, Destination};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::json;

use crate::audit::{self, Actor, AuditError, AuditEvent};

/// What a consent covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Collecting and using for the service.
    Collect,
    /// Sending the item to a destination that needs its own consent.
    Transfer(Destination),
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Collect => "collect",
            Scope::Transfer(Destination::Hq) => "transfer:hq",
            Scope::Transfer(Destination::Verifier) => "transfer:verifier",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("no consent to the purpose {service:?} in this session")]
    NoPurposeConsent { service: String },
    #[error("{item:?} is sensitive: it needs its own separate consent")]
    SeparateConsentRequired { item: String },
    #[error("consent for {item:?} was withdrawn: it may not be processed further")]
    Withdrawn { item: String },
    #[error("sending {item:?} to {dest} needs its own separate consent")]
    TransferConsentRequired { item: String, dest: Destination },
    #[error("consent store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// The consent ledger of one applicant session.
pub struct Ledger<'a> {
    pub catalog: &'a Catalog,
    pub session: &'a str,
}

impl Ledger<'_> {
    /// Record consent to `service` (item `None`) or to one item of it.
    pub fn grant(
        &self,
        tx: &Transaction<'_>,
        at_ms: i64,
        service: &str,
        item: Option<&str>,
        scope: Scope,
    ) -> Result<(), ConsentError> {
        self.catalog.service(service)?;
        if let Some(i) = item {
            self.catalog.item(i)?;
        }
        tx.execute(
            "INSERT INTO consents (session_id, service, item, scope, policy_version, granted_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                self.session,
                service,
                item,
                scope.as_str(),
                self.catalog.policy_version,
                at_ms
            ],
        )?;
        audit::append(
            tx,
            at_ms,
            &AuditEvent {
                actor: Actor::Applicant(self.session.to_string()),
                action: "consent.grant",
                subject: None,
                detail: json!({ "service": service, "item": item, "scope": scope.as_str(),
                                "policy": self.catalog.policy_version }),
            },
        )?;
        Ok(())
    }

    /// Withdraw consent to an item (or the whole purpose with `None`).
    /// Returns how many consents were withdrawn.
    pub fn withdraw(
        &self,
        tx: &Transaction<'_>,
        at_ms: i64,
        service: &str,
        item: Option<&str>,
    ) -> Result<usize, ConsentError> {
        let n = match item {
            Some(i) => tx.execute(
                "UPDATE consents SET withdrawn_at = ?1
                 WHERE session_id = ?2 AND service = ?3 AND item = ?4 AND withdrawn_at IS NULL",
                params![at_ms, self.session, service, i],
            )?,
            None => tx.execute(
                "UPDATE consents SET withdrawn_at = ?1
                 WHERE session_id = ?2 AND service = ?3 AND withdrawn_at IS NULL",
                params![at_ms, self.session, service],
            )?,
        };
        audit::append(
            tx,
            at_ms,
            &AuditEvent {
                actor: Actor::Applicant(self.session.to_string()),
                action: "consent.withdraw",
                subject: None,
                detail: json!({ "service": service, "item": item, "count": n }),
            },
        )?;
        Ok(n)
    }

    /// State of the newest consent row: None (never), Some(true) live, Some(false) withdrawn.
    fn state(
        &self,
        conn: &Connection,
        service: &str,
        item: Option<&str>,
        scope: Scope,
    ) -> Result<Option<bool>, ConsentError> {
        let withdrawn: Option<Option<i64>> = conn
            .query_row(
                "SELECT withdrawn_at FROM consents
                 WHERE session_id = ?1 AND service = ?2 AND item IS ?3 AND scope = ?4
                 ORDER BY id DESC LIMIT 1",
                params![self.session, service, item, scope.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(withdrawn.map(|w| w.is_none()))
    }

    /// May `item` be collected now for `service` (verified by `method`)?
    pub fn require(
        &self,
        conn: &Connection,
        service: &str,
        method: Option<&str>,
        item: &str,
    ) -> Result<(), ConsentError> {
        let permit = self.catalog.permit(service, method, item)?;
        match self.state(conn, service, None, Scope::Collect)? {
            Some(true) => {}
            Some(false) => return Err(ConsentError::Withdrawn { item: item.into() }),
            None => {
                return Err(ConsentError::NoPurposeConsent {
                    service: service.into(),
                });
            }
        }
        match (
            permit.separate_consent,
            self.state(conn, service, Some(item), Scope::Collect)?,
        ) {
            (_, Some(false)) => Err(ConsentError::Withdrawn { item: item.into() }),
            (true, None) => Err(ConsentError::SeparateConsentRequired { item: item.into() }),
            _ => Ok(()),
        }
    }

    /// May `item` be sent to `dest`? Items whose catalog entry lists `dest` in
    /// `transfer_consent` need a separate transfer consent.
    pub fn require_transfer(
        &self,
        conn: &Connection,
        service: &str,
        item: &str,
        dest: Destination,
    ) -> Result<(), ConsentError> {
        let decl = self.catalog.item(item)?;
        if !decl.transfer_consent.contains(&dest) {
            return Ok(());
        }
        match self.state(conn, service, Some(item), Scope::Transfer(dest))? {
            Some(true) => Ok(()),
            Some(false) => Err(ConsentError::Withdrawn { item: item.into() }),
            None => Err(ConsentError::TransferConsentRequired {
                item: item.into(),
                dest,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn setup() -> (tempfile::TempDir, Store, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("k.sqlite")).unwrap();
        (dir, store, Catalog::embedded())
    }

    #[test]
    fn nothing_is_collected_before_consent_to_the_purpose() {
        let (_d, store, catalog) = setup();
        let ledger = Ledger {
            catalog: &catalog,
            session: "s1",
        };
        let conn = store.conn().unwrap();
        assert!(matches!(
            ledger.require(&conn, "cert_application", None, "name"),
            Err(ConsentError::NoPurposeConsent { .. })
        ));
    }

    #[test]
    fn undeclared_items_are_refused_even_with_consent() {
        let (_d, store, catalog) = setup();
        let ledger = Ledger {
            catalog: &catalog,
            session: "s1",
        };
        let mut conn = store.conn().unwrap();
        let tx = conn.transaction().unwrap();
        ledger
            .grant(&tx, 1, "certificate_use", None, Scope::Collect)
            .unwrap();
        tx.commit().unwrap();
        let err = ledger
            .require(&conn, "certificate_use", None, "address")
            .unwrap_err();
        assert!(
            matches!(err, ConsentError::Catalog(CatalogError::NotDeclared { .. })),
            "{err}"
        );
    }

    #[test]
    fn a_biometric_needs_its_own_consent_and_withdrawal_blocks_it() {
        let (_d, store, catalog) = setup();
        let ledger = Ledger {
            catalog: &catalog,
            session: "s1",
        };
        let mut conn = store.conn().unwrap();
        let tx = conn.transaction().unwrap();
        ledger
            .grant(&tx, 1, "cert_application", None, Scope::Collect)
            .unwrap();
        tx.commit().unwrap();
        ledger
            .require(&conn, "cert_application", None, "name")
            .unwrap();
        assert!(matches!(
            ledger.require(&conn, "cert_application", None, "fingerprint"),
            Err(ConsentError::SeparateConsentRequired { .. })
        ));
        let tx = conn.transaction().unwrap();
        ledger
            .grant(
                &tx,
                2,
                "cert_application",
                Some("fingerprint"),
                Scope::Collect,
            )
            .unwrap();
        tx.commit().unwrap();
        ledger
            .require(&conn, "cert_application", None, "fingerprint")
            .unwrap();
        let tx = conn.transaction().unwrap();
        assert_eq!(
            ledger
                .withdraw(&tx, 3, "cert_application", Some("fingerprint"))
                .unwrap(),
            1
        );
        tx.commit().unwrap();
        assert!(matches!(
            ledger.require(&conn, "cert_application", None, "fingerprint"),
            Err(ConsentError::Withdrawn { .. })
        ));
        // The record of what was consented before stays.
        let rows: i64 = conn
            .query_row(
                "SELECT count(*) FROM consents WHERE item = 'fingerprint'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 1);
        // Another session is unaffected and separate.
        let other = Ledger {
            catalog: &catalog,
            session: "s2",
        };
        assert!(
            other
                .require(&conn, "cert_application", None, "name")
                .is_err()
        );
        // Grants and withdrawals are audited.
        let audited: i64 = conn
            .query_row(
                "SELECT count(*) FROM audit_log WHERE action LIKE 'consent.%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(audited, 3);
    }

    #[test]
    fn face_images_to_a_verifier_need_a_transfer_consent() {
        let (_d, store, catalog) = setup();
        let ledger = Ledger {
            catalog: &catalog,
            session: "s1",
        };
        let mut conn = store.conn().unwrap();
        assert!(matches!(
            ledger.require_transfer(
                &conn,
                "cert_application",
                "face_image",
                Destination::Verifier
            ),
            Err(ConsentError::TransferConsentRequired { .. })
        ));
        ledger
            .require_transfer(&conn, "cert_application", "name", Destination::Verifier)
            .unwrap();
        let tx = conn.transaction().unwrap();
        ledger
            .grant(
                &tx,
                1,
                "cert_application",
                Some("face_image"),
                Scope::Transfer(Destination::Verifier),
            )
            .unwrap();
        tx.commit().unwrap();
        ledger
            .require_transfer(
                &conn,
                "cert_application",
                "face_image",
                Destination::Verifier,
            )
            .unwrap();
    }
}
