//! The campaigns list: every campaign with its status and progress, newest first, filtered by
//! status, a cursor page at a time.

use askama::Template;
use axum::Router;
use axum::extract::Query;
use axum::http::Method;
use axum::response::Html;
use axum::routing::get;
use serde::Deserialize;

use super::{Layout, render};
use crate::api::Listing;
use crate::api::with_query;
use crate::session::Session;
use crate::views::progress::Counts;
use crate::views::{text, when};
use crate::{Console, ConsoleError};

const PAGE_SIZE: &str = "25";
pub const STATUSES: [&str; 4] = ["CREATED", "ACTIVE", "COMPLETED", "CANCELLED"];

pub fn routes() -> Router<Console> {
    Router::new().route("/console/campaigns", get(list))
}

#[derive(Deserialize)]
struct Filter {
    #[serde(default)]
    status: String,
    #[serde(default)]
    after: String,
}

struct Row {
    id: String,
    name: String,
    title: String,
    status: String,
    started: String,
    finished: String,
    counts: Counts,
}

#[derive(Template)]
#[template(path = "campaigns.html")]
struct Page {
    layout: Layout,
    status: String,
    statuses: Vec<(&'static str, bool)>,
    rows: Vec<Row>,
    next: Option<String>,
    can_create: bool,
}

async fn list(
    session: Session,
    Query(filter): Query<Filter>,
) -> Result<Html<String>, ConsoleError> {
    let status = if STATUSES.contains(&filter.status.as_str()) {
        filter.status
    } else {
        String::new()
    };
    let path = with_query(
        "/v1/campaigns",
        &[
            ("status", &status),
            ("after", &filter.after),
            ("limit", PAGE_SIZE),
            ("order", "newest"),
        ],
    );
    let listing: Listing = session.api().get(&path).await?;
    let rows = listing
        .items
        .iter()
        .map(|c| Row {
            id: text(&c["id"]),
            name: text(&c["name"]),
            title: text(&c["title"]),
            status: text(&c["status"]),
            started: when(&c["started_at"]),
            finished: when(&c["finished_at"]),
            counts: serde_json::from_value(c["counts"].clone()).unwrap_or_default(),
        })
        .collect();
    let next = listing.next_cursor.map(|after| {
        with_query(
            "/console/campaigns",
            &[("status", &status), ("after", &after)],
        )
    });
    render(Page {
        layout: Layout::new(&session, "Campaigns"),
        can_create: session.can(Method::POST, "/v1/campaigns"),
        statuses: STATUSES.iter().map(|s| (*s, *s == status)).collect(),
        status,
        rows,
        next,
    })
}
