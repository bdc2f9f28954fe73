//! Confirmation codes: byte 0 of every acknowledgement.

/// Every documented confirmation code; others are [`Confirmation::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Confirmation {
    /// `00`.
    Ok,
    /// `01` error receiving the packet.
    PacketError,
    /// `02` no finger on the sensor.
    NoFinger,
    /// `03` failed to capture an image.
    CaptureFailed,
    /// `06` image too disorderly.
    DisorderlyImage,
    /// `07` too few feature points (GetImageEx: quality too poor).
    TooFewFeatures,
    /// `08` templates do not match.
    NoMatch,
    /// `09` no matching template in the library.
    NotFound,
    /// `0A` failed to combine character files.
    CombineFailed,
    /// `0B` page ID beyond the library.
    BadLocation,
    /// `0C` error reading the template / invalid template.
    TemplateReadError,
    /// `0D` error uploading the template.
    TemplateUploadError,
    /// `0E` module cannot receive the following data packets.
    CannotReceiveData,
    /// `0F` error uploading the image.
    ImageUploadError,
    /// `10` failed to delete the template.
    DeleteFailed,
    /// `11` failed to clear the library.
    ClearFailed,
    /// `13` wrong password.
    WrongPassword,
    /// `15` no valid primary image.
    NoValidImage,
    /// `18` flash write error.
    FlashError,
    /// `19` undefined error.
    Undefined,
    /// `1A` invalid register number.
    InvalidRegister,
    /// `1B` incorrect register configuration.
    BadRegisterConfig,
    /// `1C` wrong notepad page.
    WrongNotepadPage,
    /// `1D` port operation failed.
    PortFailed,
    /// `20` address code wrong (semantics unconfirmed).
    AddressWrong,
    /// `21` password must be verified first (semantics unconfirmed).
    PasswordRequired,
    /// `22` template empty (R503).
    TemplateEmpty,
    /// `24` library empty (R503).
    LibraryEmpty,
    /// `29` abnormal sensor (R503).
    AbnormalSensor,
    Other(u8),
}

impl Confirmation {
    const TABLE: [(u8, Confirmation); 29] = [
        (0x00, Self::Ok),
        (0x01, Self::PacketError),
        (0x02, Self::NoFinger),
        (0x03, Self::CaptureFailed),
        (0x06, Self::DisorderlyImage),
        (0x07, Self::TooFewFeatures),
        (0x08, Self::NoMatch),
        (0x09, Self::NotFound),
        (0x0A, Self::CombineFailed),
        (0x0B, Self::BadLocation),
        (0x0C, Self::TemplateReadError),
        (0x0D, Self::TemplateUploadError),
        (0x0E, Self::CannotReceiveData),
        (0x0F, Self::ImageUploadError),
        (0x10, Self::DeleteFailed),
        (0x11, Self::ClearFailed),
        (0x13, Self::WrongPassword),
        (0x15, Self::NoValidImage),
        (0x18, Self::FlashError),
        (0x19, Self::Undefined),
        (0x1A, Self::InvalidRegister),
        (0x1B, Self::BadRegisterConfig),
        (0x1C, Self::WrongNotepadPage),
        (0x1D, Self::PortFailed),
        (0x20, Self::AddressWrong),
        (0x21, Self::PasswordRequired),
        (0x22, Self::TemplateEmpty),
        (0x24, Self::LibraryEmpty),
        (0x29, Self::AbnormalSensor),
    ];

    pub fn from_byte(b: u8) -> Self {
        Self::TABLE
            .iter()
            .find(|(c, _)| *c == b)
            .map(|(_, v)| *v)
            .unwrap_or(Self::Other(b))
    }

    pub fn to_byte(self) -> u8 {
        match self {
            Self::Other(b) => b,
            known => Self::TABLE
                .iter()
                .find(|(_, v)| *v == known)
                .map(|(c, _)| *c)
                .unwrap_or(0x19),
        }
    }
}

impl std::fmt::Display for Confirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "confirmation {:02X} ({self:?})", self.to_byte())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        for b in 0..=u8::MAX {
            assert_eq!(Confirmation::from_byte(b).to_byte(), b);
        }
        assert_eq!(Confirmation::from_byte(0x02), Confirmation::NoFinger);
        assert_eq!(Confirmation::from_byte(0x13), Confirmation::WrongPassword);
        assert_eq!(Confirmation::from_byte(0x12), Confirmation::Other(0x12));
    }
}
