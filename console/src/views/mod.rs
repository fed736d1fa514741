//! Pieces several pages draw: times, status badges, the progress bar. Pure functions of the
//! API's JSON, so they are tested without a server.

pub mod chart;
pub mod graph;
pub mod progress;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// An API timestamp as people read it ("27 Nov 2026, 16:40 UTC"); "—" when absent.
pub fn when(value: &Value) -> String {
    value
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|t| {
            t.with_timezone(&Utc)
                .format("%-d %b %Y, %H:%M UTC")
                .to_string()
        })
        .unwrap_or_else(|| "—".to_owned())
}

/// A JSON string field, or "" (for optional fields shown as blanks).
pub fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_read_as_people_write_them() {
        assert_eq!(
            when(&json!("2026-11-27T16:40:05.123Z")),
            "27 Nov 2026, 16:40 UTC"
        );
        assert_eq!(
            when(&json!("2026-11-27T17:40:05+01:00")),
            "27 Nov 2026, 16:40 UTC"
        );
        assert_eq!(when(&Value::Null), "—");
    }
}
