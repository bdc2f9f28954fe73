//! The systemd units: `systemd-analyze verify` prints nothing, the hardening
//! score is 2.0 or better, and sysusers/tmpfiles entries apply to a scratch root.

use std::path::Path;
use std::process::Command;

use kioskd_tests::{repo_root, workspace_bin};

fn systemd_dir() -> std::path::PathBuf {
    repo_root().join("systemd")
}

/// Copy a unit into `dir` with `ExecStart=` pointing at the freshly built binary
/// (verify insists the executable exists).
fn stage_unit(dir: &Path, unit: &str, installed: &str, built: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(systemd_dir().join(unit)).unwrap();
    assert!(text.contains(installed), "{unit} runs {installed}");
    let staged = dir.join(unit);
    std::fs::write(
        &staged,
        text.replace(installed, &built.display().to_string()),
    )
    .unwrap();
    staged
}

#[test]
fn units_verify_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let kioskd = stage_unit(
        dir.path(),
        "kioskd.service",
        "/usr/bin/kioskd",
        &workspace_bin("kioskd", "kioskd"),
    );
    let hq = stage_unit(
        dir.path(),
        "hq-ingest.service",
        "/usr/bin/hq-ingest",
        &workspace_bin("hq-ingest", "hq-ingest"),
    );
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&kioskd)
        .arg(&hq)
        .output()
        .expect("systemd-analyze is installed (.ci/run installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "verify failed:\n{stdout}{stderr}");
    assert!(
        stderr.trim().is_empty() && stdout.trim().is_empty(),
        "verify warned:\n{stdout}{stderr}"
    );
}

fn exposure(unit: &str) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(systemd_dir().join(unit))
        .output()
        .expect("systemd-analyze runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line in:\n{stdout}"));
    line.split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"))
}

#[test]
fn kioskd_unit_is_hardened() {
    let score = exposure("kioskd.service");
    eprintln!("kioskd.service exposure {score}");
    assert!(score <= 2.0, "kioskd.service exposure {score} > 2.0");
}

#[test]
fn hq_ingest_unit_is_hardened() {
    let score = exposure("hq-ingest.service");
    eprintln!("hq-ingest.service exposure {score}");
    assert!(score <= 2.0, "hq-ingest.service exposure {score} > 2.0");
}

#[test]
fn sysusers_and_tmpfiles_apply_to_a_scratch_root() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let run = |tool: &str, extra: &[&str], file: &str| {
        let out = Command::new(tool)
            .arg(format!("--root={}", root.path().display()))
            .args(extra)
            .arg(systemd_dir().join(file))
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {file}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("systemd-sysusers", &[], "kioskd.sysusers.conf");
    run("systemd-tmpfiles", &["--create"], "kioskd.tmpfiles.conf");
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("kioskd:")), "{passwd}");
    assert!(
        passwd.lines().any(|l| l.starts_with("hq-ingest:")),
        "{passwd}"
    );
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("dialout:") && l.ends_with("kioskd")),
        "{group}"
    );
    use std::os::unix::fs::PermissionsExt;
    let data = std::fs::metadata(root.path().join("var/lib/kioskd")).unwrap();
    assert_eq!(data.permissions().mode() & 0o777, 0o750);
}
