//! EF01 packet codec and stream reassembly.

use zeroize::{Zeroize, Zeroizing};

use crate::framing::{FrameAssembler, discard_garbage};

pub const HEADER: [u8; 2] = [0xEF, 0x01];
pub const DEFAULT_ADDRESS: u32 = 0xFFFF_FFFF;
/// Largest length field accepted: 256-byte data packets plus checksum, with headroom.
pub const MAX_LENGTH_FIELD: usize = 512;
const PREFIX_LEN: usize = 9;

/// Package identifier (byte 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// `01`.
    Command,
    /// `02`: data, more follows.
    Data,
    /// `07`.
    Ack,
    /// `08`: last data packet.
    EndData,
}

impl PacketKind {
    pub fn code(self) -> u8 {
        match self {
            Self::Command => 0x01,
            Self::Data => 0x02,
            Self::Ack => 0x07,
            Self::EndData => 0x08,
        }
    }

    pub fn from_code(b: u8) -> Option<Self> {
        match b {
            0x01 => Some(Self::Command),
            0x02 => Some(Self::Data),
            0x07 => Some(Self::Ack),
            0x08 => Some(Self::EndData),
            _ => None,
        }
    }
}

/// A checked packet (payload wiped on drop: it may hold templates or images).
#[derive(Clone, PartialEq, Eq)]
pub struct Packet {
    pub address: u32,
    pub kind: PacketKind,
    pub payload: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Packet({:?}, {} payload bytes)",
            self.kind,
            self.payload.len()
        )
    }
}

impl Packet {
    pub fn new(address: u32, kind: PacketKind, payload: Vec<u8>) -> Self {
        Self {
            address,
            kind,
            payload: Zeroizing::new(payload),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        encode_packet(self.address, self.kind, &self.payload)
    }
}

fn checksum(pid: u8, len: u16, payload: &[u8]) -> u16 {
    let [hi, lo] = len.to_be_bytes();
    payload
        .iter()
        .fold(u32::from(pid) + u32::from(hi) + u32::from(lo), |acc, b| {
            acc + u32::from(*b)
        }) as u16
}

/// Builds a packet. Payloads longer than [`MAX_LENGTH_FIELD`]` - 2` are cut (never built here).
pub fn encode_packet(address: u32, kind: PacketKind, payload: &[u8]) -> Vec<u8> {
    let payload = payload
        .get(..payload.len().min(MAX_LENGTH_FIELD - 2))
        .unwrap_or(payload);
    let len = u16::try_from(payload.len() + 2).unwrap_or(u16::MAX);
    let mut v = Vec::with_capacity(PREFIX_LEN + payload.len() + 2);
    v.extend_from_slice(&HEADER);
    v.extend_from_slice(&address.to_be_bytes());
    v.push(kind.code());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(payload);
    v.extend_from_slice(&checksum(kind.code(), len, payload).to_be_bytes());
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ef01FrameError {
    #[error("packet checksum mismatch")]
    Checksum,
    #[error("packet length field {0} is out of range")]
    Length(usize),
    #[error("unknown package identifier {0:#04x}")]
    Kind(u8),
}

/// Reassembles packets from a byte stream, resynchronising on `EF 01`.
#[derive(Default)]
pub struct Ef01Deframer {
    buf: Zeroizing<Vec<u8>>,
}

impl Ef01Deframer {
    pub fn new() -> Self {
        Self::default()
    }
}

impl FrameAssembler for Ef01Deframer {
    type Frame = Packet;
    type Error = Ef01FrameError;

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn next_frame(&mut self) -> Option<Result<Packet, Ef01FrameError>> {
        discard_garbage(&mut self.buf, &HEADER)?;
        let prefix: [u8; PREFIX_LEN] = self.buf.get(..PREFIX_LEN)?.try_into().ok()?;
        let [_, _, a0, a1, a2, a3, pid, l0, l1] = prefix;
        let len = u16::from_be_bytes([l0, l1]);
        let len_usize = usize::from(len);
        if !(2..=MAX_LENGTH_FIELD).contains(&len_usize) {
            self.buf.drain(..HEADER.len());
            return Some(Err(Ef01FrameError::Length(len_usize)));
        }
        let total = PREFIX_LEN + len_usize;
        let packet = self.buf.get(..total)?;
        let payload = packet.get(PREFIX_LEN..total - 2).unwrap_or_default();
        let sum = packet
            .get(total - 2..total)
            .and_then(|s| <[u8; 2]>::try_from(s).ok())
            .map(u16::from_be_bytes);
        if sum != Some(checksum(pid, len, payload)) {
            self.buf.drain(..HEADER.len());
            return Some(Err(Ef01FrameError::Checksum));
        }
        let Some(kind) = PacketKind::from_code(pid) else {
            self.buf.drain(..total);
            return Some(Err(Ef01FrameError::Kind(pid)));
        };
        let payload = Zeroizing::new(payload.to_vec());
        self.buf.drain(..total);
        Some(Ok(Packet {
            address: u32::from_be_bytes([a0, a1, a2, a3]),
            kind,
            payload,
        }))
    }

    fn reset(&mut self) {
        self.buf.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).expect("hex"))
            .collect()
    }

    #[test]
    fn ack_ok_known_vector_encodes_and_decodes() {
        let ack = hex("EF 01 FF FF FF FF 07 00 03 00 00 0A");
        assert_eq!(
            encode_packet(DEFAULT_ADDRESS, PacketKind::Ack, &[0x00]),
            ack
        );
        let mut d = Ef01Deframer::new();
        d.push(&[0x55, 0xEF]); // leading garbage, then a header split over two writes
        assert!(d.next_frame().is_none());
        d.push(ack.get(1..).expect("len"));
        let p = d.next_frame().expect("frame").expect("ok");
        assert_eq!(
            (p.address, p.kind, p.payload.as_slice()),
            (DEFAULT_ADDRESS, PacketKind::Ack, &[0u8][..])
        );
    }

    #[test]
    fn bad_checksum_and_bad_length() {
        let mut bad = encode_packet(DEFAULT_ADDRESS, PacketKind::Ack, &[0x00]);
        if let Some(last) = bad.last_mut() {
            *last ^= 1;
        }
        let mut d = Ef01Deframer::new();
        d.push(&bad);
        assert_eq!(d.next_frame(), Some(Err(Ef01FrameError::Checksum)));
        d.reset();
        d.push(&hex("EF 01 FF FF FF FF 07 FF FF"));
        assert_eq!(d.next_frame(), Some(Err(Ef01FrameError::Length(0xFFFF))));
    }
}
