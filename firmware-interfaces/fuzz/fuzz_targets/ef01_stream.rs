//! Fuzz: EF01 deframer, instruction and acknowledgement decoders.
#![no_main]

use firmware_interfaces::ef01::{Ef01Deframer, Instruction, SystemParameters};
use firmware_interfaces::framing::FrameAssembler;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = Ef01Deframer::new();
    d.push(data);
    while let Some(p) = d.next_frame() {
        if let Ok(p) = p {
            if let Ok(ins) = Instruction::decode(&p.payload) {
                let _ = ins.decode_ack(&p.payload);
            }
        }
    }
    let _ = SystemParameters::parse(data);
});
