//! EF01 module simulator.
//!
//! Behaviour: password must be verified first (`21`, documented choice); GenImg answers `02`
//! with no finger; a placed finger "taps" (after each captured image it reads as lifted for
//! one poll, like a cooperative user), so enroll's remove-and-place step works; a poor finger
//! gives `07` at Img2Tz; Match `08` / Search `09` for a different finger; Store beyond the
//! library `0B`; UpImage streams 256 × 288 4-bit images in data packets of the configured
//! size; DownChar accepts data packets; bad checksum `01`; unknown instruction `19`;
//! packets for another address are ignored; a silent mode answers nothing.
//!
//! Feature files are synthetic: a magic, the finger's seed and filler, so matching is exact
//! on the seed.

use zeroize::Zeroizing;

use crate::ef01::confirmation::Confirmation;
use crate::ef01::image::IMAGE_BYTES;
use crate::ef01::instruction::{
    Instruction, REG_BAUD, REG_PACKET_SIZE, REG_SECURITY_LEVEL, encode_ack,
};
use crate::ef01::packet::{
    DEFAULT_ADDRESS, Ef01Deframer, Ef01FrameError, PacketKind, encode_packet,
};
use crate::ef01::params::{PacketSize, SystemParameters};
use crate::framing::FrameAssembler;

use super::synthetic_bytes;

const CHAR_LEN: usize = 256;
const TEMPLATE_LEN: usize = 512;
const CHAR_MAGIC: [u8; 2] = [0x53, 0x43];
const TEMPLATE_MAGIC: [u8; 2] = [0x53, 0x54];
const MATCH_SCORE: u16 = 180;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FingerQuality {
    Good,
    /// Images too poor to extract features (`07`).
    Poor,
}

/// A finger on the sensor; the seed stands for the finger's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimFinger {
    pub seed: u32,
    pub quality: FingerQuality,
}

fn feature(magic: [u8; 2], seed: u32, len: usize) -> Vec<u8> {
    let mut v = synthetic_bytes(seed, len);
    if let Some(head) = v.get_mut(..6) {
        head[..2].copy_from_slice(&magic);
        head[2..6].copy_from_slice(&seed.to_be_bytes());
    }
    v
}

fn seed_of(feature: &[u8]) -> Option<u32> {
    let magic = feature.get(..2)?;
    if magic != CHAR_MAGIC && magic != TEMPLATE_MAGIC {
        return None;
    }
    Some(u32::from_be_bytes(feature.get(2..6)?.try_into().ok()?))
}

struct Download {
    buffer: Option<u8>,
    data: Zeroizing<Vec<u8>>,
}

/// The simulated module.
pub struct Ef01Simulator {
    deframer: Ef01Deframer,
    params: SystemParameters,
    password: u32,
    verified: bool,
    pub require_password: bool,
    finger: Option<SimFinger>,
    lifted: bool,
    image: Option<SimFinger>,
    buffers: [Option<Zeroizing<Vec<u8>>>; 2],
    library: Vec<Option<Zeroizing<Vec<u8>>>>,
    download: Option<Download>,
    random: u32,
    pub silent: bool,
}

impl Ef01Simulator {
    /// A module with `capacity` template slots at 57600 baud, 128-byte packets.
    pub fn new(capacity: u16) -> Self {
        Self {
            deframer: Ef01Deframer::new(),
            params: SystemParameters {
                status_register: 0,
                system_id: 0x0009,
                capacity,
                security_level: 3,
                address: DEFAULT_ADDRESS,
                packet_size: PacketSize::B128,
                baud_multiplier: 6,
            },
            password: 0,
            verified: false,
            require_password: true,
            finger: None,
            lifted: false,
            image: None,
            buffers: [None, None],
            library: (0..capacity).map(|_| None).collect(),
            download: None,
            random: 0x1234_5678,
            silent: false,
        }
    }

    pub fn place_finger(&mut self, finger: SimFinger) {
        self.finger = Some(finger);
        self.lifted = false;
    }

    pub fn remove_finger(&mut self) {
        self.finger = None;
    }

    pub fn params(&self) -> SystemParameters {
        self.params
    }

    /// Current UART speed (9600 × N).
    pub fn baud(&self) -> u32 {
        self.params.baud()
    }

    pub fn set_baud_multiplier(&mut self, n: u16) {
        self.params.baud_multiplier = n;
    }

    pub fn set_packet_size(&mut self, size: PacketSize) {
        self.params.packet_size = size;
    }

    pub fn set_password(&mut self, password: u32) {
        self.password = password;
        self.verified = false;
    }

    pub fn stored_templates(&self) -> usize {
        self.library.iter().filter(|s| s.is_some()).count()
    }

    pub fn on_bytes(&mut self, input: &[u8]) -> Vec<u8> {
        self.deframer.push(input);
        let mut out = Vec::new();
        while let Some(packet) = self.deframer.next_frame() {
            let addr = self.params.address;
            let reply = match packet {
                Err(
                    Ef01FrameError::Checksum | Ef01FrameError::Length(_) | Ef01FrameError::Kind(_),
                ) => encode_ack(addr, Confirmation::PacketError, &[]),
                Ok(p) if p.address != addr => continue,
                Ok(p) => match p.kind {
                    PacketKind::Command => {
                        self.download = None;
                        match Instruction::decode(&p.payload) {
                            Ok(ins) => self.execute(ins),
                            Err(crate::ef01::InstructionError::Unknown(_)) => {
                                encode_ack(addr, Confirmation::Undefined, &[])
                            }
                            Err(_) => encode_ack(addr, Confirmation::PacketError, &[]),
                        }
                    }
                    PacketKind::Data | PacketKind::EndData => {
                        self.receive_data(&p.payload, p.kind == PacketKind::EndData);
                        continue;
                    }
                    PacketKind::Ack => continue,
                },
            };
            if !self.silent {
                out.extend_from_slice(&reply);
            }
        }
        out
    }

    fn receive_data(&mut self, payload: &[u8], last: bool) {
        let Some(dl) = self.download.as_mut() else {
            return;
        };
        if dl.data.len() + payload.len() <= IMAGE_BYTES {
            dl.data.extend_from_slice(payload);
        }
        if last {
            if let Some(dl) = self.download.take() {
                if let Some(slot) = dl
                    .buffer
                    .and_then(|b| self.buffers.get_mut(usize::from(b) - 1))
                {
                    *slot = Some(dl.data);
                }
            }
        }
    }

    fn buffer_seed(&self, idx: usize) -> Option<u32> {
        self.buffers
            .get(idx)?
            .as_ref()
            .and_then(|b| seed_of(b.as_slice()))
    }

    fn buffer_index(buffer: u8) -> Option<usize> {
        matches!(buffer, 1 | 2).then(|| usize::from(buffer) - 1)
    }

    /// Packs `data` into data packets, the last one `EndData`.
    fn data_packets(&self, data: &[u8]) -> Vec<u8> {
        let size = self.params.packet_size.bytes();
        let chunks: Vec<&[u8]> = data.chunks(size).collect();
        let mut out = Vec::with_capacity(data.len() + chunks.len() * 11);
        for (i, chunk) in chunks.iter().enumerate() {
            let kind = if i + 1 == chunks.len() {
                PacketKind::EndData
            } else {
                PacketKind::Data
            };
            out.extend_from_slice(&encode_packet(self.params.address, kind, chunk));
        }
        out
    }

    fn execute(&mut self, ins: Instruction) -> Vec<u8> {
        let addr = self.params.address;
        let ack = |c: Confirmation| encode_ack(addr, c, &[]);
        let ok = || encode_ack(addr, Confirmation::Ok, &[]);
        if self.require_password
            && !self.verified
            && !matches!(ins, Instruction::VfyPwd { .. } | Instruction::HandShake)
        {
            return ack(Confirmation::PasswordRequired);
        }
        match ins {
            Instruction::HandShake => ok(),
            Instruction::VfyPwd { password } => {
                self.verified = password == self.password;
                ack(if self.verified {
                    Confirmation::Ok
                } else {
                    Confirmation::WrongPassword
                })
            }
            Instruction::SetPwd { password } => {
                self.password = password;
                ok()
            }
            Instruction::SetAddr { address } => {
                // Documented choice (unconfirmed on hardware): the reply uses the new address.
                self.params.address = address;
                encode_ack(address, Confirmation::Ok, &[])
            }
            Instruction::ReadSysPara => {
                let mut p = self.params;
                p.status_register =
                    (u16::from(self.verified) << 2) | (u16::from(self.image.is_some()) << 3);
                encode_ack(addr, Confirmation::Ok, &p.encode())
            }
            Instruction::SetSysPara { register, value } => {
                match register {
                    REG_BAUD if (1..=12).contains(&value) => {
                        self.params.baud_multiplier = u16::from(value)
                    }
                    REG_SECURITY_LEVEL if (1..=5).contains(&value) => {
                        self.params.security_level = u16::from(value)
                    }
                    REG_PACKET_SIZE => match PacketSize::from_code(u16::from(value)) {
                        Some(size) => self.params.packet_size = size,
                        None => return ack(Confirmation::BadRegisterConfig),
                    },
                    REG_BAUD | REG_SECURITY_LEVEL => return ack(Confirmation::BadRegisterConfig),
                    _ => return ack(Confirmation::InvalidRegister),
                }
                ok()
            }
            Instruction::GetRandomCode => {
                self.random ^= self.random << 13;
                self.random ^= self.random >> 17;
                self.random ^= self.random << 5;
                encode_ack(addr, Confirmation::Ok, &self.random.to_be_bytes())
            }
            Instruction::GenImg => match self.finger {
                Some(f) if !self.lifted => {
                    self.image = Some(f);
                    self.lifted = true;
                    ok()
                }
                Some(_) => {
                    self.lifted = false;
                    ack(Confirmation::NoFinger)
                }
                None => ack(Confirmation::NoFinger),
            },
            Instruction::Img2Tz { buffer } => {
                let Some(idx) = Self::buffer_index(buffer) else {
                    return ack(Confirmation::PacketError);
                };
                match self.image {
                    None => ack(Confirmation::NoValidImage),
                    Some(SimFinger {
                        quality: FingerQuality::Poor,
                        ..
                    }) => ack(Confirmation::TooFewFeatures),
                    Some(SimFinger { seed, .. }) => {
                        self.buffers[idx] =
                            Some(Zeroizing::new(feature(CHAR_MAGIC, seed, CHAR_LEN)));
                        ok()
                    }
                }
            }
            Instruction::RegModel => {
                let seeds = [0, 1].map(|i| self.buffer_seed(i));
                match seeds {
                    [Some(a), Some(b)] if a == b => {
                        let t = feature(TEMPLATE_MAGIC, a, TEMPLATE_LEN);
                        self.buffers = [Some(Zeroizing::new(t.clone())), Some(Zeroizing::new(t))];
                        ok()
                    }
                    _ => ack(Confirmation::CombineFailed),
                }
            }
            Instruction::Match => {
                let seeds = [0, 1].map(|i| self.buffer_seed(i));
                match seeds {
                    [Some(a), Some(b)] if a == b => {
                        encode_ack(addr, Confirmation::Ok, &MATCH_SCORE.to_be_bytes())
                    }
                    _ => encode_ack(addr, Confirmation::NoMatch, &0u16.to_be_bytes()),
                }
            }
            Instruction::Search {
                buffer,
                start,
                count,
            }
            | Instruction::HighSpeedSearch {
                buffer,
                start,
                count,
            } => {
                let Some(idx) = Self::buffer_index(buffer) else {
                    return ack(Confirmation::PacketError);
                };
                let wanted = self.buffer_seed(idx);
                let end = usize::from(start)
                    .saturating_add(usize::from(count))
                    .min(self.library.len());
                let hit = (usize::from(start)..end).find(|&p| {
                    wanted.is_some()
                        && self
                            .library
                            .get(p)
                            .and_then(|s| s.as_ref())
                            .and_then(|t| seed_of(t.as_slice()))
                            == wanted
                });
                match hit {
                    Some(page) => {
                        let mut data = (page as u16).to_be_bytes().to_vec();
                        data.extend_from_slice(&MATCH_SCORE.to_be_bytes());
                        encode_ack(addr, Confirmation::Ok, &data)
                    }
                    None => encode_ack(addr, Confirmation::NotFound, &[0, 0, 0, 0]),
                }
            }
            Instruction::Store { buffer, page } => {
                let Some(idx) = Self::buffer_index(buffer) else {
                    return ack(Confirmation::PacketError);
                };
                let Some(content) = self.buffers[idx].clone() else {
                    return ack(Confirmation::PacketError);
                };
                match self.library.get_mut(usize::from(page)) {
                    Some(slot) => {
                        *slot = Some(content);
                        ok()
                    }
                    None => ack(Confirmation::BadLocation),
                }
            }
            Instruction::LoadChar { buffer, page } => {
                let Some(idx) = Self::buffer_index(buffer) else {
                    return ack(Confirmation::PacketError);
                };
                match self.library.get(usize::from(page)) {
                    None => ack(Confirmation::BadLocation),
                    Some(None) => ack(Confirmation::TemplateReadError),
                    Some(Some(t)) => {
                        self.buffers[idx] = Some(t.clone());
                        ok()
                    }
                }
            }
            Instruction::UpChar { buffer } => {
                let Some(idx) = Self::buffer_index(buffer) else {
                    return ack(Confirmation::PacketError);
                };
                match self.buffers[idx].clone() {
                    None => ack(Confirmation::TemplateUploadError),
                    Some(data) => {
                        let mut out = ok();
                        out.extend_from_slice(&self.data_packets(&data));
                        out
                    }
                }
            }
            Instruction::DownChar { buffer } => {
                let Some(_) = Self::buffer_index(buffer) else {
                    return ack(Confirmation::CannotReceiveData);
                };
                self.download = Some(Download {
                    buffer: Some(buffer),
                    data: Zeroizing::new(Vec::new()),
                });
                ok()
            }
            Instruction::DownImage => {
                self.download = Some(Download {
                    buffer: None,
                    data: Zeroizing::new(Vec::new()),
                });
                ok()
            }
            Instruction::UpImage => match self.image {
                None => ack(Confirmation::ImageUploadError),
                Some(f) => {
                    let img = synthetic_bytes(f.seed ^ 0xA5A5_A5A5, IMAGE_BYTES);
                    let mut out = ok();
                    out.extend_from_slice(&self.data_packets(&img));
                    out
                }
            },
            Instruction::DeleteChar { page, count } => {
                let start = usize::from(page);
                let end = start.saturating_add(usize::from(count));
                if end > self.library.len() || count == 0 {
                    return ack(Confirmation::DeleteFailed);
                }
                for slot in self.library.iter_mut().take(end).skip(start) {
                    *slot = None;
                }
                ok()
            }
            Instruction::Empty => {
                self.library.iter_mut().for_each(|s| *s = None);
                ok()
            }
            Instruction::TemplateCount => {
                let n = u16::try_from(self.stored_templates()).unwrap_or(u16::MAX);
                encode_ack(addr, Confirmation::Ok, &n.to_be_bytes())
            }
            Instruction::ReadIndexTable { page } => {
                let mut bitmap = [0u8; 32];
                let base = usize::from(page) * 256;
                for (i, slot) in self.library.iter().enumerate().skip(base).take(256) {
                    if slot.is_some() {
                        let bit = i - base;
                        bitmap[bit / 8] |= 1 << (bit % 8);
                    }
                }
                encode_ack(addr, Confirmation::Ok, &bitmap)
            }
        }
    }
}
