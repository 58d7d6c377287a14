//! Shared test rig, by concern: the mock upstream (`upstream`), the real tollgate server embedded on port 0
//! (`gateway`), small HTTP clients (`clients`) and the provider shapes (`shapes`), all re-exported here,
//! with the secrets every test gateway is given and helpers for calling with keys.
// Each test crate (proxy, binary, memory) uses a different part of the rig.
#![allow(dead_code, unused_imports)]

mod clients;
mod gateway;
mod redis;
mod shapes;
mod upstream;

pub use clients::*;
pub use gateway::*;
pub use redis::RedisServer;
pub use shapes::*;
pub use tollgate::store::{NewKey, SqliteStore};
pub use upstream::*;

/// The provider key every test call sends as `X-Provider-Key`.
pub const PROVIDER_KEY: &str = "sk-test-provider-key-0123456789";
/// The operator token every test gateway is given (as `TOLLGATE_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "operator-token-for-tests-0123456789";
/// The metrics token every test gateway is given (as `TOLLGATE_METRICS_TOKEN`), for configs that put
/// `/metrics` on the main listener.
pub const METRICS_TOKEN: &str = "metrics-token-for-tests-0123456789";
/// The session secret every test gateway is given (as `TOLLGATE_SESSION_SECRET`, required beside the
/// operator token).
pub const SESSION_SECRET: &str = "session-secret-for-tests-0123456789";
/// The key sealing signing secrets every test gateway is given (as `TOLLGATE_SIGNING_KEY`, 32 bytes in hex).
pub const SIGNING_KEY: &str = "5e11ed5e11ed5e11ed5e11ed5e11ed5e11ed5e11ed5e11ed5e11ed5e11ed5e11";
/// The device-hash secret every test gateway is given (as `TOLLGATE_TRIAL_SECRET`); used only where
/// `[trial]` is on.
pub const TRIAL_SECRET: &str = "trial-secret-for-tests-0123456789";
