//! The dashboard (docs/ARCHITECTURE.md, The dashboard): the files under `dashboard/` at the repository's root,
//! embedded in the binary at build time and served under `/dashboard/`. The pages call only the management
//! API, so everything they can do a client can do with `curl`; this module only hands out files, with a strict
//! Content-Security-Policy on every answer.
//!
//! A path whose last segment has a dot names a file (`/dashboard/js/app.js`); any other path under
//! `/dashboard/` is a page of the app (`/dashboard/keys`, `/dashboard/claim`) and gets `index.html`, whose
//! script routes it in the browser.

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use rust_embed::Embed;

use crate::proxy::body::ProxyBody;

/// Where the dashboard lives on a listener.
pub const BASE: &str = "/dashboard";

/// No inline script or style, nothing from another origin, no framing, no plugins: the pages are modules
/// and stylesheets from this origin, and they talk only to this origin's management API. Trusted Types
/// make the browser refuse any string handed to an HTML sink (`innerHTML` and its kin), which the pages
/// never use.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'; require-trusted-types-for 'script'";

#[derive(Embed)]
#[folder = "dashboard/"]
struct Assets;

/// Whether `path` is the dashboard's.
pub fn is_dashboard(path: &str) -> bool {
    path == BASE || path.strip_prefix(BASE).is_some_and(|rest| rest.starts_with('/'))
}

/// Serves one request for a path under [`BASE`].
pub fn handle(method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap) -> Response<ProxyBody> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "the dashboard is read with GET\n");
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(rest) = path.strip_prefix(BASE).and_then(|rest| rest.strip_prefix('/')) else {
        // `/dashboard` itself: the pages' relative links need the trailing slash.
        let location = match query {
            Some(q) => format!("{BASE}/?{q}"),
            None => format!("{BASE}/"),
        };
        let mut response = text(StatusCode::PERMANENT_REDIRECT, "");
        if let Ok(location) = HeaderValue::try_from(location) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        return response;
    };
    let file_name = rest.rsplit('/').next().unwrap_or("");
    let name = if file_name.contains('.') { rest } else { "index.html" };
    // Only the kinds of file a page loads: a stray dotfile or editor backup in the folder is never served.
    let servable = content_type(name).is_some() && !name.split('/').any(|segment| segment.starts_with('.'));
    let Some(file) = Assets::get(name).filter(|_| servable) else {
        return text(StatusCode::NOT_FOUND, "no such file in the dashboard\n");
    };
    let etag = etag(&file.metadata.sha256_hash());
    let mut response = if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        text(StatusCode::NOT_MODIFIED, "")
    } else if method == Method::HEAD {
        secured(Response::new(ProxyBody::empty()))
    } else {
        // The embedded bytes themselves, not a copy.
        let bytes = match file.data {
            std::borrow::Cow::Borrowed(data) => bytes::Bytes::from_static(data),
            std::borrow::Cow::Owned(data) => bytes::Bytes::from(data),
        };
        secured(Response::new(ProxyBody::full(bytes)))
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(name).unwrap_or("text/plain")));
    if let Ok(etag) = HeaderValue::try_from(etag) {
        headers.insert(header::ETAG, etag);
    }
    // Revalidated on every use (a 304 when unchanged), so a new binary's pages are never mixed with old modules.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn etag(hash: &[u8; 32]) -> String {
    let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

fn content_type(name: &str) -> Option<&'static str> {
    Some(match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "webmanifest" => "application/manifest+json",
        _ => return None,
    })
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = secured(Response::new(ProxyBody::full(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The headers every dashboard answer carries, errors included.
pub fn secured(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    headers
        .insert("permissions-policy", HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"));
    response
}

#[cfg(test)]
mod tests;
