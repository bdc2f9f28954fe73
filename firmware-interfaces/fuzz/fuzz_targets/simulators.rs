//! Fuzz: both simulators fed arbitrary host bytes.
#![no_main]

use firmware_interfaces::sim::{Ef01Simulator, SamSimulator, fixtures};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut sam = SamSimulator::new();
    sam.present_card(fixtures::card(fixtures::resident_text(1), 1));
    let _ = sam.on_bytes(data);
    let mut ef = Ef01Simulator::new(10);
    ef.require_password = false;
    let _ = ef.on_bytes(data);
});
