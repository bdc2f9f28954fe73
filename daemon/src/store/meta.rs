//! The `kiosk_meta` table: small named values the subsystems keep beside their data (sync
//! chain head, witness state, key metadata), read and written on the caller's connection or
//! transaction.

use rusqlite::{Connection, OptionalExtension, params};

/// The value of `key`, if set.
pub fn get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM kiosk_meta WHERE key = ?1", [key], |r| {
        r.get(0)
    })
    .optional()
}

/// Set `key` to `value`.
pub fn set(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO kiosk_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Unset `key`.
pub fn delete(conn: &Connection, key: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM kiosk_meta WHERE key = ?1", [key])?;
    Ok(())
}
