//! Synthetic identities for all four card layouts. None is a real person: names are
//! "测试" placeholders, region codes `99xxxx` do not exist, and check digits are computed.

use crate::gb11643;
use crate::personal::{Address, DocumentNumber, IdNumber, PersonName};
use crate::sam::reply::CardFingerprint;
use crate::sam::text::{
    CardDate, CardText, ForeignPermanent2017, ForeignPermanent2023, HkMacaoTaiwanPermit,
    ResidentCard, ValidUntil,
};
use crate::sam::{FingerPosition, Nation, Sex};

use super::idcard::SimCard;
use super::synthetic_bytes;

fn date(y: i32, m: u8, d: u8) -> CardDate {
    CardDate::new(y, m, d)
        .unwrap_or_else(|| CardDate::new(2000, 1, 1).unwrap_or_else(|| unreachable!()))
}

/// A valid GB 11643 number from 17 digits (computes the check character).
pub fn id_number(first17: &str) -> IdNumber {
    let check = gb11643::check_char(first17).unwrap_or('0');
    IdNumber::parse(format!("{first17}{check}"))
        .unwrap_or_else(|_| unreachable!("computed check digit"))
}

/// Two card fingerprint templates (right index, left index), synthetic bytes.
pub fn card_fingerprints(seed: u32) -> Vec<CardFingerprint> {
    [FingerPosition::RightIndex, FingerPosition::LeftIndex]
        .iter()
        .enumerate()
        .map(|(i, pos)| {
            let mut t = synthetic_bytes(seed.wrapping_add(i as u32), 512);
            if let Some(b) = t.get_mut(5) {
                *b = pos.code();
            }
            CardFingerprint::new(t)
        })
        .collect()
}

pub fn resident_text(seed: u32) -> CardText {
    CardText::Resident(ResidentCard {
        name: PersonName::new("测试甲"),
        sex: Sex::Male,
        nation: Nation::from_code(1).unwrap_or_else(|| unreachable!()),
        birth_date: date(1990, 1, 2),
        address: Address::new("测试省示例市样本区模拟路1号"),
        id_number: id_number(&format!("99010119900102{:03}", seed % 1000)),
        authority: "示例市公安局样本分局".into(),
        valid_from: date(2020, 3, 4),
        valid_until: ValidUntil::Date(date(2040, 3, 4)),
    })
}

pub fn hk_macao_taiwan_text(seed: u32) -> CardText {
    CardText::HkMacaoTaiwan(HkMacaoTaiwanPermit {
        name: PersonName::new("测试乙"),
        sex: Sex::Female,
        birth_date: date(1985, 6, 7),
        address: Address::new("测试省示例市样本区模拟街2号"),
        id_number: id_number(&format!("81000019850607{:03}", seed % 1000)),
        authority: "示例市公安局".into(),
        valid_from: date(2021, 1, 1),
        valid_until: ValidUntil::Date(date(2026, 1, 1)),
        pass_number: DocumentNumber::new("H99990001"),
        issue_count: "01".into(),
    })
}

pub fn foreign_2017_text(seed: u32) -> CardText {
    CardText::ForeignPermanent2017(ForeignPermanent2017 {
        english_name: PersonName::new("TEST, EXAMPLE PERSON"),
        sex: Sex::Female,
        permit_number: DocumentNumber::new(format!("ZZZ99009001{:04}", seed % 10000)),
        nationality: "ZZZ".into(),
        chinese_name: PersonName::new("测试丙"),
        valid_from: date(2017, 7, 1),
        valid_until: ValidUntil::Date(date(2027, 7, 1)),
        birth_date: date(1980, 12, 31),
        card_version: "01".into(),
        authority_code: "9999".into(),
    })
}

pub fn foreign_2023_text(seed: u32) -> CardText {
    CardText::ForeignPermanent2023(ForeignPermanent2023 {
        chinese_name: PersonName::new("测试丁"),
        sex: Sex::Unspecified,
        renewal_count: "00".into(),
        birth_date: date(1975, 5, 5),
        // 46 characters: crosses into the second English-name field.
        english_name: PersonName::new("SAMPLEPERSON-LONGNAME, SYNTHETIC EXAMPLE ENTRY"),
        id_number: id_number(&format!("99999919750505{:03}", seed % 1000)),
        valid_from: date(2023, 12, 1),
        valid_until: ValidUntil::LongTerm,
        nationality: "ZZZ".into(),
        previous_card_link: String::new(),
    })
}

/// A card (text + synthetic 1024-byte photo + two fingerprint templates).
pub fn card(text: CardText, seed: u32) -> SimCard {
    SimCard {
        text,
        photo: synthetic_bytes(seed ^ 0x5A5A_5A5A, 1024),
        fingerprints: card_fingerprints(seed),
        appended_addresses: Vec::new(),
    }
}

/// One card of each layout.
pub fn all_layouts(seed: u32) -> [SimCard; 4] {
    [
        card(resident_text(seed), seed),
        card(hk_macao_taiwan_text(seed), seed + 1),
        card(foreign_2017_text(seed), seed + 2),
        card(foreign_2023_text(seed), seed + 3),
    ]
}
