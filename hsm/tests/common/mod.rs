//! Shared test fixtures: one SoftHSM2 configuration per test process (SOFTHSM2_CONF is read
//! once, at C_Initialize) with a fresh token per test, and helpers to run `openssl`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hsm::pkcs11::{Pkcs11Options, Pkcs11Provider};
use hsm::profile::ProfileSet;
use hsm::{Pin, Token, TokenProvider, UserKind};

#[path = "openssl_ca.rs"]
mod openssl_ca;
// Not every test binary that includes this module uses them.
#[allow(unused_imports)]
pub use openssl_ca::{issue_with_openssl, openssl};

pub const USER_PIN: &str = "123456";
pub const SO_PIN: &str = "87654321";

struct SoftHsmEnv {
    dir: PathBuf,
    module: PathBuf,
}

fn find_module() -> PathBuf {
    for candidate in [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("libsofthsm2.so not found: install softhsm2");
}

fn env() -> &'static SoftHsmEnv {
    static ENV: OnceLock<SoftHsmEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("hsm-softhsm-").tempdir().expect("tempdir").keep();
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).expect("token dir");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = true\n", tokens.display()),
        )
        .expect("conf");
        // SAFETY: runs once, before the module is loaded; SoftHSM2 reads it at C_Initialize.
        unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
        SoftHsmEnv { dir, module: find_module() }
    })
}

pub fn module_path() -> PathBuf {
    env().module.clone()
}

pub fn token_dir() -> PathBuf {
    env().dir.join("tokens")
}

pub fn options(profile: &str) -> Pkcs11Options {
    Pkcs11Options {
        profile: ProfileSet::embedded().unwrap().get(profile).unwrap(),
        sm2_distid: "1234567812345678".into(),
        call_timeout: Duration::from_secs(20),
        max_sessions: 8,
    }
}

pub fn provider() -> Arc<Pkcs11Provider> {
    let env = env();
    Pkcs11Provider::open(&env.module, options("softhsm2")).expect("softhsm2 module loads")
}

/// A unique token label per test (max 32 bytes).
pub fn label(test: &str) -> String {
    let mut l = format!("t{}-{test}", std::process::id() % 100_000);
    l.truncate(32);
    l
}

/// Initialises a fresh token and returns it logged in as the user.
pub async fn fresh_token(provider: &Arc<Pkcs11Provider>, test: &str) -> Arc<dyn Token> {
    let label = label(test);
    provider
        .init_token(&label, &Pin::new(SO_PIN), &Pin::new(USER_PIN))
        .await
        .expect("init token");
    let token = provider.open_token(&label).await.expect("open token");
    token
        .login(UserKind::User, &Pin::new(USER_PIN))
        .await
        .expect("login");
    token
}
