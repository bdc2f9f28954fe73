//! Fuzz: SAM deframer + every typed reply decoder on arbitrary streams.
#![no_main]

use firmware_interfaces::framing::FrameAssembler;
use firmware_interfaces::sam::{CardData, SamCommand, SamDeframer, SamResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = SamDeframer::new();
    for chunk in data.chunks(7) {
        d.push(chunk);
        while let Some(Ok(frame)) = d.next_frame() {
            if let Ok(r) = SamResponse::from_frame(&frame) {
                for cmd in [
                    SamCommand::ReadSamId,
                    SamCommand::FindCard,
                    SamCommand::SelectCard,
                    SamCommand::ReadText,
                    SamCommand::ReadTextAndFingerprint,
                    SamCommand::ReadAppendedAddress,
                ] {
                    let _ = cmd.decode_reply(&r);
                }
            }
        }
    }
    let _ = CardData::parse(data, true);
});
