//! Validation of a definition as a person wrote it: every problem at once, each with the JSON
//! pointer of the value at fault and a plain sentence.
//!
//! Works on a `serde_json::Value` rather than through serde's derive, so that one bad step does
//! not hide the problems of the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::template::{
    MAX_VARIABLE_NAME_LEN, MAX_VARIABLE_VALUE_CHARS, MAX_VARIABLES, is_variable_name,
};

use super::{
    Channel, DeadlineConfig, Definition, EscalateConfig, MAX_URL_LEN, NotifyConfig, Outcome,
    STEP_TYPES, Step, StepKind, UrlPolicy, WebhookConfig, check_url, quoted,
};

/// At most this many steps in a definition.
pub const MAX_STEPS: usize = 50;
/// Step ids are 1 to 64 characters from `A-Z a-z 0-9 _ - .`.
pub const MAX_STEP_ID_LEN: usize = 64;
/// A webhook's `name` is at most this many characters.
pub const MAX_WEBHOOK_NAME_LEN: usize = 200;
/// A webhook has at most this many extra headers.
pub const MAX_HEADERS: usize = 20;
/// An ESCALATE step's `template_id` is at most this many characters (a template id is a UUID).
pub const MAX_TEMPLATE_ID_LEN: usize = 200;
/// A header value is at most this many bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 4096;
/// Headers a definition may not set: those the HTTP client sets itself (framing, body type,
/// encoding), hop-by-hop headers (RFC 9110 §7.6.1), which could change how the connection
/// or a proxy on the way treats the request, and proxy credentials, which would go to
/// whatever proxy sits between Pidgr and the receiver.
pub const RESERVED_HEADERS: [&str; 14] = [
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
];

/// One thing wrong with a definition (or, among warnings, one thing worth knowing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// RFC 6901 JSON pointer to the value at fault; `""` for the whole document.
    pub pointer: String,
    /// A plain sentence.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "(document)"
        } else {
            &self.pointer
        };
        write!(f, "{pointer}: {}", self.message)
    }
}

/// A definition that passed validation, with the warnings it earned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    pub definition: Definition,
    pub warnings: Vec<Problem>,
}

/// Parses and validates definition text. On failure, returns every problem found.
pub fn parse(json: &str, policy: &UrlPolicy) -> Result<Validated, Vec<Problem>> {
    match serde_json::from_str::<Value>(json) {
        Ok(value) => parse_value(&value, policy),
        Err(error) => Err(vec![Problem {
            pointer: String::new(),
            message: format!("the definition is not valid JSON: {error}"),
        }]),
    }
}

/// Validates a parsed JSON value. On failure, returns every problem found.
pub fn parse_value(value: &Value, policy: &UrlPolicy) -> Result<Validated, Vec<Problem>> {
    let mut checker = Checker {
        policy,
        problems: Vec::new(),
    };
    let definition = checker.definition(value);
    match definition {
        Some(definition) if checker.problems.is_empty() => {
            let warnings = unresolved_endings(&definition);
            Ok(Validated {
                definition,
                warnings,
            })
        }
        _ => Err(checker.problems),
    }
}

struct Checker<'a> {
    policy: &'a UrlPolicy,
    problems: Vec<Problem>,
}

/// A step as read, before the graph checks. `None` fields were reported as problems.
struct RawStep {
    index: usize,
    id: Option<String>,
    kind: Option<StepKind>,
    /// Outcome → (target id, pointer of the transition).
    transitions: BTreeMap<Outcome, (String, String)>,
}

impl Checker<'_> {
    fn problem(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            pointer: pointer.into(),
            message: message.into(),
        });
    }

    fn object<'v>(
        &mut self,
        value: &'v Value,
        pointer: &str,
        what: &str,
    ) -> Option<&'v Map<String, Value>> {
        match value {
            Value::Object(map) => Some(map),
            other => {
                self.problem(
                    pointer,
                    format!("{what} must be a JSON object, not {}", kind_of(other)),
                );
                None
            }
        }
    }

    fn unknown_keys(
        &mut self,
        map: &Map<String, Value>,
        pointer: &str,
        known: &[&str],
        what: &str,
    ) {
        for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
            self.problem(
                format!("{pointer}/{}", escape(key)),
                format!(
                    "{what} has no option {}; the options are {}",
                    quoted(key),
                    list(known)
                ),
            );
        }
    }

    fn definition(&mut self, value: &Value) -> Option<Definition> {
        let root = self.object(value, "", "the definition")?;
        self.unknown_keys(root, "", &["version", "start", "steps"], "a definition");

        match root.get("version") {
            Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
            Some(other) => self.problem("/version", format!("the version must be 1, not {other}")),
            None => self.problem("", "the definition needs \"version\": 1"),
        }
        let start = match root.get("start") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.problem(
                    "/start",
                    format!("start must be a step id (a string), not {}", kind_of(other)),
                );
                None
            }
        };
        let steps = match root.get("steps") {
            Some(Value::Array(steps)) => steps,
            Some(other) => {
                self.problem(
                    "/steps",
                    format!("steps must be a list, not {}", kind_of(other)),
                );
                return None;
            }
            None => {
                self.problem("", "the definition needs a \"steps\" list");
                return None;
            }
        };
        if steps.is_empty() {
            self.problem("/steps", "a definition needs at least one step");
            return None;
        }
        if steps.len() > MAX_STEPS {
            self.problem(
                "/steps",
                format!(
                    "a definition can have at most {MAX_STEPS} steps, but this one has {}",
                    steps.len()
                ),
            );
        }

        let raw: Vec<RawStep> = steps
            .iter()
            .enumerate()
            .map(|(i, s)| self.step(i, s))
            .collect();

        // Ids: unique, and the index each names.
        let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
        for step in &raw {
            let Some(id) = &step.id else { continue };
            if let Some(first) = ids.get(id.as_str()) {
                self.problem(
                    format!("/steps/{}/id", step.index),
                    format!(
                        "the id {} is already used by step {first}; step ids must be unique",
                        quoted(id)
                    ),
                );
            } else {
                ids.insert(id, step.index);
            }
        }
        let start_index = match &start {
            Some(name) => match ids.get(name.as_str()) {
                Some(&i) => Some(i),
                None => {
                    self.problem(
                        "/start",
                        format!(
                            "start names the step {}, but there is no such step",
                            quoted(name)
                        ),
                    );
                    None
                }
            },
            None => Some(0),
        };
        // Transitions to missing steps; edges for the graph checks.
        let mut edges: Vec<Vec<(usize, String)>> = vec![Vec::new(); raw.len()];
        for step in &raw {
            for (target, pointer) in step.transitions.values() {
                match ids.get(target.as_str()) {
                    Some(&to) => edges[step.index].push((to, pointer.clone())),
                    None => self.problem(
                        pointer.clone(),
                        format!(
                            "this transition goes to the step {}, but there is no such step",
                            quoted(target)
                        ),
                    ),
                }
            }
        }
        self.cycles(&edges);
        if let Some(start) = start_index {
            let mut reached = vec![false; raw.len()];
            let mut stack = vec![start];
            while let Some(at) = stack.pop() {
                if !std::mem::replace(&mut reached[at], true) {
                    stack.extend(edges[at].iter().map(|(to, _)| *to));
                }
            }
            for step in raw.iter().filter(|s| !reached[s.index]) {
                let name = step
                    .id
                    .as_deref()
                    .map(quoted)
                    .unwrap_or_else(|| "this step".into());
                self.problem(
                    format!("/steps/{}", step.index),
                    format!(
                        "the step {name} can never run: no path from the start step leads to it"
                    ),
                );
            }
        }

        if !self.problems.is_empty() {
            return None;
        }
        let steps: Vec<Step> = raw
            .into_iter()
            .map(|step| Step {
                id: step.id.unwrap_or_default(),
                kind: step.kind.unwrap_or(StepKind::MarkMissed),
                transitions: step
                    .transitions
                    .into_iter()
                    .map(|(o, (target, _))| (o, target))
                    .collect(),
            })
            .collect();
        Some(Definition {
            version: 1,
            start: start.unwrap_or_else(|| steps[0].id.clone()),
            steps,
        })
    }

    /// Reports each transition that closes a cycle, by depth-first search. A `next` that stands
    /// for two outcomes is two edges written once: it is reported once.
    fn cycles(&mut self, edges: &[Vec<(usize, String)>]) {
        let mut reported = std::collections::BTreeSet::new();
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut mark = vec![Mark::New; edges.len()];
        for root in 0..edges.len() {
            if mark[root] != Mark::New {
                continue;
            }
            // (node, index of the next edge to follow)
            let mut stack = vec![(root, 0)];
            mark[root] = Mark::Open;
            while let Some((node, next)) = stack.pop() {
                if let Some((to, pointer)) = edges[node].get(next) {
                    stack.push((node, next + 1));
                    match mark[*to] {
                        Mark::Open if reported.insert(pointer.clone()) => self.problem(
                            pointer.clone(),
                            "this transition closes a cycle; a definition must not loop back to an earlier step",
                        ),
                        Mark::Open => {}
                        Mark::New => {
                            mark[*to] = Mark::Open;
                            stack.push((*to, 0));
                        }
                        Mark::Done => {}
                    }
                } else {
                    mark[node] = Mark::Done;
                }
            }
        }
    }

    fn step(&mut self, index: usize, value: &Value) -> RawStep {
        let pointer = format!("/steps/{index}");
        let mut raw = RawStep {
            index,
            id: None,
            kind: None,
            transitions: BTreeMap::new(),
        };
        let Some(map) = self.object(value, &pointer, "a step") else {
            return raw;
        };
        self.unknown_keys(
            map,
            &pointer,
            &["id", "type", "config", "transitions"],
            "a step",
        );
        raw.id = match map.get("id") {
            Some(Value::String(id)) if valid_step_id(id) => Some(id.clone()),
            Some(Value::String(id)) => {
                self.problem(
                    format!("{pointer}/id"),
                    format!(
                        "the step id {} is not valid: use 1 to {MAX_STEP_ID_LEN} letters, digits, '-', '_' or '.'",
                        quoted(id)
                    ),
                );
                None
            }
            Some(other) => {
                self.problem(
                    format!("{pointer}/id"),
                    format!("a step id must be a string, not {}", kind_of(other)),
                );
                None
            }
            None => {
                self.problem(pointer.clone(), "the step needs an \"id\"");
                None
            }
        };
        let step_type = match map.get("type") {
            Some(Value::String(t)) if STEP_TYPES.contains(&t.as_str()) => Some(t.as_str()),
            Some(Value::String(t)) => {
                self.problem(
                    format!("{pointer}/type"),
                    format!(
                        "{} is not a step type; the types are {}",
                        quoted(t),
                        list(&STEP_TYPES)
                    ),
                );
                None
            }
            Some(other) => {
                self.problem(
                    format!("{pointer}/type"),
                    format!("a step type must be a string, not {}", kind_of(other)),
                );
                None
            }
            None => {
                self.problem(
                    pointer.clone(),
                    format!("the step needs a \"type\", one of {}", list(&STEP_TYPES)),
                );
                None
            }
        };
        let empty = Value::Object(Map::new());
        let config_pointer = format!("{pointer}/config");
        let config = self.object(
            map.get("config").unwrap_or(&empty),
            &config_pointer,
            "a step's config",
        );
        if let (Some(step_type), Some(config)) = (step_type, config) {
            raw.kind = self.config(step_type, config, &config_pointer);
        }
        let transitions_pointer = format!("{pointer}/transitions");
        if let (Some(step_type), Some(transitions)) = (
            step_type,
            self.object(
                map.get("transitions").unwrap_or(&empty),
                &transitions_pointer,
                "transitions",
            ),
        ) {
            raw.transitions = self.transitions(step_type, transitions, &transitions_pointer);
        }
        raw
    }

    fn transitions(
        &mut self,
        step_type: &str,
        map: &Map<String, Value>,
        pointer: &str,
    ) -> BTreeMap<Outcome, (String, String)> {
        let waits = step_type == "DEADLINE_CHECK";
        let allowed: &[&str] = if waits {
            &["next", "deadline", "all_acknowledged"]
        } else {
            &["next"]
        };
        let mut out = BTreeMap::new();
        for (key, target) in map {
            let at = format!("{pointer}/{}", escape(key));
            if !allowed.contains(&key.as_str()) {
                self.problem(
                    at,
                    format!(
                        "{} is not an outcome of a {step_type} step; its outcomes are {}",
                        quoted(key),
                        list(allowed)
                    ),
                );
                continue;
            }
            let Value::String(target) = target else {
                self.problem(
                    at,
                    format!(
                        "a transition must name a step id (a string), not {}",
                        kind_of(target)
                    ),
                );
                continue;
            };
            let outcomes: &[Outcome] = match key.as_str() {
                "next" if waits => &[Outcome::Deadline, Outcome::AllAcknowledged],
                "next" => &[Outcome::Next],
                "deadline" => &[Outcome::Deadline],
                _ => &[Outcome::AllAcknowledged],
            };
            for outcome in outcomes {
                if out.insert(*outcome, (target.clone(), at.clone())).is_some() {
                    self.problem(
                        at.clone(),
                        format!("\"next\" stands for both \"deadline\" and \"all_acknowledged\"; it cannot be combined with {}", quoted(outcome.as_str())),
                    );
                }
            }
        }
        out
    }

    fn config(
        &mut self,
        step_type: &str,
        map: &Map<String, Value>,
        pointer: &str,
    ) -> Option<StepKind> {
        match step_type {
            "SEND_NOTIFICATION" => self.notify(map, pointer).map(StepKind::SendNotification),
            "SEND_REMINDER" => self.notify(map, pointer).map(StepKind::SendReminder),
            "DEADLINE_CHECK" => self.deadline(map, pointer).map(StepKind::DeadlineCheck),
            "CALL_WEBHOOK" => self.webhook(map, pointer).map(StepKind::CallWebhook),
            "ESCALATE" => self.escalate(map, pointer).map(StepKind::Escalate),
            _ => {
                self.unknown_keys(map, pointer, &[], "a MARK_MISSED step");
                Some(StepKind::MarkMissed)
            }
        }
    }

    fn notify(&mut self, map: &Map<String, Value>, pointer: &str) -> Option<NotifyConfig> {
        self.unknown_keys(
            map,
            pointer,
            &["channels", "variables"],
            "a notification step",
        );
        let before = self.problems.len();
        let mut config = NotifyConfig::default();
        match map.get("channels") {
            None => {}
            Some(Value::Array(items)) if items.is_empty() => self.problem(
                format!("{pointer}/channels"),
                "channels must name at least one channel: \"push\" or \"webhook\"",
            ),
            Some(Value::Array(items)) => {
                config.channels.clear();
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{pointer}/channels/{i}");
                    let channel = match item.as_str() {
                        Some("push") => Channel::Push,
                        Some("webhook") => Channel::Webhook,
                        _ => {
                            self.problem(at, format!("{item} is not a channel; the channels are \"push\" and \"webhook\""));
                            continue;
                        }
                    };
                    if config.channels.contains(&channel) {
                        self.problem(at, format!("the channel \"{channel}\" is listed twice"));
                    } else {
                        config.channels.push(channel);
                    }
                }
            }
            Some(other) => self.problem(
                format!("{pointer}/channels"),
                format!(
                    "channels must be a list such as [\"push\"], not {}",
                    kind_of(other)
                ),
            ),
        }
        if let Some(value) = map.get("variables") {
            let at = format!("{pointer}/variables");
            if let Some(vars) = self.object(value, &at, "variables") {
                // The same limits as members' attributes and audience variables: a step's
                // values are copied into every recipient's message.
                if vars.len() > MAX_VARIABLES {
                    self.problem(
                        at.clone(),
                        format!(
                            "a step can have at most {MAX_VARIABLES} variables, but this one has {}",
                            vars.len()
                        ),
                    );
                }
                for (name, value) in vars {
                    let var_at = format!("{at}/{}", escape(name));
                    if !is_variable_name(name) {
                        self.problem(
                            var_at.clone(),
                            format!(
                                "{} is not a valid variable name: use 1 to {MAX_VARIABLE_NAME_LEN} letters, digits, '_' or '.'",
                                quoted(name)
                            ),
                        );
                    }
                    match value {
                        Value::String(text) if text.chars().count() > MAX_VARIABLE_VALUE_CHARS => {
                            self.problem(
                                var_at,
                                format!(
                                    "the value of {} can be at most {MAX_VARIABLE_VALUE_CHARS} characters long",
                                    quoted(name)
                                ),
                            )
                        }
                        Value::String(text) => {
                            config.variables.insert(name.clone(), text.clone());
                        }
                        other => self.problem(
                            var_at,
                            format!(
                                "a variable's value must be a string, not {}",
                                kind_of(other)
                            ),
                        ),
                    }
                }
            }
        }
        (self.problems.len() == before).then_some(config)
    }

    /// ESCALATE: channels and variables as for a notification, plus the template the managers'
    /// message is rendered from (whether it exists is the campaign's creation to check: this
    /// code sees no database).
    fn escalate(&mut self, map: &Map<String, Value>, pointer: &str) -> Option<EscalateConfig> {
        self.unknown_keys(
            map,
            pointer,
            &["channels", "variables", "template_id", "template_version"],
            "an ESCALATE step",
        );
        let before = self.problems.len();
        // The notification's own checks, on the options the two step types share.
        let shared: Map<String, Value> = map
            .iter()
            .filter(|(key, _)| matches!(key.as_str(), "channels" | "variables"))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let notify = self.notify(&shared, pointer);
        let template_id = match map.get("template_id") {
            Some(Value::String(id)) if id.trim().is_empty() => {
                self.problem(
                    format!("{pointer}/template_id"),
                    "the template_id must not be empty",
                );
                None
            }
            Some(Value::String(id)) if id.chars().count() > MAX_TEMPLATE_ID_LEN => {
                self.problem(
                    format!("{pointer}/template_id"),
                    format!("a template_id can be at most {MAX_TEMPLATE_ID_LEN} characters long"),
                );
                None
            }
            Some(Value::String(id)) => Some(id.clone()),
            Some(other) => {
                self.problem(
                    format!("{pointer}/template_id"),
                    format!(
                        "the template_id must be a template's id (a string), not {}",
                        kind_of(other)
                    ),
                );
                None
            }
            None => {
                self.problem(
                    pointer,
                    "an ESCALATE step needs a \"template_id\": the template its message to managers is rendered from",
                );
                None
            }
        };
        let template_version = match map.get("template_version") {
            Some(Value::Number(n)) => match n.as_i64().filter(|v| *v >= 1) {
                Some(version) => Some(version),
                None => {
                    self.problem(
                        format!("{pointer}/template_version"),
                        format!("the template_version must be a whole number from 1, not {n}"),
                    );
                    None
                }
            },
            Some(other) => {
                self.problem(
                    format!("{pointer}/template_version"),
                    format!(
                        "the template_version must be a whole number from 1, not {}",
                        kind_of(other)
                    ),
                );
                None
            }
            None => {
                self.problem(
                    pointer,
                    "an ESCALATE step needs a \"template_version\", such as 1",
                );
                None
            }
        };
        match (notify, template_id, template_version) {
            (Some(notify), Some(template_id), Some(template_version))
                if self.problems.len() == before =>
            {
                Some(EscalateConfig {
                    channels: notify.channels,
                    variables: notify.variables,
                    template_id,
                    template_version,
                })
            }
            _ => None,
        }
    }

    fn deadline(&mut self, map: &Map<String, Value>, pointer: &str) -> Option<DeadlineConfig> {
        self.unknown_keys(map, pointer, &["duration"], "a DEADLINE_CHECK step");
        let at = format!("{pointer}/duration");
        match map.get("duration") {
            Some(Value::String(text)) => match DeadlineConfig::parse(text) {
                Ok(config) => Some(config),
                Err(message) => {
                    self.problem(at, message);
                    None
                }
            },
            Some(other) => {
                self.problem(
                    at,
                    format!(
                        "the duration must be a string such as \"72h\", not {}",
                        kind_of(other)
                    ),
                );
                None
            }
            None => {
                self.problem(
                    pointer,
                    "a DEADLINE_CHECK step needs a \"duration\", such as \"72h\"",
                );
                None
            }
        }
    }

    fn webhook(&mut self, map: &Map<String, Value>, pointer: &str) -> Option<WebhookConfig> {
        self.unknown_keys(
            map,
            pointer,
            &["name", "url", "headers"],
            "a CALL_WEBHOOK step",
        );
        let before = self.problems.len();
        let name = match map.get("name") {
            Some(Value::String(name)) if name.trim().is_empty() => {
                self.problem(
                    format!("{pointer}/name"),
                    "the webhook's name must not be empty",
                );
                None
            }
            Some(Value::String(name)) if name.chars().count() > MAX_WEBHOOK_NAME_LEN => {
                self.problem(
                    format!("{pointer}/name"),
                    format!(
                        "the webhook's name can be at most {MAX_WEBHOOK_NAME_LEN} characters long"
                    ),
                );
                None
            }
            Some(Value::String(name)) => Some(name.clone()),
            Some(other) => {
                self.problem(
                    format!("{pointer}/name"),
                    format!(
                        "the webhook's name must be a string, not {}",
                        kind_of(other)
                    ),
                );
                None
            }
            None => {
                self.problem(pointer, "a CALL_WEBHOOK step needs a \"name\"");
                None
            }
        };
        let url = match map.get("url") {
            Some(Value::String(url)) => match check_url(url, self.policy) {
                Ok(_) => Some(url.clone()),
                Err(rejection) => {
                    self.problem(format!("{pointer}/url"), rejection.to_string());
                    None
                }
            },
            Some(other) => {
                self.problem(
                    format!("{pointer}/url"),
                    format!(
                        "the url must be a string of at most {MAX_URL_LEN} characters, not {}",
                        kind_of(other)
                    ),
                );
                None
            }
            None => {
                self.problem(pointer, "a CALL_WEBHOOK step needs a \"url\"");
                None
            }
        };
        let mut headers = BTreeMap::new();
        if let Some(value) = map.get("headers") {
            let at = format!("{pointer}/headers");
            if let Some(given) = self.object(value, &at, "headers") {
                if given.len() > MAX_HEADERS {
                    self.problem(
                        at.clone(),
                        format!(
                            "a webhook can have at most {MAX_HEADERS} headers, but this one has {}",
                            given.len()
                        ),
                    );
                }
                let mut seen = BTreeSet::new();
                for (name, value) in given {
                    let header_at = format!("{at}/{}", escape(name));
                    let lower = name.to_ascii_lowercase();
                    if !valid_header_name(name) {
                        self.problem(
                            header_at.clone(),
                            format!("{} is not a valid HTTP header name", quoted(name)),
                        );
                    } else if RESERVED_HEADERS.contains(&lower.as_str()) {
                        self.problem(
                            header_at.clone(),
                            format!(
                                "the header {} is set by Pidgr and cannot be configured",
                                quoted(name)
                            ),
                        );
                    } else if !seen.insert(lower) {
                        self.problem(
                            header_at.clone(),
                            format!(
                                "the header {} is given twice (names are case-insensitive)",
                                quoted(name)
                            ),
                        );
                    }
                    // Header values are secrets: messages never quote them.
                    match value {
                        Value::String(text) if text.len() > MAX_HEADER_VALUE_LEN => self.problem(
                            header_at,
                            format!(
                                "a header value can be at most {MAX_HEADER_VALUE_LEN} bytes long"
                            ),
                        ),
                        Value::String(text)
                            if text.bytes().any(|b| b.is_ascii_control() && b != b'\t') =>
                        {
                            self.problem(
                                header_at,
                                "a header value must not contain line breaks or control characters",
                            )
                        }
                        Value::String(text) => {
                            headers.insert(name.clone(), text.clone());
                        }
                        other => self.problem(
                            header_at,
                            format!("a header value must be a string, not {}", kind_of(other)),
                        ),
                    }
                }
            }
        }
        match (name, url) {
            (Some(name), Some(url)) if self.problems.len() == before => {
                Some(WebhookConfig { name, url, headers })
            }
            _ => None,
        }
    }
}

/// Warnings for each step where the workflow can end while some deliveries may be unresolved:
/// a path from the start that ends without passing MARK_MISSED or `all_acknowledged` after the
/// last notification. (Those deliveries are then marked MISSED at the end; see docs/workflow-definitions.md.)
fn unresolved_endings(definition: &Definition) -> Vec<Problem> {
    // Each (step, resolved-on-entry) pair is visited once; the graph is acyclic and small.
    let mut seen = BTreeSet::new();
    let mut warned = BTreeSet::new();
    let mut stack = vec![(definition.entry().id.as_str(), false)];
    while let Some((id, resolved)) = stack.pop() {
        if !seen.insert((id, resolved)) {
            continue;
        }
        let Some(step) = definition.step(id) else {
            continue;
        };
        for outcome in step.kind.outcomes() {
            let resolved_after = match (&step.kind, outcome) {
                (StepKind::MarkMissed, _) | (_, Outcome::AllAcknowledged) => true,
                (StepKind::SendNotification(_) | StepKind::SendReminder(_), _) => false,
                _ => resolved,
            };
            match step.transitions.get(outcome) {
                Some(next) => stack.push((next.as_str(), resolved_after)),
                None if !resolved_after => {
                    warned.insert((definition.position(id).unwrap_or_default(), *outcome));
                }
                None => {}
            }
        }
    }
    warned
        .into_iter()
        .map(|(index, outcome)| Problem {
            pointer: format!("/steps/{index}/transitions"),
            message: format!(
                "the workflow can end after this step ({}) with deliveries still unresolved; they will be marked MISSED when it ends",
                outcome.as_str()
            ),
        })
        .collect()
}

fn valid_step_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_STEP_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// An RFC 9110 token.
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Escapes a key for a JSON pointer (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}
