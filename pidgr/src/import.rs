//! `pidgr members import FILE`: a directory of any size (a million members) written in batches,
//! idempotent on external id.
//!
//! Two passes over the file: the first validates every line and remembers only what a
//! duplicate check needs, so a bad file is refused whole (every problem with its line number)
//! before anything is written; the second writes batches of `--batch-size` lines, one
//! transaction each, through the store's multi-row import. Lines are not held in memory
//! between the passes: a million-member file costs its id and token sets, not its contents.
//!
//! The field rules are the API's (`POST /v1/members`, `POST /v1/members/{id}/devices`, team
//! names): an imported member could have been created through the API as well.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use pidgr_store::{ImportCounts, ImportedMember, Platform, Store};
use serde::Deserialize;

/// Problems listed before the rest are only counted.
const MAX_PROBLEMS_SHOWN: usize = 50;
/// The CSV columns, in any order; the first three are required.
const COLUMNS: [&str; 7] = [
    "external_id",
    "email",
    "display_name",
    "attributes",
    "fcm_token",
    "apns_token",
    "teams",
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
        for line in BufReader::new(file).lines() {
            let line = line?;
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

/// One JSON line, before the field rules are applied.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    external_id: String,
    email: String,
    display_name: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    fcm_token: Option<String>,
    #[serde(default)]
    apns_token: Option<String>,
    #[serde(default)]
    teams: Vec<String>,
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
            header = csv_header(&first?).map_err(|problem| anyhow::anyhow!("line 1: {problem}"))?;
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
    type Item = anyhow::Result<(usize, Result<ImportedMember, Vec<String>>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (index, line) = self.lines.next()?;
            let line = match line {
                Ok(line) => line,
                Err(error) => return Some(Err(error.into())),
            };
            if line.trim().is_empty() {
                continue;
            }
            let raw = match self.format {
                Format::JsonLines => serde_json::from_str::<RawMember>(&line)
                    .map_err(|error| vec![format!("not a member object: {error}")]),
                Format::Csv => csv_member(&self.header, &line),
            };
            return Some(Ok((index + 1, raw.and_then(check))));
        }
    }
}

fn open(path: &Path) -> anyhow::Result<File> {
    File::open(path).with_context(|| format!("opening {}", path.display()))
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

/// One CSV row as a member: `attributes` is a JSON object, `teams` names separated by `;`.
fn csv_member(header: &[usize], line: &str) -> Result<RawMember, Vec<String>> {
    let fields = csv_fields(line).map_err(|problem| vec![problem])?;
    if fields.len() != header.len() {
        return Err(vec![format!(
            "{} fields where the header has {} columns",
            fields.len(),
            header.len()
        )]);
    }
    let mut raw = RawMember {
        external_id: String::new(),
        email: String::new(),
        display_name: String::new(),
        attributes: BTreeMap::new(),
        fcm_token: None,
        apns_token: None,
        teams: Vec::new(),
    };
    let optional = |value: String| (!value.trim().is_empty()).then_some(value);
    for (&column, value) in header.iter().zip(fields) {
        match COLUMNS[column] {
            "external_id" => raw.external_id = value,
            "email" => raw.email = value,
            "display_name" => raw.display_name = value,
            "attributes" if value.trim().is_empty() => {}
            "attributes" => {
                raw.attributes = serde_json::from_str(&value).map_err(|error| {
                    vec![format!(
                        "attributes: not a JSON object of strings ({error})"
                    )]
                })?;
            }
            "fcm_token" => raw.fcm_token = optional(value),
            "apns_token" => raw.apns_token = optional(value),
            _ => {
                raw.teams = value
                    .split(';')
                    .filter(|t| !t.trim().is_empty())
                    .map(str::to_owned)
                    .collect();
            }
        }
    }
    Ok(raw)
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

/// The API's rule for names and tokens: trimmed, 1 to `max` characters.
fn text(field: &str, value: &str, max: usize, problems: &mut Vec<String>) -> String {
    let value = value.trim();
    if value.is_empty() {
        problems.push(format!("{field}: must not be empty"));
    } else if value.chars().count() > max {
        problems.push(format!("{field}: must be at most {max} characters long"));
    }
    value.to_owned()
}

/// Applies the API's field rules to one line.
fn check(raw: RawMember) -> Result<ImportedMember, Vec<String>> {
    let mut problems = Vec::new();
    let external_id = text("external_id", &raw.external_id, 200, &mut problems);
    let email = text("email", &raw.email, 320, &mut problems);
    if !email.is_empty() {
        match email.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {}
            _ => problems.push("email: must be an e-mail address".into()),
        }
    }
    let display_name = text("display_name", &raw.display_name, 200, &mut problems);
    if raw.attributes.len() > 100 {
        problems.push("attributes: at most 100 are allowed".into());
    }
    for (key, value) in &raw.attributes {
        let usable = !key.is_empty()
            && key.len() <= 64
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'));
        if !usable {
            problems.push(format!(
                "attributes: the name {key:?} must be 1 to 64 letters, digits, '_' or '.'"
            ));
        }
        if value.chars().count() > 2000 {
            problems.push(format!(
                "attributes: the value of {key:?} must be at most 2000 characters long"
            ));
        }
    }
    let mut devices = Vec::new();
    for (field, platform, token) in [
        ("fcm_token", Platform::Fcm, &raw.fcm_token),
        ("apns_token", Platform::Apns, &raw.apns_token),
    ] {
        if let Some(token) = token {
            devices.push((platform, text(field, token, 4096, &mut problems)));
        }
    }
    let mut teams: Vec<String> = raw
        .teams
        .iter()
        .map(|team| text("teams", team, 200, &mut problems))
        .collect();
    teams.sort();
    teams.dedup();
    if problems.is_empty() {
        Ok(ImportedMember {
            external_id,
            email,
            display_name,
            attributes: raw.attributes,
            devices,
            teams,
        })
    } else {
        Err(problems)
    }
}

/// What the validation pass learnt.
struct Checked {
    lines: usize,
    teams: BTreeSet<String>,
}

/// The first pass: every line checked, external ids and device tokens unique in the file.
fn validate(path: &Path, format: Format) -> anyhow::Result<Checked> {
    let mut problems: Vec<String> = Vec::new();
    let mut problem_count = 0usize;
    let mut report = |line: usize, problem: String| {
        problem_count += 1;
        if problems.len() < MAX_PROBLEMS_SHOWN {
            problems.push(format!("line {line}: {problem}"));
        }
    };
    let mut external_ids: HashMap<String, usize> = HashMap::new();
    let mut tokens: HashMap<(Platform, String), usize> = HashMap::new();
    let mut teams = BTreeSet::new();
    let mut lines = 0;
    for item in Lines::open(path, format)? {
        let (line, checked) = item?;
        lines += 1;
        let member = match checked {
            Ok(member) => member,
            Err(found) => {
                for problem in found {
                    report(line, problem);
                }
                continue;
            }
        };
        if let Some(first) = external_ids.insert(member.external_id.clone(), line) {
            report(
                line,
                format!(
                    "external_id {:?} already appears on line {first}",
                    member.external_id
                ),
            );
        }
        for (platform, token) in member.devices {
            if let Some(first) = tokens.insert((platform, token), line) {
                report(
                    line,
                    format!(
                        "the {} token already appears on line {first} (a token is one phone)",
                        platform.as_str()
                    ),
                );
            }
        }
        teams.extend(member.teams);
    }
    if problem_count > 0 {
        let mut message = problems.join("\n");
        if problem_count > problems.len() {
            message.push_str(&format!("\n… and {} more", problem_count - problems.len()));
        }
        bail!(
            "{message}\n{}: {problem_count} problem(s); nothing was imported",
            path.display()
        );
    }
    Ok(Checked { lines, teams })
}

/// Imports `path` into the organisation: validates the whole file, then writes it in batches
/// of `batch_size` lines, printing progress to stderr. Answers the summed counts.
pub async fn import_members(
    store: &Store,
    org_id: &str,
    path: &Path,
    batch_size: usize,
) -> anyhow::Result<ImportCounts> {
    let started = Instant::now();
    let format = Format::of(path)?;
    let checked = validate(path, format)?;
    eprintln!(
        "{}: {} member(s), all valid ({:.1} s)",
        path.display(),
        checked.lines,
        started.elapsed().as_secs_f64()
    );
    let names: Vec<&str> = checked.teams.iter().map(String::as_str).collect();
    let team_ids = store.ensure_teams(org_id, &names).await?;

    let mut counts = ImportCounts::default();
    let mut done = 0usize;
    let mut batch = Vec::with_capacity(batch_size);
    let mut last_report = Instant::now();
    let mut lines = Lines::open(path, format)?;
    loop {
        let next = lines.next().transpose()?;
        let finished = next.is_none();
        if let Some((line, member)) = next {
            // Only if the file changed since it was checked.
            let member = member.map_err(|problems| {
                anyhow::anyhow!(
                    "line {line} changed since it was checked: {}",
                    problems.join("; ")
                )
            })?;
            batch.push(member);
            if batch.len() < batch_size.max(1) {
                continue;
            }
        }
        if batch.is_empty() {
            break;
        }
        counts += store.import_members(org_id, &team_ids, &batch).await?;
        done += batch.len();
        batch.clear();
        if last_report.elapsed().as_secs() >= 2 || done == checked.lines {
            last_report = Instant::now();
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "  {done} of {} written ({:.0} members/s)",
                checked.lines,
                done as f64 / seconds.max(0.001)
            );
        }
        if finished {
            break;
        }
    }
    // The directory may have grown many times over: fresh statistics for the planner.
    store.analyze_directory().await?;
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
    fn a_line_is_checked_with_the_api_rules() {
        let raw = |email: &str, key: &str| RawMember {
            external_id: " e-1 ".into(),
            email: email.into(),
            display_name: "Ada".into(),
            attributes: BTreeMap::from([(key.to_owned(), "Leeds".to_owned())]),
            fcm_token: Some("phone".into()),
            apns_token: None,
            teams: vec!["Ops".into(), "Ops".into()],
        };
        let member = check(raw("ada@acme.test", "site")).unwrap();
        assert_eq!(member.external_id, "e-1");
        assert_eq!(member.devices, [(Platform::Fcm, "phone".to_owned())]);
        assert_eq!(member.teams, ["Ops"]);
        let problems = check(raw("ada", "a site")).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
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
