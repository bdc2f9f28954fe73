//! Revoking a kiosk at HQ (`hq-ingest revoke-kiosk`): the kiosk is marked revoked (the CA
//! routes refuse it and every new connection of it is dropped), every client certificate it
//! authenticated with (recorded at each connection, plus any given explicitly) is put on the
//! kiosk CRL, signed with the kiosk CA's key and written atomically to the file that HQ's TLS
//! verifier loads (it reloads the file when it changes), and the action is audited in
//! `ca_audit`.

use std::path::Path;
use std::time::SystemTime;

use deadpool_postgres::Pool;

use crate::ca::{self, Issuer};
use crate::ca_audit;
use crate::db::DbError;

/// Why a kiosk could not be revoked.
#[derive(Debug, thiserror::Error)]
pub enum RevokeKioskError {
    /// Database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Signing the CRL.
    #[error("kiosk CRL: {0}")]
    Crl(#[from] ca::CaError),
    /// Writing the CRL.
    #[error("writing the kiosk CRL {path}: {source}")]
    Write {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A serial given is not hex.
    #[error("a certificate serial is hexadecimal digits")]
    BadSerial,
}

impl From<tokio_postgres::Error> for RevokeKioskError {
    fn from(e: tokio_postgres::Error) -> Self {
        RevokeKioskError::Db(e.into())
    }
}

/// What [`revoke_kiosk`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeReport {
    /// Whether the kiosk was registered.
    pub registered: bool,
    /// Serials of the kiosk's certificates now on the CRL.
    pub serials: Vec<String>,
    /// Entries on the CRL written (all revoked kiosk certificates).
    pub crl_entries: usize,
}

/// At each authenticated connection: record the kiosk's certificate serial and tell whether
/// the kiosk or this certificate is revoked (`true` = admitted).
pub async fn admit(pool: &Pool, kiosk: &str, serial_hex: &str) -> Result<bool, DbError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "WITH seen AS (
                 INSERT INTO kiosk_certificates (kiosk_id, serial_hex) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING)
             SELECT
                 coalesce((SELECT revoked_at IS NOT NULL FROM kiosks WHERE kiosk_id = $1), false),
                 coalesce((SELECT revoked_at IS NOT NULL FROM kiosk_certificates
                           WHERE kiosk_id = $1 AND serial_hex = $2), false)",
            &[&kiosk, &serial_hex],
        )
        .await?;
    Ok(!(row.get::<_, bool>(0) || row.get::<_, bool>(1)))
}

/// Revoke `kiosk_id` (and the certificates with `extra_serials`, hex), then write the kiosk
/// CRL to `crl_path`, signed by `kiosk_ca` (the CA that issues kiosk client certificates).
/// `operator` names the HQ staff member (audit). Revoking twice is harmless.
pub async fn revoke_kiosk(
    pool: &Pool,
    kiosk_id: &str,
    extra_serials: &[String],
    reason: &str,
    operator: &str,
    kiosk_ca: &Issuer,
    crl_path: &Path,
) -> Result<RevokeReport, RevokeKioskError> {
    let extra: Vec<String> = extra_serials
        .iter()
        .map(|s| {
            let s = s.trim().to_ascii_lowercase();
            if s.is_empty() || s.len() > 42 || hex::decode(&s).is_err() {
                Err(RevokeKioskError::BadSerial)
            } else {
                Ok(s)
            }
        })
        .collect::<Result<_, _>>()?;
    let mut client = pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await?;
    let registered = tx
        .execute(
            "UPDATE kiosks SET revoked_at = coalesce(revoked_at, now()) WHERE kiosk_id = $1",
            &[&kiosk_id],
        )
        .await?
        > 0;
    for serial in &extra {
        tx.execute(
            "INSERT INTO kiosk_certificates (kiosk_id, serial_hex) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
            &[&kiosk_id, serial],
        )
        .await?;
    }
    let serials: Vec<String> = tx
        .query(
            "UPDATE kiosk_certificates SET revoked_at = coalesce(revoked_at, now())
             WHERE kiosk_id = $1 RETURNING serial_hex",
            &[&kiosk_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    ca_audit::append(
        &tx,
        &ca_audit::Entry {
            actor: &format!("hq-staff:{operator}"),
            action: "revoke-kiosk",
            target: Some(kiosk_id),
            outcome: ca_audit::Outcome::Done,
            code: None,
            detail: serde_json::json!({
                "registered": registered,
                "certificates": serials,
                "reason": reason,
            }),
        },
    )
    .await?;
    let rows = tx
        .query(
            "SELECT serial_hex, revoked_at FROM kiosk_certificates
             WHERE revoked_at IS NOT NULL ORDER BY serial_hex",
            &[],
        )
        .await?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in &rows {
        let serial = hex::decode(row.get::<_, &str>(0)).map_err(|_| RevokeKioskError::BadSerial)?;
        let at: time::OffsetDateTime = row.get(1);
        entries.push((serial, SystemTime::from(at), ca::crl_reason(Some(reason))));
    }
    let crl = kiosk_ca.crl(&entries)?;
    write_atomically(crl_path, &crl)?;
    // The CRL is on disk before the revocation commits: a crash in between leaves a CRL
    // that lists the kiosk while the database does not yet (run the command again).
    tx.commit().await?;
    tracing::info!(
        kiosk = kiosk_id,
        certificates = serials.len(),
        "kiosk revoked"
    );
    Ok(RevokeReport {
        registered,
        serials,
        crl_entries: entries.len(),
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), RevokeKioskError> {
    use std::io::Write;
    let io = |source| RevokeKioskError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
