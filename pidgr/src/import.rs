//! `pidgr members import FILE`: a directory of any size (a million members) written in batches,
//! idempotent on external id.
//!
//! Two passes over the file: the first validates every line and remembers only what a
//! duplicate check needs, so a bad file is refused whole (every problem with its line number)
//! before anything is written; the second writes batches of `--batch-size` lines, one
//! transaction each, through the store's multi-row import. Lines are not held in memory
//! between the passes: a million-member file costs its id and token sets, not its contents.
//!
//! A refused file is reported row by row: the row as a person counts it in the file (the CSV
//! header is row 1, blank lines count), the column, and the problem. Progress goes to stderr:
//! a count redrawn in place on a terminal, a line per batch otherwise (a log keeps them all).
//!
//! The field rules are the API's own types (`POST /v1/members`, `POST /v1/members/{id}/devices`,
//! team names), re-exported by `pidgr_api`: an imported member could have been created through
//! the API as well. An import adds devices and team memberships; it never removes any.
//!
//! A `manager` column (field, in JSON lines) names the member's manager by external id: a
//! member of the file, before or after this row, or one already in the directory. An empty
//! cell (`null`) removes the manager; without the column, members keep the managers they have.
//! The validation pass refuses a manager who is no one, the member themself, or a loop among
//! the file's rows. A manager whose row comes in a later batch is set after the last batch.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use pidgr_api::{Email, Name, Text, Variables, present};
use pidgr_store::{
    ImportCounts, ImportedMember, ManagerProblem, ManagerRef, Platform, Store, StoreError, counted,
    manager_loop_message,
};
use serde::Deserialize;
use serde_json::Value;

/// Problems listed before the rest are only counted.
const MAX_PROBLEMS_SHOWN: usize = 50;
/// The CSV columns, in any order; the first three are required.
const COLUMNS: [&str; 8] = [
    "external_id",
    "email",
    "display_name",
    "attributes",
    "fcm_token",
    "apns_token",
    "teams",
    "manager",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

impl Format {
    /// By extension (`.csv`; `.jsonl`, `.ndjson`, `.json`), else by the first non-blank line:
    /// a `{` starts JSON lines, anything else is a CSV header.
    fn of(path: &Path) -> anyhow::Result<Format> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => return Ok(Format::Csv),
            Some("jsonl" | "ndjson" | "json") => return Ok(Format::JsonLines),
            _ => {}
        }
        let file = open(path)?;
        for (index, line) in BufReader::new(file).lines().enumerate() {
            let line = line?;
            let line = if index == 0 { strip_bom(&line) } else { &line };
            if !line.trim().is_empty() {
                return Ok(if line.trim_start().starts_with('{') {
                    Format::JsonLines
                } else {
                    Format::Csv
                });
            }
        }
        Ok(Format::JsonLines)
    }
}

/// One line of the file, declared with the API's own field types: a line is accepted exactly
/// when `POST /v1/members`, `POST /v1/members/{id}/devices` and team names would accept it.
/// JSON lines deserialize it directly; a CSV row is made a JSON object first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    external_id: Name,
    email: Email,
    display_name: Name,
    #[serde(default)]
    attributes: Variables,
    #[serde(default)]
    fcm_token: Option<Text<4096>>,
    #[serde(default)]
    apns_token: Option<Text<4096>>,
    #[serde(default)]
    teams: Vec<Name>,
    /// The manager's external id; `null` for none, left out to keep the stored one.
    #[serde(default, deserialize_with = "present")]
    manager: Option<Option<Name>>,
}

impl Row {
    fn into_member(self) -> ImportedMember {
        let devices = [
            (Platform::Fcm, self.fcm_token),
            (Platform::Apns, self.apns_token),
        ]
        .into_iter()
        .filter_map(|(platform, token)| Some((platform, token?.0)))
        .collect();
        let mut teams: Vec<String> = self.teams.into_iter().map(|team| team.0).collect();
        teams.sort();
        teams.dedup();
        ImportedMember {
            external_id: self.external_id.0,
            email: self.email.0,
            display_name: self.display_name.0,
            attributes: self.attributes.0,
            devices,
            teams,
            manager: match self.manager {
                None => ManagerRef::Keep,
                Some(None) => ManagerRef::Clear,
                Some(Some(manager)) => ManagerRef::ExternalId(manager.0),
            },
        }
    }
}

/// What is wrong with one line: the column (CSV) or field (JSON) when one is to blame, and the
/// problem. Shown as `email: must be an e-mail address`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Problem {
    column: Option<String>,
    message: String,
}

impl Problem {
    fn of_line(message: impl Into<String>) -> Problem {
        Problem {
            column: None,
            message: message.into(),
        }
    }

    fn in_column(column: &str, message: impl Into<String>) -> Problem {
        Problem {
            column: Some(column.to_owned()),
            message: message.into(),
        }
    }

    /// The report's line: `row 4, column email: must be an e-mail address` (CSV) or
    /// `line 4, field email: …` (JSON lines).
    fn report(&self, format: Format, line: usize) -> String {
        let (row, column) = match format {
            Format::Csv => ("row", "column"),
            Format::JsonLines => ("line", "field"),
        };
        match &self.column {
            Some(name) => format!("{row} {line}, {column} {name}: {}", self.message),
            None => format!("{row} {line}: {}", self.message),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(column) => write!(f, "{column}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A field rule's complaint, naming the field (`email: must be an e-mail address`).
fn described<E: std::fmt::Display>(error: serde_path_to_error::Error<E>) -> Problem {
    let message = error.inner().to_string();
    // serde_json appends " at line 1 column 42"; the field name already says where.
    let message = match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    };
    match error.path().to_string().as_str() {
        "." => Problem::of_line(message),
        path => Problem::in_column(path, message),
    }
}

/// A UTF-8 byte order mark, which spreadsheet and HR exports often start a file with.
fn strip_bom(line: &str) -> &str {
    line.strip_prefix('\u{feff}').unwrap_or(line)
}

/// Reads a file's members line by line, numbering lines from 1 and skipping blank ones.
struct Lines {
    format: Format,
    /// CSV: the column each field of a row belongs to.
    header: Vec<usize>,
    lines: std::iter::Enumerate<std::io::Lines<BufReader<File>>>,
}

impl Lines {
    fn open(path: &Path, format: Format) -> anyhow::Result<Lines> {
        let mut lines = BufReader::new(open(path)?).lines().enumerate();
        let mut header = Vec::new();
        if format == Format::Csv {
            let (_, first) = lines
                .next()
                .context("the CSV file is empty: no header line")?;
            header = csv_header(strip_bom(&first?))
                .map_err(|problem| anyhow::anyhow!("line 1: {problem}"))?;
        }
        Ok(Lines {
            format,
            header,
            lines,
        })
    }
}

impl Iterator for Lines {
    /// The line number and the member or what is wrong with the line.
    type Item = anyhow::Result<(usize, Result<ImportedMember, Problem>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (index, line) = self.lines.next()?;
            let line = match line {
                Ok(line) => line,
                Err(error) => return Some(Err(error.into())),
            };
            let line = if index == 0 { strip_bom(&line) } else { &line };
            if line.trim().is_empty() {
                continue;
            }
            let member = match self.format {
                Format::JsonLines => json_member(line),
                Format::Csv => csv_member(&self.header, line),
            };
            return Some(Ok((index + 1, member)));
        }
    }
}

fn open(path: &Path) -> anyhow::Result<File> {
    File::open(path).with_context(|| format!("opening {}", path.display()))
}

/// One JSON line as a member.
fn json_member(line: &str) -> Result<ImportedMember, Problem> {
    if !line.trim_start().starts_with('{') {
        return Err(Problem::of_line(
            "not a member object: a line must be a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_str(line);
    let row: Row = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        if error.inner().is_syntax() || error.inner().is_eof() {
            Problem::of_line(format!("not a member object: {}", error.inner()))
        } else {
            described(error)
        }
    })?;
    deserializer
        .end()
        .map_err(|error| Problem::of_line(format!("not a member object: {error}")))?;
    Ok(row.into_member())
}

/// The columns of a CSV header line, as indexes into [`COLUMNS`].
fn csv_header(line: &str) -> Result<Vec<usize>, String> {
    let names = csv_fields(line)?;
    let mut header = Vec::new();
    for name in &names {
        let Some(column) = COLUMNS.iter().position(|c| c == &name.trim()) else {
            return Err(format!(
                "unknown column {name:?}; the columns are {}",
                COLUMNS.join(", ")
            ));
        };
        if header.contains(&column) {
            return Err(format!("the column {name:?} appears twice"));
        }
        header.push(column);
    }
    for required in &COLUMNS[..3] {
        if !names.iter().any(|n| n.trim() == *required) {
            return Err(format!("the header has no {required} column"));
        }
    }
    Ok(header)
}

/// One CSV row as a member: the row becomes the JSON object a JSON line would be, so both
/// formats go through the same [`Row`]. `attributes` is a JSON object, `teams` names separated
/// by `;`; an empty optional cell is a field left out.
fn csv_member(header: &[usize], line: &str) -> Result<ImportedMember, Problem> {
    let fields = csv_fields(line).map_err(Problem::of_line)?;
    if fields.len() != header.len() {
        return Err(Problem::of_line(format!(
            "{} where the header has {}",
            counted(fields.len() as u64, "field", "fields"),
            counted(header.len() as u64, "column", "columns")
        )));
    }
    let mut row = serde_json::Map::new();
    for (&column, cell) in header.iter().zip(fields) {
        let name = COLUMNS[column];
        let value = match name {
            "external_id" | "email" | "display_name" => Value::String(cell),
            // The column is there: an empty cell says "no manager".
            "manager" if cell.trim().is_empty() => Value::Null,
            "manager" => Value::String(cell),
            _ if cell.trim().is_empty() => continue,
            "attributes" => serde_json::from_str(&cell).map_err(|error| {
                Problem::in_column(
                    "attributes",
                    format!("not a JSON object of strings ({error})"),
                )
            })?,
            "fcm_token" | "apns_token" => Value::String(cell),
            _ => Value::Array(
                cell.split(';')
                    .filter(|team| !team.trim().is_empty())
                    .map(|team| Value::String(team.to_owned()))
                    .collect(),
            ),
        };
        row.insert(name.to_owned(), value);
    }
    serde_path_to_error::deserialize::<_, Row>(Value::Object(row))
        .map(Row::into_member)
        .map_err(described)
}

/// RFC 4180 fields of one line: commas separate, double quotes enclose a field that contains
/// commas or quotes, and `""` inside one is a quote. A quoted field may not span lines.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("a quoted field is not closed on its line".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("{c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("a quote inside an unquoted field".into()),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// What the validation pass learnt.
struct Checked {
    lines: usize,
    teams: BTreeSet<String>,
    /// The line of each external id, when some row names a manager by it (to tell a manager
    /// written by a later batch, and to report a refused manager at its row).
    lines_of: HashMap<String, usize>,
}

/// The first pass: every line checked, external ids and device tokens unique in the file, and
/// every manager named someone (in the file, or in the organisation's directory), not the
/// member themself, and no loop among the file's rows.
async fn validate(
    store: &Store,
    org_id: &str,
    path: &Path,
    format: Format,
) -> anyhow::Result<Checked> {
    let mut problems: Vec<String> = Vec::new();
    let mut problem_count = 0usize;
    let mut rejected_rows = BTreeSet::new();
    let mut report = |line: usize, problem: Problem| {
        problem_count += 1;
        rejected_rows.insert(line);
        if problems.len() < MAX_PROBLEMS_SHOWN {
            problems.push(problem.report(format, line));
        }
    };
    let mut external_ids: HashMap<String, usize> = HashMap::new();
    let mut tokens: HashMap<(Platform, String), usize> = HashMap::new();
    let mut teams = BTreeSet::new();
    // (line, member, manager) of each row that names a manager.
    let mut managed: Vec<(usize, String, String)> = Vec::new();
    let mut lines = 0;
    for item in Lines::open(path, format)? {
        let (line, checked) = item?;
        lines += 1;
        let member = match checked {
            Ok(member) => member,
            Err(problem) => {
                report(line, problem);
                continue;
            }
        };
        let row = match format {
            Format::Csv => "row",
            Format::JsonLines => "line",
        };
        if let Some(first) = external_ids.insert(member.external_id.clone(), line) {
            report(
                line,
                Problem::in_column(
                    "external_id",
                    format!("{:?} already appears on {row} {first}", member.external_id),
                ),
            );
        }
        for (platform, token) in member.devices {
            if let Some(first) = tokens.insert((platform, token), line) {
                let column = match platform {
                    Platform::Fcm => "fcm_token",
                    Platform::Apns => "apns_token",
                };
                report(
                    line,
                    Problem::in_column(
                        column,
                        format!(
                            "the {} token already appears on {row} {first} (a token is one phone)",
                            platform.as_str()
                        ),
                    ),
                );
            }
        }
        teams.extend(member.teams);
        if let ManagerRef::ExternalId(manager) = member.manager {
            managed.push((line, member.external_id, manager));
        }
    }
    if !managed.is_empty() {
        for (line, problem) in manager_problems(store, org_id, &external_ids, &managed).await? {
            report(line, problem);
        }
    }
    if problem_count > 0 {
        let mut message = problems.join("\n");
        if problem_count > problems.len() {
            message.push_str(&format!("\n… and {} more", problem_count - problems.len()));
        }
        bail!(
            "{message}\n{}: {} in {} rejected; nothing was imported",
            path.display(),
            counted(problem_count as u64, "problem", "problems"),
            counted(rejected_rows.len() as u64, "row", "rows"),
        );
    }
    if managed.is_empty() {
        external_ids = HashMap::new();
    }
    Ok(Checked {
        lines,
        teams,
        lines_of: external_ids,
    })
}

/// The problems of the file's managers (`managed`: line, member, manager), in line order: a
/// manager neither in the file (`lines_of`) nor in the directory, the member themself, and every row on a loop of
/// managers among the file's rows. A loop through members the file does not name is refused
/// by the store when the batch that closes it is written.
async fn manager_problems(
    store: &Store,
    org_id: &str,
    lines_of: &HashMap<String, usize>,
    managed: &[(usize, String, String)],
) -> anyhow::Result<Vec<(usize, Problem)>> {
    let outside: Vec<&str> = managed
        .iter()
        .map(|(_, _, manager)| manager.as_str())
        .filter(|manager| !lines_of.contains_key(*manager))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let stored = store.find_members_by_external_ids(org_id, &outside).await?;
    let mut problems = Vec::new();
    let mut manager_of: HashMap<&str, &str> = HashMap::with_capacity(managed.len());
    for (line, member, manager) in managed {
        if manager == member {
            problems.push((
                *line,
                Problem::in_column("manager", "a member cannot be their own manager"),
            ));
        } else if lines_of.contains_key(manager.as_str()) {
            manager_of.insert(member, manager);
        } else if !stored.contains_key(manager.as_str()) {
            problems.push((
                *line,
                Problem::in_column(
                    "manager",
                    format!(
                        "no member has the external id {manager:?}, in the file or the directory"
                    ),
                ),
            ));
        }
    }
    // Each row's chain is followed once: `state` is 1 while on the current walk, 2 when done.
    let mut state: HashMap<&str, u8> = HashMap::with_capacity(manager_of.len());
    for (_, start, _) in managed {
        let mut walk: Vec<&str> = Vec::new();
        let mut at = start.as_str();
        loop {
            match state.get(at) {
                Some(2) => break,
                Some(_) => {
                    // Back on this walk: the members from `at` on are a loop.
                    let from = walk.iter().position(|m| *m == at).unwrap_or(0);
                    let around = &walk[from..];
                    for member in around {
                        let mut chain: Vec<&str> = around.to_vec();
                        let turn = chain.iter().position(|m| m == member).unwrap_or(0);
                        chain.rotate_left(turn);
                        problems.push((
                            lines_of[*member],
                            Problem::in_column("manager", manager_loop_message(&chain)),
                        ));
                    }
                    break;
                }
                None => {
                    state.insert(at, 1);
                    walk.push(at);
                    match manager_of.get(at) {
                        Some(next) => at = next,
                        None => break,
                    }
                }
            }
        }
        for member in walk {
            state.insert(member, 2);
        }
    }
    problems.sort_by_key(|(line, _)| *line);
    Ok(problems)
}

/// Of a batch about to be written (ending at `last_line`), the members whose manager's row
/// comes in a later batch: each is written without a manager and set after the last batch
/// (in `deferred`), so the directory never holds a manager the file does not give (and so no
/// loop the file has not got). A member who already has exactly that manager keeps them, so
/// that importing the same file again leaves them unchanged.
async fn defer_later_managers(
    store: &Store,
    org_id: &str,
    checked: &Checked,
    last_line: usize,
    members: &mut [ImportedMember],
    deferred: &mut Vec<(String, Option<String>)>,
) -> anyhow::Result<()> {
    let later = |member: &ImportedMember| match &member.manager {
        ManagerRef::ExternalId(manager) => checked
            .lines_of
            .get(manager)
            .is_some_and(|line| *line > last_line),
        _ => false,
    };
    let mut named: Vec<&str> = Vec::new();
    for member in members.iter().filter(|m| later(m)) {
        named.push(&member.external_id);
        if let ManagerRef::ExternalId(manager) = &member.manager {
            named.push(manager);
        }
    }
    if named.is_empty() {
        return Ok(());
    }
    let stored = store.find_members_by_external_ids(org_id, &named).await?;
    for member in members.iter_mut() {
        if !later(member) {
            continue;
        }
        let ManagerRef::ExternalId(manager) = &member.manager else {
            continue;
        };
        let already = stored
            .get(&member.external_id)
            .and_then(|m| m.manager_id.as_ref());
        if already.is_some() && already == stored.get(manager).map(|m| &m.id) {
            continue;
        }
        deferred.push((member.external_id.clone(), Some(manager.clone())));
        member.manager = ManagerRef::Clear;
    }
    Ok(())
}

/// The store's refusal of managers (a loop through the directory) as the report of a refused
/// file: each member's row and the problem.
fn refused_managers(
    error: StoreError,
    lines_of: &HashMap<String, usize>,
    format: Format,
) -> anyhow::Error {
    let StoreError::Manager(errors) = error else {
        return error.into();
    };
    let lines: Vec<String> = errors
        .iter()
        .map(|error| {
            let message = match &error.problem {
                ManagerProblem::Unknown(manager) => {
                    format!("no member has the external id {manager:?}")
                }
                ManagerProblem::OwnManager => "a member cannot be their own manager".to_owned(),
                ManagerProblem::Cycle(_) => error.to_string(),
            };
            let problem = Problem::in_column("manager", message);
            match lines_of.get(&error.external_id) {
                Some(line) => problem.report(format, *line),
                None => format!("{}: {problem}", error.external_id),
            }
        })
        .collect();
    anyhow::anyhow!(
        "{}\nthe batch holding these rows was not written; the batches before it were",
        lines.join("\n")
    )
}

/// Rows written so far, told as they go: on a terminal one line redrawn in place (`\r`),
/// elsewhere a plain line per batch.
pub struct Progress<W: Write> {
    out: W,
    terminal: bool,
    drawn: bool,
}

impl<W: Write> Progress<W> {
    pub fn new(out: W, terminal: bool) -> Self {
        Progress {
            out,
            terminal,
            drawn: false,
        }
    }

    fn say(&mut self, line: &str) {
        self.end_line();
        // Progress is a courtesy: a closed stderr does not stop the import.
        let _ = writeln!(self.out, "{line}");
    }

    fn batch(&mut self, done: usize, total: usize, per_second: f64) {
        let line = format!(
            "  {done} of {} written ({per_second:.0} rows/s)",
            counted(total as u64, "row", "rows")
        );
        let _ = if self.terminal {
            self.drawn = true;
            write!(self.out, "\r{line}")
        } else {
            writeln!(self.out, "{line}")
        };
        let _ = self.out.flush();
    }

    fn end_line(&mut self) {
        if std::mem::take(&mut self.drawn) {
            let _ = writeln!(self.out);
        }
    }
}

/// Imports `path` into the organisation: validates the whole file, then writes it in batches
/// of `batch_size` lines, telling progress on stderr. Answers the summed counts.
pub async fn import_members(
    store: &Store,
    org_id: &str,
    path: &Path,
    batch_size: usize,
) -> anyhow::Result<ImportCounts> {
    let stderr = std::io::stderr();
    let terminal = std::io::IsTerminal::is_terminal(&stderr);
    import_members_telling(
        store,
        org_id,
        path,
        batch_size,
        &mut Progress::new(stderr, terminal),
    )
    .await
}

/// [`import_members`], telling its progress to `progress`.
pub async fn import_members_telling<W: Write>(
    store: &Store,
    org_id: &str,
    path: &Path,
    batch_size: usize,
    progress: &mut Progress<W>,
) -> anyhow::Result<ImportCounts> {
    let started = Instant::now();
    let format = Format::of(path)?;
    let checked = validate(store, org_id, path, format).await?;
    progress.say(&format!(
        "{}: {}, all valid ({:.1} s)",
        path.display(),
        counted(checked.lines as u64, "member", "members"),
        started.elapsed().as_secs_f64()
    ));
    let names: Vec<&str> = checked.teams.iter().map(String::as_str).collect();
    let team_ids = store.ensure_teams(org_id, &names).await?;

    let mut counts = ImportCounts::default();
    let mut done = 0usize;
    let mut batch = Vec::with_capacity(batch_size);
    let mut lines = Lines::open(path, format)?;
    let mut analysed_at = 0usize;
    // Managers whose rows come in a later batch: (member, manager), set after the last batch.
    let mut deferred: Vec<(String, Option<String>)> = Vec::new();
    loop {
        let next = lines.next().transpose()?;
        let finished = next.is_none();
        if let Some((line, member)) = next {
            // Only if the file changed since it was checked.
            let member = member.map_err(|problem| {
                anyhow::anyhow!(
                    "{} (the file changed since it was checked)",
                    problem.report(format, line)
                )
            })?;
            batch.push((line, member));
            if batch.len() < batch_size.max(1) {
                continue;
            }
        }
        if batch.is_empty() {
            break;
        }
        let last_line = batch.last().map_or(0, |(line, _)| *line);
        let mut members: Vec<ImportedMember> = batch.drain(..).map(|(_, m)| m).collect();
        defer_later_managers(
            store,
            org_id,
            &checked,
            last_line,
            &mut members,
            &mut deferred,
        )
        .await?;
        counts += store
            .import_members(org_id, &team_ids, &members)
            .await
            .map_err(|e| refused_managers(e, &checked.lines_of, format))?;
        done += members.len();
        // Statistics taken while the directory was small make the planner scan it whole for
        // each batch's lookups (PostgreSQL slowed to a crawl past 100,000): refresh them each
        // time it has doubled, which also re-plans the cached statements.
        if done >= 2 * analysed_at.max(10_000) {
            store.optimize().await?;
            analysed_at = done;
        }
        let seconds = started.elapsed().as_secs_f64();
        progress.batch(done, checked.lines, done as f64 / seconds.max(0.001));
        if finished {
            break;
        }
    }
    progress.end_line();
    for chunk in deferred.chunks(batch_size.max(1)) {
        store
            .assign_managers(org_id, chunk)
            .await
            .map_err(|e| refused_managers(e, &checked.lines_of, format))?;
    }
    // The directory may have grown many times over: fresh statistics for the planner.
    store.optimize().await?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_follow_rfc_4180_quoting() {
        assert_eq!(csv_fields("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(
            csv_fields(r#""x, y","{""site"": ""Leeds""}",z"#).unwrap(),
            ["x, y", r#"{"site": "Leeds"}"#, "z"]
        );
        assert_eq!(csv_fields("a,\"\"\r").unwrap(), ["a", ""]);
        assert!(csv_fields("\"open").is_err());
        assert!(csv_fields("\"a\"b").is_err());
        assert!(csv_fields("a\"b").is_err());
    }

    #[test]
    fn both_formats_read_a_line_through_the_api_types() {
        let header =
            csv_header("external_id,email,display_name,attributes,fcm_token,teams").unwrap();
        let from_csv = csv_member(
            &header,
            r#" e-1 ,ada@acme.test,Ada,"{""site"": ""Leeds""}",phone,Ops;Ops; "#,
        )
        .unwrap();
        let from_json = json_member(
            r#"{"external_id": " e-1 ", "email": "ada@acme.test", "display_name": "Ada",
                "attributes": {"site": "Leeds"}, "fcm_token": "phone", "teams": ["Ops", "Ops"]}"#
                .replace('\n', " ")
                .as_str(),
        )
        .unwrap();
        assert_eq!(from_csv, from_json);
        assert_eq!(from_csv.external_id, "e-1");
        assert_eq!(from_csv.devices, [(Platform::Fcm, "phone".to_owned())]);
        assert_eq!(from_csv.teams, ["Ops"]);

        // A problem names its field, in either format.
        let problem = csv_member(&header, "e-1,ada,Ada,,,").unwrap_err();
        assert_eq!(problem.to_string(), "email: must be an e-mail address");
        assert_eq!(
            problem.report(Format::Csv, 4),
            "row 4, column email: must be an e-mail address"
        );
        let problem =
            csv_member(&header, r#"e-1,ada@acme.test,Ada,"{""a site"": ""x""}",,"#).unwrap_err();
        assert_eq!(problem.column.as_deref(), Some("attributes"), "{problem}");
        let problem = csv_member(&header, "  ,ada@acme.test,Ada,,,").unwrap_err();
        assert_eq!(problem.to_string(), "external_id: must not be empty");
        let problem = csv_member(&header, "e-1,ada@acme.test").unwrap_err();
        assert_eq!(
            problem.report(Format::Csv, 2),
            "row 2: 2 fields where the header has 6 columns"
        );
        let problem = json_member(
            r#"{"external_id": "e-1", "email": "ada@acme.test", "display_name": "Ada", "teams": ["Ops", " "]}"#,
        )
        .unwrap_err();
        assert_eq!(problem.to_string(), "teams[1]: must not be empty");
        assert_eq!(
            problem.report(Format::JsonLines, 7),
            "line 7, field teams[1]: must not be empty"
        );
        let problem = json_member(r#"{"external_id": "e-1", "display_name": "Ada"}"#).unwrap_err();
        assert!(problem.to_string().contains("`email`"), "{problem}");
        assert!(
            json_member(r#"{"external_id": "#)
                .unwrap_err()
                .to_string()
                .starts_with("not a member")
        );
    }

    /// A file in the system's temporary folder, removed when dropped.
    pub(super) struct TempFile(pub(super) std::path::PathBuf);

    impl TempFile {
        pub(super) fn new(name: &str, contents: &str) -> TempFile {
            let path =
                std::env::temp_dir().join(format!("pidgr-import-{}-{name}", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn a_byte_order_mark_before_the_header_is_ignored() {
        let csv = TempFile::new(
            "bom.txt",
            "\u{feff}external_id,email,display_name\r\ne-1,ada@acme.test,Ada\r\n",
        );
        assert_eq!(Format::of(&csv.0).unwrap(), Format::Csv);
        let members: Vec<_> = Lines::open(&csv.0, Format::Csv)
            .unwrap()
            .map(|item| item.unwrap())
            .collect();
        assert_eq!(members.len(), 1);
        let (line, member) = &members[0];
        assert_eq!(*line, 2);
        assert_eq!(member.as_ref().unwrap().external_id, "e-1");

        let json = TempFile::new(
            "bom-lines",
            "\u{feff}{\"external_id\": \"e-1\", \"email\": \"ada@acme.test\", \"display_name\": \"Ada\"}\n",
        );
        assert_eq!(Format::of(&json.0).unwrap(), Format::JsonLines);
        let members: Vec<_> = Lines::open(&json.0, Format::JsonLines)
            .unwrap()
            .map(|item| item.unwrap().1.unwrap())
            .collect();
        assert_eq!(members[0].external_id, "e-1");
    }

    #[test]
    fn a_csv_header_names_known_columns_once_and_the_required_ones() {
        assert_eq!(
            csv_header("email,external_id,display_name,teams").unwrap(),
            [1, 0, 2, 6]
        );
        assert!(csv_header("external_id,email").is_err());
        assert!(csv_header("external_id,email,display_name,phone").is_err());
        assert!(csv_header("external_id,email,display_name,email").is_err());
    }
}

/// Whole imports into a SQLite store.
#[cfg(test)]
mod import_tests {
    use super::tests::TempFile;
    use super::*;
    use pidgr_store::{SetKind, testing};
    use std::collections::BTreeMap;

    const MEMBERS: [&str; 3] = [
        r#"{"external_id": "e-1", "email": "ada@acme.test", "display_name": "Ada", "attributes": {"site": "Leeds"}, "fcm_token": "ada-phone", "teams": ["Operations", "Night shift"]}"#,
        r#"{"external_id": "e-2", "email": "alan@acme.test", "display_name": "Alan, Turing", "attributes": {"site": "York"}, "apns_token": "alan-phone", "teams": ["Operations"]}"#,
        r#"{"external_id": "e-3", "email": "grace@acme.test", "display_name": "Grace \"Amazing\" Hopper"}"#,
    ];
    const CSV: &str = "\u{feff}external_id,email,display_name,attributes,fcm_token,apns_token,teams
e-1,ada@acme.test,Ada,\"{\"\"site\"\": \"\"Leeds\"\"}\",ada-phone,,Operations;Night shift
e-2,alan@acme.test,\"Alan, Turing\",\"{\"\"site\"\": \"\"York\"\"}\",,alan-phone,Operations
e-3,grace@acme.test,\"Grace \"\"Amazing\"\" Hopper\",,,,
";

    /// What an organisation's directory holds, without generated ids and times: each member's
    /// profile, devices and teams, in the shape of an import line, by external id.
    async fn directory(store: &Store, org: &str) -> BTreeMap<String, ImportedMember> {
        let mut members = BTreeMap::new();
        let mut external_ids = HashMap::new();
        for member in store.list_members(org, "", 500).await.unwrap() {
            let mut devices: Vec<(Platform, String)> = store
                .member_devices(org, &member.id)
                .await
                .unwrap()
                .into_iter()
                .map(|d| (d.platform, d.token))
                .collect();
            devices.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
            external_ids.insert(member.id, member.external_id.clone());
            members.insert(
                member.external_id.clone(),
                ImportedMember {
                    external_id: member.external_id,
                    email: member.email,
                    display_name: member.display_name,
                    attributes: member.attributes,
                    devices,
                    teams: Vec::new(),
                    manager: pidgr_store::ManagerRef::Keep,
                },
            );
        }
        for team in store.list_sets(org, SetKind::Team, "", 500).await.unwrap() {
            for member in store
                .list_set_members(org, SetKind::Team, &team.id, "", 500)
                .await
                .unwrap()
            {
                let external_id = &external_ids[&member.id];
                let teams = &mut members.get_mut(external_id).unwrap().teams;
                teams.push(team.name.clone());
                teams.sort();
            }
        }
        members
    }

    #[tokio::test]
    async fn a_file_with_one_bad_line_writes_nothing() {
        let store = testing::sqlite().await.unwrap();
        let org = store.create_organisation("Acme").await.unwrap().id;
        let before = testing::row_counts(&store).await.unwrap();

        let bad_email = CSV.replace("grace@acme.test", "grace");
        let bad = TempFile::new("bad.csv", &bad_email);
        let error = import_members(&store, &org, &bad.0, 1).await.unwrap_err();
        let error = error.to_string();
        assert!(
            error.contains("row 4, column email: must be an e-mail address"),
            "{error}"
        );
        assert!(
            error.contains("1 problem in 1 row rejected; nothing was imported"),
            "{error}"
        );
        assert_eq!(testing::row_counts(&store).await.unwrap(), before);

        let twice = [MEMBERS[0], MEMBERS[1], &MEMBERS[2].replace("e-3", "e-1")].join("\n");
        let twice = TempFile::new("twice.jsonl", &twice);
        let error = import_members(&store, &org, &twice.0, 1).await.unwrap_err();
        let error = error.to_string();
        assert!(
            error.contains(r#"line 3, field external_id: "e-1" already appears on line 1"#),
            "{error}"
        );
        assert_eq!(testing::row_counts(&store).await.unwrap(), before);
    }

    #[tokio::test]
    async fn every_rejected_row_is_reported_with_its_row_number_column_and_problem() {
        let store = testing::sqlite().await.unwrap();
        let org = store.create_organisation("Acme").await.unwrap().id;
        let before = testing::row_counts(&store).await.unwrap();
        // The header is row 1 and the blank row 3 counts, as in a spreadsheet or an editor.
        let csv = "external_id,email,display_name,teams
e-1,ada@acme.test,Ada,Ops

e-2,alan,Alan,
e-3,grace@acme.test
e-1,ada2@acme.test,Ada again,
";
        let file = TempFile::new("rejected.csv", csv);
        let mut told = Vec::new();
        let error = import_members_telling(
            &store,
            &org,
            &file.0,
            10,
            &mut Progress::new(&mut told, false),
        )
        .await
        .unwrap_err()
        .to_string();
        let lines: Vec<&str> = error.lines().collect();
        assert_eq!(
            lines,
            [
                "row 4, column email: must be an e-mail address",
                "row 5: 2 fields where the header has 4 columns",
                r#"row 6, column external_id: "e-1" already appears on row 2"#,
                "rejected.csv: 3 problems in 3 rows rejected; nothing was imported"
                    .replace("rejected.csv", &file.0.display().to_string())
                    .as_str(),
            ]
        );
        assert_eq!(testing::row_counts(&store).await.unwrap(), before);
        assert!(told.is_empty(), "nothing written, no progress told");
    }

    #[tokio::test]
    async fn progress_is_a_line_per_batch_when_not_a_terminal_and_one_redrawn_line_on_one() {
        let json = TempFile::new("progress.jsonl", &MEMBERS.join("\n"));
        for terminal in [false, true] {
            let store = testing::sqlite().await.unwrap();
            let org = store.create_organisation("Acme").await.unwrap().id;
            let mut told = Vec::new();
            let mut progress = Progress::new(&mut told, terminal);
            import_members_telling(&store, &org, &json.0, 2, &mut progress)
                .await
                .unwrap();
            let told = String::from_utf8(told).unwrap();
            let batches: Vec<&str> = told
                .split(['\r', '\n'])
                .filter(|l| l.contains(" written ("))
                .collect();
            assert_eq!(batches.len(), 2, "{told:?}");
            assert!(batches[0].starts_with("  2 of 3 rows written"), "{told:?}");
            assert!(batches[1].starts_with("  3 of 3 rows written"), "{told:?}");
            assert!(told.contains("3 members, all valid"), "{told:?}");
            if terminal {
                assert_eq!(told.matches('\r').count(), 2, "{told:?}");
                assert!(
                    told.ends_with('\n'),
                    "the last count's line is ended: {told:?}"
                );
            } else {
                assert!(!told.contains('\r'), "{told:?}");
                assert_eq!(told.lines().count(), 3, "{told:?}");
            }
        }
    }

    #[tokio::test]
    async fn importing_again_updates_by_external_id_and_creates_no_one_twice() {
        let store = testing::sqlite().await.unwrap();
        let org = store.create_organisation("Acme").await.unwrap().id;
        let first = TempFile::new("again-1.csv", CSV);
        import_members(&store, &org, &first.0, 2).await.unwrap();
        let moved = TempFile::new(
            "again-2.csv",
            &CSV.replace("grace@acme.test", "grace@navy.test"),
        );
        let counts = import_members(&store, &org, &moved.0, 2).await.unwrap();
        assert_eq!(
            (counts.created, counts.updated, counts.unchanged),
            (0, 1, 2)
        );
        assert_eq!(
            directory(&store, &org).await["e-3"].email,
            "grace@navy.test"
        );
    }

    #[tokio::test]
    async fn csv_and_json_lines_with_the_same_members_give_the_same_rows() {
        let csv = TempFile::new("same.csv", CSV);
        let json = TempFile::new("same.jsonl", &MEMBERS.join("\n"));
        let mut seen = Vec::new();
        for path in [&csv.0, &json.0] {
            let store = testing::sqlite().await.unwrap();
            let org = store.create_organisation("Acme").await.unwrap().id;
            let counts = import_members(&store, &org, path, 2).await.unwrap();
            assert_eq!(
                (counts.created, counts.devices, counts.memberships),
                (3, 2, 3)
            );
            seen.push((
                testing::row_counts(&store).await.unwrap(),
                directory(&store, &org).await,
            ));
        }
        assert_eq!(seen[0], seen[1]);
        let (_, directory) = &seen[0];
        assert_eq!(directory["e-2"].display_name, "Alan, Turing");
        assert_eq!(directory["e-3"].display_name, "Grace \"Amazing\" Hopper");
        assert_eq!(directory["e-1"].teams, ["Night shift", "Operations"]);
        assert_eq!(
            directory["e-2"].devices,
            [(Platform::Apns, "alan-phone".to_owned())]
        );
    }

    /// Each member's manager, by external id.
    async fn managers(store: &Store, org: &str) -> BTreeMap<String, Option<String>> {
        let members = store.list_members(org, "", 500).await.unwrap();
        let external: HashMap<&str, &str> = members
            .iter()
            .map(|m| (m.id.as_str(), m.external_id.as_str()))
            .collect();
        members
            .iter()
            .map(|m| {
                let manager = m.manager_id.as_deref().map(|id| external[id].to_owned());
                (m.external_id.clone(), manager)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_manager_column_names_managers_by_external_id_even_in_a_later_batch() {
        let store = testing::sqlite().await.unwrap();
        let org = store.create_organisation("Acme").await.unwrap().id;
        // e-1 reports to e-3, two batches later; e-3 to boss, already in the directory.
        store
            .create_member(
                &org,
                pidgr_store::NewMember {
                    external_id: "boss".into(),
                    email: "boss@acme.test".into(),
                    display_name: "Boss".into(),
                    role_id: "member".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let csv = "external_id,email,display_name,manager
e-1,ada@acme.test,Ada,e-3
e-2,alan@acme.test,Alan,e-1
e-3,grace@acme.test,Grace,boss
";
        let file = TempFile::new("managers.csv", csv);
        let counts = import_members(&store, &org, &file.0, 1).await.unwrap();
        assert_eq!(counts.created, 3);
        let expected = |e1: Option<&str>| {
            BTreeMap::from([
                ("boss".to_owned(), None),
                ("e-1".to_owned(), e1.map(str::to_owned)),
                ("e-2".to_owned(), Some("e-1".to_owned())),
                ("e-3".to_owned(), Some("boss".to_owned())),
            ])
        };
        assert_eq!(managers(&store, &org).await, expected(Some("e-3")));
        // The same file again changes nothing, forward reference included.
        let counts = import_members(&store, &org, &file.0, 1).await.unwrap();
        assert_eq!((counts.updated, counts.unchanged), (0, 3));
        // An empty cell removes the manager; a file without the column keeps them.
        let cleared = TempFile::new("cleared.csv", &csv.replace("Ada,e-3", "Ada,"));
        import_members(&store, &org, &cleared.0, 2).await.unwrap();
        assert_eq!(managers(&store, &org).await, expected(None));
        let without = TempFile::new(
            "without.csv",
            "external_id,email,display_name\ne-2,alan@acme.test,Alan Turing\n",
        );
        import_members(&store, &org, &without.0, 2).await.unwrap();
        assert_eq!(managers(&store, &org).await, expected(None));
        // JSON lines name the manager in the same field.
        let json = TempFile::new(
            "managers.jsonl",
            r#"{"external_id": "e-1", "email": "ada@acme.test", "display_name": "Ada", "manager": "e-3"}"#,
        );
        import_members(&store, &org, &json.0, 2).await.unwrap();
        assert_eq!(managers(&store, &org).await, expected(Some("e-3")));
    }

    #[tokio::test]
    async fn a_bad_manager_is_reported_at_its_row_and_nothing_is_imported() {
        let store = testing::sqlite().await.unwrap();
        let org = store.create_organisation("Acme").await.unwrap().id;
        let before = testing::row_counts(&store).await.unwrap();
        let csv = "external_id,email,display_name,manager
e-1,ada@acme.test,Ada,e-2
e-2,alan@acme.test,Alan,e-3
e-3,grace@acme.test,Grace,e-1
e-4,kay@acme.test,Kay,nobody
e-5,lin@acme.test,Lin,e-5
e-6,max@acme.test,Max,e-1
";
        let file = TempFile::new("bad-managers.csv", csv);
        let error = import_members(&store, &org, &file.0, 2)
            .await
            .unwrap_err()
            .to_string();
        let lines: Vec<&str> = error.lines().collect();
        assert_eq!(
            lines[..5],
            [
                "row 2, column manager: the chain of managers would loop (by external id: e-1 → e-2 → e-3 → e-1)",
                "row 3, column manager: the chain of managers would loop (by external id: e-2 → e-3 → e-1 → e-2)",
                "row 4, column manager: the chain of managers would loop (by external id: e-3 → e-1 → e-2 → e-3)",
                r#"row 5, column manager: no member has the external id "nobody", in the file or the directory"#,
                "row 6, column manager: a member cannot be their own manager",
            ]
        );
        assert!(
            lines[5].ends_with("5 problems in 5 rows rejected; nothing was imported"),
            "{error}"
        );
        assert_eq!(testing::row_counts(&store).await.unwrap(), before);
    }
}
