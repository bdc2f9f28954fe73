//! GB 11643-1999 citizen identity number: the ISO 7064 MOD 11-2 check digit.

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK_CHARS: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// Why an identity number is not a valid GB 11643 number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdNumberError {
    #[error("identity number has {0} characters, expected 18")]
    Length(usize),
    #[error("identity number has a character that is not a digit at position {0}")]
    NotDigit(usize),
    #[error("identity number check digit is wrong")]
    CheckDigit,
}

/// The check character for the first 17 digits (`None` if any is not an ASCII digit).
pub fn check_char(first17: &str) -> Option<char> {
    if first17.chars().count() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (c, w) in first17.chars().zip(WEIGHTS) {
        sum += c.to_digit(10)? * w;
    }
    CHECK_CHARS.get((sum % 11) as usize).copied()
}

/// Checks length, digits and check character (`X` must be upper case, as printed on cards).
pub fn validate(number: &str) -> Result<(), IdNumberError> {
    let chars: Vec<char> = number.chars().collect();
    if chars.len() != 18 {
        return Err(IdNumberError::Length(chars.len()));
    }
    let (body, last) = chars.split_at(17);
    if let Some(pos) = body.iter().position(|c| !c.is_ascii_digit()) {
        return Err(IdNumberError::NotDigit(pos));
    }
    let last = last.first().copied().unwrap_or(' ');
    if !(last.is_ascii_digit() || last == 'X') {
        return Err(IdNumberError::NotDigit(17));
    }
    let body: String = body.iter().collect();
    match check_char(&body) {
        Some(expected) if expected == last => Ok(()),
        _ => Err(IdNumberError::CheckDigit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Worked examples printed in GB 11643-1999 itself (not personal data).
    #[test]
    fn standard_examples_validate() {
        assert_eq!(check_char("11010519491231002"), Some('X'));
        assert_eq!(check_char("44052418800101001"), Some('4'));
        assert_eq!(validate("11010519491231002X"), Ok(()));
        assert_eq!(validate("440524188001010014"), Ok(()));
    }

    #[test]
    fn bad_check_digit_is_reported_as_such() {
        assert_eq!(
            validate("110105194912310021"),
            Err(IdNumberError::CheckDigit)
        );
        assert_eq!(
            validate("440524188001010015"),
            Err(IdNumberError::CheckDigit)
        );
    }

    #[test]
    fn shape_errors() {
        assert_eq!(validate("1234"), Err(IdNumberError::Length(4)));
        assert_eq!(
            validate("11010519491231A02X"),
            Err(IdNumberError::NotDigit(14))
        );
        assert_eq!(
            validate("11010519491231002x"),
            Err(IdNumberError::NotDigit(17))
        );
    }

    #[test]
    fn every_single_digit_change_is_caught() {
        let good = "11010519491231002X";
        for pos in 0..17 {
            for d in '0'..='9' {
                let mut s: Vec<char> = good.chars().collect();
                if s[pos] == d {
                    continue;
                }
                s[pos] = d;
                let s: String = s.into_iter().collect();
                assert_eq!(validate(&s), Err(IdNumberError::CheckDigit), "{pos} {d}");
            }
        }
    }
}
