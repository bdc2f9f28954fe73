//! Starts a simulated ID-card reader (with a synthetic card of the chosen layout) and a
//! simulated EF01 module on ptys, prints their paths, and runs until stdin closes. For trying
//! `kioskctl device idcard read --port ...` and `kioskctl device fingerprint info --port ...`.
//!
//! `cargo run -p drivers --example simulated_devices -- [resident|hmt|foreign2017|foreign2023] [idcard-baud]`

use std::io::Read;

use drivers::sim::{spawn_fingerprint_pty, spawn_idcard_pty};
use firmware_interfaces::sam::SamBaud;
use firmware_interfaces::sim::fixtures;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let layout = args.next().unwrap_or_else(|| "resident".into());
    let baud = args
        .next()
        .and_then(|b| b.parse().ok())
        .and_then(SamBaud::from_bits_per_second)
        .unwrap_or(SamBaud::B115200);
    let text = match layout.as_str() {
        "hmt" => fixtures::hk_macao_taiwan_text(1),
        "foreign2017" => fixtures::foreign_2017_text(1),
        "foreign2023" => fixtures::foreign_2023_text(1),
        _ => fixtures::resident_text(1),
    };
    let idcard = spawn_idcard_pty(baud)?;
    idcard.present_card(fixtures::card(text, 1));
    let finger = spawn_fingerprint_pty(200, 6)?;
    println!("idcard {}", idcard.path().display());
    println!("fingerprint {}", finger.path().display());
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    Ok(())
}
