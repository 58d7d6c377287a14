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
//! The input estimate is one token per four bytes of request body, which overestimates JSON. The output
//! cap is the request's own maximum (or `limits.default_max_output_tokens`) times the number of choices
//! it asks for (`n`, `best_of`, `candidateCount`). Both saturate instead of wrapping: a reservation of
//! `u64::MAX` fits no quota (quotas come from TOML or the store, so they are at most `i64::MAX`), and the
//! request is refused as over its token quota.

pub mod limits;
pub mod usage;

use std::sync::Arc;

use crate::auth::keys::KeyId;
use crate::metering::limits::{RateHeaders, ReservationTicket, Subject, Ticket};
use crate::metering::usage::book::{EndUserKey, UsageBook, model_label};
use crate::metering::usage::{Meter, Usage};
use crate::providers::Endpoint;

/// The most tokens one figure of one request is charged (2^40, about 1.1 trillion): an upstream may report
/// anything, and a figure beyond every real one must not push the store's sums past what it can hold.
pub const MAX_REPORTED_TOKENS: u64 = 1 << 40;

/// A metered request from its reservation to its charge: the limits' ticket and the request's line in
/// the usage book, ended together by [`Metering::settle`] with the figure the rules above give.
pub struct Metering {
    ticket: Option<Ticket>,
    book: Arc<UsageBook>,
    key: KeyId,
    account: Arc<str>,
    model: Arc<str>,
    day: i64,
    /// Where the request's end user's usage is counted, when it acts for one.
    end_user: Option<EndUserKey>,
    pub input_estimate: u64,
    pub output_cap: u64,
}

impl Metering {
    /// Counts the request in the usage book (for `subject`'s key and account, under the model it names,
    /// on UTC day `day`) and holds `ticket`, reserved for `reservation`, until the request ends.
    pub fn new(
        book: Arc<UsageBook>,
        subject: &Subject,
        model: Option<&str>,
        day: i64,
        reservation: Reservation,
        ticket: Ticket,
    ) -> Metering {
        let model = book.request(subject.key, &subject.account, day, model_label(model));
        let end_user =
            subject.end_user.as_ref().map(|e| EndUserKey { key: subject.key, end_user: Arc::clone(&e.id), day });
        if let Some(at) = &end_user {
            book.end_user_request(at, &subject.account);
        }
        Metering {
            ticket: Some(ticket),
            book,
            key: subject.key,
            account: Arc::clone(&subject.account),
            model,
            day,
            end_user,
            input_estimate: reservation.input_estimate,
            output_cap: reservation.output_cap,
        }
    }

    /// The rate-limit state after the reservation; `None` once settled.
    pub fn headers(&self) -> Option<&RateHeaders> {
        self.ticket.as_ref().map(ReservationTicket::headers)
    }

    /// The whole reservation, as usage.
    pub fn reservation(&self) -> Usage {
        Usage { input: self.input_estimate, output: self.output_cap }
    }

    /// Ends the reservation, charging `usage`. Later calls do nothing.
    pub fn settle(&mut self, usage: Usage) {
        let usage =
            Usage { input: usage.input.min(MAX_REPORTED_TOKENS), output: usage.output.min(MAX_REPORTED_TOKENS) };
        if let Some(ticket) = self.ticket.take() {
            self.book.tokens(self.key, &self.account, self.day, &self.model, usage);
            if let Some(at) = &self.end_user {
                self.book.end_user_tokens(at, &self.account, usage);
            }
            ticket.settle(usage.total());
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
    u64::try_from(body_len).unwrap_or(u64::MAX).div_ceil(4)
}

/// What a request holds of its quotas while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub input_estimate: u64,
    pub output_cap: u64,
}

impl Reservation {
    /// The tokens reserved; saturates, so a huge cap is refused rather than wrapped to a small one.
    pub fn total(self) -> u64 {
        self.input_estimate.saturating_add(self.output_cap)
    }
}

/// What a request's body asks for that its reservation depends on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    /// Its own output cap (`max_tokens` and the like), if it names one.
    pub max_output: Option<u64>,
    /// How many choices or candidates it asks for (0 or 1: one).
    pub choices: u64,
}

/// The reservation of a request on a route metered by `meter`, from what its body asks for.
pub fn reservation(
    meter: Meter,
    endpoint: Endpoint,
    asked: Asked,
    body_len: usize,
    default_max_output: u64,
) -> Reservation {
    let input_estimate = input_estimate(body_len);
    let output_cap = match (meter, endpoint) {
        (Meter::Free, _) => return Reservation { input_estimate: 0, output_cap: 0 },
        (Meter::OpenAiEmbeddings, _) | (_, Endpoint::EmbedContent) => 0,
        _ => asked.max_output.unwrap_or(default_max_output).saturating_mul(asked.choices.max(1)),
    };
    Reservation { input_estimate, output_cap }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProviderKind;
    use crate::proxy::request_body::inspect_body;
    use proptest::prelude::*;

    const ROUTES: [(ProviderKind, Endpoint); 6] = [
        (ProviderKind::OpenAi, Endpoint::ChatCompletions),
        (ProviderKind::OpenAi, Endpoint::Completions),
        (ProviderKind::OpenAi, Endpoint::Responses),
        (ProviderKind::Anthropic, Endpoint::Messages),
        (ProviderKind::Gemini, Endpoint::GenerateContent),
        (ProviderKind::Gemini, Endpoint::StreamGenerateContent),
    ];

    /// A number as a caller may write it: small, huge, negative or fractional.
    #[derive(Debug, Clone, Copy)]
    enum Num {
        Int(u64),
        Negative(i64),
        Fraction(f64),
    }

    impl Num {
        fn json(self) -> String {
            match self {
                Num::Int(v) => v.to_string(),
                Num::Negative(v) => v.to_string(),
                Num::Fraction(v) => format!("{v:?}"),
            }
        }
        fn int(self) -> Option<u64> {
            match self {
                Num::Int(v) => Some(v),
                _ => None,
            }
        }
        fn grown(self, by: u64) -> Num {
            match self {
                Num::Int(v) => Num::Int(v.saturating_add(by)),
                other => other,
            }
        }
    }

    fn num() -> impl Strategy<Value = Num> {
        prop_oneof![
            4 => (0u64..5000).prop_map(Num::Int),
            2 => any::<u64>().prop_map(Num::Int),
            1 => Just(Num::Int(u64::MAX)),
            1 => (i64::MIN..0).prop_map(Num::Negative),
            1 => (0.5f64..1e6).prop_map(Num::Fraction),
        ]
    }

    /// `max_tokens`, `max_completion_tokens`, `max_output_tokens`, `n`, `best_of`, `maxOutputTokens`,
    /// `candidateCount`, each present or not.
    type Fields = [Option<Num>; 7];

    fn body(f: &Fields) -> String {
        let names = ["max_tokens", "max_completion_tokens", "max_output_tokens", "n", "best_of"];
        let mut members: Vec<String> = vec![r#""model":"m""#.to_owned()];
        for (name, v) in names.iter().zip(f) {
            if let Some(v) = v {
                members.push(format!(r#""{name}":{}"#, v.json()));
            }
        }
        let gemini: Vec<String> = [("maxOutputTokens", f[5]), ("candidateCount", f[6])]
            .iter()
            .filter_map(|(name, v)| v.map(|v| format!(r#""{name}":{}"#, v.json())))
            .collect();
        members.push(format!(r#""generationConfig":{{{}}}"#, gemini.join(",")));
        format!("{{{}}}", members.join(","))
    }

    /// The reservation in exact arithmetic, clamped once at the end.
    fn exact(endpoint: Endpoint, f: &Fields, len: usize, default: u64) -> u64 {
        let v = |i: usize| f[i].and_then(Num::int);
        let (cap, choices) = match endpoint {
            // Both output members are read; the larger counts (`None` is below any `Some`).
            Endpoint::ChatCompletions => (v(1).max(v(0)), v(3)),
            Endpoint::Completions => (v(0), v(3).max(v(4))),
            Endpoint::Responses => (v(2), None),
            Endpoint::Messages => (v(0), None),
            _ => (v(5), v(6)),
        };
        let total =
            (len as u128).div_ceil(4) + u128::from(cap.unwrap_or(default)) * u128::from(choices.unwrap_or(1).max(1));
        u64::try_from(total).unwrap_or(u64::MAX)
    }

    proptest! {
        /// Over bodies with huge, negative and fractional limits and choice counts: a body with a
        /// number that is not a non-negative integer is a 400; otherwise the reservation is the exact
        /// figure (clamped, never wrapped), never below the input estimate, and grows with every cap.
        #[test]
        fn reservations_are_exact_monotonic_and_never_wrap(
            route in 0..ROUTES.len(),
            fields in prop::array::uniform7(prop::option::of(num())),
            growth in prop::array::uniform7(prop_oneof![Just(0u64), 1u64..10, any::<u64>()]),
            default in 1u64..100_000,
        ) {
            let (kind, endpoint) = ROUTES[route];
            let meter = Meter::of(kind, endpoint);
            let reserve = |f: &Fields| {
                let text = body(f);
                inspect_body(kind, endpoint, text.as_bytes())
                    .map(|facts| (reservation(meter, endpoint, facts.asked(), text.len(), default), text.len()))
            };
            let valid = fields.iter().flatten().all(|n| n.int().is_some());
            let Ok((r, len)) = reserve(&fields) else {
                prop_assert!(!valid, "refused a valid body: {}", body(&fields));
                return Ok(());
            };
            prop_assert!(valid, "accepted {}", body(&fields));
            prop_assert!(r.total() >= r.input_estimate);
            prop_assert_eq!(r.input_estimate, input_estimate(len));
            prop_assert_eq!(r.total(), exact(endpoint, &fields, len, default));
            let mut grown = fields;
            for (f, by) in grown.iter_mut().zip(growth) {
                *f = f.map(|n| n.grown(by));
            }
            let (bigger, _) = reserve(&grown).unwrap();
            prop_assert!(bigger.total() >= r.total(), "{} → {}", body(&fields), body(&grown));
            prop_assert!(bigger.output_cap >= r.output_cap);
        }
    }

    #[test]
    fn choices_multiply_the_default_cap_too() {
        let facts = inspect_body(ProviderKind::OpenAi, Endpoint::ChatCompletions, br#"{"n":128}"#).unwrap();
        let r = reservation(Meter::OpenAiCompletion, Endpoint::ChatCompletions, facts.asked(), 10, 4096);
        assert_eq!(r, Reservation { input_estimate: 3, output_cap: 128 * 4096 });
        let facts = inspect_body(
            ProviderKind::Gemini,
            Endpoint::GenerateContent,
            br#"{"generationConfig":{"candidateCount":4}}"#,
        )
        .unwrap();
        let r = reservation(Meter::Gemini, Endpoint::GenerateContent, facts.asked(), 0, 100);
        assert_eq!(r.output_cap, 400);
        let facts = inspect_body(ProviderKind::OpenAi, Endpoint::Completions, br#"{"n":2,"best_of":6}"#).unwrap();
        let r = reservation(Meter::OpenAiCompletion, Endpoint::Completions, facts.asked(), 0, 100);
        assert_eq!(r.output_cap, 600);
    }
}
