//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, a `pidgr api` and a `pidgr worker` process
//! export their spans over OTLP/HTTP to a collector (here a receiver on loopback), and a
//! campaign's start request, its workflow start and its activities are one trace; a process
//! that stops exports the spans it still holds.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

use crate::harness::{Options, PATIENCE, Receiver, System, example_definition, free_port, until};

/// One exported span, as the collector received it.
#[derive(Clone, Debug)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: Vec<(String, String)>,
}

impl ReceivedSpan {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A collector's OTLP/HTTP traces endpoint: `POST /v1/traces` with a protobuf body.
struct Collector {
    endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl Collector {
    async fn start() -> Result<Collector> {
        let spans: Arc<Mutex<Vec<ReceivedSpan>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let router = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(Collector { endpoint, spans })
    }

    fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("spans").clone()
    }
}

async fn receive(
    State(spans): State<Arc<Mutex<Vec<ReceivedSpan>>>>,
    body: Bytes,
) -> (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    Vec<u8>,
) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (
            StatusCode::BAD_REQUEST,
            [(CONTENT_TYPE, "text/plain")],
            b"not an ExportTraceServiceRequest".to_vec(),
        );
    };
    let mut received = spans.lock().expect("spans");
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .map(|resource| attributes(&resource.attributes))
            .unwrap_or_default()
            .into_iter()
            .find(|(key, _)| key == "service.name")
            .map(|(_, value)| value)
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    attributes: attributes(&span.attributes),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse: everything accepted.
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/x-protobuf")],
        Vec::new(),
    )
}

/// The attributes with a value shown as text (strings as they are, numbers and booleans printed).
fn attributes(pairs: &[KeyValue]) -> Vec<(String, String)> {
    pairs
        .iter()
        .filter_map(|pair| {
            let value = match pair.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(text) => text.clone(),
                AnyValue::IntValue(number) => number.to_string(),
                AnyValue::BoolValue(flag) => flag.to_string(),
                AnyValue::DoubleValue(number) => number.to_string(),
                _ => return None,
            };
            Some((pair.key.clone(), value))
        })
        .collect()
}

/// The worker's spans are exported often, so that the test's polling sees them soon after they
/// end.
const QUICK_BATCHES: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "100");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_campaigns_start_request_workflow_start_and_activities_are_one_exported_trace()
-> Result<()> {
    let collector = Collector::start().await?;
    let webhooks = Receiver::start(None).await?;
    let system = System::start(Options {
        in_process_worker: false,
        ..Options::default()
    })
    .await?;
    let _worker = system.spawn_worker_process_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint),
        ("OTEL_SERVICE_NAME", "pidgr-worker"),
        QUICK_BATCHES,
    ])?;
    let listen = format!("127.0.0.1:{}", free_port());
    let api = format!("http://{listen}");
    let mut api_process = system
        .pidgr_command("api")?
        .env("PIDGR_LISTEN", &listen)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint)
        .env("OTEL_SERVICE_NAME", "pidgr-api")
        .env(QUICK_BATCHES.0, "3600000")
        .spawn()?;
    until(&format!("the API at {api} to answer"), || async {
        Ok(system
            .http
            .get(format!("{api}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
            .then_some(()))
    })
    .await?;

    // Created through the in-process API; started through the exporting one.
    let group = system.group_of(&["u1", "u2"]).await?;
    let campaign = system
        .create_campaign_for(&group, example_definition("10s", "1s", &webhooks.url))
        .await?;
    let started = system
        .http
        .post(format!("{api}/v1/campaigns/{campaign}/start"))
        .bearer_auth(&system.key)
        .json(&json!({}))
        .send()
        .await?;
    ensure!(
        started.status() == reqwest::StatusCode::ACCEPTED,
        "start answered {}",
        started.status()
    );

    // The request's and the start's spans come from the API, the activities' from the worker,
    // each process exporting in its own batches.
    // The activities' spans come from the worker, exporting in quick batches.
    let activities = until("an activity's span", || async {
        let activities: Vec<ReceivedSpan> = collector
            .spans()
            .into_iter()
            .filter(|s| s.name == "activity" && s.attribute("campaign_id") == Some(&*campaign))
            .collect();
        let prepared = activities
            .iter()
            .any(|a| a.attribute("activity") == Some("prepare_deliveries"));
        Ok(prepared.then_some(activities))
    })
    .await?;
    // The API's wait a batch delay longer than the test: they reach the collector because a
    // stopping process exports what it still holds before it exits.
    let pid = api_process.id().context("the API's process id")?;
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    ensure!(signalled.success(), "kill -TERM {pid}: {signalled}");
    let exit = tokio::time::timeout(PATIENCE, api_process.wait())
        .await
        .context("the API to stop after SIGTERM")??;
    ensure!(exit.success(), "the API stopped with {exit}");
    let spans = collector.spans();
    let request = spans
        .iter()
        .find(|s| {
            s.name == "request"
                && s.attribute("route") == Some("/v1/campaigns/{campaign_id}/start")
                && s.attribute("campaign_id") == Some(campaign.as_str())
        })
        .context("the start request's span was exported")?;
    let start = spans
        .iter()
        .find(|s| {
            s.name == "start workflow"
                && s.attribute("workflow_id") == Some(&*format!("campaign-{campaign}"))
        })
        .context("the workflow start's span was exported")?;

    assert_eq!(request.service, "pidgr-api");
    assert_eq!(request.trace_id.len(), 16, "{request:?}");
    assert_eq!(
        start.trace_id, request.trace_id,
        "the workflow start is in the request's trace"
    );
    assert_eq!(
        start.parent_span_id, request.span_id,
        "the workflow start is the request's child"
    );
    assert_eq!(start.service, "pidgr-api");
    for activity in &activities {
        assert_eq!(activity.service, "pidgr-worker", "{activity:?}");
        assert_eq!(
            activity.trace_id, request.trace_id,
            "every activity of the campaign is in the start's trace: {activity:?}"
        );
        assert_eq!(
            activity.parent_span_id, start.span_id,
            "an activity is a child of the workflow start: {activity:?}"
        );
        assert_eq!(
            activity.attribute("workflow_id"),
            Some(&*format!("campaign-{campaign}"))
        );
    }
    let names: Vec<&str> = activities
        .iter()
        .filter_map(|a| a.attribute("activity"))
        .collect();
    eprintln!("traced activities: {names:?}");
    assert!(
        names.iter().any(|name| name.contains("prepare_deliveries")),
        "the deliveries' preparation is traced: {names:?}"
    );
    system.shutdown().await;
    Ok(())
}
