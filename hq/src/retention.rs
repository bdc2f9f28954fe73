//! HQ-side retention and deletion propagation.
//!
//! Rules (REQUIREMENTS §5): certificate records are kept at least 5 years after the certificate
//! ceased to be valid (revoked or expired, whichever came first); government-use certificates
//! additionally at least 10 years after expiry. After account cancellation the subject is
//! unsearchable at once (view `searchable_records`) and erased 6 months later unless a
//! certificate of theirs is still under legal retention (then it is deferred and counted). A
//! kiosk deletion notice erases at the next run under the same legal-retention exception.
//! Every erasure HQ decides itself records a deletion notice so it propagates to recipients.
//! The run takes `now` from the caller so tests use fixed clocks.

use time::OffsetDateTime;

use crate::db::DbError;

/// Retention periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Years kept after a certificate was revoked or expired.
    pub years_after_invalid: i32,
    /// Years kept after expiry for government-use certificates.
    pub government_years_after_expiry: i32,
    /// Months after account cancellation before erasure.
    pub months_after_cancellation: i32,
}

impl RetentionPolicy {
    /// The periods of a privacy catalog's `[hq_retention]` (the single source of these numbers;
    /// kioskd's catalog and HQ's are the same file).
    pub fn from_catalog(catalog: &kiosk_config::Catalog) -> Self {
        let r = &catalog.hq_retention;
        let int = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        Self {
            years_after_invalid: int(r.after_revocation_years),
            government_years_after_expiry: int(r.after_expiry_government_years),
            months_after_cancellation: int(r.anonymize_after_cancellation_months),
        }
    }
}

impl Default for RetentionPolicy {
    /// The periods of the privacy catalog built into the binary.
    fn default() -> Self {
        Self::from_catalog(&kiosk_config::Catalog::embedded())
    }
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Subjects erased in this run.
    pub subjects_erased: u64,
    /// Record rows deleted.
    pub records_deleted: u64,
    /// Certificate rows deleted.
    pub certificates_deleted: u64,
    /// Cancelled/deletion-requested subjects kept because of legal retention.
    pub deferred_by_legal_retention: u64,
    /// Deletion notices issued for propagation.
    pub notices_issued: u64,
}

const CERT_RETENTION_CTE: &str = "cert AS (
    SELECT subject_ref,
        CASE WHEN government_use THEN GREATEST(
                LEAST(COALESCE(revoked_at, 'infinity'::timestamptz), not_after) + make_interval(years => $2),
                not_after + make_interval(years => $3))
             ELSE LEAST(COALESCE(revoked_at, 'infinity'::timestamptz), not_after) + make_interval(years => $2)
        END AS retain_until
    FROM certificates)";

const DUE_SUBJECT: &str = "s.erased_at IS NULL AND (s.deletion_requested_at <= $1
    OR s.cancelled_at + make_interval(months => $4) <= $1)";

/// Run the retention job once at time `now`, in one transaction.
pub async fn run(
    client: &mut tokio_postgres::Client,
    now: OffsetDateTime,
    policy: &RetentionPolicy,
) -> Result<RetentionReport, DbError> {
    let tx = client.transaction().await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
        &now,
        &policy.years_after_invalid,
        &policy.government_years_after_expiry,
        &policy.months_after_cancellation,
    ];
    tx.batch_execute(
        "CREATE TEMP TABLE erase_now (subject_ref bytea PRIMARY KEY, reason text NOT NULL) ON COMMIT DROP",
    )
    .await?;
    tx.execute(
        &format!(
            "WITH {CERT_RETENTION_CTE}
             INSERT INTO erase_now
             SELECT subject_ref, 'retention_expired' FROM cert
             WHERE $4::int IS NOT NULL -- binds the shared parameter list
             GROUP BY subject_ref HAVING max(retain_until) <= $1"
        ),
        &params,
    )
    .await?;
    tx.execute(
        &format!(
            "WITH {CERT_RETENTION_CTE}
             INSERT INTO erase_now
             SELECT s.subject_ref,
                    CASE WHEN s.deletion_requested_at <= $1 THEN 'deletion_requested'
                         ELSE 'account_cancelled' END
             FROM subjects s
             WHERE {DUE_SUBJECT}
               AND NOT EXISTS (SELECT 1 FROM cert WHERE cert.subject_ref = s.subject_ref
                                                  AND cert.retain_until > $1)
             ON CONFLICT (subject_ref) DO NOTHING"
        ),
        &params,
    )
    .await?;
    let deferred = tx
        .query_one(
            &format!(
                "WITH {CERT_RETENTION_CTE}
                 SELECT count(*) FROM subjects s
                 WHERE {DUE_SUBJECT}
                   AND EXISTS (SELECT 1 FROM cert WHERE cert.subject_ref = s.subject_ref
                                                  AND cert.retain_until > $1)"
            ),
            &params,
        )
        .await?
        .get::<_, i64>(0);
    let records_deleted = tx
        .execute(
            "DELETE FROM records WHERE subject_ref IN (SELECT subject_ref FROM erase_now)",
            &[],
        )
        .await?;
    let certificates_deleted = tx
        .execute(
            "DELETE FROM certificates WHERE subject_ref IN (SELECT subject_ref FROM erase_now)",
            &[],
        )
        .await?;
    let subjects_erased = tx
        .execute(
            "INSERT INTO subjects (subject_ref, erased_at) SELECT subject_ref, $1 FROM erase_now
             ON CONFLICT (subject_ref) DO UPDATE SET erased_at = EXCLUDED.erased_at",
            &[&now],
        )
        .await?;
    // Kiosk-originated deletion requests already have their notice; HQ's own decisions get one.
    let notices_issued = tx
        .execute(
            "INSERT INTO deletion_notices (subject_ref, reason, items, source, created_at)
             SELECT subject_ref, reason, '{}', 'hq-retention', $1 FROM erase_now
             WHERE reason <> 'deletion_requested'",
            &[&now],
        )
        .await?;
    tx.commit().await?;
    let report = RetentionReport {
        subjects_erased,
        records_deleted,
        certificates_deleted,
        deferred_by_legal_retention: u64::try_from(deferred).unwrap_or(0),
        notices_issued,
    };
    tracing::info!(?report, "retention run finished");
    Ok(report)
}

/// Advisory lock key held while one HQ instance runs retention.
const RETENTION_LOCK: i64 = 7_270_017;

/// [`run`], unless another HQ instance sharing the database is running it right now (then
/// `None`): the scheduled job of every instance may fire at the same time.
pub async fn run_exclusive(
    client: &mut tokio_postgres::Client,
    now: OffsetDateTime,
    policy: &RetentionPolicy,
) -> Result<Option<RetentionReport>, DbError> {
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&RETENTION_LOCK])
        .await?
        .get(0);
    if !locked {
        tracing::info!("retention already running on another HQ instance; skipped");
        return Ok(None);
    }
    let result = run(client, now, policy).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&RETENTION_LOCK])
        .await?;
    result.map(Some)
}

/// A deletion notice waiting to be propagated to the recipients the data was shared with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingNotice {
    /// Notice id.
    pub id: i64,
    /// Subject reference (keyed digest bytes).
    pub subject_ref: Vec<u8>,
    /// Reason code.
    pub reason: String,
    /// Items concerned (empty: all).
    pub items: Vec<String>,
    /// Origin (`kiosk:<id>` or `hq-retention`).
    pub source: String,
}

/// Oldest notices not yet propagated.
pub async fn pending_notices(
    client: &tokio_postgres::Client,
    limit: i64,
) -> Result<Vec<PendingNotice>, DbError> {
    let rows = client
        .query(
            "SELECT id, subject_ref, reason, items, source FROM deletion_notices
             WHERE propagated_at IS NULL ORDER BY id LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PendingNotice {
            id: r.get(0),
            subject_ref: r.get(1),
            reason: r.get(2),
            items: r.get(3),
            source: r.get(4),
        })
        .collect())
}

/// Mark notices as propagated (after every recipient confirmed).
pub async fn mark_propagated(
    client: &tokio_postgres::Client,
    ids: &[i64],
    now: OffsetDateTime,
) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "UPDATE deletion_notices SET propagated_at = $2 WHERE id = ANY($1) AND propagated_at IS NULL",
            &[&ids, &now],
        )
        .await?)
}
