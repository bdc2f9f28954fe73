//! Benchmark: a full ID-card read (find + select + text/photo/fingerprint) through the real
//! serial driver over a pty, with the simulator pacing its output at 115200 baud (8N1).
//! Prints the time as a ratio to the link's own transfer time for the same bytes in both
//! directions (goal ≤ 1.15). Run: `cargo bench -p drivers --bench idcard_read`.

use std::time::{Duration, Instant};

use drivers::idcard::{IdCardReader, SamReader, SamSettings};
use drivers::link::SerialConnector;
use drivers::sim::spawn_idcard_pty;
use firmware_interfaces::sam::{SamBaud, SamCommand, SamResponse, SamStatus};
use firmware_interfaces::sim::fixtures;

const BAUD: u32 = 115_200;
const ROUNDS: usize = 10;

fn link_bytes_per_read() -> usize {
    let card = fixtures::card(fixtures::resident_text(1), 1);
    let commands: usize = [
        SamCommand::FindCard,
        SamCommand::SelectCard,
        SamCommand::ReadTextAndFingerprint,
    ]
    .iter()
    .map(|c| c.encode().len())
    .sum();
    let replies = SamResponse::new(SamStatus::CardFound, vec![0; 4])
        .encode()
        .len()
        + SamResponse::new(SamStatus::Success, vec![0; 8])
            .encode()
            .len()
        + SamResponse::new(SamStatus::Success, card.card_data().encode(true))
            .encode()
            .len();
    commands + replies
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sim = spawn_idcard_pty(SamBaud::B115200).expect("pty simulator");
    let mut reader = SamReader::new(
        SerialConnector::new(sim.path(), BAUD),
        SamSettings {
            baud: Some(BAUD),
            ..SamSettings::default()
        },
    );
    runtime.block_on(reader.check()).expect("reader answers");
    let bytes = link_bytes_per_read();
    let link_time = Duration::from_secs_f64(bytes as f64 * 10.0 / f64::from(BAUD));
    let mut ratios = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        sim.present_card(fixtures::card(
            fixtures::resident_text(round as u32),
            round as u32,
        ));
        let start = Instant::now();
        let read = runtime.block_on(reader.read_card()).expect("card read");
        let elapsed = start.elapsed();
        assert_eq!(read.data.fingerprints.len(), 2);
        ratios.push(elapsed.as_secs_f64() / link_time.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ROUNDS / 2];
    println!(
        "idcard_read: {bytes} bytes on the link per read, link time {:.1} ms at {BAUD} baud",
        link_time.as_secs_f64() * 1e3
    );
    println!(
        "idcard_read: read time / link time over {ROUNDS} reads: min {:.3}, median {median:.3}, max {:.3} (goal <= 1.15)",
        ratios[0],
        ratios[ROUNDS - 1]
    );
}
