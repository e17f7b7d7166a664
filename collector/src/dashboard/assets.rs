//! The page's files, embedded in the binary: served with a content type,
//! an `ETag` (the SHA-256 of the file) and `Cache-Control: no-cache`, so a
//! browser revalidates and gets 304 until the binary changes. Hand-written
//! files, no build step; a new file of `assets/` needs its line in [`FILES`].

use std::sync::LazyLock;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// (path under `/ui/`, content type, bytes).
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("assets/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/api.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/charts.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/dom.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/live.js"),
    ),
    (
        "view-alerts.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/view-alerts.js"),
    ),
    (
        "view-node.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/view-node.js"),
    ),
    (
        "view-overview.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/view-overview.js"),
    ),
    (
        "view-signin.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/view-signin.js"),
    ),
    (
        "view-site.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/view-site.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/app.css"),
    ),
];

struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    etag: HeaderValue,
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(path, content_type, bytes)| Asset {
            path,
            content_type,
            bytes,
            etag: etag(bytes),
        })
        .collect()
});

fn etag(bytes: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(bytes);
    let tag = format!("\"{}\"", hex::encode(&digest[..16]));
    HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// The file at `path` (`index.html` for the page), 304 when the request's
/// `If-None-Match` is its `ETag`, or `None` when there is no such file.
pub fn serve(path: &str, request: &HeaderMap) -> Option<Response> {
    let asset = ASSETS.iter().find(|a| a.path == path)?;
    let matches = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim().trim_start_matches("W/") == asset.etag);
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Body::from(asset.bytes).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, asset.etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    Some(response)
}
