//! Code tables: sex (GB/T 2261.1), nation (GB 3304), card fingerprint finger position.
//!
//! Copies of the nation table in the wild are wrong (one drops 水 and shifts 25.., another
//! uses obsolete names); this one follows the protocol notes §1.9 and is pinned by tests.

/// Sex code (one UCS-2 character on the card). Codes other than `1` are not "female".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sex {
    /// `0` 未知的性别.
    Unknown,
    /// `1` 男.
    Male,
    /// `2` 女.
    Female,
    /// `9` 未说明的性别.
    Unspecified,
}

impl Sex {
    pub fn from_code(c: char) -> Option<Self> {
        match c {
            '0' => Some(Self::Unknown),
            '1' => Some(Self::Male),
            '2' => Some(Self::Female),
            '9' => Some(Self::Unspecified),
            _ => None,
        }
    }

    pub fn code(self) -> char {
        match self {
            Self::Unknown => '0',
            Self::Male => '1',
            Self::Female => '2',
            Self::Unspecified => '9',
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Male => "male",
            Self::Female => "female",
            Self::Unspecified => "unspecified",
        }
    }

    pub fn chinese(self) -> &'static str {
        match self {
            Self::Unknown => "未知",
            Self::Male => "男",
            Self::Female => "女",
            Self::Unspecified => "未说明",
        }
    }
}

const NATIONS: [&str; 56] = [
    "汉",
    "蒙古",
    "回",
    "藏",
    "维吾尔",
    "苗",
    "彝",
    "壮",
    "布依",
    "朝鲜",
    "满",
    "侗",
    "瑶",
    "白",
    "土家",
    "哈尼",
    "哈萨克",
    "傣",
    "黎",
    "傈僳",
    "佤",
    "畲",
    "高山",
    "拉祜",
    "水",
    "东乡",
    "纳西",
    "景颇",
    "柯尔克孜",
    "土",
    "达斡尔",
    "仫佬",
    "羌",
    "布朗",
    "撒拉",
    "毛南",
    "仡佬",
    "锡伯",
    "阿昌",
    "普米",
    "塔吉克",
    "怒",
    "乌孜别克",
    "俄罗斯",
    "鄂温克",
    "德昂",
    "保安",
    "裕固",
    "京",
    "塔塔尔",
    "独龙",
    "鄂伦春",
    "赫哲",
    "门巴",
    "珞巴",
    "基诺",
];

/// A GB 3304 nation code: `01`..`56`, `97` (其他), `98` (外国血统中国籍人士).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nation(u8);

impl Nation {
    pub fn from_code(code: u8) -> Option<Self> {
        matches!(code, 1..=56 | 97 | 98).then_some(Self(code))
    }

    /// Parses the two-digit form on the card.
    pub fn parse(two_digits: &str) -> Option<Self> {
        if two_digits.len() != 2 || !two_digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Self::from_code(two_digits.parse().ok()?)
    }

    pub fn code(self) -> u8 {
        self.0
    }

    /// The name as printed on the card (without 族).
    pub fn name(self) -> &'static str {
        match self.0 {
            97 => "其他",
            98 => "外国血统中国籍人士",
            n => NATIONS
                .get(usize::from(n).wrapping_sub(1))
                .copied()
                .unwrap_or("其他"),
        }
    }
}

/// Byte 5 of each 512-byte card fingerprint template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FingerPosition {
    RightThumb,
    RightIndex,
    RightMiddle,
    RightRing,
    RightLittle,
    LeftThumb,
    LeftIndex,
    LeftMiddle,
    LeftRing,
    LeftLittle,
    RightUncertain,
    LeftUncertain,
    OtherUncertain,
    Unrecognised(u8),
}

impl FingerPosition {
    pub fn from_code(b: u8) -> Self {
        match b {
            0x0B => Self::RightThumb,
            0x0C => Self::RightIndex,
            0x0D => Self::RightMiddle,
            0x0E => Self::RightRing,
            0x0F => Self::RightLittle,
            0x10 => Self::LeftThumb,
            0x11 => Self::LeftIndex,
            0x12 => Self::LeftMiddle,
            0x13 => Self::LeftRing,
            0x14 => Self::LeftLittle,
            0x61 => Self::RightUncertain,
            0x62 => Self::LeftUncertain,
            0x63 => Self::OtherUncertain,
            other => Self::Unrecognised(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Self::RightThumb => 0x0B,
            Self::RightIndex => 0x0C,
            Self::RightMiddle => 0x0D,
            Self::RightRing => 0x0E,
            Self::RightLittle => 0x0F,
            Self::LeftThumb => 0x10,
            Self::LeftIndex => 0x11,
            Self::LeftMiddle => 0x12,
            Self::LeftRing => 0x13,
            Self::LeftLittle => 0x14,
            Self::RightUncertain => 0x61,
            Self::LeftUncertain => 0x62,
            Self::OtherUncertain => 0x63,
            Self::Unrecognised(b) => b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nation_table_is_pinned() {
        let pinned = [
            (1, "汉"),
            (2, "蒙古"),
            (5, "维吾尔"),
            (10, "朝鲜"),
            (15, "土家"),
            (24, "拉祜"),
            (25, "水"),
            (26, "东乡"),
            (29, "柯尔克孜"),
            (30, "土"),
            (36, "毛南"),
            (37, "仡佬"),
            (43, "乌孜别克"),
            (46, "德昂"),
            (50, "塔塔尔"),
            (56, "基诺"),
            (97, "其他"),
            (98, "外国血统中国籍人士"),
        ];
        for (code, name) in pinned {
            assert_eq!(
                Nation::from_code(code).map(Nation::name),
                Some(name),
                "{code}"
            );
        }
        // The known-wrong copies: 25 shifted to 东乡, obsolete 崩龙/基洛/毛难.
        assert_ne!(Nation::from_code(25).map(Nation::name), Some("东乡"));
        for obsolete in ["崩龙", "基洛", "毛难", "港澳台"] {
            assert!(!NATIONS.contains(&obsolete));
        }
        for bad in [0, 57, 96, 99] {
            assert_eq!(Nation::from_code(bad), None, "{bad}");
        }
        assert_eq!(Nation::parse("08").map(Nation::name), Some("壮"));
        assert_eq!(Nation::parse("8"), None);
        assert_eq!(NATIONS.len(), 56);
    }

    #[test]
    fn sex_codes_are_not_collapsed() {
        assert_eq!(Sex::from_code('1'), Some(Sex::Male));
        assert_eq!(Sex::from_code('2'), Some(Sex::Female));
        assert_eq!(Sex::from_code('0'), Some(Sex::Unknown));
        assert_eq!(Sex::from_code('9'), Some(Sex::Unspecified));
        assert_eq!(Sex::from_code('3'), None);
        for s in [Sex::Unknown, Sex::Male, Sex::Female, Sex::Unspecified] {
            assert_eq!(Sex::from_code(s.code()), Some(s));
        }
    }

    #[test]
    fn finger_positions() {
        assert_eq!(FingerPosition::from_code(0x0B), FingerPosition::RightThumb);
        assert_eq!(FingerPosition::from_code(0x14), FingerPosition::LeftLittle);
        assert_eq!(
            FingerPosition::from_code(0x63),
            FingerPosition::OtherUncertain
        );
        for b in 0..=u8::MAX {
            assert_eq!(FingerPosition::from_code(b).code(), b);
        }
    }
}
