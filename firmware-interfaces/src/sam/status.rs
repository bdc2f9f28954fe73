//! SW3: the reader's status byte in every response.

/// Every SW3 value the sources document; anything else is kept as [`SamStatus::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamStatus {
    /// `90` 操作成功.
    Success,
    /// `91` 证/卡中此项无内容 (e.g. no appended address).
    NoContent,
    /// `9F` 寻找证/卡成功.
    CardFound,
    /// `10` checksum error in the frame the reader received.
    ChecksumError,
    /// `11` length error in the frame the reader received.
    LengthError,
    /// `21` command error (unknown value or wrong sequence).
    CommandError,
    /// `23` 越权操作.
    Unauthorised,
    /// `24` 无法识别的错误.
    Unrecognised,
    /// `31` card failed to authenticate the SAM.
    CardAuthenticatingSamFailed,
    /// `32` SAM failed to authenticate the card.
    SamAuthenticatingCardFailed,
    /// `33` information verification error.
    VerificationFailed,
    /// `40` unknown or wrong card type.
    UnknownCardType,
    /// `41` 读证/卡操作失败 (read failed; typically the card left the field).
    ReadFailed,
    /// `47` get-random failed.
    RandomFailed,
    /// `60` SAM self-test failed.
    SelfTestFailed,
    /// `66` SAM not authorised.
    SamNotAuthorised,
    /// `80` 寻找证/卡失败 (no card, or the same card still on the reader after a read).
    FindFailed,
    /// `81` 选取证/卡失败.
    SelectFailed,
    /// Any other value.
    Other(u8),
}

impl SamStatus {
    pub fn from_byte(b: u8) -> Self {
        match b {
            0x90 => Self::Success,
            0x91 => Self::NoContent,
            0x9F => Self::CardFound,
            0x10 => Self::ChecksumError,
            0x11 => Self::LengthError,
            0x21 => Self::CommandError,
            0x23 => Self::Unauthorised,
            0x24 => Self::Unrecognised,
            0x31 => Self::CardAuthenticatingSamFailed,
            0x32 => Self::SamAuthenticatingCardFailed,
            0x33 => Self::VerificationFailed,
            0x40 => Self::UnknownCardType,
            0x41 => Self::ReadFailed,
            0x47 => Self::RandomFailed,
            0x60 => Self::SelfTestFailed,
            0x66 => Self::SamNotAuthorised,
            0x80 => Self::FindFailed,
            0x81 => Self::SelectFailed,
            other => Self::Other(other),
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            Self::Success => 0x90,
            Self::NoContent => 0x91,
            Self::CardFound => 0x9F,
            Self::ChecksumError => 0x10,
            Self::LengthError => 0x11,
            Self::CommandError => 0x21,
            Self::Unauthorised => 0x23,
            Self::Unrecognised => 0x24,
            Self::CardAuthenticatingSamFailed => 0x31,
            Self::SamAuthenticatingCardFailed => 0x32,
            Self::VerificationFailed => 0x33,
            Self::UnknownCardType => 0x40,
            Self::ReadFailed => 0x41,
            Self::RandomFailed => 0x47,
            Self::SelfTestFailed => 0x60,
            Self::SamNotAuthorised => 0x66,
            Self::FindFailed => 0x80,
            Self::SelectFailed => 0x81,
            Self::Other(b) => b,
        }
    }

    /// `90` or `9F`.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Success | Self::CardFound)
    }

    /// A short English description (no card data).
    pub fn describe(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::NoContent => "no content for this item on the card",
            Self::CardFound => "card found",
            Self::ChecksumError => "reader received a frame with a bad checksum",
            Self::LengthError => "reader received a frame with a bad length",
            Self::CommandError => "reader rejected the command",
            Self::Unauthorised => "unauthorised operation",
            Self::Unrecognised => "unrecognised error",
            Self::CardAuthenticatingSamFailed => "card failed to authenticate the SAM",
            Self::SamAuthenticatingCardFailed => "SAM failed to authenticate the card",
            Self::VerificationFailed => "information verification error",
            Self::UnknownCardType => "unknown card type",
            Self::ReadFailed => "reading the card failed",
            Self::RandomFailed => "get-random failed",
            Self::SelfTestFailed => "SAM self-test failed",
            Self::SamNotAuthorised => "SAM not authorised",
            Self::FindFailed => "no card found",
            Self::SelectFailed => "selecting the card failed",
            Self::Other(_) => "undocumented status",
        }
    }
}

impl std::fmt::Display for SamStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SW3 {:02X} ({})", self.to_byte(), self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips_and_documented_codes_are_named() {
        for b in 0..=u8::MAX {
            assert_eq!(SamStatus::from_byte(b).to_byte(), b);
        }
        let documented = [
            0x90, 0x91, 0x9F, 0x10, 0x11, 0x21, 0x23, 0x24, 0x31, 0x32, 0x33, 0x40, 0x41, 0x47,
            0x60, 0x66, 0x80, 0x81,
        ];
        for b in documented {
            assert!(
                !matches!(SamStatus::from_byte(b), SamStatus::Other(_)),
                "{b:02X}"
            );
        }
        assert_eq!(SamStatus::from_byte(0x55), SamStatus::Other(0x55));
    }
}
