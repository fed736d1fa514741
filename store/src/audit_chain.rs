//! The audit export's hash chain and its verification: one definition of the hashed bytes that
//! the API writes with and `pidgr audit verify` checks with, so the two cannot drift apart.
//! Pure: no database, no clock, no I/O.
//!
//! An export is a list of flat records (JSON lines, or CSV rows with the same fields). Each
//! record's `hash` is `hex(SHA-256(prev_hash || canonical bytes))`, where `prev_hash` is the
//! previous record's `hash` (for the first record [`GENESIS`], 64 zeros) and the canonical bytes
//! are the record as compact JSON with its keys in byte order, without `hash` and `signature`
//! (empty fields are never written at all). The last record is the trailer: the organisation,
//! the campaign's status and number of deliveries, how many events came before it, and an
//! Ed25519 signature over its own `hash` (the 64 ASCII characters), which covers every record
//! before it through the chain.
//!
//! A file verifies only if it is byte for byte what the exporter writes: every line is checked
//! against the canonical encoding of the record read from it, so no two files with different
//! bytes (a repeated key, an escape written differently, a space, a quoted CSV cell that needs
//! no quotes, a number written `+3` or `007`) verify with the same signature.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The signature algorithm named in the trailer.
pub const ALGORITHM: &str = "Ed25519";

/// Every field a record may have, in the CSV's column order.
pub const COLUMNS: [&str; 23] = [
    "index",
    "type",
    "campaign_id",
    "delivery_id",
    "user_id",
    "member_id",
    "event",
    "occurred_at",
    "source",
    "api_key_id",
    "template_id",
    "template_version",
    "content_sha256",
    "content_confirmed",
    "count",
    "deliveries",
    "org_id",
    "campaign_status",
    "key_id",
    "algorithm",
    "prev_hash",
    "hash",
    "signature",
];

/// The fields that hold whole numbers.
const INTEGER_COLUMNS: [&str; 4] = ["index", "template_version", "count", "deliveries"];

/// The fields that hold `true` or `false`; every other field holds text.
const BOOLEAN_COLUMNS: [&str; 1] = ["content_confirmed"];

/// Fields outside the hashed bytes: the hash itself, and the signature over it.
const UNHASHED: [&str; 2] = ["hash", "signature"];

/// One record: field name to value (text, whole number or boolean). An absent field is empty.
pub type Record = BTreeMap<String, Value>;

/// The bytes a record's hash covers: compact JSON as serde_json writes it, keys in byte order,
/// without `hash`, `signature` and empty fields (null or `""`, which the writer never keeps).
pub fn canonical_bytes(record: &Record) -> Vec<u8> {
    let mut out = String::from("{");
    let mut first = true;
    for (key, value) in record {
        if UNHASHED.contains(&key.as_str()) || is_empty(value) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&Value::String(key.clone()).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
    out.into_bytes()
}

/// `hex(SHA-256(prev_hash || canonical bytes))`.
pub fn chain_hash(prev_hash: &str, record: &Record) -> String {
    let mut digest = Sha256::new();
    digest.update(prev_hash.as_bytes());
    digest.update(canonical_bytes(record));
    hex::encode(digest.finalize())
}

/// Builds an export's records in order: numbers them, chains them, and ends with a signed
/// trailer.
#[derive(Debug)]
pub struct ChainWriter {
    prev_hash: String,
    index: i64,
    events: i64,
}

impl Default for ChainWriter {
    fn default() -> Self {
        ChainWriter {
            prev_hash: GENESIS.to_owned(),
            index: 0,
            events: 0,
        }
    }
}

impl ChainWriter {
    /// `event` (its fields, without `index`, `type`, `prev_hash`, `hash`) as the next record.
    pub fn event(&mut self, mut event: Record) -> Record {
        event.insert("type".into(), "event".into());
        self.events += 1;
        self.seal(event)
    }

    /// The trailer: what it says of the campaign, the number of events, the signing key's id,
    /// and the signature over the trailer's hash.
    pub fn trailer(mut self, closing: &Closing, key_id: &str, key: &Ed25519KeyPair) -> Record {
        let mut trailer = Record::new();
        trailer.insert("type".into(), "trailer".into());
        trailer.insert("campaign_id".into(), closing.campaign_id.into());
        trailer.insert("org_id".into(), closing.org_id.into());
        trailer.insert("campaign_status".into(), closing.campaign_status.into());
        trailer.insert("deliveries".into(), closing.deliveries.into());
        trailer.insert("count".into(), self.events.into());
        trailer.insert("key_id".into(), key_id.into());
        trailer.insert("algorithm".into(), ALGORITHM.into());
        let mut trailer = self.seal(trailer);
        let signature = key.sign(trailer["hash"].as_str().unwrap_or_default().as_bytes());
        trailer.insert("signature".into(), base64_encode(signature.as_ref()).into());
        trailer
    }

    fn seal(&mut self, mut record: Record) -> Record {
        self.index += 1;
        record.retain(|_, value| !is_empty(value));
        record.insert("index".into(), self.index.into());
        record.insert("prev_hash".into(), self.prev_hash.clone().into());
        let hash = chain_hash(&self.prev_hash, &record);
        record.insert("hash".into(), hash.clone().into());
        self.prev_hash = hash;
        record
    }
}

/// What the signed trailer says of the campaign besides its events.
#[derive(Clone, Copy, Debug)]
pub struct Closing<'a> {
    pub campaign_id: &'a str,
    pub org_id: &'a str,
    /// The campaign's status when the export was read (`ACTIVE`, `COMPLETED`, ...).
    pub campaign_status: &'a str,
    /// How many deliveries the campaign has (a delivery never sent has no events).
    pub deliveries: i64,
}

fn is_empty(value: &Value) -> bool {
    value.is_null() || value.as_str() == Some("")
}

/// A record as one JSON line (the canonical form, plus `hash` and `signature`), with `\n`.
pub fn jsonl_line(record: &Record) -> String {
    let mut line = serde_json::to_string(record).unwrap_or_default();
    line.push('\n');
    line
}

/// The CSV header line, with `\r\n`.
pub fn csv_header() -> String {
    let mut line = COLUMNS.join(",");
    line.push_str("\r\n");
    line
}

/// A record as one CSV row in [`COLUMNS`] order (empty cells for absent fields), with `\r\n`.
pub fn csv_row(record: &Record) -> String {
    let cells: Vec<String> = COLUMNS
        .iter()
        .map(|column| match record.get(*column) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => csv_cell(text),
            Some(other) => other.to_string(),
        })
        .collect();
    let mut line = cells.join(",");
    line.push_str("\r\n");
    line
}

fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Why a file does not verify, and the line of the first record at fault (1-based, as an
/// editor counts; 0 when the file as a whole is at fault).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "line {}: {}", self.line, self.reason)
        }
    }
}

fn fault(line: usize, reason: impl Into<String>) -> VerifyError {
    VerifyError {
        line,
        reason: reason.into(),
    }
}

/// A public key to check trailers with: raw 32 bytes, and the key id it was served with (a key
/// without an id is tried whatever the trailer names).
#[derive(Clone, Debug)]
pub struct PublicKey {
    pub key_id: Option<String>,
    pub bytes: Vec<u8>,
}

/// What a file that verifies holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub campaign_id: String,
    pub org_id: String,
    pub campaign_status: String,
    pub deliveries: i64,
    pub events: i64,
    pub final_hash: String,
    pub key_id: String,
}

/// Reads an export, JSON lines or CSV (told apart by the first line: a CSV starts with its
/// header), into records with the line each starts on.
pub fn parse(text: &str) -> Result<Vec<(usize, Record)>, VerifyError> {
    if text.starts_with(&COLUMNS.join(",")) {
        parse_csv(text)
    } else {
        parse_jsonl(text)
    }
}

/// The fault of a line that parses but is not byte for byte what the exporter writes.
fn not_canonical(line: usize, how: &str) -> VerifyError {
    fault(
        line,
        format!("the record is not in canonical form ({how}): the exporter did not write it"),
    )
}

/// One JSON object a line, each exactly as [`jsonl_line`] writes it.
pub fn parse_jsonl(text: &str) -> Result<Vec<(usize, Record)>, VerifyError> {
    if text.is_empty() {
        return Err(fault(0, "the file is empty"));
    }
    let mut records = Vec::new();
    let mut rest = text;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let end = rest.find('\n').map_or(rest.len(), |end| end + 1);
        let (line, after) = rest.split_at(end);
        rest = after;
        if line.trim().is_empty() {
            return Err(not_canonical(line_no, "a blank line"));
        }
        let record: Record = serde_json::from_str(line)
            .map_err(|error| fault(line_no, format!("not a JSON object: {error}")))?;
        check_fields(line_no, &record)?;
        if record.values().any(is_empty) || jsonl_line(&record) != line {
            return Err(not_canonical(
                line_no,
                "compact JSON, keys in byte order, escaped as serde_json writes, no empty fields, one line feed",
            ));
        }
        records.push((line_no, record));
    }
    Ok(records)
}

/// The header row names [`COLUMNS`] in order; an empty cell is an absent field. Every row is
/// exactly as [`csv_header`] and [`csv_row`] write it.
pub fn parse_csv(text: &str) -> Result<Vec<(usize, Record)>, VerifyError> {
    let rows = csv_rows(text)?;
    let mut rows = rows.into_iter();
    let Some((_, header, raw)) = rows.next() else {
        return Err(fault(0, "the file is empty"));
    };
    if header != COLUMNS || raw != csv_header() {
        return Err(fault(
            1,
            format!("the CSV header must be {} and a CR LF", COLUMNS.join(",")),
        ));
    }
    let mut records = Vec::new();
    for (line_no, cells, raw) in rows {
        if cells.len() == 1 && cells[0].is_empty() {
            return Err(not_canonical(line_no, "a blank line"));
        }
        if cells.len() != COLUMNS.len() {
            return Err(fault(
                line_no,
                format!(
                    "{} cells where the header has {}",
                    cells.len(),
                    COLUMNS.len()
                ),
            ));
        }
        let mut record = Record::new();
        for (column, cell) in COLUMNS.iter().zip(cells) {
            if cell.is_empty() {
                continue;
            }
            let value = if INTEGER_COLUMNS.contains(column) {
                Value::from(cell.parse::<i64>().map_err(|_| {
                    fault(
                        line_no,
                        format!("{column} must be a whole number, not {cell:?}"),
                    )
                })?)
            } else if BOOLEAN_COLUMNS.contains(column) {
                Value::from(cell.parse::<bool>().map_err(|_| {
                    fault(
                        line_no,
                        format!("{column} must be true or false, not {cell:?}"),
                    )
                })?)
            } else {
                Value::String(cell)
            };
            record.insert((*column).to_owned(), value);
        }
        if csv_row(&record) != raw {
            return Err(not_canonical(
                line_no,
                "cells quoted only when they hold a comma, quote or line break, numbers without signs or leading zeros, CR LF",
            ));
        }
        records.push((line_no, record));
    }
    Ok(records)
}

/// One CSV row: the line it starts on, its cells, and its text as written, line break included.
type CsvRow<'a> = (usize, Vec<String>, &'a str);

/// RFC 4180 rows (quoted cells may hold commas, quotes and line breaks).
fn csv_rows(text: &str) -> Result<Vec<CsvRow<'_>>, VerifyError> {
    let mut rows = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut line = 1;
    while let Some(&(row_start, _)) = chars.peek() {
        let start = line;
        let mut cells = Vec::new();
        let mut cell = String::new();
        let mut quoted = false;
        let row_end = loop {
            match chars.next() {
                None => {
                    if quoted {
                        return Err(fault(start, "a quoted cell is never closed"));
                    }
                    cells.push(std::mem::take(&mut cell));
                    break text.len();
                }
                Some((_, '"')) if quoted => {
                    if matches!(chars.peek(), Some((_, '"'))) {
                        chars.next();
                        cell.push('"');
                    } else {
                        quoted = false;
                    }
                }
                Some((_, '"')) if cell.is_empty() => quoted = true,
                Some((_, c)) if quoted => {
                    if c == '\n' {
                        line += 1;
                    }
                    cell.push(c);
                }
                Some((_, ',')) => cells.push(std::mem::take(&mut cell)),
                Some((_, '\r')) if matches!(chars.peek(), Some((_, '\n'))) => {}
                Some((at, '\n')) => {
                    line += 1;
                    cells.push(std::mem::take(&mut cell));
                    break at + 1;
                }
                Some((_, c)) => cell.push(c),
            }
        };
        rows.push((start, cells, &text[row_start..row_end]));
    }
    Ok(rows)
}

/// Every field is one of [`COLUMNS`], whole numbers where a number belongs, `true` or `false`
/// where a boolean does, text elsewhere.
fn check_fields(line: usize, record: &Record) -> Result<(), VerifyError> {
    for (key, value) in record {
        if !COLUMNS.contains(&key.as_str()) {
            return Err(fault(line, format!("unknown field {key:?}")));
        }
        let fits = if INTEGER_COLUMNS.contains(&key.as_str()) {
            value.is_i64() || value.is_null()
        } else if BOOLEAN_COLUMNS.contains(&key.as_str()) {
            value.is_boolean() || value.is_null()
        } else {
            value.is_string() || value.is_null()
        };
        if !fits {
            return Err(fault(line, format!("the field {key} has the wrong type")));
        }
    }
    Ok(())
}

/// Checks the chain from [`GENESIS`] to the trailer and the trailer's signature with the key
/// among `keys` that the trailer names (or a key without an id), and, when `expected_campaign`
/// is given, that the file is that campaign's. The first fault found ends it.
pub fn verify(
    records: &[(usize, Record)],
    keys: &[PublicKey],
    expected_campaign: Option<&str>,
) -> Result<Verified, VerifyError> {
    let mut prev_hash = GENESIS.to_owned();
    let mut events = 0;
    // Each delivery's events come together, so a new delivery id starts a new delivery.
    let mut deliveries_named = 0;
    let mut last_delivery: Option<&str> = None;
    let mut campaign: Option<String> = None;
    for (position, (line, record)) in records.iter().enumerate() {
        let line = *line;
        let text = |field: &str| record.get(field).and_then(Value::as_str);
        let expected = position as i64 + 1;
        match record.get("index").and_then(Value::as_i64) {
            Some(index) if index == expected => {}
            Some(index) => {
                return Err(fault(
                    line,
                    format!(
                        "record number {index} where number {expected} belongs: a record was dropped, added or moved"
                    ),
                ));
            }
            None => return Err(fault(line, "the record has no index")),
        }
        if text("prev_hash") != Some(prev_hash.as_str()) {
            return Err(fault(
                line,
                "prev_hash is not the hash of the record before it: a record was dropped, added or moved",
            ));
        }
        let hash = chain_hash(&prev_hash, record);
        if text("hash") != Some(hash.as_str()) {
            return Err(fault(
                line,
                "the hash does not match the record's content: the record was changed",
            ));
        }
        let campaign_id = text("campaign_id").unwrap_or_default();
        match &campaign {
            None => campaign = Some(campaign_id.to_owned()),
            Some(first) if first != campaign_id => {
                return Err(fault(line, "the record belongs to another campaign"));
            }
            Some(_) => {}
        }
        match text("type") {
            Some("event") => {
                events += 1;
                let delivery = text("delivery_id");
                if delivery != last_delivery {
                    deliveries_named += 1;
                    last_delivery = delivery;
                }
            }
            Some("trailer") => {
                if position + 1 != records.len() {
                    return Err(fault(line, "records follow the trailer"));
                }
                if record.get("count").and_then(Value::as_i64) != Some(events) {
                    return Err(fault(
                        line,
                        format!(
                            "the trailer counts a different number of events than the {events} before it"
                        ),
                    ));
                }
                let (Some(org_id), Some(campaign_status), Some(deliveries)) = (
                    text("org_id"),
                    text("campaign_status"),
                    record.get("deliveries").and_then(Value::as_i64),
                ) else {
                    return Err(fault(
                        line,
                        "the trailer must name the organisation, the campaign's status and its number of deliveries",
                    ));
                };
                if deliveries < deliveries_named {
                    return Err(fault(
                        line,
                        format!(
                            "the trailer counts {deliveries} deliveries, fewer than the {deliveries_named} the records name"
                        ),
                    ));
                }
                let key_id = text("key_id").unwrap_or_default();
                check_signature(line, record, &hash, key_id, keys)?;
                if let Some(expected) = expected_campaign
                    && expected != campaign_id
                {
                    return Err(fault(
                        line,
                        format!(
                            "the file is signed, but it is the export of campaign {campaign_id}, not {expected}"
                        ),
                    ));
                }
                return Ok(Verified {
                    campaign_id: campaign_id.to_owned(),
                    org_id: org_id.to_owned(),
                    campaign_status: campaign_status.to_owned(),
                    deliveries,
                    events,
                    final_hash: hash,
                    key_id: key_id.to_owned(),
                });
            }
            _ => {
                return Err(fault(
                    line,
                    "the record's type is neither event nor trailer",
                ));
            }
        }
        prev_hash = hash;
    }
    Err(fault(
        records.last().map_or(0, |(line, _)| *line),
        "the file has no trailer record: it was cut short",
    ))
}

fn check_signature(
    line: usize,
    trailer: &Record,
    hash: &str,
    key_id: &str,
    keys: &[PublicKey],
) -> Result<(), VerifyError> {
    if trailer.get("algorithm").and_then(Value::as_str) != Some(ALGORITHM) {
        return Err(fault(
            line,
            format!("the trailer's algorithm is not {ALGORITHM}"),
        ));
    }
    // The signature is outside the hashed bytes: only its one standard encoding is accepted.
    let signature = trailer
        .get("signature")
        .and_then(Value::as_str)
        .and_then(|text| base64_decode(text).filter(|bytes| base64_encode(bytes) == text))
        .ok_or_else(|| fault(line, "the trailer has no readable signature"))?;
    let candidates: Vec<&PublicKey> = keys
        .iter()
        .filter(|key| key.key_id.as_deref().is_none_or(|id| id == key_id))
        .collect();
    if candidates.is_empty() {
        return Err(fault(
            line,
            format!("no public key given for the signing key {key_id:?}"),
        ));
    }
    let verifies = candidates
        .iter()
        .any(|key| verify_signature(&key.bytes, hash.as_bytes(), &signature));
    if verifies {
        Ok(())
    } else {
        Err(fault(
            line,
            "the signature does not verify with the public key given: the file was not signed by that key, or was changed",
        ))
    }
}

/// Whether `signature` is the Ed25519 signature of `message` by the raw 32-byte `public` key.
pub fn verify_signature(public: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public)
        .verify(message, signature)
        .is_ok()
}

/// Standard base64 with padding (what the signing-keys route serves).
pub fn base64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Standard base64 with padding; `None` when it is not that.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn key() -> (Ed25519KeyPair, PublicKey) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = PublicKey {
            key_id: Some("k1".into()),
            bytes: ring::signature::KeyPair::public_key(&pair)
                .as_ref()
                .to_vec(),
        };
        (pair, public)
    }

    fn event(delivery: &str, kind: &str, source: &str) -> Record {
        let mut record = Record::new();
        record.insert("campaign_id".into(), "c1".into());
        record.insert("delivery_id".into(), delivery.into());
        record.insert("user_id".into(), format!("user, \"{delivery}\"").into());
        record.insert("event".into(), kind.into());
        record.insert("occurred_at".into(), "2026-01-02T03:04:05.678Z".into());
        record.insert("source".into(), source.into());
        record.insert("template_version".into(), 3.into());
        record
    }

    fn export(pair: &Ed25519KeyPair) -> Vec<Record> {
        let mut writer = ChainWriter::default();
        let mut records = vec![
            writer.event(event("d1", "SENT", "")),
            writer.event(event("d1", "ACKNOWLEDGED", "app")),
            writer.event(event("d2", "SENT", "")),
            writer.event(event("d2", "MISSED", "")),
        ];
        records.push(writer.trailer(&closing(), "k1", pair));
        records
    }

    fn closing() -> Closing<'static> {
        Closing {
            campaign_id: "c1",
            org_id: "o1",
            campaign_status: "COMPLETED",
            deliveries: 2,
        }
    }

    fn jsonl(records: &[Record]) -> String {
        records.iter().map(jsonl_line).collect()
    }

    fn csv(records: &[Record]) -> String {
        csv_header() + &records.iter().map(csv_row).collect::<String>()
    }

    fn check(text: &str, keys: &[PublicKey]) -> Result<Verified, VerifyError> {
        verify(&parse(text)?, keys, None)
    }

    #[test]
    fn an_untouched_export_verifies_as_jsonl_and_as_csv() {
        let (pair, public) = key();
        let records = export(&pair);
        let from_jsonl = check(&jsonl(&records), std::slice::from_ref(&public)).unwrap();
        let from_csv = check(&csv(&records), &[public]).unwrap();
        assert_eq!(from_jsonl, from_csv);
        assert_eq!(from_jsonl.events, 4);
        assert_eq!(from_jsonl.campaign_id, "c1");
        assert_eq!(from_jsonl.org_id, "o1");
        assert_eq!(from_jsonl.campaign_status, "COMPLETED");
        assert_eq!(from_jsonl.deliveries, 2);
        assert_eq!(from_jsonl.final_hash, records[4]["hash"].as_str().unwrap());
    }

    #[test]
    fn the_first_record_chains_from_genesis_and_empty_fields_are_left_out() {
        let (pair, _) = key();
        let records = export(&pair);
        assert_eq!(records[0]["prev_hash"], GENESIS);
        assert!(!records[0].contains_key("source"));
        assert_eq!(records[1]["prev_hash"], records[0]["hash"]);
        let bytes = String::from_utf8(canonical_bytes(&records[0])).unwrap();
        assert!(bytes.starts_with("{\"campaign_id\":\"c1\",\"delivery_id\":\"d1\""));
        assert!(!bytes.contains("\"hash\""));
    }

    #[test]
    fn a_changed_field_is_found_on_its_line() {
        let (pair, public) = key();
        let text = jsonl(&export(&pair)).replacen("\"ACKNOWLEDGED\"", "\"READ\"", 1);
        let error = check(&text, std::slice::from_ref(&public)).unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.reason.contains("changed"), "{error}");

        let csv_text = csv(&export(&pair)).replacen(",app,", ",web,", 1);
        let error = check(&csv_text, &[public]).unwrap_err();
        assert_eq!(error.line, 3, "the header is line 1");
        assert!(error.reason.contains("changed"), "{error}");
    }

    #[test]
    fn a_dropped_record_is_found() {
        let (pair, public) = key();
        let mut records = export(&pair);
        records.remove(2);
        let error = check(&jsonl(&records), std::slice::from_ref(&public)).unwrap_err();
        assert_eq!(error.line, 3);
        assert!(error.reason.contains("dropped"), "{error}");

        let mut records = export(&pair);
        records.pop();
        let error = check(&jsonl(&records), &[public]).unwrap_err();
        assert_eq!(error.line, 4);
        assert!(error.reason.contains("cut short"), "{error}");
    }

    #[test]
    fn reordered_records_are_found() {
        let (pair, public) = key();
        let mut records = export(&pair);
        records.swap(1, 2);
        let error = check(&csv(&records), &[public]).unwrap_err();
        assert_eq!(error.line, 3);
        assert!(error.reason.contains("moved"), "{error}");
    }

    #[test]
    fn a_changed_signature_or_another_key_is_refused() {
        let (pair, public) = key();
        let mut records = export(&pair);
        let (other, _) = key();
        let forged = other.sign(records[4]["hash"].as_str().unwrap().as_bytes());
        records[4].insert("signature".into(), base64_encode(forged.as_ref()).into());
        let error = check(&jsonl(&records), std::slice::from_ref(&public)).unwrap_err();
        assert_eq!(error.line, 5);
        assert!(error.reason.contains("signature"), "{error}");

        let (_, wrong) = key();
        let error = check(&jsonl(&export(&pair)), &[wrong]).unwrap_err();
        assert!(error.reason.contains("signature"), "{error}");

        let unnamed = PublicKey {
            key_id: Some("another".into()),
            bytes: public.bytes.clone(),
        };
        let error = check(&jsonl(&export(&pair)), &[unnamed]).unwrap_err();
        assert!(error.reason.contains("no public key"), "{error}");
    }

    #[test]
    fn a_trailer_with_another_count_is_refused_even_when_rehashed() {
        let (pair, public) = key();
        let mut records = export(&pair);
        let mut trailer = records.pop().unwrap();
        trailer.insert("count".into(), 3.into());
        let hash = chain_hash(trailer["prev_hash"].as_str().unwrap(), &trailer);
        trailer.insert("hash".into(), hash.into());
        records.push(trailer);
        let error = check(&jsonl(&records), &[public]).unwrap_err();
        assert!(error.reason.contains("different number"), "{error}");
    }

    /// The line of `text` holding `needle`, 1-based.
    fn line_of(text: &str, needle: &str) -> usize {
        text.lines().position(|line| line.contains(needle)).unwrap() + 1
    }

    fn assert_not_canonical(text: &str, line: usize, public: &PublicKey) {
        let error = check(text, std::slice::from_ref(public)).unwrap_err();
        assert_eq!(error.line, line, "{error}");
        assert!(error.reason.contains("not in canonical form"), "{error}");
    }

    #[test]
    fn a_json_line_that_reads_the_same_but_is_written_otherwise_is_refused() {
        let (pair, public) = key();
        let text = jsonl(&export(&pair));
        let ack = line_of(&text, "ACKNOWLEDGED");
        let variants = [
            // A repeated key: the last one wins when read, so the record reads the same.
            text.replacen(
                "\"source\":\"app\"",
                "\"source\":\"web\",\"source\":\"app\"",
                1,
            ),
            // An escape serde_json does not write.
            text.replacen("\"source\":\"app\"", "\"source\":\"\\u0061pp\"", 1),
            // Whitespace.
            text.replacen(",\"source\":\"app\"", ", \"source\":\"app\"", 1),
            // An empty field the writer leaves out.
            text.replacen(
                ",\"source\":\"app\"",
                ",\"member_id\":\"\",\"source\":\"app\"",
                1,
            ),
            text.replacen(
                ",\"source\":\"app\"",
                ",\"member_id\":null,\"source\":\"app\"",
                1,
            ),
            // Another line ending.
            ending(&text, ack, "\n", "\r\n"),
        ];
        for variant in variants {
            assert_ne!(variant, text);
            assert_not_canonical(&variant, ack, &public);
        }
        // A blank line, and a last line without its line feed.
        let blank = text.replacen('\n', "\n\n", 1);
        assert_not_canonical(&blank, 2, &public);
        assert_not_canonical(text.trim_end(), 5, &public);
    }

    #[test]
    fn a_csv_row_that_reads_the_same_but_is_written_otherwise_is_refused() {
        let (pair, public) = key();
        let text = csv(&export(&pair));
        let ack = line_of(&text, "ACKNOWLEDGED");
        let variants = [
            // A number with a sign or a leading zero.
            text.replacen(",app,,,3,", ",app,,,+3,", 1),
            text.replacen(",app,,,3,", ",app,,,003,", 1),
            // Quotes a cell does not need.
            text.replacen(",app,", ",\"app\",", 1),
            // Another line ending.
            ending(&text, ack, "\r\n", "\n"),
        ];
        for variant in variants {
            assert_ne!(variant, text);
            assert_not_canonical(&variant, ack, &public);
        }
        let blank = text.replacen("\r\n", "\r\n\r\n", 1);
        assert_not_canonical(&blank, 2, &public);
    }

    /// `text` with line `line`'s ending `from` written as `to`.
    fn ending(text: &str, line: usize, from: &str, to: &str) -> String {
        text.split_inclusive('\n')
            .enumerate()
            .map(|(number, written)| {
                if number + 1 == line {
                    written.strip_suffix(from).unwrap().to_owned() + to
                } else {
                    written.to_owned()
                }
            })
            .collect()
    }

    #[test]
    fn the_signature_is_accepted_in_its_one_encoding_only() {
        let (pair, public) = key();
        let mut records = export(&pair);
        let signature = records[4]["signature"].as_str().unwrap().to_owned();
        records[4].insert("signature".into(), format!(" {signature}").into());
        let error = check(&jsonl(&records), &[public]).unwrap_err();
        assert!(error.reason.contains("signature"), "{error}");
    }

    #[test]
    fn the_trailer_binds_the_organisation_status_and_deliveries() {
        let (pair, public) = key();
        let records = export(&pair);
        let trailer = &records[4];
        assert_eq!(trailer["org_id"], "o1");
        assert_eq!(trailer["campaign_status"], "COMPLETED");
        assert_eq!(trailer["deliveries"], 2);
        let canonical = String::from_utf8(canonical_bytes(trailer)).unwrap();
        assert!(canonical.contains("\"org_id\":\"o1\""), "{canonical}");
        assert!(canonical.contains("\"deliveries\":2"), "{canonical}");

        // Changed: the hash no longer matches. Rehashed: the signature no longer verifies.
        let text = jsonl(&records).replacen("\"org_id\":\"o1\"", "\"org_id\":\"o2\"", 1);
        let error = check(&text, std::slice::from_ref(&public)).unwrap_err();
        assert!(error.reason.contains("changed"), "{error}");
        let mut forged = records.clone();
        forged[4].insert("campaign_status".into(), "ACTIVE".into());
        let hash = chain_hash(forged[4]["prev_hash"].as_str().unwrap(), &forged[4]);
        forged[4].insert("hash".into(), hash.into());
        let error = check(&jsonl(&forged), std::slice::from_ref(&public)).unwrap_err();
        assert!(error.reason.contains("signature"), "{error}");

        // A trailer that counts fewer deliveries than the events name, even signed.
        let mut writer = ChainWriter::default();
        let mut short = vec![
            writer.event(event("d1", "SENT", "")),
            writer.event(event("d2", "SENT", "")),
        ];
        short.push(writer.trailer(
            &Closing {
                deliveries: 1,
                ..closing()
            },
            "k1",
            &pair,
        ));
        let error = check(&jsonl(&short), std::slice::from_ref(&public)).unwrap_err();
        assert!(error.reason.contains("fewer than the 2"), "{error}");
    }

    #[test]
    fn the_expected_campaign_is_checked_against_the_trailer() {
        let (pair, public) = key();
        let records = parse(&jsonl(&export(&pair))).unwrap();
        let keys = std::slice::from_ref(&public);
        assert!(verify(&records, keys, Some("c1")).is_ok());
        let error = verify(&records, keys, Some("c2")).unwrap_err();
        assert_eq!(error.line, 5);
        assert!(error.reason.contains("campaign c1, not c2"), "{error}");
    }

    #[test]
    fn content_confirmed_is_a_boolean_in_json_and_in_csv() {
        let (pair, public) = key();
        let mut writer = ChainWriter::default();
        let mut confirmed = event("d1", "ACKNOWLEDGED", "app");
        confirmed.insert("content_confirmed".into(), true.into());
        let mut unconfirmed = event("d2", "ACKNOWLEDGED", "app");
        unconfirmed.insert("content_confirmed".into(), false.into());
        let mut records = vec![writer.event(confirmed), writer.event(unconfirmed)];
        records.push(writer.trailer(&closing(), "k1", &pair));
        let text = jsonl(&records);
        assert!(text.contains("\"content_confirmed\":true"), "{text}");
        assert!(text.contains("\"content_confirmed\":false"), "{text}");
        check(&text, std::slice::from_ref(&public)).unwrap();
        let csv_text = csv(&records);
        assert!(csv_text.contains(",true,"), "{csv_text}");
        check(&csv_text, std::slice::from_ref(&public)).unwrap();
        let error = check(&csv_text.replacen(",true,", ",yes,", 1), &[public]).unwrap_err();
        assert!(error.reason.contains("true or false"), "{error}");
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_encode(b"pidgr"), "cGlkZ3I=");
        assert!(base64_decode("not base64!").is_none());
    }
}
