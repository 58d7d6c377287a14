//! Keys on every backend: the lifecycle, the caps under parallel creation from two instances, trial
//! keys, and the changes servers follow.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Subject, run};
use crate::auth::access::{KeyAccess, Scopes};
use crate::auth::keys::{KeyKind, KeyLimits, KeyRecord};
use crate::store::{Claim, KeyUpdate, NewKey, StoreError, TRIAL_ACCOUNT, UsageAddition};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_created_read_updated_revoked_and_rotated() {
    run("lifecycle", |s: Subject| async move {
        let (secret, one) = s.key(KeyKind::Live, NewKey { expires_at: Some(500), ..NewKey::live("one", 10) });
        let (_, two) = s.key(KeyKind::Publishable, NewKey::live("two", 11));
        let created = s.store.create_keys(vec![one.clone(), two.clone()]).await.unwrap();
        assert_eq!(created.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["one", "two"]);
        let listed = s.store.list_keys().await.unwrap();
        assert_eq!(listed.iter().map(|k| k.id).collect::<Vec<_>>(), [one.identity.id, two.identity.id]);
        let record = s.store.key_record(one.identity.id).await.unwrap().unwrap();
        assert_eq!((record.hash, record.expires_at), (s.hasher.hash(secret.expose()), Some(500)));
        assert_eq!(&*record.account, "default");

        let update = KeyUpdate {
            name: "renamed".into(),
            limits: KeyLimits {
                requests_per_minute: Some(7),
                tokens_per_month: Some(u64::MAX),
                ..KeyLimits::default()
            },
            access: KeyAccess {
                scopes: Scopes::from_stored("chat"),
                providers: Some(vec!["openai".into()]),
                models: None,
            },
            policy: Default::default(),
            description: Some("d".into()),
            metadata: Some(serde_json::json!({"team": "a"})),
        };
        assert!(s.store.update_key(one.identity.id, update).await.unwrap());
        let info = s.store.key_info(one.identity.id).await.unwrap().unwrap();
        assert_eq!((info.name.as_str(), info.limits.requests_per_minute), ("renamed", Some(7)));
        assert_eq!(info.limits.tokens_per_month, Some(i64::MAX as u64), "saturated, not wrapped");
        assert_eq!(info.access.providers.as_deref(), Some(&["openai".to_owned()][..]));
        assert_eq!(
            (info.description.as_deref(), info.metadata.clone()),
            (Some("d"), Some(serde_json::json!({"team": "a"})))
        );
        let absent = s.key(KeyKind::Live, NewKey::live("x", 1)).1.identity.id;
        assert!(!s.store.update_key(absent, KeyUpdate { name: "n".into(), ..update_of(&info) }).await.unwrap());

        s.store.touch_keys(vec![(one.identity.id, 40), (one.identity.id, 30)]).await.unwrap();
        assert_eq!(s.store.key_info(one.identity.id).await.unwrap().unwrap().last_used_at, Some(40));

        let page = s.store.keys_page("default".into(), None, 1).await.unwrap().unwrap();
        assert_eq!(page.iter().map(|k| k.id).collect::<Vec<_>>(), [one.identity.id]);
        let rest = s.store.keys_page("default".into(), Some(one.identity.id.to_string()), 5).await.unwrap();
        assert_eq!(rest.unwrap().iter().map(|k| k.id).collect::<Vec<_>>(), [two.identity.id]);
        assert!(s.store.keys_page("default".into(), Some("nope".into()), 5).await.unwrap().is_none());

        // Rotation: with grace both are active; a second rotation is pending; a revoked key does not rotate.
        let (_, next) = s.key(KeyKind::Live, NewKey::live("-", 0));
        let rotated = s.store.rotate_key(one.identity.id, next.identity.clone(), 20, 60, true).await.unwrap();
        assert_eq!((rotated.info.name.as_str(), rotated.old_revoked_at), ("renamed", 80));
        assert_eq!(rotated.info.limits.requests_per_minute, Some(7), "the settings carry over");
        let again = s.key(KeyKind::Live, NewKey::live("-", 0)).1.identity;
        let pending = s.store.rotate_key(one.identity.id, again.clone(), 21, 0, true).await;
        assert!(matches!(pending, Err(StoreError::RotationPending(80))), "{pending:?}");

        assert!(s.store.revoke_key(two.identity.id, 30).await.unwrap());
        assert!(!s.store.revoke_key(two.identity.id, 31).await.unwrap(), "revoking twice is no change");
        let gone = s.store.rotate_key(two.identity.id, again, 40, 0, true).await;
        assert!(matches!(gone, Err(StoreError::KeyNotActive)), "{gone:?}");
        assert_eq!(s.store.key_info(two.identity.id).await.unwrap().unwrap().status_at(30), "revoked");
    })
    .await;
}

fn update_of(info: &crate::store::KeyInfo) -> KeyUpdate {
    KeyUpdate {
        name: info.name.clone(),
        limits: info.limits,
        access: info.access.clone(),
        policy: info.policy.clone(),
        description: info.description.clone(),
        metadata: info.metadata.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_parallel_creations_from_two_instances_never_pass_a_cap_of_three() {
    run("caps", |s: Subject| async move {
        let account = s.account("acct_cap", 3).await;
        let other = s.another().await;
        let creations: Vec<_> = (0..16)
            .map(|i| {
                let store = if i % 2 == 0 { Arc::clone(&s.store) } else { Arc::clone(&other) };
                let key =
                    s.key(KeyKind::Live, NewKey { account: account.clone(), ..NewKey::live(&format!("k{i}"), 2) }).1;
                tokio::spawn(async move { store.create_key_within_cap(key, 2).await })
            })
            .collect();
        let mut created = 0;
        for creation in creations {
            match creation.await.unwrap() {
                Ok(_) => created += 1,
                Err(StoreError::KeyCapReached(active)) => assert_eq!(active, 3),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(created, 3);
        let keys = s.store.keys_page(account.clone(), None, 100).await.unwrap().unwrap();
        assert_eq!(keys.len(), 3, "never more than the cap");

        // A revoked key frees its place; an expired one too.
        assert!(s.store.revoke_key(keys[0].id, 3).await.unwrap());
        let key = s.key(KeyKind::Live, NewKey { account: account.clone(), ..NewKey::live("after", 4) }).1;
        s.store.create_key_within_cap(key, 4).await.unwrap();
        let key = s.key(KeyKind::Live, NewKey { account: account.clone(), ..NewKey::live("over", 4) }).1;
        assert!(matches!(s.store.create_key_within_cap(key, 4).await, Err(StoreError::KeyCapReached(3))));
        // A rotation with grace needs room under the cap; without grace it is a swap.
        let (_, next) = s.key(KeyKind::Live, NewKey::live("-", 0));
        let full = s.store.rotate_key(keys[1].id, next.identity.clone(), 5, 60, true).await;
        assert!(matches!(full, Err(StoreError::KeyCapReached(3))), "{full:?}");
        s.store.rotate_key(keys[1].id, next.identity, 5, 0, true).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trial_keys_are_created_replaced_and_claimed_once() {
    run("trial", |s: Subject| async move {
        let trial = || s.key(KeyKind::Trial, NewKey { account: TRIAL_ACCOUNT.into(), ..NewKey::live("trial", 1) }).1;
        let device = [9u8; 32];
        let first = s.store.create_trial_key(device, trial()).await.unwrap();
        assert!(first.created);
        let second = s.store.create_trial_key(device, trial()).await.unwrap();
        assert_eq!((second.created, second.record.id), (false, first.record.id), "one key per device");
        assert_eq!(s.store.trial_devices().await.unwrap(), vec![(first.record.id, device)]);

        let replaced = s.store.replace_trial_key(device, trial(), 5).await.unwrap();
        assert!(replaced.created && replaced.record.id != first.record.id);
        assert_eq!(s.store.key_info(first.record.id).await.unwrap().unwrap().revoked_at, Some(5));
        assert_eq!(s.store.trial_key_of_device(device).await.unwrap().unwrap().id, replaced.record.id);
        let live = s.key(KeyKind::Live, NewKey::live("x", 1)).1;
        assert!(s.store.create_trial_key([1; 32], live.clone()).await.is_err(), "only trial keys serve devices");

        let usage = UsageAddition {
            key: replaced.record.id,
            account: TRIAL_ACCOUNT.into(),
            day: 1,
            model: "m".into(),
            requests: 2,
            input_tokens: 5,
            output_tokens: 3,
        };
        s.store.apply_usage(super::batch(vec![usage], Vec::new())).await.unwrap();
        let account = s.account("acct_claim", 1).await;
        let claimed = match s.store.claim_trial_key(replaced.record.id, account.clone(), 10).await.unwrap() {
            Claim::Claimed(info) => info,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (claimed.account.as_str(), claimed.kind, claimed.limits),
            (account.as_str(), KeyKind::Trial, Default::default())
        );
        let rows = s.store.usage_report(Some(account.clone()), Some(replaced.record.id), 0, 9).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.requests).sum::<u64>(), 2, "the usage moved with the key");
        assert!(s.store.trial_devices().await.unwrap().is_empty());
        let twice = s.store.claim_trial_key(replaced.record.id, account.clone(), 11).await.unwrap();
        assert!(matches!(twice, Claim::AlreadyClaimed), "{twice:?}");
        let live = s.store.create_keys(vec![live]).await.unwrap().remove(0);
        assert!(matches!(s.store.claim_trial_key(live.id, account.clone(), 11).await.unwrap(), Claim::NotTrial));
        let another = s.store.create_trial_key([4; 32], trial()).await.unwrap().record.id;
        let full = s.store.claim_trial_key(another, account, 12).await;
        assert!(matches!(full, Err(StoreError::KeyCapReached(1))), "the account's cap applies: {full:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_incremental_and_a_write_elsewhere_wakes_the_waiter() {
    run("changes", |s: Subject| async move {
        let collect = |since| {
            let store = Arc::clone(&s.store);
            async move {
                let records: Arc<Mutex<Vec<KeyRecord>>> = Arc::default();
                let sink = Arc::clone(&records);
                let c = store.key_changes(since, Box::new(move |r| sink.lock().unwrap().push(r))).await.unwrap();
                let got = records.lock().unwrap().iter().map(|r| (r.id, r.revoked_at)).collect::<Vec<_>>();
                (got, c)
            }
        };
        let (_, one) = s.key(KeyKind::Live, NewKey::live("one", 1));
        s.store.create_keys(vec![one.clone()]).await.unwrap();
        let (all, c) = collect(0).await;
        assert_eq!(all, [(one.identity.id, None)]);
        assert!(c.plans.contains(&("default".to_owned(), "default".to_owned())), "{:?}", c.plans);
        let version = c.version;
        let (none, same) = collect(version).await;
        assert!(none.is_empty());
        assert_eq!(same.version, version, "nothing new, same version");

        // Without a write the waiter waits its whole interval.
        let started = Instant::now();
        s.store.wait_for_changes(version, Duration::from_millis(300)).await;
        assert!(started.elapsed() >= Duration::from_millis(290), "{:?}", started.elapsed());

        // A revocation by another instance: the waiter returns early where the backend notifies.
        let other = s.another().await;
        let waiter = {
            let store = Arc::clone(&s.store);
            tokio::spawn(async move {
                let started = Instant::now();
                store.wait_for_changes(version, Duration::from_secs(10)).await;
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(other.revoke_key(one.identity.id, 7).await.unwrap());
        let disabled = s.account("acct_off", 1).await;
        other.set_disabled(disabled.clone(), true).await.unwrap();
        if s.notifies {
            let waited = waiter.await.unwrap();
            assert!(waited < Duration::from_secs(5), "woken by the write, after {waited:?}");
        } else {
            waiter.abort();
        }
        let (later, c) = collect(version).await;
        assert_eq!(later, [(one.identity.id, Some(7))], "only what changed");
        assert!(c.version > version);
        assert_eq!(c.disabled, [disabled]);
    })
    .await;
}
