//! PostgreSQL access: connection pool, the embedded migration runner (serialized across HQ
//! instances by an advisory lock) and kiosk registration. All cross-request state lives here,
//! so any number of hq-ingest instances can share one database.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use records::PublicVerifier;
use tokio_postgres::NoTls;

/// Database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Invalid connection string.
    #[error("invalid database URL: {0}")]
    Config(String),
    /// Pool could not hand out a connection.
    #[error("database pool: {0}")]
    Pool(String),
    /// Query failed.
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::Pool(e.to_string())
    }
}

/// Migrations in order; never edit an applied one, append a new version instead.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE kiosks (
    kiosk_id            text PRIMARY KEY,
    signature_algorithm text NOT NULL,
    public_key          bytea NOT NULL,
    sm2_distid          text,
    registered_at       timestamptz NOT NULL DEFAULT now(),
    next_record_seq     bigint NOT NULL DEFAULT 1 CHECK (next_record_seq >= 1),
    last_batch_seq      bigint NOT NULL DEFAULT 0 CHECK (last_batch_seq >= 0),
    last_batch_hash     bytea NOT NULL DEFAULT decode(repeat('00', 32), 'hex'),
    witness_size        bigint,
    witness_root        bytea
);
CREATE TABLE batches (
    kiosk_id     text NOT NULL REFERENCES kiosks,
    batch_seq    bigint NOT NULL,
    batch_hash   bytea NOT NULL,
    first_seq    bigint,
    last_seq     bigint,
    record_count integer NOT NULL,
    received_at  timestamptz NOT NULL,
    ack          bytea NOT NULL,
    PRIMARY KEY (kiosk_id, batch_seq)
);
CREATE TABLE records (
    kiosk_id    text NOT NULL REFERENCES kiosks,
    seq         bigint NOT NULL,
    record_id   bytea NOT NULL,
    kind        text NOT NULL,
    subject_ref bytea,
    body        bytea NOT NULL,
    batch_seq   bigint NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (kiosk_id, seq),
    UNIQUE (kiosk_id, record_id)
);
CREATE INDEX records_subject ON records (subject_ref) WHERE subject_ref IS NOT NULL;
CREATE TABLE subjects (
    subject_ref            bytea PRIMARY KEY,
    cancelled_at           timestamptz,
    deletion_requested_at  timestamptz,
    erased_at              timestamptz
);
CREATE TABLE certificates (
    serial_hex     text PRIMARY KEY,
    subject_ref    bytea NOT NULL,
    government_use boolean NOT NULL,
    not_after      timestamptz NOT NULL,
    revoked_at     timestamptz,
    status         text NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX certificates_subject ON certificates (subject_ref);
CREATE TABLE deletion_notices (
    id            bigserial PRIMARY KEY,
    subject_ref   bytea NOT NULL,
    reason        text NOT NULL,
    items         text[] NOT NULL,
    source        text NOT NULL,
    created_at    timestamptz NOT NULL,
    propagated_at timestamptz
);
CREATE TABLE checkpoints (
    kiosk_id     text NOT NULL REFERENCES kiosks,
    tree_size    bigint NOT NULL,
    root_hash    bytea NOT NULL,
    note         text NOT NULL,
    cosignature  text NOT NULL,
    accepted_at  timestamptz NOT NULL,
    PRIMARY KEY (kiosk_id, tree_size)
);
-- Searchable view: records of cancelled or erased subjects are unsearchable at once.
CREATE VIEW searchable_records AS
    SELECT r.* FROM records r
    LEFT JOIN subjects s ON s.subject_ref = r.subject_ref
    WHERE s.subject_ref IS NULL OR (s.cancelled_at IS NULL AND s.erased_at IS NULL);
"#,
    ),
    (
        2,
        r#"
-- Certificates issued by HQ's CA (module ca): one row per certificate, keyed by serial.
CREATE TABLE ca_certificates (
    serial_hex        text PRIMARY KEY,
    csr_digest        bytea NOT NULL UNIQUE,
    subject_der       bytea NOT NULL,
    public_key_der    bytea NOT NULL,
    certificate       bytea NOT NULL,
    not_before        timestamptz NOT NULL,
    not_after         timestamptz NOT NULL,
    status            text NOT NULL CHECK (status IN ('good', 'held', 'revoked')),
    revocation_reason text,
    status_changed_at timestamptz,
    status_changed_by text,
    replaces          text REFERENCES ca_certificates,
    issued_by_kiosk   text NOT NULL,
    issued_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ca_certificates_subject ON ca_certificates (subject_der);
"#,
    ),
    (
        3,
        r#"
-- Issuance policy and trust boundaries (issue 13): each certificate names its service, the
-- holder's keyed digest (proves ownership for revoke/hold/release) and the kiosk application
-- it was issued for; kiosks can be revoked; HQ audits every CA action, hash-chained.
ALTER TABLE ca_certificates
    ADD COLUMN service        text,
    ADD COLUMN holder_digest  bytea,
    ADD COLUMN application_id text;
CREATE INDEX ca_certificates_holder ON ca_certificates (holder_digest)
    WHERE holder_digest IS NOT NULL;
CREATE INDEX ca_certificates_kiosk_issued ON ca_certificates (issued_by_kiosk, issued_at);
ALTER TABLE kiosks ADD COLUMN revoked_at timestamptz;
-- Client certificates each kiosk authenticated with (serials go on the kiosk CRL).
CREATE TABLE kiosk_certificates (
    kiosk_id   text NOT NULL,
    serial_hex text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    PRIMARY KEY (kiosk_id, serial_hex)
);
CREATE TABLE ca_audit (
    seq       bigserial PRIMARY KEY,
    at        timestamptz NOT NULL,
    actor     text NOT NULL,
    action    text NOT NULL,
    target    text,
    outcome   text NOT NULL CHECK (outcome IN ('done', 'refused')),
    code      text,
    entry     text NOT NULL,
    prev_hash bytea NOT NULL,
    hash      bytea NOT NULL UNIQUE
);
CREATE FUNCTION ca_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ca_audit is append-only';
END
$$;
CREATE TRIGGER ca_audit_append_only BEFORE UPDATE OR DELETE ON ca_audit
    FOR EACH ROW EXECUTE FUNCTION ca_audit_append_only();
CREATE TRIGGER ca_audit_no_truncate BEFORE TRUNCATE ON ca_audit
    FOR EACH STATEMENT EXECUTE FUNCTION ca_audit_append_only();
"#,
    ),
    (
        4,
        r#"
-- Kiosk provisioning (issue 16): one-time enrollment codes made by `hq-ingest enroll-kiosk`.
-- Only a SHA-256 of each code is kept; a code is consumed by setting used_at, in the same
-- transaction that issues the kiosk's client certificate and registers its device key.
CREATE TABLE enrollment_codes (
    code_hash          bytea PRIMARY KEY CHECK (length(code_hash) = 32),
    kiosk_id           text NOT NULL,
    branch             text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    created_by         text NOT NULL,
    expires_at         timestamptz NOT NULL,
    used_at            timestamptz,
    certificate_serial text
);
CREATE INDEX enrollment_codes_kiosk ON enrollment_codes (kiosk_id);
ALTER TABLE kiosks ADD COLUMN branch text;
"#,
    ),
];

/// Build a connection pool from a libpq-style connection string.
pub fn pool(database_url: &str, max_size: usize) -> Result<Pool, DbError> {
    let config: tokio_postgres::Config = database_url
        .parse()
        .map_err(|e: tokio_postgres::Error| DbError::Config(e.to_string()))?;
    pool_from_config(config, max_size)
}

/// [`pool`] from parsed connection settings (e.g. with a password read from a secret).
pub fn pool_from_config(config: tokio_postgres::Config, max_size: usize) -> Result<Pool, DbError> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .build()
        .map_err(|e| DbError::Config(e.to_string()))
}

/// Apply pending migrations. Safe to run from several instances at once.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, DbError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(7270016)", &[])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        let done = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[version],
            )
            .await?
            .is_some();
        if !done {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .await?;
            applied.push(*version);
        }
    }
    tx.commit().await?;
    Ok(applied)
}

/// Register (or re-key) a kiosk's envelope-signing public key.
pub async fn register_kiosk(
    client: &tokio_postgres::Client,
    kiosk_id: &str,
    key: &PublicVerifier,
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO kiosks (kiosk_id, signature_algorithm, public_key, sm2_distid)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (kiosk_id) DO UPDATE SET signature_algorithm = EXCLUDED.signature_algorithm,
                 public_key = EXCLUDED.public_key, sm2_distid = EXCLUDED.sm2_distid",
            &[&kiosk_id, &key.algorithm.name(), &key.sec1, &key.distid],
        )
        .await?;
    Ok(())
}

/// [`register_kiosk`] inside the caller's transaction (or on any client), also recording the
/// kiosk's branch when given (enrollment, [`crate::enroll`]).
pub async fn register_kiosk_at(
    client: &impl tokio_postgres::GenericClient,
    kiosk_id: &str,
    key: &PublicVerifier,
    branch: Option<&str>,
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO kiosks (kiosk_id, signature_algorithm, public_key, sm2_distid, branch)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (kiosk_id) DO UPDATE SET signature_algorithm = EXCLUDED.signature_algorithm,
                 public_key = EXCLUDED.public_key, sm2_distid = EXCLUDED.sm2_distid,
                 branch = coalesce(EXCLUDED.branch, kiosks.branch)",
            &[
                &kiosk_id,
                &key.algorithm.name(),
                &key.sec1,
                &key.distid,
                &branch,
            ],
        )
        .await?;
    Ok(())
}

/// Registered key of a kiosk, if any.
pub async fn kiosk_key(
    client: &tokio_postgres::Client,
    kiosk_id: &str,
) -> Result<Option<PublicVerifier>, DbError> {
    let row = client
        .query_opt(
            "SELECT signature_algorithm, public_key, sm2_distid FROM kiosks WHERE kiosk_id = $1",
            &[&kiosk_id],
        )
        .await?;
    Ok(row.and_then(|row| {
        let algorithm = records::SignatureAlgorithm::from_name(row.get::<_, &str>(0))?;
        Some(PublicVerifier {
            algorithm,
            sec1: row.get(1),
            distid: row.get(2),
        })
    }))
}

/// The `COPY` that [`copy_records`] feeds: start it with `copy_in` on a client or a
/// transaction and hand the sink over.
pub const COPY_RECORDS: &str = "COPY records (kiosk_id, seq, record_id, kind, subject_ref, body, batch_seq, received_at) FROM STDIN BINARY";

/// One row of `records` for [`copy_records`], in the column order of [`COPY_RECORDS`].
pub type RecordColumns<'a> = [&'a (dyn tokio_postgres::types::ToSql + Sync); 8];

/// Binary `COPY` of rows into `records` through a sink of [`COPY_RECORDS`]: the ingest
/// path's insert, and the baseline the benchmarks compare it with. Returns the rows written.
pub async fn copy_records(
    sink: tokio_postgres::CopyInSink<bytes::Bytes>,
    rows: &[RecordColumns<'_>],
) -> Result<u64, tokio_postgres::Error> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::TEXT,
            Type::INT8,
            Type::BYTEA,
            Type::TEXT,
            Type::BYTEA,
            Type::BYTEA,
            Type::INT8,
            Type::TIMESTAMPTZ,
        ],
    );
    let mut writer = std::pin::pin!(writer);
    for row in rows {
        writer.as_mut().write(row).await?;
    }
    writer.finish().await
}
