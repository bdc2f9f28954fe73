//! EF01 fingerprint module protocol (R30x / R503 / AS608 / ZFM-20 / FPM10A).
//!
//! Packets are `EF 01`, a 4-byte module address, a package identifier, a big-endian length
//! (payload + 2), the payload and a 16-bit additive checksum over PID, length and payload
//! ([`packet`]). Commands carry an instruction ([`instruction`]); acknowledgements start with
//! a confirmation code ([`confirmation`]); bulk data (images, templates) follows in data
//! packets whose size is a module parameter ([`params`], [`image`]).

pub mod confirmation;
pub mod image;
pub mod instruction;
pub mod packet;
pub mod params;

pub use confirmation::Confirmation;
pub use image::{FingerImage, IMAGE_BYTES, IMAGE_HEIGHT, IMAGE_WIDTH};
pub use instruction::{AckData, Instruction, InstructionError, encode_ack};
pub use packet::{
    DEFAULT_ADDRESS, Ef01Deframer, Ef01FrameError, HEADER, Packet, PacketKind, encode_packet,
};
pub use params::{PacketSize, ParamsError, SystemParameters};
