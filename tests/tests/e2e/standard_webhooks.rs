//! Standard Webhooks, checked with the specification's own Python library (`standardwebhooks`,
//! installed by `make tools` into `.tools/py`), not with Pidgr's code: a channel test event, a
//! campaign's channel event (retried once) and a CALL_WEBHOOK POST verify with
//! `Webhook(secret).verify(body, headers)`; after a rotation a receiver holding either secret
//! verifies the next event; and a request replayed with an old timestamp is refused, whether
//! re-signed for that timestamp or carrying its original signature. `X-Pidgr-Signature` stays
//! what it was: the hex HMAC of the body keyed with the whole secret string.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};
use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::harness::{Options, Received, Receiver, System};

/// Where `make tools` installs the library.
fn tools_python_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/py")
}

/// Verifies one request with the library, or first rewrites it as a replay: `old_resigned`
/// moves the timestamp ten minutes back and signs it anew with the library (a correct
/// signature for an old timestamp), `old_original` moves it back and keeps the signature.
/// Prints `verified` or `refused: <the library's reason>`.
const VERIFY: &str = r#"
import json, sys
from datetime import datetime, timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
given = json.load(sys.stdin)
body, headers, hook = given["body"], dict(given["headers"]), Webhook(given["secret"])
if given["mode"] != "as_sent":
    old = int(headers["webhook-timestamp"]) - 600
    headers["webhook-timestamp"] = str(old)
    if given["mode"] == "old_resigned":
        at = datetime.fromtimestamp(old, tz=timezone.utc)
        headers["webhook-signature"] = hook.sign(headers["webhook-id"], at, body)
try:
    hook.verify(body.encode(), headers)
    print("verified")
except WebhookVerificationError as error:
    print("refused:", error)
"#;

fn library_available() -> bool {
    Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .env("PYTHONPATH", tools_python_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// What the library says about `request` held with `secret`, after `mode`'s rewrite.
fn library_says(request: &Received, secret: &str, mode: &str) -> Result<String> {
    let headers: serde_json::Map<String, Value> = request
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), json!(value.to_str().ok()?))))
        .collect();
    let input = json!({
        "secret": secret,
        "body": std::str::from_utf8(&request.raw)?,
        "headers": headers,
        "mode": mode,
    });
    let mut child = Command::new("python3")
        .args(["-c", VERIFY])
        .env("PYTHONPATH", tools_python_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running python3")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.to_string().as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "the verification script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// The library accepts the request as sent, and refuses both replays with an old timestamp.
fn verifies_and_refuses_replays(request: &Received, secret: &str) -> Result<()> {
    let said = library_says(request, secret, "as_sent")?;
    ensure!(said == "verified", "{said} for {:?}", request.headers);
    let resigned = library_says(request, secret, "old_resigned")?;
    ensure!(
        resigned == "refused: Message timestamp too old",
        "a re-signed replay: {resigned}"
    );
    let original = library_says(request, secret, "old_original")?;
    ensure!(
        original.starts_with("refused:"),
        "a replay with the original signature: {original}"
    );
    Ok(())
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// `X-Pidgr-Signature` as docs/webhooks.md has always described it.
fn pidgr_signature_matches(request: &Received, secret: &str) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(&request.raw);
    hex::encode(mac.finalize().into_bytes()) == header(request, "x-pidgr-signature")
}

async fn test_event(system: &System, receiver: &mut Receiver) -> Result<Received> {
    let (status, answer) = system
        .call(Method::POST, "/v1/webhook-channel/test-event", None)
        .await?;
    ensure!(
        status == StatusCode::OK && answer["delivered"] == true,
        "{answer}"
    );
    receiver.next().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_webhooks_library_verifies_channel_events_and_call_webhook_posts() -> Result<()>
{
    if !library_available() {
        eprintln!(
            "standard_webhooks: SKIPPED (the standardwebhooks library is not importable from \
             .tools/py; `make tools` installs it)"
        );
        return Ok(());
    }
    // The first request (the campaign's channel event) is answered 500, so it is retried.
    let mut receiver = Receiver::start(Some(1)).await?;
    let system = System::start(Options::default()).await?;
    let (status, channel) = system
        .call(
            Method::PUT,
            "/v1/webhook-channel",
            Some(json!({ "url": receiver.url })),
        )
        .await?;
    ensure!(status == StatusCode::CREATED, "{channel}");
    let first_secret = channel["secret"].as_str().context("secret")?.to_owned();
    ensure!(first_secret.starts_with("whsec_"), "{first_secret}");

    // A campaign: its channel event (failed once, then retried), then its CALL_WEBHOOK.
    let definition = json!({
        "version": 1,
        "steps": [
            { "id": "notify", "type": "SEND_NOTIFICATION",
              "config": { "channels": ["webhook"], "variables": { "deadline": "Friday" } },
              "transitions": { "next": "report" } },
            { "id": "report", "type": "CALL_WEBHOOK",
              "config": { "name": "Results", "url": receiver.url,
                          "headers": { "Authorization": "Bearer s3cret" } },
              "transitions": {} }
        ]
    });
    let campaign = system.start_campaign(&["ada"], definition).await?;
    system.until_status(&campaign, "COMPLETED").await?;
    let (refused, retried, report) = (
        receiver.next().await?,
        receiver.next().await?,
        receiver.next().await?,
    );
    ensure!(refused.body["user_id"] == "ada", "{}", refused.body);
    ensure!(retried.raw == refused.raw, "a retry re-sends the same body");
    ensure!(
        report.body["campaign_id"] == campaign.as_str(),
        "{}",
        report.body
    );

    // The channel event: one id on every attempt (the stored event's), a timestamp each.
    let event_id = header(&refused, "webhook-id");
    ensure!(
        header(&retried, "webhook-id") == event_id,
        "{:?}",
        retried.headers
    );
    let activity = system.activity(&campaign).await?;
    ensure!(
        activity
            .iter()
            .filter(|e| e["kind"] == "channel_event_attempt")
            .all(|e| e["details"]["event_id"] == event_id),
        "webhook-id is the stored event's id: {event_id} in {activity:?}"
    );
    for request in [&refused, &retried] {
        verifies_and_refuses_replays(request, &first_secret)?;
        ensure!(pidgr_signature_matches(request, &first_secret));
    }

    // The CALL_WEBHOOK: signed with the channel's secret, its id derived from the campaign,
    // the step and the part, its own headers kept, and no X-Pidgr-Signature (never had one).
    verifies_and_refuses_replays(&report, &first_secret)?;
    ensure!(
        header(&report, "webhook-id").starts_with("msg_"),
        "{:?}",
        report.headers
    );
    ensure!(header(&report, "authorization") == "Bearer s3cret");
    ensure!(report.headers.get("x-pidgr-signature").is_none());

    // The test event verifies too, and a body changed by one byte does not.
    let test = test_event(&system, &mut receiver).await?;
    verifies_and_refuses_replays(&test, &first_secret)?;
    ensure!(pidgr_signature_matches(&test, &first_secret));
    let mut altered = test.clone();
    let mut raw = altered.raw.to_vec();
    let last = raw.len() - 2;
    raw[last] ^= 0x01;
    altered.raw = raw.into();
    let said = library_says(&altered, &first_secret, "as_sent")?;
    ensure!(said == "refused: No matching signature found", "{said}");

    // Rotation: for the overlap, webhook-signature carries both secrets' signatures, so a
    // receiver holding either verifies the next event; X-Pidgr-Signature uses the new one.
    let (status, rotated) = system
        .call(Method::POST, "/v1/webhook-channel/rotate-secret", None)
        .await?;
    ensure!(status == StatusCode::OK, "{rotated}");
    let second_secret = rotated["secret"].as_str().context("secret")?.to_owned();
    let after = test_event(&system, &mut receiver).await?;
    ensure!(
        header(&after, "webhook-signature").split(' ').count() == 2,
        "{:?}",
        after.headers
    );
    verifies_and_refuses_replays(&after, &first_secret)?;
    verifies_and_refuses_replays(&after, &second_secret)?;
    ensure!(pidgr_signature_matches(&after, &second_secret));
    ensure!(!pidgr_signature_matches(&after, &first_secret));
    ensure!(header(&after, "webhook-id") != header(&test, "webhook-id"));
    system.shutdown().await;
    Ok(())
}
