//! Metrics, as an operator scrapes them: the API process and a separate `pidgr worker` process
//! each serve their own `/metrics` (PIDGR_METRICS_LISTEN), and the worker the Temporal SDK's
//! own (PIDGR_TEMPORAL_METRICS_LISTEN). One small campaign runs to its end, and every counter
//! has moved by exactly what happened.

use anyhow::{Context, Result};
use axum::http::StatusCode;
use serde_json::json;

use crate::harness::{Options, Receiver, System, example_definition, free_port, until};
use crate::{act, delivery_ids};

/// The metrics `url` serves, once it answers.
async fn scrape(http: &reqwest::Client, url: &str) -> Result<String> {
    let response = http.get(url).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    Ok(response.text().await?)
}

/// The value of the sample `series` (name and labels exactly as exposed); 0 when absent, as
/// Prometheus reads a counter that has not moved yet.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().expect("a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_worker_count_exactly_what_a_campaign_did() -> Result<()> {
    // The report's first POST is refused, its retry accepted.
    let mut receiver = Receiver::start(Some(1)).await?;
    let system = System::start(Options {
        metrics: true,
        in_process_worker: false,
        ..Options::default()
    })
    .await?;
    let api_metrics = format!(
        "http://{}/metrics",
        system.config.metrics_listen.context("metrics are on")?
    );
    let worker_metrics = format!("127.0.0.1:{}", free_port());
    let temporal_metrics = format!("127.0.0.1:{}", free_port());
    let _worker = system.spawn_worker_process_with(&[
        ("PIDGR_METRICS_LISTEN", &worker_metrics),
        ("PIDGR_TEMPORAL_METRICS_LISTEN", &temporal_metrics),
    ])?;
    let worker_metrics = format!("http://{worker_metrics}/metrics");
    let temporal_metrics = format!("http://{temporal_metrics}/metrics");
    let http = reqwest::Client::new();

    let campaign = system
        .start_campaign(
            &["u1", "u2", "u3"],
            example_definition("10s", "1s", &receiver.url),
        )
        .await?;
    system.until_waiting(&campaign, "wait").await?;
    let ids = delivery_ids(&system, &campaign).await?;
    let (status, body) = act(&system, &ids["u1"], "ack").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = act(&system, &ids["u2"], "read").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A repeated ACK changes nothing, and is not counted as a transition.
    let (status, body) = act(&system, &ids["u1"], "ack").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let done = system.until_status(&campaign, "COMPLETED").await?;
    assert_eq!(
        done["counts"],
        json!({ "pending": 0, "sent": 0, "read": 0, "acknowledged": 1, "missed": 2, "failed": 0 })
    );
    receiver.next().await?;
    receiver.next().await?;

    // The API: the ACKs and the read it recorded, its requests by route template.
    let api = scrape(&http, &api_metrics).await?;
    let ack_route = r#"route="/v1/deliveries/{delivery_id}/ack""#;
    assert_eq!(
        sample(
            &api,
            &format!(r#"pidgr_http_requests_total{{method="POST",{ack_route},status="200"}}"#)
        ),
        2.0,
        "{api}"
    );
    assert_eq!(
        sample(
            &api,
            r#"pidgr_http_requests_total{method="POST",route="/v1/deliveries/{delivery_id}/read",status="200"}"#
        ),
        1.0,
        "{api}"
    );
    assert_eq!(
        sample(
            &api,
            &format!(r#"pidgr_http_request_duration_seconds_count{{method="POST",{ack_route}}}"#)
        ),
        2.0,
        "{api}"
    );
    assert!(
        !api.contains(&ids["u1"]),
        "no delivery id in any label:\n{api}"
    );
    assert_eq!(
        sample(&api, r#"pidgr_deliveries_total{event="acknowledged"}"#),
        1.0
    );
    assert_eq!(sample(&api, r#"pidgr_deliveries_total{event="read"}"#), 1.0);
    // The first ACK took the campaign's free signal slot; the repeat changed nothing.
    assert_eq!(
        sample(&api, "pidgr_ack_signal_latency_seconds_count"),
        1.0,
        "{api}"
    );
    // Sending is the worker's: nothing of it here.
    assert_eq!(sample(&api, r#"pidgr_deliveries_total{event="sent"}"#), 0.0);
    // Gauges, read at scrape time.
    assert_eq!(sample(&api, r#"pidgr_campaigns{status="COMPLETED"}"#), 1.0);
    assert_eq!(sample(&api, r#"pidgr_campaigns{status="ACTIVE"}"#), 0.0);
    assert!(
        sample(&api, r#"pidgr_db_pool_connections{state="idle"}"#)
            + sample(&api, r#"pidgr_db_pool_connections{state="in_use"}"#)
            >= 1.0,
        "{api}"
    );

    // The worker: three first notifications, two reminders, two missed, the report's POSTs.
    let worker = scrape(&http, &worker_metrics).await?;
    assert_eq!(
        sample(&worker, r#"pidgr_deliveries_total{event="sent"}"#),
        3.0,
        "{worker}"
    );
    assert_eq!(
        sample(&worker, r#"pidgr_deliveries_total{event="missed"}"#),
        2.0
    );
    assert_eq!(
        sample(&worker, r#"pidgr_deliveries_total{event="failed"}"#),
        0.0
    );
    assert_eq!(
        sample(
            &worker,
            r#"pidgr_push_sends_total{provider="log",outcome="sent"}"#
        ),
        5.0,
        "{worker}"
    );
    assert_eq!(sample(&worker, "pidgr_fanout_recipients_total"), 5.0);
    assert_eq!(
        sample(
            &worker,
            r#"pidgr_webhook_attempts_total{kind="call_webhook",outcome="retried"}"#
        ),
        1.0,
        "{worker}"
    );
    assert_eq!(
        sample(
            &worker,
            r#"pidgr_webhook_attempts_total{kind="call_webhook",outcome="delivered"}"#
        ),
        1.0,
        "{worker}"
    );
    assert_eq!(
        sample(&worker, r#"pidgr_deliveries_total{event="acknowledged"}"#),
        0.0
    );
    assert_eq!(
        sample(&worker, r#"pidgr_campaigns{status="COMPLETED"}"#),
        1.0
    );

    // The SDK's own metrics, on the worker's second address.
    let temporal = until("the SDK's metrics to show activity tasks", || async {
        let text = scrape(&http, &temporal_metrics).await?;
        Ok(text
            .lines()
            .any(|line| line.starts_with("temporal_activity_execution_latency"))
            .then_some(text))
    })
    .await?;
    assert!(temporal.contains("temporal_"), "{temporal}");

    system.shutdown().await;
    Ok(())
}
