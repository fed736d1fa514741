//! Workflow definitions: the list, and an editor that the server checks as you type.
//!
//! The editor's side panel is re-rendered by the server on every pause in typing: the
//! definition goes to the API's own `POST /v1/workflow-definitions/validate`, and each problem
//! it reports is shown beside the step it is about (its JSON pointer `/steps/3/config/url`
//! names `steps[3]`, whose id is read from the text being edited), with the graph redrawn from
//! the same text and the faulty steps in red. Text that is not JSON (yet) is reported as such,
//! and the graph is drawn from the longest part of it that reads as JSON once its open brackets
//! are closed, so it does not vanish at every keystroke.
//!
//! Saving creates a definition or appends a version: the API validates again and refuses with
//! every problem, which the page shows the same way.

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use pidgr_workflows::definition::Channel;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Layout, render};
use crate::api::Listing;
use crate::api::{Reply, segment, with_query};
use crate::session::Session;
use crate::views::graph::{draw, step_key};
use crate::views::{text as text_at, when};
use crate::{Console, ConsoleError};

const PAGE_SIZE: &str = "50";
/// How many version links a row of the list shows (the newest ones).
const LISTED_VERSIONS: i64 = 6;
/// What answers show in place of a webhook header's value (the API's mask).
const MASK: &str = pidgr_api::MASKED_HEADER_VALUE;
/// The reference, shown as written (it is plain enough to read as text).
const REFERENCE: &str = include_str!("../../../docs/workflow-definitions.md");

/// What a new definition starts from: the usual notify, wait, remind, wait, mark-missed.
const STARTER: &str = r#"{
  "version": 1,
  "start": "notify",
  "steps": [
    {
      "id": "notify",
      "type": "SEND_NOTIFICATION",
      "config": { "channels": ["push"], "variables": { "deadline": "Friday" } },
      "transitions": { "next": "wait" }
    },
    {
      "id": "wait",
      "type": "DEADLINE_CHECK",
      "config": { "duration": "72h" },
      "transitions": { "deadline": "remind" }
    },
    {
      "id": "remind",
      "type": "SEND_REMINDER",
      "config": { "channels": ["push"] },
      "transitions": { "next": "last-call" }
    },
    {
      "id": "last-call",
      "type": "DEADLINE_CHECK",
      "config": { "duration": "24h" },
      "transitions": { "deadline": "missed" }
    },
    {
      "id": "missed",
      "type": "MARK_MISSED"
    }
  ]
}
"#;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/workflows", get(list))
        .route("/console/workflows/new", get(new_definition).post(create))
        .route("/console/workflows/check", post(check))
        .route("/console/workflows/channels", post(channels))
        .route("/console/workflows/reference", get(reference))
        .route(
            "/console/workflows/{definition_id}",
            get(show).post(save_version),
        )
}

// ---------------------------------------------------------------------------------------------
// The list

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    after: String,
}

struct Row {
    id: String,
    name: String,
    latest: i64,
    /// The newest versions, newest first.
    versions: Vec<i64>,
    /// There are older versions than those listed.
    older: bool,
    updated: String,
}

#[derive(Template)]
#[template(path = "workflows.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<Row>,
    next: Option<String>,
    can_create: bool,
}

async fn list(
    session: Session,
    Query(query): Query<ListQuery>,
) -> Result<Html<String>, ConsoleError> {
    let path = with_query(
        "/v1/workflow-definitions",
        &[("after", &query.after), ("limit", PAGE_SIZE)],
    );
    let listing: Listing = session.api().get(&path).await?;
    let rows = listing
        .items
        .iter()
        .map(|d| {
            let latest = d["latest_version"].as_i64().unwrap_or(1);
            Row {
                id: text_at(&d["id"]),
                name: text_at(&d["name"]),
                latest,
                versions: (1.max(latest - LISTED_VERSIONS + 1)..=latest)
                    .rev()
                    .collect(),
                older: latest > LISTED_VERSIONS,
                updated: when(&d["updated_at"]),
            }
        })
        .collect();
    let next = listing
        .next_cursor
        .map(|after| with_query("/console/workflows", &[("after", &after)]));
    render(ListPage {
        layout: Layout::new(&session, "Workflows"),
        can_create: session.can(Method::POST, "/v1/workflow-definitions"),
        rows,
        next,
    })
}

// ---------------------------------------------------------------------------------------------
// The editor

/// One problem (or warning) as the editor shows it.
pub struct Shown {
    /// As the validation reports it, relative to the definition (`/steps/3/config/url`).
    pub pointer: String,
    /// The id of the step it is about ("" for the document as a whole).
    pub step: String,
    /// Where, in words: "notify · config.url", "start", "the definition".
    pub place: String,
    pub message: String,
}

/// The side panel: the problems and the graph.
pub struct Check {
    pub problems: Vec<Shown>,
    pub warnings: Vec<Shown>,
    pub graph: String,
    /// The API said the definition is valid.
    pub valid: bool,
    /// The channels of each notification, reminder and escalation step, as checkboxes.
    pub channels: Vec<Channels>,
}

/// One notification, reminder or escalation step's channels.
pub struct Channels {
    pub index: usize,
    pub step: String,
    /// Each channel there is, and whether the step uses it.
    pub options: Vec<(&'static str, bool)>,
}

fn channels_of(definition: &Value) -> Vec<Channels> {
    definition
        .get("steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, step)| {
            matches!(
                step.get("type").and_then(Value::as_str),
                Some("SEND_NOTIFICATION" | "SEND_REMINDER" | "ESCALATE")
            )
        })
        .map(|(index, step)| {
            let used = used_channels(step);
            Channels {
                index,
                step: step_key(step, index),
                options: Channel::ALL
                    .iter()
                    .map(|c| (c.as_str(), used.iter().any(|u| u == c.as_str())))
                    .collect(),
            }
        })
        .collect()
}

fn used_channels(step: &Value) -> Vec<String> {
    match step.pointer("/config/channels") {
        None => vec![Channel::DEFAULT.as_str().to_owned()],
        Some(list) => list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect(),
    }
}

/// The definition with `channel` added to or taken from step `index`'s channels; None when
/// there is no such step to change.
fn toggle_channel(mut definition: Value, index: usize, channel: &str) -> Option<Value> {
    let step = definition
        .get_mut("steps")?
        .get_mut(index)?
        .as_object_mut()?;
    let mut used = used_channels(&Value::Object(step.clone()));
    if let Some(at) = used.iter().position(|c| c == channel) {
        used.remove(at);
    } else {
        used.push(channel.to_owned());
    }
    let config = step
        .entry("config")
        .or_insert_with(|| Value::Object(serde_json::Map::new()))
        .as_object_mut()?;
    config.insert("channels".to_owned(), json!(used));
    Some(definition)
}

#[derive(Template)]
#[template(path = "workflow_check.html")]
struct CheckFragment {
    check: Check,
}

#[derive(Template)]
#[template(path = "workflow_edit.html")]
struct EditPage {
    layout: Layout,
    /// None for a new definition.
    id: Option<String>,
    name: String,
    text: String,
    /// The version shown, and the newest (existing definitions).
    version: i64,
    latest: i64,
    versions: Vec<i64>,
    action: String,
    can_save: bool,
    /// The text holds masked webhook header values, which must be typed again to save.
    masked: bool,
    name_error: Option<String>,
    refusal: Option<String>,
    check: Check,
}

impl EditPage {
    fn title(&self) -> String {
        match &self.id {
            None => "New workflow".to_owned(),
            Some(_) => self.name.clone(),
        }
    }
}

async fn new_definition(session: Session) -> Result<Html<String>, ConsoleError> {
    let check = check_text(&session, STARTER).await?;
    render(EditPage {
        layout: Layout::new(&session, "Workflows"),
        id: None,
        name: String::new(),
        text: STARTER.to_owned(),
        version: 0,
        latest: 0,
        versions: Vec::new(),
        action: "/console/workflows/new".to_owned(),
        can_save: session.can(Method::POST, "/v1/workflow-definitions"),
        masked: false,
        name_error: None,
        refusal: None,
        check,
    })
}

#[derive(Deserialize)]
struct VersionQuery {
    #[serde(default)]
    version: Option<String>,
}

async fn show(
    session: Session,
    Path(definition_id): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<Html<String>, ConsoleError> {
    let path = format!("/v1/workflow-definitions/{}", segment(&definition_id));
    let stored: Value = session.api().get(&path).await?;
    let latest = stored["latest_version"].as_i64().unwrap_or(1);
    let wanted = query
        .version
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ConsoleError::BadRequest("the version is not a number".to_owned()))
        })
        .transpose()?;
    let (version, definition) = match wanted {
        Some(number) if number != latest => {
            let shown: Value = session
                .api()
                .get(&format!("{path}/versions/{number}"))
                .await?;
            (number, shown["definition"].clone())
        }
        _ => (latest, stored["latest"]["definition"].clone()),
    };
    let text = pretty(&definition);
    let check = check_text(&session, &text).await?;
    render(EditPage {
        layout: Layout::new(&session, "Workflows"),
        name: text_at(&stored["name"]),
        masked: text.contains(MASK),
        text,
        version,
        latest,
        versions: (1..=latest).rev().collect(),
        action: format!("/console/workflows/{}", segment(&definition_id)),
        can_save: session.can(
            Method::POST,
            "/v1/workflow-definitions/{definition_id}/versions",
        ),
        id: Some(text_at(&stored["id"])),
        name_error: None,
        refusal: None,
        check,
    })
}

/// Keys written first, in this order, wherever they appear (the rest follow alphabetically).
const KEY_ORDER: [&str; 7] = [
    "version",
    "start",
    "steps",
    "id",
    "type",
    "config",
    "transitions",
];
/// A value shorter than this (with its indent) is written on one line.
const LINE: usize = 88;

/// A definition as people write it: the document, its steps list and each step broken over
/// lines, keys in the order of the reference (`id`, `type`, `config`, `transitions`), and
/// short values kept on one line.
fn pretty(definition: &Value) -> String {
    let mut out = String::new();
    write_pretty(definition, 0, 3, &mut out);
    out.push('\n');
    out
}

fn ordered(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by_key(|(key, _)| {
        (
            KEY_ORDER
                .iter()
                .position(|k| k == key)
                .unwrap_or(KEY_ORDER.len()),
            key.as_str(),
        )
    });
    entries
}

fn inline(value: &Value) -> String {
    match value {
        Value::Object(map) if !map.is_empty() => format!(
            "{{ {} }}",
            ordered(map)
                .into_iter()
                .map(|(key, value)| format!("{}: {}", Value::from(key.as_str()), inline(value)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(inline).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

/// Writes `value` at `indent`; the first `break_levels` levels of containers always break.
fn write_pretty(value: &Value, indent: usize, break_levels: usize, out: &mut String) {
    let flat = inline(value);
    let breakable = matches!(value, Value::Object(m) if !m.is_empty())
        || matches!(value, Value::Array(a) if !a.is_empty());
    if !breakable || (break_levels == 0 && indent + flat.len() <= LINE) {
        out.push_str(&flat);
        return;
    }
    let pad = " ".repeat(indent + 2);
    let next = break_levels.saturating_sub(1);
    match value {
        Value::Object(map) => {
            out.push_str("{\n");
            let entries = ordered(map);
            for (index, (key, item)) in entries.iter().enumerate() {
                out.push_str(&pad);
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push_str(": ");
                write_pretty(item, indent + 2, next, out);
                out.push_str(if index + 1 < entries.len() {
                    ",\n"
                } else {
                    "\n"
                });
            }
            out.push_str(&" ".repeat(indent));
            out.push('}');
        }
        Value::Array(items) => {
            out.push_str("[\n");
            for (index, item) in items.iter().enumerate() {
                out.push_str(&pad);
                write_pretty(item, indent + 2, next, out);
                out.push_str(if index + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&" ".repeat(indent));
            out.push(']');
        }
        _ => out.push_str(&flat),
    }
}

/// The fields of a urlencoded form, each once (the last value wins).
fn form_fields(body: &[u8]) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// POST /console/workflows/check (htmx, as you type): the side panel for the text.
async fn check(session: Session, body: Bytes) -> Result<Html<String>, ConsoleError> {
    let fields = form_fields(&body);
    let text = fields.get("definition").map(String::as_str).unwrap_or("");
    let check = check_text(&session, text).await?;
    render(CheckFragment { check })
}

#[derive(Template)]
#[template(path = "workflow_textarea.html")]
struct TextareaFragment {
    text: String,
}

/// POST /console/workflows/channels (htmx, a channel checkbox clicked): the textarea with the
/// step's channels changed; once it is in place, the side panel is told to check it again.
async fn channels(_session: Session, body: Bytes) -> Result<Response, ConsoleError> {
    let fields = form_fields(&body);
    let text = fields.get("definition").cloned().unwrap_or_default();
    let index = fields.get("index").and_then(|i| i.parse::<usize>().ok());
    let channel = fields
        .get("channel")
        .map(String::as_str)
        .filter(|c| Channel::ALL.iter().any(|channel| channel.as_str() == *c));
    let changed = match (parse(&text), index, channel) {
        (Ok(definition), Some(index), Some(channel)) => {
            toggle_channel(definition, index, channel).map(|d| pretty(&d))
        }
        _ => None,
    };
    let Some(text) = changed else {
        return Ok(render(TextareaFragment { text })?.into_response());
    };
    let mut response = render(TextareaFragment { text })?.into_response();
    response.headers_mut().insert(
        "HX-Trigger-After-Swap",
        axum::http::HeaderValue::from_static("definition-changed"),
    );
    Ok(response)
}

/// Parses and validates `text` through the API, and draws it.
async fn check_text(session: &Session, text: &str) -> Result<Check, ConsoleError> {
    let definition = match parse(text) {
        Ok(definition) => definition,
        Err((message, readable)) => {
            let problems = vec![Shown {
                pointer: String::new(),
                step: String::new(),
                place: "the text".to_owned(),
                message,
            }];
            return Ok(Check {
                graph: draw(&readable, None, &BTreeMap::new()),
                problems,
                warnings: Vec::new(),
                valid: false,
                channels: Vec::new(),
            });
        }
    };
    let reply = session
        .api()
        .post(
            "/v1/workflow-definitions/validate",
            &json!({ "definition": definition }),
        )
        .await?;
    let (problems, warnings, valid) = if reply.is_success() {
        (
            shown(&definition, &reply.body["problems"], ""),
            shown(&definition, &reply.body["warnings"], ""),
            reply.body["valid"].as_bool().unwrap_or(false),
        )
    } else {
        (
            vec![Shown {
                pointer: String::new(),
                step: String::new(),
                place: "the definition".to_owned(),
                message: reply.problem(),
            }],
            Vec::new(),
            false,
        )
    };
    Ok(Check {
        graph: draw(&definition, None, &by_step(&problems)),
        channels: channels_of(&definition),
        problems,
        warnings,
        valid,
    })
}

/// The text as JSON, or why not with as much of it as reads as JSON.
fn parse(text: &str) -> Result<Value, (String, Value)> {
    serde_json::from_str(text).map_err(|error| {
        let at = byte_offset(text, error.line(), error.column());
        let message = if text.trim().is_empty() {
            "the definition is empty: write a JSON object".to_owned()
        } else {
            format!("this is not JSON yet: {error}")
        };
        (message, salvage(text, at))
    })
}

/// The byte offset of serde_json's 1-based line and column.
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let before: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (before + column).min(text.len())
}

/// The longest part of `text` before `error_at` that is JSON once its open brackets are
/// closed: cut after a bracket or before a comma, outside strings, and close what is open.
fn salvage(text: &str, error_at: usize) -> Value {
    let bytes = text.as_bytes();
    let mut open: Vec<u8> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut cuts: Vec<(usize, Vec<u8>)> = Vec::new();
    for (index, &byte) in bytes[..error_at.min(bytes.len())].iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                open.push(if byte == b'{' { b'}' } else { b']' });
                cuts.push((index + 1, open.clone()));
            }
            b'}' | b']' => {
                open.pop();
                cuts.push((index + 1, open.clone()));
            }
            b',' => cuts.push((index, open.clone())),
            _ => {}
        }
    }
    // The last few dozen places are enough: the first that closes is the longest part.
    for (at, open) in cuts.iter().rev().take(64) {
        let mut candidate = text[..*at].to_owned();
        candidate.extend(open.iter().rev().map(|&b| b as char));
        if let Ok(value) = serde_json::from_str(&candidate) {
            return value;
        }
    }
    Value::Null
}

/// The API's problems (`[{pointer, message}]`), their pointers made relative to the definition
/// by taking `prefix` off, each placed at its step.
pub(super) fn shown(definition: &Value, problems: &Value, prefix: &str) -> Vec<Shown> {
    problems
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let full = p["pointer"].as_str().unwrap_or_default();
            let pointer = full.strip_prefix(prefix).unwrap_or(full).to_owned();
            let (step, field) = locate(definition, &pointer);
            let place = match (&step, field.is_empty()) {
                (Some(step), true) => step.clone(),
                (Some(step), false) => format!("{step} · {field}"),
                (None, true) => "the definition".to_owned(),
                (None, false) => field.clone(),
            };
            Shown {
                pointer,
                step: step.unwrap_or_default(),
                place,
                message: text_at(&p["message"]),
            }
        })
        .collect()
}

/// The step a pointer is about (its id, read from the definition) and the field inside it:
/// `/steps/3/config/url` is (steps[3].id, `config.url`); `/start` is (none, `start`).
fn locate(definition: &Value, pointer: &str) -> (Option<String>, String) {
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|part| part.replace("~1", "/").replace("~0", "~"))
        .collect();
    if let [steps, index, rest @ ..] = parts.as_slice()
        && steps == "steps"
        && let Ok(index) = index.parse::<usize>()
    {
        let step = definition
            .get("steps")
            .and_then(|s| s.get(index))
            .map_or_else(|| format!("#{}", index + 1), |s| step_key(s, index));
        return (Some(step), rest.join("."));
    }
    (None, parts.join("."))
}

/// The problems of each step, as the graph's titles list them.
fn by_step(problems: &[Shown]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for problem in problems.iter().filter(|p| !p.step.is_empty()) {
        let line = match problem.place.split_once(" · ") {
            Some((_, field)) => format!("{field}: {}", problem.message),
            None => problem.message.clone(),
        };
        map.entry(problem.step.clone()).or_default().push(line);
    }
    map
}

// ---------------------------------------------------------------------------------------------
// Saving

async fn create(session: Session, body: Bytes) -> Result<Response, ConsoleError> {
    let fields = form_fields(&body);
    let name = fields.get("name").cloned().unwrap_or_default();
    let text = fields.get("definition").cloned().unwrap_or_default();
    let page = EditPage {
        layout: Layout::new(&session, "Workflows"),
        id: None,
        name: name.clone(),
        masked: text.contains(MASK),
        text: text.clone(),
        version: 0,
        latest: 0,
        versions: Vec::new(),
        action: "/console/workflows/new".to_owned(),
        can_save: session.can(Method::POST, "/v1/workflow-definitions"),
        name_error: None,
        refusal: None,
        check: check_text(&session, &text).await?,
    };
    let Ok(definition) = parse(&text) else {
        return refused(page);
    };
    let reply = session
        .api()
        .post(
            "/v1/workflow-definitions",
            &json!({ "name": name.trim(), "definition": definition }),
        )
        .await?;
    if reply.status == StatusCode::CREATED {
        let id = text_at(&reply.body["id"]);
        return Ok(Redirect::to(&format!("/console/workflows/{}", segment(&id))).into_response());
    }
    refused(with_refusal(page, &definition, &reply))
}

async fn save_version(
    session: Session,
    Path(definition_id): Path<String>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let fields = form_fields(&body);
    let text = fields.get("definition").cloned().unwrap_or_default();
    let path = format!("/v1/workflow-definitions/{}", segment(&definition_id));
    let stored: Value = session.api().get(&path).await?;
    let latest = stored["latest_version"].as_i64().unwrap_or(1);
    let page = EditPage {
        layout: Layout::new(&session, "Workflows"),
        id: Some(text_at(&stored["id"])),
        name: text_at(&stored["name"]),
        masked: text.contains(MASK),
        text: text.clone(),
        version: latest,
        latest,
        versions: (1..=latest).rev().collect(),
        action: format!("/console/workflows/{}", segment(&definition_id)),
        can_save: session.can(
            Method::POST,
            "/v1/workflow-definitions/{definition_id}/versions",
        ),
        name_error: None,
        refusal: None,
        check: check_text(&session, &text).await?,
    };
    let Ok(definition) = parse(&text) else {
        return refused(page);
    };
    let reply = session
        .api()
        .post(
            &format!("{path}/versions"),
            &json!({ "definition": definition }),
        )
        .await?;
    if reply.status == StatusCode::CREATED {
        return Ok(
            Redirect::to(&format!("/console/workflows/{}", segment(&definition_id)))
                .into_response(),
        );
    }
    refused(with_refusal(page, &definition, &reply))
}

/// The page with the API's refusal: the name's complaint beside the name, the definition's
/// beside its steps, anything else above the form.
fn with_refusal(mut page: EditPage, definition: &Value, reply: &Reply) -> EditPage {
    match reply.status {
        StatusCode::UNPROCESSABLE_ENTITY => {
            let errors = &reply.body["errors"];
            let mut others = Vec::new();
            for error in errors.as_array().into_iter().flatten() {
                let pointer = error["pointer"].as_str().unwrap_or_default();
                let message = text_at(&error["message"]);
                if pointer == "/name" {
                    page.name_error = Some(message);
                } else if !pointer.starts_with("/definition") {
                    others.push(message);
                }
            }
            let on_definition: Vec<Value> = errors
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| {
                    e["pointer"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("/definition"))
                })
                .cloned()
                .collect();
            if !on_definition.is_empty() {
                let problems = shown(definition, &Value::Array(on_definition), "/definition");
                page.check.graph = draw(definition, None, &by_step(&problems));
                page.check.problems = problems;
                page.check.valid = false;
            }
            page.refusal = if !others.is_empty() {
                Some(format!("Not saved: {}", others.join("; ")))
            } else if page.check.problems.is_empty() {
                // Only the name was refused: its complaint is beside it.
                None
            } else {
                Some("Not saved: fix the problems shown and save again.".to_owned())
            };
        }
        StatusCode::CONFLICT => page.name_error = Some(reply.problem()),
        _ => page.refusal = Some(format!("Not saved: {}", reply.problem())),
    }
    page
}

fn refused(mut page: EditPage) -> Result<Response, ConsoleError> {
    if page.refusal.is_none() && page.name_error.is_none() {
        page.refusal = Some("Not saved: fix the problems shown and save again.".to_owned());
    }
    Ok((StatusCode::UNPROCESSABLE_ENTITY, render(page)?).into_response())
}

// ---------------------------------------------------------------------------------------------
// The reference

#[derive(Template)]
#[template(path = "workflow_reference.html")]
struct ReferencePage {
    layout: Layout,
    reference: &'static str,
}

async fn reference(session: Session) -> Result<Html<String>, ConsoleError> {
    render(ReferencePage {
        layout: Layout::new(&session, "Workflows"),
        reference: REFERENCE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pointer_names_the_step_by_its_id_and_the_field_inside_it() {
        let definition = json!({"steps": [{"id": "notify"}, {"id": "report"}, {"type": "X"}]});
        assert_eq!(
            locate(&definition, "/steps/1/config/url"),
            (Some("report".to_owned()), "config.url".to_owned())
        );
        assert_eq!(
            locate(&definition, "/steps/0"),
            (Some("notify".to_owned()), String::new())
        );
        assert_eq!(
            locate(&definition, "/steps/2/config/headers/a~1b"),
            (Some("#3".to_owned()), "config.headers.a/b".to_owned())
        );
        assert_eq!(locate(&definition, "/start"), (None, "start".to_owned()));
        assert_eq!(locate(&definition, ""), (None, String::new()));
    }

    #[test]
    fn a_stored_definition_is_shown_as_people_write_it() {
        let stored: Value = serde_json::from_str(STARTER).unwrap();
        let text = pretty(&stored);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), stored);
        assert!(text.starts_with("{\n  \"version\": 1,\n  \"start\": \"notify\",\n  \"steps\": [\n    {\n      \"id\": \"notify\",\n      \"type\": \"SEND_NOTIFICATION\",\n"), "{text}");
        assert!(
            text.contains("      \"config\": { \"duration\": \"72h\" },\n"),
            "{text}"
        );
        assert!(
            text.contains("      \"transitions\": { \"deadline\": \"remind\" }\n"),
            "{text}"
        );
    }

    #[test]
    fn a_channel_checkbox_adds_or_takes_the_channel_from_its_step() {
        let definition = json!({"steps": [
            {"id": "n", "type": "SEND_NOTIFICATION"},
            {"id": "r", "type": "SEND_REMINDER", "config": {"channels": ["push", "webhook"]}},
            {"id": "w", "type": "DEADLINE_CHECK"},
            {"id": "e", "type": "ESCALATE", "config": {"channels": ["webhook"], "template_id": "t", "template_version": 1}}
        ]});
        let shown = channels_of(&definition);
        assert_eq!(shown.len(), 3);
        assert_eq!(shown[2].step, "e");
        assert_eq!(shown[2].options, [("push", false), ("webhook", true)]);
        let escalating = toggle_channel(definition.clone(), 3, "push").unwrap();
        assert_eq!(
            escalating["steps"][3]["config"],
            json!({"channels": ["webhook", "push"], "template_id": "t", "template_version": 1})
        );
        assert_eq!(shown[0].options, [("push", true), ("webhook", false)]);
        assert_eq!(shown[1].step, "r");
        assert_eq!(shown[1].options, [("push", true), ("webhook", true)]);
        let added = toggle_channel(definition.clone(), 0, "webhook").unwrap();
        assert_eq!(
            added["steps"][0]["config"]["channels"],
            json!(["push", "webhook"])
        );
        let taken = toggle_channel(definition.clone(), 1, "push").unwrap();
        assert_eq!(taken["steps"][1]["config"]["channels"], json!(["webhook"]));
        assert!(toggle_channel(definition, 7, "push").is_none());
    }

    #[test]
    fn problems_from_a_save_lose_the_request_prefix_and_are_grouped_by_step() {
        let definition = json!({"steps": [{"id": "wait"}]});
        let problems = json!([
            {"pointer": "/definition/steps/0/config/duration", "message": "not a duration"},
            {"pointer": "/definition", "message": "whole"}
        ]);
        let shown = shown(&definition, &problems, "/definition");
        assert_eq!(shown[0].pointer, "/steps/0/config/duration");
        assert_eq!(shown[0].step, "wait");
        assert_eq!(shown[0].place, "wait · config.duration");
        assert_eq!(shown[1].place, "the definition");
        assert_eq!(
            by_step(&shown),
            BTreeMap::from([(
                "wait".to_owned(),
                vec!["config.duration: not a duration".to_owned()]
            )])
        );
    }

    #[test]
    fn text_that_is_not_json_yet_still_draws_the_steps_before_the_mistake() {
        let text = "{\"version\": 1, \"steps\": [\n  {\"id\": \"a\", \"type\": \"MARK_MISSED\"},\n  {\"id\": \"b\" \"type\": 3}\n]}";
        let (message, readable) = parse(text).unwrap_err();
        assert!(message.contains("line 3"), "{message}");
        assert_eq!(readable["steps"][0]["id"], "a");
        // The step being typed is there, empty, from the bracket that opened it.
        assert_eq!(readable["steps"].as_array().unwrap().len(), 2);
        assert_eq!(readable["steps"][1], json!({}));
        // Typing at the end: everything so far.
        let (_, readable) =
            parse("{\"steps\": [{\"id\": \"a\"}, {\"id\": \"b\", \"ty").unwrap_err();
        assert_eq!(readable["steps"][1]["id"], "b");
        let (_, readable) = parse("not json").unwrap_err();
        assert_eq!(readable, Value::Null);
        assert!(parse(STARTER).is_ok());
    }
}
