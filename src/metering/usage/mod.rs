//! Token usage as each provider reports it (docs/ARCHITECTURE.md, Usage counting), read while the response streams
//! past: [`tap::UsageTap`] watches SSE events (and strips the usage chunk tollgate asked OpenAI for on a caller's
//! behalf), [`json_scan::UsageScanner`] finds the usage object of a JSON body without holding the body.
//! [`book::UsageBook`] collects the figures for the store. Where each provider puts its usage and how its fields read
//! are the provider's own ([`crate::providers::meter`]).

pub mod book;
pub mod json_scan;
pub mod members;
pub mod tap;

pub use crate::providers::{Meter, Usage};
