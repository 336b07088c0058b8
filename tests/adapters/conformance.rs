//! One suite of unit tests for every Envoy adapter: the same requests,
//! driven through each adapter against a fake of its Envoy (the proxy-wasm
//! adapter's fake VM, the dynamic module's fake stream), with the same
//! expectations. Each adapter's tests implement [`Rig`] and expand
//! [`conformance_tests!`] once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::fleet::{DescriptorStatus, Duration, RateLimitResponse};
use crate::redeem::Refusal;
use crate::stats::Counter;
use prost::Message;
use std::sync::atomic::{AtomicU32, Ordering};

/// What a request callback told Envoy, in the terms every adapter shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Go on upstream.
    Continue,
    /// Stop here (answered, collecting, or waiting for a call).
    Pause,
}

/// A reply Envoy was asked to send: status, headers, body.
pub(crate) type Sent = (u16, Vec<(String, String)>, String);

/// One adapter, with a fake of its Envoy: one configuration, and streams
/// (the newest is the current one; older ones live until [`Rig::end`]).
pub(crate) trait Rig: Sized {
    /// The adapter configured with `json`; `None` when it refused it and
    /// has no stream to show (the dynamic module: Envoy refuses the
    /// filter).
    fn configured(json: &str) -> Option<Self>;
    /// A new stream with these request headers (not delivered yet).
    fn start(&mut self, headers: &[(&str, &str)]);
    /// Delivers the current stream's headers.
    fn headers(&mut self, end_of_stream: bool) -> Flow;
    /// Delivers a piece of body (the fake buffers it as Envoy does).
    fn body(&mut self, piece: &[u8], end_of_stream: bool) -> Flow;
    /// Delivers trailers.
    fn trailers(&mut self, trailers: &[(&str, &str)]) -> Flow;
    /// The reply sent for the current stream.
    fn sent(&self) -> Option<Sent>;
    /// The current stream's request headers (or trailers) as Envoy has them now.
    fn request(&self, trailers: bool) -> Vec<(String, String)>;
    /// The current stream's access-log state.
    fn log_state(&self) -> Option<String>;
    /// How many times `counter` was counted for `customer`.
    fn count(&self, counter: Counter, customer: Option<&str>) -> u64;
    /// The customer's lease gauge.
    fn gauge(&self, customer: &str) -> Option<u64>;
    /// The hits of each call a stream made, oldest first.
    fn stream_calls(&self) -> Vec<u32>;
    /// From now on, Envoy cannot make a call.
    fn refuse_calls(&mut self);
    /// The answer to the current stream's call: the service's code (1 OK,
    /// 2 over the limit), or `None`: no answer (reset).
    fn answer_call(&mut self, code: Option<i32>);
    /// Destroys stream `index` (in the order started).
    fn end(&mut self, index: usize);
    /// Runs the background (the root's tick, the main thread's event):
    /// the hits of the refill calls made.
    fn background(&mut self) -> Vec<u32>;
    /// Answers every refill call in flight with `code`.
    fn answer_refills(&mut self, code: i32);
}

/// A customer id of its own for each rig: the native module's budgets and
/// leases are the process's, shared by the tests that run at once.
pub(crate) fn fresh_customer() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(700_000);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const CONTENT_KEY: &str = "000102030405060708090a0b0c0d0e0f";

/// The demo configuration for `customer`, edited.
pub(crate) fn config_for(customer: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let demo = include_str!("../fixtures/demo-config.json");
    let mut json: serde_json::Value = serde_json::from_str(demo).unwrap();
    json["customers"][0]["id"] = customer.into();
    edit(&mut json);
    json.to_string()
}

/// A token request's query for `customer`.
fn mint_query(customer: &str) -> String {
    format!(
        "customerAuthenticator={customer},{SECRET}&contentKey={CONTENT_KEY}\
         &iv=0f0e0d0c0b0a09080706050403020100"
    )
}

fn mint_path(customer: &str) -> String {
    format!("/hms/fp/token?{}", mint_query(customer))
}

/// A rig for a fresh customer under the demo configuration, edited.
fn rig<R: Rig>(edit: impl FnOnce(&mut serde_json::Value)) -> (R, String) {
    let customer = fresh_customer();
    let json = config_for(&customer, edit);
    (R::configured(&json).unwrap(), customer)
}

/// A fleet budget (`lease` tokens at a time) for the customer, and a local
/// one when given.
fn fleet(
    mode: &'static str,
    lease: u32,
    local: Option<u64>,
) -> impl FnOnce(&mut serde_json::Value) {
    move |c| {
        c["rate_limit_service"] =
            serde_json::json!({"cluster": "ratelimit", "timeout_ms": 2000, "failure_mode": mode});
        c["customers"][0]["fleet_budget"] =
            serde_json::json!({"tokens": 1000, "per": "day", "lease": lease});
        if let Some(budget) = local {
            c["customers"][0]["token_budget"] = budget.into();
        }
    }
}

/// A rate-limit service's answer: `code`, its period ending in an hour.
pub(crate) fn service_answer(code: i32) -> Vec<u8> {
    RateLimitResponse {
        overall_code: code,
        statuses: vec![DescriptorStatus {
            code,
            limit_remaining: 0,
            duration_until_reset: Some(Duration {
                seconds: 3600,
                nanos: 0,
            }),
        }],
    }
    .encode_to_vec()
}

/// The hits a `RateLimitRequest` asks for.
pub(crate) fn hits_of(message: &[u8]) -> u32 {
    crate::fleet::RateLimitRequest::decode(message)
        .unwrap()
        .hits_addend
}

fn get<R: Rig>(rig: &mut R, path: &str) -> Flow {
    rig.start(&[(":path", path), (":method", "GET")]);
    rig.headers(true)
}

fn status<R: Rig>(rig: &R) -> Option<u16> {
    rig.sent().map(|s| s.0)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    let values = headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
    values.map(|(_, v)| v.as_str()).collect()
}

pub(crate) fn a_get_is_minted_counted_and_logged<R: Rig>() {
    let (mut rig, customer) = rig::<R>(|_| {});
    assert_eq!(get(&mut rig, &mint_path(&customer)), Flow::Pause);
    let (status, headers, body) = rig.sent().unwrap();
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "cache-control"), ["no-store"]);
    assert_eq!(header(&headers, "content-type"), ["text/uri-list"]);
    assert!(body.contains("ExpressPlayToken="), "{body}");
    assert_eq!(rig.count(Counter::TokensMinted, Some(&customer)), 1);
    let state = rig.log_state().unwrap();
    assert!(
        state.starts_with(&format!("code=0 customer={customer} ")),
        "{state}"
    );
}

pub(crate) fn a_refused_request_is_counted_by_its_code<R: Rig>() {
    let (mut rig, customer) = rig::<R>(|_| {});
    let path = format!("/hms/fp/token?customerAuthenticator={customer},wrong&errorFormat=json");
    assert_eq!(get(&mut rig, &path), Flow::Pause);
    let (status, _, body) = rig.sent().unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("-2018"), "{body}");
    let code = crate::error::ErrorCode::AuthenticatorInvalid;
    assert_eq!(rig.count(Counter::Rejected(code), None), 1);
    assert_eq!(rig.count(Counter::TokensMinted, Some(&customer)), 0);
    assert_eq!(rig.log_state().as_deref(), Some("code=-2018 drm=fairplay"));
}

pub(crate) fn a_post_collects_its_body_then_mints<R: Rig>() {
    let (mut rig, customer) = rig::<R>(|_| {});
    let form = [(":path", "/hms/fp/token"), (":method", "POST")];
    rig.start(&form);
    assert_eq!(rig.headers(false), Flow::Pause);
    let query = mint_query(&customer);
    let (first, rest) = query.split_at(20);
    assert_eq!(rig.body(first.as_bytes(), false), Flow::Pause);
    assert_eq!(rig.sent(), None, "nothing answered before the body ends");
    assert_eq!(rig.body(rest.as_bytes(), true), Flow::Pause);
    assert_eq!(status(&rig), Some(200));
    // trailers end a body too
    rig.start(&form);
    assert_eq!(rig.headers(false), Flow::Pause);
    assert_eq!(rig.body(query.as_bytes(), false), Flow::Pause);
    assert_eq!(rig.trailers(&[("x-checksum", "1")]), Flow::Pause);
    assert_eq!(status(&rig), Some(200));
    assert_eq!(rig.count(Counter::TokensMinted, Some(&customer)), 2);
}

pub(crate) fn a_body_past_the_cap_is_refused_before_it_ends<R: Rig>() {
    let (mut rig, _) = rig::<R>(|_| {});
    rig.start(&[(":path", "/hms/fp/token"), (":method", "POST")]);
    assert_eq!(rig.headers(false), Flow::Pause);
    assert_eq!(rig.body(&[b'a'; 8193], false), Flow::Pause);
    let (status, _, body) = rig.sent().unwrap();
    assert_eq!(status, 413);
    assert!(body.contains("-9413"), "{body}");
    // once answered, the rest of the body passes by
    assert_eq!(rig.body(b"more", true), Flow::Continue);
}

pub(crate) fn requests_upstream_are_scrubbed_headers_and_trailers<R: Rig>() {
    let (mut rig, customer) = rig::<R>(|_| {});
    let headers = [
        (":path", "/segments/1.ts"),
        (":method", "POST"),
        ("x-fpgen-kid", "evil"),
        ("X_FPGEN_CUSTOMER", "evil"),
        ("x-request-id", "1"),
    ];
    rig.start(&headers);
    assert_eq!(rig.headers(false), Flow::Continue);
    let now = rig.request(false);
    assert!(header(&now, "x-fpgen-kid").is_empty(), "{now:?}");
    assert!(header(&now, "X_FPGEN_CUSTOMER").is_empty(), "{now:?}");
    assert_eq!(header(&now, "x-request-id"), ["1"]);
    assert_eq!(rig.body(b"segment", false), Flow::Continue);
    let trailers = [("x-fpgen-content-key", "evil"), ("x-checksum", "1")];
    assert_eq!(rig.trailers(&trailers), Flow::Continue);
    let now = rig.request(true);
    assert_eq!(now, [("x-checksum".to_owned(), "1".to_owned())]);
    assert_eq!(rig.sent(), None);
    assert_eq!(rig.count(Counter::TokensMinted, Some(&customer)), 0);
    assert_eq!(rig.log_state(), None);
}

pub(crate) fn the_gate_passes_a_valid_token_with_its_licence_data<R: Rig>() {
    let (mut rig, customer) = rig::<R>(|_| {});
    get(&mut rig, &mint_path(&customer));
    let url = rig.sent().unwrap().2.trim_end().to_owned();
    let path = url.split_once("10000").unwrap().1.to_owned();
    let forged = [(":path", path.as_str()), ("x-fpgen-customer", "999999")];
    rig.start(&forged);
    assert_eq!(rig.headers(false), Flow::Continue);
    let now = rig.request(false);
    // the client's value removed before the gate's is added
    assert_eq!(header(&now, "x-fpgen-customer"), [customer.as_str()]);
    assert_eq!(header(&now, "x-fpgen-content-key"), [CONTENT_KEY]);
    let new_path = header(&now, ":path");
    assert_eq!(
        new_path,
        ["/hms/fp/rights/"],
        "the token is taken off the path"
    );
    assert_eq!(rig.count(Counter::RedemptionsAccepted, Some(&customer)), 1);
    let state = rig.log_state().unwrap();
    assert!(
        state.starts_with(&format!("code=0 customer={customer} ")),
        "{state}"
    );
}

pub(crate) fn the_gate_refuses_a_forged_token<R: Rig>() {
    let (mut rig, _) = rig::<R>(|_| {});
    rig.start(&[(":path", "/hms/fp/rights/?ExpressPlayToken=AAAA")]);
    assert_eq!(rig.headers(false), Flow::Pause);
    assert_eq!(status(&rig), Some(403));
    let config = crate::config::Config::from_json(config_for("1", |_| {}).as_bytes()).unwrap();
    let gate = config.redemption().unwrap();
    let refusal: Refusal = crate::redeem::redeem(
        &config,
        gate,
        crate::licence::Drm::FairPlay,
        "/hms/fp/rights/?ExpressPlayToken=AAAA",
        0,
    )
    .err()
    .unwrap();
    assert_eq!(rig.count(Counter::RedemptionsRejected(refusal), None), 1);
}

/// Without a configuration nothing passes: not a licence request (past an
/// unchecked gate), not its reserved headers, not anything else.
pub(crate) fn without_a_configuration_every_request_is_answered_500<R: Rig>() {
    let Some(mut rig) = R::configured("{ not a configuration") else {
        return; // (this host refuses it: no stream is ever made without one)
    };
    let paths = [
        "/hms/fp/rights/?ExpressPlayToken=AAAA",
        "/segments/1.ts",
        "/hms/fp/token?errorFormat=json",
    ];
    for path in paths {
        rig.start(&[(":path", path), ("x-fpgen-content-key", "evil")]);
        assert_eq!(rig.headers(false), Flow::Pause, "{path}");
        let (status, _, body) = rig.sent().unwrap();
        assert_eq!(status, 500, "{path}");
        assert!(body.contains("-9500"), "{body}");
    }
}

pub(crate) fn a_fleet_token_waits_for_its_call_and_the_answer_decides<R: Rig>() {
    let (mut rig, customer) = rig::<R>(fleet("closed", 1, None));
    assert_eq!(get(&mut rig, &mint_path(&customer)), Flow::Pause);
    assert_eq!(rig.sent(), None, "nothing answered while it waits");
    assert_eq!(rig.stream_calls(), [1]);
    assert_eq!(rig.count(Counter::FleetTokenCalls, None), 1);
    rig.answer_call(Some(1));
    assert_eq!(status(&rig), Some(200));
    assert_eq!(rig.count(Counter::FleetTokenCalls, None), 1, "counted once");
    assert_eq!(rig.count(Counter::TokensMinted, Some(&customer)), 1);
    // over the limit: 429 (-2019); no answer, failure mode closed: 503
    for (answer, status_then) in [(Some(2), 429), (None, 503)] {
        assert_eq!(get(&mut rig, &mint_path(&customer)), Flow::Pause);
        rig.answer_call(answer);
        assert_eq!(status(&rig), Some(status_then));
    }
    let failed = rig.count(
        Counter::FleetBudgetFailed(crate::fleet::Failure::Unavailable),
        None,
    );
    assert_eq!(failed, 1);
}

pub(crate) fn a_call_that_cannot_be_made_answers_by_the_failure_mode<R: Rig>() {
    for (mode, expected) in [("closed", 503), ("open", 200)] {
        let (mut rig, customer) = rig::<R>(fleet(mode, 1, None));
        rig.refuse_calls();
        get(&mut rig, &mint_path(&customer));
        let (status, _, body) = rig.sent().unwrap();
        assert_eq!(status, expected, "{mode}");
        if expected == 503 {
            assert!(body.contains("-9503"), "{body}");
        }
        let failure = crate::fleet::Failure::Unavailable;
        assert_eq!(rig.count(Counter::FleetBudgetFailed(failure), None), 1);
        assert_eq!(rig.count(Counter::FleetTokenCalls, None), 0);
    }
}

pub(crate) fn a_stream_gone_while_waiting_gives_back_its_local_token<R: Rig>() {
    let (mut rig, customer) = rig::<R>(fleet("closed", 1, Some(1)));
    assert_eq!(get(&mut rig, &mint_path(&customer)), Flow::Pause);
    assert_eq!(rig.sent(), None, "the first waits, its local token taken");
    get(&mut rig, &mint_path(&customer));
    assert_eq!(status(&rig), Some(429), "the one local token is taken");
    rig.end(0); // the client left
    assert_eq!(get(&mut rig, &mint_path(&customer)), Flow::Pause);
    assert_eq!(rig.sent(), None, "the token given back is taken again");
}

pub(crate) fn a_lease_is_refilled_in_the_background_then_mints_without_a_call<R: Rig>() {
    let (mut rig, customer) = rig::<R>(fleet("closed", 10, None));
    assert_eq!(get(&mut rig, &mint_path(&customer)), Flow::Pause);
    assert_eq!(rig.stream_calls(), [1], "the first mint asks its own");
    assert_eq!(rig.background(), [10]);
    assert_eq!(rig.count(Counter::FleetLeaseCalls, None), 1);
    rig.answer_refills(1);
    assert_eq!(rig.gauge(&customer), Some(10));
    for left in [9, 8, 7] {
        assert_eq!(get(&mut rig, &mint_path(&customer)), Flow::Pause);
        assert_eq!(status(&rig), Some(200));
        assert_eq!(rig.gauge(&customer), Some(left));
    }
    assert_eq!(rig.stream_calls(), [1], "minted from the lease");
}

/// The suite, as `#[test]`s of the rig `$rig`.
macro_rules! conformance_tests {
    ($rig:ty) => {
        /// The shared suite ([`crate::conformance`]) through this adapter.
        mod conformance_suite {
        use super::*;
        conformance_tests!(@each $rig;
            a_get_is_minted_counted_and_logged,
            a_refused_request_is_counted_by_its_code,
            a_post_collects_its_body_then_mints,
            a_body_past_the_cap_is_refused_before_it_ends,
            requests_upstream_are_scrubbed_headers_and_trailers,
            the_gate_passes_a_valid_token_with_its_licence_data,
            the_gate_refuses_a_forged_token,
            without_a_configuration_every_request_is_answered_500,
            a_fleet_token_waits_for_its_call_and_the_answer_decides,
            a_call_that_cannot_be_made_answers_by_the_failure_mode,
            a_stream_gone_while_waiting_gives_back_its_local_token,
            a_lease_is_refilled_in_the_background_then_mints_without_a_call,
        );
        }
    };
    (@each $rig:ty; $($name:ident,)*) => {$(
        #[test]
        fn $name() {
            $crate::conformance::$name::<$rig>();
        }
    )*};
}
pub(crate) use conformance_tests;
