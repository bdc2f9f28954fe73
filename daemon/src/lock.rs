//! The daemon's advisory lock: kioskd holds an exclusive `flock` on `kioskd.lock` beside its
//! store (the file holds its pid) for its whole life. A second kioskd on the same store refuses
//! to start, and `kioskctl token` refuses to open the device token while the lock is held, so
//! the token's login state and the audit log have one owner. The kernel drops the lock when
//! the process ends, however it ends; a stale file is harmless.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Name of the lock file in the store's directory.
pub const LOCK_FILE: &str = "kioskd.lock";

/// Why the lock could not be taken or read.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another kioskd ({}) holds {}: one kioskd per store; stop it first",
        pid_text(*.pid),
        .path.display()
    )]
    Held { pid: Option<u32>, path: PathBuf },
    #[error("lock file {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn pid_text(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".into(),
    }
}

/// The lock file of the store at `store_path`.
pub fn lock_path(store_path: &Path) -> PathBuf {
    store_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(LOCK_FILE)
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DaemonLock {
    _file: Option<Flock<File>>,
    path: PathBuf,
}

impl DaemonLock {
    /// Takes the lock of the store at `store_path` and writes this process's pid into it.
    /// When the store's directory does not exist nothing is locked: opening the store then
    /// fails and names the directory.
    pub fn acquire(store_path: &Path) -> Result<Self, LockError> {
        let path = lock_path(store_path);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if !path.parent().is_some_and(Path::is_dir) {
            return Ok(Self { _file: None, path });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                return Err(LockError::Held {
                    pid: read_pid(&mut file),
                    path,
                });
            }
            Err((_, errno)) => return Err(io(errno.into())),
        };
        locked.set_len(0).map_err(io)?;
        locked.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(locked, "{}", std::process::id()).map_err(io)?;
        locked.flush().map_err(io)?;
        Ok(Self {
            _file: Some(locked),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Who holds the lock of the store at `store_path`: `Ok(None)` when nobody does (no file,
/// or a file no live process has locked), `Ok(Some(pid))` when a kioskd runs on it.
pub fn holder(store_path: &Path) -> Result<Option<Option<u32>>, LockError> {
    let path = lock_path(store_path);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LockError::Io { path, source }),
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // Taken (and dropped at once): nobody holds it.
        Ok(_free) => Ok(None),
        Err((mut file, Errno::EWOULDBLOCK)) => Ok(Some(read_pid(&mut file))),
        Err((_, errno)) => Err(LockError::Io {
            path,
            source: errno.into(),
        }),
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("kiosk.sqlite");
        assert_eq!(holder(&store).unwrap(), None);
        let first = DaemonLock::acquire(&store).unwrap();
        assert_eq!(first.path(), dir.path().join(LOCK_FILE));
        // flock locks belong to the open file description: a second open in the same
        // process conflicts just as another process would.
        let err = DaemonLock::acquire(&store).unwrap_err();
        let me = std::process::id();
        assert!(
            matches!(err, LockError::Held { pid: Some(p), .. } if p == me),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("pid {me}")), "{err}");
        assert_eq!(holder(&store).unwrap(), Some(Some(me)));
        drop(first);
        assert_eq!(holder(&store).unwrap(), None);
        let _again = DaemonLock::acquire(&store).unwrap();
    }

    #[test]
    fn a_missing_directory_locks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("absent/kiosk.sqlite");
        let lock = DaemonLock::acquire(&store).unwrap();
        assert!(!lock.path().exists());
    }
}
