//! A throwaway P-256 CA made with the openssl command, to issue a certificate for a token
//! key's CSR in tests. Shared by hsm's tests and the softtoken crate's tests
//! (`#[path = "../../hsm/tests/common/openssl_ca.rs"]`).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

pub fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs (install openssl)")
}

/// Issues a certificate for a CSR with a throwaway P-256 CA (openssl).
pub fn issue_with_openssl(dir: &Path, csr_pem: &str) -> Vec<u8> {
    let p = |n: &str| dir.join(n).display().to_string();
    std::fs::write(dir.join("req.pem"), csr_pem).unwrap();
    let ca = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
        "-subj",
        "/CN=Test CA",
        "-days",
        "2",
    ]);
    assert!(
        ca.status.success(),
        "{}",
        String::from_utf8_lossy(&ca.stderr)
    );
    let issued = openssl(&[
        "x509",
        "-req",
        "-in",
        &p("req.pem"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-set_serial",
        "4242",
        "-days",
        "2",
        "-outform",
        "DER",
        "-out",
        &p("cert.der"),
    ]);
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    std::fs::read(dir.join("cert.der")).unwrap()
}
