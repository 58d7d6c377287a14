//! Tests that run the real `tollgate` binary: the CLI, logging with a canary provider key, and real
//! clients (`curl`, the official Python SDKs, the dashboard in Chromium) against it.

#[path = "../common/mod.rs"]
mod common;

mod canary;
mod cli;
mod clients;
mod connections;
mod crash;
mod dashboard;
mod exhaustion;
mod identity_canary;
mod login;
mod management_log;
mod process;
mod python;
mod server_credential;
mod shared;
mod soak;
mod store_copy;
mod store_migrate;
mod trial_canary;
