//! Calendar arithmetic without a date crate: the UTC date of a day count,
//! for log lines and the control socket's RFC 3339 times. Pure.

/// The proleptic Gregorian date `(year, month 1..=12, day 1..=31)` of a day
/// count since 1970-01-01 (negative before), after Howard Hinnant's
/// `civil_from_days`: eras of 400 years (146097 days) starting on March 1,
/// so the leap day is the last day of a shifted year.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days.saturating_add(719_468); // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, from March 1
    let mp = (5 * doy + 2) / 153; // 0..=11, March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are small by construction (1..=31, 1..=12).
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_leap(y: i64) -> bool {
        (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
    }

    fn month_len(y: i64, m: u32) -> u32 {
        match m {
            2 if is_leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// Days since the epoch, counted the slow and obvious way.
    fn days_from_civil_naive(year: i64, month: u32, day: u32) -> i64 {
        let year_len = |y: i64| if is_leap(y) { 366 } else { 365 };
        let mut days: i64 =
            if year >= 1970 { (1970..year).map(year_len).sum() } else { -(year..1970).map(year_len).sum::<i64>() };
        days += (1..month).map(|m| i64::from(month_len(year, m))).sum::<i64>();
        days + i64::from(day) - 1
    }

    #[test]
    fn civil_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(10_956), (1999, 12, 31));
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
        // 2000 is a leap year (divisible by 400).
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        // 2100 is not (divisible by 100, not by 400): Feb 28 then Mar 1.
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_778), (2026, 11, 21));
        // The 32-bit time_t rollover.
        assert_eq!(civil_from_days(24_855), (2038, 1, 19));
    }

    #[test]
    fn civil_matches_naive_count_every_day_1900_to_2404() {
        let mut expected = days_from_civil_naive(1900, 1, 1);
        assert_eq!(expected, -25_567);
        for year in 1900..2404 {
            for month in 1..=12u32 {
                for day in 1..=month_len(year, month) {
                    assert_eq!(days_from_civil_naive(year, month, day), expected);
                    assert_eq!(civil_from_days(expected), (year, month, day), "day {expected}");
                    expected += 1;
                }
            }
        }
        assert_eq!(civil_from_days(expected), (2404, 1, 1));
    }

    #[test]
    fn civil_extremes_do_not_panic() {
        let _ = civil_from_days(i64::MAX);
        let _ = civil_from_days(i64::MIN);
    }
}
