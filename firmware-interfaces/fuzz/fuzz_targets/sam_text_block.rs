//! Fuzz: 256-byte text block decoding (all four layouts) and re-encoding.
#![no_main]

use firmware_interfaces::sam::TextBlock;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: [u8; 256]| {
    if let Ok(text) = TextBlock::from_bytes(&data).and_then(|b| b.decode()) {
        let _ = text.encode().decode();
    }
});
