//! Schema migrations of the kiosk store, tracked in `PRAGMA user_version`.
//! Each step runs in its own transaction together with the version bump, so a
//! crash mid-migration leaves the previous version intact.

use rusqlite::Connection;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: bookkeeping of the kiosk itself.
    "CREATE TABLE kiosk_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;",
    // 2: personal data (encrypted per subject), consent, hand-overs, outbox,
    //    audit log with its Merkle frontier and checkpoints, rights requests.
    "CREATE TABLE subjects (
        subject_id     TEXT PRIMARY KEY,
        session_id     TEXT NOT NULL,
        subject_digest BLOB NOT NULL,
        cipher         TEXT NOT NULL,
        wrapped_key    BLOB,
        created_at     INTEGER NOT NULL,
        acked_at       INTEGER,
        purged_at      INTEGER
    ) STRICT;
    CREATE INDEX subjects_digest ON subjects(subject_digest);
    CREATE TABLE personal_fields (
        subject_id TEXT NOT NULL REFERENCES subjects(subject_id) ON DELETE CASCADE,
        item       TEXT NOT NULL,
        sealed     BLOB NOT NULL,
        PRIMARY KEY (subject_id, item)
    ) STRICT;
    CREATE TABLE consents (
        id             INTEGER PRIMARY KEY,
        session_id     TEXT NOT NULL,
        service        TEXT NOT NULL,
        item           TEXT,
        scope          TEXT NOT NULL,
        policy_version TEXT NOT NULL,
        granted_at     INTEGER NOT NULL,
        withdrawn_at   INTEGER
    ) STRICT;
    CREATE INDEX consents_session ON consents(session_id, service);
    CREATE TABLE handovers (
        id         INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL,
        recipient  TEXT NOT NULL,
        method     TEXT NOT NULL,
        items      TEXT NOT NULL,
        purpose    TEXT NOT NULL,
        at         INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE outbox (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        record_id  TEXT NOT NULL UNIQUE,
        kind       TEXT NOT NULL,
        subject_id TEXT,
        body       BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        batch_seq  INTEGER,
        acked_at   INTEGER
    ) STRICT;
    CREATE INDEX outbox_pending ON outbox(acked_at, seq);
    CREATE TABLE audit_log (
        seq       INTEGER PRIMARY KEY,
        at        INTEGER NOT NULL,
        actor     TEXT NOT NULL,
        action    TEXT NOT NULL,
        subject   TEXT,
        detail    TEXT NOT NULL,
        leaf_hash BLOB NOT NULL
    ) STRICT;
    CREATE TABLE audit_state (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        size     INTEGER NOT NULL,
        frontier BLOB NOT NULL
    ) STRICT;
    CREATE TABLE audit_checkpoints (
        size       INTEGER PRIMARY KEY,
        root       BLOB NOT NULL,
        note       TEXT NOT NULL,
        at         INTEGER NOT NULL,
        cosignature TEXT
    ) STRICT;
    CREATE TABLE rights_requests (
        id             TEXT PRIMARY KEY,
        subject_digest BLOB NOT NULL,
        kind           TEXT NOT NULL,
        state          TEXT NOT NULL,
        received_at    INTEGER NOT NULL,
        due_date       TEXT NOT NULL,
        refusal_ground TEXT,
        updated_at     INTEGER NOT NULL
    ) STRICT;",
    // 3: sealed batches kept until HQ acknowledges them (resent byte for byte).
    "CREATE TABLE sync_batches (
        batch_seq  INTEGER PRIMARY KEY,
        batch_hash BLOB NOT NULL,
        first_seq  INTEGER NOT NULL,
        last_seq   INTEGER NOT NULL,
        envelope   BLOB NOT NULL,
        sealed_at  INTEGER NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    ) STRICT;",
    // 4: PIN attempts per token serial (staff UKEYs, applicants' UKEYs), reserved before
    //    each login so that neither a race, a new session nor a restart resets them.
    "CREATE TABLE pin_attempts (
        kind       TEXT NOT NULL,
        serial     TEXT NOT NULL,
        failures   INTEGER NOT NULL,
        last_at    INTEGER NOT NULL,
        PRIMARY KEY (kind, serial)
    ) STRICT;",
];

/// The newest schema version this build knows.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Apply every migration above `from`.
pub fn apply(conn: &mut Connection, from: i64) -> rusqlite::Result<()> {
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
