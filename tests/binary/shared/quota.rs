//! Limits counted once across three processes: 1000 concurrent requests, round-robin over them, against
//! one key's 10,000-token monthly quota, 900 against one end user's, and a burst against a per-minute limit.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;

const QUOTA: u64 = 10_000;
const REQUESTS: usize = 1000;
/// The end-user burst leaves room in the key's per-minute limit (1,000, the test default) for the calls after it.
const END_USER_REQUESTS: usize = 900;
const BODY: &str = r#"{"model":"gpt-4o-mini","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;

/// What a quota burst came to.
struct Outcome {
    admitted: u64,
    refused: u64,
    per_process: [u64; 3],
    /// Answers (of any kind) from each process: the burst reached all three.
    answered: [u64; 3],
    reservation: u64,
}

/// 1000 requests at once, round-robin over the three processes, with `extra` headers; the mock reports
/// exactly what each request reserved. Every answer is 200 or a 429 `insufficient_quota` naming `limit`.
async fn quota_burst(cluster: &Cluster, key: &str, requests: usize, extra: &[(&str, &str)], limit: &str) -> Outcome {
    let estimate = tollgate::metering::input_estimate(BODY.len());
    let reservation = estimate + 100;
    let usage = format!("usage {estimate} 100");
    let mut headers = extra.to_vec();
    headers.push(("x-mock", usage.as_str()));
    let fleet = cluster.fleet(4).await;
    let answers = fleet.burst(requests, |base| provider_post(base, "/v1/chat/completions", key, &headers, BODY)).await;
    let mut outcome = Outcome { admitted: 0, refused: 0, per_process: [0; 3], answered: [0; 3], reservation };
    for answer in answers {
        outcome.answered[answer.process] += 1;
        match answer.status {
            200 => {
                outcome.admitted += 1;
                outcome.per_process[answer.process] += 1;
            }
            429 => {
                assert!(answer.body.contains("insufficient_quota") && answer.body.contains(limit), "{}", answer.body);
                outcome.refused += 1;
            }
            other => panic!("process {} answered {other}: {}", answer.process, answer.body),
        }
    }
    outcome
}

/// What the store holds once the flushes of all three processes have landed: polls `path` on process 1
/// (within 10 s) until the rows `pick` chooses count `requests` requests and `tokens` tokens, and fails if
/// they ever count more. A request is booked when admitted and its tokens when it settles, so the two may
/// land in different flushes.
async fn charged(
    cluster: &Cluster,
    token: &str,
    path: &str,
    (requests, tokens): (u64, u64),
    pick: impl Fn(&Value) -> bool,
) -> u64 {
    let started = Instant::now();
    loop {
        let (status, usage) = cluster.api(1, http::Method::GET, path, token, None).await;
        assert_eq!(status, 200, "{usage}");
        let rows: Vec<&Value> = usage["data"].as_array().unwrap().iter().filter(|r| pick(r)).collect();
        let sum = |field: &str| rows.iter().map(|r| r[field].as_u64().unwrap()).sum::<u64>();
        let (seen_requests, seen_tokens) = (sum("requests"), sum("total_tokens"));
        assert!(seen_requests <= requests && seen_tokens <= tokens, "more recorded than admitted: {usage}");
        if (seen_requests, seen_tokens) == (requests, tokens) {
            return seen_tokens;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "usage never reached {requests} requests, {tokens} tokens: {usage}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_one_keys_token_quota() {
    let Some(services) = services("the three-process key quota test") else { return };
    let cluster = Cluster::start(&services, &services.redis, "quota", "").await;
    let token = cluster.account("quota@example.com", 10).await;
    let (key, id) = cluster.key(0, &token, json!({"name": "shared", "limits": {"tokens_per_month": QUOTA}})).await;
    cluster.until_known_everywhere(&key).await;

    let out = quota_burst(&cluster, &key, REQUESTS, &[], "this key's monthly token quota").await;
    let expected = (out.admitted, out.admitted * out.reservation);
    let charged = charged(&cluster, &token, &format!("/v1/usage?key_id={id}"), expected, |_| true).await;
    eprintln!(
        "three processes, one key, quota {QUOTA}: admitted {} ({:?} per process), refused {}, charged {charged} \
         (reservation {} each)",
        out.admitted, out.per_process, out.refused, out.reservation
    );
    // The mock reports what was reserved, so no request has an excess and the bound is the quota itself;
    // and the quota is used as one process would use it, not split three ways.
    assert_eq!(out.admitted + out.refused, REQUESTS as u64);
    assert_eq!(out.admitted, QUOTA / out.reservation);
    assert!(charged <= QUOTA);
    assert!(out.answered.iter().all(|&n| n >= REQUESTS as u64 / 3), "{:?}", out.answered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_one_end_users_token_quota() {
    let Some(services) = services("the three-process end-user quota test") else { return };
    let cluster = Cluster::start(&services, &services.redis, "enduser", "").await;
    let token = cluster.account("end-user@example.com", 10).await;
    let body = json!({"name": "server", "end_user_limits": {"tokens_per_month": QUOTA}});
    let (key, id) = cluster.key(0, &token, body).await;
    cluster.until_known_everywhere(&key).await;

    let user = [("x-tollgate-end-user", "customer-42")];
    // Fewer than the key's 1,000 requests a minute, so the calls after the burst meet only the quota.
    let out = quota_burst(&cluster, &key, END_USER_REQUESTS, &user, "this end user's monthly token quota").await;
    let path = format!("/v1/usage?group_by=end_user&key_id={id}");
    let expected = (out.admitted, out.admitted * out.reservation);
    let charged = charged(&cluster, &token, &path, expected, |r| r["end_user"] == "customer-42").await;
    eprintln!(
        "three processes, one end user, quota {QUOTA}: admitted {} ({:?} per process), refused {}, charged {charged}",
        out.admitted, out.per_process, out.refused
    );
    assert_eq!(out.admitted + out.refused, END_USER_REQUESTS as u64);
    assert_eq!(out.admitted, QUOTA / out.reservation);
    assert!(charged <= QUOTA);
    // The end user's quota is spent, not the key's: another end user is still served, on every process.
    for i in 0..3 {
        let keys = Keys::new(&key).with("x-tollgate-end-user", "customer-43");
        let reply = post(&cluster.url(i, Shape::OpenAi.path()), &keys.headers(), BODY).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_one_per_minute_limit() {
    let Some(services) = services("the three-process per-minute limit test") else { return };
    let cluster = Cluster::start(&services, &services.redis, "rpm", "").await;
    let token = cluster.account("rpm@example.com", 10).await;
    let rpm = 60u64;
    let (key, _) = cluster.key(0, &token, json!({"name": "paced", "limits": {"requests_per_minute": rpm}})).await;
    cluster.until_known_everywhere(&key).await;

    let fleet = cluster.fleet(2).await;
    let started = Instant::now();
    let answers = fleet.burst(300, |base| provider_post(base, "/v1/chat/completions", &key, &[], BODY)).await;
    let elapsed = started.elapsed();
    let mut admitted = 0u64;
    for answer in &answers {
        match answer.status {
            200 => admitted += 1,
            429 => assert!(answer.body.contains("requests per minute for this key"), "{}", answer.body),
            other => panic!("process {} answered {other}: {}", answer.process, answer.body),
        }
    }
    // GCRA with the burst equal to the limit: at most rpm + rpm·t/60 in t seconds, across all three.
    let refill = (rpm as f64 * elapsed.as_secs_f64() / 60.0).ceil() as u64;
    eprintln!(
        "three processes, {rpm} requests per minute: 300 sent in {elapsed:?}, admitted {admitted} (bound {})",
        rpm + refill
    );
    assert!(admitted >= rpm, "the limit's burst was not usable across processes: {admitted}");
    assert!(admitted <= rpm + refill, "admitted {admitted} over {rpm} + {refill}");
}
