//! Request input: JSON bodies with pointed errors, bounded text fields, and cursor paging.
//!
//! Every creating or updating route reads its body through [`Body`]: unknown fields, wrong
//! types, missing fields and over-long strings all become a 422 problem naming the field's JSON
//! pointer; malformed JSON is a 400 and an oversize body a 413. Nothing is written before the
//! body has parsed, so bad input never leaves a partial write.

use std::fmt;
use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use pidgr_workflows::template::{
    MAX_VARIABLE_NAME_LEN, MAX_VARIABLE_VALUE_CHARS, MAX_VARIABLES, is_variable_name,
};
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ApiError;

/// The largest request body any route accepts.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A JSON request body of type `T`, rejected with a problem document when it does not fit.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection {
                    BytesRejection::FailedToBufferBody(_) => {
                        ApiError::PayloadTooLarge(MAX_BODY_BYTES)
                    }
                    other => ApiError::BadRequest(other.body_text()),
                })?;
        parse_json(&bytes).map(Body)
    }
}

/// Parses `bytes` as `T`; an empty body counts as `{}` (so "missing field" names the field).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    // Syntax first: otherwise a truncated body could be reported as, say, an unknown field.
    serde_json::from_slice::<de::IgnoredAny>(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let inner = error.inner();
        let mut pointer = pointer_of(error.path());
        let message = inner.to_string();
        // serde reports a missing field at its parent; point at the field itself.
        if let Some(rest) = message.strip_prefix("missing field `")
            && let Some((field, _)) = rest.split_once('`')
        {
            pointer = format!("{pointer}/{field}");
        }
        ApiError::invalid(pointer, strip_position(&message))
    })?;
    Ok(value)
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(format!("/{index}")),
            Segment::Map { key } => Some(format!("/{}", key.replace('~', "~0").replace('/', "~1"))),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// serde_json appends " at line 1 column 42"; the pointer already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// A required, trimmed, non-empty string of at most `MAX` characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Text<const MAX: usize>(pub String);

impl<const MAX: usize> Text<MAX> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Text<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<const MAX: usize>(PhantomData<()>);
        impl<const MAX: usize> de::Visitor<'_> for Visitor<MAX> {
            type Value = Text<MAX>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a string of 1 to {MAX} characters")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Text<MAX>, E> {
                let value = value.trim();
                if value.is_empty() {
                    Err(E::custom("must not be empty"))
                } else if value.chars().count() > MAX {
                    Err(E::custom(format!("must be at most {MAX} characters long")))
                } else {
                    Ok(Text(value.to_owned()))
                }
            }
        }
        deserializer.deserialize_str(Visitor::<MAX>(PhantomData))
    }
}

/// Names of things (members, teams, templates, roles, keys...).
pub type Name = Text<200>;
/// Markdown bodies.
pub type LongText = Text<65_536>;

/// String-to-string variables or attributes: at most 100 entries, keys of 1 to 64 characters
/// usable as `{{placeholders}}`, values of at most 2,000 characters (the limits of
/// `pidgr_workflows::template`, which a definition's step variables share).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Variables(pub std::collections::BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Variables {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, String>::deserialize(deserializer)?;
        if map.len() > MAX_VARIABLES {
            return Err(de::Error::custom(format!(
                "at most {MAX_VARIABLES} variables are allowed"
            )));
        }
        for (key, value) in &map {
            if !is_variable_name(key) {
                return Err(de::Error::custom(format!(
                    "the name {key:?} must be 1 to {MAX_VARIABLE_NAME_LEN} letters, digits, '_' or '.'"
                )));
            }
            if value.chars().count() > MAX_VARIABLE_VALUE_CHARS {
                return Err(de::Error::custom(format!(
                    "the value of {key:?} must be at most {MAX_VARIABLE_VALUE_CHARS} characters long"
                )));
            }
        }
        Ok(Variables(map))
    }
}

/// Cursor paging: `?after=<cursor>&limit=<n>` (limit 1..=500, default 100). A page answers
/// `{items, next_cursor}`; `next_cursor` is null on the last page.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    #[serde(default)]
    pub after: Option<String>,
    pub limit: Option<i64>,
}

impl Page {
    pub fn limit(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 500)
    }

    /// The cursor as text ("" for the first page).
    pub fn after(&self) -> &str {
        self.after.as_deref().unwrap_or("")
    }

    /// The cursor as a number, for lists ordered by a sequence (0 for the first page).
    pub fn after_number(&self) -> Result<i64, ApiError> {
        match self.after.as_deref() {
            None | Some("") => Ok(0),
            Some(text) => text.parse().map_err(|_| {
                ApiError::BadRequest(format!("the cursor {text:?} is not one this list gave out"))
            }),
        }
    }

    /// The page's JSON: a full page says where the next one starts.
    pub fn respond<T: Serialize>(
        &self,
        items: Vec<T>,
        cursor: impl Fn(&T) -> String,
    ) -> axum::Json<Value> {
        let next = (items.len() as i64 == self.limit())
            .then(|| items.last().map(&cursor))
            .flatten();
        axum::Json(json!({ "items": items, "next_cursor": next }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Member {
        name: Name,
        tags: Vec<Text<3>>,
        #[serde(default)]
        variables: Variables,
    }

    fn problem(body: &str) -> (String, String) {
        match parse_json::<Member>(body.as_bytes()) {
            Err(ApiError::Invalid(problems)) => {
                (problems[0].pointer.clone(), problems[0].message.clone())
            }
            other => panic!("expected a validation problem, got {other:?}"),
        }
    }

    #[test]
    fn errors_point_at_the_offending_field() {
        assert_eq!(problem(r#"{"tags": []}"#).0, "/name");
        assert_eq!(problem(r#"{"name": "a", "tags": [], "x": 1}"#).0, "/x");
        assert_eq!(problem(r#"{"name": 5, "tags": []}"#).0, "/name");
        let (pointer, message) = problem(r#"{"name": "a", "tags": ["ok", "long"]}"#);
        assert_eq!(pointer, "/tags/1");
        assert_eq!(message, "must be at most 3 characters long");
        assert_eq!(
            problem(r#"{"name": "   ", "tags": []}"#).1,
            "must not be empty"
        );
        let (pointer, _) = problem(r#"{"name": "a", "tags": [], "variables": {"a b": "x"}}"#);
        assert_eq!(pointer, "/variables");
    }

    #[test]
    fn malformed_json_is_a_bad_request_and_blank_is_an_empty_object() {
        assert!(matches!(
            parse_json::<Member>(b"{\"unknown\": "),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse_json::<Member>(br#"{"name": "a", "tags": []} {}"#),
            Err(ApiError::BadRequest(_))
        ));
        assert_eq!(problem("").0, "/name");
    }

    #[test]
    fn text_is_trimmed_and_counted_in_characters() {
        let member: Member =
            parse_json(r#"{"name": "  Zoë  ", "tags": ["äöü"]}"#.as_bytes()).unwrap();
        assert_eq!(member.name.as_str(), "Zoë");
    }
}

#[cfg(test)]
mod properties;
