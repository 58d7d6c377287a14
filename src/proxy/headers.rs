//! Header hygiene in both directions. Upstream gets the caller's end-to-end headers minus every credential,
//! every hop-by-hop header (RFC 9110 §7.6.1: `Connection`, the names it lists, and the legacy set), the
//! caller's `Accept-Encoding` (tollgate reads the stream) and client-identifying forwarding headers.
//! The caller gets only the upstream headers on an allowlist (content type and length, request ids,
//! retry advice, the providers' rate-limit reports and diagnostics).

use http::{HeaderMap, HeaderName, header};

/// Dropped from every request before it goes upstream. Credentials first: tollgate writes exactly one.
const REQUEST_DROPPED: &[&str] = &[
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "x-provider-key",
    "cookie",
    // An identity token is a secret, and an end user's id is the app's own: neither goes upstream.
    "x-tollgate-identity",
    "x-tollgate-end-user",
    // tollgate's own (`proxy::trial`).
    "x-tollgate-regenerate-key",
    // Hop-by-hop (RFC 9110 §7.6.1 and the legacy names it says intermediaries should remove).
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    // Rewritten by tollgate.
    "host",
    "content-length",
    "accept-encoding",
    "expect",
    // Reveal the caller's network to the provider; routing never depends on them.
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "via",
];

/// The upstream response headers a caller receives; every other one is dropped. An allowlist, because
/// a provider (or whatever answers at its address) may send headers that act on the caller's side of
/// tollgate: `Alt-Svc`, `Strict-Transport-Security`, `Access-Control-*`, `Location`, `WWW-Authenticate`,
/// cookies. Framing is tollgate's own; `x-request-id` moves to `x-upstream-request-id` later.
const RESPONSE_KEPT: &[&str] = &[
    "content-type",
    "content-length",
    // Only present if the provider ignored `Accept-Encoding: identity`; the body is unreadable without it.
    "content-encoding",
    // Request ids the SDKs expose on results and errors.
    "x-request-id",
    "request-id",
    // Retry advice the SDKs obey (the OpenAI and Anthropic SDKs read all three).
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    // Provider diagnostics about the caller's own provider account.
    "openai-organization",
    "openai-project",
    "openai-processing-ms",
    "openai-version",
    "anthropic-organization-id",
];

/// Families of response headers kept by prefix: the providers' own rate-limit reports (tollgate's
/// `x-ratelimit-*` replace OpenAI's when its limits are on).
const RESPONSE_KEPT_PREFIXES: &[&str] = &["x-ratelimit-", "anthropic-ratelimit-"];

/// Names listed in the `Connection` header(s), which RFC 9110 §7.6.1 says must not be forwarded.
fn connection_nominated(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

fn copy_except(from: &HeaderMap, dropped: &[&str]) -> HeaderMap {
    let nominated = connection_nominated(from);
    let mut out = HeaderMap::with_capacity(from.len() + 4);
    for (name, value) in from {
        if dropped.contains(&name.as_str()) || nominated.contains(name) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The caller's headers that may go upstream; tollgate adds `Host`, the credential and framing after.
pub fn upstream_request_headers(caller: &HeaderMap) -> HeaderMap {
    copy_except(caller, REQUEST_DROPPED)
}

/// The upstream's headers that go back to the caller: only those on the allowlist. For a stream,
/// `Content-Length` goes too: tollgate may end a failed stream with an event of its own. Every response
/// is one caller's own data, so it is marked `Cache-Control: no-store` whatever the provider said: a
/// shared cache in front of tollgate must never hand it to another caller. And `nosniff`: a browser never
/// reads a provider's body as anything but its declared type on tollgate's origin, which the dashboard
/// shares.
pub fn caller_response_headers(upstream: &HeaderMap, is_stream: bool) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(upstream.keys_len() + 6);
    for (name, value) in upstream {
        let name_text = name.as_str();
        let kept =
            RESPONSE_KEPT.contains(&name_text) || RESPONSE_KEPT_PREFIXES.iter().any(|p| name_text.starts_with(p));
        if kept && !(is_stream && name == header::CONTENT_LENGTH) {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    out.insert(header::X_CONTENT_TYPE_OPTIONS, http::HeaderValue::from_static("nosniff"));
    out
}

/// `Content-Type: text/event-stream`, with or without parameters.
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// Total size of a request head as counted against the header cap: target plus every name and value.
pub fn head_size(uri: &http::Uri, headers: &HeaderMap) -> usize {
    uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn credentials_hop_by_hop_and_nominated_headers_are_dropped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer tg_live_x"),
            ("x-api-key", "k"),
            ("x-goog-api-key", "k"),
            ("api-key", "k"),
            ("x-provider-key", "sk"),
            ("cookie", "a=b"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("accept-encoding", "gzip, br"),
            ("x-forwarded-host", "evil.example"),
            ("host", "tollgate.local"),
            ("content-type", "application/json"),
            ("anthropic-beta", "tools-2024"),
            ("x-stainless-retry-count", "0"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = upstream_request_headers(&h);
        let names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "anthropic-beta", "x-stainless-retry-count"]);
    }

    #[test]
    fn responses_keep_only_the_allowlist() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("alt-svc", "h3=\":443\""),
            ("strict-transport-security", "max-age=31536000"),
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
            ("location", "https://evil.example/"),
            ("www-authenticate", "Basic realm=x"),
            ("authorization", "Bearer sk-upstream"),
            ("x-powered-by", "x"),
            ("content-type", "application/json"),
            ("x-ratelimit-remaining-tokens", "10"),
            ("anthropic-ratelimit-requests-limit", "50"),
            ("openai-processing-ms", "12"),
            ("retry-after", "2"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = caller_response_headers(&h, false);
        let names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "x-ratelimit-remaining-tokens",
                "anthropic-ratelimit-requests-limit",
                "openai-processing-ms",
                "retry-after",
                "cache-control",
                "x-content-type-options"
            ]
        );
    }

    #[test]
    fn responses_lose_cookies_and_stream_lengths() {
        let mut h = HeaderMap::new();
        h.insert("set-cookie", HeaderValue::from_static("__cf_bm=1; domain=.api.openai.com"));
        h.insert("content-length", HeaderValue::from_static("10"));
        h.insert("content-type", HeaderValue::from_static("text/event-stream; charset=utf-8"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("request-id", HeaderValue::from_static("req_1"));
        assert!(is_event_stream(&h));
        let out = caller_response_headers(&h, true);
        let mut names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["cache-control", "content-type", "request-id", "x-content-type-options"]);
        assert!(caller_response_headers(&h, false).contains_key("content-length"));
    }
}
