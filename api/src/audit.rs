//! A campaign's signed audit export, and the organisation's public signing keys to check it with.
//! The records, their hash chain and the trailer's signature are defined once, in
//! `pidgr_store::audit_chain`, which `pidgr audit verify` checks with too (docs/audit.md).

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use pidgr_store::audit_chain::{ChainWriter, Closing, Record, csv_header, csv_row, jsonl_line};
use pidgr_store::{AuditEvent, Campaign, OrganisationSigner, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::OrNotFound;
use crate::{ApiError, AppState, Caller};

/// Deliveries read per page of the export: the response is written a page at a time.
const DELIVERIES_PER_PAGE: i64 = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    format: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Jsonl,
    Csv,
}

/// GET /v1/campaigns/{id}/audit?format=jsonl|csv: every delivery's history (SENT, READ,
/// ACKNOWLEDGED, MISSED, with attestations), one record per event, deliveries in audience order,
/// hash-chained and closed by a trailer signed with the organisation's key (made on first use).
/// Streamed: a failure part-way ends the response without a trailer, which no verifier accepts.
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let format = match query.format.as_deref() {
        None | Some("jsonl") => Format::Jsonl,
        Some("csv") => Format::Csv,
        Some(other) => {
            return Err(ApiError::invalid(
                "/format",
                format!("the query parameter format is jsonl or csv, not {other:?}"),
            ));
        }
    };
    let campaign = state
        .store
        .get_campaign(&caller.org_id, &id)
        .await
        .or_not_found("campaign")?;
    let signer = state
        .store
        .organisation_signer(&caller.org_id)
        .await
        .map_err(unsigned)?;
    let export = Export {
        state,
        org_id: caller.org_id,
        campaign,
        signer,
        format,
        writer: Some(ChainWriter::default()),
        after_seq: 0,
        deliveries: 0,
        started: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(
        export,
        |mut export| async move { export.next_chunk().await.map(|chunk| (chunk, export)) },
    ));
    let (content_type, extension) = match format {
        Format::Jsonl => ("application/x-ndjson", "jsonl"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"audit-{id}.{extension}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// Without a server secret key, no signing key can be kept: say so rather than fail blindly.
fn unsigned(error: StoreError) -> ApiError {
    match error {
        StoreError::Config(_) => ApiError::Conflict(
            "audit exports are signed with a key the server seals with PIDGR_SECRET_KEY, and none is configured".into(),
        ),
        other => other.into(),
    }
}

/// An export in progress: the chain so far and where the next page of deliveries starts.
struct Export {
    state: AppState,
    org_id: String,
    campaign: Campaign,
    signer: OrganisationSigner,
    format: Format,
    /// `None` once the trailer is written.
    writer: Option<ChainWriter>,
    after_seq: i64,
    /// Deliveries read so far: the trailer's count of the campaign's deliveries.
    deliveries: i64,
    started: bool,
}

impl Export {
    /// The next part of the body: the CSV header first, then a page of deliveries' events,
    /// then the trailer; `None` when it is all written.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, StoreError>> {
        let mut chunk = String::new();
        if !self.started {
            self.started = true;
            if self.format == Format::Csv {
                chunk.push_str(&csv_header());
            }
        }
        let writer = self.writer.as_mut()?;
        let page = self
            .state
            .store
            .audit_events_page(
                &self.org_id,
                &self.campaign.id,
                self.after_seq,
                DELIVERIES_PER_PAGE,
            )
            .await;
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                tracing::error!(campaign_id = %self.campaign.id, %error, "an audit export failed part-way");
                self.writer = None;
                return Some(Err(error));
            }
        };
        self.deliveries += page.deliveries;
        for event in page.events {
            let record = writer.event(event_record(&self.campaign, event));
            chunk.push_str(&line(self.format, &record));
        }
        match page.last_seq {
            Some(seq) => self.after_seq = seq,
            None => {
                let writer = self.writer.take()?;
                // The status as read when the export began: the events are those of that moment
                // or later (an active campaign's deliveries may still change while it streams).
                let closing = Closing {
                    campaign_id: &self.campaign.id,
                    org_id: &self.org_id,
                    campaign_status: self.campaign.status.as_str(),
                    deliveries: self.deliveries,
                };
                let trailer = writer.trailer(&closing, &self.signer.key.key_id, &self.signer.pair);
                chunk.push_str(&line(self.format, &trailer));
            }
        }
        Some(Ok(Bytes::from(chunk)))
    }
}

fn line(format: Format, record: &Record) -> String {
    match format {
        Format::Jsonl => jsonl_line(record),
        Format::Csv => csv_row(record),
    }
}

/// One event as a record's fields. SENT and MISSED carry the campaign's template and version
/// (a campaign's message does not change once it is created); READ and ACKNOWLEDGED what was
/// recorded with them, and whether the client sent the content's hash back
/// (`content_confirmed`).
fn event_record(campaign: &Campaign, event: AuditEvent) -> Record {
    let recorded = event.source.is_some();
    let (template_id, template_version) = if recorded {
        (event.template_id, event.template_version)
    } else {
        (campaign.template_id.clone(), campaign.template_version)
    };
    let fields = [
        ("campaign_id", json!(campaign.id)),
        ("delivery_id", json!(event.delivery_id)),
        ("user_id", json!(event.user_id)),
        ("member_id", json!(event.member_id)),
        ("event", json!(event.event)),
        (
            "occurred_at",
            json!(
                event
                    .occurred_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
        ),
        ("source", json!(event.source)),
        ("api_key_id", json!(event.api_key_id)),
        ("template_id", json!(template_id)),
        ("template_version", json!(template_version)),
        ("content_sha256", json!(event.content_sha256)),
        ("content_confirmed", json!(event.content_confirmed)),
    ];
    fields
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}

/// GET /v1/organisation/signing-keys: the public keys the organisation's audit exports are
/// signed with (empty until its first export), each with the id a trailer names.
pub async fn signing_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let keys = state.store.list_signing_keys(&caller.org_id).await?;
    Ok(Json(json!({ "items": keys })))
}
