//! Intake control: new applicants are accepted only while the store's disk
//! has room (`store.min_free_bytes`). A kiosk that cannot write durably must
//! stop taking personal data before it loses any; sync, status and staff
//! functions keep working, and intake resumes by itself when space returns.

use std::path::Path;

/// Why intake is paused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    #[error(
        "the kiosk's disk is nearly full ({free} bytes free, {needed} needed): new applications are paused until space is freed"
    )]
    DiskFull { free: u64, needed: u64 },
    #[error("cannot check free disk space: {0}")]
    Unknown(String),
}

/// Bytes available to unprivileged writers on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64, IntakeError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| IntakeError::Unknown(e.to_string()))?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// Ok when at least `needed` bytes are free where the store lives.
pub fn check(store_dir: &Path, needed: u64) -> Result<(), IntakeError> {
    let free = free_bytes(store_dir)?;
    if free < needed {
        return Err(IntakeError::DiskFull { free, needed });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_free_space_and_refuses_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        assert!(check(dir.path(), 1).is_ok());
        assert!(matches!(
            check(dir.path(), u64::MAX),
            Err(IntakeError::DiskFull {
                needed: u64::MAX,
                ..
            })
        ));
    }
}
