//! Display masking of personal values: the safe defaults of REQUIREMENTS §9.
//!
//! The daemon's privacy layer may substitute per-item rules from the catalog; these are
//! the defaults used wherever nothing is configured (e.g. `kioskctl device idcard read`).
//! All functions count characters, not bytes.

/// Which characters of a value stay visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskRule {
    /// Characters kept at the start.
    pub keep_first: usize,
    /// Characters kept at the end.
    pub keep_last: usize,
    /// `true`: every hidden character becomes one `*`; `false`: the hidden part becomes
    /// `fixed_stars` stars whatever its length (hides the length too).
    pub per_char: bool,
    pub fixed_stars: usize,
}

/// ID number: first 1 and last 1 characters visible, each other character a `*`.
pub const ID_NUMBER: MaskRule = MaskRule {
    keep_first: 1,
    keep_last: 1,
    per_char: true,
    fixed_stars: 0,
};
/// Name: first character visible, each other character a `*`.
pub const NAME: MaskRule = MaskRule {
    keep_first: 1,
    keep_last: 0,
    per_char: true,
    fixed_stars: 0,
};
/// Address: first 6 characters visible followed by `***`.
pub const ADDRESS: MaskRule = MaskRule {
    keep_first: 6,
    keep_last: 0,
    per_char: false,
    fixed_stars: 3,
};
/// Document numbers (passes, permits): like ID numbers.
pub const DOCUMENT_NUMBER: MaskRule = ID_NUMBER;

/// Applies `rule`. A value too short to hide anything under the rule keeps at most half of
/// its characters visible, so a short value is never shown whole.
pub fn apply(rule: MaskRule, value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len();
    if n == 0 {
        return String::new();
    }
    let (mut first, mut last) = (rule.keep_first, rule.keep_last);
    if first + last >= n {
        // Shrink the visible part to at most half of the value, preferring the start.
        let budget = n / 2;
        first = first.min(budget);
        last = last.min(budget - first);
    }
    let hidden = n - first - last;
    let mut out: String = chars.iter().take(first).collect();
    let stars = if rule.per_char {
        hidden
    } else {
        rule.fixed_stars.max(1)
    };
    out.extend(std::iter::repeat_n('*', stars));
    out.extend(chars.iter().skip(n - last));
    out
}

pub fn id_number(value: &str) -> String {
    apply(ID_NUMBER, value)
}

pub fn name(value: &str) -> String {
    apply(NAME, value)
}

pub fn address(value: &str) -> String {
    apply(ADDRESS, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_defaults() {
        assert_eq!(id_number("11010519491231002X"), "1****************X");
        assert_eq!(name("测试人"), "测**");
        assert_eq!(name("Ann Example"), "A**********");
        assert_eq!(address("北京市东城区测试路1号"), "北京市东城区***");
    }

    #[test]
    fn short_values_are_never_shown_whole() {
        assert_eq!(name("王"), "*");
        assert_eq!(id_number("12"), "1*");
        assert_eq!(address("测试路1号"), "测试***");
        assert_eq!(name(""), "");
    }
}
