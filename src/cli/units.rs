//! Human units for durations (`2s`, `500ms`, `1m30s`) and sizes (`8MiB`, `64KiB`).
//!
//! Every duration and size flag (and so every `rsmld.*` key, which goes through the same
//! parsers) takes these forms; a plain number keeps its old meaning — seconds (or the
//! flag's own unit) for a duration, bytes for a size — so existing files keep working.
//!
//! Durations: one or more `<number><unit>` parts, summed (`1m30s`, `1h 30m`); the number
//! may have a fraction (`1.5s`); units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, `d` (and
//! `sec`, `min`, `hour`, `day`… spelled out), in any case: with no months or years to
//! confuse it with, `1M` is a minute. Negative, NaN and infinite values are refused.
//!
//! Sizes: one `<number><unit>` part; IEC units are powers of 1024 (`KiB`, `MiB`, `GiB`,
//! `TiB`), SI units powers of 1000 (`KB`, `MB`, `GB`, `TB`), each in any case, `B` is
//! bytes. A bare `K`/`M`/`G`/`T` means 1000 in some tools and 1024 in others (Java's
//! `-Xmx8m`), so it is refused with both spellings as a hint rather than guessed. A
//! fraction is allowed when the result is whole bytes (`1.5KiB` is 1536).
//!
//! Blanks between number and unit (`8 MiB`) are accepted: properties values may contain
//! them. Written by hand rather than with `humantime` (re-checked with 2.4, which now takes
//! fractions such as `1.5s`): it reads `1M` as a month (30.44 days) where this parser,
//! case-insensitive, reads a minute; it refuses a plain number, which here must keep its
//! old meaning, so a wrapper would parse first anyway; and its formatting (`1m`) is not the
//! `60s` the help text and range errors show. Sizes would need a second crate (whose bare
//! `8M` means 1000² or 1024² by its own choice, where rsmld refuses it with a hint) for some
//! 60 lines.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Duration units: names (lowercase) and their length in nanoseconds.
const DURATION_UNITS: &[(&[&str], u128)] = &[
    (&["ns", "nsec", "nanosecond", "nanoseconds"], 1),
    (&["us", "µs", "usec", "microsecond", "microseconds"], 1_000),
    (&["ms", "msec", "millisecond", "milliseconds"], 1_000_000),
    (&["s", "sec", "secs", "second", "seconds"], NANOS_PER_SEC),
    (
        &["m", "min", "mins", "minute", "minutes"],
        60 * NANOS_PER_SEC,
    ),
    (&["h", "hr", "hrs", "hour", "hours"], 3_600 * NANOS_PER_SEC),
    (&["d", "day", "days"], 86_400 * NANOS_PER_SEC),
];

/// Size units (lowercase) and their multiplier.
const SIZE_UNITS: &[(&str, u128)] = &[
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// What a duration value looks like, for messages.
const DURATION_FORMS: &str = "a plain number or a number with a unit: 500ms, 2s, 1m30s, 1h";
/// What a size value looks like, for messages.
const SIZE_FORMS: &str =
    "bytes or a number with a unit: 64KiB, 8MiB, 1GiB (KB, MB, GB: powers of 1000)";

/// A value that is not a duration or a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not of the form, with what to write instead.
    #[error("{0}")]
    Invalid(String),
    /// Well-formed but larger than any setting can hold (the value as written).
    #[error("{0:?} is too large")]
    TooLarge(String),
}

fn invalid(message: String) -> UnitError {
    UnitError::Invalid(message)
}

/// Parses a duration; a plain number (any `f64` syntax, as before units) counts in
/// `plain_unit` (one second for most flags).
pub fn parse_duration(s: &str, plain_unit: Duration) -> Result<Duration, UnitError> {
    let too_large = || UnitError::TooLarge(s.to_owned());
    let t = s.trim();
    if let Ok(v) = t.parse::<f64>() {
        return plain_duration(s, v, plain_unit);
    }
    if t.is_empty() {
        return Err(invalid(format!(
            "{s:?} is not a duration: give {DURATION_FORMS}"
        )));
    }
    if t.starts_with('-') {
        return Err(invalid(format!("{s:?} is negative")));
    }
    let mut rest = t;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (number, after) = split_number(rest);
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if !number.contains(|c: char| c.is_ascii_digit()) {
            return Err(invalid(format!(
                "{s:?} is not a duration: give {DURATION_FORMS}"
            )));
        }
        if unit.is_empty() {
            return Err(invalid(format!(
                "{s:?}: {number:?} has no unit; a plain number only stands alone ({DURATION_FORMS})"
            )));
        }
        let lower = unit.to_lowercase();
        let Some(&(_, nanos)) = DURATION_UNITS
            .iter()
            .find(|(names, _)| names.contains(&lower.as_str()))
        else {
            return Err(invalid(format!(
                "{s:?} has an unknown unit {unit:?}: use ns, us, ms, s, m, h or d"
            )));
        };
        let part = decimal_times(number, nanos).ok_or_else(too_large)?;
        total = total.checked_add(part).ok_or_else(too_large)?;
        rest = next.trim_start();
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| too_large())?;
    // The remainder is below 1e9 and fits.
    Ok(Duration::new(secs, (total % NANOS_PER_SEC) as u32))
}

/// A plain number of `plain_unit`s: NaN, infinities and negative values refused.
fn plain_duration(s: &str, v: f64, plain_unit: Duration) -> Result<Duration, UnitError> {
    if !v.is_finite() {
        return Err(invalid(format!("{s:?} is not a finite duration")));
    }
    if v < 0.0 {
        return Err(invalid(format!("{s:?} is negative")));
    }
    Duration::try_from_secs_f64(v * plain_unit.as_secs_f64())
        .map_err(|_| UnitError::TooLarge(s.to_owned()))
}

/// Splits `digits[.digits]` off the front of `s`.
fn split_number(s: &str) -> (&str, &str) {
    let mut seen_dot = false;
    let end = s
        .char_indices()
        .find(|&(_, c)| {
            if c == '.' && !seen_dot {
                seen_dot = true;
                false
            } else {
                !c.is_ascii_digit()
            }
        })
        .map_or(s.len(), |(i, _)| i);
    s.split_at(end)
}

/// `number` (`digits[.digits]`, at least one digit) times `unit`, exactly, rounded down;
/// `None` on overflow or when `number` has no digit.
fn decimal_times(number: &str, unit: u128) -> Option<u128> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let mut mantissa: u128 = 0;
    let mut scale: u128 = 1;
    for c in whole.chars().chain(frac.chars()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(u128::from(c.to_digit(10)?))?;
    }
    for _ in frac.chars() {
        scale = scale.checked_mul(10)?;
    }
    Some(mantissa.checked_mul(unit)? / scale)
}

/// Parses a size in bytes: a plain whole number is bytes.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(invalid(format!("{s:?} is negative")));
    }
    let (number, after) = split_number(t);
    let unit = after.trim_start();
    if !number.contains(|c: char| c.is_ascii_digit()) {
        return Err(invalid(format!("{s:?} is not a size: give {SIZE_FORMS}")));
    }
    let lower = unit.to_lowercase();
    let multiplier = if unit.is_empty() {
        1
    } else if let Some(&(_, m)) = SIZE_UNITS.iter().find(|(name, _)| *name == lower) {
        m
    } else if ["k", "m", "g", "t"].contains(&lower.as_str()) {
        let up = lower.to_uppercase();
        return Err(invalid(format!(
            "{s:?} is ambiguous: write {number}{up}iB (powers of 1024) or {number}{up}B (powers of 1000)"
        )));
    } else {
        return Err(invalid(format!(
            "{s:?} has an unknown unit {unit:?}: use B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000)"
        )));
    };
    let too_large = || UnitError::TooLarge(s.to_owned());
    let exact = decimal_times(number, multiplier).ok_or_else(too_large)?;
    // Whole bytes only: the exact product must not have been rounded down.
    let frac_digits = number.split_once('.').map_or(0, |(_, f)| f.len());
    let scale = 10u128
        .checked_pow(frac_digits as u32)
        .ok_or_else(too_large)?;
    if exact.checked_mul(scale) != decimal_times(&number.replace('.', ""), multiplier) {
        return Err(invalid(format!("{s:?} is not a whole number of bytes")));
    }
    u64::try_from(exact).map_err(|_| too_large())
}

/// `d` in the largest unit that holds it exactly: `1d`, `1h`, `60s`, `10ms`, `0s`.
/// (Minutes are never used: `60s` reads better than `1m` in bounds and defaults.)
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (unit, len) in [
        ("d", 86_400 * NANOS_PER_SEC),
        ("h", 3_600 * NANOS_PER_SEC),
        ("s", NANOS_PER_SEC),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if nanos > 0 && nanos % len == 0 {
            return format!("{}{unit}", nanos / len);
        }
    }
    if nanos == 0 {
        "0s".to_owned()
    } else {
        format!("{nanos}ns")
    }
}

/// `n` bytes in the largest IEC unit that holds it exactly: `8MiB`, `1KiB`, `64B`.
pub fn format_size(n: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n > 0 && n % (1 << shift) == 0 {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

// ------------------------------------------------------- bounded value parsers
//
// The flags' value parsers are these with the flag's bounds (see `config`, and each
// handler's flag group in `registry`); `--properties` and `rsmld check` run the same ones.

/// Parses a duration (`2s`, `500ms`, `1m30s`; a plain number is seconds, fractions allowed:
/// `0.25`, `60`) within `min..=max` seconds; `0` is also accepted when `zero_ok` (it means
/// "off" or "at once" for those settings).
///
/// Rejects what `f64` parsing would let through but no setting can mean: NaN, infinities,
/// negative and absurdly large values (a `Duration` that overflows `Instant` arithmetic
/// later would panic in the middle of a lease).
///
/// `min` and `max` are the flag's constant bounds: finite and not negative
/// (`Duration::from_secs_f64` panics otherwise).
pub fn parse_seconds_in(s: &str, min: f64, max: f64, zero_ok: bool) -> Result<Duration, String> {
    parse_duration_in(
        s,
        Duration::from_secs_f64(min),
        Duration::from_secs_f64(max),
        zero_ok,
        Duration::from_secs(1),
    )
}

/// Parses a duration within `min..=max` (or zero when `zero_ok`); a plain number counts in
/// `plain_unit`. The error names the range in human units (`must be 0 or 10ms..=1d`).
pub fn parse_duration_in(
    s: &str,
    min: Duration,
    max: Duration,
    zero_ok: bool,
    plain_unit: Duration,
) -> Result<Duration, String> {
    let range = || {
        let zero = if zero_ok && !min.is_zero() {
            "0 or "
        } else {
            ""
        };
        let (min, max) = (format_duration(min), format_duration(max));
        format!("must be {zero}{min}..={max}")
    };
    let v = match parse_duration(s, plain_unit) {
        Ok(v) => v,
        Err(e @ UnitError::TooLarge(_)) => return Err(format!("{e}: {}", range())),
        Err(e) => return Err(e.to_string()),
    };
    if (min..=max).contains(&v) || (zero_ok && v.is_zero()) {
        return Ok(v);
    }
    Err(format!(
        "{} is out of range: {}",
        format_duration(v),
        range()
    ))
}

/// Parses a size (`8MiB`, `64KiB`, `1GB`; a plain number is bytes) within `min..=max`;
/// `0` is also accepted when `zero_ok`. The error names the range in IEC units.
pub fn parse_bytes_in(s: &str, min: u64, max: u64, zero_ok: bool) -> Result<u64, String> {
    let range = || {
        let zero = if zero_ok && min > 0 { "0 or " } else { "" };
        let (min, max) = (format_size(min), format_size(max));
        format!("must be {zero}{min}..={max}")
    };
    let v = match parse_size(s) {
        Ok(v) => v,
        Err(e @ UnitError::TooLarge(_)) => return Err(format!("{e}: {}", range())),
        Err(e) => return Err(e.to_string()),
    };
    if (min..=max).contains(&v) || (zero_ok && v == 0) {
        return Ok(v);
    }
    Err(format!("{} is out of range: {}", format_size(v), range()))
}

/// [`parse_bytes_in`] as a `usize`.
pub fn bytes_usize(s: &str, min: u64, max: u64, zero_ok: bool) -> Result<usize, String> {
    let v = parse_bytes_in(s, min, max, zero_ok)?;
    usize::try_from(v).map_err(|_| format!("{v} does not fit this machine's address size"))
}

/// Parses a whole number within `min..=max`; `0` is also accepted when `zero_ok`.
pub fn parse_count_in(s: &str, min: u64, max: u64, zero_ok: bool) -> Result<u64, String> {
    let v: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if (min..=max).contains(&v) || (zero_ok && v == 0) {
        return Ok(v);
    }
    let zero = if zero_ok && min > 0 { "0 or " } else { "" };
    Err(format!("{v} is out of range: must be {zero}{min}..={max}"))
}

/// [`parse_count_in`] as a `usize`.
pub fn count_usize(s: &str, min: u64, max: u64, zero_ok: bool) -> Result<usize, String> {
    let v = parse_count_in(s, min, max, zero_ok)?;
    usize::try_from(v).map_err(|_| format!("{v} does not fit this machine's address size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn d(s: &str) -> Result<Duration, String> {
        parse_duration(s, SEC).map_err(|e| e.to_string())
    }

    fn size(s: &str) -> Result<u64, String> {
        parse_size(s).map_err(|e| e.to_string())
    }

    #[test]
    fn plain_numbers_keep_their_unit() {
        assert_eq!(d("0"), Ok(Duration::ZERO));
        assert_eq!(d("60"), Ok(60 * SEC));
        assert_eq!(d("0.5"), Ok(500 * MS));
        assert_eq!(d(" 2 "), Ok(2 * SEC));
        assert_eq!(d("1e3"), Ok(1000 * SEC));
        assert_eq!(parse_duration("250", MS), Ok(250 * MS));
        assert_eq!(parse_duration("2s", MS), Ok(2 * SEC));
    }

    #[test]
    fn units_fractions_compounds_and_case() {
        assert_eq!(d("0s"), Ok(Duration::ZERO));
        assert_eq!(d("2s"), Ok(2 * SEC));
        assert_eq!(d("500ms"), Ok(500 * MS));
        assert_eq!(d("1.5s"), Ok(1500 * MS));
        assert_eq!(d(".5s"), Ok(500 * MS));
        assert_eq!(d("1h"), Ok(3600 * SEC));
        assert_eq!(d("1m30s"), Ok(90 * SEC));
        assert_eq!(d("1h 30m"), Ok(5400 * SEC));
        assert_eq!(d("2 s"), Ok(2 * SEC));
        assert_eq!(d("2S"), Ok(2 * SEC));
        assert_eq!(d("500MS"), Ok(500 * MS));
        assert_eq!(d("1M"), Ok(60 * SEC));
        assert_eq!(d("1d"), Ok(86_400 * SEC));
        assert_eq!(d("7 days"), Ok(7 * 86_400 * SEC));
        assert_eq!(d("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(d("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(d("1ns"), Ok(Duration::from_nanos(1)));
        assert_eq!(d("0.1s"), Ok(100 * MS));
        // Below a nanosecond rounds down.
        assert_eq!(d("0.5ns"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_why() {
        assert_eq!(d("-1s"), Err("\"-1s\" is negative".into()));
        assert_eq!(d("-1"), Err("\"-1\" is negative".into()));
        assert_eq!(d("NaN"), Err("\"NaN\" is not a finite duration".into()));
        assert_eq!(d("inf"), Err("\"inf\" is not a finite duration".into()));
        assert_eq!(d("1e300"), Err("\"1e300\" is too large".into()));
        assert_eq!(
            d("99999999999999999999999999999999999999999d"),
            Err("\"99999999999999999999999999999999999999999d\" is too large".into())
        );
        assert_eq!(
            d("999999999999999999999d"),
            Err("\"999999999999999999999d\" is too large".into())
        );
        assert_eq!(
            d("5x"),
            Err("\"5x\" has an unknown unit \"x\": use ns, us, ms, s, m, h or d".into())
        );
        assert_eq!(
            d("1m30"),
            Err("\"1m30\": \"30\" has no unit; a plain number only stands alone (a plain number or a number with a unit: 500ms, 2s, 1m30s, 1h)".into())
        );
        for bad in ["", "s", "abc", "1..5s", ".s", "1s,2s"] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            d("abc"),
            Err("\"abc\" is not a duration: give a plain number or a number with a unit: 500ms, 2s, 1m30s, 1h".into())
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(size("0"), Ok(0));
        assert_eq!(size("8388608"), Ok(8 << 20));
        assert_eq!(size("8MiB"), Ok(8 << 20));
        assert_eq!(size("8 MiB"), Ok(8 << 20));
        assert_eq!(size("8mib"), Ok(8 << 20));
        assert_eq!(size("8MIB"), Ok(8 << 20));
        assert_eq!(size("64KiB"), Ok(64 << 10));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        assert_eq!(size("1TiB"), Ok(1 << 40));
        assert_eq!(size("8MB"), Ok(8_000_000));
        assert_eq!(size("8mb"), Ok(8_000_000));
        assert_eq!(size("1kB"), Ok(1000));
        assert_eq!(size("512B"), Ok(512));
        assert_eq!(size("0MiB"), Ok(0));
        assert_eq!(size("1.5KiB"), Ok(1536));
        assert_eq!(size("0.5GiB"), Ok(512 << 20));
        assert_eq!(size("1.5MB"), Ok(1_500_000));
        assert_eq!(size("16777215TiB"), Ok(16_777_215 << 40));
    }

    #[test]
    fn bad_sizes_say_why() {
        assert_eq!(
            size("8M"),
            Err("\"8M\" is ambiguous: write 8MiB (powers of 1024) or 8MB (powers of 1000)".into())
        );
        assert_eq!(
            size("2g"),
            Err("\"2g\" is ambiguous: write 2GiB (powers of 1024) or 2GB (powers of 1000)".into())
        );
        assert_eq!(size("-1MiB"), Err("\"-1MiB\" is negative".into()));
        assert_eq!(
            size("1.3B"),
            Err("\"1.3B\" is not a whole number of bytes".into())
        );
        assert_eq!(
            size("0.1KiB"),
            Err("\"0.1KiB\" is not a whole number of bytes".into())
        );
        assert_eq!(
            size("16EiB").map_err(|e| e.contains("unknown unit")),
            Err(true)
        );
        assert_eq!(
            size("18446744073709551616"),
            Err("\"18446744073709551616\" is too large".into())
        );
        assert_eq!(
            size("16777216TiB"),
            Err("\"16777216TiB\" is too large".into())
        );
        assert_eq!(
            size("999999999999999999999999999999999999999999TiB"),
            Err("\"999999999999999999999999999999999999999999TiB\" is too large".into())
        );
        for bad in ["", "MiB", "NaN", "inf", "1e3", "8 Mi B", "8MiBs", "."] {
            assert!(size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formats_in_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(60 * SEC), "60s");
        assert_eq!(format_duration(3600 * SEC), "1h");
        assert_eq!(format_duration(86_400 * SEC), "1d");
        assert_eq!(format_duration(10 * MS), "10ms");
        assert_eq!(format_duration(1500 * MS), "1500ms");
        assert_eq!(format_duration(Duration::from_nanos(7)), "7ns");
        assert_eq!(format_size(8 << 20), "8MiB");
        assert_eq!(format_size(16 << 30), "16GiB");
        assert_eq!(format_size(1 << 40), "1TiB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(0), "0B");
        for n in [0, 1, 1536, 8 << 20, 1 << 40, u64::MAX] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
        for d in [Duration::ZERO, 60 * SEC, 10 * MS, Duration::from_nanos(7)] {
            assert_eq!(parse_duration(&format_duration(d), SEC), Ok(d));
        }
    }
}
