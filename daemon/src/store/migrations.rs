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
