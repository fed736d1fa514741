//! `{{variable}}` templates: finding the placeholders a title or body uses, and
//! rendering them per recipient. Pure code; the fan-out activity and the API both use it.
//!
//! Rendering is bounded: a body of thousands of `{{a}}` with a long `a` multiplies, so
//! [`render`] stops as soon as the text would pass [`MAX_RENDERED_BYTES`] and says so, instead
//! of building the whole string first.

use std::collections::{BTreeMap, BTreeSet};

/// Built-in variables every recipient has.
pub const BUILT_INS: [&str; 3] = ["name", "email", "title"];

/// At most this many variables in one map: a step's `variables`, a member's attributes, an
/// audience member's own variables.
pub const MAX_VARIABLES: usize = 100;
/// A variable's name is 1 to this many bytes of letters, digits, `_` or `.`.
pub const MAX_VARIABLE_NAME_LEN: usize = 64;
/// A variable's value is at most this many characters.
pub const MAX_VARIABLE_VALUE_CHARS: usize = 2_000;

/// The most a rendered title or body may take, in bytes (512 KiB). A template body is at most
/// 65,536 characters, i.e. at most 256 KiB of UTF-8, so every honest message (even one in
/// four-byte characters with its variables filled in) fits at least twice over; a body of
/// thousands of placeholders each filled with a long value (up to 2,000 × 13,107 characters,
/// i.e. tens of megabytes) does not, and is refused after at most this much work.
pub const MAX_RENDERED_BYTES: usize = 512 * 1024;

/// Why a text could not be rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "the message would be larger than {limit} bytes once its variables are filled in; use fewer placeholders or shorter values"
    )]
    TooLarge { limit: usize },
}

/// Whether `name` can be a variable: 1 to [`MAX_VARIABLE_NAME_LEN`] letters, digits, `_` or `.`
/// (what a `{{placeholder}}` can name).
pub fn is_variable_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_VARIABLE_NAME_LEN && is_placeholder_name(name)
}

fn is_placeholder_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'))
}

/// The variable names used in `text`, e.g. `{"deadline", "name"}` for
/// `"Hi {{name}}, by {{ deadline }}"`. Whitespace inside the braces is ignored.
pub fn placeholders(text: &str) -> BTreeSet<String> {
    pieces(text)
        .filter_map(|piece| match piece {
            Piece::Placeholder { name, .. } => Some(name.to_owned()),
            Piece::Literal(_) => None,
        })
        .collect()
}

/// Replaces each `{{name}}` with its value (a name without a value stays as written), or fails
/// once the result would pass [`MAX_RENDERED_BYTES`].
pub fn render(text: &str, values: &BTreeMap<&str, &str>) -> Result<String, RenderError> {
    let mut out = String::new();
    render_into(&mut out, text, values, MAX_RENDERED_BYTES)?;
    Ok(out)
}

/// Renders `text` onto `out`, which never grows past `limit` bytes: a piece that would not fit
/// is not copied, and the error is returned at once.
fn render_into(
    out: &mut String,
    text: &str,
    values: &BTreeMap<&str, &str>,
    limit: usize,
) -> Result<(), RenderError> {
    out.reserve_exact(text.len().min(limit).saturating_sub(out.capacity()));
    for piece in pieces(text) {
        let piece = match piece {
            Piece::Literal(literal) => literal,
            Piece::Placeholder { name, raw } => values.get(name).copied().unwrap_or(raw),
        };
        let needed = out.len() + piece.len();
        if needed > limit {
            return Err(RenderError::TooLarge { limit });
        }
        if needed > out.capacity() {
            // Grow by doubling, as `String` would, but never allocate past the limit.
            let target = (out.capacity() * 2).max(needed).min(limit);
            out.reserve_exact(target - out.len());
        }
        out.push_str(piece);
    }
    Ok(())
}

/// The variables one recipient sees, most specific last: built-ins (name, email, campaign
/// title) < the step's custom variables < the recipient's own audience variables.
pub fn recipient_values<'a>(
    built_ins: [(&'a str, &'a str); 3],
    step: &'a BTreeMap<String, String>,
    recipient: &'a BTreeMap<String, String>,
) -> BTreeMap<&'a str, &'a str> {
    let mut values: BTreeMap<&str, &str> = built_ins.into_iter().collect();
    for (k, v) in step.iter().chain(recipient) {
        values.insert(k, v);
    }
    values
}

/// A part of a template: text as written, or a well-formed placeholder.
enum Piece<'t> {
    Literal(&'t str),
    /// `name` trimmed; `raw` the placeholder as written, braces included.
    Placeholder {
        name: &'t str,
        raw: &'t str,
    },
}

/// The pieces of `text` in order; they concatenate back to `text`.
fn pieces(text: &str) -> impl Iterator<Item = Piece<'_>> {
    let mut rest = text;
    let mut pending: Option<Piece<'_>> = None;
    std::iter::from_fn(move || {
        if let Some(piece) = pending.take() {
            return Some(piece);
        }
        if rest.is_empty() {
            return None;
        }
        let Some(open) = rest.find("{{") else {
            return Some(Piece::Literal(std::mem::take(&mut rest)));
        };
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Some(Piece::Literal(std::mem::take(&mut rest)));
        };
        let raw = &rest[open..open + 2 + close + 2];
        let name = after[..close].trim();
        let piece = if is_placeholder_name(name) {
            Piece::Placeholder { name, raw }
        } else {
            Piece::Literal(raw)
        };
        let literal = &rest[..open];
        rest = &after[close + 2..];
        if literal.is_empty() {
            Some(piece)
        } else {
            pending = Some(piece);
            Some(Piece::Literal(literal))
        }
    })
}

/// A push body from Markdown: markup removed, whitespace collapsed, cut to `max_chars`
/// characters with an ellipsis (push providers truncate long bodies anyway, and badly).
pub fn plain_text(markdown: &str, max_chars: usize) -> String {
    let mut text = String::with_capacity(markdown.len());
    let mut chars = markdown.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // [label](url) keeps the label; a bare ] or ( is kept.
            ']' if chars.peek() == Some(&'(') => {
                for c in chars.by_ref() {
                    if c == ')' {
                        break;
                    }
                }
            }
            '*' | '_' | '`' | '#' | '>' | '[' | '~' => {}
            c if c.is_whitespace() => text.push(' '),
            c => text.push(c),
        }
    }
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= max_chars {
        return collapsed;
    }
    let mut cut: String = collapsed
        .chars()
        .take(max_chars.saturating_sub(1))
        .collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// The variables a message needs from each recipient's own values: the placeholders of its
/// title and body that are not built in and that not every notifying step of `definition`
/// defines.
pub fn needed_from_recipients(
    title: &str,
    body: &str,
    definition: &crate::definition::Definition,
) -> BTreeSet<String> {
    use crate::definition::StepKind;
    let steps: Vec<&BTreeMap<String, String>> = definition
        .steps
        .iter()
        .filter_map(|step| match &step.kind {
            StepKind::SendNotification(c) | StepKind::SendReminder(c) => Some(&c.variables),
            _ => None,
        })
        .collect();
    let mut used = placeholders(title);
    used.extend(placeholders(body));
    used.retain(|name| {
        let every_step_defines_it = !steps.is_empty() && steps.iter().all(|v| v.contains_key(name));
        !BUILT_INS.contains(&name.as_str()) && !every_step_defines_it
    });
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_placeholders() {
        let found = placeholders("Hi {{ name }}, by {{deadline}} {{bad name}} {{}} {{unclosed");
        assert_eq!(
            found,
            BTreeSet::from(["deadline".to_owned(), "name".to_owned()])
        );
    }

    #[test]
    fn recipient_variables_beat_step_variables_beat_built_ins() {
        let step = BTreeMap::from([
            ("deadline".to_owned(), "Friday".to_owned()),
            ("name".to_owned(), "step".to_owned()),
        ]);
        let mine = BTreeMap::from([("deadline".to_owned(), "Monday".to_owned())]);
        let values = recipient_values(
            [
                ("name", "Ada"),
                ("email", "ada@example.com"),
                ("title", "T"),
            ],
            &step,
            &mine,
        );
        assert_eq!(
            render("{{name}} by {{deadline}} ({{email}}) {{other}}", &values).unwrap(),
            "step by Monday (ada@example.com) {{other}}"
        );
    }

    #[test]
    fn malformed_placeholders_stay_as_written() {
        let values = BTreeMap::from([("a", "A")]);
        for (text, rendered) in [
            ("{{a}}{{ a }}", "AA"),
            ("{{{a}}}", "{{{a}}}"),
            ("x {{bad name}} {{a}} {{", "x {{bad name}} A {{"),
            ("{{}} {{a", "{{}} {{a"),
            ("}} {{a}}", "}} A"),
            ("Zoë {{a}} ü", "Zoë A ü"),
        ] {
            assert_eq!(render(text, &values).unwrap(), rendered, "{text:?}");
        }
    }

    /// The attack: the largest body, nothing but `{{a}}`, with the longest value `a` may have.
    fn amplification() -> (String, String) {
        let body = "{{a}}".repeat(65_536 / 5);
        let value = "x".repeat(MAX_VARIABLE_VALUE_CHARS);
        (body, value)
    }

    #[test]
    fn amplified_text_is_refused_at_the_limit() {
        let (body, value) = amplification();
        let values = BTreeMap::from([("a", value.as_str())]);
        assert_eq!(
            render(&body, &values),
            Err(RenderError::TooLarge {
                limit: MAX_RENDERED_BYTES
            })
        );
    }

    #[test]
    fn rendering_never_builds_more_than_the_limit() {
        let (body, value) = amplification();
        let values = BTreeMap::from([("a", value.as_str())]);
        for limit in [0, 1, 4_999, 10_000, 100_000] {
            let mut out = String::new();
            let result = render_into(&mut out, &body, &values, limit);
            assert_eq!(result, Err(RenderError::TooLarge { limit }));
            assert!(out.len() <= limit, "{} bytes built for {limit}", out.len());
            assert!(
                out.capacity() <= limit,
                "{} bytes allocated for {limit}",
                out.capacity()
            );
            // Stopped at the first piece that did not fit: whole values only.
            assert_eq!(out.len() % value.len(), 0);
        }
    }

    #[test]
    fn a_text_exactly_at_the_limit_renders() {
        let values = BTreeMap::from([("a", "12345")]);
        let mut out = String::new();
        assert_eq!(render_into(&mut out, "{{a}}{{a}}", &values, 10), Ok(()));
        assert_eq!(out, "1234512345");
        let mut out = String::new();
        assert!(render_into(&mut out, "{{a}}{{a}}!", &values, 10).is_err());
    }

    #[test]
    fn variable_names() {
        assert!(is_variable_name("site.name_2"));
        assert!(is_variable_name(&"a".repeat(MAX_VARIABLE_NAME_LEN)));
        assert!(!is_variable_name(&"a".repeat(MAX_VARIABLE_NAME_LEN + 1)));
        assert!(!is_variable_name(""));
        assert!(!is_variable_name("a b"));
    }

    #[test]
    fn plain_text_strips_markdown_and_truncates() {
        assert_eq!(
            plain_text(
                "# Title\n\n**Read** the [policy](https://x.example/p) _now_",
                100
            ),
            "Title Read the policy now"
        );
        let long = plain_text(&"word ".repeat(100), 20);
        assert_eq!(long.chars().count(), 20);
        assert!(long.ends_with('…'));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Text rich in braces, so that placeholders (well-formed or not) are common.
        fn template_text() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop_oneof![
                    Just("{{".to_owned()),
                    Just("}}".to_owned()),
                    Just("{{a}}".to_owned()),
                    Just("{{ b.c }}".to_owned()),
                    "[a-c_. {}]{0,6}",
                    ".{0,6}",
                ],
                0..40,
            )
            .prop_map(|parts| parts.concat())
        }

        fn values() -> impl Strategy<Value = BTreeMap<String, String>> {
            prop::collection::btree_map("[a-c]|b\\.c|[a-c_.]{1,3}", ".{0,40}", 0..4)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn rendering_is_bounded_and_never_panics(
                text in template_text(),
                values in values(),
                limit in 0usize..400,
            ) {
                let values: BTreeMap<&str, &str> =
                    values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let mut out = String::new();
                match render_into(&mut out, &text, &values, limit) {
                    Ok(()) => {
                        prop_assert!(out.len() <= limit);
                        // Nothing is lost: with the whole budget the same text comes out.
                        prop_assert_eq!(Ok(out.clone()), render(&text, &values));
                    }
                    Err(RenderError::TooLarge { limit: reported }) => {
                        prop_assert_eq!(reported, limit);
                        prop_assert!(out.len() <= limit);
                    }
                }
                prop_assert!(out.capacity() <= limit);
            }

            #[test]
            fn without_values_a_text_renders_as_written(text in template_text()) {
                prop_assert_eq!(render(&text, &BTreeMap::new()), Ok(text.clone()));
            }

            #[test]
            fn placeholders_are_what_render_replaces(text in template_text()) {
                let names = placeholders(&text);
                prop_assert!(names.iter().all(|n| is_placeholder_name(n)));
                // Filling every placeholder with "" can only shorten the text.
                let values: BTreeMap<&str, &str> = names.iter().map(|n| (n.as_str(), "")).collect();
                let rendered = render(&text, &values).unwrap();
                prop_assert!(rendered.len() <= text.len());
            }

            #[test]
            fn plain_text_fits_its_length(markdown in ".{0,300}", max_chars in 0usize..200) {
                let text = plain_text(&markdown, max_chars);
                prop_assert!(text.chars().count() <= max_chars.max(1));
                prop_assert!(text.len() <= markdown.len() + '…'.len_utf8());
            }
        }
    }
}
