//! The static half of the SSRF rules (the README's "SSRF rules"): which URLs Pidgr may POST to.
//!
//! [`check_url`] is a small, strict URL splitter. It accepts only plain-ASCII absolute
//! `https://` URLs (plain `http://` only to loopback, with the development allowance) without
//! user names, fragments, backslashes or percent-encoded hosts, and it decodes every literal
//! IPv4 form the way a WHATWG URL parser or `inet_aton` does (`2130706433`, `0177.0.0.1`,
//! `0x7f.1`, `127.1`), so that the address checked is the address a HTTP client would connect
//! to.
//! [`classify_ip`] decides whether an address may be contacted; the outbound client applies it
//! again to every address a host name resolves to, at every send.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::quoted;

/// The longest URL accepted, in characters.
pub const MAX_URL_LEN: usize = 2048;

/// Host names that always mean this machine, besides `localhost` and `*.localhost`.
const LOCAL_NAMES: [&str; 4] = [
    "localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
];

/// How strict the SSRF rules are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlPolicy {
    /// Development setting: allows loopback destinations (`127.0.0.0/8`, `::1`, `localhost`)
    /// so local receivers can be used, and plain `http://` to them only. Every other host
    /// still needs `https://`, and private ranges stay blocked.
    pub allow_insecure_loopback: bool,
}

impl UrlPolicy {
    /// The production policy: HTTPS only, no loopback.
    pub const STRICT: UrlPolicy = UrlPolicy {
        allow_insecure_loopback: false,
    };
    /// The development policy: also plain HTTP and loopback.
    pub const DEVELOPMENT: UrlPolicy = UrlPolicy {
        allow_insecure_loopback: true,
    };
}

/// Why an IP address may not be contacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockedReason {
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `10/8`, `172.16/12`, `192.168/16`, `fc00::/7`.
    Private,
    /// Carrier-grade NAT, `100.64.0.0/10`.
    SharedAddressSpace,
    /// `169.254/16`, `fe80::/10` (cloud metadata services live here).
    LinkLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18/15`, `2001:2::/48`.
    Benchmarking,
    /// `240/4`, `192.0.0/24`, `192.88.99/24`, `2001::/23`, `5f00::/16` and everything outside
    /// the IPv6 global unicast range `2000::/3`.
    Reserved,
    /// The IPv6 discard range `100::/64`.
    Discard,
    /// The deprecated IPv6 site-local range `fec0::/10`.
    SiteLocal,
    /// Teredo tunnels (`2001::/32`) and the local-use translation prefix `64:ff9b:1::/48`.
    Tunnel,
}

impl fmt::Display for BlockedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockedReason::Loopback => {
                "it is a loopback address (127.0.0.0/8 or ::1), which leads back to the server itself"
            }
            BlockedReason::Unspecified => {
                "it is an unspecified address (0.0.0.0/8 or ::), which leads back to the server itself"
            }
            BlockedReason::Private => {
                "it is a private network address (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or fc00::/7)"
            }
            BlockedReason::SharedAddressSpace => {
                "it is a carrier-grade NAT address (100.64.0.0/10), which is not public"
            }
            BlockedReason::LinkLocal => {
                "it is a link-local address (169.254.0.0/16 or fe80::/10), where cloud metadata services live"
            }
            BlockedReason::Multicast => "it is a multicast address",
            BlockedReason::Broadcast => "it is the broadcast address",
            BlockedReason::Documentation => "it is reserved for documentation and examples",
            BlockedReason::Benchmarking => "it is reserved for network benchmarking",
            BlockedReason::Reserved => "it is in a reserved range that is not publicly reachable",
            BlockedReason::Discard => "it is in the IPv6 discard range (100::/64)",
            BlockedReason::SiteLocal => "it is a deprecated IPv6 site-local address (fec0::/10)",
            BlockedReason::Tunnel => {
                "it is a tunnelling or local translation address (Teredo or 64:ff9b:1::/48)"
            }
        })
    }
}

/// The host part of a checked URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, lower-cased, without a trailing dot.
    Domain(String),
    /// A literal address, decoded from whatever form the URL used.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// A URL that passed the static checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedUrl {
    /// `https`, or `http` under the development allowance; lower case.
    pub scheme: String,
    pub host: Host,
    /// The explicit port, or 443 / 80 by scheme.
    pub port: u16,
    /// Starts with `/`; `/` when the URL had no path.
    pub path_and_query: String,
    /// The URL as given.
    pub original: String,
}

impl CheckedUrl {
    /// The URL rebuilt from its checked parts, with the host in its decoded form
    /// (`https://127.0.0.1:443/` for `https://0x7f.1/`).
    pub fn normalized(&self) -> String {
        format!(
            "{}://{}:{}{}",
            self.scheme, self.host, self.port, self.path_and_query
        )
    }
}

/// Why a URL was refused. The `Display` text is a plain sentence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlRejection {
    #[error("the address is empty")]
    Empty,
    #[error("the address is {0} characters long, but at most 2048 are allowed")]
    TooLong(usize),
    #[error("the address {0}")]
    Malformed(&'static str),
    #[error("the address must start with https://, not {}://", quoted(.0))]
    UnsupportedScheme(String),
    #[error(
        "the address must use https://; plain http:// is only allowed in development, to a \
         receiver on this machine (127.0.0.1, ::1 or localhost)"
    )]
    InsecureScheme,
    #[error("the address must not contain a user name or password (the part before @)")]
    Userinfo,
    #[error("the address must not contain a # fragment, which would never be sent")]
    Fragment,
    #[error("the address has no host name")]
    MissingHost,
    #[error("the host {} is not valid: {reason}", quoted(.host))]
    InvalidHost { host: String, reason: &'static str },
    #[error("the port {} is not valid: it must be a number from 1 to 65535", quoted(.0))]
    InvalidPort(String),
    #[error("the host {} is not allowed: it names this server itself", quoted(.0))]
    Localhost(String),
    #[error("the host {ip} is not allowed: {reason}")]
    BlockedAddress { ip: IpAddr, reason: BlockedReason },
}

/// Whether `ip` may be contacted under `policy`. The allowance permits only loopback.
pub fn classify_ip(ip: IpAddr, policy: &UrlPolicy) -> Result<(), BlockedReason> {
    let reason = match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    };
    match reason {
        None => Ok(()),
        Some(BlockedReason::Loopback) if policy.allow_insecure_loopback => Ok(()),
        Some(reason) => Err(reason),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<BlockedReason> {
    use BlockedReason::*;
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => Unspecified,
        (10, _, _) => Private,
        (100, _, _) if b & 0xc0 == 64 => SharedAddressSpace,
        (127, _, _) => Loopback,
        (169, 254, _) => LinkLocal,
        (172, _, _) if b & 0xf0 == 16 => Private,
        (192, 0, 0) => Reserved,
        (192, 0, 2) => Documentation,
        (192, 88, 99) => Reserved,
        (192, 168, _) => Private,
        (198, _, _) if b & 0xfe == 18 => Benchmarking,
        (198, 51, 100) => Documentation,
        (203, 0, 113) => Documentation,
        _ if ip == Ipv4Addr::BROADCAST => Broadcast,
        (224..=239, _, _) => Multicast,
        (240..=255, _, _) => Reserved,
        _ => return None,
    })
}

fn v4_from(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))
}

fn v6_reason(ip: Ipv6Addr) -> Option<BlockedReason> {
    use BlockedReason::*;
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    let embedded_tail = || v4_from(s[6], s[7]);
    match s {
        // IPv4-mapped ::ffff:a.b.c.d
        [0, 0, 0, 0, 0, 0xffff, _, _]
        // IPv4-translated ::ffff:0:a.b.c.d
        | [0, 0, 0, 0, 0xffff, 0, _, _]
        // IPv4-compatible ::a.b.c.d (deprecated)
        | [0, 0, 0, 0, 0, 0, _, _]
        // NAT64 well-known prefix 64:ff9b::/96
        | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => return v4_reason(embedded_tail()),
        // Local-use NAT64 64:ff9b:1::/48: the embedding depends on the operator's prefix.
        [0x64, 0xff9b, 1, ..] => return Some(Tunnel),
        // 6to4 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
        [0x2002, high, low, ..] => return v4_reason(v4_from(high, low)),
        // Teredo 2001:0::/32: server address, then the client address inverted.
        [0x2001, 0, server_high, server_low, _, _, client_high, client_low] => {
            let embedded = v4_reason(v4_from(server_high, server_low))
                .or_else(|| v4_reason(v4_from(!client_high, !client_low)));
            return Some(embedded.unwrap_or(Tunnel));
        }
        _ => {}
    }
    Some(match s[0] {
        0xfe80..=0xfebf => LinkLocal,
        0xfec0..=0xfeff => SiteLocal,
        0xfc00..=0xfdff => Private,
        0xff00..=0xffff => Multicast,
        0x0100 if s[1..4] == [0, 0, 0] => Discard,
        0x2001 if s[1] == 0x0db8 => Documentation,
        0x3fff if s[1] < 0x1000 => Documentation,
        0x2001 if s[1] == 2 && s[2] == 0 => Benchmarking,
        0x2001 if s[1] < 0x0200 => Reserved,
        0x5f00 => Reserved,
        0x2000..=0x3fff => return None,
        _ => Reserved,
    })
}

/// Checks a URL statically: its shape, its scheme and, for literal addresses, the address.
/// Host names are checked again on their resolved addresses when something is sent.
pub fn check_url(url: &str, policy: &UrlPolicy) -> Result<CheckedUrl, UrlRejection> {
    if url.is_empty() {
        return Err(UrlRejection::Empty);
    }
    let length = url.chars().count();
    if length > MAX_URL_LEN {
        return Err(UrlRejection::TooLong(length));
    }
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(UrlRejection::Malformed(
            "contains spaces, line breaks or other control characters",
        ));
    }
    if !url.is_ascii() {
        return Err(UrlRejection::Malformed(
            "contains characters outside plain ASCII: write international host names in their \
             xn-- form and percent-encode the rest",
        ));
    }
    if url.contains('\\') {
        return Err(UrlRejection::Malformed("contains a backslash"));
    }
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(UrlRejection::Malformed(
            "is not a full web address: it must start with https://",
        ));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(UrlRejection::Malformed(
            "is not a full web address: it must start with https://",
        ));
    }
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" if policy.allow_insecure_loopback => 80,
        "http" => return Err(UrlRejection::InsecureScheme),
        _ => return Err(UrlRejection::UnsupportedScheme(scheme)),
    };
    let Some(rest) = rest.strip_prefix("//") else {
        return Err(UrlRejection::Malformed(
            "is not a full web address: the scheme must be followed by //",
        ));
    };
    if rest.contains('#') {
        return Err(UrlRejection::Fragment);
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(UrlRejection::Userinfo);
    }
    if authority.is_empty() {
        return Err(UrlRejection::MissingHost);
    }
    let (host, port) = split_host_port(authority)?;
    let port = match port {
        None => default_port,
        Some(text) => parse_port(text)?,
    };
    let host = parse_host(host)?;
    if scheme == "http" && !is_loopback_host(&host) {
        // Plain HTTP is a development convenience for receivers on this machine; anywhere
        // else it would send signed events in the clear.
        return Err(UrlRejection::InsecureScheme);
    }
    match &host {
        Host::Ip(ip) => {
            classify_ip(*ip, policy)
                .map_err(|reason| UrlRejection::BlockedAddress { ip: *ip, reason })?;
        }
        Host::Domain(name) => {
            if is_local_name(name) && !policy.allow_insecure_loopback {
                return Err(UrlRejection::Localhost(name.clone()));
            }
        }
    }
    check_percent_escapes(tail)?;
    let path_and_query = if tail.starts_with('/') {
        tail.to_string()
    } else {
        format!("/{tail}")
    };
    Ok(CheckedUrl {
        scheme,
        host,
        port,
        path_and_query,
        original: url.to_string(),
    })
}

/// Whether the host is this machine: a loopback address or a name that always means it.
fn is_loopback_host(host: &Host) -> bool {
    match host {
        Host::Ip(ip) => ip.to_canonical().is_loopback(),
        Host::Domain(name) => is_local_name(name),
    }
}

/// Whether a lower-cased host name (without trailing dot) always means this machine.
fn is_local_name(name: &str) -> bool {
    LOCAL_NAMES.contains(&name) || name.ends_with(".localhost")
}

fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), UrlRejection> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((inner, after)) = bracketed.split_once(']') else {
            return Err(UrlRejection::InvalidHost {
                host: authority.to_string(),
                reason: "an IPv6 address in [ ] has no closing ]",
            });
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => {
                    return Err(UrlRejection::InvalidHost {
                        host: authority.to_string(),
                        reason: "only a :port may follow an IPv6 address in [ ]",
                    });
                }
            },
        };
        // Keep the brackets so parse_host knows this is an IPv6 literal.
        return Ok((&authority[..inner.len() + 2], port));
    }
    match authority.split_once(':') {
        None => Ok((authority, None)),
        Some((host, port)) => Ok((host, Some(port))),
    }
}

fn parse_port(text: &str) -> Result<u16, UrlRejection> {
    let bad = || UrlRejection::InvalidPort(text.to_string());
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(bad()),
    }
}

fn parse_host(host: &str) -> Result<Host, UrlRejection> {
    let invalid = |reason| UrlRejection::InvalidHost {
        host: host.to_string(),
        reason,
    };
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| invalid("it is not a valid IPv6 address"));
    }
    if host.is_empty() {
        return Err(UrlRejection::MissingHost);
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(invalid(
            "a host name may only contain letters, digits, hyphens, underscores and dots",
        ));
    }
    let lower = host.to_ascii_lowercase();
    // One trailing dot is the DNS root and is allowed by URL parsers; it changes nothing.
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return Err(invalid("it has an empty part between dots"));
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if ends_in_number(last) {
        return parse_ipv4_literal(name)
            .map(|ip| Host::Ip(IpAddr::V4(ip)))
            .ok_or_else(|| invalid("it looks like an IPv4 address but is not a valid one"));
    }
    if name.len() > 253 || name.split('.').any(|label| label.len() > 63) {
        return Err(invalid(
            "it is longer than DNS allows (253 characters, 63 between dots)",
        ));
    }
    Ok(Host::Domain(name.to_string()))
}

/// The WHATWG "ends in a number" test: a host whose last label is a number is an IPv4 address
/// (or invalid), never a domain name.
fn ends_in_number(label: &str) -> bool {
    if !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
    {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// One part of a WHATWG / `inet_aton` IPv4 address: decimal, `0x` hex, or `0`-prefixed octal.
fn parse_ipv4_number(part: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if part.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for c in digits.chars() {
        let digit = u64::from(c.to_digit(radix)?);
        value = value.checked_mul(radix.into())?.checked_add(digit)?;
    }
    Some(value)
}

/// Decodes every IPv4 form a browser accepts: `a.b.c.d`, `a.b.c` (c is 16 bits), `a.b`
/// (b is 24 bits), `a` (32 bits), each part decimal, octal or hex.
fn parse_ipv4_literal(name: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let numbers = parts
        .iter()
        .map(|part| parse_ipv4_number(part))
        .collect::<Option<Vec<u64>>>()?;
    let (last, leading) = numbers.split_last()?;
    if leading.iter().any(|n| *n > 255) {
        return None;
    }
    let last_bits = 8 * (5 - numbers.len()) as u32;
    if *last >= 1u64 << last_bits {
        return None;
    }
    let mut address = *last;
    for (i, n) in leading.iter().enumerate() {
        address += n << (8 * (3 - i));
    }
    u32::try_from(address).ok().map(Ipv4Addr::from)
}

fn check_percent_escapes(text: &str) -> Result<(), UrlRejection> {
    let bytes = text.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(UrlRejection::Malformed(
                "has a % sign that is not followed by two hexadecimal digits",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STRICT: UrlPolicy = UrlPolicy::STRICT;
    const DEV: UrlPolicy = UrlPolicy::DEVELOPMENT;

    fn blocked(url: &str) -> Option<BlockedReason> {
        match check_url(url, &STRICT) {
            Err(UrlRejection::BlockedAddress { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn rejected_forms() {
        use BlockedReason::*;
        // (url, what the rejection must be)
        enum Want {
            Blocked(BlockedReason),
            Other(fn(&UrlRejection) -> bool),
        }
        use Want::*;
        let table: Vec<(&str, Want)> = vec![
            ("", Other(|r| *r == UrlRejection::Empty)),
            (
                "http://hooks.example.com/x",
                Other(|r| *r == UrlRejection::InsecureScheme),
            ),
            (
                "HTTP://hooks.example.com/x",
                Other(|r| *r == UrlRejection::InsecureScheme),
            ),
            (
                "ftp://hooks.example.com/x",
                Other(|r| matches!(r, UrlRejection::UnsupportedScheme(s) if s == "ftp")),
            ),
            (
                "file:///etc/passwd",
                Other(|r| matches!(r, UrlRejection::UnsupportedScheme(_))),
            ),
            (
                "gopher://127.0.0.1:25/",
                Other(|r| matches!(r, UrlRejection::UnsupportedScheme(_))),
            ),
            (
                "hooks.example.com/x",
                Other(|r| matches!(r, UrlRejection::Malformed(_))),
            ),
            (
                "https:/hooks.example.com",
                Other(|r| matches!(r, UrlRejection::Malformed(_))),
            ),
            (
                "https:hooks.example.com",
                Other(|r| matches!(r, UrlRejection::Malformed(_))),
            ),
            (
                "//hooks.example.com/x",
                Other(|r| matches!(r, UrlRejection::Malformed(_))),
            ),
            ("https:///x", Other(|r| *r == UrlRejection::MissingHost)),
            ("https://", Other(|r| *r == UrlRejection::MissingHost)),
            ("https://:443/", Other(|r| *r == UrlRejection::MissingHost)),
            (
                "https://user:pass@hooks.example.com/",
                Other(|r| *r == UrlRejection::Userinfo),
            ),
            (
                "https://hooks.example.com@127.0.0.1/",
                Other(|r| *r == UrlRejection::Userinfo),
            ),
            (
                "https://@hooks.example.com/",
                Other(|r| *r == UrlRejection::Userinfo),
            ),
            (
                "https://hooks.example.com/x#frag",
                Other(|r| *r == UrlRejection::Fragment),
            ),
            (
                "https://hooks.example.com\\@127.0.0.1/",
                Other(|r| matches!(r, UrlRejection::Malformed(_))),
            ),
            (
                "https://hooks.example.com /x",
                Other(|r| matches!(r, UrlRejection::Malformed(_))),
            ),
            (
                " https://hooks.example.com/",
                Other(|r| matches!(r, UrlRejection::Malformed(_))),
            ),
            (
                "https://hooks.example.com/\r\nX: y",
                Other(|r| matches!(r, UrlRejection::Malformed(_))),
            ),
            (
                "https://hooks.exa\tmple.com/",
                Other(|r| matches!(r, UrlRejection::Malformed(_))),
            ),
            (
                "https://bücher.example/",
                Other(|r| matches!(r, UrlRejection::Malformed(_))),
            ),
            (
                "https://hooks.example.com/%zz",
                Other(|r| matches!(r, UrlRejection::Malformed(_))),
            ),
            (
                "https://hooks.example.com:0/",
                Other(|r| matches!(r, UrlRejection::InvalidPort(_))),
            ),
            (
                "https://hooks.example.com:65536/",
                Other(|r| matches!(r, UrlRejection::InvalidPort(_))),
            ),
            (
                "https://hooks.example.com:/",
                Other(|r| matches!(r, UrlRejection::InvalidPort(_))),
            ),
            (
                "https://hooks.example.com:44a3/",
                Other(|r| matches!(r, UrlRejection::InvalidPort(_))),
            ),
            (
                "https://hooks.example.com:443:443/",
                Other(|r| matches!(r, UrlRejection::InvalidPort(_))),
            ),
            (
                "https://%31%32%37.0.0.1/",
                Other(|r| matches!(r, UrlRejection::InvalidHost { .. })),
            ),
            (
                "https://hooks..example.com/",
                Other(|r| matches!(r, UrlRejection::InvalidHost { .. })),
            ),
            (
                "https://.example.com/",
                Other(|r| matches!(r, UrlRejection::InvalidHost { .. })),
            ),
            (
                "https://example.com../",
                Other(|r| matches!(r, UrlRejection::InvalidHost { .. })),
            ),
            (
                "https://1.2.3.256/",
                Other(|r| matches!(r, UrlRejection::InvalidHost { .. })),
            ),
            (
                "https://1.2.3.4.5/",
                Other(|r| matches!(r, UrlRejection::InvalidHost { .. })),
            ),
            (
                "https://08.1.1.1/",
                Other(|r| matches!(r, UrlRejection::InvalidHost { .. })),
            ),
            (
                "https://example.123/",
                Other(|r| matches!(r, UrlRejection::InvalidHost { .. })),
            ),
            (
                "https://4294967296/",
                Other(|r| matches!(r, UrlRejection::InvalidHost { .. })),
            ),
            (
                "https://[::1/",
                Other(|r| matches!(r, UrlRejection::InvalidHost { .. })),
            ),
            (
                "https://[::1]x/",
                Other(|r| matches!(r, UrlRejection::InvalidHost { .. })),
            ),
            (
                "https://[fe80::1%25eth0]/",
                Other(|r| matches!(r, UrlRejection::InvalidHost { .. })),
            ),
            (
                "https://[127.0.0.1]/",
                Other(|r| matches!(r, UrlRejection::InvalidHost { .. })),
            ),
            (
                "https://localhost/",
                Other(|r| matches!(r, UrlRejection::Localhost(_))),
            ),
            (
                "https://LOCALHOST/",
                Other(|r| matches!(r, UrlRejection::Localhost(_))),
            ),
            (
                "https://localhost./",
                Other(|r| matches!(r, UrlRejection::Localhost(_))),
            ),
            (
                "https://api.localhost/",
                Other(|r| matches!(r, UrlRejection::Localhost(_))),
            ),
            (
                "https://Foo.LocalHost.:8443/",
                Other(|r| matches!(r, UrlRejection::Localhost(_))),
            ),
            (
                "https://localhost.localdomain/",
                Other(|r| matches!(r, UrlRejection::Localhost(_))),
            ),
            (
                "https://ip6-localhost/",
                Other(|r| matches!(r, UrlRejection::Localhost(_))),
            ),
            ("https://127.0.0.1/", Blocked(Loopback)),
            ("https://127.0.0.1./", Blocked(Loopback)),
            ("https://127.1/", Blocked(Loopback)),
            ("https://127.0.1/", Blocked(Loopback)),
            ("https://2130706433/", Blocked(Loopback)),
            ("https://0177.0.0.1/", Blocked(Loopback)),
            ("https://0x7f.1/", Blocked(Loopback)),
            ("https://0x7F000001/", Blocked(Loopback)),
            ("https://0X7f.0.0.1/", Blocked(Loopback)),
            ("https://017700000001/", Blocked(Loopback)),
            ("https://0x7f.0x0.0.01/", Blocked(Loopback)),
            ("https://127.000.000.001/", Blocked(Loopback)),
            ("https://[::1]/", Blocked(Loopback)),
            ("https://[0:0:0:0:0:0:0:1]:8443/", Blocked(Loopback)),
            ("https://[::ffff:127.0.0.1]/", Blocked(Loopback)),
            ("https://[::ffff:7f00:1]/", Blocked(Loopback)),
            ("https://[::127.0.0.1]/", Blocked(Loopback)),
            ("https://[::ffff:0:127.0.0.1]/", Blocked(Loopback)),
            ("https://[64:ff9b::127.0.0.1]/", Blocked(Loopback)),
            ("https://[2002:7f00:1::]/", Blocked(Loopback)),
            ("https://0.0.0.0/", Blocked(Unspecified)),
            ("https://0/", Blocked(Unspecified)),
            ("https://0x0/", Blocked(Unspecified)),
            ("https://[::]/", Blocked(Unspecified)),
            ("https://10.0.0.1/", Blocked(Private)),
            ("https://012.1/", Blocked(Private)),
            ("https://172.16.0.1/", Blocked(Private)),
            ("https://172.31.255.255/", Blocked(Private)),
            ("https://192.168.1.1/", Blocked(Private)),
            ("https://3232235777/", Blocked(Private)),
            ("https://[fc00::1]/", Blocked(Private)),
            ("https://[fd12:3456::1]/", Blocked(Private)),
            ("https://[::ffff:10.1.2.3]/", Blocked(Private)),
            ("https://[::ffff:a01:203]/", Blocked(Private)),
            ("https://[2002:c0a8:101::1]/", Blocked(Private)),
            (
                "https://169.254.169.254/latest/meta-data/",
                Blocked(LinkLocal),
            ),
            ("https://0xa9fea9fe/", Blocked(LinkLocal)),
            ("https://2852039166/", Blocked(LinkLocal)),
            ("https://[fe80::1]/", Blocked(LinkLocal)),
            ("https://[::ffff:169.254.169.254]/", Blocked(LinkLocal)),
            ("https://[64:ff9b::a9fe:a9fe]/", Blocked(LinkLocal)),
            ("https://100.64.0.1/", Blocked(SharedAddressSpace)),
            ("https://100.127.255.255/", Blocked(SharedAddressSpace)),
            ("https://224.0.0.1/", Blocked(Multicast)),
            ("https://239.255.255.250/", Blocked(Multicast)),
            ("https://[ff02::1]/", Blocked(Multicast)),
            ("https://255.255.255.255/", Blocked(Broadcast)),
            ("https://240.0.0.1/", Blocked(Reserved)),
            ("https://192.0.0.8/", Blocked(Reserved)),
            ("https://192.88.99.1/", Blocked(Reserved)),
            ("https://192.0.2.1/", Blocked(Documentation)),
            ("https://198.51.100.7/", Blocked(Documentation)),
            ("https://203.0.113.9/", Blocked(Documentation)),
            ("https://[2001:db8::1]/", Blocked(Documentation)),
            ("https://[3fff::1]/", Blocked(Documentation)),
            ("https://198.18.0.1/", Blocked(Benchmarking)),
            ("https://198.19.255.1/", Blocked(Benchmarking)),
            ("https://[100::1]/", Blocked(Discard)),
            ("https://[fec0::1]/", Blocked(SiteLocal)),
            ("https://[64:ff9b:1::a00:1]/", Blocked(Tunnel)),
            (
                "https://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/",
                Blocked(Tunnel),
            ),
            // The RFC 4380 example: its client address is 192.0.2.45.
            (
                "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
                Blocked(Documentation),
            ),
            // Teredo whose inverted client address is 127.0.0.1.
            ("https://[2001:0:4136:e378::80ff:fffe]/", Blocked(Loopback)),
            ("https://[5f00::1]/", Blocked(Reserved)),
            ("https://[4000::1]/", Blocked(Reserved)),
        ];
        assert!(table.len() >= 40);
        for (url, want) in table {
            let got = check_url(url, &STRICT);
            match (&want, &got) {
                (Blocked(reason), Err(UrlRejection::BlockedAddress { reason: r, .. })) => {
                    assert_eq!(r, reason, "{url}")
                }
                (Other(pred), Err(rejection)) => assert!(pred(rejection), "{url}: {rejection:?}"),
                _ => panic!("{url}: unexpected {got:?}"),
            }
            // Every rejection reads as a sentence.
            let text = got.unwrap_err().to_string();
            assert!(text.starts_with("the "), "{url}: {text}");
        }
    }

    #[test]
    fn too_long_is_rejected() {
        let url = format!("https://hooks.example.com/{}", "a".repeat(2048));
        assert!(matches!(
            check_url(&url, &STRICT),
            Err(UrlRejection::TooLong(_))
        ));
        let url = format!("https://hooks.example.com/{}", "a".repeat(2048 - 26));
        assert_eq!(url.len(), 2048);
        assert!(check_url(&url, &STRICT).is_ok());
    }

    #[test]
    fn accepted_forms() {
        let table: &[(&str, Host, u16, &str)] = &[
            (
                "https://hooks.example.com/pidgr",
                Host::Domain("hooks.example.com".into()),
                443,
                "/pidgr",
            ),
            (
                "HTTPS://Hooks.Example.COM",
                Host::Domain("hooks.example.com".into()),
                443,
                "/",
            ),
            (
                "https://hooks.example.com.:8443/a/b?c=d&e=%20",
                Host::Domain("hooks.example.com".into()),
                8443,
                "/a/b?c=d&e=%20",
            ),
            (
                "https://hooks.example.com?x=1",
                Host::Domain("hooks.example.com".into()),
                443,
                "/?x=1",
            ),
            (
                "https://8.8.8.8/",
                Host::Ip("8.8.8.8".parse().unwrap()),
                443,
                "/",
            ),
            (
                "https://134744072/",
                Host::Ip("8.8.8.8".parse().unwrap()),
                443,
                "/",
            ),
            (
                "https://0x8.0x8.010.8/",
                Host::Ip("8.8.8.8".parse().unwrap()),
                443,
                "/",
            ),
            (
                "https://[2606:4700::1111]:443/x",
                Host::Ip("2606:4700::1111".parse().unwrap()),
                443,
                "/x",
            ),
            (
                "https://[::ffff:8.8.8.8]/",
                Host::Ip("::ffff:8.8.8.8".parse().unwrap()),
                443,
                "/",
            ),
            (
                "https://[2002:808:808::1]/",
                Host::Ip("2002:808:808::1".parse().unwrap()),
                443,
                "/",
            ),
            (
                "https://[64:ff9b::808:808]/",
                Host::Ip("64:ff9b::808:808".parse().unwrap()),
                443,
                "/",
            ),
            (
                "https://xn--bcher-kva.example/hook",
                Host::Domain("xn--bcher-kva.example".into()),
                443,
                "/hook",
            ),
            (
                "https://my_hooks.example.com/",
                Host::Domain("my_hooks.example.com".into()),
                443,
                "/",
            ),
            (
                "https://172.32.0.1/",
                Host::Ip("172.32.0.1".parse().unwrap()),
                443,
                "/",
            ),
            (
                "https://100.128.0.1/",
                Host::Ip("100.128.0.1".parse().unwrap()),
                443,
                "/",
            ),
            (
                "https://0x7f.example.com/",
                Host::Domain("0x7f.example.com".into()),
                443,
                "/",
            ),
        ];
        for (url, host, port, path) in table {
            let checked = check_url(url, &STRICT).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(&checked.host, host, "{url}");
            assert_eq!(checked.port, *port, "{url}");
            assert_eq!(checked.path_and_query, *path, "{url}");
            assert_eq!(checked.original, *url);
            assert_eq!(checked.scheme, "https");
        }
    }

    #[test]
    fn development_allowance_permits_loopback_and_plain_http_only_to_loopback() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://localhost:3000/",
            "http://api.localhost/",
            "http://[::1]:9000/",
            "http://0x7f.1/",
            "https://0x7f.1/",
            "https://hooks.example.com/",
        ] {
            assert!(check_url(url, &DEV).is_ok(), "{url}");
        }
        // Plain HTTP only to this machine: a public name or a private address stays refused.
        for url in [
            "http://hooks.example.com/",
            "http://example.com/",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[2606:4700::1111]/",
            "http://localhost.example.com/",
        ] {
            assert_eq!(
                check_url(url, &DEV).map(|_| ()),
                Err(UrlRejection::InsecureScheme),
                "{url}"
            );
        }
        for url in [
            "http://10.0.0.1/",
            "http://192.168.0.10/",
            "http://169.254.169.254/",
            "http://0.0.0.0/",
            "http://[fd00::1]/",
            "ftp://127.0.0.1/",
            "http://user@127.0.0.1/",
        ] {
            assert!(check_url(url, &DEV).is_err(), "{url}");
        }
        assert_eq!(classify_ip("127.0.0.1".parse().unwrap(), &DEV), Ok(()));
        assert_eq!(
            classify_ip("10.0.0.1".parse().unwrap(), &DEV),
            Err(BlockedReason::Private)
        );
    }

    #[test]
    fn classify_public_and_edges() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "100.63.255.255",
            "169.253.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:1.1.1.1",
            "2002:0101:0101::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(classify_ip(ip, &STRICT), Ok(()), "{ip}");
        }
        assert_eq!(
            blocked("https://[::ffff:192.0.2.1]/"),
            Some(BlockedReason::Documentation)
        );
    }

    #[test]
    fn blocked_message_is_plain() {
        let err = check_url("https://169.254.169.254/", &STRICT).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the host 169.254.169.254 is not allowed: it is a link-local address \
             (169.254.0.0/16 or fe80::/10), where cloud metadata services live"
        );
    }

    proptest! {
        #[test]
        fn never_panics(url in ".{0,80}") {
            let _ = check_url(&url, &STRICT);
            let _ = check_url(&url, &DEV);
        }

        #[test]
        fn never_panics_on_url_like_text(url in "(https?|HTTP|ftp)://[a-zA-Z0-9.:@\\[\\]%/?#x_-]{0,40}") {
            if let Ok(checked) = check_url(&url, &STRICT) {
                prop_assert!(checked.path_and_query.starts_with('/'));
                if let Host::Ip(ip) = checked.host {
                    prop_assert_eq!(classify_ip(ip, &STRICT), Ok(()));
                }
            }
        }

        #[test]
        fn dotted_quads_decode_like_std(a: u8, b: u8, c: u8, d: u8) {
            let ip = Ipv4Addr::new(a, b, c, d);
            prop_assert_eq!(parse_ipv4_literal(&ip.to_string()), Some(ip));
            prop_assert_eq!(parse_ipv4_literal(&u32::from(ip).to_string()), Some(ip));
            prop_assert_eq!(parse_ipv4_literal(&format!("{:#x}", u32::from(ip))), Some(ip));
            prop_assert_eq!(parse_ipv4_literal(&format!("{a}.{b}.{}", u16::from(c) << 8 | u16::from(d))), Some(ip));
            prop_assert_eq!(parse_ipv4_literal(&format!("0{:o}.{b}.{c}.{d}", a)), Some(ip));
        }
    }
}
