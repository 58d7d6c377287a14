//! What a request is charged. At admission tollgate reserves `input estimate + output cap`; when the
//! request ends the reservation is settled to the provider's own usage figure, or, when none arrived, to
//! the documented estimate below, and the figure goes to the usage book for the store.
//!
//! When no final usage arrived:
//! - the provider refused the request (status ≥ 400): nothing (providers do not bill refusals);
//! - the upstream could not be reached, or answered with a redirect: nothing (nothing was processed);
//! - the upstream timed out or failed before answering: the input estimate;
//! - the caller left before the response head: the whole reservation (a non-streamed completion is
//!   generated, and billed, whether or not anyone waits for it);
//! - a stream ended early (caller gone, upstream cut, timeout): input as reported (Anthropic's
//!   `message_start`, Gemini's running `usageMetadata`) or else estimated, plus the larger of the output
//!   reported so far and one token per event delivered;
//! - a JSON body without usage, or cut: the whole reservation.
//!
//! The input estimate is one token per four bytes of request body, which overestimates JSON.

use std::sync::Arc;

use crate::keys::KeyId;
use crate::limits::Admission;
use crate::usage::Usage;
use crate::usage::book::UsageBook;

pub struct Metering {
    admission: Option<Admission>,
    book: Arc<UsageBook>,
    key: KeyId,
    account: Arc<str>,
    model: Arc<str>,
    day: i64,
    pub input_estimate: u64,
    pub output_cap: u64,
}

impl Metering {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        admission: Admission,
        book: Arc<UsageBook>,
        key: KeyId,
        account: Arc<str>,
        model: Arc<str>,
        day: i64,
        input_estimate: u64,
        output_cap: u64,
    ) -> Metering {
        let model = book.request(key, &account, day, model);
        Metering { admission: Some(admission), book, key, account, model, day, input_estimate, output_cap }
    }

    pub fn headers(&self) -> Option<&crate::limits::RateHeaders> {
        self.admission.as_ref().map(|a| &a.headers)
    }

    /// The whole reservation, as usage.
    pub fn reservation(&self) -> Usage {
        Usage { input: self.input_estimate, output: self.output_cap }
    }

    /// Ends the reservation, charging `usage`. Later calls do nothing.
    pub fn settle(&mut self, usage: Usage) {
        if let Some(admission) = self.admission.take() {
            self.book.tokens(self.key, &self.account, self.day, &self.model, usage);
            admission.settle(usage.total());
        }
    }
}

impl Drop for Metering {
    fn drop(&mut self) {
        // Dropped unsettled: the caller left before the response head.
        let whole = self.reservation();
        self.settle(whole);
    }
}

/// A request's size in tokens, estimated from its body: one token per four bytes.
pub fn input_estimate(body_len: usize) -> u64 {
    (body_len as u64).div_ceil(4)
}
