//! One campaign: who and what it is, its counts (refreshing themselves while it runs), its
//! acknowledgements over time, its workflow with the current step, its deliveries (filtered, a
//! cursor page at a time, or every one of them as CSV), its activity log, a link to its run in
//! the Temporal Web UI, and Start / Cancel for a role that may run campaigns.
//!
//! Everything is read through the API as the signed-in key; Start and Cancel are the API's own
//! routes, so what they refuse is refused here in the API's words.

use std::collections::{BTreeMap, VecDeque};

use askama::Template;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::{Layout, render};
use crate::api::Listing;
use crate::api::{segment, with_query};
use crate::session::Session;
use crate::views::chart::AckChart;
use crate::views::progress::Counts;
use crate::views::{text, when};
use crate::{Console, ConsoleError};

/// Deliveries shown per page of the table.
const TABLE_PAGE: &str = "50";
/// Deliveries read per API call for the chart and the CSV export (the API's largest page).
const BIG_PAGE: &str = "500";
/// The chart reads at most this many pages of acknowledged deliveries on each refresh; past
/// that it scales a sample (see [`AckChart`]), so a large campaign costs the same every 2 s.
const CHART_PAGES: usize = 4;
/// The activity log is walked at most this many pages (of 500) to find its latest entries.
const ACTIVITY_PAGES: usize = 10;
/// Entries shown in the timeline, newest first.
const ACTIVITY_SHOWN: usize = 50;
/// htmx stops polling when a poll answers with this status.
const STOP_POLLING: u16 = 286;

/// Delivery statuses in the order the filters and the API name them.
const DELIVERY_STATUSES: [&str; 6] = [
    "PENDING",
    "SENT",
    "READ",
    "ACKNOWLEDGED",
    "MISSED",
    "FAILED",
];
/// Everyone who may still acknowledge.
const UNACKNOWLEDGED: &str = "PENDING,SENT,READ";

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/campaigns/{id}", get(page))
        .route("/console/campaigns/{id}/live", get(live))
        .route("/console/campaigns/{id}/deliveries.csv", get(export))
        .route("/console/campaigns/{id}/start", post(start))
        .route("/console/campaigns/{id}/cancel", post(cancel))
}

/// A campaign that has not finished: its counts can still change.
fn is_running(status: &str) -> bool {
    matches!(status, "CREATED" | "ACTIVE")
}

/// The `?status=` filter as the API takes it: known statuses only, each once, in a fixed
/// order ("" for all), so the active tab is recognised however the link was written.
fn status_filter(raw: &str) -> String {
    let named: Vec<&str> = raw.split(',').map(str::trim).collect();
    let kept: Vec<&str> = DELIVERY_STATUSES
        .into_iter()
        .filter(|status| named.contains(status))
        .collect();
    if kept.len() == DELIVERY_STATUSES.len() {
        String::new()
    } else {
        kept.join(",")
    }
}

/// The console's address of campaign `id` (its id encoded as one path segment).
fn page_path(id: &str) -> String {
    format!("/console/campaigns/{}", segment(id))
}

fn api_path(id: &str, tail: &str) -> String {
    format!("/v1/campaigns/{}{tail}", segment(id))
}

/// A delivery list item: the delivery beside its `position`, whether the API nests it under
/// `delivery` or flattens it into the item.
fn delivery_of(item: &Value) -> &Value {
    if item["delivery"].is_object() {
        &item["delivery"]
    } else {
        item
    }
}

/// A time short enough for a table cell ("27 Nov 16:40"); "—" when absent.
fn short_when(value: &Value) -> String {
    parse_time(value)
        .map(|t| t.format("%-d %b %H:%M").to_string())
        .unwrap_or_else(|| "—".to_owned())
}

fn parse_time(value: &Value) -> Option<DateTime<Utc>> {
    value
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|t| t.with_timezone(&Utc))
}

// ---------------------------------------------------------------------------------------------
// The live part: counts, progress bar, status and chart.

/// What `div#live` shows; rendered in the page and, alone, by the fragment route it polls.
struct Live {
    status: String,
    counts: Counts,
    current_step: String,
    chart: String,
    chart_note: String,
}

impl Live {
    fn unacknowledged(&self) -> u64 {
        self.counts.pending + self.counts.sent + self.counts.read
    }
}

async fn live_of(session: &Session, id: &str, campaign: &Value) -> Result<Live, ConsoleError> {
    let counts: Counts = serde_json::from_value(campaign["counts"].clone()).unwrap_or_default();
    let status = text(&campaign["status"]);
    let (chart, chart_note) = chart_of(session, id, campaign, &counts).await?;
    Ok(Live {
        current_step: text(&campaign["current_step"]),
        status,
        counts,
        chart,
        chart_note,
    })
}

/// The acknowledgements chart, from the start (or creation) to the finish (or now), and a note
/// when it was drawn from a sample.
async fn chart_of(
    session: &Session,
    id: &str,
    campaign: &Value,
    counts: &Counts,
) -> Result<(String, String), ConsoleError> {
    let now = Utc::now();
    let start = parse_time(&campaign["started_at"])
        .or_else(|| parse_time(&campaign["created_at"]))
        .unwrap_or(now);
    let end = parse_time(&campaign["finished_at"])
        .unwrap_or(now)
        .max(start);
    let mut times = Vec::new();
    let mut after = String::new();
    let mut complete = counts.acknowledged == 0;
    for _ in 0..CHART_PAGES {
        if complete {
            break;
        }
        let path = with_query(
            &api_path(id, "/deliveries"),
            &[
                ("status", "ACKNOWLEDGED"),
                ("after", &after),
                ("limit", BIG_PAGE),
            ],
        );
        let page: Listing = session.api().get(&path).await?;
        times.extend(
            page.items
                .iter()
                .filter_map(|item| parse_time(&delivery_of(item)["acknowledged_at"])),
        );
        match page.next_cursor {
            Some(next) => after = next,
            None => complete = true,
        }
    }
    // The counts and the pages are read a moment apart; the larger is the truer total.
    let total = counts.acknowledged.max(times.len() as u64);
    let note = if complete {
        String::new()
    } else {
        format!(
            "Estimated from {} of {total} acknowledgements.",
            times.len()
        )
    };
    let chart = AckChart {
        times: &times,
        total,
        start,
        end,
    };
    Ok((chart.draw(), note))
}

#[derive(Template)]
#[template(path = "campaign_live.html")]
struct LiveFragment {
    live: Live,
}

#[derive(Deserialize)]
struct LiveQuery {
    /// The status the page was drawn with: when it changes, the whole page is redrawn (its
    /// actions, header, graph and lists all depend on it).
    #[serde(default)]
    was: String,
}

/// GET /console/campaigns/{id}/live: the inside of `div#live`, polled every 2 s. A finished
/// campaign answers 286, which tells htmx to stop polling.
async fn live(
    session: Session,
    Path(id): Path<String>,
    Query(query): Query<LiveQuery>,
) -> Result<Response, ConsoleError> {
    let campaign: Value = session.api().get(&api_path(&id, "")).await?;
    let live = live_of(&session, &id, &campaign).await?;
    let finished = !is_running(&live.status);
    let changed = !query.was.is_empty() && query.was != live.status;
    let html = LiveFragment { live }.render()?;
    let status = if finished {
        StatusCode::from_u16(STOP_POLLING).expect("286 is a valid status")
    } else {
        StatusCode::OK
    };
    let mut response = (status, Html(html)).into_response();
    if changed {
        response
            .headers_mut()
            .insert("HX-Refresh", HeaderValue::from_static("true"));
    }
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// The page.

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    after: String,
}

/// The header's facts about the campaign.
struct Header {
    name: String,
    title: String,
    status: String,
    template_name: String,
    template_href: String,
    template_version: String,
    definition: String,
    recipients: String,
    created: String,
    started: String,
    finished: String,
}

/// One tab of the deliveries filter.
struct FilterTab {
    id: String,
    label: &'static str,
    count: u64,
    href: String,
    active: bool,
}

struct DeliveryRow {
    id: String,
    status: String,
    recipient: String,
    detail: String,
    sent: String,
    read: String,
    acknowledged: String,
    reminders: String,
    outcome: String,
}

struct ActivityItem {
    time: String,
    kind: String,
    label: String,
    step: String,
    message: String,
    details: String,
}

#[derive(Template)]
#[template(path = "campaign.html")]
struct Page {
    layout: Layout,
    base: String,
    c: Header,
    live: Live,
    running: bool,
    problem: Option<String>,
    can_start: bool,
    can_cancel: bool,
    temporal_link: Option<String>,
    graph: String,
    graph_note: String,
    filters: Vec<FilterTab>,
    filter: String,
    rows: Vec<DeliveryRow>,
    first_page: Option<String>,
    next_page: Option<String>,
    export_href: String,
    activity: Vec<ActivityItem>,
    activity_note: String,
}

async fn page(
    session: Session,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Html<String>, ConsoleError> {
    draw(&session, &id, &query, None).await
}

/// The whole page; `problem` is a refused action's reason, shown above the actions.
async fn draw(
    session: &Session,
    id: &str,
    query: &PageQuery,
    problem: Option<String>,
) -> Result<Html<String>, ConsoleError> {
    let api = session.api();
    let campaign: Value = api.get(&api_path(id, "")).await?;
    let live = live_of(session, id, &campaign).await?;
    let status = live.status.clone();
    let base = page_path(id);

    let filter = status_filter(&query.status);
    let listing: Listing = api
        .get(&with_query(
            &api_path(id, "/deliveries"),
            &[
                ("status", &filter),
                ("after", &query.after),
                ("limit", TABLE_PAGE),
            ],
        ))
        .await?;
    let rows = listing.items.iter().map(delivery_row).collect();
    let next_page = listing.next_cursor.map(|after| {
        format!(
            "{}#deliveries-card",
            with_query(&base, &[("status", &filter), ("after", &after)])
        )
    });
    let first_page = (!query.after.is_empty()).then(|| {
        format!(
            "{}#deliveries-card",
            with_query(&base, &[("status", &filter)])
        )
    });
    let export_href = with_query(&format!("{base}/deliveries.csv"), &[("status", &filter)]);

    let (graph, graph_note) = graph_of(session, &campaign, &live.current_step).await?;
    let (activity, activity_note) = activity_of(session, id).await?;

    let header = Header {
        name: text(&campaign["name"]),
        title: text(&campaign["title"]),
        status: status.clone(),
        template_href: if session.can(Method::GET, "/v1/templates/{template_id}") {
            format!(
                "/console/templates/{}",
                segment(&text(&campaign["template_id"]))
            )
        } else {
            String::new()
        },
        template_version: campaign["template_version"].to_string(),
        template_name: name_of(
            session,
            "/v1/templates/{template_id}",
            &format!("/v1/templates/{}", segment(&text(&campaign["template_id"]))),
        )
        .await?
        .unwrap_or_else(|| text(&campaign["template_id"])),
        definition: match campaign["definition_id"].as_str() {
            Some(definition_id) => {
                let name = name_of(
                    session,
                    "/v1/workflow-definitions/{definition_id}",
                    &format!("/v1/workflow-definitions/{}", segment(definition_id)),
                )
                .await?
                .unwrap_or_else(|| definition_id.to_owned());
                match campaign["definition_version"].as_i64() {
                    Some(version) => format!("{name} v{version}"),
                    None => name,
                }
            }
            None => "Given inline".to_owned(),
        },
        recipients: recipients_of(session, id, &campaign, &live.counts).await?,
        created: when(&campaign["created_at"]),
        started: when(&campaign["started_at"]),
        finished: when(&campaign["finished_at"]),
    };
    let temporal_link = match (
        &session.console().settings().temporal_ui_url,
        campaign["workflow_id"].as_str(),
    ) {
        (Some(ui), Some(workflow_id)) if !ui.is_empty() => Some(format!(
            "{}/namespaces/{}/workflows/{}",
            ui.trim_end_matches('/'),
            segment(&session.console().settings().temporal_namespace),
            segment(workflow_id)
        )),
        _ => None,
    };
    let may_run = |path| session.can(Method::POST, path);
    render(Page {
        layout: Layout::new(session, "Campaigns"),
        can_start: status == "CREATED" && may_run("/v1/campaigns/{campaign_id}/start"),
        can_cancel: is_running(&status) && may_run("/v1/campaigns/{campaign_id}/cancel"),
        running: is_running(&status),
        filters: filter_tabs(&base, &live.counts, &filter),
        c: header,
        live,
        problem,
        temporal_link,
        graph,
        graph_note,
        filter,
        rows,
        first_page,
        next_page,
        export_href,
        activity,
        activity_note,
        base,
    })
}

/// The `name` of what `path` reads (a template, a definition), when the role may read it.
async fn name_of(
    session: &Session,
    route: &str,
    path: &str,
) -> Result<Option<String>, ConsoleError> {
    if !session.can(Method::GET, route) {
        return Ok(None);
    }
    let reply = session.api().send(Method::GET, path, None).await?;
    Ok(reply
        .is_success()
        .then(|| text(&reply.body["name"]))
        .filter(|name| !name.is_empty()))
}

/// How many people the campaign reaches: counted when it started, or, for a draft, what its
/// audience holds now (the API's preview counts it).
async fn recipients_of(
    session: &Session,
    id: &str,
    campaign: &Value,
    counts: &Counts,
) -> Result<String, ConsoleError> {
    if let Some(n) = campaign["recipients"].as_u64().filter(|n| *n > 0) {
        return Ok(n.to_string());
    }
    if campaign["status"] == "CREATED"
        && session.can(Method::GET, "/v1/campaigns/{campaign_id}/preview")
    {
        let reply = session
            .api()
            .send(Method::GET, &api_path(id, "/preview"), None)
            .await?;
        if let Some(n) = reply.body["recipients"]
            .as_u64()
            .filter(|_| reply.is_success())
        {
            return Ok(n.to_string());
        }
    }
    Ok(counts.total().to_string())
}

fn filter_tabs(base: &str, counts: &Counts, active: &str) -> Vec<FilterTab> {
    let tab = |id: &str, label, count, status: &str| FilterTab {
        id: format!("filter-{id}"),
        label,
        count,
        href: format!(
            "{}#deliveries-card",
            with_query(base, &[("status", status)])
        ),
        active: active == status,
    };
    vec![
        tab("all", "All", counts.total(), ""),
        tab(
            "unacknowledged",
            "Not acknowledged",
            counts.pending + counts.sent + counts.read,
            UNACKNOWLEDGED,
        ),
        tab(
            "acknowledged",
            "Acknowledged",
            counts.acknowledged,
            "ACKNOWLEDGED",
        ),
        tab("pending", "Pending", counts.pending, "PENDING"),
        tab("sent", "Sent", counts.sent, "SENT"),
        tab("read", "Read", counts.read, "READ"),
        tab("missed", "Missed", counts.missed, "MISSED"),
        tab("failed", "Failed", counts.failed, "FAILED"),
    ]
}

fn delivery_row(item: &Value) -> DeliveryRow {
    let d = delivery_of(item);
    let name = text(&d["display_name"]);
    let user = text(&d["user_id"]);
    let email = text(&d["email"]);
    let (recipient, detail) = if name.is_empty() {
        (user, email)
    } else if email.is_empty() {
        (name, user)
    } else {
        (name, email)
    };
    let status = text(&d["status"]);
    let outcome = match status.as_str() {
        "FAILED" => format!(
            "{} · {}",
            text(&d["failure_reason"]),
            short_when(&d["failed_at"])
        ),
        "MISSED" => short_when(&d["missed_at"]),
        _ => String::new(),
    };
    DeliveryRow {
        id: text(&d["id"]),
        status,
        recipient,
        detail,
        sent: short_when(&d["sent_at"]),
        read: short_when(&d["read_at"]),
        acknowledged: short_when(&d["acknowledged_at"]),
        reminders: d["reminder_count"].as_i64().unwrap_or(0).to_string(),
        outcome,
    }
}

/// The workflow graph with the current step marked, from the definition version the campaign
/// was created from; a note instead when it cannot be shown.
async fn graph_of(
    session: &Session,
    campaign: &Value,
    current_step: &str,
) -> Result<(String, String), ConsoleError> {
    let definition = if campaign["definition"].is_object() {
        Some(campaign["definition"].clone())
    } else if let (Some(definition_id), Some(version)) = (
        campaign["definition_id"].as_str(),
        campaign["definition_version"].as_i64(),
    ) {
        if session.can(
            Method::GET,
            "/v1/workflow-definitions/{definition_id}/versions/{version}",
        ) {
            let reply = session
                .api()
                .send(
                    Method::GET,
                    &format!(
                        "/v1/workflow-definitions/{}/versions/{version}",
                        segment(definition_id)
                    ),
                    None,
                )
                .await?;
            reply.is_success().then(|| reply.body["definition"].clone())
        } else {
            None
        }
    } else {
        None
    };
    let Some(definition) = definition else {
        let why = if campaign["definition_id"].is_string() {
            "This campaign's workflow definition could not be read."
        } else {
            "This campaign's workflow was given inline; it is not shown here."
        };
        return Ok((String::new(), why.to_owned()));
    };
    let current = (!current_step.is_empty()).then_some(current_step);
    let svg = crate::views::graph::draw(&definition, current, &BTreeMap::new());
    let note = if svg.is_empty() {
        "The workflow graph cannot be drawn yet.".to_owned()
    } else {
        String::new()
    };
    Ok((svg, note))
}

/// The latest entries of the activity log, newest first, and a note on how many are older.
/// The API lists oldest first, so the log is walked (a bounded number of pages) keeping the
/// last ones.
async fn activity_of(
    session: &Session,
    id: &str,
) -> Result<(Vec<ActivityItem>, String), ConsoleError> {
    let mut latest: VecDeque<Value> = VecDeque::with_capacity(ACTIVITY_SHOWN + 1);
    let mut seen = 0usize;
    let mut after = String::new();
    let mut complete = false;
    for _ in 0..ACTIVITY_PAGES {
        let page: Listing = session
            .api()
            .get(&with_query(
                &api_path(id, "/activity"),
                &[("after", &after), ("limit", BIG_PAGE)],
            ))
            .await?;
        for entry in page.items {
            seen += 1;
            latest.push_back(entry);
            if latest.len() > ACTIVITY_SHOWN {
                latest.pop_front();
            }
        }
        match page.next_cursor {
            Some(next) => after = next,
            None => {
                complete = true;
                break;
            }
        }
    }
    let hidden = seen - latest.len();
    let note = match (hidden, complete) {
        (0, true) => String::new(),
        (n, true) => format!("{n} earlier entries are not shown."),
        (_, false) => format!(
            "Showing the latest {} of more than {seen} entries.",
            latest.len()
        ),
    };
    let items = latest.iter().rev().map(activity_item).collect();
    Ok((items, note))
}

fn activity_item(entry: &Value) -> ActivityItem {
    let kind = text(&entry["kind"]);
    let label = match kind.as_str() {
        "campaign_started" => "Campaign started".to_owned(),
        "step_started" => "Step started".to_owned(),
        "step_finished" => "Step finished".to_owned(),
        "step_failed" => "Step failed".to_owned(),
        "webhook_attempt" => "Webhook attempt".to_owned(),
        "webhook_failed" => "Webhook failed".to_owned(),
        "channel_event_attempt" => "Channel event".to_owned(),
        "device_removed" => "Device removed".to_owned(),
        "campaign_completed" => "Campaign completed".to_owned(),
        "campaign_cancelled" => "Campaign cancelled".to_owned(),
        other => other.replace('_', " "),
    };
    let details = match &entry["details"] {
        Value::Object(map) if !map.is_empty() => {
            serde_json::to_string_pretty(&entry["details"]).unwrap_or_default()
        }
        _ => String::new(),
    };
    ActivityItem {
        time: parse_time(&entry["occurred_at"])
            .map(|t| t.format("%-d %b %Y, %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "—".to_owned()),
        kind: kind.replace('_', "-"),
        label,
        step: text(&entry["step_id"]),
        message: text(&entry["message"]),
        details,
    }
}

// ---------------------------------------------------------------------------------------------
// Start and cancel.

async fn start(session: Session, Path(id): Path<String>) -> Result<Response, ConsoleError> {
    act(&session, &id, "/start").await
}

async fn cancel(session: Session, Path(id): Path<String>) -> Result<Response, ConsoleError> {
    act(&session, &id, "/cancel").await
}

/// Asks the API to start or cancel the campaign, then shows the page again: after a redirect
/// when it agreed, at once with its reason when it refused.
async fn act(session: &Session, id: &str, action: &str) -> Result<Response, ConsoleError> {
    let reply = session
        .api()
        .send(Method::POST, &api_path(id, action), None)
        .await?;
    if reply.is_success() {
        return Ok(Redirect::to(&page_path(id)).into_response());
    }
    if reply.status == StatusCode::UNAUTHORIZED {
        return Err(ConsoleError::SignedOut);
    }
    let query = PageQuery {
        status: String::new(),
        after: String::new(),
    };
    let page = draw(session, id, &query, Some(reply.problem())).await?;
    Ok((reply.status, page).into_response())
}

// ---------------------------------------------------------------------------------------------
// CSV export.

/// The export's columns: the header's name, and the delivery field it comes from.
const CSV_COLUMNS: [(&str, &str); 13] = [
    ("delivery_id", "id"),
    ("member_id", "member_id"),
    ("user_id", "user_id"),
    ("email", "email"),
    ("name", "display_name"),
    ("status", "status"),
    ("sent_at", "sent_at"),
    ("read_at", "read_at"),
    ("acknowledged_at", "acknowledged_at"),
    ("missed_at", "missed_at"),
    ("failed_at", "failed_at"),
    ("failure_reason", "failure_reason"),
    ("reminder_count", "reminder_count"),
];

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote, a line break or edge
/// spaces, with quotes doubled. Text a spreadsheet would take for a formula (`=`, `+`, `-`,
/// `@`, tab or carriage return first) gets a leading `'`, so a member's name cannot run as one
/// in whoever opens the export.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) || value.starts_with(' ') || value.ends_with(' ') {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

fn csv_header() -> String {
    let names: Vec<&str> = CSV_COLUMNS.iter().map(|(name, _)| *name).collect();
    format!("{}\r\n", names.join(","))
}

/// The rows of one page of the deliveries list.
fn csv_rows(items: &[Value]) -> String {
    let mut out = String::new();
    for item in items {
        let delivery = delivery_of(item);
        let fields: Vec<String> = CSV_COLUMNS
            .iter()
            .map(|(_, field)| match &delivery[*field] {
                Value::Null => String::new(),
                Value::String(text) => csv_field(text),
                other => csv_field(&other.to_string()),
            })
            .collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

/// GET /console/campaigns/{id}/deliveries.csv?status=…: every matching delivery, read from the
/// API a page at a time while the file streams, so a campaign of any size never sits in
/// memory. The first page is read before answering, so a refusal is an error page, not a
/// broken download.
async fn export(
    session: Session,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Response, ConsoleError> {
    let filter = status_filter(&query.status);
    let list = api_path(&id, "/deliveries");
    let page_of = move |after: &str| {
        with_query(
            &list,
            &[("status", &filter), ("after", after), ("limit", BIG_PAGE)],
        )
    };
    let first: Listing = session.api().get(&page_of("")).await?;
    let head = csv_header() + &csv_rows(&first.items);
    let rest = futures_util::stream::unfold(first.next_cursor, move |cursor| {
        let session = session.clone();
        let path = cursor.map(|after| page_of(&after));
        async move {
            let path = path?;
            match session.api().get::<Listing>(&path).await {
                Ok(page) => Some((Ok(csv_rows(&page.items)), page.next_cursor)),
                Err(error) => {
                    // The download ends short, and the browser reports it as failed.
                    tracing::warn!(%error, "a deliveries export stopped part way");
                    Some((Err(error), None))
                }
            }
        }
    });
    let body = futures_util::stream::once(async move { Ok::<_, ConsoleError>(head) }).chain(rest);
    let file_id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let disposition = format!("attachment; filename=\"campaign-{file_id}-deliveries.csv\"");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition)
                    .map_err(|e| ConsoleError::Internal(e.to_string()))?,
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field(""), "");
        assert_eq!(csv_field("Doe, Jane"), "\"Doe, Jane\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field(" padded"), "\" padded\"");
        assert_eq!(csv_field("2026-11-27T16:40:05Z"), "2026-11-27T16:40:05Z");
    }

    #[test]
    fn csv_fields_a_spreadsheet_would_run_as_formulas_are_defused() {
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-2"), "'-2");
        assert_eq!(csv_field("@sum"), "'@sum");
    }

    #[test]
    fn csv_rows_follow_the_header_whether_deliveries_are_nested_or_flat() {
        let flat = json!({
            "position": 1, "id": "d1", "member_id": "m1", "user_id": "u1", "email": null,
            "display_name": "Doe, Jane", "status": "ACKNOWLEDGED", "sent_at": "2026-11-27T16:00:00Z",
            "read_at": null, "acknowledged_at": "2026-11-27T16:05:00Z", "reminder_count": 2
        });
        let nested = json!({ "position": 2, "delivery": { "id": "d2", "status": "PENDING" } });
        let csv = csv_header() + &csv_rows(&[flat, nested]);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "delivery_id,member_id,user_id,email,name,status,sent_at,read_at,acknowledged_at,missed_at,failed_at,failure_reason,reminder_count"
        );
        assert_eq!(
            lines[1],
            "d1,m1,u1,,\"Doe, Jane\",ACKNOWLEDGED,2026-11-27T16:00:00Z,,2026-11-27T16:05:00Z,,,,2"
        );
        assert_eq!(lines[2], "d2,,,,,PENDING,,,,,,,");
        assert_eq!(lines[3], "");
    }

    #[test]
    fn the_status_filter_keeps_known_statuses_in_one_order() {
        assert_eq!(status_filter(""), "");
        assert_eq!(status_filter("READ,PENDING,SENT"), UNACKNOWLEDGED);
        assert_eq!(status_filter("ACKNOWLEDGED,bogus"), "ACKNOWLEDGED");
        assert_eq!(
            status_filter("PENDING,SENT,READ,ACKNOWLEDGED,MISSED,FAILED"),
            ""
        );
    }

    #[test]
    fn only_a_campaign_that_has_not_finished_keeps_refreshing() {
        assert!(is_running("CREATED") && is_running("ACTIVE"));
        assert!(!is_running("COMPLETED") && !is_running("CANCELLED") && !is_running("FAILED"));
    }
}
