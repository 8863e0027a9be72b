//! Durations as people type them: `30s`, `15m`, `24h`, `30d`, and zero as `0` or `0s`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// The most digits a duration may have: 999999d is under 2,740 years, so timestamps never
/// overflow, and the rule fits in a pattern an OpenAPI client can check before sending.
const MAX_DIGITS: usize = 6;

/// The grammar [`HumanDuration`] reads, as a JSON Schema pattern: zero (`0`, `0s`, `0m`,
/// `0h`, `0d`), or a whole number without leading zeros and a unit.
pub const DURATION_PATTERN: &str = "^(0[smhd]?|[1-9][0-9]{0,5}[smhd])$";
/// The same without `0`: a duration longer than nothing.
pub const POSITIVE_DURATION_PATTERN: &str = "^[1-9][0-9]{0,5}[smhd]$";
/// The longest duration as text: the digits and the unit.
pub const DURATION_MAX: usize = MAX_DIGITS + 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a duration: use a whole number of up to 6 digits (no leading zeros) followed by s, m, h or d (for example 0s, 30s, 15m, 24h, 30d)")]
pub struct InvalidDuration(String);

impl FromStr for HumanDuration {
    type Err = InvalidDuration;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidDuration(s.chars().take(40).collect());
        if s == "0" {
            return Ok(HumanDuration(Duration::ZERO));
        }
        let (digits, per) = match s.as_bytes().split_last() {
            Some((b's', d)) => (d, 1),
            Some((b'm', d)) => (d, 60),
            Some((b'h', d)) => (d, 3_600),
            Some((b'd', d)) => (d, 86_400),
            _ => return Err(invalid()),
        };
        let well_formed = (1..=MAX_DIGITS).contains(&digits.len())
            && (digits[0] != b'0' || digits.len() == 1)
            && digits.iter().all(u8::is_ascii_digit);
        if !well_formed {
            return Err(invalid());
        }
        let n: u64 = digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'));
        Ok(HumanDuration(Duration::from_secs(n * per)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        match s {
            0 => f.write_str("0"),
            // A day reads as 24h, as people (and SPEC) write it; longer spans in days.
            s if s % 86_400 == 0 && s > 86_400 => write!(f, "{}d", s / 86_400),
            s if s % 3_600 == 0 => write!(f, "{}h", s / 3_600),
            s if s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

/// A per-minute request limit as typed on the command line: `600/min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerMinute(pub u32);

pub const MAX_RATE_LIMIT: u32 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a rate limit: use N/min with N from 1 to 1000000000 (for example 600/min)")]
pub struct InvalidRateLimit(String);

impl FromStr for PerMinute {
    type Err = InvalidRateLimit;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidRateLimit(s.chars().take(40).collect());
        let n = s.trim().strip_suffix("/min").ok_or_else(invalid)?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let n: u32 = n.parse().map_err(|_| invalid())?;
        if !(1..=MAX_RATE_LIMIT).contains(&n) {
            return Err(invalid());
        }
        Ok(PerMinute(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_unit_and_zero() {
        let secs = |s: &str| s.parse::<HumanDuration>().unwrap().0.as_secs();
        assert_eq!(secs("2s"), 2);
        assert_eq!(secs("15m"), 900);
        assert_eq!(secs("24h"), 86_400);
        assert_eq!(secs("30d"), 2_592_000);
        assert_eq!(secs("999999d"), 999_999 * 86_400);
        for zero in ["0", "0s", "0m", "0h", "0d"] {
            assert_eq!(secs(zero), 0, "{zero}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "", "s", "10", "1.5h", "-1d", "10y", "1 d", "1000000s", "00s", "05m", " 30d", "30d ",
            "é",
        ] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_limits_read_n_per_minute_within_bounds() {
        assert_eq!("600/min".parse::<PerMinute>(), Ok(PerMinute(600)));
        assert_eq!(
            "1000000000/min".parse::<PerMinute>(),
            Ok(PerMinute(1_000_000_000))
        );
        for bad in ["0/min", "1000000001/min", "600", "600/s", "/min", "-1/min"] {
            assert!(bad.parse::<PerMinute>().is_err(), "{bad}");
        }
    }
}
