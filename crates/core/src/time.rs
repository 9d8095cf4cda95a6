//! Times as people in China read them: Asia/Shanghai (UTC+8, no daylight
//! saving), written with the offset so that nothing is ambiguous.

use std::fmt::Write as _;

/// Unix time in milliseconds.
pub type Millis = i64;

/// Asia/Shanghai: UTC+8 all year.
const SHANGHAI_OFFSET_MS: Millis = 8 * 3_600_000;
const DAY_MS: Millis = 86_400_000;

/// `2026-12-01T16:03:07.123+08:00`.
pub fn shanghai_time(at: Millis) -> String {
    let local = at.saturating_add(SHANGHAI_OFFSET_MS);
    let (days, ms) = (local.div_euclid(DAY_MS), local.rem_euclid(DAY_MS));
    let (year, month, day) = civil_from_days(days);
    let mut text = String::with_capacity(29);
    let _ = write!(
        text,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}+08:00",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1_000 % 60,
        ms % 1_000
    );
    text
}

/// A time as `since` and `until` take it: unix milliseconds (digits only);
/// a date `YYYY-MM-DD`, meaning its midnight in Shanghai; or an RFC 3339
/// time `YYYY-MM-DDTHH:MM[:SS[.fff]]` with `Z` or `±HH:MM` (`T` may be a
/// space; a `+` sent unencoded arrives as a space and is taken as `+`).
pub fn parse_time(text: &str) -> Result<Millis, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| "too large for unix milliseconds".to_owned());
    }
    let mut p = Parser { text: text.as_bytes(), at: 0 };
    let year = p.digits(4, "a year of four digits")?;
    p.expect(b'-')?;
    let month = p.digits(2, "a month of two digits")?;
    p.expect(b'-')?;
    let day = p.digits(2, "a day of two digits")?;
    if !(1..=12).contains(&month) {
        return Err(format!("there is no month {month}"));
    }
    if !(1..=days_in_month(year, month)).contains(&day) {
        return Err(format!("there is no day {day} in {year:04}-{month:02}"));
    }
    let date_ms = days_from_civil(year, month, day) * DAY_MS;
    if p.done() {
        return Ok(date_ms - SHANGHAI_OFFSET_MS);
    }
    if !p.next_is(b"Tt ") {
        return Err("a date must be followed by T and a time, or by nothing".to_owned());
    }
    let hour = p.digits(2, "an hour of two digits")?;
    p.expect(b':')?;
    let minute = p.digits(2, "minutes of two digits")?;
    let mut second = 0;
    let mut milli = 0;
    if p.peek() == Some(b':') {
        p.at += 1;
        second = p.digits(2, "seconds of two digits")?;
        if p.peek() == Some(b'.') {
            p.at += 1;
            let start = p.at;
            while p.peek().is_some_and(|b| b.is_ascii_digit()) {
                p.at += 1;
            }
            let fraction = &text[start..p.at];
            if fraction.is_empty() || fraction.len() > 3 {
                return Err("a fraction of a second must have 1 to 3 digits (milliseconds)".to_owned());
            }
            milli = format!("{fraction:0<3}").parse::<i64>().unwrap_or(0);
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!("there is no time {hour:02}:{minute:02}:{second:02}"));
    }
    let offset_ms = match p.peek() {
        None => return Err("it has no offset (add +08:00 for Shanghai time, or Z for UTC)".to_owned()),
        Some(b'Z' | b'z') => {
            p.at += 1;
            0
        }
        Some(sign @ (b'+' | b'-' | b' ')) => {
            p.at += 1;
            let hours = p.digits(2, "an offset's hours of two digits")?;
            p.expect(b':')?;
            let minutes = p.digits(2, "an offset's minutes of two digits")?;
            if hours > 23 || minutes > 59 {
                return Err(format!("there is no offset {hours:02}:{minutes:02}"));
            }
            let offset = (hours * 60 + minutes) * 60_000;
            if sign == b'-' { -offset } else { offset }
        }
        Some(_) => return Err("the time must be followed by Z or an offset such as +08:00".to_owned()),
    };
    if !p.done() {
        return Err("there is more after the offset".to_owned());
    }
    Ok(date_ms + ((hour * 60 + minute) * 60 + second) * 1_000 + milli - offset_ms)
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn done(&self) -> bool {
        self.at == self.text.len()
    }

    fn next_is(&mut self, any_of: &[u8]) -> bool {
        let found = self.peek().is_some_and(|b| any_of.contains(&b));
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.next_is(&[byte]) {
            Ok(())
        } else {
            Err(format!("expected {:?} at character {}", char::from(byte), self.at + 1))
        }
    }

    fn digits(&mut self, count: usize, what: &str) -> Result<i64, String> {
        let digits = self.text.get(self.at..self.at + count).filter(|d| d.iter().all(u8::is_ascii_digit));
        let Some(digits) = digits else {
            return Err(format!("expected {what} at character {}", self.at + 1));
        };
        self.at += count;
        Ok(digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_shanghai_with_the_offset() {
        assert_eq!(shanghai_time(0), "1970-01-01T08:00:00.000+08:00");
        // 2026-12-01T08:03:07.123Z
        assert_eq!(shanghai_time(1_796_112_187_123), "2026-12-01T16:03:07.123+08:00");
        // Past midnight UTC+8 but not UTC: the Shanghai date.
        assert_eq!(shanghai_time(1_796_140_800_000), "2026-12-02T00:00:00.000+08:00");
        assert_eq!(shanghai_time(951_782_400_000), "2000-02-29T08:00:00.000+08:00");
    }

    #[test]
    fn every_accepted_form_names_the_same_moment() {
        let moment = 1_796_112_187_123;
        for text in [
            "1796112187123",
            "2026-12-01T16:03:07.123+08:00",
            "2026-12-01 16:03:07.123+08:00",
            "2026-12-01T16:03:07.123 08:00",
            "2026-12-01T08:03:07.123Z",
            "2026-12-01t08:03:07.123z",
            "2026-12-01T03:03:07.123-05:00",
        ] {
            assert_eq!(parse_time(text), Ok(moment), "{text}");
        }
        assert_eq!(parse_time("2026-12-01T16:03+08:00"), Ok(1_796_112_180_000));
        assert_eq!(parse_time("2026-12-01T16:03:07.1+08:00"), Ok(1_796_112_187_100));
        // A date is its midnight in Shanghai: 16:00 UTC the day before.
        assert_eq!(parse_time("2026-12-01"), Ok(1_796_054_400_000));
        assert_eq!(parse_time("2026-12-01"), parse_time("2026-11-30T16:00:00Z"));
        assert_eq!(parse_time("2024-02-29"), parse_time("2024-02-29T00:00:00+08:00"));
    }

    #[test]
    fn what_is_not_a_time_is_refused_with_a_reason() {
        for (text, reason) in [
            ("yesterday", "a year"),
            ("2026-13-01", "no month 13"),
            ("2026-02-29", "no day 29"),
            ("1900-02-29", "no day 29"),
            ("2026-12-01T08:00:00", "no offset"),
            ("2026-12-01T24:00:00+08:00", "no time 24:00:00"),
            ("2026-12-01T08:00:60Z", "no time"),
            ("2026-12-01T08:00:00.1234Z", "1 to 3 digits"),
            ("2026-12-01T08:00:00.Z", "1 to 3 digits"),
            ("2026-12-01T08:00:00+8", "offset's hours"),
            ("2026-12-01T08:00:00+08:00x", "more after"),
            ("2026-12-01T08:00:00CST", "offset such as"),
            ("2026-12-1", "a day"),
            ("2026-12-01x", "followed by T"),
            ("99999999999999999999", "too large"),
            ("-5", "a year"),
            ("１２３", "a year"),
        ] {
            let refused = parse_time(text).expect_err(text);
            assert!(refused.contains(reason), "{text}: {refused}");
        }
    }

    #[test]
    fn dates_round_trip_through_day_counts() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=days_in_month(y, m)).contains(&d));
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
