//! The minors rule (PIPL art. 31; REQUIREMENTS §3): under the catalog's age
//! (14), from the ID card's birth date, no service without a guardian's
//! consent, and the guardian must have been verified as an adult through the
//! same identity flow.

use time::Date;

/// Full years of age on `today` for someone born on `birth` (the birthday
/// itself counts: on their 14th birthday a person is 14). People born on
/// 29 February turn a year older on 1 March in common years.
pub fn age_on(birth: Date, today: Date) -> u32 {
    if today < birth {
        return 0;
    }
    let mut years = today.year() - birth.year();
    let (bm, bd) = (birth.month() as u8, birth.day());
    let (tm, td) = (today.month() as u8, today.day());
    if (tm, td) < (bm, bd) {
        years -= 1;
    }
    years.max(0) as u32
}

/// A guardian verified through the identity flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedGuardian {
    /// The guardian's birth date, from their own ID card.
    pub birth: Date,
    /// Keyed digest of the guardian's ID number (never the number itself).
    pub subject_digest: [u8; 32],
    /// The guardian consented to this service on behalf of the minor.
    pub consented: bool,
}

/// Why the minors rule refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MinorError {
    #[error(
        "the applicant is under {limit}: a guardian must verify their own identity and consent first"
    )]
    GuardianRequired { limit: u32 },
    #[error("the guardian is not an adult")]
    GuardianNotAdult,
    #[error("the guardian has not consented")]
    GuardianNotConsented,
}

/// Apply the rule: Ok when the applicant is old enough or a verified adult
/// guardian consented.
pub fn check(
    birth: Date,
    today: Date,
    limit: u32,
    guardian: Option<&VerifiedGuardian>,
) -> Result<(), MinorError> {
    if age_on(birth, today) >= limit {
        return Ok(());
    }
    let g = guardian.ok_or(MinorError::GuardianRequired { limit })?;
    if age_on(g.birth, today) < 18 {
        return Err(MinorError::GuardianNotAdult);
    }
    if !g.consented {
        return Err(MinorError::GuardianNotConsented);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn the_fourteenth_birthday_is_the_boundary() {
        let birth = date!(2012 - 11 - 23);
        assert!(matches!(
            check(birth, date!(2026 - 11 - 22), 14, None),
            Err(MinorError::GuardianRequired { limit: 14 })
        ));
        assert_eq!(check(birth, date!(2026 - 11 - 23), 14, None), Ok(()));
        assert_eq!(age_on(birth, date!(2026 - 11 - 22)), 13);
        assert_eq!(age_on(birth, date!(2026 - 11 - 23)), 14);
    }

    #[test]
    fn leap_day_births_age_on_the_first_of_march() {
        let birth = date!(2012 - 02 - 29);
        assert_eq!(age_on(birth, date!(2026 - 02 - 28)), 13);
        assert_eq!(age_on(birth, date!(2026 - 03 - 01)), 14);
    }

    #[test]
    fn a_thirteen_year_old_passes_only_with_an_adult_consenting_guardian() {
        let birth = date!(2013 - 06 - 01);
        let today = date!(2026 - 11 - 23);
        let adult = VerifiedGuardian {
            birth: date!(1985 - 01 - 01),
            subject_digest: [1; 32],
            consented: true,
        };
        assert_eq!(check(birth, today, 14, Some(&adult)), Ok(()));
        let teen = VerifiedGuardian {
            birth: date!(2010 - 01 - 01),
            ..adult.clone()
        };
        assert_eq!(
            check(birth, today, 14, Some(&teen)),
            Err(MinorError::GuardianNotAdult)
        );
        let unwilling = VerifiedGuardian {
            consented: false,
            ..adult
        };
        assert_eq!(
            check(birth, today, 14, Some(&unwilling)),
            Err(MinorError::GuardianNotConsented)
        );
    }
}
