//! A campaign's message as one recipient sees it: `{{variables}}` resolved (built-ins < step
//! variables < the recipient's own), Markdown rendered to sanitised HTML. Also the check that
//! every variable a message uses has a value for every recipient.

use std::collections::BTreeMap;

use pidgr_store::{Campaign, Delivery, Recipient, ShownMessage};
use pidgr_workflows::definition::{Definition, StepKind};
use pidgr_workflows::template::{self, RenderError};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ApiError;
use crate::markdown::to_safe_html;

#[derive(Debug, Serialize)]
pub struct Rendered {
    pub title: String,
    pub body_markdown: String,
    pub body_html: String,
}

impl Rendered {
    /// The [`content_sha256`] of this message.
    pub fn content_sha256(&self) -> String {
        content_sha256(&self.title, &self.body_markdown)
    }
}

/// Who the message is for: what the built-in variables and their own variables say.
pub struct Reader<'a> {
    pub name: &'a str,
    pub email: &'a str,
    pub variables: &'a BTreeMap<String, String>,
}

impl<'a> Reader<'a> {
    pub fn of_recipient(recipient: &'a Recipient) -> Self {
        Reader {
            name: recipient
                .display_name
                .as_deref()
                .unwrap_or(&recipient.user_id),
            email: recipient.email.as_deref().unwrap_or(""),
            variables: &recipient.variables,
        }
    }

    pub fn of_delivery(delivery: &'a Delivery) -> Self {
        Reader {
            name: delivery
                .display_name
                .as_deref()
                .unwrap_or(&delivery.user_id),
            email: delivery.email.as_deref().unwrap_or(""),
            variables: &delivery.variables,
        }
    }
}

/// Renders a title and Markdown body for `reader`; a message whose variables would make it
/// larger than [`template::MAX_RENDERED_BYTES`] is refused, after at most that much work.
pub fn render(
    title: &str,
    body: &str,
    campaign_title: &str,
    step_variables: &BTreeMap<String, String>,
    reader: &Reader,
) -> Result<Rendered, RenderError> {
    let (title, body_markdown) = render_text(title, body, campaign_title, step_variables, reader)?;
    Ok(Rendered {
        title,
        body_html: to_safe_html(&body_markdown),
        body_markdown,
    })
}

/// The title and Markdown body of [`render`], without the HTML.
fn render_text(
    title: &str,
    body: &str,
    campaign_title: &str,
    step_variables: &BTreeMap<String, String>,
    reader: &Reader,
) -> Result<(String, String), RenderError> {
    let values = template::recipient_values(
        [
            ("name", reader.name),
            ("email", reader.email),
            ("title", campaign_title),
        ],
        step_variables,
        reader.variables,
    );
    let body_markdown = template::render(body, &values)?;
    Ok((template::render(title, &values)?, body_markdown))
}

/// The SHA-256 (hex) of what a member is shown, over the one canonical form: the JSON array
/// `[title, body_markdown]` of the rendered title and Markdown body, compact and escaped as
/// serde_json writes it, in UTF-8 (the HTML is derived from the Markdown, so it adds nothing).
/// A title may hold a line feed (a template's title and a variable's value may), so title and
/// body are not simply joined: as a JSON array, no two messages have the same form. The inbox serves it as
/// `content_sha256`; a READ or ACK may send it back to attest what was read (docs/audit.md).
pub fn content_sha256(title: &str, body_markdown: &str) -> String {
    let form = serde_json::to_string(&[title, body_markdown]).unwrap_or_default();
    hex::encode(Sha256::digest(form.as_bytes()))
}

/// [`content_sha256`] of a campaign's message as `delivery`'s member is shown it, rendered from
/// the message the store read with the delivery; `None` when it cannot be rendered (too large).
/// Renders the text only: the hash needs no HTML.
pub fn shown_sha256(delivery: &Delivery, shown: &ShownMessage) -> Option<String> {
    let (title, body_markdown) = render_text(
        &shown.message_title,
        &shown.body,
        &shown.campaign_title,
        &step_variables(&shown.definition),
        &Reader::of_delivery(delivery),
    )
    .ok()?;
    Some(content_sha256(&title, &body_markdown))
}

/// The problem answered when a preview's message is too large: the template is at fault, and
/// the request cannot change that.
pub fn too_large(error: RenderError) -> ApiError {
    ApiError::invalid("", format!("the message cannot be shown: {error}"))
}

/// A started campaign's message for one of its deliveries, as the inbox shows it (with the
/// variables of the campaign's first notification step).
pub fn for_delivery(campaign: &Campaign, delivery: &Delivery) -> Result<Rendered, RenderError> {
    render(
        &campaign.message_title,
        &campaign.body,
        &campaign.title,
        &step_variables(&campaign.definition),
        &Reader::of_delivery(delivery),
    )
}

/// The variables of a stored definition's first notification step (none if it does not parse).
fn step_variables(definition: &str) -> BTreeMap<String, String> {
    serde_json::from_str::<Definition>(definition)
        .as_ref()
        .map(notification_variables)
        .unwrap_or_default()
}

/// The variables of the definition's first notification step.
pub fn notification_variables(definition: &Definition) -> BTreeMap<String, String> {
    definition
        .steps
        .iter()
        .find_map(|step| match &step.kind {
            StepKind::SendNotification(config) => Some(config.variables.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Each variable `title` or `body` uses that some recipients cannot resolve, with how many
/// lack it. A variable resolves for everyone when it is built in or every notifying step
/// defines it; otherwise each recipient needs it among their own variables.
pub fn unresolvable(
    title: &str,
    body: &str,
    definition: &Definition,
    recipients: &[Recipient],
) -> Vec<(String, usize)> {
    template::needed_from_recipients(title, body, definition)
        .into_iter()
        .filter_map(|name| {
            let lacking = recipients
                .iter()
                .filter(|r| !r.variables.contains_key(&name))
                .count();
            (lacking > 0).then_some((name, lacking))
        })
        .collect()
}

/// The sentence for one unresolvable variable.
pub fn unresolvable_message(name: &str, lacking: usize, total: usize) -> String {
    format!(
        "the variable {{{{{name}}}}} has no value for {lacking} of {total} recipients; give it as a member attribute, a per-member audience variable, or in every notification step's variables"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_hash_tells_a_line_feed_in_the_title_from_one_between_title_and_body() {
        // Joined by a line feed, both would be "Policy\nfor you\nRead it".
        assert_ne!(
            content_sha256("Policy\nfor you", "Read it"),
            content_sha256("Policy", "for you\nRead it")
        );
        // The form is the compact JSON array, as serde_json escapes it.
        assert_eq!(
            content_sha256("Policy \"A\"\n", "Read é"),
            hex::encode(Sha256::digest(
                "[\"Policy \\\"A\\\"\\n\",\"Read é\"]".as_bytes()
            ))
        );
    }
}
