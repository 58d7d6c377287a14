//! Usage, end-user usage and signing secrets on every backend.

use std::sync::Arc;

use super::{Subject, batch, run};
use crate::auth::keys::KeyKind;
use crate::auth::signing::Signing;
use crate::store::{EndUserAddition, NewKey, UsageAddition, UsageBatch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_adds_up_saturates_and_reports_the_same_twice() {
    run("usage", |s: Subject| async move {
        let (_, key) = s.key(KeyKind::Live, NewKey { project: None, ..NewKey::live("u", 1) });
        let key = s.store.create_keys(vec![key]).await.unwrap().remove(0);
        let row = |day, model: &str, requests, tokens| UsageAddition {
            key: key.id,
            account: Arc::from("default"),
            day,
            model: Arc::from(model),
            requests,
            input_tokens: tokens,
            output_tokens: 1,
        };
        s.store.apply_usage(batch(vec![row(10, "a", 1, 5), row(10, "b", 2, 7)], Vec::new())).await.unwrap();
        s.store
            .apply_usage(batch(vec![row(10, "a", 1, 5), row(11, "a", 3, 100), row(3, "a", 9, 1000)], Vec::new()))
            .await
            .unwrap();
        s.store.apply_usage(batch(Vec::new(), Vec::new())).await.unwrap();
        let totals = s.store.usage_totals(11, 10).await.unwrap();
        assert_eq!(totals.len(), 1);
        assert_eq!((totals[0].day_requests, totals[0].month_tokens), (3, 5 + 1 + 7 + 1 + 5 + 1 + 100 + 1));
        let report = s.store.usage_report(Some("default".into()), Some(key.id), 10, 11).await.unwrap();
        let got: Vec<_> = report.iter().map(|r| (r.day, r.model.as_str(), r.requests, r.input_tokens)).collect();
        assert_eq!(got, [(10, "a", 2, 10), (10, "b", 2, 7), (11, "a", 3, 100)]);
        assert_eq!(report[0].key_prefix, key.key_prefix);
        assert_eq!(s.store.usage_report(Some("default".into()), Some(key.id), 10, 11).await.unwrap(), report);
        assert!(s.store.usage_report(Some("other".into()), None, 0, 99).await.unwrap().is_empty());

        s.store.apply_usage(batch(vec![row(12, "d", 1, 2), row(12, "d", 1, 2)], Vec::new())).await.unwrap();
        let twice = s.store.usage_report(None, None, 12, 12).await.unwrap();
        assert_eq!((twice.len(), twice[0].requests, twice[0].input_tokens), (1, 2, 4), "one batch, one row twice");
        s.store
            .apply_usage(batch(vec![row(20, "big", u64::MAX, u64::MAX), row(20, "big", 5, 5)], Vec::new()))
            .await
            .unwrap();
        let big = s.store.usage_report(None, None, 20, 20).await.unwrap();
        assert_eq!((big[0].requests, big[0].input_tokens), (i64::MAX as u64, i64::MAX as u64), "saturated");
        let totals = s.store.usage_totals(20, 20).await.unwrap();
        // SQLite sums as a float (2^63 once rounded), PostgreSQL clamps to the largest BIGINT: neither wraps.
        assert!(totals[0].day_requests >= i64::MAX as u64, "the total saturates too: {}", totals[0].day_requests);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_flushes_from_two_instances_add_up_exactly() {
    run("flushes", |s: Subject| async move {
        let other = s.another().await;
        let key = s.key(KeyKind::Live, NewKey::live("f", 1)).1.identity.id;
        let row = |model: &str| UsageAddition {
            key,
            account: Arc::from("default"),
            day: 30,
            model: Arc::from(model),
            requests: 1,
            input_tokens: 10,
            output_tokens: 1,
        };
        let flushes: Vec<_> = (0..16)
            .map(|i| {
                let store = if i % 2 == 0 { Arc::clone(&s.store) } else { Arc::clone(&other) };
                // Half the batches name the rows in the other order.
                let batch = if i % 4 < 2 { vec![row("p"), row("q")] } else { vec![row("q"), row("p")] };
                tokio::spawn(async move { store.apply_usage(super::batch(batch, Vec::new())).await })
            })
            .collect();
        for flush in flushes {
            flush.await.unwrap().unwrap();
        }
        let rows = s.store.usage_report(None, Some(key), 30, 30).await.unwrap();
        let got: Vec<_> = rows.iter().map(|r| (r.model.as_str(), r.requests, r.input_tokens)).collect();
        assert_eq!(got, [("p", 16, 160), ("q", 16, 160)], "no flush lost or counted twice");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_user_usage_adds_up_and_signing_secrets_follow_their_key() {
    run("end_users", |s: Subject| async move {
        let (_, key) = s.key(KeyKind::Publishable, NewKey::live("pub", 1));
        let key = s.store.create_keys(vec![key]).await.unwrap().remove(0);
        let row = |end_user: &str, day, tokens| EndUserAddition {
            key: key.id,
            account: Arc::from("default"),
            end_user: Arc::from(end_user),
            day,
            requests: 1,
            input_tokens: tokens,
            output_tokens: 1,
        };
        s.store.apply_usage(batch(Vec::new(), vec![row("ann", 10, 5), row("bob", 10, 7)])).await.unwrap();
        s.store
            .apply_usage(batch(Vec::new(), vec![row("ann", 10, 5), row("ann", 11, 100), row("ann", 3, 1000)]))
            .await
            .unwrap();
        let mut totals = s.store.end_user_totals(11, 10).await.unwrap();
        totals.sort_by(|a, b| a.end_user.cmp(&b.end_user));
        let got: Vec<_> = totals.iter().map(|t| (t.end_user.as_str(), t.day_requests, t.month_tokens)).collect();
        assert_eq!(got, [("ann", 1, 5 + 1 + 5 + 1 + 100 + 1), ("bob", 0, 8)]);
        let rows = s.store.end_user_report(Some("default".into()), None, 10, 11).await.unwrap();
        let got: Vec<_> = rows.iter().map(|r| (r.end_user.as_str(), r.day, r.requests, r.input_tokens)).collect();
        assert_eq!(got, [("ann", 10, 2, 10), ("ann", 11, 1, 100), ("bob", 10, 1, 7)]);
        assert!(s.store.end_user_report(Some("other".into()), None, 0, 100).await.unwrap().is_empty());

        let sealed = vec![1u8, 2, 3, 4];
        assert!(s.store.set_signing_secret(key.id, sealed.clone(), 2).await.unwrap());
        let record = s.store.key_record(key.id).await.unwrap().unwrap();
        assert!(matches!(&record.signing, Signing::Sealed(bytes) if **bytes == sealed[..]), "{:?}", record.signing);
        assert!(s.store.revoke_key(key.id, 3).await.unwrap());
        assert!(!s.store.set_signing_secret(key.id, sealed, 4).await.unwrap(), "not on a revoked key");
    })
    .await;
}

/// The same batch sent twice (its first commit landed but its answer was lost, say) is applied once,
/// and a batch carries the usage of keys and of end users together; old batch ids are pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_again_is_counted_once() {
    run("batches", |s: Subject| async move {
        let key = s.key(KeyKind::Live, NewKey::live("b", 1)).1.identity.id;
        let row = UsageAddition {
            key,
            account: Arc::from("default"),
            day: 40,
            model: Arc::from("m"),
            requests: 2,
            input_tokens: 30,
            output_tokens: 4,
        };
        let end_user = EndUserAddition {
            key,
            account: Arc::from("default"),
            end_user: Arc::from("ann"),
            day: 40,
            requests: 2,
            input_tokens: 30,
            output_tokens: 4,
        };
        let first = UsageBatch { made_at: 1_000_000, ..batch(vec![row.clone()], vec![end_user.clone()]) };
        assert!(s.store.apply_usage(first.clone()).await.unwrap(), "applied the first time");
        assert!(!s.store.apply_usage(first.clone()).await.unwrap(), "skipped the second time");
        assert!(!s.another().await.apply_usage(first.clone()).await.unwrap(), "skipped by another instance too");
        let second = UsageBatch { made_at: 1_000_010, ..batch(vec![row.clone()], Vec::new()) };
        assert!(s.store.apply_usage(second).await.unwrap(), "another batch with the same rows is new usage");
        let rows = s.store.usage_report(None, Some(key), 40, 40).await.unwrap();
        let got: Vec<_> = rows.iter().map(|r| (r.requests, r.input_tokens, r.output_tokens)).collect();
        assert_eq!(got, [(4, 60, 8)], "two batches, each counted once");
        let users = s.store.end_user_report(None, Some(key), 40, 40).await.unwrap();
        assert_eq!(users.iter().map(|r| (r.requests, r.input_tokens)).collect::<Vec<_>>(), [(2, 30)]);

        // Ids are kept for the retention period after their batch was made, then pruned.
        let later = crate::store::BATCH_RETENTION_SECONDS + 1_000_001;
        let kept = UsageBatch { made_at: later - 1, ..batch(Vec::new(), Vec::new()) };
        assert!(s.store.apply_usage(kept).await.unwrap());
        assert!(!s.store.apply_usage(first.clone()).await.unwrap(), "still remembered within the retention");
        let pruning = UsageBatch { made_at: later + 1, ..batch(Vec::new(), Vec::new()) };
        assert!(s.store.apply_usage(pruning).await.unwrap());
        assert!(s.store.apply_usage(first).await.unwrap(), "forgotten after the retention");
    })
    .await;
}
