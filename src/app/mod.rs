//! The `App`: everything a request needs, built once from the configuration, and the background tasks
//! around it (key refresh, usage and last-used flushes, lease sweeps).

pub mod flush;
pub mod in_flight;
pub mod sync;
pub mod trial;

use std::sync::Arc;

use crate::auth::keys::{KeyHasher, KeyTable};
use crate::auth::signing::Sealer;
use crate::auth::{passwords, sessions, throttle};
use crate::clock::{self, Clock, SystemClock};
use crate::config::Config;
use crate::config::counters::CountersBackend;
use crate::metering::limits::redis::{ConnectError, RedisCounters, wall_offset};
use crate::metering::limits::{self, CounterBackend, Counters, MemoryCounters};
use crate::metering::usage::book::UsageBook;
use crate::providers::routes::Routes;
use crate::store::{self, Store, StoreError};
use crate::telemetry::access_log::RequestIds;
use crate::telemetry::metrics;
use crate::upstream::Upstream;
use in_flight::InFlight;
use sync as key_sync;

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    Store(StoreError),
    /// The metrics listener could not be bound.
    MetricsListen(std::io::Error),
    DashboardListen(std::io::Error),
    Tls(String),
    Upstream(rustls::Error),
    /// The Redis of `[counters]` could not be reached at start.
    Counters(ConnectError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Store(e) => write!(f, "{e}"),
            StartError::MetricsListen(e) => write!(f, "metrics.listen: {e}"),
            StartError::DashboardListen(e) => write!(f, "dashboard.listen: {e}"),
            StartError::Tls(e) => write!(f, "TLS: {e}"),
            StartError::Upstream(e) => write!(f, "upstream TLS configuration: {e}"),
            StartError::Counters(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The running server's state and its background tasks.
pub struct Started {
    pub app: Arc<App>,
    pub background: Background,
}

/// Opens the store, loads the keys and the usage carried over a restart, builds the [`App`] and starts
/// its background tasks (key refresh, housekeeping).
pub async fn start(config: Config) -> Result<Started, StartError> {
    start_with_clock(config, Box::new(SystemClock::new())).await
}

/// [`start`], with the limits reading `clock` (a test's [`clock::ManualClock`] moves days and months).
pub async fn start_with_clock(config: Config, clock: Box<dyn Clock>) -> Result<Started, StartError> {
    let upstream = Upstream::new(&config.upstream, &config.providers).map_err(StartError::Upstream)?;
    let store = store::open(&config.store).await.map_err(StartError::Store)?;
    let keys = Arc::new(
        KeyTable::new(config.keys.prefix.clone(), KeyHasher::new(config.keys.hash_secret))
            .with_sealer(config.keys.signing_key.as_ref().map(|k| Arc::new(Sealer::new(k)))),
    );
    let tables = key_sync::Tables {
        keys: Arc::clone(&keys),
        plans: Arc::new(limits::Plans::new(config.plans.clone())),
        readiness: Arc::new(key_sync::Readiness::new(config.store.max_staleness)),
    };
    let version = key_sync::load_all(&*store, &tables).await.map_err(StartError::Store)?;
    tracing::info!(keys = keys.len(), store = %config.store.describe(), "key store loaded");

    // Reservations live at most as long as a request may; a sweep ends any left behind.
    let lease = config.upstream.total_timeout + std::time::Duration::from_secs(60);
    let cap = config.limits.end_users_per_key;
    let counters = match config.counters.backend {
        CountersBackend::Memory => Counters::Memory(MemoryCounters::new(lease).with_end_user_cap(cap)),
        CountersBackend::Redis => Counters::Redis(
            RedisCounters::connect(&config.counters, lease, cap, wall_offset(clock.now()))
                .await
                .map_err(StartError::Counters)?,
        ),
    };
    carry_usage(&*store, &counters, clock.now()).await.map_err(StartError::Store)?;
    let trials = trial::Trials::load(&*store, &config.trial).await.map_err(StartError::Store)?;

    let app = Arc::new(App {
        routes: Routes::new(&config.providers),
        in_flight: InFlight::new(config.server.max_in_flight),
        request_ids: RequestIds::new(),
        keys,
        upstream,
        readiness: Arc::clone(&tables.readiness),
        plans: Arc::clone(&tables.plans),
        counters,
        usage: Arc::new(UsageBook::default()),
        unflushed: flush::Unflushed::default(),
        clock,
        store: Arc::clone(&store),
        credentials: sessions::Credentials::new(
            config.management.session_secret.as_deref(),
            config.management.admin_token.as_deref(),
            config.management.access_token_ttl,
        ),
        logins: throttle::LoginGuard::new(passwords::PasswordPool::for_this_machine()),
        last_used: dashmap::DashMap::new(),
        trials,
        metrics: Arc::new(metrics::Metrics::new(config.providers.iter().map(|p| p.name.clone()).collect())),
        config,
    });
    if let Counters::Redis(redis) = &app.counters {
        app.metrics.watch_counters(redis.watch());
    }
    let refresher = tokio::spawn(key_sync::follow(store, tables, version, app.config.store.refresh_interval));
    let (stop_housekeeping, stopped) = tokio::sync::watch::channel(false);
    let housekeeper = tokio::spawn(housekeeping(Arc::clone(&app), stopped));
    Ok(Started { app, background: Background { refresher, stop_housekeeping, housekeeper } })
}

/// The tasks that run beside the server until it stops.
pub struct Background {
    refresher: tokio::task::JoinHandle<()>,
    stop_housekeeping: tokio::sync::watch::Sender<bool>,
    housekeeper: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Stops the tasks once the server has drained, then writes the usage still pending.
    pub async fn stop(self, app: &App) {
        self.refresher.abort();
        // Stopped between rounds, never aborted: an abort could cut a flush after it took the pending
        // usage from the book and before the store had it.
        let _ = self.stop_housekeeping.send(true);
        if let Err(e) = self.housekeeper.await {
            tracing::error!(error = %e, "housekeeping task failed");
        }
        match flush::flush_usage(&app.usage, &app.unflushed, &*app.store).await {
            Ok(rows) => tracing::info!(rows, "usage flushed"),
            Err(e) => {
                tracing::error!(error = %e, "final usage flush failed; up to one flush interval of usage is lost")
            }
        }
    }
}

/// Seeds today's request counts and this month's token totals from the store, so a restart keeps them.
async fn carry_usage(store: &dyn Store, counters: &Counters, now: limits::Now) -> Result<(), StoreError> {
    let unix = now.unix;
    let totals = store.usage_totals(clock::day_of(unix), clock::month_first_day(unix)).await?;
    for total in totals {
        let carried = limits::Carried { day_requests: total.day_requests, month_tokens: total.month_tokens };
        counters.carry(total.key, &Arc::from(total.account.as_str()), carried, now);
    }
    for total in store.end_user_totals(clock::day_of(unix), clock::month_first_day(unix)).await? {
        let carried = limits::Carried { day_requests: total.day_requests, month_tokens: total.month_tokens };
        counters.carry_end_user(total.key, &total.end_user, carried, now);
    }
    Ok(())
}

/// Every `store.flush_interval`: writes pending usage, ends reservations whose lease ran out and forgets
/// the limits counters and model labels of keys that left the key table.
async fn housekeeping(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(app.config.store.flush_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        if let Err(e) = flush::flush_usage(&app.usage, &app.unflushed, &*app.store).await {
            tracing::warn!(error = %e, "usage flush failed; retrying at the next interval");
        }
        if let Err(e) = flush::flush_last_used(&app).await {
            tracing::warn!(error = %e, "last-used flush failed");
        }
        let expired = app.counters.sweep(app.now());
        if expired > 0 {
            tracing::warn!(expired, "token reservations ended by their lease");
        }
        app.counters.forget(|id| app.keys.contains(id));
        // A refresh runs for at most a statement timeout or two; ten minutes leaves room to spare.
        app.keys.forget_tombstones(crate::clock::unix_now().saturating_sub(600));
        app.usage.forget_keys(|id| app.keys.contains(id));
    }
}

/// Everything a request needs, shared by all connections.
pub struct App {
    pub config: Config,
    /// The limits' counters (see `metering::limits` for why an enum, not a trait object).
    pub counters: Counters,
    pub plans: Arc<crate::metering::limits::Plans>,
    pub usage: Arc<UsageBook>,
    /// The usage batch a failed flush left, sent again before anything newer.
    pub unflushed: flush::Unflushed,
    /// The limits' clock: the system's in the server, a manual one where a test needs to move time.
    pub clock: Box<dyn Clock>,
    pub store: Arc<dyn Store>,
    pub credentials: crate::auth::sessions::Credentials,
    /// Password checks: a bounded argon2 pool behind per-address and per-account throttles.
    pub logins: crate::auth::throttle::LoginGuard,
    /// When each key was last used, waiting for the next flush (no store write per request).
    pub last_used: dashmap::DashMap<crate::auth::keys::KeyId, i64>,
    /// Trial keys of anonymous devices, and their issuance throttle.
    pub trials: trial::Trials,
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    pub routes: Routes,
    pub keys: Arc<KeyTable>,
    pub upstream: Upstream,
    pub in_flight: InFlight,
    pub request_ids: RequestIds,
    pub readiness: Arc<crate::app::sync::Readiness>,
}

impl App {
    /// This instant on the limits' clocks.
    pub fn now(&self) -> limits::Now {
        self.clock.now()
    }
}
