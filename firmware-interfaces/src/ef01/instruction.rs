//! Instructions (command packets) and their typed acknowledgements.

use crate::cursor::ByteCursor;

use super::confirmation::Confirmation;
use super::packet::{PacketKind, encode_packet};
use super::params::{ParamsError, SystemParameters};

/// A system-parameter register written by SetSysPara.
pub const REG_BAUD: u8 = 4;
pub const REG_SECURITY_LEVEL: u8 = 5;
pub const REG_PACKET_SIZE: u8 = 6;

/// Every instruction the host uses. Buffer IDs are the module's char buffers (1 or 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Instruction {
    /// `01` capture an image into the image buffer.
    GenImg,
    /// `02` image → character file in `buffer`.
    Img2Tz { buffer: u8 },
    /// `03` compare char buffers 1 and 2.
    Match,
    /// `04` search the library with `buffer`.
    Search { buffer: u8, start: u16, count: u16 },
    /// `05` combine buffers 1 and 2 into a template.
    RegModel,
    /// `06` store `buffer` at `page`.
    Store { buffer: u8, page: u16 },
    /// `07` load the template at `page` into `buffer`.
    LoadChar { buffer: u8, page: u16 },
    /// `08` upload `buffer` to the host (data packets follow the ack).
    UpChar { buffer: u8 },
    /// `09` download into `buffer` (host sends data packets after the ack).
    DownChar { buffer: u8 },
    /// `0A` upload the image buffer.
    UpImage,
    /// `0B` download an image.
    DownImage,
    /// `0C` delete `count` templates from `page`.
    DeleteChar { page: u16, count: u16 },
    /// `0D` clear the library.
    Empty,
    /// `0E` write a system parameter register.
    SetSysPara { register: u8, value: u8 },
    /// `0F`.
    ReadSysPara,
    /// `12`.
    SetPwd { password: u32 },
    /// `13`.
    VfyPwd { password: u32 },
    /// `14`.
    GetRandomCode,
    /// `15`.
    SetAddr { address: u32 },
    /// `1B`.
    HighSpeedSearch { buffer: u8, start: u16, count: u16 },
    /// `1D` number of stored templates.
    TemplateCount,
    /// `1F` 32-byte occupancy bitmap of index page 0..=3 (256 slots each).
    ReadIndexTable { page: u8 },
    /// `40`.
    HandShake,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstructionError {
    #[error("empty command payload")]
    Empty,
    #[error("unknown instruction {0:#04x}")]
    Unknown(u8),
    #[error("instruction {0:#04x} has wrong parameter length")]
    Parameters(u8),
    #[error("module answered {0}")]
    Confirmation(Confirmation),
    #[error("acknowledgement malformed")]
    MalformedAck,
    #[error("system parameters: {0}")]
    Params(#[from] ParamsError),
}

/// What an acknowledgement carries after a `00` confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckData {
    Done,
    /// Match: score.
    Score(u16),
    /// Search / HighSpeedSearch: page and score.
    Found {
        page: u16,
        score: u16,
    },
    Parameters(SystemParameters),
    Random(u32),
    Count(u16),
    IndexTable([u8; 32]),
}

impl Instruction {
    pub fn code(&self) -> u8 {
        match self {
            Self::GenImg => 0x01,
            Self::Img2Tz { .. } => 0x02,
            Self::Match => 0x03,
            Self::Search { .. } => 0x04,
            Self::RegModel => 0x05,
            Self::Store { .. } => 0x06,
            Self::LoadChar { .. } => 0x07,
            Self::UpChar { .. } => 0x08,
            Self::DownChar { .. } => 0x09,
            Self::UpImage => 0x0A,
            Self::DownImage => 0x0B,
            Self::DeleteChar { .. } => 0x0C,
            Self::Empty => 0x0D,
            Self::SetSysPara { .. } => 0x0E,
            Self::ReadSysPara => 0x0F,
            Self::SetPwd { .. } => 0x12,
            Self::VfyPwd { .. } => 0x13,
            Self::GetRandomCode => 0x14,
            Self::SetAddr { .. } => 0x15,
            Self::HighSpeedSearch { .. } => 0x1B,
            Self::TemplateCount => 0x1D,
            Self::ReadIndexTable { .. } => 0x1F,
            Self::HandShake => 0x40,
        }
    }

    /// Instruction code followed by its big-endian parameters.
    pub fn payload(&self) -> Vec<u8> {
        let mut v = vec![self.code()];
        match *self {
            Self::Img2Tz { buffer } | Self::UpChar { buffer } | Self::DownChar { buffer } => {
                v.push(buffer)
            }
            Self::Search {
                buffer,
                start,
                count,
            }
            | Self::HighSpeedSearch {
                buffer,
                start,
                count,
            } => {
                v.push(buffer);
                v.extend_from_slice(&start.to_be_bytes());
                v.extend_from_slice(&count.to_be_bytes());
            }
            Self::Store { buffer, page } | Self::LoadChar { buffer, page } => {
                v.push(buffer);
                v.extend_from_slice(&page.to_be_bytes());
            }
            Self::DeleteChar { page, count } => {
                v.extend_from_slice(&page.to_be_bytes());
                v.extend_from_slice(&count.to_be_bytes());
            }
            Self::SetSysPara { register, value } => v.extend_from_slice(&[register, value]),
            Self::SetPwd { password } | Self::VfyPwd { password } => {
                v.extend_from_slice(&password.to_be_bytes())
            }
            Self::SetAddr { address } => v.extend_from_slice(&address.to_be_bytes()),
            Self::ReadIndexTable { page } => v.push(page),
            Self::GenImg
            | Self::Match
            | Self::RegModel
            | Self::UpImage
            | Self::DownImage
            | Self::Empty
            | Self::ReadSysPara
            | Self::GetRandomCode
            | Self::TemplateCount
            | Self::HandShake => {}
        }
        v
    }

    /// The full command packet.
    pub fn encode(&self, address: u32) -> Vec<u8> {
        encode_packet(address, PacketKind::Command, &self.payload())
    }

    /// Parses a command payload (the simulator's side).
    pub fn decode(payload: &[u8]) -> Result<Self, InstructionError> {
        let mut c = ByteCursor::new(payload);
        let code = c.u8().ok_or(InstructionError::Empty)?;
        let bad = InstructionError::Parameters(code);
        let ins = match code {
            0x01 => Self::GenImg,
            0x02 => Self::Img2Tz {
                buffer: c.u8().ok_or(bad.clone())?,
            },
            0x03 => Self::Match,
            0x04 | 0x1B => {
                let buffer = c.u8().ok_or(bad.clone())?;
                let start = c.u16_be().ok_or(bad.clone())?;
                let count = c.u16_be().ok_or(bad.clone())?;
                if code == 0x04 {
                    Self::Search {
                        buffer,
                        start,
                        count,
                    }
                } else {
                    Self::HighSpeedSearch {
                        buffer,
                        start,
                        count,
                    }
                }
            }
            0x05 => Self::RegModel,
            0x06 | 0x07 => {
                let buffer = c.u8().ok_or(bad.clone())?;
                let page = c.u16_be().ok_or(bad.clone())?;
                if code == 0x06 {
                    Self::Store { buffer, page }
                } else {
                    Self::LoadChar { buffer, page }
                }
            }
            0x08 => Self::UpChar {
                buffer: c.u8().ok_or(bad.clone())?,
            },
            0x09 => Self::DownChar {
                buffer: c.u8().ok_or(bad.clone())?,
            },
            0x0A => Self::UpImage,
            0x0B => Self::DownImage,
            0x0C => Self::DeleteChar {
                page: c.u16_be().ok_or(bad.clone())?,
                count: c.u16_be().ok_or(bad.clone())?,
            },
            0x0D => Self::Empty,
            0x0E => Self::SetSysPara {
                register: c.u8().ok_or(bad.clone())?,
                value: c.u8().ok_or(bad.clone())?,
            },
            0x0F => Self::ReadSysPara,
            0x12 => Self::SetPwd {
                password: c.u32_be().ok_or(bad.clone())?,
            },
            0x13 => Self::VfyPwd {
                password: c.u32_be().ok_or(bad.clone())?,
            },
            0x14 => Self::GetRandomCode,
            0x15 => Self::SetAddr {
                address: c.u32_be().ok_or(bad.clone())?,
            },
            0x1D => Self::TemplateCount,
            0x1F => Self::ReadIndexTable {
                page: c.u8().ok_or(bad.clone())?,
            },
            0x40 => Self::HandShake,
            other => return Err(InstructionError::Unknown(other)),
        };
        if !c.is_empty() {
            return Err(bad);
        }
        Ok(ins)
    }

    /// Decodes the acknowledgement payload for this instruction; a non-`00` confirmation
    /// becomes [`InstructionError::Confirmation`].
    pub fn decode_ack(&self, payload: &[u8]) -> Result<AckData, InstructionError> {
        let mut c = ByteCursor::new(payload);
        let conf = Confirmation::from_byte(c.u8().ok_or(InstructionError::MalformedAck)?);
        if conf != Confirmation::Ok {
            return Err(InstructionError::Confirmation(conf));
        }
        let malformed = InstructionError::MalformedAck;
        let data = match self {
            Self::Match => AckData::Score(c.u16_be().ok_or(malformed.clone())?),
            Self::Search { .. } | Self::HighSpeedSearch { .. } => AckData::Found {
                page: c.u16_be().ok_or(malformed.clone())?,
                score: c.u16_be().ok_or(malformed.clone())?,
            },
            Self::ReadSysPara => AckData::Parameters(SystemParameters::parse(
                c.take(SystemParameters::LEN).ok_or(malformed.clone())?,
            )?),
            Self::GetRandomCode => AckData::Random(c.u32_be().ok_or(malformed.clone())?),
            Self::TemplateCount => AckData::Count(c.u16_be().ok_or(malformed.clone())?),
            Self::ReadIndexTable { .. } => {
                AckData::IndexTable(c.array::<32>().ok_or(malformed.clone())?)
            }
            _ => AckData::Done,
        };
        if !c.is_empty() {
            return Err(malformed);
        }
        Ok(data)
    }
}

/// Encodes an acknowledgement packet with `conf` and `data`.
pub fn encode_ack(address: u32, conf: Confirmation, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + data.len());
    payload.push(conf.to_byte());
    payload.extend_from_slice(data);
    encode_packet(address, PacketKind::Ack, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ef01::packet::DEFAULT_ADDRESS;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).expect("hex"))
            .collect()
    }

    /// The frames in the protocol notes (§2.2).
    #[test]
    fn known_command_frames() {
        let cases = [
            (Instruction::GenImg, "EF 01 FF FF FF FF 01 00 03 01 00 05"),
            (
                Instruction::Img2Tz { buffer: 1 },
                "EF 01 FF FF FF FF 01 00 04 02 01 00 08",
            ),
            (Instruction::RegModel, "EF 01 FF FF FF FF 01 00 03 05 00 09"),
            (
                Instruction::Store { buffer: 1, page: 1 },
                "EF 01 FF FF FF FF 01 00 06 06 01 00 01 00 0F",
            ),
            (
                Instruction::Search {
                    buffer: 1,
                    start: 0,
                    count: 1000,
                },
                "EF 01 FF FF FF FF 01 00 08 04 01 00 00 03 E8 00 F9",
            ),
            (
                Instruction::TemplateCount,
                "EF 01 FF FF FF FF 01 00 03 1D 00 21",
            ),
            (Instruction::Empty, "EF 01 FF FF FF FF 01 00 03 0D 00 11"),
            (
                Instruction::VfyPwd { password: 0 },
                "EF 01 FF FF FF FF 01 00 07 13 00 00 00 00 00 1B",
            ),
        ];
        for (ins, frame) in cases {
            assert_eq!(ins.encode(DEFAULT_ADDRESS), hex(frame), "{ins:?}");
        }
        // Adafruit's fingerFastSearch payload.
        assert_eq!(
            Instruction::HighSpeedSearch {
                buffer: 1,
                start: 0,
                count: 0xA3
            }
            .payload(),
            hex("1B 01 00 00 00 A3")
        );
    }

    #[test]
    fn every_instruction_round_trips() {
        let all = [
            Instruction::GenImg,
            Instruction::Img2Tz { buffer: 2 },
            Instruction::Match,
            Instruction::Search {
                buffer: 1,
                start: 3,
                count: 200,
            },
            Instruction::RegModel,
            Instruction::Store {
                buffer: 1,
                page: 513,
            },
            Instruction::LoadChar { buffer: 2, page: 7 },
            Instruction::UpChar { buffer: 1 },
            Instruction::DownChar { buffer: 2 },
            Instruction::UpImage,
            Instruction::DownImage,
            Instruction::DeleteChar { page: 4, count: 1 },
            Instruction::Empty,
            Instruction::SetSysPara {
                register: REG_PACKET_SIZE,
                value: 3,
            },
            Instruction::ReadSysPara,
            Instruction::SetPwd {
                password: 0xDEAD_BEEF,
            },
            Instruction::VfyPwd { password: 1 },
            Instruction::GetRandomCode,
            Instruction::SetAddr {
                address: 0x1234_5678,
            },
            Instruction::HighSpeedSearch {
                buffer: 1,
                start: 0,
                count: 10,
            },
            Instruction::TemplateCount,
            Instruction::ReadIndexTable { page: 3 },
            Instruction::HandShake,
        ];
        for ins in all {
            assert_eq!(Instruction::decode(&ins.payload()), Ok(ins));
        }
        assert_eq!(
            Instruction::decode(&[0x77]),
            Err(InstructionError::Unknown(0x77))
        );
        assert_eq!(
            Instruction::decode(&[0x02]),
            Err(InstructionError::Parameters(0x02))
        );
        assert_eq!(
            Instruction::decode(&[0x01, 0x00]),
            Err(InstructionError::Parameters(0x01))
        );
    }

    #[test]
    fn acks_are_typed() {
        assert_eq!(
            Instruction::Match.decode_ack(&[0x00, 0x00, 0xC8]),
            Ok(AckData::Score(200))
        );
        assert_eq!(
            Instruction::Search {
                buffer: 1,
                start: 0,
                count: 10
            }
            .decode_ack(&[0x00, 0x00, 0x05, 0x00, 0x64]),
            Ok(AckData::Found {
                page: 5,
                score: 100
            })
        );
        assert_eq!(
            Instruction::GenImg.decode_ack(&[0x02]),
            Err(InstructionError::Confirmation(Confirmation::NoFinger))
        );
        assert_eq!(
            Instruction::TemplateCount.decode_ack(&[0x00, 0x01]),
            Err(InstructionError::MalformedAck)
        );
        assert_eq!(
            Instruction::GenImg.decode_ack(&[]),
            Err(InstructionError::MalformedAck)
        );
    }
}
