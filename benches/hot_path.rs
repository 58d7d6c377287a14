//! Criterion benches for each hot-path step: key verification (hit, miss, malformed), admission
//! (reserve + settle), the SSE framer with each provider's usage tap, and the JSON usage scanner.
//!
//!     cargo bench --bench hot_path

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tollgate::auth::keys::{self, KeyHasher, KeyKind, KeyLimits, KeyRecord, KeyTable};
use tollgate::config::LimitsConfig;
use tollgate::metering::limits::{self, CounterBackend, MemoryCounters, Now, ReservationTicket, Subject};
use tollgate::metering::usage::Meter;
use tollgate::metering::usage::json_scan::UsageScanner;
use tollgate::metering::usage::tap::UsageTap;
use tollgate::proxy::sse::SseFramer;

fn key_table(n: usize) -> (KeyTable, String) {
    let hasher = KeyHasher::new(None);
    let table = KeyTable::new("tg".into(), hasher.clone());
    let mut last = String::new();
    for _ in 0..n {
        let (secret, parsed) = keys::generate("tg", KeyKind::Live).unwrap();
        table.upsert(KeyRecord {
            id: parsed.id,
            account: "default".into(),
            limits: KeyLimits::default(),
            kind: parsed.kind,
            hash: hasher.hash(secret.expose()),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            access: Default::default(),
            policy: Default::default(),
            signing: Default::default(),
            version: 0,
        });
        last = secret.expose().to_owned();
    }
    (table, last)
}

fn verify(c: &mut Criterion) {
    let (table, key) = key_table(10_000);
    let (stranger, _) = keys::generate("tg", KeyKind::Live).unwrap();
    let mut g = c.benchmark_group("key_verify");
    g.bench_function("hit", |b| b.iter(|| table.verify(black_box(&key), 0).is_ok()));
    g.bench_function("miss", |b| b.iter(|| table.verify(black_box(stranger.expose()), 0).is_err()));
    g.bench_function("malformed", |b| b.iter(|| table.verify(black_box("tg_live_not-a-key"), 0).is_err()));
    g.finish();
}

fn admission(c: &mut Criterion) {
    let limits = LimitsConfig {
        enabled: true,
        requests_per_minute: 1000,
        requests_per_day: 10_000,
        concurrent_requests: 10,
        tokens_per_month: Some(u64::MAX / 2),
        default_max_output_tokens: 4096,
        end_users_per_key: 100_000,
    };
    let counters = MemoryCounters::new(Duration::from_secs(900));
    let (table, key) = key_table(1);
    let record = table.verify(&key, 0).unwrap();
    let subject = Subject {
        key: record.id,
        account: record.account.clone(),
        limits: limits::effective(&record.limits, &limits),
        plan_tokens: u64::MAX / 2,
        end_user: None,
    };
    let mut now = Now { mono_ns: 1, unix: 1_795_422_645 };
    c.bench_function("admission/reserve_and_settle", |b| {
        b.iter(|| {
            // A minute of rate and nine seconds of day pass per call, so no limit ever refuses.
            now.mono_ns += 60_000_000_000;
            now.unix += 9;
            let permit = at_once(counters.admit_request(&subject, now)).unwrap();
            let ticket = at_once(counters.reserve(permit, 200, now)).unwrap();
            ticket.settle(black_box(150));
        })
    });
}

/// The memory backend's futures are ready on their first poll, as the proxy finds them.
fn at_once<T>(future: impl std::future::Future<Output = T>) -> T {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut cx) {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => unreachable!("the memory backend never waits"),
    }
}

fn openai_stream() -> Vec<u8> {
    let mut s = String::new();
    for i in 0..60 {
        s.push_str(&format!("data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"));
    }
    s.push_str("data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":60,\"total_tokens\":90}}\n\ndata: [DONE]\n\n");
    s.into_bytes()
}

fn anthropic_stream() -> Vec<u8> {
    let mut s = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":30,\"output_tokens\":1}}}\n\n",
    );
    for i in 0..60 {
        s.push_str(&format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"tok{i}\"}}}}\n\n"));
    }
    s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":60}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    s.into_bytes()
}

fn gemini_stream() -> Vec<u8> {
    let mut s = String::new();
    for i in 0..20 {
        s.push_str(&format!("data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"tok{i} tok tok\"}}],\"role\":\"model\"}},\"index\":0}}],\"usageMetadata\":{{\"promptTokenCount\":30,\"candidatesTokenCount\":{}}}}}\r\n\r\n", 3 * (i + 1)));
    }
    s.into_bytes()
}

fn stream_tap(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse_framer_and_tap");
    for (name, meter, strip, stream) in [
        ("openai_injected_usage", Meter::OpenAiCompletion, true, openai_stream()),
        ("anthropic", Meter::Anthropic, false, anthropic_stream()),
        ("gemini", Meter::Gemini, false, gemini_stream()),
    ] {
        // Delivered the way providers send: in network-sized pieces that cut events anywhere.
        let pieces: Vec<Bytes> = stream.chunks(1400).map(Bytes::copy_from_slice).collect();
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut framer = SseFramer::new(1 << 20);
                let mut tap = UsageTap::new(meter, strip);
                let mut out = 0;
                for piece in &pieces {
                    if let Some(events) = framer.push(piece.clone()).unwrap() {
                        out += tap.pass(events).len();
                    }
                }
                black_box((out, tap.usage()))
            })
        });
    }
    g.finish();
}

fn header_rewrite(c: &mut Criterion) {
    let config = tollgate::config::Config::from_toml("", |_| None).unwrap();
    let mut caller = http::HeaderMap::new();
    for (k, v) in [
        ("authorization", "Bearer tg_live_0123456789ABcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN"),
        ("x-provider-key", "sk-proj-0123456789abcdefghijklmnopqrstuvwxyz"),
        ("content-type", "application/json"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate"),
        ("user-agent", "OpenAI/Python 1.109.1"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "1.109.1"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-runtime-version", "3.11.7"),
        ("x-stainless-retry-count", "0"),
        ("connection", "keep-alive"),
    ] {
        caller.insert(http::HeaderName::from_static(k), http::HeaderValue::from_static(v));
    }
    let key = tollgate::proxy::credentials::provider_key(&caller).unwrap();
    let mut g = c.benchmark_group("header_rewrite");
    for provider in &config.providers {
        g.bench_function(provider.name.as_str(), |b| {
            b.iter(|| {
                let mut headers = tollgate::proxy::headers::upstream_request_headers(black_box(&caller));
                let mut query = String::from("alt=sse");
                provider.kind.set_credential(provider, &key, &mut headers, &mut query);
                black_box((headers, query))
            })
        });
    }
    g.finish();
}

fn json_usage(c: &mut Criterion) {
    let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! I am a mock assistant served by nginx, so the benchmark measures only proxy overhead.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":21,"total_tokens":40}}"#;
    let mut g = c.benchmark_group("json_usage_scan");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("chat_completion", |b| {
        b.iter(|| {
            let mut s = UsageScanner::new(b"usage");
            s.feed(black_box(body));
            black_box(s.found().map(<[u8]>::len))
        })
    });
    g.finish();
}

criterion_group!(benches, verify, admission, header_rewrite, stream_tap, json_usage);
criterion_main!(benches);
