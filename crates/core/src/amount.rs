//! `totalAmount` as an exact decimal (spec 3.3).
//!
//! Amounts never pass through binary floats: an f64 cannot hold
//! `12345678901234.12345`, and a signature over a rounded amount is worthless.
//! The value is kept as an integer count of 10⁻⁵ units, which holds every
//! allowed amount (at most 14 integer and 5 fraction digits) exactly in a u64.

use std::fmt;

/// Fraction digits customs allows (`N19,5`).
pub const MAX_FRACTION_DIGITS: u32 = 5;
/// Integer digits customs allows.
pub const MAX_INTEGER_DIGITS: u32 = 14;

const SCALE: u64 = 10u64.pow(MAX_FRACTION_DIGITS);

/// A non-negative amount with at most 14 integer and 5 fraction digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount {
    /// The value times 10⁵.
    units: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("`{0}` is not a decimal number")]
    NotANumber(String),
    #[error("amount must not be negative")]
    Negative,
    #[error("amount has more than {MAX_FRACTION_DIGITS} fraction digits")]
    TooManyFractionDigits,
    #[error("amount has more than {MAX_INTEGER_DIGITS} integer digits")]
    TooManyIntegerDigits,
}

impl Amount {
    /// Parses the text of a JSON number (`100`, `100.10`, `1e2`, `-0`) or the
    /// content of a JSON string holding one. Leading zeros and a leading `+`
    /// are refused as JSON refuses them, so that one value has few spellings.
    pub fn parse(text: &str) -> Result<Self, AmountError> {
        let not_a_number = || AmountError::NotANumber(text.to_owned());
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], parse_exponent(&rest[at + 1..]).ok_or_else(not_a_number)?),
            None => (rest, 0),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((int_part, frac_part)) => {
                if frac_part.is_empty() {
                    return Err(not_a_number());
                }
                (int_part, frac_part)
            }
            None => (mantissa, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int_part.is_empty()
            || !all_digits(int_part)
            || !all_digits(frac_part)
            || (int_part.len() > 1 && int_part.starts_with('0'))
        {
            return Err(not_a_number());
        }

        // The value is `digits × 10^(exponent − frac_len)`, with `digits`
        // all significant digits; strip the zeros that carry no information
        // so that the limits apply to the value, not to its spelling.
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let trimmed = digits.trim_end_matches('0');
        let point_shift = exponent
            .checked_sub(i64::try_from(frac_part.len()).map_err(|_| not_a_number())?)
            .ok_or_else(not_a_number)?
            .checked_add(i64::try_from(digits.len() - trimmed.len()).map_err(|_| not_a_number())?)
            .ok_or_else(not_a_number)?;
        if trimmed.is_empty() {
            return Ok(Amount { units: 0 });
        }
        if negative {
            return Err(AmountError::Negative);
        }
        let fraction_digits = (-point_shift).max(0);
        if fraction_digits > i64::from(MAX_FRACTION_DIGITS) {
            return Err(AmountError::TooManyFractionDigits);
        }
        let integer_digits = i64::try_from(trimmed.len()).map_err(|_| not_a_number())? + point_shift;
        if integer_digits > i64::from(MAX_INTEGER_DIGITS) {
            return Err(AmountError::TooManyIntegerDigits);
        }
        // Both limits hold, so the scaled value has at most 19 digits and the
        // shift lies within 0..=19: it fits a u64.
        let significant: u64 = trimmed.parse().map_err(|_| not_a_number())?;
        let shift =
            u32::try_from(point_shift + i64::from(MAX_FRACTION_DIGITS)).map_err(|_| not_a_number())?;
        let units = 10u64
            .checked_pow(shift)
            .and_then(|factor| significant.checked_mul(factor))
            .ok_or(AmountError::TooManyIntegerDigits)?;
        Ok(Amount { units })
    }

    /// An amount from whole units and 10⁻⁵ units, for code that builds records.
    pub fn from_units(units: u64) -> Result<Self, AmountError> {
        if units / SCALE >= 10u64.pow(MAX_INTEGER_DIGITS) {
            return Err(AmountError::TooManyIntegerDigits);
        }
        Ok(Amount { units })
    }

    /// The value times 10⁵.
    pub fn units(self) -> u64 {
        self.units
    }
}

/// Exponents of absurd size are refused rather than saturated: `1e-99999`
/// with enough digits would otherwise look plausible.
fn parse_exponent(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: i64 = digits.parse().ok()?;
    Some(if text.starts_with('-') { -value } else { value })
}

/// The canonical form of spec 3.3: shortest plain decimal, no exponent, no
/// trailing fraction zeros, no point without digits after it.
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.units / SCALE;
        let fraction = self.units % SCALE;
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let fraction = format!("{fraction:05}");
        write!(f, "{whole}.{}", fraction.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        let cases = [
            ("100", "100"),
            ("100.0", "100"),
            ("100.10", "100.1"),
            ("0.5", "0.5"),
            ("0.50", "0.5"),
            ("1e2", "100"),
            ("1E2", "100"),
            ("1e+2", "100"),
            ("1.5e1", "15"),
            ("1500e-2", "15"),
            ("15e-5", "0.00015"),
            ("12345678901234.12345", "12345678901234.12345"),
            ("99999999999999.99999", "99999999999999.99999"),
            ("0", "0"),
            ("0.0", "0"),
            ("-0", "0"),
            ("-0.00", "0"),
            ("0.00001", "0.00001"),
            ("5.0", "5"),
            ("0.1234500000", "0.12345"),
            ("1000000e-6", "1"),
            ("0.000000e99", "0"),
        ];
        for (input, expected) in cases {
            let amount = Amount::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(amount.to_string(), expected, "input {input}");
        }
    }

    #[test]
    fn refused_amounts() {
        use AmountError::*;
        let cases: [(&str, AmountError); 17] = [
            ("-1", Negative),
            ("-0.01", Negative),
            ("0.000001", TooManyFractionDigits),
            ("1.123456", TooManyFractionDigits),
            ("1e-6", TooManyFractionDigits),
            ("123456789012345", TooManyIntegerDigits),
            ("1e14", TooManyIntegerDigits),
            ("100000000000000.5", TooManyIntegerDigits),
            ("", NotANumber(String::new())),
            ("abc", NotANumber("abc".into())),
            ("1.", NotANumber("1.".into())),
            (".5", NotANumber(".5".into())),
            ("01", NotANumber("01".into())),
            ("+1", NotANumber("+1".into())),
            ("1e", NotANumber("1e".into())),
            ("1e9999999", NotANumber("1e9999999".into())),
            (" 1", NotANumber(" 1".into())),
        ];
        for (input, expected) in cases {
            assert_eq!(Amount::parse(input), Err(expected), "input {input:?}");
        }
    }

    #[test]
    fn trailing_zeros_do_not_count_against_the_limits() {
        assert_eq!(Amount::parse("1.1000000000").unwrap().to_string(), "1.1");
        assert_eq!(Amount::parse("10000000000000e0").unwrap().to_string(), "10000000000000");
    }

    #[test]
    fn units_round_trip() {
        let amount = Amount::parse("12.3").unwrap();
        assert_eq!(amount.units(), 1_230_000);
        assert_eq!(Amount::from_units(1_230_000), Ok(amount));
        assert!(Amount::from_units(u64::MAX).is_err());
    }
}
