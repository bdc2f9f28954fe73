//! The README's first command for a newcomer who cloned as root into a private directory: a
//! data directory below a `0700` directory, which the `postgres` user (that runs the local
//! HQ's server when kioskd is root) cannot enter. The local HQ still comes up (the CA link is
//! ready) and no retry storm is logged; when it cannot start, kioskd says why once.

mod common;
mod sync_support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::Kioskd;
use sync_support::*;

const CONFIG: &str = r#"
[kiosk]
id = "kiosk-private-dir"

[hq]
mode = "local"
retry_min_ms = 100
retry_max_ms = 1000
"#;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { nix::libc::geteuid() == 0 }
}

#[test]
fn data_dir_below_a_0700_directory_brings_the_local_hq_up() {
    let _ = hq_ingest();
    // Like /root: private to its owner.
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = home.path().join("kioskd/demo-data");
    let kiosk = Kioskd::start(&data, CONFIG);
    wait_for("the CA link", Duration::from_secs(120), || {
        kiosk.logs().iter().any(|l| l.contains("CA link ready"))
    });
    let logs = kiosk.logs();
    assert!(
        !logs.iter().any(|l| l.contains("local HQ failed to start")),
        "{}",
        logs.join("\n")
    );
    let marker = data.join("hq-local/pg/relocated");
    let relocated = std::fs::read_to_string(&marker).ok();
    if is_root() {
        let target = relocated
            .as_deref()
            .expect("the cluster was relocated")
            .trim();
        assert!(
            std::path::Path::new(target)
                .join("data/PG_VERSION")
                .is_file(),
            "{target}"
        );
    }
    kiosk.stop();
    // Tidy up what outlives the temp dir (the next start would remove it as an orphan).
    if let Some(target) = relocated {
        let _ = std::fs::remove_dir_all(target.trim());
    }
}

#[test]
fn a_local_hq_that_cannot_start_is_explained_once_not_per_retry() {
    let _ = hq_ingest();
    let dir = data_dir();
    // A file where the cluster directory must be: every start fails the same way.
    std::fs::create_dir_all(dir.path().join("hq-local")).unwrap();
    std::fs::write(dir.path().join("hq-local/pg"), b"not a directory").unwrap();
    let kiosk = Kioskd::start(dir.path(), CONFIG);
    // Several retries (100 ms, 200 ms, 400 ms, 800 ms, 1 s ...).
    wait_for("retries", Duration::from_secs(60), || {
        kiosk
            .logs()
            .iter()
            .filter(|l| l.contains("local HQ failed to start again"))
            .count()
            >= 3
    });
    let logs = kiosk.logs();
    let explained: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("local HQ failed to start;"))
        .collect();
    assert_eq!(explained.len(), 1, "{}", logs.join("\n"));
    let line = explained[0];
    eprintln!("{line}");
    assert!(line.contains("local HQ cannot start"), "{line}");
    assert!(
        !logs
            .iter()
            .any(|l| l.contains("stack backtrace") || l.starts_with("Error:")),
        "{}",
        logs.join("\n")
    );
    kiosk.stop();
}
