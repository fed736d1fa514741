//! Message templates: the list, a new template, and a template's page with its versions and an
//! editor whose preview is the API's own rendering.
//!
//! The API previews saved versions only (`POST /v1/templates/{id}/versions/{v}/preview`), and
//! its Markdown sanitiser is not exposed to the console, so the preview beside the editor is
//! always the saved version, as a recipient would see it; while the text differs from it the
//! page says so ("save to preview changes"), rather than guess with a second renderer. The
//! variables listed are the draft's, found by the same function the API lists them with.

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use pidgr_workflows::template::placeholders;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Layout, render};
use crate::api::Listing;
use crate::api::{Reply, segment, with_query};
use crate::session::Session;
use crate::views::{text, when};
use crate::{Console, ConsoleError};

const PAGE_SIZE: &str = "50";
/// Versions are read a page at a time; a template with more than this many pages of versions
/// lists its first ones only.
const MAX_VERSION_PAGES: usize = 10;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/templates", get(list).post(create))
        .route("/console/templates/new", get(new_template))
        .route("/console/templates/{template_id}", get(show))
        .route(
            "/console/templates/{template_id}/versions",
            post(save_version),
        )
        .route("/console/templates/{template_id}/preview", post(preview))
}

/// The API's refusal of a form, shown beside it: the problem and each field's complaint.
pub(super) struct Refusal {
    pub detail: String,
    pub fields: Vec<String>,
}

impl Refusal {
    pub(super) fn of(reply: &Reply) -> Self {
        Refusal {
            detail: reply.problem(),
            fields: reply
                .field_errors()
                .into_iter()
                .map(|(pointer, detail)| {
                    let field = pointer.trim_start_matches('/').replace('/', " › ");
                    if field.is_empty() {
                        detail
                    } else {
                        format!("{field}: {detail}")
                    }
                })
                .collect(),
        }
    }

    pub(super) fn says(detail: impl Into<String>) -> Self {
        Refusal {
            detail: detail.into(),
            fields: Vec::new(),
        }
    }
}

/// The fields of a urlencoded form, each once (the last value wins).
pub(super) fn form_fields(body: &[u8]) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    after: String,
}

struct Row {
    id: String,
    name: String,
    latest_version: i64,
    updated: String,
}

#[derive(Template)]
#[template(path = "templates.html")]
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
        "/v1/templates",
        &[("after", &query.after), ("limit", PAGE_SIZE)],
    );
    let listing: Listing = session.api().get(&path).await?;
    let rows = listing
        .items
        .iter()
        .map(|t| Row {
            id: text(&t["id"]),
            name: text(&t["name"]),
            latest_version: t["latest_version"].as_i64().unwrap_or_default(),
            updated: when(&t["updated_at"]),
        })
        .collect();
    render(ListPage {
        layout: Layout::new(&session, "Templates"),
        rows,
        next: listing
            .next_cursor
            .map(|after| with_query("/console/templates", &[("after", &after)])),
        can_create: session.can(Method::POST, "/v1/templates"),
    })
}

#[derive(Template)]
#[template(path = "template_new.html")]
struct NewPage {
    layout: Layout,
    name: String,
    title: String,
    markdown: String,
    variables: Vec<String>,
    refusal: Option<Refusal>,
}

async fn new_template(session: Session) -> Result<Html<String>, ConsoleError> {
    if !session.can(Method::POST, "/v1/templates") {
        return Err(ConsoleError::Api {
            status: StatusCode::FORBIDDEN,
            detail: "Your role may not create templates.".to_owned(),
        });
    }
    render(NewPage {
        layout: Layout::new(&session, "Templates"),
        name: String::new(),
        title: String::new(),
        markdown: String::new(),
        variables: Vec::new(),
        refusal: None,
    })
}

/// The draft's variables, as the API will list them once saved.
fn variables_of(title: &str, markdown: &str) -> Vec<String> {
    let mut names = placeholders(title);
    names.extend(placeholders(markdown));
    names.into_iter().collect()
}

/// POST /console/templates: creates the template (its version 1), then opens it.
async fn create(session: Session, body: Bytes) -> Result<Response, ConsoleError> {
    let form = form_fields(&body);
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let (name, title, markdown) = (field("name"), field("title"), field("markdown"));
    let reply = session
        .api()
        .post(
            "/v1/templates",
            &json!({ "name": name, "title": title, "body": markdown }),
        )
        .await?;
    if reply.is_success() {
        let id = text(&reply.body["id"]);
        return Ok(Redirect::to(&format!("/console/templates/{}", segment(&id))).into_response());
    }
    let page = NewPage {
        layout: Layout::new(&session, "Templates"),
        variables: variables_of(&title, &markdown),
        name,
        title,
        markdown,
        refusal: Some(Refusal::of(&reply)),
    };
    Ok((reply.status, render(page)?).into_response())
}

#[derive(Deserialize)]
struct ShowQuery {
    /// The version to show; the latest when absent.
    #[serde(default)]
    version: String,
}

struct VersionItem {
    version: i64,
    created: String,
    current: bool,
}

/// What the preview pane shows.
struct Preview {
    title: String,
    /// The API's sanitised HTML of the saved version's body.
    body_html: String,
    version: i64,
    /// The editor's text differs from the version previewed.
    stale: bool,
    refusal: Option<Refusal>,
}

#[derive(Template)]
#[template(path = "template.html")]
struct ShowPage {
    layout: Layout,
    id: String,
    name: String,
    latest_version: i64,
    version: i64,
    created: String,
    title: String,
    markdown: String,
    versions: Vec<VersionItem>,
    variables: Vec<String>,
    preview: Preview,
    can_save: bool,
    refusal: Option<Refusal>,
}

#[derive(Template)]
#[template(path = "template_preview_fragment.html")]
struct PreviewFragment {
    preview: Preview,
    variables: Vec<String>,
}

/// The saved version `version` previewed by the API for no one in particular (placeholders
/// without a value stay as written); `draft` is the editor's text, `saved` the version's.
async fn preview_of(
    session: &Session,
    template_id: &str,
    version: i64,
    saved: Option<(&str, &str)>,
    draft: (&str, &str),
) -> Result<Preview, ConsoleError> {
    let path = format!(
        "/v1/templates/{}/versions/{version}/preview",
        segment(template_id)
    );
    // Without a member, `name` and `email` would render empty; as themselves they show where
    // each recipient's will go.
    let reply = session
        .api()
        .post(
            &path,
            &json!({ "variables": { "name": "{{name}}", "email": "{{email}}" } }),
        )
        .await?;
    let stale = saved.is_some_and(|saved| saved != draft);
    if !reply.is_success() {
        if reply.status == StatusCode::UNAUTHORIZED {
            return Err(ConsoleError::SignedOut);
        }
        return Ok(Preview {
            title: String::new(),
            body_html: String::new(),
            version,
            stale,
            refusal: Some(Refusal::of(&reply)),
        });
    }
    let rendered = &reply.body["rendered"];
    Ok(Preview {
        title: text(&rendered["title"]),
        body_html: text(&rendered["body_html"]),
        version,
        stale,
        refusal: None,
    })
}

async fn versions_of(session: &Session, template_id: &str) -> Result<Vec<Value>, ConsoleError> {
    let mut versions = Vec::new();
    let mut after = String::new();
    for _ in 0..MAX_VERSION_PAGES {
        let path = with_query(
            &format!("/v1/templates/{}/versions", segment(template_id)),
            &[("after", &after), ("limit", "500")],
        );
        let page: Listing = session.api().get(&path).await?;
        versions.extend(page.items);
        match page.next_cursor {
            Some(next) => after = next,
            None => break,
        }
    }
    Ok(versions)
}

/// The template's page; `draft` is the editor's text after a refused save.
async fn show_page(
    session: &Session,
    template_id: &str,
    version: Option<i64>,
    draft: Option<(String, String)>,
    refusal: Option<Refusal>,
) -> Result<ShowPage, ConsoleError> {
    let template: Value = session
        .api()
        .get(&format!("/v1/templates/{}", segment(template_id)))
        .await?;
    let latest_version = template["latest_version"].as_i64().unwrap_or(1);
    let shown: Value = match version {
        Some(v) if v != latest_version => {
            session
                .api()
                .get(&format!(
                    "/v1/templates/{}/versions/{v}",
                    segment(template_id)
                ))
                .await?
        }
        _ => template["latest"].clone(),
    };
    let version = shown["version"].as_i64().unwrap_or(latest_version);
    let saved = (text(&shown["title"]), text(&shown["body"]));
    let (title, markdown) = draft.unwrap_or_else(|| saved.clone());
    let mut versions: Vec<VersionItem> = versions_of(session, template_id)
        .await?
        .iter()
        .map(|v| VersionItem {
            version: v["version"].as_i64().unwrap_or_default(),
            created: when(&v["created_at"]),
            current: v["version"].as_i64() == Some(version),
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    let preview = preview_of(
        session,
        template_id,
        version,
        Some((&saved.0, &saved.1)),
        (&title, &markdown),
    )
    .await?;
    Ok(ShowPage {
        layout: Layout::new(session, "Templates"),
        id: template_id.to_owned(),
        name: text(&template["name"]),
        latest_version,
        version,
        created: when(&shown["created_at"]),
        variables: variables_of(&title, &markdown),
        title,
        markdown,
        versions,
        preview,
        can_save: session.can(Method::POST, "/v1/templates/{template_id}/versions"),
        refusal,
    })
}

async fn show(
    session: Session,
    Path(template_id): Path<String>,
    Query(query): Query<ShowQuery>,
) -> Result<Html<String>, ConsoleError> {
    let version = match query.version.as_str() {
        "" => None,
        v => Some(
            v.parse()
                .map_err(|_| ConsoleError::BadRequest("a version is a number".to_owned()))?,
        ),
    };
    render(show_page(&session, &template_id, version, None, None).await?)
}

/// POST /console/templates/{id}/versions: the editor's text becomes the latest version.
async fn save_version(
    session: Session,
    Path(template_id): Path<String>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let form = form_fields(&body);
    let title = form.get("title").cloned().unwrap_or_default();
    let markdown = form.get("markdown").cloned().unwrap_or_default();
    let reply = session
        .api()
        .post(
            &format!("/v1/templates/{}/versions", segment(&template_id)),
            &json!({ "title": title, "body": markdown }),
        )
        .await?;
    if reply.is_success() {
        return Ok(
            Redirect::to(&format!("/console/templates/{}", segment(&template_id))).into_response(),
        );
    }
    let shown = form.get("version").and_then(|v| v.parse().ok());
    let page = show_page(
        &session,
        &template_id,
        shown,
        Some((title, markdown)),
        Some(Refusal::of(&reply)),
    )
    .await?;
    Ok((reply.status, render(page)?).into_response())
}

/// POST /console/templates/{id}/preview (htmx, as the editor changes): the saved version's
/// preview, marked stale while the text differs from it, and the draft's variables.
async fn preview(
    session: Session,
    Path(template_id): Path<String>,
    body: Bytes,
) -> Result<Html<String>, ConsoleError> {
    let form = form_fields(&body);
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let (title, markdown) = (field("title"), field("markdown"));
    let version: i64 = field("version")
        .parse()
        .map_err(|_| ConsoleError::BadRequest("a version is a number".to_owned()))?;
    let saved: Value = session
        .api()
        .get(&format!(
            "/v1/templates/{}/versions/{version}",
            segment(&template_id)
        ))
        .await?;
    let (saved_title, saved_body) = (text(&saved["title"]), text(&saved["body"]));
    let preview = preview_of(
        &session,
        &template_id,
        version,
        Some((&saved_title, &saved_body)),
        (&title, &markdown),
    )
    .await?;
    render(PreviewFragment {
        preview,
        variables: variables_of(&title, &markdown),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drafts_variables_are_those_of_its_title_and_body_sorted_once() {
        assert_eq!(
            variables_of("Hello {{ name }}", "By {{deadline}}, {{name}}."),
            vec!["deadline".to_owned(), "name".to_owned()]
        );
        assert!(variables_of("Plain", "text").is_empty());
    }

    #[test]
    fn a_refusal_names_each_field_it_complains_about() {
        let reply = Reply {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: json!({
                "detail": "the body is invalid",
                "errors": [
                    { "pointer": "/title", "detail": "must not be empty" },
                    { "pointer": "", "detail": "too large" },
                ],
            }),
        };
        let refusal = Refusal::of(&reply);
        assert_eq!(refusal.detail, "the body is invalid");
        assert_eq!(
            refusal.fields,
            vec!["title: must not be empty", "too large"]
        );
    }
}
