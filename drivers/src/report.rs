//! Display-safe summaries of device readings for diagnostics (`kioskctl device ...`):
//! personal fields masked with the safe defaults of `firmware_interfaces::mask`.

use firmware_interfaces::sam::CardText;

use crate::fingerprint::SensorInfo;

/// A card with names, addresses and identity numbers masked; dates `YYYY-MM-DD`,
/// `valid_to` possibly `long-term`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedCard {
    pub card_type: &'static str,
    pub name: String,
    pub sex: &'static str,
    pub nation: Option<&'static str>,
    pub birth_date: String,
    pub address: Option<String>,
    pub id_number: String,
    pub authority: Option<String>,
    pub valid_from: String,
    pub valid_to: String,
}

impl MaskedCard {
    pub fn from_text(text: &CardText) -> Self {
        Self {
            card_type: text.layout().as_str(),
            name: text.name().masked(),
            sex: text.sex().as_str(),
            nation: text.nation().map(|n| n.name()),
            birth_date: text.birth_date().to_string(),
            address: text.address().map(|a| a.masked()),
            id_number: text.identity_number().masked(),
            authority: text.authority().map(str::to_string),
            valid_from: text.valid_from().to_string(),
            valid_to: text.valid_until().to_string(),
        }
    }
}

/// The fingerprint module's parameters as `kioskctl device fingerprint info` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SensorReport {
    pub capacity: u16,
    pub security_level: u16,
    pub packet_size: usize,
    pub baud: u32,
}

impl From<SensorInfo> for SensorReport {
    fn from(i: SensorInfo) -> Self {
        Self {
            capacity: i.capacity,
            security_level: i.security_level,
            packet_size: i.packet_size,
            baud: i.baud,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_interfaces::sim::fixtures;

    #[test]
    fn resident_card_is_masked() {
        let text = fixtures::resident_text(1);
        let m = MaskedCard::from_text(&text);
        let CardText::Resident(r) = &text else {
            panic!("resident")
        };
        assert_eq!(m.card_type, "resident_id");
        assert_eq!(m.name, "测**");
        assert_eq!(m.address.as_deref(), Some("测试省示例市***"));
        let id = r.id_number.expose();
        assert_eq!(m.id_number.chars().count(), 18);
        assert_eq!(m.id_number.chars().next(), id.chars().next());
        assert_eq!(m.id_number.chars().last(), id.chars().last());
        assert_eq!(m.id_number.chars().filter(|c| *c == '*').count(), 16);
        assert_eq!(
            (m.sex, m.nation, m.birth_date.as_str()),
            ("male", Some("汉"), "1990-01-02")
        );
        assert_eq!(
            (m.valid_from.as_str(), m.valid_to.as_str()),
            ("2020-03-04", "2040-03-04")
        );
    }

    #[test]
    fn foreign_cards_have_no_nation_or_address() {
        let m = MaskedCard::from_text(&fixtures::foreign_2023_text(1));
        assert_eq!(
            (m.nation, m.address.as_deref(), m.valid_to.as_str()),
            (None, None, "long-term")
        );
        assert_eq!(m.name, "测**");
    }
}
