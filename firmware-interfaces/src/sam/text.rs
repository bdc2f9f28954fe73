//! The 256-byte text block: UCS-2LE, space padded, four layouts told apart by the
//! card-type flag at byte offset 248 (space/NUL resident card, `J` HK/Macao/Taiwan residence
//! permit, `I` 2017 foreign permanent residence card, `Y` 2023 foreign permanent residence
//! card; `Y` layout from a single source, see the protocol notes §1.7).

use zeroize::Zeroizing;

use crate::gb11643::IdNumberError;
use crate::personal::{Address, DocumentNumber, IdNumber, PersonName};

use super::tables::{Nation, Sex};

pub const TEXT_BLOCK_LEN: usize = 256;
const FLAG_OFFSET: usize = 248;

/// Why a text block could not be decoded. Never carries card contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("text block is {0} bytes, expected 256")]
    Length(usize),
    #[error("unknown card-type flag U+{0:04X}")]
    UnknownLayout(u16),
    #[error("field `{0}` is malformed")]
    Field(&'static str),
    #[error("ID number: {0}")]
    IdNumber(#[from] IdNumberError),
}

/// A raw text block, wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct TextBlock(Zeroizing<[u8; TEXT_BLOCK_LEN]>);

impl std::fmt::Debug for TextBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TextBlock(<redacted>)")
    }
}

impl TextBlock {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TextError> {
        let arr: [u8; TEXT_BLOCK_LEN] = bytes
            .try_into()
            .map_err(|_| TextError::Length(bytes.len()))?;
        Ok(Self(Zeroizing::new(arr)))
    }

    fn blank() -> Self {
        let mut b = [0u8; TEXT_BLOCK_LEN];
        for pair in b.chunks_exact_mut(2) {
            pair.copy_from_slice(&[0x20, 0x00]);
        }
        Self(Zeroizing::new(b))
    }

    pub fn as_bytes(&self) -> &[u8; TEXT_BLOCK_LEN] {
        &self.0
    }

    /// The layout announced by the flag at offset 248.
    pub fn layout(&self) -> Result<CardLayout, TextError> {
        let unit = self.unit(FLAG_OFFSET);
        match unit {
            0x0000 | 0x0020 => Ok(CardLayout::Resident),
            0x004A => Ok(CardLayout::HkMacaoTaiwan),
            0x0049 => Ok(CardLayout::ForeignPermanent2017),
            0x0059 => Ok(CardLayout::ForeignPermanent2023),
            other => Err(TextError::UnknownLayout(other)),
        }
    }

    pub fn decode(&self) -> Result<CardText, TextError> {
        Ok(match self.layout()? {
            CardLayout::Resident => CardText::Resident(ResidentCard::decode(self)?),
            CardLayout::HkMacaoTaiwan => {
                CardText::HkMacaoTaiwan(HkMacaoTaiwanPermit::decode(self)?)
            }
            CardLayout::ForeignPermanent2017 => {
                CardText::ForeignPermanent2017(ForeignPermanent2017::decode(self)?)
            }
            CardLayout::ForeignPermanent2023 => {
                CardText::ForeignPermanent2023(ForeignPermanent2023::decode(self)?)
            }
        })
    }

    fn unit(&self, off: usize) -> u16 {
        let b = self.0.get(off..off + 2).unwrap_or(&[0, 0]);
        u16::from_le_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
        ])
    }

    /// The field's characters, untrimmed (unpaired surrogates become U+FFFD).
    fn raw(&self, off: usize, len: usize) -> Zeroizing<String> {
        let units = (off..off + len).step_by(2).map(|o| self.unit(o));
        Zeroizing::new(
            char::decode_utf16(units)
                .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect(),
        )
    }

    /// The field with padding (spaces, NULs) trimmed.
    fn text(&self, off: usize, len: usize) -> Zeroizing<String> {
        let raw = self.raw(off, len);
        Zeroizing::new(raw.trim_matches(|c| c == ' ' || c == '\0').to_string())
    }

    fn put(&mut self, off: usize, len: usize, value: &str) {
        let Some(field) = self.0.get_mut(off..off + len) else {
            return;
        };
        let units = value.encode_utf16().chain(std::iter::repeat(0x0020));
        for (pair, unit) in field.chunks_exact_mut(2).zip(units) {
            pair.copy_from_slice(&unit.to_le_bytes());
        }
    }

    fn sex(&self, off: usize) -> Result<Sex, TextError> {
        let t = self.text(off, 2);
        t.chars()
            .next()
            .and_then(Sex::from_code)
            .ok_or(TextError::Field("sex"))
    }

    fn date(&self, off: usize, field: &'static str) -> Result<CardDate, TextError> {
        CardDate::parse_compact(&self.text(off, 16)).ok_or(TextError::Field(field))
    }

    fn valid_until(&self, off: usize) -> Result<ValidUntil, TextError> {
        let t = self.text(off, 16);
        if t.starts_with("长期") {
            return Ok(ValidUntil::LongTerm);
        }
        CardDate::parse_compact(&t)
            .map(ValidUntil::Date)
            .ok_or(TextError::Field("valid_until"))
    }

    fn id_number(&self, off: usize) -> Result<IdNumber, TextError> {
        Ok(IdNumber::parse(self.text(off, 36).as_str())?)
    }
}

/// Which of the four layouts a block uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardLayout {
    Resident,
    HkMacaoTaiwan,
    ForeignPermanent2017,
    ForeignPermanent2023,
}

impl CardLayout {
    /// Stable machine name (used as `card_type` in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resident => "resident_id",
            Self::HkMacaoTaiwan => "hk_macao_taiwan_residence_permit",
            Self::ForeignPermanent2017 => "foreign_permanent_residence_2017",
            Self::ForeignPermanent2023 => "foreign_permanent_residence_2023",
        }
    }
}

/// A calendar date printed on a card as `YYYYMMDD`. Its `Debug` withholds the date (a
/// birth date is personal); `Display` shows it where a caller means to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CardDate(time::Date);

impl std::fmt::Debug for CardDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardDate(..)")
    }
}

/// `Debug` for the decoded card types names the type and nothing else: every field is the
/// holder's (name, sex, nation, birth date, address, numbers, issuing authority, validity),
/// and a derived `Debug` would print the ones that are not masking newtypes in clear.
macro_rules! withheld_debug {
    ($($card:ty),+) => {$(
        impl std::fmt::Debug for $card {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($card)).finish_non_exhaustive()
            }
        }
    )+};
}

withheld_debug!(
    ResidentCard,
    HkMacaoTaiwanPermit,
    ForeignPermanent2017,
    ForeignPermanent2023
);

impl CardDate {
    pub fn new(year: i32, month: u8, day: u8) -> Option<Self> {
        let month = time::Month::try_from(month).ok()?;
        time::Date::from_calendar_date(year, month, day)
            .ok()
            .map(Self)
    }

    /// Parses exactly 8 ASCII digits `YYYYMMDD` naming a real date.
    pub fn parse_compact(s: &str) -> Option<Self> {
        if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let year = s.get(0..4)?.parse().ok()?;
        let month = s.get(4..6)?.parse().ok()?;
        let day = s.get(6..8)?.parse().ok()?;
        Self::new(year, month, day)
    }

    pub fn date(self) -> time::Date {
        self.0
    }

    pub fn compact(self) -> String {
        format!(
            "{:04}{:02}{:02}",
            self.0.year(),
            u8::from(self.0.month()),
            self.0.day()
        )
    }
}

impl std::fmt::Display for CardDate {
    /// `YYYY-MM-DD`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}",
            self.0.year(),
            u8::from(self.0.month()),
            self.0.day()
        )
    }
}

/// End of validity: a date or 长期 (long-term).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValidUntil {
    Date(CardDate),
    LongTerm,
}

impl std::fmt::Display for ValidUntil {
    /// `YYYY-MM-DD` or `long-term`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Date(d) => d.fmt(f),
            Self::LongTerm => f.write_str("long-term"),
        }
    }
}

impl ValidUntil {
    fn card_text(self) -> String {
        match self {
            Self::Date(d) => d.compact(),
            Self::LongTerm => "长期".to_string(),
        }
    }
}

/// 居民身份证.
#[derive(Clone, PartialEq, Eq)]
pub struct ResidentCard {
    pub name: PersonName,
    pub sex: Sex,
    pub nation: Nation,
    pub birth_date: CardDate,
    pub address: Address,
    pub id_number: IdNumber,
    pub authority: String,
    pub valid_from: CardDate,
    pub valid_until: ValidUntil,
}

impl ResidentCard {
    fn decode(b: &TextBlock) -> Result<Self, TextError> {
        Ok(Self {
            name: PersonName::new(b.text(0, 30).as_str()),
            sex: b.sex(30)?,
            nation: Nation::parse(&b.text(32, 4)).ok_or(TextError::Field("nation"))?,
            birth_date: b.date(36, "birth_date")?,
            address: Address::new(b.text(52, 70).as_str()),
            id_number: b.id_number(122)?,
            authority: b.text(158, 30).to_string(),
            valid_from: b.date(188, "valid_from")?,
            valid_until: b.valid_until(204)?,
        })
    }

    fn encode(&self, b: &mut TextBlock) {
        b.put(0, 30, self.name.expose());
        b.put(30, 2, &self.sex.code().to_string());
        b.put(32, 4, &format!("{:02}", self.nation.code()));
        b.put(36, 16, &self.birth_date.compact());
        b.put(52, 70, self.address.expose());
        b.put(122, 36, self.id_number.expose());
        b.put(158, 30, &self.authority);
        b.put(188, 16, &self.valid_from.compact());
        b.put(204, 16, &self.valid_until.card_text());
    }
}

/// 港澳台居民居住证 (flag `J`): the resident layout without nation, plus pass number and
/// issue count.
#[derive(Clone, PartialEq, Eq)]
pub struct HkMacaoTaiwanPermit {
    pub name: PersonName,
    pub sex: Sex,
    pub birth_date: CardDate,
    pub address: Address,
    pub id_number: IdNumber,
    pub authority: String,
    pub valid_from: CardDate,
    pub valid_until: ValidUntil,
    pub pass_number: DocumentNumber,
    pub issue_count: String,
}

impl HkMacaoTaiwanPermit {
    fn decode(b: &TextBlock) -> Result<Self, TextError> {
        Ok(Self {
            name: PersonName::new(b.text(0, 30).as_str()),
            sex: b.sex(30)?,
            birth_date: b.date(36, "birth_date")?,
            address: Address::new(b.text(52, 70).as_str()),
            id_number: b.id_number(122)?,
            authority: b.text(158, 30).to_string(),
            valid_from: b.date(188, "valid_from")?,
            valid_until: b.valid_until(204)?,
            pass_number: DocumentNumber::new(b.text(220, 18).as_str()),
            issue_count: b.text(238, 4).to_string(),
        })
    }

    fn encode(&self, b: &mut TextBlock) {
        b.put(0, 30, self.name.expose());
        b.put(30, 2, &self.sex.code().to_string());
        b.put(36, 16, &self.birth_date.compact());
        b.put(52, 70, self.address.expose());
        b.put(122, 36, self.id_number.expose());
        b.put(158, 30, &self.authority);
        b.put(188, 16, &self.valid_from.compact());
        b.put(204, 16, &self.valid_until.card_text());
        b.put(220, 18, self.pass_number.expose());
        b.put(238, 4, &self.issue_count);
        b.put(FLAG_OFFSET, 2, "J");
    }
}

/// 外国人永久居留身份证, 2017 layout (flag `I`).
#[derive(Clone, PartialEq, Eq)]
pub struct ForeignPermanent2017 {
    pub english_name: PersonName,
    pub sex: Sex,
    pub permit_number: DocumentNumber,
    /// Three-letter nationality code (assumed ISO 3166-1 alpha-3).
    pub nationality: String,
    pub chinese_name: PersonName,
    pub valid_from: CardDate,
    pub valid_until: ValidUntil,
    pub birth_date: CardDate,
    pub card_version: String,
    pub authority_code: String,
}

impl ForeignPermanent2017 {
    fn decode(b: &TextBlock) -> Result<Self, TextError> {
        Ok(Self {
            english_name: PersonName::new(b.text(0, 120).as_str()),
            sex: b.sex(120)?,
            permit_number: DocumentNumber::new(b.text(122, 30).as_str()),
            nationality: b.text(152, 6).to_string(),
            chinese_name: PersonName::new(b.text(158, 30).as_str()),
            valid_from: b.date(188, "valid_from")?,
            valid_until: b.valid_until(204)?,
            birth_date: b.date(220, "birth_date")?,
            card_version: b.text(236, 4).to_string(),
            authority_code: b.text(240, 8).to_string(),
        })
    }

    fn encode(&self, b: &mut TextBlock) {
        b.put(0, 120, self.english_name.expose());
        b.put(120, 2, &self.sex.code().to_string());
        b.put(122, 30, self.permit_number.expose());
        b.put(152, 6, &self.nationality);
        b.put(158, 30, self.chinese_name.expose());
        b.put(188, 16, &self.valid_from.compact());
        b.put(204, 16, &self.valid_until.card_text());
        b.put(220, 16, &self.birth_date.compact());
        b.put(236, 4, &self.card_version);
        b.put(240, 8, &self.authority_code);
        b.put(FLAG_OFFSET, 2, "I");
    }
}

/// 外国人永久居留身份证, 2023 layout (flag `Y`; single source). The English name is split
/// over two fields (35 + 11 characters).
#[derive(Clone, PartialEq, Eq)]
pub struct ForeignPermanent2023 {
    pub chinese_name: PersonName,
    pub sex: Sex,
    pub renewal_count: String,
    pub birth_date: CardDate,
    pub english_name: PersonName,
    pub id_number: IdNumber,
    pub valid_from: CardDate,
    pub valid_until: ValidUntil,
    pub nationality: String,
    pub previous_card_link: String,
}

impl ForeignPermanent2023 {
    const NAME_PART1_CHARS: usize = 35;

    fn decode(b: &TextBlock) -> Result<Self, TextError> {
        let mut english = Zeroizing::new(String::new());
        english.push_str(&b.raw(52, 70));
        english.push_str(&b.raw(220, 22));
        Ok(Self {
            chinese_name: PersonName::new(b.text(0, 30).as_str()),
            sex: b.sex(30)?,
            renewal_count: b.text(32, 4).to_string(),
            birth_date: b.date(36, "birth_date")?,
            english_name: PersonName::new(english.trim_matches(|c| c == ' ' || c == '\0')),
            id_number: b.id_number(122)?,
            valid_from: b.date(188, "valid_from")?,
            valid_until: b.valid_until(204)?,
            nationality: b.text(242, 6).to_string(),
            previous_card_link: b.text(250, 6).to_string(),
        })
    }

    fn encode(&self, b: &mut TextBlock) {
        let english: Zeroizing<Vec<char>> =
            Zeroizing::new(self.english_name.expose().chars().collect());
        let split = english.len().min(Self::NAME_PART1_CHARS);
        let (first, second) = english.split_at(split);
        b.put(0, 30, self.chinese_name.expose());
        b.put(30, 2, &self.sex.code().to_string());
        b.put(32, 4, &self.renewal_count);
        b.put(36, 16, &self.birth_date.compact());
        b.put(52, 70, &Zeroizing::new(first.iter().collect::<String>()));
        b.put(122, 36, self.id_number.expose());
        b.put(188, 16, &self.valid_from.compact());
        b.put(204, 16, &self.valid_until.card_text());
        b.put(220, 22, &Zeroizing::new(second.iter().collect::<String>()));
        b.put(242, 6, &self.nationality);
        b.put(FLAG_OFFSET, 2, "Y");
        b.put(250, 6, &self.previous_card_link);
    }
}

/// A decoded text block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardText {
    Resident(ResidentCard),
    HkMacaoTaiwan(HkMacaoTaiwanPermit),
    ForeignPermanent2017(ForeignPermanent2017),
    ForeignPermanent2023(ForeignPermanent2023),
}

/// The card's identity number: a GB 11643 number or (2017 foreign card) a permit number.
#[derive(Debug, Clone, Copy)]
pub enum IdentityNumberRef<'a> {
    Citizen(&'a IdNumber),
    Permit(&'a DocumentNumber),
}

impl IdentityNumberRef<'_> {
    pub fn expose(&self) -> &str {
        match self {
            Self::Citizen(n) => n.expose(),
            Self::Permit(n) => n.expose(),
        }
    }

    pub fn masked(&self) -> String {
        match self {
            Self::Citizen(n) => n.masked(),
            Self::Permit(n) => n.masked(),
        }
    }
}

impl CardText {
    pub fn layout(&self) -> CardLayout {
        match self {
            Self::Resident(_) => CardLayout::Resident,
            Self::HkMacaoTaiwan(_) => CardLayout::HkMacaoTaiwan,
            Self::ForeignPermanent2017(_) => CardLayout::ForeignPermanent2017,
            Self::ForeignPermanent2023(_) => CardLayout::ForeignPermanent2023,
        }
    }

    /// The card's main name: the Chinese name, or for foreign cards the English name
    /// when no Chinese name is printed (2023) / always the English name (2017, whose
    /// primary field it is).
    pub fn name(&self) -> &PersonName {
        match self {
            Self::Resident(c) => &c.name,
            Self::HkMacaoTaiwan(c) => &c.name,
            Self::ForeignPermanent2017(c) => &c.english_name,
            Self::ForeignPermanent2023(c) if c.chinese_name.is_empty() => &c.english_name,
            Self::ForeignPermanent2023(c) => &c.chinese_name,
        }
    }

    pub fn sex(&self) -> Sex {
        match self {
            Self::Resident(c) => c.sex,
            Self::HkMacaoTaiwan(c) => c.sex,
            Self::ForeignPermanent2017(c) => c.sex,
            Self::ForeignPermanent2023(c) => c.sex,
        }
    }

    /// Only the resident card records a nation.
    pub fn nation(&self) -> Option<Nation> {
        match self {
            Self::Resident(c) => Some(c.nation),
            _ => None,
        }
    }

    pub fn birth_date(&self) -> CardDate {
        match self {
            Self::Resident(c) => c.birth_date,
            Self::HkMacaoTaiwan(c) => c.birth_date,
            Self::ForeignPermanent2017(c) => c.birth_date,
            Self::ForeignPermanent2023(c) => c.birth_date,
        }
    }

    /// Foreign permanent residence cards carry no address.
    pub fn address(&self) -> Option<&Address> {
        match self {
            Self::Resident(c) => Some(&c.address),
            Self::HkMacaoTaiwan(c) => Some(&c.address),
            _ => None,
        }
    }

    pub fn identity_number(&self) -> IdentityNumberRef<'_> {
        match self {
            Self::Resident(c) => IdentityNumberRef::Citizen(&c.id_number),
            Self::HkMacaoTaiwan(c) => IdentityNumberRef::Citizen(&c.id_number),
            Self::ForeignPermanent2017(c) => IdentityNumberRef::Permit(&c.permit_number),
            Self::ForeignPermanent2023(c) => IdentityNumberRef::Citizen(&c.id_number),
        }
    }

    /// Issuing authority (name, or the authority code on 2017 foreign cards).
    pub fn authority(&self) -> Option<&str> {
        match self {
            Self::Resident(c) => Some(&c.authority),
            Self::HkMacaoTaiwan(c) => Some(&c.authority),
            Self::ForeignPermanent2017(c) => Some(&c.authority_code),
            Self::ForeignPermanent2023(_) => None,
        }
    }

    pub fn valid_from(&self) -> CardDate {
        match self {
            Self::Resident(c) => c.valid_from,
            Self::HkMacaoTaiwan(c) => c.valid_from,
            Self::ForeignPermanent2017(c) => c.valid_from,
            Self::ForeignPermanent2023(c) => c.valid_from,
        }
    }

    pub fn valid_until(&self) -> ValidUntil {
        match self {
            Self::Resident(c) => c.valid_until,
            Self::HkMacaoTaiwan(c) => c.valid_until,
            Self::ForeignPermanent2017(c) => c.valid_until,
            Self::ForeignPermanent2023(c) => c.valid_until,
        }
    }

    /// The 256-byte block for this card (fields too long for their slot are cut).
    pub fn encode(&self) -> TextBlock {
        let mut b = TextBlock::blank();
        match self {
            Self::Resident(c) => c.encode(&mut b),
            Self::HkMacaoTaiwan(c) => c.encode(&mut b),
            Self::ForeignPermanent2017(c) => c.encode(&mut b),
            Self::ForeignPermanent2023(c) => c.encode(&mut b),
        }
        b
    }
}
