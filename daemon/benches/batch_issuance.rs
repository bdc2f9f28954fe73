//! Batch issuance of blank SoftHSM2 UKEYs: 8 tokens issued one at a time (each a batch of
//! one, through `kioskd::batch`) against the same 8-token batch issued in parallel, in the same
//! run on fresh factory-state tokens; prints both wall times, the ratio against the goal
//! (parallel ≤ 0.4 × the sequential sum) and where a single issuance spends its time.
//!
//! Run: `cargo bench -p kioskd --bench batch_issuance` (needs softhsm2).
//! `BATCH_BENCH_TOKENS=N` changes the batch size (default 8).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::types::AuthPin;
use hsm::pkcs11::{Pkcs11Options, Pkcs11Provider};
use hsm::profile::ProfileSet;
use hsm::{KeyAlgorithm, Pin, TokenProvider};
use kioskd::batch::{BatchEvent, BatchPlan, Batches, PinMode, TokenStage};

const FACTORY_SO_PIN: &str = "factory-so-1";
const GOAL: f64 = 0.4;

fn softhsm_module() -> PathBuf {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("libsofthsm2.so not found: install softhsm2")
}

/// `count` tokens in the factory state (label `blank-N`, factory SO PIN, no user PIN).
fn factory_tokens(provider: &Pkcs11Provider, first: usize, count: usize) -> Vec<String> {
    let ctx = provider.context();
    (first..first + count)
        .map(|i| {
            let label = format!("blank-{i}");
            let free = ctx
                .get_slots_with_token()
                .unwrap()
                .into_iter()
                .find(|s| !ctx.get_token_info(*s).unwrap().token_initialized())
                .expect("free slot");
            ctx.init_token(free, &AuthPin::from(FACTORY_SO_PIN), &label)
                .unwrap();
            ctx.get_slots_with_token()
                .unwrap()
                .into_iter()
                .map(|s| ctx.get_token_info(s).unwrap())
                .find(|t| t.label().trim() == label)
                .map(|t| t.serial_number().trim().to_owned())
                .unwrap()
        })
        .collect()
}

fn plan(serials: Vec<String>) -> BatchPlan {
    BatchPlan {
        serials: Some(serials),
        algorithm: KeyAlgorithm::P256,
        label_prefix: "UKEY".into(),
        key_label: "holder-sign".into(),
        factory_so_pin: Pin::new(FACTORY_SO_PIN),
        new_so_pin: None,
        pin_mode: PinMode::Random,
        parallelism: None,
    }
}

/// Time spent in each stage, summed over the tokens of a batch (from the events seen).
#[derive(Default)]
struct StageTimes {
    initialising: Duration,
    setting_pin: Duration,
    generating_key: Duration,
}

/// Runs one batch to its end; returns its wall time and per-stage times.
async fn issue(
    batches: &Arc<Batches>,
    provider: Arc<dyn TokenProvider>,
    serials: Vec<String>,
) -> (Duration, StageTimes) {
    let count = serials.len();
    let started = Instant::now();
    let batch = batches.start(provider, plan(serials)).await.unwrap();
    let mut events = batch.subscribe();
    let mut times = StageTimes::default();
    let mut entered: std::collections::HashMap<String, (TokenStage, Instant)> =
        std::collections::HashMap::new();
    loop {
        match events.recv().await {
            Ok(BatchEvent::Token(t)) => {
                let now = Instant::now();
                // A token's label change is published in the same stage: count stage changes.
                let previous = entered.get(&t.serial).copied();
                if previous.is_none_or(|(stage, _)| stage != t.state) {
                    entered.insert(t.serial.clone(), (t.state, now));
                }
                if let Some((stage, since)) = previous.filter(|(stage, _)| *stage != t.state) {
                    let spent = now - since;
                    match stage {
                        TokenStage::Initialising => times.initialising += spent,
                        TokenStage::SettingPin => times.setting_pin += spent,
                        TokenStage::GeneratingKey => times.generating_key += spent,
                        _ => {}
                    }
                }
                if t.state == TokenStage::Failed {
                    panic!("token {} failed: {:?}", t.serial, t.error);
                }
            }
            Ok(BatchEvent::Done) => break,
            Err(e) => panic!("lost batch events: {e}"),
        }
    }
    let wall = started.elapsed();
    let snapshot = batch.snapshot();
    assert_eq!(snapshot.tokens.len(), count);
    assert!(snapshot.tokens.iter().all(|t| t.state == TokenStage::Done));
    (wall, times)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let tokens: usize = std::env::var("BATCH_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("tokens");
    std::fs::create_dir_all(&store).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            store.display()
        ),
    )
    .unwrap();
    // SAFETY: single-threaded here, before the module is loaded.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&softhsm_module(), tokens));
}

async fn run(module: &Path, tokens: usize) {
    let provider = Pkcs11Provider::open(
        module,
        Pkcs11Options {
            profile: ProfileSet::embedded().unwrap().get("softhsm2").unwrap(),
            sm2_distid: "1234567812345678".into(),
            call_timeout: Duration::from_secs(60),
            max_sessions: 8,
        },
    )
    .unwrap();
    // 1 warm-up + `tokens` one at a time + `tokens` in parallel, all fresh.
    let serials = factory_tokens(&provider, 0, 1 + 2 * tokens);
    let dynamic: Arc<dyn TokenProvider> = provider.clone();
    let batches = Arc::new(Batches::default());
    issue(&batches, dynamic.clone(), serials[..1].to_vec()).await;

    let mut sequential = Duration::ZERO;
    let mut stages = StageTimes::default();
    for serial in &serials[1..=tokens] {
        let (wall, times) = issue(&batches, dynamic.clone(), vec![serial.clone()]).await;
        sequential += wall;
        stages.initialising += times.initialising;
        stages.setting_pin += times.setting_pin;
        stages.generating_key += times.generating_key;
    }
    let (parallel, _) = issue(&batches, dynamic.clone(), serials[1 + tokens..].to_vec()).await;

    let n = tokens as f64;
    let ratio = parallel.as_secs_f64() / sequential.as_secs_f64();
    println!(
        "batch issuance, {tokens} SoftHSM2 tokens, P-256, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  one at a time: {:8.1} ms total ({:.1} ms per token: re-init {:.1}, PIN {:.1}, key {:.1})",
        ms(sequential),
        ms(sequential) / n,
        ms(stages.initialising) / n,
        ms(stages.setting_pin) / n,
        ms(stages.generating_key) / n,
    );
    // Stage times of the parallel run are not shown: its first events may precede the
    // subscription (the batch starts before `start` returns).
    println!("  in parallel:   {:8.1} ms wall", ms(parallel));
    println!(
        "  ratio parallel / sequential = {ratio:.3} (goal <= {GOAL}: {})",
        if ratio <= GOAL { "met" } else { "NOT met" }
    );
}
