//! `hsm`'s PKCS#11 provider (cryptoki) against the module: SM2 under every vendor numbering
//! the module presents and every branch of `profiles.toml` (digest vs message, raw vs DER),
//! judged by `hsm::soft_crypto` and by `openssl dgst -sm3 -sigopt distid:…`; P-256; PIN
//! lockout seen through `hsm`'s typed errors; a profile that does not match the module.

mod common;
#[path = "../../hsm/tests/common/openssl_ca.rs"]
mod openssl_ca;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsm::pkcs11::{Pkcs11Options, Pkcs11Provider, Pkcs11Token, shared_module};
use hsm::profile::ProfileSet;
use hsm::{KeyAlgorithm, Pin, PinState, Token, TokenError, UserKind};

/// Slots per vendor numbering in this process's store (one token per test).
const CONFIG: &str = r#"
slots = 24
profile = "sansec"
kdf_iterations = 5000
user_pin_max_attempts = 10
[[slot]]
profile = "bgi-ukey"
[[slot]]
profile = "bgi-ukey"
[[slot]]
profile = "bgi-ukey"
[[slot]]
profile = "ibm"
[[slot]]
profile = "ibm"
[[slot]]
profile = "ibm"
"#;

struct Env {
    dir: tempfile::TempDir,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = store_dir(CONFIG);
        // SAFETY: set once, before the module is loaded (it reads the variable at
        // C_Initialize); no other thread reads the environment meanwhile.
        unsafe { std::env::set_var("KIOSK_SOFTTOKEN_DIR", dir.path()) };
        Env { dir }
    })
}

fn options(profile: &str) -> Pkcs11Options {
    Pkcs11Options {
        profile: ProfileSet::embedded().unwrap().get(profile).unwrap(),
        sm2_distid: DISTID.into(),
        call_timeout: Duration::from_secs(30),
        max_sessions: 8,
    }
}

/// The module's slot family that presents an `hsm` profile's numbers.
fn family(profile: &str) -> &'static str {
    match profile {
        "sansec" | "sansec-appid1" | "sansec-z-der" | "generic" => "sansec",
        other => Box::leak(other.to_owned().into_boxed_str()),
    }
}

/// Initialises a blank slot of the right numbering (directly through cryptoki: `hsm`'s
/// `init_token` takes the first blank slot of any numbering) and opens it through `hsm`
/// with `profile`, logged in as the user.
async fn fresh_token(profile: &str, test: &str) -> (Arc<Pkcs11Provider>, Arc<Pkcs11Token>, String) {
    static INIT: Mutex<()> = Mutex::new(());
    env();
    let module = module_path();
    let label = test.to_owned();
    {
        let _g = INIT.lock().unwrap_or_else(|p| p.into_inner());
        let ctx = shared_module(&module).expect("module loads");
        let wanted = format!("({})", family(profile));
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| {
                ctx.get_slot_info(*s)
                    .unwrap()
                    .slot_description()
                    .contains(&wanted)
                    && !ctx.get_token_info(*s).unwrap().token_initialized()
            })
            .expect("a blank slot of this numbering");
        let so = AuthPin::from(SO_PIN);
        ctx.init_token(slot, &so, &label).unwrap();
        let session = ctx.open_rw_session(slot).unwrap();
        session.login(UserType::So, Some(&so)).unwrap();
        session.init_pin(&AuthPin::from(USER_PIN)).unwrap();
        session.logout().unwrap();
    }
    let provider = Pkcs11Provider::open(&module, options(profile)).expect("provider");
    let token = provider
        .open_pkcs11_token(&label)
        .await
        .expect("open token");
    token
        .login(UserKind::User, &Pin::new(USER_PIN))
        .await
        .expect("login");
    (provider, token, label)
}

/// SM2 key generation and signing through `hsm` under `profile`, judged twice.
async fn sm2_round_trip(profile: &str) {
    let (provider, token, label) = fresh_token(profile, &format!("sm2-{profile}")).await;
    provider
        .check_profile(&label)
        .await
        .expect("profile matches the module");
    let key = token
        .generate_key_pair("sign-key", KeyAlgorithm::Sm2)
        .await
        .unwrap();
    assert_eq!(key.algorithm, KeyAlgorithm::Sm2);
    let msg = b"SM2 application form 2026-0007";
    let sig = token.sign("sign-key", msg).await.unwrap();
    assert_eq!(sig.raw.len(), 64);
    hsm::soft_crypto::verify(KeyAlgorithm::Sm2, &key.public_key, DISTID, msg, &sig.raw)
        .expect("soft_crypto verifies the token's SM2 signature");
    assert!(
        hsm::soft_crypto::verify(
            KeyAlgorithm::Sm2,
            &key.public_key,
            DISTID,
            b"other",
            &sig.raw
        )
        .is_err()
    );
    let pem = hsm::soft_crypto::public_key_pem(KeyAlgorithm::Sm2, &key.public_key).unwrap();
    let der = sig.to_der().unwrap();
    let o = openssl_sm2_verify(env().dir.path(), &pem, msg, &der);
    assert!(
        o.status.success(),
        "openssl rejects ({profile}): {}",
        text(&o)
    );
    let o = openssl_sm2_verify(env().dir.path(), &pem, b"tampered", &der);
    assert!(
        !o.status.success(),
        "openssl accepted a signature over another message"
    );

    // Found again by label after the cache is bypassed, still SM2 with the same public key.
    let found = token.find_keys(&hsm::Pkcs11Uri::default()).await.unwrap();
    assert_eq!(found, vec![key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sm2_sansec_numbering_host_digest_raw_signature() {
    sm2_round_trip("sansec").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sm2_sansec_appid1_token_computes_z_raw_signature() {
    sm2_round_trip("sansec-appid1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sm2_sansec_z_der_token_computes_z_der_signature() {
    sm2_round_trip("sansec-z-der").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sm2_bgi_ukey_numbering_host_digest_raw_signature() {
    sm2_round_trip("bgi-ukey").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sm2_ibm_numbering_host_digest_raw_signature() {
    sm2_round_trip("ibm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p256_through_hsm_verifies_in_software_and_with_openssl() {
    let (_provider, token, _) = fresh_token("sansec", "p256").await;
    let key = token
        .generate_key_pair("device-key", KeyAlgorithm::P256)
        .await
        .unwrap();
    let msg = b"audit checkpoint 17";
    let sig = token.sign("device-key", msg).await.unwrap();
    hsm::soft_crypto::verify(KeyAlgorithm::P256, &key.public_key, "", msg, &sig.raw).unwrap();
    let pem = hsm::soft_crypto::public_key_pem(KeyAlgorithm::P256, &key.public_key).unwrap();
    let o = openssl_p256_verify(env().dir.path(), &pem, msg, &sig.to_der().unwrap());
    assert!(o.status.success(), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_keys_are_sensitive_and_never_returned() {
    let (_provider, _token, label) = fresh_token("sansec-appid1", "sensitive").await;
    let ctx = shared_module(&module_path()).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim() == label)
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::from(USER_PIN)))
        .or_else(|e| match e {
            cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _) => {
                Ok(())
            }
            e => Err(e),
        })
        .unwrap();
    let _ = _token
        .generate_key_pair("k", KeyAlgorithm::Sm2)
        .await
        .unwrap();
    let private = session
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap();
    assert_eq!(private.len(), 1);
    let attrs = session
        .get_attributes(
            private[0],
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
            ],
        )
        .unwrap();
    assert!(attrs.contains(&Attribute::Sensitive(true)));
    assert!(attrs.contains(&Attribute::Extractable(false)));
    assert!(attrs.contains(&Attribute::NeverExtractable(true)));
    // CKA_VALUE of a private key: CKR_ATTRIBUTE_SENSITIVE, cryptoki leaves it out.
    let value = session
        .get_attributes(private[0], &[AttributeType::Value])
        .unwrap();
    assert!(value.is_empty(), "private key value returned: {value:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pins_lock_the_token_and_hsm_reports_retries_then_the_so_unblocks() {
    let (_provider, token, _) = fresh_token("sansec", "lockout").await;
    token.logout().await.unwrap();
    let wrong = Pin::new("000000");
    for attempt in 1..=10 {
        let err = token.login(UserKind::User, &wrong).await.unwrap_err();
        let state = token.info().await.unwrap().pin_state;
        match attempt {
            1..=8 => {
                assert!(
                    matches!(err, TokenError::PinIncorrect { .. }),
                    "attempt {attempt}: {err}"
                );
                assert_eq!(state, PinState::CountLow, "attempt {attempt}");
            }
            9 => {
                assert!(
                    matches!(
                        err,
                        TokenError::PinIncorrect {
                            retries_left: Some(1)
                        }
                    ),
                    "attempt 9 must say one try is left: {err:?}"
                );
                assert_eq!(state, PinState::FinalTry);
            }
            _ => {
                assert!(matches!(err, TokenError::PinLocked), "attempt 10: {err:?}");
                assert_eq!(state, PinState::Locked);
            }
        }
    }
    assert!(matches!(
        token.login(UserKind::User, &Pin::new(USER_PIN)).await,
        Err(TokenError::PinLocked)
    ));
    // A wrong SO PIN does not unblock.
    assert!(
        token
            .unblock_user_pin(&Pin::new("99999999"), &Pin::new("246810"))
            .await
            .is_err()
    );
    token
        .unblock_user_pin(&Pin::new(SO_PIN), &Pin::new("246810"))
        .await
        .unwrap();
    assert_eq!(token.info().await.unwrap().pin_state, PinState::Ok);
    token
        .login(UserKind::User, &Pin::new("246810"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_that_does_not_match_the_module_is_named_with_its_mechanisms() {
    let (_provider, _token, label) = fresh_token("sansec", "mismatch").await;
    // The slot speaks the Sansec numbering; IBM's numbers are not in its mechanism list.
    let ibm = Pkcs11Provider::open(&module_path(), options("ibm")).unwrap();
    let err = ibm.check_profile(&label).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TokenError::ProfileMismatch { .. }), "{err:?}");
    assert!(text.contains("\"ibm\""), "{text}");
    assert!(
        text.contains("0x8005000A") && text.contains("0x8005000B"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_held_hmac_and_aes_gcm_wrapping_keys_work_through_hsm() {
    use hsm::SecretKeyKind;
    let (_provider, token, _) = fresh_token("sansec", "secrets").await;
    token
        .generate_secret_key("digest-key", SecretKeyKind::HmacSha256)
        .await
        .unwrap();
    token
        .generate_secret_key("wrap-key", SecretKeyKind::Aes256Wrap)
        .await
        .unwrap();
    assert!(matches!(
        token
            .generate_secret_key("digest-key", SecretKeyKind::HmacSha256)
            .await,
        Err(TokenError::KeyExists(_))
    ));
    let a = token
        .hmac("digest-key", b"110101199003070000")
        .await
        .unwrap();
    assert_eq!(a.len(), 32);
    assert_eq!(
        a,
        token
            .hmac("digest-key", b"110101199003070000")
            .await
            .unwrap()
    );
    assert_ne!(
        a,
        token
            .hmac("digest-key", b"110101199003070001")
            .await
            .unwrap()
    );

    let data_key = [7u8; 32];
    let wrapped = token.wrap_key("wrap-key", &data_key).await.unwrap();
    assert_eq!(wrapped.len(), 12 + 32 + 16);
    let unwrapped = token.unwrap_key("wrap-key", &wrapped).await.unwrap();
    assert_eq!(unwrapped.as_slice(), &data_key);
    let mut tampered = wrapped.clone();
    tampered[20] ^= 1;
    assert!(token.unwrap_key("wrap-key", &tampered).await.is_err());
    // The wrapping key is of no use for HMAC, and vice versa.
    assert!(token.hmac("wrap-key", b"x").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_signers_get_valid_signatures() {
    let (_provider, token, _) = fresh_token("sansec-appid1", "concurrent").await;
    let key = token
        .generate_key_pair("shared", KeyAlgorithm::Sm2)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8u8)
        .map(|t| {
            let token = Arc::clone(&token);
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..10u8 {
                    let msg = vec![t, i];
                    let sig = token.sign("shared", &msg).await.unwrap();
                    out.push((msg, sig.raw));
                }
                out
            })
        })
        .collect();
    for task in tasks {
        for (msg, raw) in task.await.unwrap() {
            hsm::soft_crypto::verify(KeyAlgorithm::Sm2, &key.public_key, DISTID, &msg, &raw)
                .unwrap();
        }
    }
}

/// A GM/T 0016 `ENVELOPEDKEYBLOB` carrying `secret` (SM2 scalar) to `to_point`'s key.
fn envelope(to_point: &[u8], secret: &[u8], public: &[u8]) -> Vec<u8> {
    use sm4::cipher::{BlockCipherEncrypt, KeyInit};
    let mut sm4_key = [0u8; 16];
    getrandom::fill(&mut sm4_key).unwrap();
    let cipher = sm4::Sm4::new_from_slice(&sm4_key).unwrap();
    let mut field = [0u8; 64];
    field[32..].copy_from_slice(secret);
    let mut encrypted = Vec::new();
    for chunk in field.chunks_exact(16) {
        let mut block = sm4::cipher::Block::<sm4::Sm4>::default();
        block.copy_from_slice(chunk);
        cipher.encrypt_block(&mut block);
        encrypted.extend_from_slice(&block);
    }
    let sealed = sm2::pke::EncryptingKey::from_sec1_bytes(to_point)
        .unwrap()
        .encrypt(&mut getrandom::SysRng, &sm4_key)
        .unwrap();
    // C1 (04 ‖ X ‖ Y) ‖ C3 (32) ‖ C2.
    let (x, y, c3, c2) = (
        &sealed[1..33],
        &sealed[33..65],
        &sealed[65..97],
        &sealed[97..],
    );
    let pad = |v: &[u8]| [vec![0u8; 32], v.to_vec()].concat();
    let mut blob = Vec::new();
    blob.extend_from_slice(&1u32.to_le_bytes());
    blob.extend_from_slice(&0x401u32.to_le_bytes());
    blob.extend_from_slice(&256u32.to_le_bytes());
    blob.extend_from_slice(&encrypted);
    blob.extend_from_slice(&256u32.to_le_bytes());
    blob.extend_from_slice(&pad(&public[1..33]));
    blob.extend_from_slice(&pad(&public[33..65]));
    blob.extend_from_slice(&pad(x));
    blob.extend_from_slice(&pad(y));
    blob.extend_from_slice(c3);
    blob.extend_from_slice(&(c2.len() as u32).to_le_bytes());
    blob.extend_from_slice(c2);
    assert_eq!(blob.len(), 372 + c2.len());
    blob
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enveloped_sm2_key_pair_is_imported_with_c_unwrap_key_and_signs() {
    use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
    use cryptoki::mechanism::{Mechanism, MechanismType};
    use cryptoki::object::KeyType;
    let (_provider, token, label) = fresh_token("sansec", "envelope").await;
    let ctx = shared_module(&module_path()).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim() == label)
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    let vendor = |m: u64| {
        Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(
            MechanismType::new_vendor_defined(m).unwrap(),
            None,
        ))
    };
    let ckk = KeyType::new_vendor_defined(0x8000_0004).unwrap();
    // The container's signing key, allowed to unwrap (GM/T 0016: the envelope is sealed to it).
    let (unwrap_pub, unwrap_priv) = session
        .generate_key_pair(
            &vendor(0x8000_8001),
            &[
                Attribute::Token(true),
                Attribute::KeyType(ckk),
                Attribute::Verify(true),
            ],
            &[
                Attribute::Token(true),
                Attribute::KeyType(ckk),
                Attribute::Sign(true),
                Attribute::Unwrap(true),
                Attribute::Label(b"sign-key".to_vec()),
            ],
        )
        .unwrap();
    let point = match &session
        .get_attributes(unwrap_pub, &[AttributeType::EcPoint])
        .unwrap()[0]
    {
        Attribute::EcPoint(p) => p[2..].to_vec(),
        other => panic!("{other:?}"),
    };
    // The encryption key pair, made by the KMC and sent enveloped.
    let kmc_key = hsm::soft_crypto::SoftSigningKey::generate(KeyAlgorithm::Sm2, DISTID).unwrap();
    let blob = envelope(&point, kmc_key.secret_bytes(), &kmc_key.public_key());
    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(ckk),
        Attribute::Token(true),
        Attribute::Sign(true),
        Attribute::Label(b"enc-key".to_vec()),
        Attribute::Id(b"enc-1".to_vec()),
    ];
    let mut tampered = blob.clone();
    tampered[40] ^= 1;
    assert!(
        session
            .unwrap_key(&vendor(0xC105_0001), unwrap_priv, &tampered, &template)
            .is_err(),
        "a tampered envelope was imported"
    );
    session
        .unwrap_key(&vendor(0xC105_0001), unwrap_priv, &blob, &template)
        .unwrap();

    // Through hsm: the imported pair is found with its public key and signs verifiably.
    let imported = token.key("enc-key").await.unwrap();
    assert_eq!(imported.public_key, kmc_key.public_key());
    let sig = token.sign("enc-key", b"imported").await.unwrap();
    hsm::soft_crypto::verify(
        KeyAlgorithm::Sm2,
        &imported.public_key,
        DISTID,
        b"imported",
        &sig.raw,
    )
    .unwrap();
    let attrs = session
        .find_objects(&[
            Attribute::Label(b"enc-key".to_vec()),
            Attribute::Class(ObjectClass::PRIVATE_KEY),
        ])
        .unwrap();
    let flags = session
        .get_attributes(
            attrs[0],
            &[AttributeType::Extractable, AttributeType::Local],
        )
        .unwrap();
    assert!(flags.contains(&Attribute::Extractable(false)));
    assert!(flags.contains(&Attribute::Local(false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_issued_for_a_token_key_is_stored_next_to_it_and_read_back() {
    let (_provider, token, _) = fresh_token("sansec", "certificate").await;
    token
        .generate_key_pair("holder", KeyAlgorithm::P256)
        .await
        .unwrap();
    let csr = hsm::csr::build_csr(token.as_ref(), "holder", "CN=Holder,O=Branch 12")
        .await
        .unwrap();
    let work = tempfile::tempdir_in(env().dir.path()).unwrap();
    let cert = openssl_ca::issue_with_openssl(work.path(), &csr.pem);
    token.write_certificate("holder", &cert).await.unwrap();
    assert_eq!(
        token.read_certificate("holder").await.unwrap(),
        Some(cert.clone())
    );
    // Replacing it keeps one certificate next to the key.
    token.write_certificate("holder", &cert).await.unwrap();
    assert_eq!(token.read_certificate("holder").await.unwrap(), Some(cert));
}
