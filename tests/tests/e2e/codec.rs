//! The payload codec end to end: what Temporal stores of a campaign is ciphertext, `temporal
//! workflow show` reads it in clear only through the codec server with the operator's codec
//! token, and the codec server refuses everyone else, every organisation's Super Admin
//! included; without a token it is off.

use anyhow::{Context, Result};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pidgr_codec::PayloadCipher;
use pidgr_codec::wire::PayloadsBody;
use serde_json::{Value, json};
use temporalio_common::protos::temporal::api::common::v1::Payload;

use crate::harness::{Options, Receiver, System, example_definition};

/// A step variable no other text of the run contains: it travels only in the workflow's input.
const MARKER: &str = "Plover-7731-Quay";

/// Every string of `value`, and what each one base64-decodes to: payload data can be shown
/// either way, so a value hidden in neither is not there.
fn strings_and_decoded(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => {
            out.push(text.clone());
            if let Ok(bytes) = STANDARD.decode(text) {
                out.push(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        Value::Array(items) => items.iter().for_each(|v| strings_and_decoded(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings_and_decoded(v, out)),
        _ => {}
    }
}

/// A history as `WorkflowHistory::to_json` writes it, with every payload the codec encrypted
/// replaced by the original (for recording a fixture that replays under any key).
pub fn decrypt_history(history: &[u8], cipher: &PayloadCipher) -> Result<Vec<u8>> {
    fn walk(value: &mut Value, cipher: &PayloadCipher) -> Result<()> {
        match value {
            Value::Object(map) if map.contains_key("metadata") && map.contains_key("data") => {
                let body: PayloadsBody =
                    serde_json::from_value(json!({ "payloads": [Value::Object(map.clone())] }))?;
                let payload = body.to_payloads()?.remove(0);
                if PayloadCipher::is_encrypted(&payload) {
                    let plain = cipher.decrypt(payload)?;
                    let json = serde_json::to_value(PayloadsBody::from_payloads(&[plain]))?;
                    *value = json["payloads"][0].clone();
                }
            }
            Value::Object(map) => {
                for v in map.values_mut() {
                    walk(v, cipher)?;
                }
            }
            Value::Array(items) => {
                for v in items {
                    walk(v, cipher)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    let mut value: Value = serde_json::from_slice(history)?;
    walk(&mut value, cipher)?;
    Ok(serde_json::to_vec(&value)?)
}

fn json_payload(text: &str) -> Payload {
    Payload {
        metadata: [("encoding".to_owned(), b"json/plain".to_vec())].into(),
        data: serde_json::to_vec(text).expect("a JSON string"),
        ..Default::default()
    }
}

fn body_of(payloads: &[Payload]) -> Value {
    serde_json::to_value(PayloadsBody::from_payloads(payloads)).expect("a codec body")
}

fn payloads_of(answer: &Value) -> Result<Vec<Payload>> {
    Ok(serde_json::from_value::<PayloadsBody>(answer.clone())?.to_payloads()?)
}

/// The operator's codec token of `system`.
fn codec_token(system: &System) -> Result<String> {
    system
        .config
        .codec_token
        .clone()
        .context("the system runs without a codec token")
}

/// POSTs `body` to the codec route `path` with the operator's token in the header.
async fn as_operator(system: &System, path: &str, body: Value) -> Result<(StatusCode, Value)> {
    system
        .call_as(
            Some(&codec_token(system)?),
            reqwest::Method::POST,
            path,
            Some(body),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_shows_campaign_payloads_in_clear_only_through_the_codec_server() -> Result<()> {
    let mut receiver = Receiver::start(Some(0)).await?;
    let system = System::start(Options::default()).await?;
    let mut definition = example_definition("1s", "1s", &receiver.url);
    definition["steps"][0]["config"]["variables"]["deadline"] = json!(MARKER);
    let campaign = system.start_campaign(&["a"], definition).await?;
    system.until_status(&campaign, "COMPLETED").await?;
    receiver.next().await?;
    let workflow_id = pidgr_workflows::workflow_id(&campaign);

    // (a) Temporal's own view: the input, activity inputs and results are ciphertext.
    let shown = system.workflow_show(&workflow_id, &[]).await?;
    let history: Value = serde_json::from_str(&shown).context("workflow show JSON")?;
    let mut texts = Vec::new();
    strings_and_decoded(&history, &mut texts);
    let leaks: Vec<&String> = texts.iter().filter(|t| t.contains(MARKER)).collect();
    assert!(
        leaks.is_empty(),
        "the step variable shows in clear: {leaks:?}"
    );
    assert!(
        texts.iter().any(|t| t == "binary/encrypted"),
        "no encrypted payload in {shown}"
    );

    // (b) Through the codec server with the operator's token: the same history in clear.
    let endpoint = format!("{}/codec", system.api);
    let auth = format!("Bearer {}", codec_token(&system)?);
    let decoded = system
        .workflow_show(
            &workflow_id,
            &["--codec-endpoint", &endpoint, "--codec-auth", &auth],
        )
        .await?;
    let mut texts = Vec::new();
    strings_and_decoded(&serde_json::from_str(&decoded)?, &mut texts);
    assert!(
        texts.iter().any(|t| t.contains(MARKER)),
        "not decoded: {decoded}"
    );

    // (c) The codec server refuses no key and every API key, the organisation's Super Admin
    // key included (the codec key opens every organisation's payloads), in the header and in
    // the path, and never answers decoded data to them.
    let cipher = pidgr::payload_cipher(&system.config)?;
    let secret = cipher.encrypt(&json_payload(MARKER))?;
    let body = body_of(std::slice::from_ref(&secret));
    let member_key = system
        .store
        .create_api_key(&system.org_id, "member", "member")
        .await?
        .secret;
    for path in ["/codec/decode", "/codec/encode"] {
        for key in [None, Some(&member_key), Some(&system.key)] {
            let (status, answer) = system
                .call_as(
                    key.map(String::as_str),
                    reqwest::Method::POST,
                    path,
                    Some(body.clone()),
                )
                .await?;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {answer}");
            assert!(!answer.to_string().contains("payloads"), "{answer}");
            assert!(
                answer["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("PIDGR_CODEC_TOKEN"),
                "{answer}"
            );
        }
    }
    for key in [&member_key, &system.key] {
        for direction in ["decode", "encode"] {
            let in_path = format!("/codec/key/{key}/{direction}");
            let (status, answer) = system
                .call_as(
                    Some(key),
                    reqwest::Method::POST,
                    &in_path,
                    Some(body.clone()),
                )
                .await?;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{in_path}: {answer}");
            assert!(!answer.to_string().contains("payloads"), "{answer}");
        }
    }

    // The operator's token decodes, in the header or (for the Web UI) in the path.
    let (status, answer) = as_operator(&system, "/codec/decode", body.clone()).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(payloads_of(&answer)?, vec![json_payload(MARKER)]);
    let in_path = format!("/codec/key/{}/decode", codec_token(&system)?);
    let (status, answer) = system
        .call_as(None, reqwest::Method::POST, &in_path, Some(body.clone()))
        .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(payloads_of(&answer)?, vec![json_payload(MARKER)]);
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codec_server_encodes_passes_through_and_refuses_tampered_payloads() -> Result<()> {
    let system = System::start(Options {
        in_process_worker: false,
        ..Options::default()
    })
    .await?;
    let cipher = pidgr::payload_cipher(&system.config)?;

    // Encode answers what the worker can decrypt, named by the server key's id.
    let (status, answer) =
        as_operator(&system, "/codec/encode", body_of(&[json_payload("hello")])).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let encoded = payloads_of(&answer)?;
    assert!(PayloadCipher::is_encrypted(&encoded[0]));
    assert_eq!(
        encoded[0].metadata["encryption-key-id"],
        cipher.current_key_id().as_bytes()
    );
    assert_eq!(cipher.decrypt(encoded[0].clone())?, json_payload("hello"));

    // After a rotation (a new current key, the old one in PIDGR_PREVIOUS_SECRET_KEYS) payloads
    // of the old key are still read, and new ones are encrypted with the new key.
    let rotated = pidgr::Config {
        secret_key: Some(pidgr_store::SecretKey::generate().to_hex()),
        previous_secret_keys: system.config.secret_key.clone().into_iter().collect(),
        ..system.config.clone()
    };
    let rotated = pidgr::payload_cipher(&rotated)?;
    let before = cipher.encrypt(&json_payload("before the rotation"))?;
    assert_eq!(
        rotated.decrypt(before)?,
        json_payload("before the rotation")
    );
    assert_ne!(rotated.current_key_id(), cipher.current_key_id());

    // A history's payloads come in larger bodies than the rest of the API takes (256 KiB).
    let big = json_payload(&"x".repeat(1024 * 1024));
    let (status, answer) = as_operator(
        &system,
        "/codec/encode",
        body_of(std::slice::from_ref(&big)),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "a 1 MiB payload");
    assert_eq!(cipher.decrypt(payloads_of(&answer)?.remove(0))?, big);

    // Plain payloads, and payloads of a key this server does not hold, come back unchanged.
    let foreign = pidgr::cipher_for(&pidgr_store::SecretKey::generate(), &[])
        .encrypt(&json_payload("not ours"))?;
    let mine = cipher.encrypt(&json_payload("ours"))?;
    let (status, answer) = as_operator(
        &system,
        "/codec/decode",
        body_of(&[json_payload("plain"), foreign.clone(), mine]),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        payloads_of(&answer)?,
        vec![json_payload("plain"), foreign, json_payload("ours")]
    );

    // A tampered payload is a 400 that says which, with nothing decoded.
    let mut tampered = cipher.encrypt(&json_payload("x"))?;
    let last = tampered.data.len() - 1;
    tampered.data[last] ^= 1;
    let (status, answer) = as_operator(
        &system,
        "/codec/decode",
        body_of(&[cipher.encrypt(&json_payload("fine"))?, tampered]),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("/payloads/1"),
        "{answer}"
    );
    assert!(!answer.to_string().contains("fine"), "{answer}");

    // A browser's preflight is answered without a key, and answers are readable cross-origin.
    let preflight = system
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/codec/decode", system.api),
        )
        .header("Origin", "http://127.0.0.1:8233")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type,x-namespace")
        .send()
        .await?;
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let allowed = |name: &str| {
        preflight
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(allowed("access-control-allow-origin"), "*");
    assert!(allowed("access-control-allow-headers").contains("x-namespace"));
    let refused = system
        .http
        .post(format!("{}/codec/decode", system.api))
        .header("Origin", "http://127.0.0.1:8233")
        .json(&json!({ "payloads": [] }))
        .send()
        .await?;
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(
        refused.headers()["access-control-allow-origin"].to_str()?,
        "*"
    );

    // Wrong tokens in the path count against the client address like any failed
    // authentication, those that could not even be a header value (a line break) included:
    // on an API server that lets an address fail 5 times, the address is soon refused with
    // 429, while the operator's own requests go on.
    let api = system
        .api_server_with(|c| {
            c.rate_limit_per_address = 1;
            c.rate_limit_per_address_burst = 5;
        })
        .await?;
    let mut refused = None;
    for attempt in 0..50 {
        let response = system
            .http
            .post(format!("{api}/codec/key/wrong%0Atoken-{attempt}/decode"))
            .json(&json!({ "payloads": [] }))
            .send()
            .await?;
        match response.status().as_u16() {
            401 => {}
            429 => {
                refused = Some(response.headers().get("retry-after").cloned());
                break;
            }
            other => anyhow::bail!("a wrong token answered {other}"),
        }
    }
    let retry_after = refused.context("50 wrong tokens and none was refused with 429")?;
    assert!(retry_after.is_some(), "a 429 without Retry-After");
    let response = system
        .http
        .post(format!("{api}/codec/decode"))
        .bearer_auth(codec_token(&system)?)
        .json(&json!({ "payloads": [] }))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codec_server_is_off_on_a_server_without_a_codec_token() -> Result<()> {
    let system = System::start(Options {
        in_process_worker: false,
        codec_server: false,
        ..Options::default()
    })
    .await?;
    let body = json!({ "payloads": [] });
    for path in [
        "/codec/decode".to_owned(),
        "/codec/encode".to_owned(),
        format!("/codec/key/{}/decode", system.key),
        format!("/codec/key/{}/encode", system.key),
    ] {
        let (status, answer) = system
            .call_as(
                Some(&system.key),
                reqwest::Method::POST,
                &path,
                Some(body.clone()),
            )
            .await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
        assert!(
            answer["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("PIDGR_CODEC_TOKEN"),
            "{answer}"
        );
    }
    system.shutdown().await;
    Ok(())
}
