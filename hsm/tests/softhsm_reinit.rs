//! `TokenProvider::reinit_token`: staff re-initialising UKEYs that ship initialised from the
//! factory with a transport SO PIN (SoftHSM2 tokens put in that state by `C_InitToken` alone),
//! and the same semantics on the soft provider.

mod common;

use std::sync::Arc;

use common::*;
use cryptoki::types::AuthPin;
use hsm::soft::{SoftOptions, SoftProvider};
use hsm::{KeyAlgorithm, Pin, PinState, TokenError, TokenProvider, UserKind};
use zeroize::Zeroizing;

const FACTORY_SO_PIN: &str = "factory-so-1";
const NEW_SO_PIN: &str = "branch-so-77";

/// A token in the factory state: initialised with `label` and the factory SO PIN, user PIN
/// never set. Returns its serial.
async fn factory_token(provider: &Arc<hsm::pkcs11::Pkcs11Provider>, label: &str) -> String {
    let ctx = provider.context().clone();
    let label = label.to_owned();
    tokio::task::spawn_blocking(move || {
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .map(|i| !i.token_initialized())
                    .unwrap_or(false)
            })
            .expect("SoftHSM2 offers a free slot");
        ctx.init_token(slot, &AuthPin::from(FACTORY_SO_PIN), &label)
            .unwrap();
        ctx.get_slots_with_token()
            .unwrap()
            .into_iter()
            .filter_map(|s| ctx.get_token_info(s).ok())
            .find(|i| i.label().trim() == label)
            .map(|i| i.serial_number().trim().to_owned())
            .expect("factory token listed")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factory_token_is_reinitialised_and_issued() {
    let provider = provider();
    let blank = label("reinit-blank");
    let issued = label("reinit-issued");
    let serial = factory_token(&provider, &blank).await;
    let listed = provider.list_tokens().await.unwrap();
    let before = listed.iter().find(|t| t.serial == serial).unwrap();
    assert_eq!(before.pin_state, PinState::NotInitialized);

    // A wrong factory SO PIN changes nothing.
    let err = provider
        .reinit_token(
            &serial,
            &Pin::new("wrong-so-pin"),
            &issued,
            &Pin::new(NEW_SO_PIN),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::PinIncorrect { .. }), "{err:?}");
    let still = provider.list_tokens().await.unwrap();
    let still = still.iter().find(|t| t.serial == serial).unwrap();
    assert_eq!(still.label, blank);
    assert_eq!(still.pin_state, PinState::NotInitialized);

    let info = provider
        .reinit_token(
            &serial,
            &Pin::new(FACTORY_SO_PIN),
            &issued,
            &Pin::new(NEW_SO_PIN),
        )
        .await
        .unwrap();
    assert_eq!(info.label, issued);
    assert_eq!(info.serial, serial);
    assert_eq!(info.pin_state, PinState::NotInitialized);

    let token = provider.open_token(&issued).await.unwrap();
    // The SO PIN is now the new one: the factory PIN no longer sets a user PIN.
    assert!(
        token
            .unblock_user_pin(&Pin::new(FACTORY_SO_PIN), &Pin::new(USER_PIN))
            .await
            .is_err()
    );
    token
        .unblock_user_pin(&Pin::new(NEW_SO_PIN), &Pin::new(USER_PIN))
        .await
        .unwrap();
    token
        .login(UserKind::User, &Pin::new(USER_PIN))
        .await
        .unwrap();
    let key = token
        .generate_key_pair("holder", KeyAlgorithm::P256)
        .await
        .unwrap();
    assert_eq!(key.public_key.len(), 65);
    assert_eq!(token.info().await.unwrap().pin_state, PinState::Ok);

    // Re-initialising again (the token went back to the branch) wipes the key.
    token.logout().await.unwrap();
    provider
        .reinit_token(
            &serial,
            &Pin::new(NEW_SO_PIN),
            &issued,
            &Pin::new(NEW_SO_PIN),
        )
        .await
        .unwrap();
    let token = provider.open_token(&issued).await.unwrap();
    token
        .unblock_user_pin(&Pin::new(NEW_SO_PIN), &Pin::new(USER_PIN))
        .await
        .unwrap();
    token
        .login(UserKind::User, &Pin::new(USER_PIN))
        .await
        .unwrap();
    assert!(matches!(
        token.key("holder").await,
        Err(TokenError::NoSuchKey(_))
    ));
}

#[tokio::test]
async fn reinit_of_an_absent_serial_is_a_typed_error() {
    let provider = provider();
    let err = provider
        .reinit_token(
            "no-such-serial",
            &Pin::new(FACTORY_SO_PIN),
            "x",
            &Pin::new(NEW_SO_PIN),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::TokenNotPresent(_)), "{err:?}");
}

#[tokio::test]
async fn soft_token_reinit_checks_and_replaces_the_so_pin() {
    let dir = tempfile::tempdir().unwrap();
    let soft = SoftProvider::open(SoftOptions {
        dir: dir.path().to_path_buf(),
        secret: Zeroizing::new("reinit-test-secret".into()),
        sm2_distid: "1234567812345678".into(),
        max_tries: 3,
    })
    .unwrap();
    let info = soft
        .init_token("blank-1", &Pin::new(FACTORY_SO_PIN), &Pin::new("1111"))
        .await
        .unwrap();
    let err = soft
        .reinit_token(
            &info.serial,
            &Pin::new("bad-so"),
            "UKEY-1",
            &Pin::new(NEW_SO_PIN),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TokenError::PinIncorrect {
                retries_left: Some(2)
            }
        ),
        "{err:?}"
    );
    assert!(soft.open_token("blank-1").await.is_ok());

    let new = soft
        .reinit_token(
            &info.serial,
            &Pin::new(FACTORY_SO_PIN),
            "UKEY-1",
            &Pin::new(NEW_SO_PIN),
        )
        .await
        .unwrap();
    assert_eq!(new.serial, info.serial);
    assert_eq!(new.pin_state, PinState::NotInitialized);
    assert!(matches!(
        soft.open_token("blank-1").await,
        Err(TokenError::TokenNotPresent(_))
    ));
    let token = soft.open_token("UKEY-1").await.unwrap();
    token
        .unblock_user_pin(&Pin::new(NEW_SO_PIN), &Pin::new("2468"))
        .await
        .unwrap();
    token
        .login(UserKind::User, &Pin::new("2468"))
        .await
        .unwrap();
    token
        .generate_key_pair("holder", KeyAlgorithm::Sm2)
        .await
        .unwrap();
}
