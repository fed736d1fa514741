//! The console's scripts and styles, embedded in the binary: nothing to install or build
//! beside it, and the Content-Security-Policy can allow `'self'` and nothing else.
//!
//! htmx is vendored at a pinned version (its name carries the version; its licence, BSD
//! Zero-Clause, is in `assets/htmx-LICENSE`). It is configured from a `<meta>` tag so that it
//! injects no inline style and evaluates no code.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Pinned: the file's SHA-256 is checked by a test, so a swap is a conscious change.
pub const HTMX: &str = "htmx-2.0.11.min.js";
const FILES: &[(&str, &str, &[u8])] = &[
    (
        HTMX,
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/htmx-2.0.11.min.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/console.css"),
    ),
];

pub async fn serve(Path(name): Path<String>) -> Response {
    let Some((_, content_type, bytes)) = FILES.iter().find(|(file, _, _)| *file == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The pinned library never changes under its name; our own files may with a release.
    let cache = if name == HTMX {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=300"
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTMX_SHA256: &str = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717";

    #[test]
    fn the_vendored_htmx_is_the_pinned_release() {
        use std::fmt::Write;
        let (_, _, bytes) = FILES.iter().find(|(name, _, _)| *name == HTMX).unwrap();
        let digest = sha256(bytes);
        let mut hex = String::new();
        for byte in digest {
            write!(hex, "{byte:02x}").unwrap();
        }
        assert_eq!(hex, HTMX_SHA256);
    }

    fn sha256(bytes: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(bytes).into()
    }
}
