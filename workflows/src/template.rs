//! `{{variable}}` templates: finding the placeholders a title or body uses, and
//! rendering them per recipient. Pure code; the fan-out activity and the API both use it.

use std::collections::{BTreeMap, BTreeSet};

/// Built-in variables every recipient has.
pub const BUILT_INS: [&str; 3] = ["name", "email", "title"];

/// The variable names used in `text`, e.g. `{"deadline", "name"}` for
/// `"Hi {{name}}, by {{ deadline }}"`. Whitespace inside the braces is ignored.
pub fn placeholders(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    scan(text, |name| {
        names.insert(name.to_owned());
        None
    });
    names
}

/// Replaces each `{{name}}` with its value; a name without a value stays as written.
pub fn render(text: &str, values: &BTreeMap<&str, &str>) -> String {
    scan(text, |name| values.get(name).map(|v| (*v).to_owned()))
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

/// Walks `text`, calling `replace` for each well-formed placeholder name; returns the text with
/// the replacements made (a `None` keeps the placeholder as written).
fn scan(text: &str, mut replace: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = after[..close].trim();
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'));
        match valid.then(|| replace(name)).flatten() {
            Some(value) => out.push_str(&value),
            None => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
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
            render("{{name}} by {{deadline}} ({{email}}) {{other}}", &values),
            "step by Monday (ada@example.com) {{other}}"
        );
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
}
