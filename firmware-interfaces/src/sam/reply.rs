//! Responses: `SW1 SW2 SW3 data`, typed per command, payloads parsed by their length fields.

use zeroize::Zeroizing;

use crate::cursor::ByteCursor;
use crate::personal::Address;

use super::command::SamCommand;
use super::frame::{SamFrame, encode_frame};
use super::status::SamStatus;
use super::tables::FingerPosition;
use super::text::{TEXT_BLOCK_LEN, TextBlock, TextError};

/// Size of one card fingerprint template.
pub const CARD_FINGERPRINT_LEN: usize = 512;
/// Size of one appended-address record (35 UCS-2 characters).
pub const APPENDED_ADDRESS_LEN: usize = 70;

/// Why a reply could not be turned into its typed result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reader answered {0}")]
    Status(SamStatus),
    #[error("reply too short")]
    Truncated,
    #[error("reply malformed: {0}")]
    Malformed(&'static str),
    #[error("text block: {0}")]
    Text(#[from] TextError),
}

/// A response frame split into its status words and data (wiped on drop).
#[derive(Clone, PartialEq, Eq)]
pub struct SamResponse {
    pub sw1: u8,
    pub sw2: u8,
    pub status: SamStatus,
    pub data: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SamResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SamResponse({}, {} data bytes)",
            self.status,
            self.data.len()
        )
    }
}

impl SamResponse {
    /// Only SW3 decides success: SW1/SW2 may be non-zero on error frames.
    pub fn from_frame(frame: &SamFrame) -> Result<Self, ReplyError> {
        let mut c = ByteCursor::new(frame.body());
        let [sw1, sw2, sw3] = c.array::<3>().ok_or(ReplyError::Truncated)?;
        Ok(Self {
            sw1,
            sw2,
            status: SamStatus::from_byte(sw3),
            data: Zeroizing::new(c.rest().to_vec()),
        })
    }

    pub fn new(status: SamStatus, data: Vec<u8>) -> Self {
        Self {
            sw1: 0,
            sw2: 0,
            status,
            data: Zeroizing::new(data),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Zeroizing::new(Vec::with_capacity(3 + self.data.len()));
        body.extend_from_slice(&[self.sw1, self.sw2, self.status.to_byte()]);
        body.extend_from_slice(&self.data);
        encode_frame(&body)
    }

    fn require(&self, ok: SamStatus) -> Result<(), ReplyError> {
        if self.status == ok {
            Ok(())
        } else {
            Err(ReplyError::Status(self.status))
        }
    }
}

/// The SAM's 16-byte management ID (little-endian groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SamId {
    pub group1: u16,
    pub group2: u16,
    pub group3: u32,
    pub group4: u32,
    pub group5: u32,
}

impl SamId {
    pub fn parse(data: &[u8]) -> Result<Self, ReplyError> {
        let mut c = ByteCursor::new(data);
        let id = Self {
            group1: c.u16_le().ok_or(ReplyError::Truncated)?,
            group2: c.u16_le().ok_or(ReplyError::Truncated)?,
            group3: c.u32_le().ok_or(ReplyError::Truncated)?,
            group4: c.u32_le().ok_or(ReplyError::Truncated)?,
            group5: c.u32_le().ok_or(ReplyError::Truncated)?,
        };
        if !c.is_empty() {
            return Err(ReplyError::Malformed("SAM ID longer than 16 bytes"));
        }
        Ok(id)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&self.group1.to_le_bytes());
        v.extend_from_slice(&self.group2.to_le_bytes());
        v.extend_from_slice(&self.group3.to_le_bytes());
        v.extend_from_slice(&self.group4.to_le_bytes());
        v.extend_from_slice(&self.group5.to_le_bytes());
        v
    }
}

impl std::fmt::Display for SamId {
    /// The common rendering `05.01-20101231-0001234567-1234567890` (canonical form unconfirmed).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02}.{:02}-{:08}-{:010}-{:010}",
            self.group1, self.group2, self.group3, self.group4, self.group5
        )
    }
}

/// The card photo: 1024 bytes of WLT, opaque (decoding needs a licensed vendor library).
#[derive(Clone, PartialEq, Eq)]
pub struct WltPhoto(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for WltPhoto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WltPhoto({} bytes)", self.0.len())
    }
}

impl WltPhoto {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// A decoded card photo: 102 × 126, 24-bit BGR rows top to bottom.
#[derive(Clone)]
pub struct DecodedPhoto {
    pub width: u32,
    pub height: u32,
    pub bgr: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DecodedPhoto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DecodedPhoto({}x{})", self.width, self.height)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhotoDecodeError {
    #[error("no WLT photo decoder is installed (vendor library)")]
    Unavailable,
    #[error("photo decoder failed: {0}")]
    Failed(String),
}

/// A WLT decoder (vendor library behind this trait).
pub trait PhotoDecoder: Send + Sync {
    fn decode(&self, photo: &WltPhoto) -> Result<DecodedPhoto, PhotoDecodeError>;
}

/// The default: no decoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPhotoDecoder;

impl PhotoDecoder for NoPhotoDecoder {
    fn decode(&self, _photo: &WltPhoto) -> Result<DecodedPhoto, PhotoDecodeError> {
        Err(PhotoDecodeError::Unavailable)
    }
}

/// One 512-byte card fingerprint template (GA/T 1012 format, not EF01-compatible).
#[derive(Clone, PartialEq, Eq)]
pub struct CardFingerprint {
    template: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for CardFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CardFingerprint({:?})", self.position())
    }
}

impl CardFingerprint {
    pub fn new(template: Vec<u8>) -> Self {
        Self {
            template: Zeroizing::new(template),
        }
    }

    /// Byte 5 of the template.
    pub fn position(&self) -> FingerPosition {
        FingerPosition::from_code(self.template.get(5).copied().unwrap_or(0))
    }

    pub fn expose(&self) -> &[u8] {
        &self.template
    }
}

/// What a base read (`30 01` / `30 10`) returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardData {
    pub text: TextBlock,
    pub photo: WltPhoto,
    pub fingerprints: Vec<CardFingerprint>,
}

impl CardData {
    /// Parses `text_len photo_len [fp_len] text photo [fp]` by its length fields.
    pub fn parse(data: &[u8], with_fingerprint: bool) -> Result<Self, ReplyError> {
        let mut c = ByteCursor::new(data);
        let text_len = usize::from(c.u16_be().ok_or(ReplyError::Truncated)?);
        let photo_len = usize::from(c.u16_be().ok_or(ReplyError::Truncated)?);
        let fp_len = if with_fingerprint {
            usize::from(c.u16_be().ok_or(ReplyError::Truncated)?)
        } else {
            0
        };
        if text_len != TEXT_BLOCK_LEN {
            return Err(ReplyError::Malformed("text length is not 256"));
        }
        if fp_len % CARD_FINGERPRINT_LEN != 0 {
            return Err(ReplyError::Malformed(
                "fingerprint length is not a multiple of 512",
            ));
        }
        let text = TextBlock::from_bytes(c.take(text_len).ok_or(ReplyError::Truncated)?)?;
        let photo = WltPhoto::new(c.take(photo_len).ok_or(ReplyError::Truncated)?.to_vec());
        let fp = c.take(fp_len).ok_or(ReplyError::Truncated)?;
        if !c.is_empty() {
            return Err(ReplyError::Malformed("bytes beyond the announced lengths"));
        }
        let fingerprints = fp
            .chunks_exact(CARD_FINGERPRINT_LEN)
            .map(|t| CardFingerprint::new(t.to_vec()))
            .collect();
        Ok(Self {
            text,
            photo,
            fingerprints,
        })
    }

    /// The reply data for `30 01` (`with_fingerprint == false`) or `30 10`.
    pub fn encode(&self, with_fingerprint: bool) -> Vec<u8> {
        let photo = self.photo.expose();
        let fp_len: usize = if with_fingerprint {
            self.fingerprints.iter().map(|f| f.expose().len()).sum()
        } else {
            0
        };
        let mut v = Vec::with_capacity(6 + TEXT_BLOCK_LEN + photo.len() + fp_len);
        v.extend_from_slice(&(TEXT_BLOCK_LEN as u16).to_be_bytes());
        v.extend_from_slice(&u16::try_from(photo.len()).unwrap_or(u16::MAX).to_be_bytes());
        if with_fingerprint {
            v.extend_from_slice(&u16::try_from(fp_len).unwrap_or(u16::MAX).to_be_bytes());
        }
        v.extend_from_slice(self.text.as_bytes());
        v.extend_from_slice(photo);
        if with_fingerprint {
            for f in &self.fingerprints {
                v.extend_from_slice(f.expose());
            }
        }
        v
    }
}

/// A typed successful reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SamReply {
    /// Reset, status, set-baud: plain success.
    Done,
    SamId(SamId),
    /// Find succeeded; the 4-byte IIN (zeros in all logs).
    CardFound {
        iin: [u8; 4],
    },
    /// Select succeeded; the 8-byte card serial (zeros in all logs).
    CardSelected {
        serial: [u8; 8],
    },
    Card(Box<CardData>),
    /// Appended addresses; empty when the card has none (SW3 `91`).
    AppendedAddresses(Vec<Address>),
}

impl SamCommand {
    /// Decodes `response` as the reply to this command. Any non-success SW3 becomes
    /// [`ReplyError::Status`].
    pub fn decode_reply(self, response: &SamResponse) -> Result<SamReply, ReplyError> {
        let data = response.data.as_slice();
        match self {
            Self::ResetSam | Self::SamStatus | Self::SetBaud(_) => {
                response.require(SamStatus::Success)?;
                Ok(SamReply::Done)
            }
            Self::ReadSamId => {
                response.require(SamStatus::Success)?;
                Ok(SamReply::SamId(SamId::parse(data)?))
            }
            Self::FindCard => {
                response.require(SamStatus::CardFound)?;
                let iin = ByteCursor::new(data)
                    .array::<4>()
                    .ok_or(ReplyError::Truncated)?;
                Ok(SamReply::CardFound { iin })
            }
            Self::SelectCard => {
                response.require(SamStatus::Success)?;
                let serial = ByteCursor::new(data)
                    .array::<8>()
                    .ok_or(ReplyError::Truncated)?;
                Ok(SamReply::CardSelected { serial })
            }
            Self::ReadText | Self::ReadTextAndFingerprint => {
                response.require(SamStatus::Success)?;
                Ok(SamReply::Card(Box::new(CardData::parse(
                    data,
                    self == Self::ReadTextAndFingerprint,
                )?)))
            }
            Self::ReadAppendedAddress => {
                if response.status == SamStatus::NoContent {
                    return Ok(SamReply::AppendedAddresses(Vec::new()));
                }
                response.require(SamStatus::Success)?;
                if data.is_empty() || data.len() % APPENDED_ADDRESS_LEN != 0 {
                    return Err(ReplyError::Malformed(
                        "appended address is not a multiple of 70 bytes",
                    ));
                }
                let addresses = data
                    .chunks_exact(APPENDED_ADDRESS_LEN)
                    .map(|rec| {
                        let units = rec
                            .chunks_exact(2)
                            .map(|p| u16::from_le_bytes([p[0], p[1]]));
                        let s: Zeroizing<String> = Zeroizing::new(
                            char::decode_utf16(units)
                                .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
                                .collect(),
                        );
                        Address::new(s.trim_matches(|c| c == ' ' || c == '\0'))
                    })
                    .collect();
                Ok(SamReply::AppendedAddresses(addresses))
            }
        }
    }
}

/// Encodes an appended address record (70 bytes, space padded; cut if longer).
pub fn encode_appended_address(address: &Address) -> Vec<u8> {
    let mut rec = Vec::with_capacity(APPENDED_ADDRESS_LEN);
    for unit in address
        .expose()
        .encode_utf16()
        .chain(std::iter::repeat(0x20))
        .take(APPENDED_ADDRESS_LEN / 2)
    {
        rec.extend_from_slice(&unit.to_le_bytes());
    }
    rec
}
