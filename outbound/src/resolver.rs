//! Name resolution for the outbound client.
//!
//! The client never lets the HTTP library look names up by itself: it asks a [`NameResolver`],
//! checks every address the answer contains, and then connects only to those checked addresses.
//! Production uses [`SystemResolver`]; tests inject names with [`StaticResolver`] (or their own
//! implementation) so that rebinding attacks can be simulated without touching real DNS.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

/// What [`NameResolver::resolve`] returns: a boxed, sendable future of the resolved addresses.
pub type ResolveFuture =
    Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>>;

/// Turns a host name into socket addresses.
///
/// Object-safe on purpose (`Arc<dyn NameResolver>`), so tests and embedders can swap it without
/// generics leaking into every type that holds an `OutboundClient`. The returned future must not
/// borrow `self` or `host`.
///
/// Only the IP addresses of the answer matter: the client connects to the port of the URL,
/// whatever port the resolver put into the addresses.
pub trait NameResolver: Send + Sync + 'static {
    /// Resolves `host` (a lower-case DNS name without trailing dot, never an IP literal).
    /// `port` is the port of the URL, for resolvers that want to build socket addresses with it.
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture;
}

/// The operating system's resolver (`getaddrinfo`, through `tokio::net::lookup_host`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl NameResolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// A fixed table of names, for tests: each name answers with the addresses it was given, any
/// other name fails with [`io::ErrorKind::NotFound`]. Names are matched case-insensitively and
/// without a trailing dot.
#[derive(Clone, Debug, Default)]
pub struct StaticResolver {
    names: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// An empty table: every name fails to resolve.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the answer for `host`. An empty list makes the name resolve to nothing.
    pub fn with(mut self, host: &str, ips: impl IntoIterator<Item = IpAddr>) -> Self {
        self.names
            .insert(normalize(host), ips.into_iter().collect());
        self
    }
}

impl NameResolver for StaticResolver {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture {
        let answer = match self.names.get(&normalize(host)) {
            Some(ips) => Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the name is not in the test resolver's table",
            )),
        };
        Box::pin(std::future::ready(answer))
    }
}

fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}
