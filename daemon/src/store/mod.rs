//! The kiosk's local store: one SQLite file in WAL mode with `synchronous=FULL`,
//! versioned schema migrations, and an integrity check at open.
//!
//! A store that exists but is not a healthy kioskd database (corrupt, truncated,
//! another program's file, a newer schema) is refused with a clear error and is
//! never silently re-created: it may hold undelivered records.

pub mod crypto;
pub mod meta;
mod migrations;
pub mod outbox;
pub mod pin_attempts;
pub mod subjects;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags};

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "store {path}: not a usable kioskd database ({detail}); it is left untouched — restore it from backup or move it aside after its records are recovered"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "store {path}: schema version {found} is newer than this kioskd understands ({supported}); upgrade kioskd"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("store: {0}")]
    Query(#[from] rusqlite::Error),
    #[error("store: the connection lock was poisoned by a panic")]
    Poisoned,
}

/// A handle to the store; cheap to clone, one connection behind a mutex
/// (SQLite serializes writers anyway; kiosk traffic is a few requests a minute).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Open (creating if absent) and migrate the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let existed = path.exists()
            && std::fs::metadata(path)
                .map(|m| m.len() > 0)
                .unwrap_or(false);
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
        if existed {
            // Reading the header and running quick_check catches foreign files,
            // truncation and page corruption before anything writes.
            let check: Result<String, _> = conn.query_row("PRAGMA quick_check", [], |r| r.get(0));
            match check {
                Ok(s) if s == "ok" => {}
                Ok(s) => return Err(corrupt(s)),
                Err(e) => return Err(corrupt(e.to_string())),
            }
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| corrupt(e.to_string()))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite)?;
        // Deleted content is overwritten with zeros, so a purged data key or value does not
        // linger in free pages or free space inside a page (see `scrub_wal` for the WAL).
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(sqlite)?;
        // 32 MiB of page cache (the default is 2 MiB): a backlog drains without re-reading
        // its outbox pages through the kernel for every batch.
        conn.pragma_update(None, "cache_size", -32 * 1024)
            .map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite)?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sqlite)?;
        if existed && found == 0 {
            let tables: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(sqlite)?;
            if tables > 0 {
                return Err(corrupt(
                    "the file is an SQLite database of another program".into(),
                ));
            }
        }
        let supported = migrations::latest();
        if found > supported {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found,
                supported,
            });
        }
        let mut conn = conn;
        migrations::apply(&mut conn, found).map_err(sqlite)?;
        Ok(Self {
            inner: Arc::new(Mutex::new(conn)),
            path: Arc::new(path.to_path_buf()),
        })
    }

    /// The file behind the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lock the connection for a unit of work.
    pub fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Checkpoint the WAL into the main file (on shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        Self::scrub_wal(&*self.conn()?)?;
        Ok(())
    }

    /// Checkpoint the WAL into the main file and truncate it, after a transaction that purged
    /// personal data has committed: until then the WAL still holds the earlier frames of the
    /// pages (with the data keys and values the purge just zeroed). Returns `false` when a
    /// reader kept the checkpoint from completing (the next scrub gets it).
    pub fn scrub_wal(conn: &Connection) -> rusqlite::Result<bool> {
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        Ok(busy == 0)
    }

    /// The schema version in the file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()?
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiosk.sqlite");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), migrations::latest());
        store.flush().unwrap();
        drop(store);
        let again = Store::open(&path).unwrap();
        assert_eq!(again.schema_version().unwrap(), migrations::latest());
    }

    #[test]
    fn refuses_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiosk.sqlite");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("left untouched"));
        // Never re-created: the bytes are still there.
        assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 8192]);
    }

    #[test]
    fn refuses_a_truncated_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiosk.sqlite");
        {
            let store = Store::open(&path).unwrap();
            let conn = store.conn().unwrap();
            conn.execute_batch(
                "CREATE TABLE filler(x BLOB); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 200) INSERT INTO filler SELECT randomblob(1000) FROM c;",
            )
            .unwrap();
            drop(conn);
            store.flush().unwrap();
        }
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len / 2).unwrap();
        drop(file);
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn refuses_another_programs_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiosk.sqlite");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE foreign_stuff(x)")
            .unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(err.to_string().contains("another program"), "{err}");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiosk.sqlite");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 9999)
            .unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found: 9999, .. }),
            "{err}"
        );
    }
}
