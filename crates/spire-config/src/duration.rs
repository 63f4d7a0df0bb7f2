//! Go duration strings (`"168h"`, `"1h30m"`, `"1.5h"`, `"90s"`, `"0"`), as Go's
//! `time.ParseDuration` accepts them.
//!
//! Mirrors the grammar of Go's `time.ParseDuration`: an optional sign, then one or more decimal
//! numbers (with an optional fraction) each followed by a unit `ns`, `us`, `µs`, `ms`, `s`, `m` or
//! `h`; the bare string `"0"` is also valid. Negative durations are rejected because no SPIRE
//! setting takes one.

use std::fmt;
use std::time::Duration;

use serde::de;

/// Error returned by [`parse_go_duration`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The text does not follow Go's duration syntax.
    #[error("invalid duration {0:?}, expected a Go duration such as \"90s\", \"5m\" or \"1h30m\"")]
    Syntax(String),
    /// The text names a unit Go does not know.
    #[error("unknown unit {unit:?} in duration {text:?}, expected one of ns, us, ms, s, m, h")]
    UnknownUnit {
        /// The whole duration text.
        text: String,
        /// The unit found.
        unit: String,
    },
    /// The duration is negative.
    #[error("negative duration {0:?} is not allowed")]
    Negative(String),
    /// The duration does not fit.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses a Go duration string into a [`Duration`].
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(text.to_owned());
    let overflow = || DurationError::Overflow(text.to_owned());
    let mut rest = text;
    let mut negative = false;
    if let Some(r) = rest.strip_prefix('-') {
        negative = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(syntax());
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        // Integer part.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after_int) = rest.split_at(int_len);
        let (frac_digits, after_num) = match after_int.strip_prefix('.') {
            Some(r) => {
                let frac_len = r.bytes().take_while(u8::is_ascii_digit).count();
                r.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(syntax());
        }
        let unit_len = after_num
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(after_num.len(), |(i, _)| i);
        let (unit, after_unit) = after_num.split_at(unit_len);
        if unit.is_empty() {
            return Err(syntax());
        }
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => {
                return Err(DurationError::UnknownUnit {
                    text: text.to_owned(),
                    unit: unit.to_owned(),
                });
            }
        };
        let int: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| overflow())?
        };
        let mut nanos = int.checked_mul(unit_nanos).ok_or_else(overflow)?;
        // Fraction: scale digit by digit, truncating below a nanosecond as Go does.
        let mut scale = unit_nanos;
        for digit in frac_digits.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(overflow)?;
        rest = after_unit;
    }
    if negative && total_nanos != 0 {
        return Err(DurationError::Negative(text.to_owned()));
    }
    // Go's limit is i64 nanoseconds (about 292 years).
    if total_nanos > i64::MAX as u128 {
        return Err(overflow());
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| overflow())?;
    let sub = u32::try_from(total_nanos % 1_000_000_000).map_err(|_| overflow())?;
    Ok(Duration::new(secs, sub))
}

/// Formats a duration the way Go's `Duration.String` does (`"1h30m0s"`, `"5m0s"`, `"1.5s"`).
pub fn format_go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let total = d.as_nanos();
    if total < 1_000_000_000 {
        let (value, unit) = if total < 1_000 {
            return format!("{total}ns");
        } else if total < 1_000_000 {
            (total as f64 / 1e3, "µs")
        } else {
            (total as f64 / 1e6, "ms")
        };
        return format!("{value}{unit}");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let frac = d.subsec_nanos();
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac == 0 {
        out.push_str(&format!("{s}s"));
    } else {
        let frac_text = format!("{frac:09}");
        out.push_str(&format!("{s}.{}s", frac_text.trim_end_matches('0')));
    }
    out
}

/// A [`Duration`] that deserializes from a Go duration string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_go_duration(self.0))
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

impl<'de> de::Deserialize<'de> for GoDuration {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = GoDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Go duration string such as \"5m\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                parse_go_duration(v).map(GoDuration).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoDuration, E> {
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl serde::Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_go_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn parses_go_syntax() {
        let cases = [
            ("0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("90s", secs(90)),
            ("5m", secs(300)),
            ("168h", secs(168 * 3600)),
            ("1h30m", secs(5400)),
            ("1.5h", secs(5400)),
            ("1h0m0s", secs(3600)),
            (".5s", Duration::from_millis(500)),
            ("1.s", secs(1)),
            ("300ms", Duration::from_millis(300)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1h1m1s1ms", Duration::new(3661, 1_000_000)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for text in ["", "5", "h", "1.h5", "1x", "1hh", ".s", "-", "abc", "1 h"] {
            assert!(parse_go_duration(text).is_err(), "{text} should fail");
        }
        assert_eq!(
            parse_go_duration("3d"),
            Err(DurationError::UnknownUnit {
                text: "3d".into(),
                unit: "d".into()
            })
        );
        assert_eq!(
            parse_go_duration("-5s"),
            Err(DurationError::Negative("-5s".into()))
        );
        assert!(matches!(
            parse_go_duration("999999999999h"),
            Err(DurationError::Overflow(_))
        ));
        assert_eq!(
            parse_go_duration("5").unwrap_err().to_string(),
            "invalid duration \"5\", expected a Go duration such as \"90s\", \"5m\" or \"1h30m\""
        );
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(secs(5400)), "1h30m0s");
        assert_eq!(format_go_duration(secs(300)), "5m0s");
        assert_eq!(format_go_duration(secs(42)), "42s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
        assert_eq!(format_go_duration(secs(86400)), "24h0m0s");
    }
}
