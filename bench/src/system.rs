//! The system under measurement, as child processes on loopback: the Temporal dev server (as
//! `temporal-dev/` starts it, search attributes included), the push fakes, `pidgr api` and
//! `pidgr worker` (separate, so each one's memory is its own), plus the HTTP calls the
//! benchmark makes to the API.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process writing to a log file in the work folder; killed when dropped.
pub fn spawn(program: &Path, args: &[&str], env: &[(String, String)], log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true);
    command
        .spawn()
        .with_context(|| format!("starting {}", program.display()))
}

/// Runs a command to completion; its stdout, or an error with its stderr.
pub async fn run(program: &Path, args: &[&str], env: &[(String, String)]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", program.display()))?;
    if !output.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            program.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Polls `check` every `every` until it answers `Some`, for at most `limit`.
pub async fn until<T, F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("gave up after {} s waiting for {what}", limit.as_secs());
        }
        tokio::time::sleep(every).await;
    }
}

pub struct Temporal {
    pub address: String,
    _child: Child,
}

impl Temporal {
    pub async fn start(cli: &Path, dir: &Path) -> Result<Temporal> {
        let port = free_port()?;
        let ui_port = free_port()?;
        let address = format!("127.0.0.1:{port}");
        let db = dir.join("temporal.db");
        let (port_s, ui_s, db_s) = (
            port.to_string(),
            ui_port.to_string(),
            db.display().to_string(),
        );
        let mut args = vec![
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            &port_s,
            "--ui-port",
            &ui_s,
            "--db-filename",
            &db_s,
            "--log-level",
            "warn",
        ];
        let attributes: Vec<String> = pidgr_workflows::search_attributes::ALL
            .iter()
            .map(|(name, kind)| format!("{name}={kind}"))
            .collect();
        for attribute in &attributes {
            args.push("--search-attribute");
            args.push(attribute);
        }
        let child = spawn(cli, &args, &[], &dir.join("temporal.log"))?;
        let health = ["operator", "cluster", "health", "--address", &address];
        until(
            "the Temporal dev server",
            Duration::from_secs(120),
            Duration::from_millis(500),
            || async { Ok(run(cli, &health, &[]).await.ok().map(|_| ())) },
        )
        .await?;
        Ok(Temporal {
            address,
            _child: child,
        })
    }
}

/// What `pidgr-push-fakes` printed when it was ready.
pub struct Fakes {
    pub ready: Value,
    _child: Child,
}

impl Fakes {
    pub async fn start(program: &Path, latency_ms: u64) -> Result<Fakes> {
        let mut child = Command::new(program)
            .args(["--latency-ms", &latency_ms.to_string()])
            // The fakes stop when their stdin closes, i.e. when we are gone.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdout = child.stdout.take().context("the fakes' stdout")?;
        let mut first = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).read_line(&mut first),
        )
        .await
        .context("the push fakes did not start")??;
        let ready: Value = serde_json::from_str(&first).context("the push fakes' first line")?;
        Ok(Fakes {
            ready,
            _child: child,
        })
    }

    pub fn url(&self, name: &str) -> String {
        self.ready[name].as_str().unwrap_or_default().to_owned()
    }
}

/// Peak resident memory of a process so far (VmHWM), in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The size of an SQLite database with its WAL and shared-memory files, in bytes.
pub fn sqlite_size(url: &str) -> Option<u64> {
    let path = url.strip_prefix("sqlite://")?.split('?').next()?;
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    Some(
        size(PathBuf::from(path))
            + size(PathBuf::from(format!("{path}-wal")))
            + size(PathBuf::from(format!("{path}-shm"))),
    )
}

/// The API as the benchmark calls it: one keep-alive client shared by every task.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: String, key: String, connections: usize) -> Result<Api> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Api { base, key, http })
    }

    /// One request; the status and the JSON body (null when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// A call that must answer `expected`.
    pub async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        expected: u16,
    ) -> Result<Value> {
        let (status, value) = self.call(method.clone(), path, body).await?;
        if status != expected {
            bail!("{method} {path} answered {status} (expected {expected}): {value}");
        }
        Ok(value)
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.expect(reqwest::Method::GET, path, None, 200).await
    }
}
