//! SM4 implementations compared on the same machine in the same run (issue #13, finding 11).
//!
//! RustCrypto `sm4` (what the kiosk store, the record envelope and HQ use today) looks its
//! S-box up in a table indexed by secret bytes: a cache-timing side channel for a process
//! sharing the CPU. The constant-time alternatives found: `gmcrypto-core`'s bitsliced S-box
//! (gate-only, no table; its SIMD variant runs 8 blocks per AVX2 batch) and, for reference,
//! OpenSSL's `sm4-ecb` through `openssl speed` (a table implementation too on CPUs without
//! SM4 instructions). Prints MB/s per implementation and each one's ratio to RustCrypto.
//!
//! `cargo bench -p records --bench sm4_options` (`SM4_BENCH_MIB` sets the amount, default 8).

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::aead::AeadInOut;
use sm4::cipher::{Array, BlockCipherEncrypt, KeyInit};

type Sm4Gcm = aes_gcm::AesGcm<sm4::Sm4, aes_gcm::aead::consts::U12>;

const KEY: [u8; 16] = *b"kioskd-sm4-bench";

fn rate(bytes: usize, f: impl Fn()) -> f64 {
    f(); // warm-up
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    bytes as f64 / best.as_secs_f64() / 1e6
}

fn openssl_sm4_ecb() -> Option<f64> {
    let out = std::process::Command::new("openssl")
        .args([
            "speed", "-elapsed", "-seconds", "2", "-bytes", "16384", "-evp", "sm4-ecb",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Last line: "SM4-ECB   123456.78k" (1000s of bytes per second).
    let line = text
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().starts_with("sm4"))?;
    let k = line.split_whitespace().last()?.trim_end_matches('k');
    k.parse::<f64>().ok().map(|kb| kb * 1000.0 / 1e6)
}

fn main() {
    let mib: usize = std::env::var("SM4_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let n_blocks = mib * 1024 * 1024 / 16;
    let bytes = n_blocks * 16;

    let rc = sm4::Sm4::new(&KEY.into());
    let table = rate(bytes, || {
        let mut blocks = vec![Array::<u8, _>::default(); n_blocks];
        rc.encrypt_blocks(&mut blocks);
        black_box(&blocks);
    });

    let gm = gmcrypto_core::sm4::Sm4Cipher::new(&KEY);
    let bitsliced_batch = rate(bytes, || {
        let mut blocks = vec![[0u8; 16]; n_blocks];
        gm.encrypt_blocks(&mut blocks);
        black_box(&blocks);
    });
    let single = n_blocks / 8;
    let bitsliced_single = rate(single * 16, || {
        let mut blocks = vec![[0u8; 16]; single];
        for b in blocks.iter_mut() {
            gm.encrypt_block(b);
        }
        black_box(&blocks);
    });
    // Agreement: both give the GB/T 32907 ciphertext of the same block.
    let mut a = Array::<u8, _>::default();
    rc.encrypt_block(&mut a);
    let mut b = [0u8; 16];
    gm.encrypt_block(&mut b);
    assert_eq!(a.as_slice(), &b[..], "the two SM4s disagree");

    // What the records use: SM4-GCM over records of 1.3 KB (the synced records' average).
    let gcm = Sm4Gcm::new(&[7u8; 16].into());
    let record = 1300;
    let count = bytes / record;
    let gcm_rate = rate(count * record, || {
        let mut buf = vec![0u8; record];
        for i in 0..count {
            let nonce = [(i % 251) as u8; 12];
            let tag = gcm
                .encrypt_inout_detached(&nonce.into(), b"", buf.as_mut_slice().into())
                .unwrap();
            black_box(&tag);
        }
    });

    println!("SM4 over {mib} MiB, best of 5 (MB/s; ratio to RustCrypto sm4):");
    println!("  RustCrypto sm4 0.6 (S-box table, secret-indexed)   {table:8.1}   1.00");
    println!(
        "  gmcrypto-core bitsliced, 8-block AVX2 batches       {bitsliced_batch:8.1}   {:.2}",
        bitsliced_batch / table
    );
    println!(
        "  gmcrypto-core bitsliced, one block at a time        {bitsliced_single:8.1}   {:.2}",
        bitsliced_single / table
    );
    println!(
        "  RustCrypto SM4-GCM, 1.3 KB records (incl. GHASH)    {gcm_rate:8.1}   {:.2}",
        gcm_rate / table
    );
    match openssl_sm4_ecb() {
        Some(o) => println!(
            "  openssl speed -evp sm4-ecb (16 KiB blocks)         {o:8.1}   {:.2}",
            o / table
        ),
        None => println!("  openssl speed -evp sm4-ecb: not available"),
    }
}
