//! A request body the handler did not read. hyper keeps an HTTP/1 connection alive after a response only
//! if it can read the rest of the request body at once; if the body is still on its way, hyper closes the
//! connection right after a response it already sent as keep-alive, and a pooled client that reuses the
//! connection meanwhile sees it closed without an answer. So before answering, a small remainder is
//! read (briefly); a larger or slower one makes the response say `Connection: close`.

use std::time::Duration;

use http::{HeaderValue, Response, Version, header};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Most of an unread body drained before an answer; a larger one closes the connection instead.
const DRAIN_MAX_BYTES: u64 = 256 * 1024;
/// Longest wait for the unread remainder.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Reads what is left of `body` within the bounds, or marks `response` as the connection's last.
pub async fn settle<B>(body: &mut Incoming, version: Version, mut response: Response<B>) -> Response<B> {
    // HTTP/2 resets the unread stream on its own and the connection carries on.
    if version >= Version::HTTP_2 || body.is_end_stream() {
        return response;
    }
    // After a 408 the body has already failed to arrive in time: waiting for it again only delays the answer.
    if response.status() == http::StatusCode::REQUEST_TIMEOUT || !drain(body).await {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Whether the body ended within the bounds.
async fn drain(body: &mut Incoming) -> bool {
    if body.size_hint().lower() > DRAIN_MAX_BYTES {
        return false;
    }
    let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
    let mut left = DRAIN_MAX_BYTES;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                match left.checked_sub(len) {
                    Some(rest) => left = rest,
                    None => return false,
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}
