//! Resident-ID-card SAM module protocol (GA 467 family, as implemented by the readers).
//!
//! Frames are `AA AA AA 96 69`, a big-endian length counting the bytes after it, the body,
//! and an XOR checksum over the length bytes and body ([`frame`]). Commands are
//! `CMD Para [data]` ([`command`]); responses are `SW1 SW2 SW3 [data]` with SW3 the reader
//! status ([`status`]); payloads are parsed by their own length fields ([`reply`]); the
//! 256-byte UCS-2LE text block is decoded per card layout ([`text`]) with the code tables in
//! [`tables`].

pub mod command;
pub mod frame;
pub mod reply;
pub mod status;
pub mod tables;
pub mod text;

pub use command::{SamBaud, SamCommand};
pub use frame::{PREAMBLE, SamDeframer, SamFrame, SamFrameError, encode_frame};
pub use reply::{
    CardData, CardFingerprint, DecodedPhoto, NoPhotoDecoder, PhotoDecodeError, PhotoDecoder,
    ReplyError, SamId, SamReply, SamResponse, WltPhoto,
};
pub use status::SamStatus;
pub use tables::{FingerPosition, Nation, Sex};
pub use text::{
    CardDate, CardLayout, CardText, ForeignPermanent2017, ForeignPermanent2023,
    HkMacaoTaiwanPermit, ResidentCard, TEXT_BLOCK_LEN, TextBlock, TextError, ValidUntil,
};
