//! `cargo bench -p softtoken --bench sm2`: SM2 signing on the module (an optimised build of
//! `libkiosk_softtoken.so`) through `hsm` versus direct `cryptoki` calls on the same token
//! and key with 8 signers (goal ≥ 0.9 of direct), and the module's single-thread SM2 sign
//! rate versus `openssl speed -seconds N sm2`, measured in the same run.
//!
//! Both sides sign the same input the same way (profile `sansec`: SM3(Z_A ‖ M) on the host,
//! the token's CKM_SM2_SIGN on the digest). Sides alternate in short rounds (order flipped
//! every round) so background load hits both; the median ratio is printed with its range.
//! `KIOSKD_BENCH_ROUNDS` (default 5) and `KIOSKD_BENCH_ROUND_MS` (default 1000) tune it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsm::pkcs11::{Pkcs11Options, Pkcs11Provider, shared_module};
use hsm::profile::ProfileSet;
use hsm::{KeyAlgorithm, Pin, Token, TokenProvider, UserKind};

const KEY: &str = "bench";
const SIGNERS: usize = 8;
const CKM_SM2_SIGN: u64 = 0x8000_8104;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let m = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (m, v[0], v[n - 1])
}

fn sm2_mechanism() -> Mechanism<'static> {
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(
        MechanismType::new_vendor_defined(CKM_SM2_SIGN).expect("vendor mechanism"),
        None,
    ))
}

/// Direct cryptoki: one logged-in session per signer thread, handle found once, the digest
/// computed on the host per message (as `hsm` does).
fn direct(
    ctx: &cryptoki::context::Pkcs11,
    slot: cryptoki::slot::Slot,
    z: [u8; 32],
    signers: usize,
    round: Duration,
) -> (u64, Duration) {
    let start = Instant::now();
    let total = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..signers)
            .map(|t| {
                scope.spawn(move || {
                    let session = ctx.open_rw_session(slot).expect("session");
                    let key = session
                        .find_objects(&[
                            Attribute::Class(ObjectClass::PRIVATE_KEY),
                            Attribute::Label(KEY.as_bytes().to_vec()),
                        ])
                        .expect("find")[0];
                    let mechanism = sm2_mechanism();
                    let mut ops = 0u64;
                    while start.elapsed() < round {
                        let e = hsm::soft_crypto::sm2_digest_with_z(&z, &[t as u8, ops as u8]);
                        session.sign(&mechanism, key, &e).expect("direct sign");
                        ops += 1;
                    }
                    ops
                })
            })
            .collect::<Vec<_>>();
        workers.into_iter().map(|w| w.join().expect("worker")).sum()
    });
    (total, start.elapsed())
}

async fn through_hsm(token: &Arc<dyn Token>, signers: usize, round: Duration) -> (u64, Duration) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..signers)
        .map(|t| {
            let token = Arc::clone(token);
            tokio::spawn(async move {
                let mut ops = 0u64;
                while start.elapsed() < round {
                    token
                        .sign(KEY, &[t as u8, ops as u8])
                        .await
                        .expect("hsm sign");
                    ops += 1;
                }
                ops
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    (total, start.elapsed())
}

fn openssl_sm2_signs_per_second(seconds: u64) -> Option<f64> {
    let out = std::process::Command::new("openssl")
        .args(["speed", "-seconds", &seconds.to_string(), "sm2"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("SM2") && l.contains("bits"))?;
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok())
        .collect();
    // "256 bits SM2 (CurveSM2)   0.0001s   0.0002s   8845.0   3393.0": sign/s is second last.
    numbers.get(numbers.len().checked_sub(2)?).copied()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rounds = env_number("KIOSKD_BENCH_ROUNDS", 5) as usize;
    let round = Duration::from_millis(env_number("KIOSKD_BENCH_ROUND_MS", 1000));
    let store = common::store_dir("slots = 1\nprofile = \"sansec\"\nkdf_iterations = 5000\n");
    // SAFETY: set before the module is loaded, while no other thread reads the environment.
    unsafe { std::env::set_var("KIOSK_SOFTTOKEN_DIR", store.path()) };
    let module = common::module_path();
    let ctx = shared_module(&module).expect("module");
    let slot = ctx.get_slots_with_token().expect("slots")[0];
    let so = AuthPin::from(common::SO_PIN);
    ctx.init_token(slot, &so, "bench").expect("init");
    {
        let s = ctx.open_rw_session(slot).expect("session");
        s.login(UserType::So, Some(&so)).expect("so login");
        s.init_pin(&AuthPin::from(common::USER_PIN))
            .expect("init pin");
        s.logout().expect("logout");
    }
    let provider = Pkcs11Provider::open(
        &module,
        Pkcs11Options {
            profile: ProfileSet::embedded().unwrap().get("sansec").unwrap(),
            sm2_distid: common::DISTID.into(),
            call_timeout: Duration::from_secs(30),
            max_sessions: SIGNERS,
        },
    )
    .expect("provider");
    let token: Arc<dyn Token> = provider.open_token("bench").await.expect("token");
    token
        .login(UserKind::User, &Pin::new(common::USER_PIN))
        .await
        .expect("login");
    let key = token
        .generate_key_pair(KEY, KeyAlgorithm::Sm2)
        .await
        .expect("keygen");
    let z = hsm::soft_crypto::sm2_z(common::DISTID, &key.public_key).expect("z");
    let run_direct = |signers: usize, round: Duration| {
        let ctx = ctx.clone();
        async move {
            tokio::task::spawn_blocking(move || direct(&ctx, slot, z, signers, round))
                .await
                .expect("direct")
        }
    };
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at start: {}", load.trim());
    }
    println!(
        "SM2 on libkiosk_softtoken.so (profile sansec, CKM 0x{CKM_SM2_SIGN:08X}), {SIGNERS} signers, \
         {rounds} alternating rounds of {} ms per side",
        round.as_millis()
    );
    run_direct(SIGNERS, round / 2).await;
    through_hsm(&token, SIGNERS, round / 2).await;
    let (mut ratios, mut d_rates, mut h_rates) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let (d, h) = if r % 2 == 0 {
            let d = run_direct(SIGNERS, round).await;
            (d, through_hsm(&token, SIGNERS, round).await)
        } else {
            let h = through_hsm(&token, SIGNERS, round).await;
            (run_direct(SIGNERS, round).await, h)
        };
        let (d, h) = (
            d.0 as f64 / d.1.as_secs_f64(),
            h.0 as f64 / h.1.as_secs_f64(),
        );
        d_rates.push(d);
        h_rates.push(h);
        ratios.push(h / d);
    }
    let (d, ..) = median(d_rates);
    let (h, ..) = median(h_rates);
    let (ratio, lo, hi) = median(ratios);
    println!(
        "  direct cryptoki {d:.0} signs/s, through hsm {h:.0} signs/s: hsm/direct = {ratio:.3} \
         [{lo:.3}..{hi:.3}] ({})",
        if ratio >= 0.9 {
            "goal ≥ 0.9 met"
        } else {
            "GOAL ≥ 0.9 MISSED"
        }
    );

    // The module's single-thread SM2 sign rate vs openssl speed, same run.
    let seconds = (round.as_secs() * 2).max(2);
    let (ops, elapsed) = run_direct(1, Duration::from_secs(seconds)).await;
    let module_rate = ops as f64 / elapsed.as_secs_f64();
    match openssl_sm2_signs_per_second(seconds) {
        Some(ossl) => println!(
            "  single thread: module {module_rate:.0} SM2 signs/s (C_Sign of a digest), \
             openssl speed sm2 {ossl:.0} signs/s: module/openssl = {:.2}",
            module_rate / ossl
        ),
        None => println!(
            "  single thread: module {module_rate:.0} SM2 signs/s; openssl speed sm2 gave no figure"
        ),
    }
}
