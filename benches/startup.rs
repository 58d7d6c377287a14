//! Start-up with many keys in the store: how long loading them into the in-memory key table takes, and
//! how much memory they then hold. Seeds a fresh SQLite store first (in batches, one transaction each).
//!
//!     cargo bench --bench startup                  # 1,000,000 keys
//!     TOLLGATE_BENCH_KEYS=100000 cargo bench --bench startup
//!     TOLLGATE_BENCH_DB=/tmp/keys.db cargo bench --bench startup   # keep the seeded store

use std::time::Instant;

use tollgate::admin::service::mint;
use tollgate::auth::keys::{KeyHasher, KeyKind, KeyTable};
use tollgate::store::{HashedKey, NewKey, SqliteStore};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (a test harness listing) gets nothing to run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("TOLLGATE_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    // TOLLGATE_BENCH_DB keeps the seeded store for a run of the real binary (benches/scale.sh).
    let path = std::env::var_os("TOLLGATE_BENCH_DB").map_or_else(|| dir.path().join("startup.db"), Into::into);
    let hasher = KeyHasher::new(None);
    {
        let store = SqliteStore::open(&path).expect("store");
        let seeding = Instant::now();
        let mut made = 0;
        while made < n {
            let take = (n - made).min(10_000);
            let batch: Vec<HashedKey> = (made..made + take)
                .map(|i| {
                    let (_, identity) = mint("tg", &hasher, KeyKind::Live).expect("random source");
                    HashedKey { identity, key: NewKey::live(&format!("key-{i}"), 1_700_000_000) }
                })
                .collect();
            store.create_keys(&batch).expect("seed keys");
            made += take;
        }
        eprintln!("seeded {n} keys in {:.1?}", seeding.elapsed());
    }

    let before = rss_kib();
    let started = Instant::now();
    let store = SqliteStore::open(&path).expect("store");
    let table = KeyTable::new("tg".into(), hasher);
    store.key_changes(0, |record| table.upsert(record)).expect("load keys");
    let ready = started.elapsed();
    let after = rss_kib();
    println!(
        "startup with {} keys: ready to serve {:.2?}; key table RSS +{} MiB (process {} MiB)",
        table.len(),
        ready,
        after.saturating_sub(before) / 1024,
        after / 1024
    );
}
