//! Attested acknowledgements and the signed audit export: the inbox's content hash, an ACK that
//! attests it (and one that attests other content, refused), the export in JSON lines and CSV,
//! and the real `pidgr audit verify` on the files and on tampered copies.

use std::path::Path;

use anyhow::{Context, Result};
use axum::http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{Options, Receiver, System, example_definition, postgres_configured};

/// What the API documents as the hashed form: the compact JSON array [title, Markdown body].
fn content_hash(message: &Value) -> String {
    let text = json!([message["title"], message["body_markdown"]]).to_string();
    hex::encode(Sha256::digest(text.as_bytes()))
}

async fn export(system: &System, campaign: &str, format: &str) -> Result<(String, String)> {
    let response = system
        .http
        .get(format!(
            "{}/v1/campaigns/{campaign}/audit?format={format}",
            system.api
        ))
        .bearer_auth(&system.key)
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((content_type, response.text().await?))
}

/// `pidgr audit verify FILE ARGS…`: whether it succeeded, and what it printed.
async fn verify(system: &System, file: &Path, args: &[&str]) -> Result<(bool, String)> {
    let output = system
        .pidgr_command("audit")?
        .arg("verify")
        .arg(file)
        .args(args)
        .output()
        .await?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), printed))
}

fn lines_with(text: &str, change: impl FnOnce(&mut Vec<&str>)) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    change(&mut lines);
    lines.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attested_ack_is_exported_in_a_signed_chain_that_pidgr_verifies() -> Result<()> {
    audit_on(Options::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signed_audit_export_verifies_on_postgres() -> Result<()> {
    if !postgres_configured("the_signed_audit_export_verifies_on_postgres") {
        return Ok(());
    }
    audit_on(Options {
        postgres: true,
        ..Options::default()
    })
    .await
}

async fn audit_on(options: Options) -> Result<()> {
    let receiver = Receiver::start(Some(0)).await?;
    let system = System::start(options).await?;
    let campaign = system
        .start_campaign(
            &["au1", "au2", "au3"],
            example_definition("10s", "1s", &receiver.url),
        )
        .await?;
    system.until_waiting(&campaign, "wait").await?;
    let members = system.members(&["au1", "au2"]).await?;

    // The inbox serves the hash of what it shows.
    let inbox = system
        .get(&format!("/v1/members/{}/inbox", members[0].id))
        .await?;
    let item = &inbox["items"][0];
    let hash = item["content_sha256"].as_str().context("content_sha256")?;
    assert_eq!(hash, content_hash(&item["message"]), "{item}");
    let delivery = item["delivery"]["id"].as_str().unwrap().to_owned();
    let read = system.get(&format!("/v1/deliveries/{delivery}")).await?;
    assert_eq!(read["content_sha256"], hash);

    // Not a hash as served: refused before anything is looked at.
    let (status, problem) = system
        .post(
            &format!("/v1/deliveries/{delivery}/ack"),
            json!({ "source": "app", "content_sha256": hash.to_uppercase() }),
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem.to_string().contains("/content_sha256"), "{problem}");

    // Other content attested: refused, nothing written.
    let (status, problem) = system
        .post(
            &format!("/v1/deliveries/{delivery}/ack"),
            json!({ "source": "app", "content_sha256": "0".repeat(64) }),
        )
        .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(
        problem["type"],
        "https://pidgr.dev/problems/content-mismatch"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("acknowledged different content"),
        "{problem}"
    );
    assert_eq!(
        system.get(&format!("/v1/deliveries/{delivery}")).await?["status"],
        "SENT"
    );

    // The right hash: recorded.
    let (status, acked) = system
        .post(
            &format!("/v1/deliveries/{delivery}/ack"),
            json!({ "source": "app", "content_sha256": hash }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{acked}");
    assert_eq!(acked["status"], "ACKNOWLEDGED");
    assert_eq!(acked["content_sha256"], hash);
    // A READ may attest too.
    let other_inbox = system
        .get(&format!("/v1/members/{}/inbox", members[1].id))
        .await?;
    let other = &other_inbox["items"][0];
    let (status, body) = system
        .post(
            &format!(
                "/v1/deliveries/{}/read",
                other["delivery"]["id"].as_str().unwrap()
            ),
            json!({ "source": "web", "content_sha256": other["content_sha256"] }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");

    system.until_status(&campaign, "COMPLETED").await?;

    let (content_type, jsonl) = export(&system, &campaign, "jsonl").await?;
    assert_eq!(content_type, "application/x-ndjson");
    let records: Vec<Value> = jsonl
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let key_id = system.get("/v1/organisation").await?["api_key"]["id"].clone();
    let ack = records
        .iter()
        .find(|r| r["event"] == "ACKNOWLEDGED")
        .context("the ACK is exported")?;
    assert_eq!(ack["delivery_id"], delivery.as_str());
    assert_eq!(ack["content_sha256"], hash);
    assert_eq!(ack["source"], "app");
    assert_eq!(ack["api_key_id"], key_id);
    assert_eq!(ack["content_confirmed"], true, "the app sent the hash back");
    assert!(ack["template_id"].is_string(), "{ack}");
    let events: Vec<&str> = records.iter().filter_map(|r| r["event"].as_str()).collect();
    // Three SENT, one READ, one ACK, two MISSED.
    assert_eq!(events.len(), 7, "{events:?}");
    assert_eq!(events.iter().filter(|e| **e == "MISSED").count(), 2);
    let trailer = records.last().unwrap();
    assert_eq!(trailer["type"], "trailer");
    assert_eq!(trailer["count"], 7);
    assert_eq!(trailer["deliveries"], 3);
    assert_eq!(trailer["campaign_status"], "COMPLETED");
    assert_eq!(
        trailer["org_id"],
        system.get("/v1/organisation").await?["id"]
    );
    // Deterministic: the same campaign exports the same bytes again.
    assert_eq!(export(&system, &campaign, "jsonl").await?.1, jsonl);

    let (content_type, csv) = export(&system, &campaign, "csv").await?;
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    assert_eq!(
        csv.lines().count(),
        records.len() + 1,
        "a header and a row per record"
    );

    let (status, problem) = system
        .call(
            reqwest::Method::GET,
            &format!("/v1/campaigns/{campaign}/audit?format=xml"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");

    let keys = system.get("/v1/organisation/signing-keys").await?;
    assert_eq!(keys["items"][0]["key_id"], trailer["key_id"]);
    let dir = std::env::temp_dir().join(format!("pidgr-audit-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let key_file = dir.join("keys.json");
    std::fs::write(&key_file, keys.to_string())?;
    let key_args = ["--key-file", key_file.to_str().unwrap()];
    let public_key = keys["items"][0]["public_key"].as_str().unwrap().to_owned();

    let jsonl_file = dir.join("audit.jsonl");
    std::fs::write(&jsonl_file, &jsonl)?;
    let (ok, printed) = verify(&system, &jsonl_file, &key_args).await?;
    assert!(ok, "{printed}");
    assert!(
        printed.contains("ok: 7 events of 3 deliveries"),
        "{printed}"
    );
    let (ok, printed) = verify(
        &system,
        &jsonl_file,
        &[&key_args[..], &["--campaign", &campaign]].concat(),
    )
    .await?;
    assert!(ok, "{printed}");
    let (ok, printed) = verify(
        &system,
        &jsonl_file,
        &[&key_args[..], &["--campaign", "another"]].concat(),
    )
    .await?;
    assert!(!ok, "{printed}");
    assert!(printed.contains("not another"), "{printed}");
    let csv_file = dir.join("audit.csv");
    std::fs::write(&csv_file, &csv)?;
    let (ok, printed) = verify(&system, &csv_file, &["--public-key", &public_key]).await?;
    assert!(ok, "{printed}");

    let ack_line = jsonl
        .lines()
        .position(|l| l.contains("ACKNOWLEDGED"))
        .unwrap();
    let tampered = [
        (
            "changed",
            jsonl.replacen("\"source\":\"app\"", "\"source\":\"web\"", 1),
            ack_line + 1,
        ),
        (
            "dropped",
            lines_with(&jsonl, |l| {
                l.remove(1);
            }),
            2,
        ),
        ("reordered", lines_with(&jsonl, |l| l.swap(2, 3)), 3),
        (
            "respaced",
            jsonl.replacen(",\"source\":\"app\"", ", \"source\":\"app\"", 1),
            ack_line + 1,
        ),
    ];
    for (what, text, line) in tampered {
        let file = dir.join(format!("{what}.jsonl"));
        std::fs::write(&file, text)?;
        let (ok, printed) = verify(&system, &file, &key_args).await?;
        assert!(!ok, "a {what} file verified: {printed}");
        assert!(
            printed.contains(&format!("line {line}:")),
            "{what}: {printed}"
        );
    }
    let reordered_csv = dir.join("reordered.csv");
    std::fs::write(&reordered_csv, lines_with(&csv, |l| l.swap(1, 2)))?;
    let (ok, printed) = verify(&system, &reordered_csv, &key_args).await?;
    assert!(!ok, "{printed}");

    let _ = std::fs::remove_dir_all(&dir);
    system.shutdown().await;
    Ok(())
}
