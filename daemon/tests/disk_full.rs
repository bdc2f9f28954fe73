//! A full disk stops intake of new applicants with a clear status while
//! status keeps working, and intake resumes when space returns. The data
//! directory lives on a size-limited tmpfs mounted for the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Kioskd;
use serde_json::json;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_pauses_intake_and_space_returning_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_tmpfs) = Tmpfs::mount(dir.path(), "24m") else {
        eprintln!("SKIPPED: mounting a tmpfs is not permitted here (needs root)");
        return;
    };
    // No local HQ child on a 24 MiB disk: records simply wait in the outbox.
    let data = dir.path().join("data");
    let k = {
        // SAFETY: this test binary has a single test; the variable is set
        // before kioskd is spawned and only the child reads it.
        unsafe { std::env::set_var("KIOSKD_HQ_INGEST", "/nonexistent/hq-ingest") };
        Kioskd::start(&data, "[store]\nmin_free_bytes = 8388608\n")
    };
    let (status, _) = k.call(
        "POST",
        "/v1/sessions",
        None,
        Some(json!({"service": "cert_application"})),
    );
    assert_eq!(status, 201);
    let (_, health) = k.call("GET", "/v1/health", None, None);
    assert_eq!(health["intake"], "open", "{health}");

    // Fill the disk until less than the configured minimum is free.
    let filler = dir.path().join("filler");
    let st = nix::sys::statvfs::statvfs(dir.path()).unwrap();
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let keep = 4 * 1024 * 1024;
    std::fs::write(&filler, vec![0u8; (free - keep) as usize]).unwrap();

    let (_, health) = k.call("GET", "/v1/health", None, None);
    assert_eq!(health["intake"], "paused", "{health}");
    assert!(
        health["intake_detail"]
            .as_str()
            .unwrap()
            .contains("nearly full")
    );
    let (status, body) = k.call(
        "POST",
        "/v1/sessions",
        None,
        Some(json!({"service": "lifecycle"})),
    );
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "intake_paused");

    std::fs::remove_file(&filler).unwrap();
    let (_, health) = k.call("GET", "/v1/health", None, None);
    assert_eq!(health["intake"], "open", "{health}");
    // The first session is still the active one: intake works again, the slot is just busy.
    let (status, body) = k.call(
        "POST",
        "/v1/sessions",
        None,
        Some(json!({"service": "lifecycle"})),
    );
    assert_eq!(status, 409, "{body}");
    k.stop();
}
