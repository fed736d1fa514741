//! The workflow definition language (docs/workflow-definitions.md): a JSON DAG of steps.
//!
//! [`parse`] and [`parse_value`] validate a definition written by a person and report every
//! problem at once, each with a JSON pointer and a plain sentence. The resulting
//! [`Definition`] serializes to the canonical form of the language itself, which parses back to
//! an equal definition; it is the workflow's input and what the Temporal Web UI shows.
//!
//! Pure code: no I/O, and every map is a `BTreeMap`, so output order never depends on hashing.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

mod duration;
mod url_policy;
mod validate;

pub use duration::{MAX_DURATION, MIN_DURATION, parse_duration};
pub use url_policy::{
    BlockedReason, CheckedUrl, Host, MAX_URL_LEN, UrlPolicy, UrlRejection, check_url, classify_ip,
};
pub use validate::{
    MAX_HEADER_VALUE_LEN, MAX_HEADERS, MAX_STEP_ID_LEN, MAX_STEPS, MAX_WEBHOOK_NAME_LEN, Problem,
    RESERVED_HEADERS, Validated, parse, parse_value,
};

/// The example definition of docs/workflow-definitions.md.
pub const EXAMPLE_JSON: &str = include_str!("example.json");

/// The step types, as written in definitions.
pub const STEP_TYPES: [&str; 6] = [
    "SEND_NOTIFICATION",
    "DEADLINE_CHECK",
    "SEND_REMINDER",
    "MARK_MISSED",
    "CALL_WEBHOOK",
    "ESCALATE",
];

/// A validated workflow definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// Always 1.
    pub version: u32,
    /// The id of the entry step (the first step's when the source left `start` out).
    pub start: String,
    pub steps: Vec<Step>,
}

/// One step. Serialized as `{"id", "type", "config", "transitions"}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "StepRepr")]
pub struct Step {
    pub id: String,
    pub kind: StepKind,
    /// Outcome → id of the next step; a missing outcome ends the workflow. `next` on a
    /// `DEADLINE_CHECK` is expanded to `deadline` and `all_acknowledged`.
    pub transitions: BTreeMap<Outcome, String>,
}

/// What a step does, with its configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepKind {
    SendNotification(NotifyConfig),
    DeadlineCheck(DeadlineConfig),
    SendReminder(NotifyConfig),
    MarkMissed,
    CallWebhook(WebhookConfig),
    Escalate(EscalateConfig),
}

/// Configuration of `SEND_NOTIFICATION` and `SEND_REMINDER`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Never empty, no duplicates, in the order given; `["push"]` by default.
    #[serde(default = "default_channels")]
    pub channels: Vec<Channel>,
    /// Step-level template variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            channels: default_channels(),
            variables: BTreeMap::new(),
        }
    }
}

fn default_channels() -> Vec<Channel> {
    vec![Channel::DEFAULT]
}

/// A delivery channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Push,
    Webhook,
}

impl Channel {
    /// Every channel, in the order editors offer them.
    pub const ALL: [Channel; 2] = [Channel::Push, Channel::Webhook];
    /// What a notification or reminder step uses when it names no channels.
    pub const DEFAULT: Channel = Channel::Push;

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::Webhook => "webhook",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Configuration of `DEADLINE_CHECK`. Serialized as `{"duration": text}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "DeadlineRepr", try_from = "DeadlineRepr")]
pub struct DeadlineConfig {
    pub duration: Duration,
    /// The duration as written, e.g. `"72h"`.
    pub text: String,
}

impl DeadlineConfig {
    /// Parses `text` with [`parse_duration`].
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(DeadlineConfig {
            duration: parse_duration(text)?,
            text: text.to_string(),
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadlineRepr {
    duration: String,
}

impl From<DeadlineConfig> for DeadlineRepr {
    fn from(config: DeadlineConfig) -> Self {
        DeadlineRepr {
            duration: config.text,
        }
    }
}

impl TryFrom<DeadlineRepr> for DeadlineConfig {
    type Error = String;
    fn try_from(repr: DeadlineRepr) -> Result<Self, String> {
        DeadlineConfig::parse(&repr.duration)
    }
}

/// Configuration of `CALL_WEBHOOK`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Human-readable, for logs; at most 200 characters.
    pub name: String,
    /// Passed [`check_url`] when the definition was validated; checked again at every send.
    pub url: String,
    /// Extra request headers (secrets: never log the values).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Configuration of `ESCALATE`: each manager of recipients whose deliveries are still unresolved
/// gets one message, rendered from a template of the organisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalateConfig {
    /// As for notifications: never empty, no duplicates; `["push"]` by default.
    #[serde(default = "default_channels")]
    pub channels: Vec<Channel>,
    /// Step-level template variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// The template (of the campaign's organisation) the managers' message is rendered from;
    /// the campaign's creation checks that it and the version exist.
    pub template_id: String,
    /// The template version, pinned (1 or more).
    pub template_version: i64,
}

/// The outcome a step finished with, which picks the next step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Next,
    /// A `DEADLINE_CHECK` timer fired with deliveries still unresolved.
    Deadline,
    /// Every delivery was resolved before the deadline.
    AllAcknowledged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Next => "next",
            Outcome::Deadline => "deadline",
            Outcome::AllAcknowledged => "all_acknowledged",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StepKind {
    /// The type as written in definitions: `"SEND_NOTIFICATION"`, `"DEADLINE_CHECK"`, ...
    pub fn type_name(&self) -> &'static str {
        match self {
            StepKind::SendNotification(_) => "SEND_NOTIFICATION",
            StepKind::DeadlineCheck(_) => "DEADLINE_CHECK",
            StepKind::SendReminder(_) => "SEND_REMINDER",
            StepKind::MarkMissed => "MARK_MISSED",
            StepKind::CallWebhook(_) => "CALL_WEBHOOK",
            StepKind::Escalate(_) => "ESCALATE",
        }
    }

    /// The outcomes a step of this kind can finish with.
    pub fn outcomes(&self) -> &'static [Outcome] {
        match self {
            StepKind::DeadlineCheck(_) => &[Outcome::Deadline, Outcome::AllAcknowledged],
            _ => &[Outcome::Next],
        }
    }
}

impl Definition {
    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|step| step.id == id)
    }

    /// The position of the step with this id in `steps`.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|step| step.id == id)
    }

    /// The entry step.
    ///
    /// # Panics
    /// If the definition has no steps, which a validated definition always has.
    pub fn entry(&self) -> &Step {
        self.step(&self.start).unwrap_or(&self.steps[0])
    }

    /// The step that follows `from` on `outcome`; `None` ends the workflow.
    pub fn next_step(&self, from: &str, outcome: Outcome) -> Option<&Step> {
        let target = self.step(from)?.transitions.get(&outcome)?;
        self.step(target)
    }

    /// The canonical JSON text of this definition.
    pub fn to_json(&self) -> String {
        // Only string map keys, so serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Empty {}
        let mut out = serializer.serialize_struct("Step", 4)?;
        out.serialize_field("id", &self.id)?;
        out.serialize_field("type", self.kind.type_name())?;
        match &self.kind {
            StepKind::SendNotification(c) | StepKind::SendReminder(c) => {
                out.serialize_field("config", c)?
            }
            StepKind::DeadlineCheck(c) => out.serialize_field("config", c)?,
            StepKind::MarkMissed => out.serialize_field("config", &Empty {})?,
            StepKind::CallWebhook(c) => out.serialize_field("config", c)?,
            StepKind::Escalate(c) => out.serialize_field("config", c)?,
        }
        out.serialize_field("transitions", &self.transitions)?;
        out.end()
    }
}

/// The serialized shape of a step, for deserializing the canonical form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepRepr {
    id: String,
    #[serde(rename = "type")]
    step_type: String,
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    transitions: BTreeMap<Outcome, String>,
}

impl TryFrom<StepRepr> for Step {
    type Error = String;

    fn try_from(repr: StepRepr) -> Result<Self, String> {
        fn config<T: for<'de> Deserialize<'de>>(
            id: &str,
            value: Option<serde_json::Value>,
        ) -> Result<T, String> {
            let value = value.unwrap_or_else(|| serde_json::Value::Object(Default::default()));
            serde_json::from_value(value).map_err(|e| format!("step {}: {e}", quoted(id)))
        }
        let kind = match repr.step_type.as_str() {
            "SEND_NOTIFICATION" => StepKind::SendNotification(config(&repr.id, repr.config)?),
            "SEND_REMINDER" => StepKind::SendReminder(config(&repr.id, repr.config)?),
            "DEADLINE_CHECK" => StepKind::DeadlineCheck(config(&repr.id, repr.config)?),
            "CALL_WEBHOOK" => StepKind::CallWebhook(config(&repr.id, repr.config)?),
            "ESCALATE" => StepKind::Escalate(config(&repr.id, repr.config)?),
            "MARK_MISSED" => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Empty {}
                let _: Empty = config(&repr.id, repr.config)?;
                StepKind::MarkMissed
            }
            other => {
                return Err(format!(
                    "step {} has the unknown type {}",
                    quoted(&repr.id),
                    quoted(other)
                ));
            }
        };
        Ok(Step {
            id: repr.id,
            kind,
            transitions: repr.transitions,
        })
    }
}

/// `text` in double quotes for a message, with control characters escaped and long text cut.
pub(crate) fn quoted(text: &str) -> String {
    const LIMIT: usize = 80;
    let mut out = String::with_capacity(text.len().min(LIMIT * 2) + 2);
    out.push('"');
    for (i, c) in text.chars().enumerate() {
        if i == LIMIT {
            out.push('…');
            break;
        }
        if c == '"' || c == '\\' || c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
