//! Key changes across processes: a key made on A serves on C, and its revocation on A is refused on B and
//! C, each within 1 s, measured over 100 trials with the store's poll set to 30 s (so what carries the
//! change is `LISTEN`/`NOTIFY`).

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

const TRIALS: usize = 100;
const BOUND: Duration = Duration::from_secs(1);

/// Calls process `i` with `key` from `since` until it answers `to` (any other answer must be `from`);
/// the time from `since`, giving up after 5 s.
async fn until_status(cluster: &Cluster, i: usize, key: &str, (from, to): (u16, u16), since: Instant) -> Duration {
    let keys = Keys::new(key);
    loop {
        let reply = post(&cluster.url(i, Shape::OpenAi.path()), &keys.headers(), Shape::OpenAi.body()).await;
        if reply.status == to {
            return since.elapsed();
        }
        assert_eq!(reply.status, from, "process {i}: {}", reply.text());
        assert!(since.elapsed() < Duration::from_secs(5), "process {i} still answers {from} after 5 s");
        // Poll about every millisecond: the resolution of the figures below.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn report(what: &str, samples: &mut [Duration]) -> Duration {
    let [min, p50, p90, p99, max] = percentiles(samples);
    eprintln!("{what} over {} trials: min {min:?}, p50 {p50:?}, p90 {p90:?}, p99 {p99:?}, max {max:?}", samples.len());
    max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_and_revocation_reach_every_process_within_a_second() {
    let Some(services) = services("the three-process propagation test") else { return };
    let cluster = Cluster::start(&services, &services.redis, "propagation", "").await;
    let token = cluster.account("propagation@example.com", 10).await;
    let (mut created, mut revoked) = (Vec::with_capacity(TRIALS), Vec::with_capacity(TRIALS));
    for trial in 0..TRIALS {
        // Made on A (process 0): from its acknowledgement until C (process 2) serves it.
        let (status, body) = cluster
            .api(0, http::Method::POST, "/v1/auth/keys", &token, Some(json!({"name": format!("trial-{trial}")})))
            .await;
        let made = Instant::now();
        assert_eq!(status, 201, "{body}");
        let (key, id) = (body["raw_key"].as_str().unwrap().to_owned(), body["id"].as_str().unwrap().to_owned());
        created.push(until_status(&cluster, 2, &key, (401, 200), made).await);
        // B must serve it too before its revocation is timed there.
        until_status(&cluster, 1, &key, (401, 200), made).await;

        // Revoked on A: from its acknowledgement until both B and C refuse it.
        let (status, body) = cluster.api(0, http::Method::DELETE, &format!("/v1/auth/keys/{id}"), &token, None).await;
        let gone = Instant::now();
        assert_eq!(status, 200, "{body}");
        let (b, c) = tokio::join!(
            until_status(&cluster, 1, &key, (200, 401), gone),
            until_status(&cluster, 2, &key, (200, 401), gone)
        );
        revoked.push(b.max(c));
    }
    let created_max = report("a key made on A serves on C after", &mut created);
    let revoked_max = report("a key revoked on A is refused on B and C after", &mut revoked);
    assert!(created_max < BOUND, "a creation took {created_max:?} to reach C");
    assert!(revoked_max < BOUND, "a revocation took {revoked_max:?} to reach B and C");
}
