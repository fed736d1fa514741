//! `pidgr-push-fakes`: the FCM and APNs fakes as a process of their own, on given loopback
//! ports, so that a `pidgr serve` (or `pidgr worker`) child process can push through them
//! (`PIDGR_FCM_URL`, `PIDGR_FCM_TOKEN_URL`, `PIDGR_APNS_URL`). The benchmark runs it.
//!
//! ```text
//! pidgr-push-fakes [--fcm-port N] [--apns-port N] [--latency-ms N]
//! ```
//!
//! Ports default to 0 (any free port); the latency, applied to every request, defaults to
//! 20 ms, about what a real provider answers in. The first line on stdout is JSON with the
//! URLs and the credentials to register (`/v1/integrations/push/fcm` and `/apns`). Runs until
//! killed, interrupted, or its stdin closes.

use std::io::Write;
use std::time::Duration;

use pidgr_push_fakes::{
    FakeApns, FakeFcm, generate_apns_key, test_service_account_json,
    test_service_account_public_key,
};
use tokio::io::AsyncReadExt;

const PROJECT_ID: &str = "pidgr-bench";
const CLIENT_EMAIL: &str = "pidgr@pidgr-bench.iam.gserviceaccount.com";
const TEAM_ID: &str = "TEAM123456";
const KEY_ID: &str = "KEY1234567";
const BUNDLE_ID: &str = "com.pidgr.bench";

struct Args {
    fcm_port: u16,
    apns_port: u16,
    latency: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        fcm_port: 0,
        apns_port: 0,
        latency: Duration::from_millis(20),
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |what: &str| -> Result<u64, String> {
            value
                .parse::<u64>()
                .map_err(|_| format!("{what} must be a whole number, not {value:?}"))
        };
        match flag.as_str() {
            "--fcm-port" => {
                args.fcm_port = u16::try_from(number("--fcm-port")?).map_err(|e| e.to_string())?
            }
            "--apns-port" => {
                args.apns_port = u16::try_from(number("--apns-port")?).map_err(|e| e.to_string())?
            }
            "--latency-ms" => args.latency = Duration::from_millis(number("--latency-ms")?),
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: pidgr-push-fakes [--fcm-port N] \
                     [--apns-port N] [--latency-ms N]"
                ));
            }
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(problem) => {
            eprintln!("error: {problem}");
            return std::process::ExitCode::from(2);
        }
    };
    let fcm = FakeFcm::start_on_port(
        args.fcm_port,
        PROJECT_ID,
        CLIENT_EMAIL,
        &test_service_account_public_key(),
    )
    .await;
    let (p8, public_key) = generate_apns_key();
    let apns = FakeApns::start_on_port(args.apns_port, TEAM_ID, KEY_ID, &public_key).await;
    fcm.set_latency(args.latency);
    apns.set_latency(args.latency);
    let service_account: serde_json::Value =
        serde_json::from_str(&test_service_account_json(CLIENT_EMAIL, PROJECT_ID))
            .expect("the test service account is JSON");
    let ready = serde_json::json!({
        "fcm_url": fcm.base_url(),
        "fcm_token_url": fcm.token_url(),
        "apns_url": apns.base_url(),
        "latency_ms": args.latency.as_millis() as u64,
        "fcm_credentials": { "service_account": service_account },
        "apns_credentials": {
            "team_id": TEAM_ID, "key_id": KEY_ID, "bundle_id": BUNDLE_ID,
            "environment": "production", "private_key": p8,
        },
    });
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "{ready}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return std::process::ExitCode::FAILURE;
    }

    // Stdin closing means the parent is gone: stop rather than linger.
    let stdin_closed = async {
        let mut sink = [0u8; 256];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    tokio::pin!(stdin_closed);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => {
                // Nobody reads what the fakes record here: draining keeps memory flat however
                // many pushes arrive.
                fcm.take_received();
                apns.take_received();
            }
            _ = &mut stdin_closed => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    std::process::ExitCode::SUCCESS
}
