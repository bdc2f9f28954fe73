//! `cargo bench -p hsm --bench signing`: throughput of ECDSA P-256 signing through `hsm`
//! versus direct `cryptoki` calls on the same SoftHSM2 token (goal ≥ 0.95 of direct), and
//! software SM2 sign/verify per second versus `openssl speed -seconds 3 sm2` measured in the
//! same run (goal ≥ 4×). Ratios are printed as measured, goal met or not.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use hsm::KeyAlgorithm;
use hsm::soft_crypto::{self, SM2_DEFAULT_DISTID, SoftSigningKey};
use sha2::{Digest, Sha256};

const ROUND: Duration = Duration::from_millis(1500);
const ROUNDS: usize = 3;

fn rate(ops: u64, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64()
}

/// Direct cryptoki: one session per thread, key handle found once, digest on the host.
fn direct_rate(ctx: &cryptoki::context::Pkcs11, slot: cryptoki::slot::Slot, threads: usize) -> f64 {
    let start = Instant::now();
    let total: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let session = ctx.open_rw_session(slot).expect("session");
                    let key = session
                        .find_objects(&[
                            Attribute::Class(ObjectClass::PRIVATE_KEY),
                            Attribute::Label(b"bench".to_vec()),
                        ])
                        .expect("find")[0];
                    let mut ops = 0u64;
                    while start.elapsed() < ROUND {
                        let digest = Sha256::digest([t as u8, ops as u8]);
                        session
                            .sign(&Mechanism::Ecdsa, key, &digest)
                            .expect("direct sign");
                        ops += 1;
                    }
                    ops
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("worker")).sum()
    });
    rate(total, start.elapsed())
}

async fn hsm_rate(token: &Arc<dyn hsm::Token>, tasks: usize) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let token = Arc::clone(token);
            tokio::spawn(async move {
                let mut ops = 0u64;
                while start.elapsed() < ROUND {
                    token
                        .sign("bench", &[t as u8, ops as u8])
                        .await
                        .expect("hsm sign");
                    ops += 1;
                }
                ops
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.await.expect("task");
    }
    rate(total, start.elapsed())
}

fn software_rate(f: impl Fn(u64)) -> f64 {
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < Duration::from_secs(3) {
        f(ops);
        ops += 1;
    }
    rate(ops, start.elapsed())
}

/// `openssl speed -seconds 3 sm2` → (sign/s, verify/s).
fn openssl_sm2_speed() -> Option<(f64, f64)> {
    let out = common::openssl(&["speed", "-seconds", "3", "sm2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("SM2") && l.trim_start().starts_with("256"))?;
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok())
        .collect();
    match numbers.as_slice() {
        [.., sign, verify] => Some((*sign, *verify)),
        _ => None,
    }
}

fn verdict(ratio: f64, goal: f64) -> &'static str {
    if ratio >= goal {
        "goal met"
    } else {
        "GOAL MISSED"
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let provider = common::provider();
        let token = common::fresh_token(&provider, "bench").await;
        token.generate_key_pair("bench", KeyAlgorithm::P256).await.expect("keygen");
        let slot = cryptoki::slot::Slot::try_from(token.info().await.expect("info").slot.expect("slot")).expect("slot");
        let ctx = provider.context().clone();
        println!("ECDSA P-256 on one SoftHSM2 token ({} s per round, best of {ROUNDS})", ROUND.as_secs_f64());
        for parallel in [1usize, 2] {
            let (mut best_direct, mut best_hsm) = (0f64, 0f64);
            for _ in 0..ROUNDS {
                let ctx = ctx.clone();
                let direct = tokio::task::spawn_blocking(move || direct_rate(&ctx, slot, parallel)).await.expect("direct");
                best_direct = best_direct.max(direct);
                best_hsm = best_hsm.max(hsm_rate(&token, parallel).await);
            }
            let ratio = best_hsm / best_direct;
            println!(
                "  {parallel} concurrent: direct cryptoki {best_direct:>8.0} sig/s | hsm {best_hsm:>8.0} sig/s | ratio {ratio:.3} (goal >= 0.95: {})",
                verdict(ratio, 0.95)
            );
        }
    });

    let key = SoftSigningKey::generate(KeyAlgorithm::Sm2, SM2_DEFAULT_DISTID).expect("sm2 key");
    let public = key.public_key();
    let message = [0x5au8; 32];
    let signature = key.sign(&message).expect("sign");
    let sign_rate = software_rate(|i| {
        key.sign(&[i as u8; 32]).expect("sign");
    });
    let verify_rate = software_rate(|_| {
        soft_crypto::verify(
            KeyAlgorithm::Sm2,
            &public,
            SM2_DEFAULT_DISTID,
            &message,
            &signature,
        )
        .expect("verify");
    });
    println!("Software SM2 (RustCrypto sm2, 32-byte messages, Z_A precomputed per key)");
    match openssl_sm2_speed() {
        Some((ossl_sign, ossl_verify)) => {
            let (rs, rv) = (sign_rate / ossl_sign, verify_rate / ossl_verify);
            println!(
                "  sign:   hsm soft {sign_rate:>8.0}/s | openssl speed {ossl_sign:>8.0}/s | ratio {rs:.2}x (goal >= 4x: {})",
                verdict(rs, 4.0)
            );
            println!(
                "  verify: hsm soft {verify_rate:>8.0}/s | openssl speed {ossl_verify:>8.0}/s | ratio {rv:.2}x (goal >= 4x: {})",
                verdict(rv, 4.0)
            );
        }
        None => println!(
            "  sign {sign_rate:.0}/s, verify {verify_rate:.0}/s; `openssl speed sm2` unavailable or unparsable"
        ),
    }
}
