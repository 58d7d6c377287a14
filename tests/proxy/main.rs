//! Integration tests against the real server embedded on port 0 and a real mock upstream.

#[path = "../common/mod.rs"]
mod common;

mod browser;
mod connections;
mod errors;
mod forwarding;
mod fuzz_regressions;
mod https;
mod identity;
mod isolation;
mod limits;
mod management;
mod management_accounts;
mod management_telemetry;
mod metering;
mod metrics;
mod paths;
mod postgres;
mod projects;
mod redis_counters;
mod reservations;
mod serving;
mod sessions;
mod spacing;
mod streaming;
mod trial;
