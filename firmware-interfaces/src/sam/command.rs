//! SAM commands (`CMD Para`) and their exact frames.

use super::frame::encode_frame;

/// UART speeds the SAM can be switched to with `60 xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamBaud {
    B115200,
    B57600,
    B38400,
    B19200,
    B9600,
}

impl SamBaud {
    /// In the order a host probes them (the factory default first).
    pub const PROBE_ORDER: [SamBaud; 5] = [
        Self::B115200,
        Self::B57600,
        Self::B38400,
        Self::B19200,
        Self::B9600,
    ];

    pub fn bits_per_second(self) -> u32 {
        match self {
            Self::B115200 => 115_200,
            Self::B57600 => 57_600,
            Self::B38400 => 38_400,
            Self::B19200 => 19_200,
            Self::B9600 => 9_600,
        }
    }

    pub fn from_bits_per_second(bps: u32) -> Option<Self> {
        Self::PROBE_ORDER
            .into_iter()
            .find(|b| b.bits_per_second() == bps)
    }

    fn para(self) -> u8 {
        match self {
            Self::B115200 => 0,
            Self::B57600 => 1,
            Self::B38400 => 2,
            Self::B19200 => 3,
            Self::B9600 => 4,
        }
    }

    fn from_para(p: u8) -> Option<Self> {
        Self::PROBE_ORDER.into_iter().find(|b| b.para() == p)
    }
}

/// Every command a host needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamCommand {
    /// `10 FF` (one project's `01 FF` is a bug there).
    ResetSam,
    /// `11 FF` (HslCommunication wrongly sends `12 FF` for this).
    SamStatus,
    /// `12 FF`.
    ReadSamId,
    /// `20 01`.
    FindCard,
    /// `20 02`.
    SelectCard,
    /// `30 01`: text + photo.
    ReadText,
    /// `30 10`: text + photo + fingerprint; old "0501" modules answer `21`.
    ReadTextAndFingerprint,
    /// `30 03`: appended (new) addresses. Sources disagree (`30 02`/`30 05` elsewhere);
    /// `30 03` follows the YinanSoft implementation and softs.im.
    ReadAppendedAddress,
    /// `60 xx`.
    SetBaud(SamBaud),
}

impl SamCommand {
    pub fn code(self) -> (u8, u8) {
        match self {
            Self::ResetSam => (0x10, 0xFF),
            Self::SamStatus => (0x11, 0xFF),
            Self::ReadSamId => (0x12, 0xFF),
            Self::FindCard => (0x20, 0x01),
            Self::SelectCard => (0x20, 0x02),
            Self::ReadText => (0x30, 0x01),
            Self::ReadTextAndFingerprint => (0x30, 0x10),
            Self::ReadAppendedAddress => (0x30, 0x03),
            Self::SetBaud(b) => (0x60, b.para()),
        }
    }

    pub fn from_code(cmd: u8, para: u8) -> Option<Self> {
        Some(match (cmd, para) {
            (0x10, 0xFF) => Self::ResetSam,
            (0x11, 0xFF) => Self::SamStatus,
            (0x12, 0xFF) => Self::ReadSamId,
            (0x20, 0x01) => Self::FindCard,
            (0x20, 0x02) => Self::SelectCard,
            (0x30, 0x01) => Self::ReadText,
            (0x30, 0x10) => Self::ReadTextAndFingerprint,
            (0x30, 0x03) => Self::ReadAppendedAddress,
            (0x60, p) => Self::SetBaud(SamBaud::from_para(p)?),
            _ => return None,
        })
    }

    /// The full frame to send.
    pub fn encode(self) -> Vec<u8> {
        let (cmd, para) = self.code();
        encode_frame(&[cmd, para])
    }

    /// A name for logs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::ResetSam => "reset SAM",
            Self::SamStatus => "SAM status",
            Self::ReadSamId => "read SAM ID",
            Self::FindCard => "find card",
            Self::SelectCard => "select card",
            Self::ReadText => "read text+photo",
            Self::ReadTextAndFingerprint => "read text+photo+fingerprint",
            Self::ReadAppendedAddress => "read appended address",
            Self::SetBaud(_) => "set baud",
        }
    }

    /// Reply wait observed in vendor implementations, a sensible default per command.
    pub fn typical_timeout_ms(self) -> u64 {
        match self {
            Self::FindCard | Self::SelectCard => 300,
            Self::ResetSam | Self::SamStatus | Self::ReadSamId | Self::SetBaud(_) => 500,
            Self::ReadText | Self::ReadAppendedAddress => 2000,
            Self::ReadTextAndFingerprint => 3000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames in the protocol notes (§1.4), byte for byte.
    #[test]
    fn known_command_frames() {
        let pre = [0xAA, 0xAA, 0xAA, 0x96, 0x69, 0x00, 0x03];
        let cases: [(SamCommand, [u8; 3]); 9] = [
            (SamCommand::ResetSam, [0x10, 0xFF, 0xEC]),
            (SamCommand::SamStatus, [0x11, 0xFF, 0xED]),
            (SamCommand::ReadSamId, [0x12, 0xFF, 0xEE]),
            (SamCommand::FindCard, [0x20, 0x01, 0x22]),
            (SamCommand::SelectCard, [0x20, 0x02, 0x21]),
            (SamCommand::ReadText, [0x30, 0x01, 0x32]),
            (SamCommand::ReadAppendedAddress, [0x30, 0x03, 0x30]),
            (SamCommand::ReadTextAndFingerprint, [0x30, 0x10, 0x23]),
            (SamCommand::SetBaud(SamBaud::B115200), [0x60, 0x00, 0x63]),
        ];
        for (cmd, tail) in cases {
            let mut want = pre.to_vec();
            want.extend_from_slice(&tail);
            assert_eq!(cmd.encode(), want, "{cmd:?}");
        }
    }

    #[test]
    fn codes_round_trip() {
        let all = [
            SamCommand::ResetSam,
            SamCommand::SamStatus,
            SamCommand::ReadSamId,
            SamCommand::FindCard,
            SamCommand::SelectCard,
            SamCommand::ReadText,
            SamCommand::ReadTextAndFingerprint,
            SamCommand::ReadAppendedAddress,
        ]
        .into_iter()
        .chain(SamBaud::PROBE_ORDER.map(SamCommand::SetBaud));
        for c in all {
            let (a, b) = c.code();
            assert_eq!(SamCommand::from_code(a, b), Some(c));
        }
        assert_eq!(SamCommand::from_code(0x60, 0x09), None);
        assert_eq!(SamCommand::from_code(0x01, 0xFF), None);
        assert_eq!(SamBaud::from_bits_per_second(9600), Some(SamBaud::B9600));
    }
}
