//! A new campaign: name and title, a template version, an audience (teams, groups, members
//! found by a live search), a workflow (a saved definition, or JSON written in place), and a
//! preview of the message for one recipient with the variables that would have no value.
//!
//! Creating is `POST /v1/campaigns`, which checks everything at once; its refusal is shown
//! field by field beside the form, with what was entered kept. A created campaign is not
//! started: the campaign's own page has the Start button.
//!
//! The API has no search over members, so the member search reads the directory a page at a
//! time (at most [`SEARCH_PAGES`] pages) and keeps those whose name, e-mail or ids contain the
//! words typed; an exact external id is also looked up directly, whatever the directory's size.

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::RawQuery;
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::workflows::shown;
use super::{Layout, render};
use crate::api::{segment, with_query};
use crate::session::Session;
use crate::views::text;
use crate::{Console, ConsoleError};

/// The most the lists of the form read (the API's largest page).
const LIST_LIMIT: &str = "500";
/// Members offered in the preview's recipient list.
const PREVIEW_MEMBERS: &str = "200";
/// Pages of 500 members the search reads before it stops.
const SEARCH_PAGES: usize = 10;
/// Matches the search shows.
const SEARCH_RESULTS: usize = 25;
/// Chosen members whose names are read back when the form is shown again.
const MAX_CHOSEN_SHOWN: usize = 200;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/campaigns/new", get(form).post(create))
        .route("/console/campaigns/new/members", get(search_members))
        .route(
            "/console/campaigns/new/preview",
            axum::routing::post(preview),
        )
}

/// What the form holds, as typed.
#[derive(Default)]
struct Draft {
    name: String,
    title: String,
    template: String,
    template_version: String,
    teams: Vec<String>,
    groups: Vec<String>,
    members: Vec<String>,
    /// A saved definition, `<id>:<version>`, or "".
    definition: String,
    definition_json: String,
    preview_member: String,
    q: String,
    /// One key per rendered form, sent as `Idempotency-Key`: a form submitted twice (a double
    /// click, the back button) creates one campaign, and both submits land on it.
    idempotency_key: String,
}

impl Draft {
    fn read(pairs: &[u8]) -> Draft {
        let mut draft = Draft::default();
        for (name, value) in form_urlencoded::parse(pairs) {
            let value = value.into_owned();
            match name.as_ref() {
                "name" => draft.name = value,
                "title" => draft.title = value,
                "template" => draft.template = value,
                "template_version" => draft.template_version = value,
                "teams" if !value.is_empty() => draft.teams.push(value),
                "groups" if !value.is_empty() => draft.groups.push(value),
                "members" if !value.is_empty() && !draft.members.contains(&value) => {
                    draft.members.push(value)
                }
                "definition" => draft.definition = value,
                "definition_json" => draft.definition_json = value,
                "preview_member" => draft.preview_member = value,
                "q" => draft.q = value,
                "idempotency_key" => draft.idempotency_key = value,
                _ => {}
            }
        }
        draft
    }

    /// The saved definition chosen, as (id, version).
    fn saved_definition(&self) -> Option<(&str, &str)> {
        self.definition
            .rsplit_once(':')
            .filter(|(id, _)| !id.is_empty())
    }
}

/// An option of a select, or a checkbox.
struct Choice {
    value: String,
    label: String,
    detail: String,
    selected: bool,
}

/// Complaints beside each field.
#[derive(Default)]
struct Errors {
    name: Vec<String>,
    title: Vec<String>,
    template: Vec<String>,
    template_version: Vec<String>,
    audience: Vec<String>,
    teams: Vec<String>,
    groups: Vec<String>,
    members: Vec<String>,
    definition: Vec<String>,
    definition_json: Vec<String>,
    other: Vec<String>,
}

impl Errors {
    fn is_empty(&self) -> bool {
        [
            &self.name,
            &self.title,
            &self.template,
            &self.template_version,
            &self.audience,
            &self.teams,
            &self.groups,
            &self.members,
            &self.definition,
            &self.definition_json,
            &self.other,
        ]
        .iter()
        .all(|list| list.is_empty())
    }
}

#[derive(Template)]
#[template(path = "new_campaign.html")]
struct Page {
    layout: Layout,
    draft: Draft,
    templates: Vec<Choice>,
    teams: Vec<Choice>,
    groups: Vec<Choice>,
    members: Vec<Choice>,
    definitions: Vec<Choice>,
    preview_members: Vec<Choice>,
    errors: Errors,
    refusal: Option<String>,
    can_create: bool,
    can_edit_workflows: bool,
    preview: Preview,
}

#[derive(Template)]
#[template(path = "new_campaign_members.html")]
struct MemberResults {
    members: Vec<Choice>,
    searched: bool,
}

/// The preview panel's content.
#[derive(Default)]
struct Preview {
    /// Why there is nothing to show yet, or what went wrong.
    note: Option<String>,
    title: String,
    /// The API's sanitised HTML.
    body_html: String,
    unresolved: Vec<String>,
    shown: bool,
    /// Rendered for a recipient (without one, their name and e-mail have no value).
    for_member: bool,
}

#[derive(Template)]
#[template(path = "new_campaign_preview.html")]
struct PreviewFragment {
    preview: Preview,
}

async fn form(session: Session) -> Result<Html<String>, ConsoleError> {
    let draft = Draft::default();
    render(page(&session, draft, Errors::default(), None).await?)
}

/// The form for `draft`, with the lists it chooses from read through the API.
async fn page(
    session: &Session,
    draft: Draft,
    errors: Errors,
    refusal: Option<String>,
) -> Result<Page, ConsoleError> {
    let mut draft = draft;
    if draft.idempotency_key.is_empty() {
        draft.idempotency_key = uuid::Uuid::new_v4().to_string();
    }
    let api = session.api();
    let templates = items(&api.get::<Value>(&list("/v1/templates")).await?)
        .map(|t| Choice {
            selected: text(&t["id"]) == draft.template,
            label: format!(
                "{} (v{})",
                text(&t["name"]),
                t["latest_version"].as_i64().unwrap_or(1)
            ),
            detail: String::new(),
            value: text(&t["id"]),
        })
        .collect();
    let set = |listing: Option<Value>, chosen: &[String]| -> Vec<Choice> {
        listing
            .as_ref()
            .map(items)
            .into_iter()
            .flatten()
            .map(|s| Choice {
                selected: chosen.contains(&text(&s["id"])),
                label: text(&s["name"]),
                detail: format!("{} members", s["member_count"].as_i64().unwrap_or(0)),
                value: text(&s["id"]),
            })
            .collect()
    };
    let teams = set(optional(session, &list("/v1/teams")).await?, &draft.teams);
    let groups = set(optional(session, &list("/v1/groups")).await?, &draft.groups);
    let mut definitions: Vec<Choice> = optional(session, &list("/v1/workflow-definitions"))
        .await?
        .as_ref()
        .map(items)
        .into_iter()
        .flatten()
        .map(|d| {
            let value = format!(
                "{}:{}",
                text(&d["id"]),
                d["latest_version"].as_i64().unwrap_or(1)
            );
            Choice {
                selected: value == draft.definition,
                label: format!(
                    "{} (v{})",
                    text(&d["name"]),
                    d["latest_version"].as_i64().unwrap_or(1)
                ),
                detail: String::new(),
                value,
            }
        })
        .collect();
    if !draft.definition.is_empty() && !definitions.iter().any(|d| d.selected) {
        definitions.push(Choice {
            value: draft.definition.clone(),
            label: draft.definition.clone(),
            detail: String::new(),
            selected: true,
        });
    }
    let members = chosen_members(session, &draft.members).await?;
    let mut preview_members: Vec<Choice> = optional(
        session,
        &with_query("/v1/members", &[("limit", PREVIEW_MEMBERS)]),
    )
    .await?
    .as_ref()
    .map(items)
    .into_iter()
    .flatten()
    .map(|m| member_choice(m, &draft.preview_member))
    .collect();
    for member in &members {
        if !preview_members.iter().any(|p| p.value == member.value) {
            preview_members.push(Choice {
                selected: member.value == draft.preview_member,
                value: member.value.clone(),
                label: member.label.clone(),
                detail: member.detail.clone(),
            });
        }
    }
    Ok(Page {
        layout: Layout::new(session, "Campaigns"),
        templates,
        teams,
        groups,
        members,
        definitions,
        preview_members,
        errors,
        refusal,
        can_create: session.can(Method::POST, "/v1/campaigns"),
        can_edit_workflows: session.can(Method::GET, "/v1/workflow-definitions"),
        preview: Preview {
            note: Some("Choose a template and a recipient to see the message.".to_owned()),
            ..Preview::default()
        },
        draft,
    })
}

fn list(path: &str) -> String {
    with_query(path, &[("limit", LIST_LIMIT)])
}

fn items(listing: &Value) -> impl Iterator<Item = &Value> {
    listing["items"].as_array().into_iter().flatten()
}

/// A list the form can do without (the role may not read teams, say): None when refused.
async fn optional(session: &Session, path: &str) -> Result<Option<Value>, ConsoleError> {
    let reply = session.api().send(Method::GET, path, None).await?;
    if reply.status == StatusCode::UNAUTHORIZED {
        return Err(ConsoleError::SignedOut);
    }
    Ok(reply.is_success().then_some(reply.body))
}

fn member_choice(member: &Value, selected: &str) -> Choice {
    let id = text(&member["id"]);
    let name = text(&member["display_name"]);
    Choice {
        selected: id == selected,
        label: if name.is_empty() { id.clone() } else { name },
        detail: text(&member["email"]),
        value: id,
    }
}

/// The members already chosen, checked, with their names read back.
async fn chosen_members(session: &Session, ids: &[String]) -> Result<Vec<Choice>, ConsoleError> {
    let mut chosen = Vec::with_capacity(ids.len());
    for (index, id) in ids.iter().enumerate() {
        let found = if index < MAX_CHOSEN_SHOWN {
            optional(session, &format!("/v1/members/{}", segment(id))).await?
        } else {
            None
        };
        let mut choice = match found {
            Some(member) => member_choice(&member, ""),
            None => Choice {
                value: id.clone(),
                label: id.clone(),
                detail: String::new(),
                selected: false,
            },
        };
        choice.selected = true;
        chosen.push(choice);
    }
    Ok(chosen)
}

/// GET /console/campaigns/new/members?q=…&members=… (htmx, as you type): the members chosen so
/// far, still checked, then those matching `q`.
async fn search_members(
    session: Session,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, ConsoleError> {
    let draft = Draft::read(query.unwrap_or_default().as_bytes());
    let mut members = chosen_members(&session, &draft.members).await?;
    let words: Vec<String> = draft.q.split_whitespace().map(str::to_lowercase).collect();
    if !words.is_empty() {
        let mut found: Vec<Value> = Vec::new();
        if let Some(listing) = optional(
            &session,
            &with_query("/v1/members", &[("external_id", draft.q.trim())]),
        )
        .await?
        {
            found.extend(items(&listing).cloned());
        }
        let mut after = String::new();
        for _ in 0..SEARCH_PAGES {
            let Some(listing) = optional(
                &session,
                &with_query("/v1/members", &[("limit", LIST_LIMIT), ("after", &after)]),
            )
            .await?
            else {
                break;
            };
            found.extend(items(&listing).filter(|m| matches(m, &words)).cloned());
            match listing["next_cursor"].as_str() {
                Some(next) if found.len() < SEARCH_RESULTS * 2 => after = next.to_owned(),
                _ => break,
            }
        }
        for member in &found {
            if members.len() >= draft.members.len() + SEARCH_RESULTS {
                break;
            }
            let choice = member_choice(member, "");
            if !members.iter().any(|m| m.value == choice.value) {
                members.push(choice);
            }
        }
    }
    render(MemberResults {
        members,
        searched: !words.is_empty(),
    })
}

/// Whether every word typed is in the member's name, e-mail, external id or id.
fn matches(member: &Value, words: &[String]) -> bool {
    let haystack = ["display_name", "email", "external_id", "id"]
        .iter()
        .map(|field| text(&member[*field]).to_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    words.iter().all(|word| haystack.contains(word.as_str()))
}

/// POST /console/campaigns/new/preview (htmx): the message for the chosen recipient.
async fn preview(session: Session, body: Bytes) -> Result<Html<String>, ConsoleError> {
    let draft = Draft::read(&body);
    render(PreviewFragment {
        preview: render_preview(&session, &draft).await?,
    })
}

async fn render_preview(session: &Session, draft: &Draft) -> Result<Preview, ConsoleError> {
    let note = |text: &str| Preview {
        note: Some(text.to_owned()),
        ..Preview::default()
    };
    if draft.template.is_empty() {
        return Ok(note(
            "Choose a template and a recipient to see the message.",
        ));
    }
    let template_path = format!("/v1/templates/{}", segment(&draft.template));
    let version = match draft.template_version.trim() {
        "" => {
            let Some(template) = optional(session, &template_path).await? else {
                return Ok(note("This template cannot be read."));
            };
            template["latest_version"].as_i64().unwrap_or(1)
        }
        typed => match typed.parse::<i64>() {
            Ok(version) => version,
            Err(_) => return Ok(note("The template version is not a number.")),
        },
    };
    let mut request = Map::new();
    if !draft.preview_member.is_empty() {
        request.insert("member_id".into(), json!(draft.preview_member));
    }
    if !draft.title.trim().is_empty() {
        request.insert("campaign_title".into(), json!(draft.title.trim()));
    }
    let variables = step_variables(session, draft).await?;
    if !variables.is_empty() {
        request.insert("variables".into(), json!(variables));
    }
    let reply = session
        .api()
        .post(
            &format!("{template_path}/versions/{version}/preview"),
            &Value::Object(request),
        )
        .await?;
    if !reply.is_success() {
        let mut why = reply.problem();
        let fields: Vec<String> = reply.field_errors().into_iter().map(|(_, m)| m).collect();
        if !fields.is_empty() {
            why = fields.join("; ");
        }
        return Ok(note(&format!("No preview: {why}")));
    }
    let rendered = &reply.body["rendered"];
    Ok(Preview {
        note: draft
            .preview_member
            .is_empty()
            .then(|| "No recipient chosen: their name and e-mail are left out.".to_owned()),
        title: text(&rendered["title"]),
        body_html: text(&rendered["body_html"]),
        unresolved: reply.body["unresolved"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect(),
        shown: true,
        for_member: !draft.preview_member.is_empty(),
    })
}

/// The variables the workflow gives every recipient: those every notification and reminder
/// step sets (a variable only some steps set is missing from the others' messages, and
/// creating the campaign is refused for it), with the values of the first such step, the
/// first message recipients see. From the saved definition chosen or the JSON written.
async fn step_variables(
    session: &Session,
    draft: &Draft,
) -> Result<BTreeMap<String, String>, ConsoleError> {
    let definition = match draft.saved_definition() {
        Some((id, version)) => optional(
            session,
            &format!(
                "/v1/workflow-definitions/{}/versions/{}",
                segment(id),
                segment(version)
            ),
        )
        .await?
        .map(|v| v["definition"].clone()),
        None => serde_json::from_str::<Value>(&draft.definition_json).ok(),
    };
    Ok(definition
        .as_ref()
        .map(common_variables)
        .unwrap_or_default())
}

fn common_variables(definition: &Value) -> BTreeMap<String, String> {
    let sets: Vec<&Map<String, Value>> = definition["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["type"] == "SEND_NOTIFICATION" || s["type"] == "SEND_REMINDER")
        .map(|s| s["config"]["variables"].as_object())
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    let Some((first, rest)) = sets.split_first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter(|(name, _)| rest.iter().all(|set| set.contains_key(*name)))
        .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.to_owned())))
        .collect()
}

/// POST /console/campaigns/new: creates the campaign, or shows the form again with every
/// problem beside its field.
async fn create(session: Session, body: Bytes) -> Result<Response, ConsoleError> {
    let draft = Draft::read(&body);
    let mut errors = Errors::default();
    let mut request = json!({
        "name": draft.name.trim(),
        "title": draft.title.trim(),
        "template_id": draft.template,
        "audience": {
            "teams": draft.teams,
            "groups": draft.groups,
            "members": draft.members.iter().map(|id| json!({"member_id": id})).collect::<Vec<_>>(),
        },
    });
    match draft.template_version.trim() {
        "" => {}
        typed => match typed.parse::<i64>() {
            Ok(version) => request["template_version"] = json!(version),
            Err(_) => errors
                .template_version
                .push("write a version number, or leave it empty for the latest".to_owned()),
        },
    }
    let mut inline = Value::Null;
    match draft.saved_definition() {
        Some((id, version)) => {
            request["definition_id"] = json!(id);
            match version.parse::<i64>() {
                Ok(version) => request["definition_version"] = json!(version),
                Err(_) => errors
                    .definition
                    .push("choose a saved workflow from the list".to_owned()),
            }
        }
        None if draft.definition_json.trim().is_empty() => {}
        None => match serde_json::from_str::<Value>(&draft.definition_json) {
            Ok(definition) => {
                request["definition"] = definition.clone();
                inline = definition;
            }
            Err(error) => errors
                .definition_json
                .push(format!("this is not JSON: {error}")),
        },
    }
    if !errors.is_empty() {
        return again(&session, draft, errors, None).await;
    }
    let reply = session
        .api()
        .post_once("/v1/campaigns", &request, &draft.idempotency_key)
        .await?;
    if reply.status == StatusCode::CREATED {
        let id = text(&reply.body["id"]);
        return Ok(Redirect::to(&format!("/console/campaigns/{}", segment(&id))).into_response());
    }
    if reply.status != StatusCode::UNPROCESSABLE_ENTITY {
        let refusal = Some(format!("Not created: {}", reply.problem()));
        return again(&session, draft, errors, refusal).await;
    }
    let saved = draft.saved_definition().is_some();
    for (pointer, message) in reply.field_errors() {
        let field = |prefix: &str| pointer == prefix || pointer.starts_with(&format!("{prefix}/"));
        let list = if field("/name") {
            &mut errors.name
        } else if field("/title") {
            &mut errors.title
        } else if field("/template_id") {
            &mut errors.template
        } else if field("/template_version") {
            &mut errors.template_version
        } else if field("/audience/teams") {
            &mut errors.teams
        } else if field("/audience/groups") {
            &mut errors.groups
        } else if field("/audience/members") {
            &mut errors.members
        } else if field("/audience") {
            &mut errors.audience
        } else if field("/definition_id") || field("/definition_version") {
            &mut errors.definition
        } else if field("/definition") {
            if pointer != "/definition" && !saved {
                let place = &shown(
                    &inline,
                    &json!([{ "pointer": pointer, "message": message }]),
                    "/definition",
                )[0];
                let where_ = if place.step.is_empty() {
                    place.place.clone()
                } else {
                    format!("step {}", place.place)
                };
                errors.definition_json.push(format!("{where_}: {message}"));
                continue;
            }
            if saved {
                &mut errors.definition
            } else {
                &mut errors.definition_json
            }
        } else {
            &mut errors.other
        };
        list.push(message);
    }
    let refusal = Some("Not created: fix what is marked below and try again.".to_owned());
    again(&session, draft, errors, refusal).await
}

async fn again(
    session: &Session,
    draft: Draft,
    errors: Errors,
    refusal: Option<String>,
) -> Result<Response, ConsoleError> {
    let refusal = refusal.or_else(|| Some("Not created: fix what is marked below.".to_owned()));
    let mut page = page(session, draft, errors, refusal).await?;
    page.preview = render_preview(session, &page.draft).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, render(page)?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_with_repeated_fields_keeps_every_choice_once() {
        let draft = Draft::read(
            b"name=Q4&teams=t1&teams=t2&groups=&members=m1&members=m2&members=m1&definition=d1%3A3&q=ann",
        );
        assert_eq!(draft.name, "Q4");
        assert_eq!(draft.teams, ["t1", "t2"]);
        assert!(draft.groups.is_empty());
        assert_eq!(draft.members, ["m1", "m2"]);
        assert_eq!(draft.saved_definition(), Some(("d1", "3")));
        assert_eq!(draft.q, "ann");
        assert_eq!(Draft::read(b"definition=").saved_definition(), None);
    }

    #[test]
    fn the_preview_takes_the_variables_every_notification_step_sets() {
        let definition = json!({"steps": [
            {"type": "SEND_NOTIFICATION", "config": {"variables": {"deadline": "Friday", "room": "4"}}},
            {"type": "DEADLINE_CHECK", "config": {"duration": "1h"}},
            {"type": "SEND_REMINDER", "config": {"variables": {"deadline": "Monday"}}}
        ]});
        assert_eq!(
            common_variables(&definition),
            BTreeMap::from([("deadline".to_owned(), "Friday".to_owned())])
        );
        // A step without variables gives none to anyone.
        let without = json!({"steps": [
            {"type": "SEND_NOTIFICATION", "config": {"variables": {"deadline": "Friday"}}},
            {"type": "SEND_REMINDER"}
        ]});
        assert!(common_variables(&without).is_empty());
    }

    #[test]
    fn the_member_search_needs_every_word_somewhere() {
        let member = json!({"id": "m1", "display_name": "Ann Lee", "email": "ann@example.com", "external_id": "E-17"});
        assert!(matches(&member, &["ann".into(), "lee".into()]));
        assert!(matches(&member, &["e-17".into()]));
        assert!(!matches(&member, &["ann".into(), "bob".into()]));
    }
}
