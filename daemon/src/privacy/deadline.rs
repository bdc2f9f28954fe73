//! Deadlines of rights requests: calendar days or working days, with the
//! public holidays and adjusted working weekends (调休) from the catalog.

use std::collections::BTreeSet;

use kiosk_config::catalog::{HolidaysDecl, RightsDecl};
use time::{Date, Duration, Weekday, format_description::well_known::Iso8601};

/// The working-day calendar.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    holidays: BTreeSet<Date>,
    extra_workdays: BTreeSet<Date>,
}

impl Calendar {
    /// From the catalog (dates were validated as `YYYY-MM-DD` there).
    pub fn from_catalog(h: &HolidaysDecl) -> Self {
        let parse = |s: &String| Date::parse(s, &Iso8601::DATE).ok();
        Self {
            holidays: h.days.iter().filter_map(parse).collect(),
            extra_workdays: h.extra_workdays.iter().filter_map(parse).collect(),
        }
    }

    pub fn is_working_day(&self, d: Date) -> bool {
        if self.extra_workdays.contains(&d) {
            return true;
        }
        if self.holidays.contains(&d) {
            return false;
        }
        !matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday)
    }

    /// The due date of a request received on `received`: `days` later, counting
    /// working days when `working` (the day of receipt does not count).
    pub fn due(&self, received: Date, days: u32, working: bool) -> Date {
        if !working {
            return received + Duration::days(days.into());
        }
        let mut d = received;
        let mut left = days;
        while left > 0 {
            d = d.next_day().unwrap_or(d);
            if self.is_working_day(d) {
                left -= 1;
            }
        }
        d
    }

    /// Due date under the catalog's rights rule.
    pub fn due_for(&self, rights: &RightsDecl, received: Date) -> Date {
        self.due(received, rights.deadline_days, rights.working_days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn fifteen_working_days_skip_weekends_and_national_day() {
        let cal = Calendar::from_catalog(&kiosk_config::Catalog::embedded().holidays);
        // Received Monday 2026-09-28: 29, 30 Sep (2); 1, 2, 5, 6, 7 Oct are
        // holidays; 8, 9 (4), Saturday 10 is an adjusted workday (5), then
        // 12-16 (10) and 19-23 (15).
        let due = cal.due(date!(2026 - 09 - 28), 15, true);
        assert_eq!(due, date!(2026 - 10 - 23));
        assert!(cal.is_working_day(date!(2026 - 10 - 10)));
        assert!(!cal.is_working_day(date!(2026 - 10 - 01)));
        assert!(!cal.is_working_day(date!(2026 - 11 - 28)));
    }

    #[test]
    fn the_2026_adjusted_sundays_follow_the_state_council_notice() {
        let cal = Calendar::from_catalog(&kiosk_config::Catalog::embedded().holidays);
        // 国办发明电〔2025〕7号: Sunday 4 January and Sunday 20 September are working days;
        // Sunday 27 September falls in the Mid-Autumn break (25-27 September).
        assert!(cal.is_working_day(date!(2026 - 01 - 04)));
        assert!(cal.is_working_day(date!(2026 - 09 - 20)));
        assert!(!cal.is_working_day(date!(2026 - 09 - 27)));
        assert!(!cal.is_working_day(date!(2026 - 09 - 25)));
        // Received Friday 18 September: 20 (Sunday, worked) and 21-24 are five working days.
        assert_eq!(
            cal.due(date!(2026 - 09 - 18), 5, true),
            date!(2026 - 09 - 24)
        );
    }

    #[test]
    fn calendar_days_count_every_day() {
        let cal = Calendar::default();
        assert_eq!(
            cal.due(date!(2026 - 11 - 23), 30, false),
            date!(2026 - 12 - 23)
        );
        // Plain working days: Monday + 5 working days = next Monday.
        assert_eq!(
            cal.due(date!(2026 - 11 - 23), 5, true),
            date!(2026 - 11 - 30)
        );
    }
}
