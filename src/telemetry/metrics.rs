//! Prometheus metrics (docs/ARCHITECTURE.md, Observability), kept in atomics and rendered as text at `/metrics`. Every
//! label is bounded: the configured provider names, the route enum, the status class, the token direction, the refusal
//! reason, and for management requests the operation's path template and a known method. No key material and no
//! per-request value ever becomes a label.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::providers::Endpoint;

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The kinds of key a provider request is counted under: [`crate::auth::keys::KeyKind::name`], or none.
pub const KEY_KINDS: [&str; 4] = ["live", "publishable", "trial", "none"];

/// Refusal reasons: the limit kinds, the process-wide overload, the trial issuance throttle, a store
/// unreachable for too long.
pub const REFUSALS: [&str; 13] = [
    "requests_per_minute",
    "requests_per_day",
    "concurrency",
    "key_tokens_per_month",
    "account_tokens_per_month",
    "overloaded",
    "end_user_requests_per_minute",
    "end_user_requests_per_day",
    "end_user_tokens_per_month",
    "trial_issuance",
    "end_users_per_key",
    "counters_unavailable",
    "store_stale",
];
/// Histogram bucket bounds, seconds.
const BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0,
];

struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        // Buckets are stored non-cumulatively; rendering adds them up.
        let i = BUCKETS.iter().position(|&b| secs <= b).unwrap_or(BUCKETS.len() - 1);
        if secs <= BUCKETS[BUCKETS.len() - 1] {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let sep = if labels.is_empty() { "" } else { "," };
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sep = if labels.is_empty() { "" } else { "," };
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

pub struct Metrics {
    providers: Vec<String>,
    /// [provider + 1 (index 0: no provider)][endpoint + 1 (0: no route)][status class]
    requests: Vec<AtomicU64>,
    upstream_latency: Vec<Histogram>,
    ttfb: Vec<Histogram>,
    overhead: Histogram,
    /// [provider][input, output]
    tokens: Vec<[AtomicU64; 2]>,
    refusals: [AtomicU64; REFUSALS.len()],
    /// Provider requests by the kind of key they were authenticated with ([`KEY_KINDS`]).
    by_key_kind: [AtomicU64; KEY_KINDS.len()],
    open_streams: AtomicI64,
    /// Management requests are few (people and scripts, not the data plane), so a lock is cheap here.
    /// Labels are `&'static str` from fixed lists, which keeps the set bounded by construction.
    management: Mutex<ManagementSeries>,
    /// The shared counters' state when they are shared (see [`Metrics::watch_counters`]).
    counters: std::sync::OnceLock<CountersWatch>,
}

/// Reads (degraded, admissions checked locally) from the shared counters.
type CountersWatch = Box<dyn Fn() -> (bool, u64) + Send + Sync>;

#[derive(Default)]
struct ManagementSeries {
    /// (operation, method, status class) → count.
    requests: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    durations: BTreeMap<&'static str, Histogram>,
}

/// A method as a bounded label: the standard ones by name, anything else as `other`.
pub fn method_label(method: &http::Method) -> &'static str {
    const KNOWN: [http::Method; 7] = [
        http::Method::GET,
        http::Method::POST,
        http::Method::PUT,
        http::Method::PATCH,
        http::Method::DELETE,
        http::Method::HEAD,
        http::Method::OPTIONS,
    ];
    KNOWN.iter().find(|m| *m == method).map_or("other", |m| m.as_str())
}

fn status_class(status: u16) -> Option<&'static str> {
    usize::from(status / 100).checked_sub(1).and_then(|c| STATUS_CLASSES.get(c).copied())
}

impl Metrics {
    pub fn new(providers: Vec<String>) -> Metrics {
        let n = providers.len();
        Metrics {
            requests: (0..(n + 1) * (Endpoint::ALL.len() + 1) * STATUS_CLASSES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            upstream_latency: (0..n).map(|_| Histogram::new()).collect(),
            ttfb: (0..n).map(|_| Histogram::new()).collect(),
            overhead: Histogram::new(),
            tokens: (0..n).map(|_| [AtomicU64::new(0), AtomicU64::new(0)]).collect(),
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            by_key_kind: std::array::from_fn(|_| AtomicU64::new(0)),
            open_streams: AtomicI64::new(0),
            management: Mutex::default(),
            counters: std::sync::OnceLock::new(),
            providers,
        }
    }

    fn request_slot(&self, provider: Option<usize>, endpoint: Option<Endpoint>, status: u16) -> Option<&AtomicU64> {
        let p = provider.map_or(0, |p| p + 1);
        let e = endpoint.and_then(|e| Endpoint::ALL.iter().position(|x| *x == e)).map_or(0, |e| e + 1);
        let class = usize::from(status / 100).checked_sub(1).filter(|c| *c < STATUS_CLASSES.len())?;
        self.requests.get((p * (Endpoint::ALL.len() + 1) + e) * STATUS_CLASSES.len() + class)
    }

    pub fn request(&self, provider: Option<usize>, endpoint: Option<Endpoint>, status: u16) {
        if let Some(slot) = self.request_slot(provider, endpoint, status) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn upstream_latency(&self, provider: usize, d: Duration) {
        if let Some(h) = self.upstream_latency.get(provider) {
            h.observe(d);
        }
    }

    pub fn time_to_first_byte(&self, provider: usize, d: Duration) {
        if let Some(h) = self.ttfb.get(provider) {
            h.observe(d);
        }
    }

    /// Time tollgate itself added before the response head: total minus the upstream's part.
    pub fn overhead(&self, d: Duration) {
        self.overhead.observe(d);
    }

    pub fn tokens(&self, provider: usize, input: u64, output: u64) {
        if let Some([i, o]) = self.tokens.get(provider) {
            i.fetch_add(input, Ordering::Relaxed);
            o.fetch_add(output, Ordering::Relaxed);
        }
    }

    /// One provider request by the kind of key it came with: `live`, `publishable`, `trial`, or `none`
    /// when no key was authenticated.
    pub fn key_kind(&self, kind: &str) {
        if let Some(i) = KEY_KINDS.iter().position(|k| *k == kind) {
            self.by_key_kind[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn refusal(&self, reason: &str) {
        if let Some(i) = REFUSALS.iter().position(|r| *r == reason) {
            self.refusals[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One management request: `operation` is its path template (or `unmatched`), never the raw path.
    pub fn management_request(&self, operation: &'static str, method: &http::Method, status: u16, d: Duration) {
        let Some(class) = status_class(status) else {
            return;
        };
        let mut series = self.management.lock().unwrap_or_else(|e| e.into_inner());
        *series.requests.entry((operation, method_label(method), class)).or_default() += 1;
        series.durations.entry(operation).or_insert_with(Histogram::new).observe(d);
    }

    pub fn stream_opened(&self) {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
    }

    /// Exposes the shared counters' state: whether they are degraded (Redis unreachable) and how many
    /// admissions were checked locally because of it.
    pub fn watch_counters(&self, watch: impl Fn() -> (bool, u64) + Send + Sync + 'static) {
        let _ = self.counters.set(Box::new(watch));
    }

    pub fn stream_closed(&self) {
        self.open_streams.fetch_sub(1, Ordering::Relaxed);
    }

    /// The shared counters' series, when they are shared.
    fn render_counters(&self, out: &mut String) {
        let Some(watch) = self.counters.get() else { return };
        let (degraded, local) = watch();
        out.push_str("# HELP tollgate_counters_degraded 1 while the shared counters (Redis) cannot answer.\n");
        out.push_str("# TYPE tollgate_counters_degraded gauge\n");
        let _ = writeln!(out, "tollgate_counters_degraded {}", u8::from(degraded));
        out.push_str(
            "# HELP tollgate_counters_local_admissions_total Admissions checked locally while Redis could not answer.\n",
        );
        out.push_str("# TYPE tollgate_counters_local_admissions_total counter\n");
        let _ = writeln!(out, "tollgate_counters_local_admissions_total {local}");
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let provider_name = |p: usize| if p == 0 { "-" } else { self.providers[p - 1].as_str() };
        out.push_str("# HELP tollgate_requests_total Requests by provider, route and status class.\n");
        out.push_str("# TYPE tollgate_requests_total counter\n");
        for p in 0..=self.providers.len() {
            for e in 0..=Endpoint::ALL.len() {
                for (c, class) in STATUS_CLASSES.iter().enumerate() {
                    let n = self.requests[(p * (Endpoint::ALL.len() + 1) + e) * STATUS_CLASSES.len() + c]
                        .load(Ordering::Relaxed);
                    if n > 0 {
                        let route = if e == 0 { "-" } else { Endpoint::ALL[e - 1].name() };
                        let _ = writeln!(
                            out,
                            "tollgate_requests_total{{provider=\"{}\",route=\"{route}\",status=\"{class}\"}} {n}",
                            provider_name(p)
                        );
                    }
                }
            }
        }
        for (name, help, set) in [
            (
                "tollgate_upstream_latency_seconds",
                "Time from sending upstream to the response head.",
                &self.upstream_latency,
            ),
            (
                "tollgate_time_to_first_byte_seconds",
                "Time from the request to its first response body byte.",
                &self.ttfb,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (p, h) in set.iter().enumerate() {
                h.render(&mut out, name, &format!("provider=\"{}\"", self.providers[p]));
            }
        }
        out.push_str(
            "# HELP tollgate_overhead_seconds Time tollgate added before the response head (total minus upstream).\n",
        );
        out.push_str("# TYPE tollgate_overhead_seconds histogram\n");
        self.overhead.render(&mut out, "tollgate_overhead_seconds", "");
        out.push_str("# HELP tollgate_tokens_total Tokens charged, by provider and direction.\n");
        out.push_str("# TYPE tollgate_tokens_total counter\n");
        for (p, [i, o]) in self.tokens.iter().enumerate() {
            for (direction, n) in [("input", i), ("output", o)] {
                let _ = writeln!(
                    out,
                    "tollgate_tokens_total{{provider=\"{}\",direction=\"{direction}\"}} {}",
                    self.providers[p],
                    n.load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP tollgate_refusals_total Requests refused by a limit, an overload or a stale key store, by reason.\n");
        out.push_str("# TYPE tollgate_refusals_total counter\n");
        for (reason, n) in REFUSALS.iter().zip(&self.refusals) {
            let _ = writeln!(out, "tollgate_refusals_total{{reason=\"{reason}\"}} {}", n.load(Ordering::Relaxed));
        }
        out.push_str(
            "# HELP tollgate_requests_by_key_kind_total Provider requests by the kind of key they came with.\n",
        );
        out.push_str("# TYPE tollgate_requests_by_key_kind_total counter\n");
        for (kind, n) in KEY_KINDS.iter().zip(&self.by_key_kind) {
            let _ =
                writeln!(out, "tollgate_requests_by_key_kind_total{{kind=\"{kind}\"}} {}", n.load(Ordering::Relaxed));
        }
        out.push_str("# HELP tollgate_open_streams Server-sent event streams being relayed.\n");
        out.push_str("# TYPE tollgate_open_streams gauge\n");
        let _ = writeln!(out, "tollgate_open_streams {}", self.open_streams.load(Ordering::Relaxed));
        self.render_counters(&mut out);
        self.render_management(&mut out);
        out
    }

    fn render_management(&self, out: &mut String) {
        let series = self.management.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str(
            "# HELP tollgate_management_requests_total Management API requests by operation, method and status class.\n",
        );
        out.push_str("# TYPE tollgate_management_requests_total counter\n");
        for ((operation, method, status), n) in &series.requests {
            let _ = writeln!(
                out,
                "tollgate_management_requests_total{{operation=\"{operation}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        let name = "tollgate_management_request_duration_seconds";
        let _ =
            writeln!(out, "# HELP {name} Time to answer a management request, by operation.\n# TYPE {name} histogram");
        for (operation, h) in &series.durations {
            h.render(out, name, &format!("operation=\"{operation}\""));
        }
    }
}

/// Whether a scrape presents `Authorization: Bearer <token>` for the token hashed as `expected` (hashes
/// compare in constant time).
pub fn presents_token(headers: &http::HeaderMap, expected: &blake3::Hash) -> bool {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, token)| blake3::hash(token.trim().as_bytes()) == *expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histograms_render() {
        let m = Metrics::new(vec!["openai".into(), "anthropic".into()]);
        m.request(Some(1), Some(Endpoint::Messages), 200);
        m.request(Some(1), Some(Endpoint::Messages), 200);
        m.request(None, None, 404);
        m.request(Some(0), Some(Endpoint::ChatCompletions), 999);
        m.upstream_latency(0, Duration::from_millis(3));
        m.overhead(Duration::from_micros(40));
        m.tokens(1, 10, 5);
        m.refusal("requests_per_minute");
        m.refusal("no such reason");
        m.stream_opened();
        let text = m.render();
        assert!(
            text.contains("tollgate_requests_total{provider=\"anthropic\",route=\"messages\",status=\"2xx\"} 2"),
            "{text}"
        );
        assert!(text.contains("tollgate_requests_total{provider=\"-\",route=\"-\",status=\"4xx\"} 1"));
        assert!(!text.contains("status=\"9"));
        assert!(text.contains("tollgate_upstream_latency_seconds_bucket{provider=\"openai\",le=\"0.0025\"} 0"));
        assert!(text.contains("tollgate_upstream_latency_seconds_bucket{provider=\"openai\",le=\"0.005\"} 1"));
        assert!(text.contains("tollgate_upstream_latency_seconds_count{provider=\"openai\"} 1"));
        assert!(text.contains("tollgate_overhead_seconds_bucket{le=\"0.0001\"} 1"));
        assert!(text.contains("tollgate_tokens_total{provider=\"anthropic\",direction=\"output\"} 5"));
        assert!(text.contains("tollgate_refusals_total{reason=\"requests_per_minute\"} 1"));
        assert!(text.contains("tollgate_open_streams 1"));
    }

    #[test]
    fn management_requests_render_with_bounded_labels() {
        let m = Metrics::new(vec![]);
        let text = m.render();
        assert!(text.contains("# TYPE tollgate_management_requests_total counter"), "{text}");
        m.management_request("/v1/auth/keys/{id}", &http::Method::GET, 404, Duration::from_millis(2));
        m.management_request("/v1/auth/keys/{id}", &http::Method::GET, 404, Duration::from_millis(2));
        m.management_request("unmatched", &http::Method::from_bytes(b"BREW").unwrap(), 404, Duration::ZERO);
        m.management_request("/v1/auth/login", &http::Method::POST, 999, Duration::ZERO);
        let text = m.render();
        let series =
            "tollgate_management_requests_total{operation=\"/v1/auth/keys/{id}\",method=\"GET\",status=\"4xx\"} 2";
        assert!(text.contains(series), "{text}");
        assert!(text.contains("operation=\"unmatched\",method=\"other\",status=\"4xx\"} 1"), "{text}");
        assert!(!text.contains("BREW") && !text.contains("/v1/auth/login"), "{text}");
        let count = "tollgate_management_request_duration_seconds_count{operation=\"/v1/auth/keys/{id}\"} 2";
        assert!(text.contains(count), "{text}");
        assert!(text.contains(
            "tollgate_management_request_duration_seconds_bucket{operation=\"/v1/auth/keys/{id}\",le=\"0.0025\"} 2"
        ));
    }
}
