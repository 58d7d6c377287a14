//! Integration tests against the real server embedded on port 0 and a real mock upstream.

#[path = "../common/mod.rs"]
mod common;

mod errors;
mod forwarding;
mod limits;
mod management;
mod metering;
mod metrics;
mod paths;
mod reservations;
mod serving;
mod spacing;
mod streaming;
