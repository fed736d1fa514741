//! The plumbing both fakes share: a hyper server on `127.0.0.1:0`, one task per connection, and
//! a way for a handler to kill its connection without answering (the `ResetConnection`
//! behaviour), which a framework's router cannot do.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

pub(crate) type Reply = Response<Full<Bytes>>;
pub(crate) type Handler = Arc<
    dyn Fn(Request<Incoming>, Connection) -> Pin<Box<dyn Future<Output = Reply> + Send>>
        + Send
        + Sync,
>;

/// Which HTTP the server speaks.
#[derive(Clone, Copy)]
pub(crate) enum Protocol {
    /// HTTP/1.1 (what Google's endpoints answer a client that does not offer h2 with).
    Http1,
    /// Cleartext HTTP/2 with prior knowledge only: an HTTP/1.1 request is not understood and the
    /// connection is closed, as real APNs does.
    Http2,
}

/// The running server; stops (with all its connections) when dropped.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
    /// Nanoseconds every request waits before its handler runs.
    latency: Arc<AtomicU64>,
}

impl Server {
    pub(crate) fn set_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency.store(nanos, Ordering::Relaxed);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

/// A bound listener, so the address is known before the handler (which needs it) is built.
pub(crate) struct Bound(TcpListener);

/// Binds `127.0.0.1:port`; 0 picks a free port.
pub(crate) async fn bind_port(port: u16) -> Bound {
    Bound(
        TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|error| {
                panic!("a fake push provider could not bind 127.0.0.1:{port}: {error}")
            }),
    )
}

impl Bound {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.0
            .local_addr()
            .expect("a bound listener has a local address")
    }

    pub(crate) fn serve(self, protocol: Protocol, handler: Handler) -> Server {
        let addr = self.addr();
        let listener = self.0;
        let latency = Arc::new(AtomicU64::new(0));
        let wait = Arc::clone(&latency);
        // The wait is a timer inside the request's own future: requests, and the streams of
        // one HTTP/2 connection, wait side by side rather than one after another.
        let handler: Handler = Arc::new(move |request, connection| {
            let wait = Duration::from_nanos(wait.load(Ordering::Relaxed));
            let reply = handler(request, connection);
            Box::pin(async move {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                reply.await
            })
        });
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(serve_connection(stream, protocol, Arc::clone(&handler)));
                // Reap finished connection tasks so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
        });
        Server {
            addr,
            task,
            latency,
        }
    }
}

/// What a handler may do to its own connection.
#[derive(Clone)]
pub(crate) struct Connection {
    reset: Arc<AtomicBool>,
    kill: Arc<Notify>,
}

impl Connection {
    /// Closes the TCP connection with a reset and never answers: the returned future does not
    /// complete (it is dropped with the connection).
    pub(crate) async fn reset(&self) -> Reply {
        self.reset.store(true, Ordering::SeqCst);
        // A stored permit: the connection task sees it even if it is not waiting right now.
        self.kill.notify_one();
        std::future::pending().await
    }
}

async fn serve_connection(stream: TcpStream, protocol: Protocol, handler: Handler) {
    let connection = Connection {
        reset: Arc::new(AtomicBool::new(false)),
        kill: Arc::new(Notify::new()),
    };
    let io = TokioIo::new(ResettableStream {
        stream,
        reset: Arc::clone(&connection.reset),
    });
    let kill = Arc::clone(&connection.kill);
    let service = service_fn(move |request| {
        let reply = handler(request, connection.clone());
        async move { Ok::<_, Infallible>(reply.await) }
    });
    match protocol {
        Protocol::Http1 => {
            let serving = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            tokio::select! {
                _ = serving => {}
                _ = kill.notified() => {}
            }
        }
        Protocol::Http2 => {
            let serving = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service);
            tokio::select! {
                _ = serving => {}
                _ = kill.notified() => {}
            }
        }
    }
    // Leaving drops the connection and with it the stream: see ResettableStream's Drop.
}

/// A TCP stream that, when dropped after a reset was asked for, closes with an RST instead of a
/// FIN (zero linger), so the client sees "connection reset" rather than a clean close.
struct ResettableStream {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            // If this fails the close is a FIN instead, which the client also sees as a
            // connection closed without an answer.
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Reads the whole request body (the fakes only get small ones).
pub(crate) async fn read_body(request: Request<Incoming>) -> (hyper::http::request::Parts, Bytes) {
    use http_body_util::BodyExt;
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    (parts, bytes)
}

/// A JSON answer.
pub(crate) fn json_reply(status: u16, value: &serde_json::Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("a status and a content type make a valid response")
}

/// Decodes one base64url JWT part.
pub(crate) fn b64(part: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()
}
