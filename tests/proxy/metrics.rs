//! `/metrics`: requests, tokens, refusals, latency histograms and open streams, with bounded labels and
//! no key material.

use tollgate::auth::keys::KeyLimits;

use crate::common::*;

const ON_MAIN_LISTENER: &str = "[metrics]\non_main_listener = true\n";

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_what_happened_and_carry_no_keys() {
    let mock = MockUpstream::start().await;
    let once =
        NewKey { limits: KeyLimits { requests_per_day: Some(1), ..KeyLimits::default() }, ..NewKey::live("once", 0) };
    let gw = Gateway::start_with(&mock.base_url(), ON_MAIN_LISTENER, &[once]).await;
    let keys = gw.auth();
    let h = keys.headers();
    for _ in 0..2 {
        assert_eq!(post(&gw.url("/v1/chat/completions"), &h, Shape::OpenAi.body()).await.status, 200);
    }
    assert_eq!(post(&gw.url("/v1/messages"), &h, Shape::Anthropic.stream_body()).await.status, 200);
    assert_eq!(post(&gw.url("/v1/nowhere"), &h, "{}").await.status, 404);
    let keys = Keys::new(&gw.keys[0]);
    let once = keys.headers();
    assert_eq!(post(&gw.url(Shape::Gemini.path()), &once, Shape::Gemini.body()).await.status, 200);
    assert_eq!(post(&gw.url(Shape::Gemini.path()), &once, Shape::Gemini.body()).await.status, 429);

    let scrape = format!("Bearer {METRICS_TOKEN}");
    let reply = request(http::Method::GET, &gw.url("/metrics"), &[("authorization", &scrape)], b"").await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert_eq!(
        value(&text, "tollgate_requests_total{provider=\"openai\",route=\"chat_completions\",status=\"2xx\"}"),
        2.0
    );
    assert_eq!(value(&text, "tollgate_requests_total{provider=\"anthropic\",route=\"messages\",status=\"2xx\"}"), 1.0);
    assert_eq!(value(&text, "tollgate_requests_total{provider=\"-\",route=\"-\",status=\"4xx\"}"), 1.0);
    assert_eq!(
        value(&text, "tollgate_requests_total{provider=\"gemini\",route=\"generate_content\",status=\"4xx\"}"),
        1.0
    );
    assert_eq!(value(&text, "tollgate_refusals_total{reason=\"requests_per_day\"}"), 1.0);
    // The mock reports 5 + 3 tokens on each answered request.
    assert_eq!(value(&text, "tollgate_tokens_total{provider=\"openai\",direction=\"input\"}"), 10.0);
    assert_eq!(value(&text, "tollgate_tokens_total{provider=\"anthropic\",direction=\"output\"}"), 3.0);
    assert_eq!(value(&text, "tollgate_upstream_latency_seconds_count{provider=\"openai\"}"), 2.0);
    assert_eq!(value(&text, "tollgate_time_to_first_byte_seconds_count{provider=\"anthropic\"}"), 1.0);
    assert_eq!(value(&text, "tollgate_overhead_seconds_count"), 4.0);
    assert_eq!(value(&text, "tollgate_open_streams"), 0.0);
    assert_eq!(value(&text, "tollgate_requests_by_key_kind_total{kind=\"live\"}"), 5.0);
    assert_eq!(value(&text, "tollgate_requests_by_key_kind_total{kind=\"none\"}"), 1.0, "the unrouted request");
    assert_eq!(value(&text, "tollgate_requests_by_key_kind_total{kind=\"publishable\"}"), 0.0);
    for secret in [&gw.key[..], &gw.keys[0][..], PROVIDER_KEY, "tg_live_"] {
        assert!(!text.contains(secret), "key material in /metrics");
    }
}

#[tokio::test]
async fn the_main_listener_serves_metrics_only_when_asked_and_only_with_the_token() {
    let mock = MockUpstream::start().await;
    // By default metrics have a listener of their own: the public port knows no /metrics.
    let gw = Gateway::start(&mock.base_url(), "").await;
    let reply = request(http::Method::GET, &gw.url("/metrics"), &[], b"").await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert!(!reply.text().contains("tollgate_requests_total"));

    let gw = Gateway::start(&mock.base_url(), ON_MAIN_LISTENER).await;
    let wrong = format!("Bearer {}", gw.key);
    for headers in [&[][..], &[("authorization", wrong.as_str())][..]] {
        let reply = request(http::Method::GET, &gw.url("/metrics"), headers, b"").await;
        assert_eq!(reply.status, 401, "{}", reply.text());
        assert!(!reply.text().contains("tollgate_"));
    }
    let scrape = format!("Bearer {METRICS_TOKEN}");
    let reply = request(http::Method::GET, &gw.url("/metrics"), &[("authorization", &scrape)], b"").await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("tollgate_open_streams"));
}
