//! One structured line per request, written when its response is finished (for a stream: when the stream
//! ends or the caller leaves). It carries the request id, route, provider, status, duration and the key's
//! public prefix: never a key, never an upstream URL. Management requests get a line of their own kind,
//! named by operation (the path template, since paths hold ids), never with a token, password or key.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;
use tokio::time::Instant;

use crate::auth::keys::KeyLabel;
use crate::error::LogLevel;
use crate::providers::Endpoint;
use crate::telemetry::metrics::Metrics;

/// The target of every request line, so one filter directive selects them all.
const ACCESS_TARGET: &str = "tollgate::access";

/// Request ids: a random per-process seed mixed with a counter through a bijection (splitmix64), so ids
/// are unique within a process, unpredictable across processes, and cost one atomic add.
pub struct RequestIds {
    seed: u64,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> RequestIds {
        let mut seed = [0u8; 8];
        // Uniqueness comes from the counter; the seed only varies ids between runs, so a failed
        // read of the OS source (which leaves zeros) is harmless.
        let _ = getrandom::fill(&mut seed);
        RequestIds { seed: u64::from_le_bytes(seed), next: AtomicU64::new(0) }
    }

    pub fn next(&self) -> RequestId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        RequestId(splitmix64(self.seed ^ n))
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId(u64);

impl RequestId {
    pub fn header_value(self) -> HeaderValue {
        let mut buf = [0u8; 16];
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in buf.iter_mut().enumerate() {
            *b = HEX[((self.0 >> (60 - 4 * i)) & 0xf) as usize];
        }
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What is known about a request for its log line.
#[derive(Clone)]
pub struct AccessLog {
    pub request_id: RequestId,
    pub method: http::Method,
    /// The route's provider: its position in the configuration, and its name.
    pub provider: Option<(usize, Arc<str>)>,
    pub endpoint: Option<Endpoint>,
    pub key: Option<KeyLabel>,
    pub streaming: bool,
    pub started: Instant,
    /// Where the request is counted when its line is written.
    pub metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Writes the line. `outcome` is a bounded label (`ok`, `client_closed`, an error label).
    pub fn emit(&self, status: u16, outcome: &str, bytes: u64, level: LogLevel) {
        self.metrics.request(self.provider.as_ref().map(|p| p.0), self.endpoint, status);
        let key_kind = self.key.as_ref().map_or("none", |label| label.kind().name());
        self.metrics.key_kind(key_kind);
        let duration_ms = self.started.elapsed().as_secs_f64() * 1e3;
        let provider = self.provider.as_ref().map_or("-", |p| &*p.1);
        let key: &dyn std::fmt::Display = match &self.key {
            Some(label) => label,
            None => &"-",
        };
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    target: ACCESS_TARGET,
                    request_id = %self.request_id,
                    method = %self.method,
                    provider,
                    route = self.endpoint.map_or("-", Endpoint::name),
                    status,
                    outcome,
                    duration_ms = (duration_ms * 1000.0).round() / 1000.0,
                    bytes,
                    streaming = self.streaming,
                    key = %key,
                    key_kind,
                    "request"
                )
            };
        }
        match level {
            LogLevel::Info => line!(info),
            LogLevel::Warn => line!(warn),
        }
    }
}

/// What is known about a management request for its log line.
pub struct ManagementLog {
    pub request_id: RequestId,
    pub method: http::Method,
    /// The OpenAPI path template, or `unmatched`.
    pub operation: &'static str,
    pub started: Instant,
}

impl ManagementLog {
    /// Counts the request and writes its line: warn for a server failure, info otherwise.
    pub fn emit(&self, status: u16, metrics: &Metrics) {
        let elapsed = self.started.elapsed();
        metrics.management_request(self.operation, &self.method, status, elapsed);
        let duration_ms = (elapsed.as_secs_f64() * 1e6).round() / 1000.0;
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    target: ACCESS_TARGET,
                    request_id = %self.request_id,
                    method = %self.method,
                    operation = self.operation,
                    status,
                    duration_ms,
                    "management request"
                )
            };
        }
        if status >= 500 {
            line!(warn);
        } else {
            line!(info);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_and_sixteen_hex_digits() {
        let ids = RequestIds::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = ids.next();
            let text = id.to_string();
            assert_eq!(text.len(), 16);
            assert_eq!(id.header_value().to_str().unwrap(), text);
            assert!(seen.insert(text));
        }
    }
}
