//! The directory: members (found by external id, a cursor page at a time), teams and groups
//! with their members, and a CSV import.
//!
//! The import reads the file here (CSV is the console's format, not the API's) and hands the
//! rows to `POST /v1/members/bulk`, which holds each to `POST /v1/members`'s rules and writes
//! all of them or none. One request takes at most [`MAX_IMPORT_ROWS`] rows and the API has no
//! dry run, so a larger file could not be written all-or-nothing through it: the console
//! refuses such a file whole and asks for smaller ones, rather than write part of it.

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::extract::{Multipart, Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::Html;
use axum::routing::get;
use pidgr_store::SetKind;
use pidgr_workflows::template::{MAX_VARIABLE_NAME_LEN, is_variable_name};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::templates::Refusal;
use super::{Layout, render};
use crate::api::Listing;
use crate::api::{segment, with_query};
use crate::session::Session;
use crate::views::{text, when};
use crate::{Console, ConsoleError};

const PAGE_SIZE: &str = "50";
/// The most rows one import takes: what one `POST /v1/members/bulk` accepts.
pub const MAX_IMPORT_ROWS: usize = 1_000;
/// Rejected rows listed in a report; the rest are counted.
const MAX_REJECTIONS_SHOWN: usize = 200;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/directory", get(members))
        .route("/console/directory/teams", get(teams))
        .route("/console/directory/groups", get(groups))
        .route("/console/directory/teams/{set_id}", get(team))
        .route("/console/directory/groups/{set_id}", get(group))
        .route("/console/directory/import", get(import_page).post(import))
}

/// The directory's tabs, each shown when the role may read what it lists.
struct Tab {
    label: &'static str,
    href: &'static str,
    active: bool,
}

fn tabs(session: &Session, active: &str) -> Vec<Tab> {
    [
        ("Members", "/console/directory", Method::GET, "/v1/members"),
        (
            "Teams",
            "/console/directory/teams",
            Method::GET,
            "/v1/teams",
        ),
        (
            "Groups",
            "/console/directory/groups",
            Method::GET,
            "/v1/groups",
        ),
        (
            "Import",
            "/console/directory/import",
            Method::POST,
            "/v1/members/bulk",
        ),
    ]
    .into_iter()
    .filter(|(_, _, method, path)| session.can(method.clone(), path))
    .map(|(label, href, _, _)| Tab {
        label,
        href,
        active: label == active,
    })
    .collect()
}

struct MemberRow {
    id: String,
    external_id: String,
    name: String,
    email: String,
    role: String,
    attributes: String,
    /// The manager's name and external id, or empty.
    manager: String,
    updated: String,
}

fn member_row(m: &Value) -> MemberRow {
    let attributes = m["attributes"]
        .as_object()
        .map(|a| {
            a.iter()
                .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" · ")
        })
        .unwrap_or_default();
    MemberRow {
        id: text(&m["id"]),
        external_id: text(&m["external_id"]),
        name: text(&m["display_name"]),
        email: text(&m["email"]),
        role: text(&m["role_id"]),
        attributes,
        manager: String::new(),
        updated: when(&m["updated_at"]),
    }
}

/// A page of members as rows, each with their manager: named from the page when they are on
/// it, else read once each (a manager deleted meanwhile shows as their id).
async fn member_rows(session: &Session, items: &[Value]) -> Result<Vec<MemberRow>, ConsoleError> {
    let describe =
        |m: &Value| format!("{} ({})", text(&m["display_name"]), text(&m["external_id"]));
    let mut managers: BTreeMap<String, String> = items
        .iter()
        .map(|m| (text(&m["id"]), describe(m)))
        .collect();
    for item in items {
        let Some(manager) = item["manager_id"].as_str() else {
            continue;
        };
        if managers.contains_key(manager) {
            continue;
        }
        let reply = session
            .api()
            .send(
                Method::GET,
                &format!("/v1/members/{}", segment(manager)),
                None,
            )
            .await?;
        let shown = if reply.is_success() {
            describe(&reply.body)
        } else {
            manager.to_owned()
        };
        managers.insert(manager.to_owned(), shown);
    }
    Ok(items
        .iter()
        .map(|m| {
            let mut row = member_row(m);
            if let Some(manager) = m["manager_id"].as_str() {
                row.manager = managers.get(manager).cloned().unwrap_or_default();
            }
            row
        })
        .collect())
}

#[derive(Deserialize)]
struct MembersQuery {
    /// An external id to find (the API finds members by it exactly).
    #[serde(default)]
    q: String,
    #[serde(default)]
    after: String,
}

#[derive(Template)]
#[template(path = "directory.html")]
struct MembersPage {
    layout: Layout,
    tabs: Vec<Tab>,
    q: String,
    rows: Vec<MemberRow>,
    next: Option<String>,
}

async fn members(
    session: Session,
    Query(query): Query<MembersQuery>,
) -> Result<Html<String>, ConsoleError> {
    let q = query.q.trim().to_owned();
    let path = if q.is_empty() {
        with_query(
            "/v1/members",
            &[("after", &query.after), ("limit", PAGE_SIZE)],
        )
    } else {
        with_query("/v1/members", &[("external_id", &q)])
    };
    let listing: Listing = session.api().get(&path).await?;
    render(MembersPage {
        layout: Layout::new(&session, "Directory"),
        tabs: tabs(&session, "Members"),
        rows: member_rows(&session, &listing.items).await?,
        next: listing
            .next_cursor
            .filter(|_| q.is_empty())
            .map(|after| with_query("/console/directory", &[("after", &after)])),
        q,
    })
}

struct SetRow {
    id: String,
    name: String,
    member_count: i64,
    created: String,
}

#[derive(Template)]
#[template(path = "directory_sets.html")]
struct SetsPage {
    layout: Layout,
    tabs: Vec<Tab>,
    /// "Teams" or "Groups".
    heading: &'static str,
    /// The console path of this kind: `teams` or `groups`.
    kind: &'static str,
    rows: Vec<SetRow>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    after: String,
}

fn plural(kind: SetKind) -> &'static str {
    match kind {
        SetKind::Team => "teams",
        SetKind::Group => "groups",
    }
}

async fn sets(
    session: Session,
    kind: SetKind,
    after: String,
) -> Result<Html<String>, ConsoleError> {
    let path = with_query(
        &format!("/v1/{}", plural(kind)),
        &[("after", &after), ("limit", PAGE_SIZE)],
    );
    let listing: Listing = session.api().get(&path).await?;
    let heading = match kind {
        SetKind::Team => "Teams",
        SetKind::Group => "Groups",
    };
    render(SetsPage {
        layout: Layout::new(&session, "Directory"),
        tabs: tabs(&session, heading),
        heading,
        kind: plural(kind),
        rows: listing
            .items
            .iter()
            .map(|s| SetRow {
                id: text(&s["id"]),
                name: text(&s["name"]),
                member_count: s["member_count"].as_i64().unwrap_or_default(),
                created: when(&s["created_at"]),
            })
            .collect(),
        next: listing.next_cursor.map(|after| {
            with_query(
                &format!("/console/directory/{}", plural(kind)),
                &[("after", &after)],
            )
        }),
    })
}

async fn teams(
    session: Session,
    Query(query): Query<PageQuery>,
) -> Result<Html<String>, ConsoleError> {
    sets(session, SetKind::Team, query.after).await
}

async fn groups(
    session: Session,
    Query(query): Query<PageQuery>,
) -> Result<Html<String>, ConsoleError> {
    sets(session, SetKind::Group, query.after).await
}

#[derive(Template)]
#[template(path = "directory_set.html")]
struct SetPage {
    layout: Layout,
    tabs: Vec<Tab>,
    kind: &'static str,
    name: String,
    member_count: i64,
    rows: Vec<MemberRow>,
    next: Option<String>,
}

async fn set_members(
    session: Session,
    kind: SetKind,
    set_id: String,
    after: String,
) -> Result<Html<String>, ConsoleError> {
    let base = format!("/v1/{}/{}", plural(kind), segment(&set_id));
    let set: Value = session.api().get(&base).await?;
    let listing: Listing = session
        .api()
        .get(&with_query(
            &format!("{base}/members"),
            &[("after", &after), ("limit", PAGE_SIZE)],
        ))
        .await?;
    let heading = match kind {
        SetKind::Team => "Teams",
        SetKind::Group => "Groups",
    };
    render(SetPage {
        layout: Layout::new(&session, "Directory"),
        tabs: tabs(&session, heading),
        kind: plural(kind),
        name: text(&set["name"]),
        member_count: set["member_count"].as_i64().unwrap_or_default(),
        rows: member_rows(&session, &listing.items).await?,
        next: listing.next_cursor.map(|after| {
            with_query(
                &format!("/console/directory/{}/{}", plural(kind), segment(&set_id)),
                &[("after", &after)],
            )
        }),
    })
}

async fn team(
    session: Session,
    Path(set_id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Html<String>, ConsoleError> {
    set_members(session, SetKind::Team, set_id, query.after).await
}

async fn group(
    session: Session,
    Path(set_id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Html<String>, ConsoleError> {
    set_members(session, SetKind::Group, set_id, query.after).await
}

// ---- The CSV import ----

/// One row the file could not give, or the API would not take: "row 3: email: ...".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The row as a person counts the file's lines: the header is row 1.
    pub row: u64,
    /// The column at fault, when one is.
    pub field: Option<String>,
    pub detail: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "row {}: {field}: {}", self.row, self.detail),
            None => write!(f, "row {}: {}", self.row, self.detail),
        }
    }
}

/// A file read as `POST /v1/members/bulk` rows.
#[derive(Debug, Default)]
pub struct ParsedFile {
    /// Each member as the API takes it (`POST /v1/members`'s body), with its row in the file.
    pub members: Vec<(u64, Value)>,
    /// Rows that could not be read.
    pub rejected: Vec<Rejection>,
    /// What the header named the display-name column (`name` or `display_name`).
    pub name_column: String,
}

impl ParsedFile {
    pub fn rows(&self) -> usize {
        self.members.len() + self.rejected.len()
    }
}

/// The columns every file has; `name` may also be written `display_name`. `role_id`, when
/// present, is each member's role; `manager`, when present, is the external id of each
/// member's manager (an empty cell: no manager); every other column is an attribute (empty
/// cells are left out, so a member without a value has no such attribute).
const REQUIRED: [&str; 2] = ["external_id", "email"];
const NAME_COLUMNS: [&str; 2] = ["name", "display_name"];
const ROLE_COLUMN: &str = "role_id";
const MANAGER_COLUMN: &str = "manager";
/// The bulk route's field the `manager` column fills.
const MANAGER_FIELD: &str = "manager_external_id";

/// Reads a CSV file (UTF-8, comma-separated, a header row first) into the API's member rows.
/// A row that cannot be read (a column count that differs from the header's, text that is not
/// UTF-8) is rejected with its row number; the field rules are left to the API.
pub fn parse_members(bytes: &[u8]) -> ParsedFile {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(false)
        .from_reader(bytes);
    let mut parsed = ParsedFile::default();
    let mut records = reader.byte_records();
    let header = match records.next() {
        None => {
            parsed.rejected.push(Rejection {
                row: 1,
                field: None,
                detail: "the file is empty; its first row must name the columns \
                         (external_id, email, name)"
                    .to_owned(),
            });
            return parsed;
        }
        Some(Err(error)) => {
            parsed.rejected.push(unreadable(&error, 1));
            return parsed;
        }
        Some(Ok(record)) => record,
    };
    let columns: Vec<String> = header
        .iter()
        .map(|c| String::from_utf8_lossy(c).trim().to_owned())
        .collect();
    if let Some(problem) = header_problem(&columns) {
        parsed.rejected.push(Rejection {
            row: 1,
            field: None,
            detail: problem,
        });
        return parsed;
    }
    parsed.name_column = columns
        .iter()
        .find(|c| NAME_COLUMNS.contains(&c.as_str()))
        .cloned()
        .unwrap_or_default();
    let mut lines = LineCounter::default();
    for record in records {
        match record {
            Err(error) => {
                let row = lines.row_at(bytes, error.position());
                parsed.rejected.push(unreadable(&error, row));
            }
            Ok(record) => {
                let row = lines.row_at(bytes, record.position());
                match record_member(&columns, &record) {
                    Ok(member) => parsed.members.push((row, member)),
                    Err(detail) => parsed.rejected.push(Rejection {
                        row,
                        field: None,
                        detail,
                    }),
                }
            }
        }
    }
    // A quote opened and never closed swallows the rest of the file into one cell of the last
    // row, which the reader accepts: an odd number of quote characters is how it shows.
    if bytes.iter().filter(|b| **b == b'"').count() % 2 == 1 {
        let last = parsed
            .members
            .iter()
            .map(|(row, _)| *row)
            .chain(parsed.rejected.iter().map(|r| r.row))
            .max()
            .unwrap_or(1);
        parsed.members.retain(|(row, _)| *row != last);
        parsed.rejected.retain(|r| r.row != last);
        parsed.rejected.push(Rejection {
            row: last,
            field: None,
            detail: "a quoted cell is never closed (a \" without its closing \")".to_owned(),
        });
    }
    parsed
}

/// The line a record starts on. The reader's position is where it began reading, which is
/// before any blank lines it skipped; a person counts those lines, so they are counted here
/// (records come in file order, so the count moves forward only).
#[derive(Default)]
struct LineCounter {
    offset: usize,
    /// Line breaks before `offset`.
    breaks: u64,
}

impl LineCounter {
    fn row_at(&mut self, bytes: &[u8], position: Option<&csv::Position>) -> u64 {
        let Some(position) = position else {
            return self.breaks + 1;
        };
        let mut start = (position.byte() as usize).min(bytes.len());
        while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        if start > self.offset {
            self.breaks += bytes[self.offset..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            self.offset = start;
        }
        self.breaks + 1
    }
}

fn header_problem(columns: &[String]) -> Option<String> {
    let has = |name: &str| columns.iter().any(|c| c == name);
    let mut missing: Vec<&str> = REQUIRED.into_iter().filter(|c| !has(c)).collect();
    let names = NAME_COLUMNS.iter().filter(|c| has(c)).count();
    if names == 0 {
        missing.push("name");
    }
    if !missing.is_empty() {
        return Some(format!(
            "the header row lacks {}; it must name external_id, email and name",
            missing.join(", ")
        ));
    }
    if names > 1 {
        return Some("the header row has both name and display_name; keep one".to_owned());
    }
    let mut seen = std::collections::BTreeSet::new();
    for column in columns {
        if column.is_empty() {
            return Some("a column of the header row has no name".to_owned());
        }
        if !seen.insert(column) {
            return Some(format!("the header row names {column} twice"));
        }
        // Said once here rather than by the API for every row: the same rule it applies.
        let is_attribute = !REQUIRED.contains(&column.as_str())
            && !NAME_COLUMNS.contains(&column.as_str())
            && column != ROLE_COLUMN
            && column != MANAGER_COLUMN;
        if is_attribute && !is_variable_name(column) {
            return Some(format!(
                "the column \"{column}\" cannot be an attribute: its name must be 1 to \
                 {MAX_VARIABLE_NAME_LEN} letters, digits, '_' or '.'"
            ));
        }
    }
    None
}

fn unreadable(error: &csv::Error, row: u64) -> Rejection {
    let detail = match error.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("the row has {len} columns where the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "the row is not UTF-8 text".to_owned(),
        _ => format!("the row cannot be read as CSV: {error}"),
    };
    Rejection {
        row,
        field: None,
        detail,
    }
}

/// One record as `POST /v1/members`'s body.
fn record_member(columns: &[String], record: &csv::ByteRecord) -> Result<Value, String> {
    let record = csv::StringRecord::from_byte_record(record.clone())
        .map_err(|_| "the row is not UTF-8 text".to_owned())?;
    let mut member = Map::new();
    let mut attributes = BTreeMap::new();
    for (column, cell) in columns.iter().zip(record.iter()) {
        match column.as_str() {
            "external_id" | "email" => {
                member.insert(column.clone(), json!(cell));
            }
            "name" | "display_name" => {
                member.insert("display_name".to_owned(), json!(cell));
            }
            ROLE_COLUMN => {
                if !cell.trim().is_empty() {
                    member.insert(ROLE_COLUMN.to_owned(), json!(cell.trim()));
                }
            }
            // The column is there, so an empty cell removes the manager (null).
            MANAGER_COLUMN => {
                let manager = Some(cell.trim()).filter(|m| !m.is_empty());
                member.insert(MANAGER_FIELD.to_owned(), json!(manager));
            }
            _ => {
                if !cell.is_empty() {
                    attributes.insert(column.clone(), cell.to_owned());
                }
            }
        }
    }
    if !attributes.is_empty() {
        member.insert("attributes".to_owned(), json!(attributes));
    }
    Ok(Value::Object(member))
}

/// The API's row errors (`errors: [{row, pointer, detail}]`, rows counted from 0 in the
/// request) as rejections of the file's rows, the field named as the file's column.
pub fn rejections_of(errors: &Value, parsed: &ParsedFile) -> Vec<Rejection> {
    let mut out: Vec<Rejection> = errors
        .as_array()
        .into_iter()
        .flatten()
        .map(|error| {
            let pointer = error["pointer"].as_str().unwrap_or_default();
            let index = error["row"].as_u64().map(|r| r as usize).or_else(|| {
                pointer
                    .strip_prefix("/members/")
                    .and_then(|rest| rest.split('/').next())
                    .and_then(|i| i.parse().ok())
            });
            let row = index
                .and_then(|i| parsed.members.get(i))
                .map_or(0, |(row, _)| *row);
            let field = pointer
                .strip_prefix("/members/")
                .and_then(|rest| rest.split_once('/'))
                .map(|(_, field)| match field {
                    "display_name" => parsed.name_column.clone(),
                    MANAGER_FIELD => MANAGER_COLUMN.to_owned(),
                    other => other.replace('/', "."),
                });
            Rejection {
                row,
                field,
                detail: file_rows_in(error["detail"].as_str().unwrap_or_default(), parsed),
            }
        })
        .collect();
    out.sort_by_key(|r| r.row);
    out
}

/// The API names another row of the request by its index ("also row 0's"); a person reading
/// the report counts the file's rows, so such a mention is given as the file's row.
fn file_rows_in(detail: &str, parsed: &ParsedFile) -> String {
    let mut out = String::with_capacity(detail.len());
    let mut rest = detail;
    while let Some(at) = rest.find("row ") {
        let (before, after) = rest.split_at(at + "row ".len());
        out.push_str(before);
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, tail) = after.split_at(digits);
        match number
            .parse::<usize>()
            .ok()
            .and_then(|i| parsed.members.get(i))
        {
            Some((row, _)) => out.push_str(&row.to_string()),
            None => out.push_str(number),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[derive(Template)]
#[template(path = "import.html")]
struct ImportPage {
    layout: Layout,
    tabs: Vec<Tab>,
    max_rows: usize,
}

#[derive(Template)]
#[template(path = "import_report.html")]
struct ImportReport {
    /// Whether anything was written.
    imported: bool,
    summary: String,
    /// A second line: what to do next.
    advice: String,
    rejected: Vec<String>,
    more_rejected: usize,
}

impl ImportReport {
    fn refused(summary: impl Into<String>, advice: impl Into<String>) -> Self {
        ImportReport {
            imported: false,
            summary: summary.into(),
            advice: advice.into(),
            rejected: Vec::new(),
            more_rejected: 0,
        }
    }

    fn rejected(rejections: &[Rejection], advice: &str) -> Self {
        let rows: std::collections::BTreeSet<u64> = rejections.iter().map(|r| r.row).collect();
        let count = rows.len();
        ImportReport {
            imported: false,
            summary: format!(
                "Nothing was imported: {count} {} rejected",
                if count == 1 { "row was" } else { "rows were" }
            ),
            advice: advice.to_owned(),
            rejected: rejections
                .iter()
                .take(MAX_REJECTIONS_SHOWN)
                .map(ToString::to_string)
                .collect(),
            more_rejected: rejections.len().saturating_sub(MAX_REJECTIONS_SHOWN),
        }
    }
}

async fn import_page(session: Session) -> Result<Html<String>, ConsoleError> {
    if !session.can(Method::POST, "/v1/members/bulk") {
        return Err(ConsoleError::Api {
            status: StatusCode::FORBIDDEN,
            detail: "Your role may not import members.".to_owned(),
        });
    }
    render(ImportPage {
        layout: Layout::new(&session, "Directory"),
        tabs: tabs(&session, "Import"),
        max_rows: MAX_IMPORT_ROWS,
    })
}

/// POST /console/directory/import (htmx, multipart): reads the file, sends its rows in one
/// `POST /v1/members/bulk`, and answers the report.
async fn import(session: Session, mut form: Multipart) -> Result<Html<String>, ConsoleError> {
    let mut file: Option<Vec<u8>> = None;
    loop {
        match form.next_field().await {
            Ok(Some(field)) if field.name() == Some("file") => match field.bytes().await {
                Ok(bytes) => file = Some(bytes.to_vec()),
                Err(error) => {
                    return render(ImportReport::refused(
                        "Nothing was imported: the file could not be received.",
                        error.body_text(),
                    ));
                }
            },
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(error) => {
                return render(ImportReport::refused(
                    "Nothing was imported: the file could not be received.",
                    error.body_text(),
                ));
            }
        }
    }
    let Some(file) = file.filter(|f| !f.is_empty()) else {
        return render(ImportReport::refused(
            "Nothing was imported: choose a CSV file first.",
            "",
        ));
    };
    render(import_file(&session, &file).await?)
}

async fn import_file(session: &Session, file: &[u8]) -> Result<ImportReport, ConsoleError> {
    let parsed = parse_members(file);
    if parsed.rows() > MAX_IMPORT_ROWS {
        return Ok(ImportReport::refused(
            format!(
                "Nothing was imported: the file has {} rows under its header, and one import \
                 takes at most {MAX_IMPORT_ROWS}.",
                parsed.rows()
            ),
            format!(
                "Split it into files of {MAX_IMPORT_ROWS} rows or fewer (each with the header \
                 row) and import them one by one; each is written whole or not at all."
            ),
        ));
    }
    if !parsed.rejected.is_empty() {
        let mut rejected = parsed.rejected.clone();
        rejected.sort_by_key(|r| r.row);
        let advice = if rejected.iter().any(|r| r.row == 1) {
            "Fix the header row and import the file again."
        } else {
            "Fix these rows and import the file again. The other rows are checked once every \
             row can be read."
        };
        return Ok(ImportReport::rejected(&rejected, advice));
    }
    if parsed.members.is_empty() {
        return Ok(ImportReport::refused(
            "Nothing was imported: the file has no rows under its header.",
            "",
        ));
    }
    let members: Vec<&Value> = parsed.members.iter().map(|(_, m)| m).collect();
    let reply = session
        .api()
        .post("/v1/members/bulk", &json!({ "members": members }))
        .await?;
    if reply.is_success() {
        let count = |name: &str| reply.body[name].as_u64().unwrap_or_default();
        return Ok(ImportReport {
            imported: true,
            summary: format!(
                "{} created, {} updated, {} unchanged",
                count("created"),
                count("updated"),
                count("unchanged")
            ),
            advice: String::new(),
            rejected: Vec::new(),
            more_rejected: 0,
        });
    }
    let rejections = rejections_of(&reply.body["errors"], &parsed);
    if reply.status == StatusCode::UNPROCESSABLE_ENTITY
        && !rejections.is_empty()
        && rejections.iter().all(|r| r.row > 0)
    {
        return Ok(ImportReport::rejected(
            &rejections,
            "Fix these rows and import the file again.",
        ));
    }
    if reply.status == StatusCode::UNAUTHORIZED {
        return Err(ConsoleError::SignedOut);
    }
    let refusal = Refusal::of(&reply);
    let mut advice = refusal.fields.join("; ");
    if reply.status == StatusCode::PAYLOAD_TOO_LARGE {
        advice = "Split the file into smaller ones and import them one by one.".to_owned();
    }
    Ok(ImportReport::refused(
        format!("Nothing was imported: {}", refusal.detail),
        advice,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejections(parsed: &ParsedFile) -> Vec<String> {
        parsed.rejected.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn each_row_becomes_a_member_with_its_extra_columns_as_attributes() {
        let parsed = parse_members(
            b"external_id,email,name,department,site\n\
              e1,ada@example.com,Ada Lovelace,Research,London\n\
              e2,bob@example.com,Bob,,Paris\n",
        );
        assert!(parsed.rejected.is_empty());
        assert_eq!(
            parsed.members,
            vec![
                (
                    2,
                    json!({
                        "external_id": "e1", "email": "ada@example.com",
                        "display_name": "Ada Lovelace",
                        "attributes": { "department": "Research", "site": "London" },
                    })
                ),
                (
                    3,
                    json!({
                        "external_id": "e2", "email": "bob@example.com",
                        "display_name": "Bob", "attributes": { "site": "Paris" },
                    })
                ),
            ]
        );
    }

    #[test]
    fn columns_may_come_in_any_order_with_display_name_and_a_role() {
        let parsed = parse_members(
            "\u{FEFF}role_id,display_name,email,external_id\n\
             admin,Zoë,z@example.com,z\n,Yann,y@example.com,y\n"
                .as_bytes(),
        );
        assert!(parsed.rejected.is_empty());
        assert_eq!(parsed.name_column, "display_name");
        assert_eq!(
            parsed.members[0].1,
            json!({ "external_id": "z", "email": "z@example.com", "display_name": "Zoë", "role_id": "admin" })
        );
        assert_eq!(
            parsed.members[1].1,
            json!({ "external_id": "y", "email": "y@example.com", "display_name": "Yann" })
        );
    }

    #[test]
    fn quoted_cells_keep_their_commas_and_line_breaks_and_rows_are_counted_by_line() {
        let parsed = parse_members(
            b"external_id,email,name,address\n\
              e1,a@example.com,\"Lovelace, Ada\",\"1 Main St\nLondon\"\n\
              e2,b@example.com,Bob,\n",
        );
        assert!(parsed.rejected.is_empty());
        assert_eq!(parsed.members[0].0, 2);
        assert_eq!(parsed.members[0].1["display_name"], "Lovelace, Ada");
        assert_eq!(
            parsed.members[0].1["attributes"]["address"],
            "1 Main St\nLondon"
        );
        // The second member starts on the file's fourth line.
        assert_eq!(parsed.members[1].0, 4);
    }

    #[test]
    fn windows_line_ends_and_blank_lines_count_as_a_person_counts_them() {
        let parsed = parse_members(
            b"external_id,email,name\r\ne1,a@example.com,Ada\r\n\r\ne2,b@example.com\r\ne3,c@example.com,Cy\r\n",
        );
        let rows: Vec<u64> = parsed.members.iter().map(|(row, _)| *row).collect();
        assert_eq!(rows, [2, 5]);
        assert_eq!(
            rejections(&parsed),
            ["row 4: the row has 2 columns where the header has 3"]
        );
    }

    #[test]
    fn a_row_with_the_wrong_number_of_columns_is_rejected_by_its_row_number() {
        let parsed = parse_members(
            b"external_id,email,name\n\
              e1,a@example.com,Ada\n\
              e2,b@example.com\n\
              e3,c@example.com,Cy,extra\n\
              e4,d@example.com,Di\n",
        );
        assert_eq!(
            rejections(&parsed),
            vec![
                "row 3: the row has 2 columns where the header has 3",
                "row 4: the row has 4 columns where the header has 3",
            ]
        );
        assert_eq!(parsed.members.len(), 2);
        assert_eq!(parsed.rows(), 4);
    }

    #[test]
    fn an_unclosed_quote_or_text_that_is_not_utf8_rejects_its_row() {
        let parsed = parse_members(b"external_id,email,name\ne1,a@example.com,\xff\xfe\n");
        assert_eq!(
            rejections(&parsed),
            vec!["row 2: the row is not UTF-8 text"]
        );
        let parsed = parse_members(
            b"external_id,email,name\ne1,a@example.com,Ada\ne2,b@example.com,\"Bob\ne3,c,d\n",
        );
        assert_eq!(
            rejections(&parsed),
            vec!["row 3: a quoted cell is never closed (a \" without its closing \")"]
        );
        assert_eq!(parsed.members.len(), 1);
    }

    #[test]
    fn a_header_without_the_required_columns_rejects_row_one() {
        assert_eq!(
            rejections(&parse_members(b"id,email\n1,a@example.com\n")),
            vec![
                "row 1: the header row lacks external_id, name; it must name external_id, email and name"
            ]
        );
        assert_eq!(
            rejections(&parse_members(b"external_id,email,name,name\n")),
            vec!["row 1: the header row names name twice"]
        );
        assert_eq!(rejections(&parse_members(b"")).len(), 1);
        assert_eq!(
            rejections(&parse_members(b"external_id,email,name,dept name\n")),
            vec![
                "row 1: the column \"dept name\" cannot be an attribute: its name must be 1 to 64 \
                 letters, digits, '_' or '.'"
            ]
        );
    }

    #[test]
    fn the_apis_row_errors_name_the_files_rows_and_columns() {
        let parsed = parse_members(
            b"external_id,email,name,team_size\n\
              e1,a@example.com,Ada,3\n\
              \n\
              e2,nope,,4\n",
        );
        assert_eq!(parsed.members[1].0, 4, "the blank line is counted");
        let errors = json!([
            { "row": 1, "pointer": "/members/1/display_name", "detail": "must not be empty" },
            { "row": 0, "pointer": "/members/0/attributes", "detail": "the name \"team size\" must be ..." },
            { "row": 1, "pointer": "/members/1/email", "detail": "must be an e-mail address" },
        ]);
        let found: Vec<String> = rejections_of(&errors, &parsed)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            vec![
                "row 2: attributes: the name \"team size\" must be ...",
                "row 4: name: must not be empty",
                "row 4: email: must be an e-mail address",
            ]
        );
    }

    #[test]
    fn a_manager_column_is_the_managers_external_id_and_its_errors_name_the_column() {
        let parsed = parse_members(
            b"external_id,email,name,manager,site\n\
              e1,a@example.com,Ada,e2,Leeds\n\
              e2,b@example.com,Bob,,York\n",
        );
        assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
        assert_eq!(
            parsed.members[0].1,
            json!({ "external_id": "e1", "email": "a@example.com", "display_name": "Ada",
                    "manager_external_id": "e2", "attributes": { "site": "Leeds" } })
        );
        // An empty cell removes the manager rather than leaving it as it is.
        assert_eq!(parsed.members[1].1["manager_external_id"], Value::Null);
        assert!(parsed.members[1].1["attributes"].get("manager").is_none());
        let errors = json!([{
            "row": 0, "pointer": "/members/0/manager_external_id",
            "detail": "no member of this organisation is \"e9\"",
        }]);
        assert_eq!(
            rejections_of(&errors, &parsed)[0].to_string(),
            "row 2: manager: no member of this organisation is \"e9\""
        );
    }

    #[test]
    fn another_row_the_api_names_is_given_as_the_files_row() {
        let parsed = parse_members(
            b"external_id,email,name\ne1,a@example.com,A\ne2,b@example.com,B\ne1,c@example.com,C\n",
        );
        let errors = json!([{
            "row": 2, "pointer": "/members/2/external_id",
            "detail": "the external id is also row 0's; each member once",
        }]);
        assert_eq!(
            rejections_of(&errors, &parsed)[0].to_string(),
            "row 4: external_id: the external id is also row 2's; each member once"
        );
    }

    #[test]
    fn the_report_counts_rejected_rows_once_each() {
        let report = ImportReport::rejected(
            &[
                Rejection {
                    row: 3,
                    field: Some("email".into()),
                    detail: "bad".into(),
                },
                Rejection {
                    row: 3,
                    field: Some("name".into()),
                    detail: "empty".into(),
                },
                Rejection {
                    row: 5,
                    field: None,
                    detail: "short".into(),
                },
            ],
            "",
        );
        assert_eq!(report.summary, "Nothing was imported: 2 rows were rejected");
        assert_eq!(report.rejected[0], "row 3: email: bad");
    }
}
