//! Shared fixtures: the built module (`libkiosk_softtoken.so`, built once per test process
//! with `cargo build -p softtoken --lib` so it is never stale), store directories with a
//! `softtoken.toml`, and `openssl` / `pkcs11-tool` runners.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const SO_PIN: &str = "87654321";
pub const USER_PIN: &str = "123456";
pub const DISTID: &str = "1234567812345678";

/// `<target>/debug` of this test binary (`<target>/debug/deps/<test>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// The module, built for this test run.
pub fn module_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = profile_dir();
        let target = dir.parent().expect("target dir");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "softtoken",
            "--lib",
            "--target-dir",
        ])
        .arg(target);
        // Benches run from <target>/release: measure an optimised module there.
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build -p softtoken failed");
        let so = dir.join("libkiosk_softtoken.so");
        assert!(so.exists(), "{} was not built", so.display());
        so
    })
    .clone()
}

/// A fresh store directory with this `softtoken.toml`.
pub fn store_dir(config: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("softtoken-")
        .tempdir()
        .expect("tempdir");
    std::fs::write(dir.path().join("softtoken.toml"), config).expect("config");
    dir
}

pub fn run(program: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("{program} runs (install it): {e}"))
}

pub fn openssl(args: &[&str]) -> Output {
    run("openssl", args, &[])
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Verifies an SM2 signature (DER) over `msg` with openssl and the default distinguishing id.
pub fn openssl_sm2_verify(dir: &Path, public_pem: &str, msg: &[u8], sig_der: &[u8]) -> Output {
    // Own files per call: tests run in parallel threads under `cargo test`.
    let tmp = tempfile::tempdir_in(dir).expect("tempdir");
    let dir = tmp.path();
    let (p, m, s) = (
        dir.join("sm2.pub.pem"),
        dir.join("sm2.msg"),
        dir.join("sm2.sig"),
    );
    std::fs::write(&p, public_pem).unwrap();
    std::fs::write(&m, msg).unwrap();
    std::fs::write(&s, sig_der).unwrap();
    openssl(&[
        "dgst",
        "-sm3",
        "-verify",
        p.to_str().unwrap(),
        "-sigopt",
        &format!("distid:{DISTID}"),
        "-signature",
        s.to_str().unwrap(),
        m.to_str().unwrap(),
    ])
}

/// Verifies an ECDSA-SHA256 signature (DER) with openssl.
pub fn openssl_p256_verify(dir: &Path, public_pem: &str, msg: &[u8], sig_der: &[u8]) -> Output {
    let tmp = tempfile::tempdir_in(dir).expect("tempdir");
    let dir = tmp.path();
    let (p, m, s) = (
        dir.join("p256.pub.pem"),
        dir.join("p256.msg"),
        dir.join("p256.sig"),
    );
    std::fs::write(&p, public_pem).unwrap();
    std::fs::write(&m, msg).unwrap();
    std::fs::write(&s, sig_der).unwrap();
    openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        p.to_str().unwrap(),
        "-signature",
        s.to_str().unwrap(),
        m.to_str().unwrap(),
    ])
}
