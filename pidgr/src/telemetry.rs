//! What a running Pidgr tells its operators: logs (human or JSON lines), the Prometheus
//! endpoint (`PIDGR_METRICS_LISTEN`), which the API process serves and a worker-only process
//! serves itself, and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, its spans as OpenTelemetry
//! traces over OTLP/HTTP. The counters are recorded by the API and the activities into
//! [`Config::metrics`](crate::Config::metrics); the gauges are read when scraped.

use std::io::IsTerminal;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use clap::ValueEnum;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use pidgr_metrics::Metrics;
use pidgr_store::Store;
use tokio::net::TcpListener;
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// How log lines are written (`PIDGR_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people: one line per event, coloured when the output is a terminal.
    #[default]
    Text,
    /// For log pipelines: one JSON object per line, with the event's fields at the top level
    /// and its spans' (request_id, org_id…) in `spans`.
    Json,
}

/// What is logged unless `RUST_LOG` says otherwise: info, with the Temporal SDK and sqlx
/// (which log every task and every slow query at info) held to warnings.
pub const DEFAULT_LOG_FILTER: &str = "info,temporalio_sdk_core=warn,temporalio_sdk=warn,sqlx=warn";

/// What is exported as traces, whatever `RUST_LOG` says (quieter logs should not cost the
/// traces): the request, workflow start and activity spans, not the Temporal SDK's own.
pub const TRACE_FILTER: &str = DEFAULT_LOG_FILTER;

/// A subscriber writing `format` lines to `writer`, filtered by `filter` (`RUST_LOG` syntax),
/// and handing spans to `tracer` (filtered by [`TRACE_FILTER`]) when traces are exported.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
    tracer: Option<Tracer>,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let traces = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(EnvFilter::new(TRACE_FILTER))
    });
    let registry = tracing_subscriber::registry().with(traces);
    let lines = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => Box::new(registry.with(lines.with_ansi(ansi).with_filter(filter))),
        LogFormat::Json => Box::new(
            registry.with(
                lines
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true)
                    .with_filter(filter),
            ),
        ),
    }
}

/// Where the process's spans go, read by the binary from the standard OpenTelemetry variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceExport {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector's base URL; spans are POSTed to
    /// `<endpoint>/v1/traces` as protobuf.
    pub endpoint: String,
    /// `OTEL_SERVICE_NAME`, `pidgr` unless set: the `service.name` the spans carry.
    pub service_name: String,
}

/// The exporting half of the process's tracing: dropping it (at the process's end) exports
/// what is still queued, so the last request's spans are not lost.
pub struct TraceExporter {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TraceExporter {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // On a thread of its own: the blocking HTTP client must not be used or dropped on the
        // async runtime's threads.
        let shut_down = std::thread::spawn(move || provider.shutdown()).join();
        if let Ok(Err(error)) = shut_down {
            eprintln!("traces: the last spans could not be exported: {error}");
        }
    }
}

/// The exporter's HTTP client: blocking (the batch processor exports from its own thread),
/// with the TLS configuration of every other outbound client (the build has no default
/// crypto provider). Built on a thread of its own, like the exporter's own default.
fn trace_http_client() -> anyhow::Result<reqwest::blocking::Client> {
    let tls = pidgr_outbound::tls_config()?;
    std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(std::time::Duration::from_secs(10))
            .build()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("building the traces' HTTP client panicked"))?
    .map_err(Into::into)
}

/// The OTLP/HTTP exporter behind a batch processor (its own thread; `OTEL_BSP_SCHEDULE_DELAY`
/// and the other `OTEL_BSP_*` variables tune it).
fn trace_exporter(export: &TraceExport) -> anyhow::Result<(TraceExporter, Tracer)> {
    let endpoint = format!("{}/v1/traces", export.endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_http_client(trace_http_client()?)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(export.service_name.clone())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("pidgr");
    Ok((
        TraceExporter {
            provider: Some(provider),
        },
        tracer,
    ))
}

/// Installs the process's logger: to stderr, in `format`, at `RUST_LOG`'s levels (or
/// [`DEFAULT_LOG_FILTER`]); colours only when stderr is a terminal. With `traces`, spans are
/// exported too; keep the returned exporter until the process ends.
pub fn init_logging(
    format: LogFormat,
    rust_log: Option<&str>,
    traces: Option<&TraceExport>,
) -> Option<TraceExporter> {
    let filter = rust_log
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG_FILTER));
    let ansi = std::io::stderr().is_terminal();
    // An exporter that cannot be built (a malformed endpoint) costs the traces, not the logs.
    let (exporter, tracer) = match traces.map(trace_exporter).transpose() {
        Ok(built) => built.unzip(),
        Err(error) => {
            eprintln!("traces: not exported: {error:#}");
            (None, None)
        }
    };
    let _ = tracing::subscriber::set_global_default(subscriber(
        format,
        filter,
        std::io::stderr,
        ansi,
        tracer,
    ));
    exporter
}

/// The Prometheus endpoint: `GET /metrics` and nothing else.
pub fn metrics_router(metrics: Metrics, store: Store) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(scrape))
        .with_state((metrics, store))
}

/// Reads the gauges (one GROUP BY over campaigns, the pool's own counts), then writes every
/// metric. A database that does not answer leaves the campaign gauge at its last reading
/// rather than failing the scrape: the other metrics matter most when the database is down.
async fn scrape(State((metrics, store)): State<(Metrics, Store)>) -> impl IntoResponse {
    match store.count_campaigns_by_status().await {
        Ok(counts) => metrics.set_campaigns(
            counts
                .iter()
                .map(|(status, count)| (status.as_str(), *count)),
        ),
        Err(error) => tracing::warn!(%error, "metrics: could not count campaigns"),
    }
    let (idle, in_use) = store.pool_connections();
    metrics.set_db_pool(idle, in_use);
    (
        [(CONTENT_TYPE, pidgr_metrics::CONTENT_TYPE)],
        metrics.encode(),
    )
}

/// The running Prometheus endpoint; it stops when this is dropped.
pub struct MetricsServer {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves [`metrics_router`] on `listener` until the returned handle is dropped.
pub fn spawn_metrics_server(
    listener: TcpListener,
    metrics: Metrics,
    store: Store,
) -> MetricsServer {
    let router = metrics_router(metrics, store);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "the metrics endpoint stopped");
        }
    });
    MetricsServer { task }
}

/// Binds `PIDGR_METRICS_LISTEN` (when set) and serves the process's metrics on it.
pub async fn start_metrics_server(
    config: &crate::Config,
    store: &Store,
) -> anyhow::Result<Option<MetricsServer>> {
    use anyhow::Context;
    let Some(address) = config.metrics_listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on PIDGR_METRICS_LISTEN={address}"))?;
    tracing::info!(address = %listener.local_addr()?, "metrics endpoint listening at /metrics");
    Ok(Some(spawn_metrics_server(
        listener,
        config.metrics.clone(),
        store.clone(),
    )))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::http::Request;
    use serde_json::Value;
    use tower_service::Service;

    use super::*;

    /// Everything written, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|line| {
                    serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
                })
                .collect()
        }
    }

    async fn request(router: &mut axum::Router, method: &str, uri: &str) -> u16 {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        router.call(request).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn json_logs_are_one_object_per_line_with_the_route_template_and_request_id() {
        let captured = Captured::default();
        let _logger = tracing::subscriber::set_default(subscriber(
            LogFormat::Json,
            EnvFilter::new("info"),
            captured.clone(),
            false,
            None,
        ));
        let metrics = Metrics::new();
        let mut router = axum::Router::new()
            .route(
                "/v1/things/{thing_id}",
                get(|| async {
                    tracing::info!("inside the handler");
                    "ok"
                }),
            )
            .route(
                "/v1/campaigns/{campaign_id}",
                get(|| async {
                    tracing::info!("about a campaign");
                    "ok"
                }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                metrics.clone(),
                pidgr_api::observe::observe,
            ));
        assert_eq!(
            request(&mut router, "GET", "/v1/things/secret-id-42").await,
            200
        );
        assert_eq!(request(&mut router, "GET", "/healthz").await, 200);
        assert_eq!(request(&mut router, "GET", "/v1/campaigns/c-7").await, 200);
        assert_eq!(request(&mut router, "POST", "/nowhere").await, 404);
        assert_eq!(request(&mut router, "BREW", "/nowhere").await, 404);

        let lines = captured.lines();
        let requests: Vec<&Value> = lines.iter().filter(|l| l["message"] == "request").collect();
        // The probe is logged at debug, below this filter.
        assert_eq!(requests.len(), 4, "{lines:#?}");
        let thing = requests[0];
        assert_eq!(thing["level"], "INFO");
        assert_eq!(thing["method"], "GET");
        assert_eq!(thing["route"], "/v1/things/{thing_id}");
        assert_eq!(thing["status"], 200);
        assert!(thing["duration_ms"].as_f64().is_some(), "{thing}");
        let request_id = thing["spans"][0]["request_id"]
            .as_str()
            .expect("a request id");
        assert_eq!(request_id.len(), 32);
        assert!(!thing.to_string().contains("secret-id-42"), "{thing}");
        // What the handler logs carries the same request id.
        let inside = lines
            .iter()
            .find(|l| l["message"] == "inside the handler")
            .expect("the handler's line");
        assert_eq!(inside["spans"][0]["request_id"], request_id);
        // On a campaign's routes, the campaign's id is on the span.
        let campaign = lines
            .iter()
            .find(|l| l["message"] == "about a campaign")
            .expect("the campaign handler's line");
        assert_eq!(campaign["spans"][0]["campaign_id"], "c-7");
        assert_eq!(requests[1]["route"], "/v1/campaigns/{campaign_id}");
        // Only a request that matched no route shows its path.
        assert_eq!(requests[2]["route"], "/nowhere");
        assert_eq!(requests[2]["status"], 404);

        let exposed = metrics.encode();
        for series in [
            r#"pidgr_http_requests_total{method="GET",route="/v1/things/{thing_id}",status="200"} 1"#,
            r#"pidgr_http_requests_total{method="GET",route="/healthz",status="200"} 1"#,
            r#"pidgr_http_requests_total{method="POST",route="unmatched",status="404"} 1"#,
            r#"pidgr_http_requests_total{method="OTHER",route="unmatched",status="404"} 1"#,
        ] {
            assert!(
                exposed.lines().any(|line| line == series),
                "{series} in\n{exposed}"
            );
        }
    }

    #[test]
    fn text_logs_have_no_colour_codes_when_not_asked_for() {
        let captured = Captured::default();
        let _logger = tracing::subscriber::set_default(subscriber(
            LogFormat::Text,
            EnvFilter::new("info"),
            captured.clone(),
            false,
            None,
        ));
        tracing::info!(status = 200, "request");
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("request") && text.contains("status=200"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "{text:?}");
    }
}
