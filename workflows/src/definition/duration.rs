//! Durations of the definition language: `"72h"`, `"30m"`, `"90s"`, `"1d 12h"`.
//!
//! A duration is one or more `<whole number><unit>` parts, units `d`, `h`, `m`, `s`, given in
//! that order and each at most once; spaces between the parts are optional. The total must lie
//! between [`MIN_DURATION`] and [`MAX_DURATION`] inclusive.

use std::time::Duration;

use super::quoted;

/// The shortest duration a `DEADLINE_CHECK` accepts: one second.
pub const MIN_DURATION: Duration = Duration::from_secs(1);
/// The longest duration a `DEADLINE_CHECK` accepts: 366 days.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

const UNITS: [(u8, u64); 4] = [(b'd', 86_400), (b'h', 3_600), (b'm', 60), (b's', 1)];

/// Parses a duration such as `"72h"` or `"1d 12h"`.
///
/// The error is a plain sentence that quotes the text and says how to write a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let shape = || {
        format!(
            "{} is not a duration: write a whole number followed by a unit (d for days, h for \
             hours, m for minutes, s for seconds), for example \"72h\", \"30m\", \"90s\" or \"1d 12h\"",
            quoted(text)
        )
    };
    let too_long = || {
        format!(
            "the duration {} is too long: it can be at most 366 days",
            quoted(text)
        )
    };
    let bytes = text.as_bytes();
    let mut at = 0;
    let mut total: u64 = 0;
    let mut next_unit = 0; // index into UNITS of the smallest unit still allowed
    let mut parts = 0;
    loop {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if at == bytes.len() {
            break;
        }
        let start = at;
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            at += 1;
        }
        if start == at || at == bytes.len() {
            return Err(shape());
        }
        let Some(unit) = UNITS.iter().position(|(u, _)| *u == bytes[at]) else {
            return Err(shape());
        };
        if unit < next_unit {
            return Err(format!(
                "{} is not a duration: give the units in the order d, h, m, s, each at most once, \
                 for example \"1d 12h\"",
                quoted(text)
            ));
        }
        // Digits only, so the slice is on character boundaries and parse fails only on overflow.
        let number: u64 = text[start..at].parse().map_err(|_| too_long())?;
        total = number
            .checked_mul(UNITS[unit].1)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(too_long)?;
        next_unit = unit + 1;
        parts += 1;
        at += 1;
    }
    if parts == 0 {
        return Err(format!(
            "the duration is empty: give one such as \"72h\", \"30m\" or \"1d 12h\"{}",
            if text.is_empty() {
                String::new()
            } else {
                format!(" (got {})", quoted(text))
            }
        ));
    }
    let duration = Duration::from_secs(total);
    if duration < MIN_DURATION {
        return Err(format!(
            "the duration {} is too short: it must be at least 1 second",
            quoted(text)
        ));
    }
    if duration > MAX_DURATION {
        return Err(too_long());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepted_durations() {
        let table: &[(&str, u64)] = &[
            ("72h", 72 * 3600),
            ("30m", 30 * 60),
            ("90s", 90),
            ("1d 12h", 36 * 3600),
            ("1d12h", 36 * 3600),
            ("1d  12h 30m 15s", 86_400 + 12 * 3600 + 30 * 60 + 15),
            ("1h30m", 5400),
            ("1s", 1),
            ("366d", 366 * 86_400),
            ("365d 24h", 366 * 86_400),
            ("0d 1s", 1),
            ("007m", 7 * 60),
            (" 5m ", 300),
            ("8784h", 366 * 86_400),
        ];
        for (text, secs) in table {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(*secs)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn rejected_durations() {
        let table: &[(&str, &str)] = &[
            ("", "is empty"),
            ("   ", "is empty"),
            ("72", "is not a duration"),
            ("h", "is not a duration"),
            ("72x", "is not a duration"),
            ("72H", "is not a duration"),
            ("1.5h", "is not a duration"),
            ("-5m", "is not a duration"),
            ("+5m", "is not a duration"),
            ("72 h", "is not a duration"),
            ("1w", "is not a duration"),
            ("5ms", "is not a duration"),
            ("12h 1d", "in the order d, h, m, s"),
            ("1h 1h", "in the order d, h, m, s"),
            ("0s", "too short"),
            ("0d 0h", "too short"),
            ("367d", "too long"),
            ("366d 1s", "too long"),
            ("8785h", "too long"),
            ("99999999999999999999999d", "too long"),
            ("18446744073709551615s", "too long"),
            ("213503982334601d", "too long"),
            ("٣h", "is not a duration"),
        ];
        for (text, fragment) in table {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(fragment), "{text:?}: {err}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(text in ".{0,40}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn components_add_up(d in 0u64..=366, h in 0u64..100, m in 0u64..100, s in 0u64..100) {
            let text = format!("{d}d {h}h{m}m {s}s");
            let secs = d * 86_400 + h * 3600 + m * 60 + s;
            let parsed = parse_duration(&text);
            if (1..=366 * 86_400).contains(&secs) {
                prop_assert_eq!(parsed, Ok(Duration::from_secs(secs)));
            } else {
                prop_assert!(parsed.is_err());
            }
        }
    }
}
