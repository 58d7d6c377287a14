//! What tollgate says about itself: Prometheus metrics, the access log, and the log writer.

pub mod access_log;
pub mod log_writer;
pub mod metrics;
