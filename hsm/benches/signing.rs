//! `cargo bench -p hsm --bench signing`: throughput of ECDSA P-256 signing through `hsm`
//! versus direct `cryptoki` calls on the same SoftHSM2 token and key (goal ≥ 0.95 of direct),
//! for 1, 2 and 8 concurrent signers; and software SM2 sign/verify per second versus
//! `openssl speed -seconds 3 sm2` measured in the same run (goal ≥ 4×).
//!
//! Fairness on a shared machine: both sides sign with the same key on the same token with
//! the same number of signers; every measurement is preceded by a warm-up; the two sides
//! alternate in short rounds (the order flips every round) so that background load hits
//! both alike; each round gives a ratio and the median ratio is printed with its range.
//! `KIOSKD_BENCH_ROUNDS` (default 5) and `KIOSKD_BENCH_ROUND_MS` (default 1000) tune it.
//! Ratios are printed as measured, goal met or not.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use hsm::KeyAlgorithm;
use hsm::soft_crypto::{self, SM2_DEFAULT_DISTID, SoftSigningKey, SoftVerifyingKey};
use sha2::{Digest, Sha256};

const KEY_LABEL: &str = "bench";
const SIGNERS: [usize; 3] = [1, 2, 8];
const SM2_ROUNDS: usize = 3;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn rate(ops: u64, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64()
}

/// CPU time (user + system) of this process so far, threads that ended included, from
/// `/proc/self/stat` (in USER_HZ = 1/100 s ticks on Linux).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// A round's throughput and the process CPU time it used per operation (µs): the CPU cost
/// does not depend on how much CPU other processes on the machine leave us.
struct Measured {
    per_second: f64,
    cpu_us_per_op: f64,
}

async fn measured<F: std::future::Future<Output = (u64, Duration)>>(run: F) -> Measured {
    let cpu_before = process_cpu();
    let (ops, elapsed) = run.await;
    let cpu = match (cpu_before, process_cpu()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => Duration::ZERO,
    };
    Measured {
        per_second: rate(ops, elapsed),
        cpu_us_per_op: cpu.as_secs_f64() * 1e6 / ops.max(1) as f64,
    }
}

/// Median, minimum and maximum of a non-empty sample.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(mut sample: Vec<f64>) -> Spread {
    sample.sort_by(f64::total_cmp);
    let n = sample.len();
    let median = if n % 2 == 1 {
        sample[n / 2]
    } else {
        (sample[n / 2 - 1] + sample[n / 2]) / 2.0
    };
    Spread {
        median,
        min: sample[0],
        max: sample[n - 1],
    }
}

fn verdict(ratio: f64, goal: f64) -> &'static str {
    if ratio >= goal {
        "goal met"
    } else {
        "GOAL MISSED"
    }
}

/// Direct cryptoki: one session per signer thread, key handle found once, SHA-256 on the host
/// (as `hsm` does), `C_Sign` with CKM_ECDSA.
fn direct_rate(
    ctx: &cryptoki::context::Pkcs11,
    slot: cryptoki::slot::Slot,
    signers: usize,
    round: Duration,
) -> (u64, Duration) {
    let start = Instant::now();
    let total: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..signers)
            .map(|t| {
                scope.spawn(move || {
                    let session = ctx.open_rw_session(slot).expect("session");
                    let key = session
                        .find_objects(&[
                            Attribute::Class(ObjectClass::PRIVATE_KEY),
                            Attribute::Label(KEY_LABEL.as_bytes().to_vec()),
                        ])
                        .expect("find")[0];
                    let mut ops = 0u64;
                    while start.elapsed() < round {
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
    (total, start.elapsed())
}

/// Through `hsm`: `signers` tokio tasks calling `Token::sign` on the shared token.
async fn hsm_rate(token: &Arc<dyn hsm::Token>, signers: usize, round: Duration) -> (u64, Duration) {
    let start = Instant::now();
    let handles: Vec<_> = (0..signers)
        .map(|t| {
            let token = Arc::clone(token);
            tokio::spawn(async move {
                let mut ops = 0u64;
                while start.elapsed() < round {
                    token
                        .sign(KEY_LABEL, &[t as u8, ops as u8])
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
    (total, start.elapsed())
}

async fn pkcs11_comparison(rounds: usize, round: Duration) {
    let provider = common::provider();
    let token = common::fresh_token(&provider, "bench").await;
    token
        .generate_key_pair(KEY_LABEL, KeyAlgorithm::P256)
        .await
        .expect("keygen");
    let slot_id = token.info().await.expect("info").slot.expect("slot");
    let slot = cryptoki::slot::Slot::try_from(slot_id).expect("slot");
    let ctx = provider.context().clone();
    let direct = |signers: usize, round: Duration| {
        let ctx = ctx.clone();
        async move {
            tokio::task::spawn_blocking(move || direct_rate(&ctx, slot, signers, round))
                .await
                .expect("direct")
        }
    };
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!(
            "load average at start: {} (2 cores: other processes skew wall-clock rates)",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!(
        "ECDSA P-256, one SoftHSM2 token and key, {rounds} alternating rounds of {} ms per side (median [min..max])",
        round.as_millis()
    );
    for signers in SIGNERS {
        let warm_up = round / 2;
        direct(signers, warm_up).await;
        hsm_rate(&token, signers, warm_up).await;
        let (mut directs, mut hsms) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            let (d, h) = if r % 2 == 0 {
                let d = measured(direct(signers, round)).await;
                (d, measured(hsm_rate(&token, signers, round)).await)
            } else {
                let h = measured(hsm_rate(&token, signers, round)).await;
                (measured(direct(signers, round)).await, h)
            };
            directs.push(d);
            hsms.push(h);
        }
        let ratio = spread(
            directs
                .iter()
                .zip(&hsms)
                .map(|(d, h)| h.per_second / d.per_second)
                .collect(),
        );
        let column = |m: &[Measured], f: fn(&Measured) -> f64| spread(m.iter().map(f).collect());
        let (d, h) = (
            column(&directs, |m| m.per_second),
            column(&hsms, |m| m.per_second),
        );
        let (d_cpu, h_cpu) = (
            column(&directs, |m| m.cpu_us_per_op),
            column(&hsms, |m| m.cpu_us_per_op),
        );
        println!(
            "  {signers} signer(s): direct cryptoki {:>6.0} sig/s | hsm {:>6.0} sig/s | ratio {:.3} [{:.3}..{:.3}] (goal >= 0.95: {}) | CPU/sig direct {:.0} us, hsm {:.0} us",
            d.median,
            h.median,
            ratio.median,
            ratio.min,
            ratio.max,
            verdict(ratio.median, 0.95),
            d_cpu.median,
            h_cpu.median,
        );
    }
}

/// Runs `f` repeatedly for `duration` on this thread; operations per second.
fn software_rate(duration: Duration, mut f: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < duration {
        f(ops);
        ops += 1;
    }
    rate(ops, start.elapsed())
}

/// `openssl speed -seconds 3 sm2` → (sign/s, verify/s), from its summary line
/// ` 256 bits SM2 (CurveSM2)   0.0003s   0.0003s   3010.5   3279.5`.
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

/// One software SM2 candidate: its sign/s and verify/s in one round.
struct Sm2Rates {
    sign: f64,
    verify: f64,
}

/// One round: RustCrypto rates, one-shot verify/s, `openssl speed` (sign/s, verify/s).
type Sm2Round = (Sm2Rates, f64, Option<(f64, f64)>);

fn sm2_comparison() {
    const PHASE: Duration = Duration::from_secs(3);
    let key = SoftSigningKey::generate(KeyAlgorithm::Sm2, SM2_DEFAULT_DISTID).expect("sm2 key");
    let public = key.public_key();
    let message = [0x5au8; 32];
    let signature = key.sign(&message).expect("sign");
    let verifier =
        SoftVerifyingKey::new(KeyAlgorithm::Sm2, &public, SM2_DEFAULT_DISTID).expect("verifier");
    let measure_rust = || -> (Sm2Rates, f64) {
        let sign = software_rate(PHASE, |i| {
            key.sign(&[i as u8; 32]).expect("sign");
        });
        let verify = software_rate(PHASE, |_| {
            verifier.verify(&message, &signature).expect("verify");
        });
        // The one-shot form parses the key and hashes Z_A on every call.
        let verify_one_shot = software_rate(Duration::from_secs(1), |_| {
            soft_crypto::verify(
                KeyAlgorithm::Sm2,
                &public,
                SM2_DEFAULT_DISTID,
                &message,
                &signature,
            )
            .expect("verify");
        });
        (Sm2Rates { sign, verify }, verify_one_shot)
    };
    println!(
        "Software SM2-with-SM3, 32-byte messages (RustCrypto sm2 0.14: signing key with Z_A and \
         public key precomputed, RFC 6979 nonces), single thread, {SM2_ROUNDS} rounds alternating \
         with `openssl speed -seconds 3 sm2`"
    );
    let mut rows: Vec<Sm2Round> = Vec::new();
    for _ in 0..SM2_ROUNDS {
        let openssl = openssl_sm2_speed();
        let (rust, one_shot) = measure_rust();
        rows.push((rust, one_shot, openssl));
    }
    let sign = spread(rows.iter().map(|r| r.0.sign).collect());
    let verify = spread(rows.iter().map(|r| r.0.verify).collect());
    let one_shot = spread(rows.iter().map(|r| r.1).collect());
    let openssl: Vec<(f64, f64, f64, f64)> = rows
        .iter()
        .filter_map(|(rust, _, o)| o.map(|(s, v)| (s, v, rust.sign / s, rust.verify / v)))
        .collect();
    if openssl.is_empty() {
        println!(
            "  sign {:.0}/s, verify {:.0}/s (one-shot {:.0}/s); `openssl speed sm2` unavailable or unparsable",
            sign.median, verify.median, one_shot.median
        );
        return;
    }
    let o_sign = spread(openssl.iter().map(|o| o.0).collect());
    let o_verify = spread(openssl.iter().map(|o| o.1).collect());
    let r_sign = spread(openssl.iter().map(|o| o.2).collect());
    let r_verify = spread(openssl.iter().map(|o| o.3).collect());
    println!(
        "  sign:   hsm soft {:>7.0}/s | openssl speed {:>7.0}/s | ratio {:.2}x [{:.2}..{:.2}] (goal >= 4x: {})",
        sign.median,
        o_sign.median,
        r_sign.median,
        r_sign.min,
        r_sign.max,
        verdict(r_sign.median, 4.0)
    );
    println!(
        "  verify: hsm soft {:>7.0}/s | openssl speed {:>7.0}/s | ratio {:.2}x [{:.2}..{:.2}] (goal >= 4x: {})",
        verify.median,
        o_verify.median,
        r_verify.median,
        r_verify.min,
        r_verify.max,
        verdict(r_verify.median, 4.0)
    );
    println!(
        "  verify one-shot (soft_crypto::verify: key parsed and Z_A hashed per call): {:>7.0}/s",
        one_shot.median
    );
}

fn main() {
    let rounds = env_number("KIOSKD_BENCH_ROUNDS", 5) as usize;
    let round = Duration::from_millis(env_number("KIOSKD_BENCH_ROUND_MS", 1000));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(pkcs11_comparison(rounds, round));
    sm2_comparison();
}
