//! Token removal and re-insertion against SoftHSM2. In its own test binary (own process):
//! re-inserting re-initialises the module, which would disturb other tests' sessions.

mod common;

use std::time::Duration;

use common::*;
use hsm::{KeyAlgorithm, Pin, TokenError, TokenEvent, TokenProvider, UserKind};

/// Removal: SoftHSM2 drops a token whose directory disappears; the pool reports a typed
/// error and polling reports the removal. Re-insertion: the directory comes back and the
/// module re-scans its store (C_Finalize + C_Initialize, which also invalidates every open
/// session, as a real pull-and-reinsert does); the pool notices its dead sessions, re-finds
/// the token's slot by serial, and signs again after a new login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_disappearing_mid_operation_and_coming_back() {
    let provider = provider();
    let mut events = provider.events();
    let token = fresh_token(&provider, "removal").await;
    let info = token.info().await.unwrap();
    let key = token
        .generate_key_pair("k", KeyAlgorithm::P256)
        .await
        .unwrap();
    token.sign("k", b"before").await.unwrap();
    provider.refresh().await.unwrap();

    // Find the token's directory (SoftHSM2 names it by UUID; it holds token.object).
    let token_dir = std::fs::read_dir(token_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::read(p.join("token.object"))
                .map(|b| {
                    b.windows(info.serial.len())
                        .any(|w| w == info.serial.as_bytes())
                })
                .unwrap_or(false)
        })
        .expect("token directory");
    let parked = token_dir.with_extension("parked");
    std::fs::rename(&token_dir, &parked).unwrap();

    // Signing concurrently with the removal: every call ends with a typed error, none hangs.
    let mut saw_removed = false;
    for i in 0..8u8 {
        match tokio::time::timeout(Duration::from_secs(30), token.sign("k", &[i]))
            .await
            .expect("no hang")
        {
            Err(TokenError::TokenRemoved | TokenError::TokenNotPresent(_)) => {
                saw_removed = true;
                break;
            }
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(_) => {}
        }
    }
    assert!(
        saw_removed,
        "SoftHSM2 kept signing after its token directory vanished"
    );
    assert!(!token.is_logged_in());
    let removed = provider.refresh().await.unwrap();
    assert!(
        removed
            .iter()
            .any(|e| matches!(e, TokenEvent::Removed { serial, .. } if *serial == info.serial)),
        "{removed:?}"
    );
    let event = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(TokenEvent::Removed { serial, .. }) = events.recv().await {
                if serial == info.serial {
                    return;
                }
            }
        }
    })
    .await;
    assert!(event.is_ok(), "removal event broadcast");

    // Calls on the dead token fail fast with a typed error.
    assert!(
        token
            .sign("k", b"while out")
            .await
            .unwrap_err()
            .is_token_gone()
    );

    // Re-insert: the pool finds the slot again; login is needed again (never automatic).
    std::fs::rename(&parked, &token_dir).unwrap();
    tokio::task::spawn_blocking(|| {
        let rescan = cryptoki::context::Pkcs11::new(module_path()).unwrap();
        rescan.finalize().unwrap();
        let again = cryptoki::context::Pkcs11::new(module_path()).unwrap();
        again
            .initialize(cryptoki::context::CInitializeArgs::new(
                cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
            ))
            .unwrap();
    })
    .await
    .unwrap();
    assert!(token.sign("k", b"stale session").await.is_err());
    let inserted = provider.refresh().await.unwrap();
    assert!(
        inserted
            .iter()
            .any(|e| matches!(e, TokenEvent::Inserted { serial, .. } if *serial == info.serial)),
        "{inserted:?}"
    );
    token
        .login(UserKind::User, &Pin::new(USER_PIN))
        .await
        .unwrap();
    let sig = token.sign("k", b"after").await.unwrap();
    hsm::soft_crypto::verify(KeyAlgorithm::P256, &key.public_key, "", b"after", &sig.raw).unwrap();
}
