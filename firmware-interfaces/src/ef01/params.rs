//! System parameters (ReadSysPara): 16 bytes after the confirmation code.

use crate::cursor::ByteCursor;

/// Data packet payload size (register 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketSize {
    B32,
    B64,
    B128,
    B256,
}

impl PacketSize {
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            0 => Some(Self::B32),
            1 => Some(Self::B64),
            2 => Some(Self::B128),
            3 => Some(Self::B256),
            _ => None,
        }
    }

    pub fn code(self) -> u16 {
        match self {
            Self::B32 => 0,
            Self::B64 => 1,
            Self::B128 => 2,
            Self::B256 => 3,
        }
    }

    pub fn bytes(self) -> usize {
        32 << self.code()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemParameters {
    pub status_register: u16,
    pub system_id: u16,
    /// Finger library size (template slots).
    pub capacity: u16,
    /// 1..=5.
    pub security_level: u16,
    pub address: u32,
    pub packet_size: PacketSize,
    /// Baud = 9600 × N.
    pub baud_multiplier: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("system parameters are {0} bytes, expected 16")]
    Length(usize),
    #[error("packet size code {0} is invalid")]
    PacketSize(u16),
}

impl SystemParameters {
    pub const LEN: usize = 16;

    pub fn parse(bytes: &[u8]) -> Result<Self, ParamsError> {
        if bytes.len() != Self::LEN {
            return Err(ParamsError::Length(bytes.len()));
        }
        let mut c = ByteCursor::new(bytes);
        let short = ParamsError::Length(bytes.len());
        let status_register = c.u16_be().ok_or(short)?;
        let system_id = c.u16_be().ok_or(short)?;
        let capacity = c.u16_be().ok_or(short)?;
        let security_level = c.u16_be().ok_or(short)?;
        let address = c.u32_be().ok_or(short)?;
        let code = c.u16_be().ok_or(short)?;
        let packet_size = PacketSize::from_code(code).ok_or(ParamsError::PacketSize(code))?;
        let baud_multiplier = c.u16_be().ok_or(short)?;
        Ok(Self {
            status_register,
            system_id,
            capacity,
            security_level,
            address,
            packet_size,
            baud_multiplier,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::LEN);
        v.extend_from_slice(&self.status_register.to_be_bytes());
        v.extend_from_slice(&self.system_id.to_be_bytes());
        v.extend_from_slice(&self.capacity.to_be_bytes());
        v.extend_from_slice(&self.security_level.to_be_bytes());
        v.extend_from_slice(&self.address.to_be_bytes());
        v.extend_from_slice(&self.packet_size.code().to_be_bytes());
        v.extend_from_slice(&self.baud_multiplier.to_be_bytes());
        v
    }

    pub fn baud(&self) -> u32 {
        9600 * u32::from(self.baud_multiplier)
    }
}
