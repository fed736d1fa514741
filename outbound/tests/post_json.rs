//! End-to-end tests of the SSRF-safe client against real loopback servers.
//!
//! The receivers are tiny hand-written HTTP/1.1 servers on `127.0.0.1:0` that record what they
//! received. Nothing sleeps: "no connection was made" is checked by polling the listener's
//! accept queue once after the call returned (on loopback a completed `connect()` is already in
//! the queue by then), and a receiver records a request before it answers, so the record is
//! there by the time the client has the answer.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use pidgr_outbound::{
    NameResolver, OutboundClient, OutboundConfig, OutboundError, ResolveFuture, StaticResolver,
};
use pidgr_workflows::definition::{BlockedReason, UrlPolicy, UrlRejection};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Test receivers

/// One request as a receiver saw it.
#[derive(Debug)]
struct Received {
    method: String,
    target: String,
    /// Header names lower-cased, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How a receiver answers.
#[derive(Clone)]
enum Reply {
    /// A complete answer: status, extra header lines, body.
    Answer {
        status: u16,
        extra: String,
        body: Vec<u8>,
    },
    /// Reads the request, then holds the connection open without answering.
    Silent,
}

fn answer(status: u16, body: &str) -> Reply {
    Reply::Answer {
        status,
        extra: String::new(),
        body: body.as_bytes().to_vec(),
    }
}

struct Receiver {
    addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The requests received so far.
    fn taken(&mut self) -> Vec<Received> {
        let mut all = Vec::new();
        while let Ok(request) = self.requests.try_recv() {
            all.push(request);
        }
        all
    }
}

async fn receiver(reply: Reply) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream, tx.clone(), reply.clone()));
        }
    });
    Receiver { addr, requests }
}

async fn handle(stream: TcpStream, tx: mpsc::UnboundedSender<Received>, reply: Reply) {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    let _ = tx.send(Received {
        method,
        target,
        headers,
        body,
    });
    match reply {
        Reply::Answer {
            status,
            extra,
            body,
        } => {
            let head = format!(
                "HTTP/1.1 {status} Test\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n",
                body.len()
            );
            // The client may hang up early (truncated bodies); that is fine.
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
            let _ = stream.flush().await;
        }
        Reply::Silent => {
            // Keep the connection open until the runtime ends with the test.
            std::future::pending::<()>().await;
        }
    }
}

/// Whether a connection is waiting in `listener`'s accept queue; polls exactly once.
async fn has_pending_connection(listener: &TcpListener) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(listener.poll_accept(cx).is_ready())).await
}

/// A listener nobody serves: it only tells whether someone connected.
async fn tripwire() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Clients and resolvers

fn config(policy: UrlPolicy) -> OutboundConfig {
    OutboundConfig {
        policy,
        ..OutboundConfig::default()
    }
}

fn client(policy: UrlPolicy, resolver: impl NameResolver) -> OutboundClient {
    OutboundClient::with_resolver(config(policy), Arc::new(resolver)).unwrap()
}

fn dev_client() -> OutboundClient {
    client(UrlPolicy::DEVELOPMENT, StaticResolver::new())
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Counts lookups and answers each from a list of answers in turn (the last one repeats).
struct ScriptedResolver {
    answers: Vec<Vec<IpAddr>>,
    calls: Arc<AtomicUsize>,
}

impl ScriptedResolver {
    fn new(answers: Vec<Vec<IpAddr>>) -> (Self, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        (
            ScriptedResolver {
                answers,
                calls: calls.clone(),
            },
            calls,
        )
    }
}

impl NameResolver for ScriptedResolver {
    fn resolve(&self, _host: &str, port: u16) -> ResolveFuture {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let ips = &self.answers[call.min(self.answers.len() - 1)];
        let addrs = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        Box::pin(std::future::ready(Ok(addrs)))
    }
}

fn no_headers() -> BTreeMap<String, String> {
    BTreeMap::new()
}

async fn post(
    client: &OutboundClient,
    url: &str,
) -> Result<pidgr_outbound::OutboundResponse, OutboundError> {
    client
        .post_json(url, &no_headers(), b"{}".to_vec(), TIMEOUT)
        .await
}

// ---------------------------------------------------------------------------------------------
// Delivery

#[tokio::test]
async fn posts_body_headers_and_content_type_to_a_loopback_receiver() {
    let mut server = receiver(answer(200, "{\"ok\":true}")).await;
    let (resolver, lookups) = ScriptedResolver::new(vec![vec![]]);
    let client = client(UrlPolicy::DEVELOPMENT, resolver);
    let headers = BTreeMap::from([
        ("Authorization".to_string(), "Bearer s3cret".to_string()),
        ("X-Pidgr-Signature".to_string(), "abc123".to_string()),
    ]);
    let body = br#"{"campaign_id":"c1","deliveries":[]}"#.to_vec();
    let url = format!("http://127.0.0.1:{}/hooks/pidgr?source=test", server.port());

    let response = client
        .post_json(&url, &headers, body.clone(), TIMEOUT)
        .await
        .unwrap();

    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"{\"ok\":true}");
    let received = server.taken();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/hooks/pidgr?source=test");
    assert_eq!(request.body, body);
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(request.header("x-pidgr-signature"), Some("abc123"));
    assert_eq!(
        request.header("host"),
        Some(format!("127.0.0.1:{}", server.port()).as_str())
    );
    assert!(request.header("user-agent").unwrap().starts_with("Pidgr/"));
    // A literal address is connected to directly: no name lookup at all.
    assert_eq!(lookups.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn every_2xx_is_a_success() {
    for status in [201, 202, 204] {
        let mut server = receiver(answer(status, "")).await;
        let url = format!("http://127.0.0.1:{}/", server.port());
        let response = post(&dev_client(), &url).await.unwrap();
        assert_eq!(response.status, status);
        assert!(response.body.is_empty());
        assert_eq!(server.taken().len(), 1);
    }
}

#[tokio::test]
async fn a_big_answer_is_cut_off_at_the_limit() {
    let mut server = receiver(Reply::Answer {
        status: 200,
        extra: String::new(),
        body: vec![b'a'; 1024 * 1024],
    })
    .await;
    let client = OutboundClient::with_resolver(
        OutboundConfig {
            policy: UrlPolicy::DEVELOPMENT,
            max_response_bytes: 1000,
        },
        Arc::new(StaticResolver::new()),
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{}/", server.port());

    let response = post(&client, &url).await.unwrap();

    assert_eq!(response.body.len(), 1000);
    assert!(response.body.iter().all(|b| *b == b'a'));
    assert_eq!(server.taken().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Static checks

#[tokio::test]
async fn strict_refuses_loopback_urls_without_connecting() {
    let listener = tripwire().await;
    let port = port_of(&listener);
    let (resolver, lookups) = ScriptedResolver::new(vec![vec![ip("127.0.0.1")]]);
    let client = client(UrlPolicy::STRICT, resolver);
    assert_eq!(client.policy(), UrlPolicy::STRICT);

    let error = post(&client, &format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            OutboundError::BlockedUrl(UrlRejection::InsecureScheme)
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable());

    for url in [
        format!("https://127.0.0.1:{port}/"),
        format!("https://0x7f.1:{port}/"),
        format!("https://2130706433:{port}/"),
        format!("https://[::1]:{port}/"),
        format!("https://[::ffff:127.0.0.1]:{port}/"),
    ] {
        let error = post(&client, &url).await.unwrap_err();
        assert!(
            matches!(
                error,
                OutboundError::BlockedUrl(UrlRejection::BlockedAddress {
                    reason: BlockedReason::Loopback,
                    ..
                })
            ),
            "{url}: {error:?}"
        );
        assert!(!error.is_retryable());
    }
    let error = post(&client, &format!("https://localhost:{port}/"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, OutboundError::BlockedUrl(UrlRejection::Localhost(_))),
        "{error:?}"
    );

    assert!(!has_pending_connection(&listener).await);
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        0,
        "refused before any lookup"
    );
}

#[tokio::test]
async fn an_invalid_header_fails_before_anything_is_sent() {
    let listener = tripwire().await;
    let url = format!("http://127.0.0.1:{}/", port_of(&listener));
    let headers = BTreeMap::from([("Host".to_string(), "elsewhere.example".to_string())]);

    let error = dev_client()
        .post_json(&url, &headers, b"{}".to_vec(), TIMEOUT)
        .await
        .unwrap_err();

    assert!(matches!(error, OutboundError::Other(_)), "{error:?}");
    assert!(!has_pending_connection(&listener).await);
}

// ---------------------------------------------------------------------------------------------
// Resolved addresses (DNS rebinding defence)

#[tokio::test]
async fn a_name_resolving_to_a_forbidden_address_is_refused_without_connecting() {
    let listener = tripwire().await;
    let url = format!("https://hooks.test:{}/hook", port_of(&listener));
    for (address, reason) in [
        ("127.0.0.1", BlockedReason::Loopback),
        ("10.0.0.1", BlockedReason::Private),
        ("::ffff:169.254.169.254", BlockedReason::LinkLocal),
        ("169.254.169.254", BlockedReason::LinkLocal),
        ("fd00::1", BlockedReason::Private),
        ("100.64.0.1", BlockedReason::SharedAddressSpace),
        ("0.0.0.0", BlockedReason::Unspecified),
    ] {
        let client = client(
            UrlPolicy::STRICT,
            StaticResolver::new().with("hooks.test", [ip(address)]),
        );

        let error = post(&client, &url).await.unwrap_err();

        match &error {
            OutboundError::BlockedAddress {
                host,
                ip: blocked,
                reason: why,
            } => {
                assert_eq!(host, "hooks.test");
                assert_eq!(*blocked, ip(address));
                assert_eq!(*why, reason, "{address}");
            }
            other => panic!("{address}: {other:?}"),
        }
        assert!(!error.is_retryable());
        assert!(
            error
                .to_string()
                .starts_with("the host hooks.test is not allowed")
        );
        // What the name resolved to is for logs, never for the message.
        assert!(!error.to_string().contains(address), "{error}");
    }
    assert!(!has_pending_connection(&listener).await);
}

#[tokio::test]
async fn a_mixed_answer_is_refused_rather_than_picking_the_good_address() {
    let listener = tripwire().await;
    let url = format!("https://hooks.test:{}/", port_of(&listener));
    for (answer, blocked) in [
        (vec![ip("93.184.215.14"), ip("10.0.0.1")], ip("10.0.0.1")),
        (vec![ip("10.0.0.1"), ip("93.184.215.14")], ip("10.0.0.1")),
        (vec![ip("2606:4700::1111"), ip("fe80::1")], ip("fe80::1")),
    ] {
        assert!(classify_public(
            answer.iter().copied().find(|a| *a != blocked).unwrap()
        ));
        let client = client(
            UrlPolicy::STRICT,
            StaticResolver::new().with("hooks.test", answer.clone()),
        );
        let error = post(&client, &url).await.unwrap_err();
        assert!(
            matches!(error, OutboundError::BlockedAddress { ip, .. } if ip == blocked),
            "{answer:?}: {error:?}"
        );
    }
    assert!(!has_pending_connection(&listener).await);
}

fn classify_public(address: IpAddr) -> bool {
    pidgr_workflows::definition::classify_ip(address, &UrlPolicy::STRICT).is_ok()
}

#[tokio::test]
async fn a_mixed_answer_is_refused_even_when_one_address_is_reachable() {
    // Under the development policy 127.0.0.1 may be contacted and a receiver listens there;
    // the private address in the same answer still makes the whole call fail.
    let listener = tripwire().await;
    let url = format!("http://receiver.localhost:{}/", port_of(&listener));
    let client = client(
        UrlPolicy::DEVELOPMENT,
        StaticResolver::new().with("receiver.localhost", [ip("127.0.0.1"), ip("192.168.1.10")]),
    );

    let error = post(&client, &url).await.unwrap_err();

    assert!(
        matches!(error, OutboundError::BlockedAddress { ip: blocked, reason: BlockedReason::Private, .. } if blocked == ip("192.168.1.10")),
        "{error:?}"
    );
    assert!(!has_pending_connection(&listener).await);
}

#[tokio::test]
async fn the_connection_goes_to_the_checked_address_with_the_original_host_name() {
    // The client asks only the injected resolver (plain HTTP under the development policy
    // goes only to local names), so reaching the receiver proves the connection used the
    // checked address, with the URL's host name kept in the request.
    let mut server = receiver(answer(200, "ok")).await;
    let client = client(
        UrlPolicy::DEVELOPMENT,
        StaticResolver::new().with("receiver.localhost", [ip("127.0.0.1")]),
    );
    let url = format!("http://Receiver.LOCALHOST:{}/x", server.port());

    let response = post(&client, &url).await.unwrap();

    assert_eq!(response.status, 200);
    let received = server.taken();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].target, "/x");
    assert_eq!(
        received[0].header("host"),
        Some(format!("receiver.localhost:{}", server.port()).as_str())
    );
}

#[tokio::test]
async fn the_name_is_resolved_and_checked_again_at_every_send() {
    // First answer harmless, then the name is re-pointed at a private address.
    let mut server = receiver(answer(200, "ok")).await;
    let (resolver, lookups) =
        ScriptedResolver::new(vec![vec![ip("127.0.0.1")], vec![ip("10.0.0.1")]]);
    let client = client(UrlPolicy::DEVELOPMENT, resolver);
    let url = format!("http://receiver.localhost:{}/", server.port());

    post(&client, &url).await.unwrap();
    let error = post(&client, &url).await.unwrap_err();

    assert!(
        matches!(
            error,
            OutboundError::BlockedAddress {
                reason: BlockedReason::Private,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(lookups.load(Ordering::SeqCst), 2);
    assert_eq!(server.taken().len(), 1, "only the first send arrived");
}

#[tokio::test]
async fn https_keeps_the_original_name_for_tls() {
    // The receiver reads the TLS ClientHello and records the server name (SNI) it carries:
    // the connection went to 127.0.0.1, but the name sent is the URL's.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = port_of(&listener);
    let (tx, mut names) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut header = [0u8; 5];
        stream.read_exact(&mut header).await.unwrap();
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let mut record = vec![0; length];
        stream.read_exact(&mut record).await.unwrap();
        let _ = tx.send((header[0], server_name(&record)));
        // Hang up: the handshake fails on the client's side.
    });
    let client = client(
        UrlPolicy::DEVELOPMENT,
        StaticResolver::new().with("receiver.test", [ip("127.0.0.1")]),
    );

    let error = post(&client, &format!("https://receiver.test:{port}/"))
        .await
        .unwrap_err();

    assert!(matches!(error, OutboundError::Connect(_)), "{error:?}");
    assert!(error.is_retryable());
    let (content_type, name) = names.try_recv().unwrap();
    assert_eq!(content_type, 22, "a TLS handshake record");
    assert_eq!(name.as_deref(), Some("receiver.test"));
}

/// The server name from a TLS ClientHello handshake message (RFC 8446 §4.1.2, RFC 6066 §3).
fn server_name(message: &[u8]) -> Option<String> {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if data.len() < n {
            return None;
        }
        let (head, tail) = data.split_at(n);
        *data = tail;
        Some(head)
    }
    fn length(data: &mut &[u8], width: usize) -> Option<usize> {
        Some(
            take(data, width)?
                .iter()
                .fold(0, |acc, b| acc << 8 | usize::from(*b)),
        )
    }
    let mut data = message;
    if take(&mut data, 1)? != [1] {
        return None; // not a ClientHello
    }
    length(&mut data, 3)?;
    take(&mut data, 2 + 32)?; // legacy version, random
    let n = length(&mut data, 1)?;
    take(&mut data, n)?; // session id
    let n = length(&mut data, 2)?;
    take(&mut data, n)?; // cipher suites
    let n = length(&mut data, 1)?;
    take(&mut data, n)?; // compression methods
    let n = length(&mut data, 2)?;
    let mut extensions = take(&mut data, n)?;
    while !extensions.is_empty() {
        let kind = length(&mut extensions, 2)?;
        let n = length(&mut extensions, 2)?;
        let mut body = take(&mut extensions, n)?;
        if kind == 0 {
            length(&mut body, 2)?; // list length
            take(&mut body, 1)?; // name type: host_name
            let n = length(&mut body, 2)?;
            return String::from_utf8(take(&mut body, n)?.to_vec()).ok();
        }
    }
    None
}

#[tokio::test]
async fn dns_failures_are_retryable() {
    let client = client(
        UrlPolicy::STRICT,
        StaticResolver::new().with("empty.test", []),
    );
    for (url, host) in [
        ("https://unknown.test/", "unknown.test"),
        ("https://empty.test/", "empty.test"),
    ] {
        let error = post(&client, url).await.unwrap_err();
        assert!(
            matches!(&error, OutboundError::Dns { host: h, .. } if h == host),
            "{url}: {error:?}"
        );
        assert!(error.is_retryable());
    }
}

// ---------------------------------------------------------------------------------------------
// Answers and transport failures

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let target = tripwire().await;
    let location = format!("http://127.0.0.1:{}/elsewhere", port_of(&target));
    let mut server = receiver(Reply::Answer {
        status: 302,
        extra: format!("location: {location}\r\n"),
        body: Vec::new(),
    })
    .await;
    let url = format!("http://127.0.0.1:{}/", server.port());

    let error = post(&dev_client(), &url).await.unwrap_err();

    assert!(
        matches!(error, OutboundError::Status { status: 302, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(server.taken().len(), 1);
    assert!(
        !has_pending_connection(&target).await,
        "the redirect target saw nothing"
    );
}

#[tokio::test]
async fn error_statuses_carry_a_short_excerpt_and_say_whether_to_retry() {
    for (status, retryable) in [
        (500, true),
        (503, true),
        (429, true),
        (400, false),
        (404, false),
    ] {
        let mut server = receiver(answer(
            status,
            &format!("failure {status}\n{}", "x".repeat(1000)),
        ))
        .await;
        let url = format!("http://127.0.0.1:{}/", server.port());

        let error = post(&dev_client(), &url).await.unwrap_err();

        match &error {
            OutboundError::Status {
                status: got,
                body_excerpt,
            } => {
                assert_eq!(*got, status);
                assert!(body_excerpt.starts_with(&format!("failure {status} xxx")));
                assert_eq!(body_excerpt.chars().count(), 200);
            }
            other => panic!("{status}: {other:?}"),
        }
        assert_eq!(error.is_retryable(), retryable, "{status}");
        assert_eq!(
            server.taken().len(),
            1,
            "{status}: sent once, no retry inside the client"
        );
    }
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let mut server = receiver(Reply::Silent).await;
    let url = format!("http://127.0.0.1:{}/", server.port());
    let timeout = Duration::from_millis(200);

    let error = dev_client()
        .post_json(&url, &no_headers(), b"{}".to_vec(), timeout)
        .await
        .unwrap_err();

    assert!(
        matches!(error, OutboundError::TimedOut(t) if t == timeout),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(
        server.taken().len(),
        1,
        "the request was delivered, the answer never came"
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_retryable_connect_error() {
    let listener = tripwire().await;
    let port = port_of(&listener);
    drop(listener);

    let error = post(&dev_client(), &format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap_err();

    assert!(matches!(error, OutboundError::Connect(_)), "{error:?}");
    assert!(error.is_retryable());
}

// ---------------------------------------------------------------------------------------------
// Configuration and classification

#[test]
fn defaults_are_strict_with_64_kib_answers() {
    let config = OutboundConfig::default();
    assert_eq!(config.policy, UrlPolicy::STRICT);
    assert_eq!(config.max_response_bytes, 64 * 1024);
    let client = OutboundClient::new(config).unwrap();
    assert_eq!(client.policy(), UrlPolicy::STRICT);
    assert!(!format!("{client:?}").is_empty());
}

#[test]
fn retryable_table() {
    use OutboundError::*;
    let status = |status| Status {
        status,
        body_excerpt: String::new(),
    };
    let table: Vec<(OutboundError, bool)> = vec![
        (BlockedUrl(UrlRejection::InsecureScheme), false),
        (
            BlockedAddress {
                host: "hooks.test".into(),
                ip: ip("10.0.0.1"),
                reason: BlockedReason::Private,
            },
            false,
        ),
        (
            Dns {
                host: "hooks.test".into(),
                message: "no such host".into(),
            },
            true,
        ),
        (TimedOut(Duration::from_secs(5)), true),
        (Connect("connection refused".into()), true),
        (Other("connection reset".into()), true),
        (status(500), true),
        (status(502), true),
        (status(503), true),
        (status(504), true),
        (status(599), true),
        (status(408), true),
        (status(425), true),
        (status(429), true),
        (status(301), false),
        (status(302), false),
        (status(304), false),
        (status(307), false),
        (status(308), false),
        (status(400), false),
        (status(401), false),
        (status(403), false),
        (status(404), false),
        (status(409), false),
        (status(410), false),
        (status(413), false),
        (status(422), false),
        (status(100), false),
    ];
    for (error, retryable) in table {
        assert_eq!(error.is_retryable(), retryable, "{error:?}");
    }
}
