//! One request's life at the edge, decided once for every host: a value
//! ([`Exchange`]) that the host feeds with what happened to the request
//! (its headers, a piece of its body, its trailers, the answer of a fleet
//! call, the client leaving) and that answers each with what to do next
//! ([`Next`], `#[must_use]`): continue upstream with these edits, reply
//! with this answer, collect the body, make this fleet call, wait. The
//! host carries the instruction out and feeds the next event; it decides
//! nothing of its own (the model is rustls's unbuffered connection: a step
//! returned as a value, the caller acts, then calls again).
//!
//! Everything a request's handling needs is decided here: the route, the
//! scrub of reserved headers, the gate, the token endpoint, the budgets
//! (local, then the host's lease of the fleet budget, then a call), the
//! body cap, the reply, what is counted and what the access log records,
//! and the local token given back when a client leaves. The host supplies,
//! through [`Host`], only what is its own: reading the request, its
//! stores of budgets and leases ([`Stores`]), its clock and randomness,
//! and where counts and log lines go ([`Report`]).
//!
//! ```text
//!  event (host → Exchange)            instruction (Exchange → host)
//!  on_headers(end_of_stream)   ──┐
//!  on_body(end_of_stream)        │    Continue(Edits)  go upstream: remove, add, set :path
//!  on_trailers()                 ├─►  Reply(Response)  answer here (counted and logged)
//!  on_call_made()                │    CollectBody(Edits) edit the headers, buffer the body; more events follow
//!  on_call_refused()             │    AskFleet(call)   make the call; report made/refused/reply
//!  on_fleet_reply(FleetReply)  ──┘    Wait             paused on the call: nothing to do
//!  abandon(stores)                    (the client left: a local token goes back)
//! ```
//!
//! Lease refills, asked in the background (a Wasm VM's root context, the
//! native module's main thread), are decided here too: [`refill_call`],
//! [`refill_not_made`] and [`refill_answered`].

use crate::config::{Config, FleetBudget, Redemption};
use crate::edge::{self, Gate, Route, TokenStart};
use crate::fleet::{self, Failure, Lease, LeaseStep, Verdict};
use crate::ids::CustomerId;
use crate::licence::Drm;
use crate::params::query_of;
use crate::redeem;
use crate::render::Response;
use crate::service::{self, Answer, Budget, HostFailure, PendingBudget, Settled, Step};
use crate::stats::Counter;
use std::net::IpAddr;
use std::ops::Deref;

/// A log line's level, as a host's log has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Which part of the request a list of header names is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Headers,
    Trailers,
}

/// What a host keeps for every request it serves, across its workers: the
/// token budgets' counts and the leases of fleet budgets, by the names the
/// core gives them ([`fleet::budget_key`], [`fleet::lease_key`]).
pub trait Stores {
    /// Takes one token of `budget` from the count `key`: exact across
    /// everything that serves this configuration in one process.
    fn take_from_budget(&self, key: &str, budget: u64) -> Result<Budget, HostFailure>;
    /// Gives one token back to the count `key` (never below 0).
    fn give_back_to_budget(&self, key: &str);
    /// Applies `change` to the lease `key` (an empty lease when there is
    /// none), atomically for every worker: the lease before and after. A
    /// host that keeps no leases answers an empty lease, unchanged (every
    /// token is then asked of the service).
    fn update_lease(
        &self,
        key: &str,
        change: &dyn Fn(Lease) -> Lease,
    ) -> Result<(Lease, Lease), HostFailure>;
}

/// How a host edits a request it passes upstream.
pub trait Editor {
    /// Removes every value of `name` from the headers or the trailers.
    fn remove_header(&self, part: Part, name: &str);
    /// Adds a request header.
    fn add_header(&self, name: &str, value: &str);
    /// Replaces a request header (`:path`).
    fn set_header(&self, name: &str, value: &str);
}

/// Where a host's counts and log lines go, and its clock.
pub trait Report {
    /// The host's clock, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Adds one to `counter` (of `customer`, when it is per customer).
    fn count(&self, counter: Counter, customer: Option<&CustomerId>);
    /// A log line.
    fn log(&self, level: Level, message: &str);
    /// Sets the customer's lease gauge to `held` tokens.
    fn set_lease_gauge(&self, customer: &CustomerId, held: u32);
}

/// What a host's background work (lease refills) needs: its reports and
/// its stores.
pub trait Background: Report {
    /// The host's stores of budgets and leases.
    fn stores(&self) -> &dyn Stores;
}

/// The host of one request: what it reads of the request, its stores and
/// where its reports go. Every method is a plain read or write of the
/// host's own: the decisions are [`Exchange`]'s.
pub trait Host: Background {
    /// A request header by its lower-case name (every value of it joined
    /// with `,`; bytes that are not UTF-8 replaced), `:path` and `:method`
    /// among them.
    fn header(&self, name: &str) -> Option<String>;
    /// The names of the request's headers or trailers.
    fn header_names(&self, part: Part) -> Vec<String>;
    /// How many bytes of body the host holds, as far as it knows (0 when it
    /// cannot say): a body past the cap is refused from it before it is
    /// read.
    fn body_size(&self) -> usize;
    /// The body the host holds, at most `limit` bytes of it.
    fn body(&self, limit: usize) -> Vec<u8>;
    /// The downstream peer's address (`ip` or `ip:port`).
    fn source_address(&self) -> Option<String>;
    /// Fills `buf` with cryptographically secure random bytes.
    fn fill_random(&self, buf: &mut [u8]) -> Result<(), HostFailure>;
    /// Sets the access-log state of the request (its [`Outcome`](crate::outcome::Outcome)'s
    /// `log_fields`).
    fn set_log_state(&self, fields: &str);
    /// A refill of `hits` tokens of `customer`'s lease is wanted: the host
    /// asks it in the background ([`refill_call`]).
    fn want_refill(&self, customer: &CustomerId, hits: u32);
}

/// What the host does next. (Not `#[non_exhaustive]`, deliberately: a
/// new instruction must break every host's build until the host carries it
/// out, never fall into a wildcard arm.)
#[must_use = "the host must carry out the instruction"]
#[derive(Debug)]
pub enum Next {
    /// Go on upstream, after these edits of the part just seen (for
    /// trailers, only removals).
    Continue(Edits),
    /// Answer here with this response (already counted and logged); what
    /// follows of the request is not wanted.
    Reply(Response),
    /// Carry out these edits of the request's headers (which the host
    /// holds meanwhile: nothing has gone upstream), keep the body (the host
    /// buffers it) and report each further piece.
    CollectBody(Edits),
    /// Make this call to the rate-limit service, then report
    /// [`Exchange::on_call_made`] or [`Exchange::on_call_refused`], and its
    /// answer with [`Exchange::on_fleet_reply`]. The request waits.
    AskFleet(FleetCall),
    /// The request waits for its fleet call: nothing to do.
    Wait,
}

/// Edits of a request that goes upstream, carried out in this order:
/// remove every value of each name in `remove` (from the headers, or the
/// trailers when the event was trailers), add each of `add` to the
/// headers, then set `:path` to `path`. Its `Debug` shows no value (they
/// are licence data).
#[derive(Default, PartialEq, Eq)]
pub struct Edits {
    pub remove: Vec<String>,
    pub add: redeem::LicenceHeaders,
    pub path: Option<String>,
}

impl Edits {
    /// Carries the edits out, in their order, on `part` of the request.
    pub fn apply(&self, part: Part, editor: &dyn Editor) {
        for name in &self.remove {
            editor.remove_header(part, name);
        }
        for (name, value) in self.add.iter() {
            editor.add_header(name, value);
        }
        if let Some(path) = &self.path {
            editor.set_header(":path", path);
        }
    }
}

impl std::fmt::Debug for Edits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edits")
            .field("remove", &self.remove)
            .field("add", &self.add)
            .field("path", &self.path.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A call to the rate-limit service: `ShouldRateLimit` with `message` (a
/// `RateLimitRequest`), to `cluster`, within `timeout_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetCall {
    pub cluster: String,
    pub message: Vec<u8>,
    pub timeout_ms: u64,
}

impl FleetCall {
    /// The call for `hits` tokens of `customer`'s `budget` (`None` without
    /// a rate-limit service).
    fn of(config: &Config, customer: &CustomerId, budget: FleetBudget, hits: u32) -> Option<Self> {
        let service = config.rate_limit_service.as_ref()?;
        Some(Self {
            cluster: service.cluster.clone(),
            message: fleet::request(service, customer, budget, hits),
            timeout_ms: service.timeout_ms,
        })
    }
}

/// The answer to a fleet call, as the host got it.
#[derive(Clone, Copy, Debug)]
pub enum FleetReply<'a> {
    /// A gRPC call's status and, when it is OK (0), its message
    /// (proxy-wasm's `dispatch_grpc_call`).
    Grpc { status: u32, message: &'a [u8] },
    /// A call carried as plain HTTP/2 (a dynamic module's callout); `None`
    /// when it got no answer.
    Http(Option<fleet::HttpAnswer<'a>>),
    /// Read by the host's own gRPC client (`fpgen serve`).
    Read(Result<Verdict, Failure>),
}

impl FleetReply<'_> {
    /// What the service said of a call sent at `sent_ms`, read at `now_ms`.
    fn verdict(self, sent_ms: u64, now_ms: u64, timeout_ms: u64) -> Result<Verdict, Failure> {
        let elapsed = now_ms.saturating_sub(sent_ms);
        match self {
            Self::Grpc { status: 0, message } => fleet::verdict(message),
            Self::Grpc { status, .. } => Err(Failure::of_call(status, elapsed, timeout_ms)),
            Self::Http(answer) => fleet::verdict_of_http(answer, elapsed, timeout_ms),
            Self::Read(verdict) => verdict,
        }
    }
}

/// One request's life: fed with its events, it answers each with the
/// host's next step. `C` is how the host holds its configuration (`Rc`,
/// `Arc`, a reference); `None` when it has none (refused, or not arrived):
/// then every request is answered 500 (-9500), whatever its path.
pub struct Exchange<C> {
    config: Option<C>,
    life: Life,
}

/// What the exchange knows of its request between events.
#[derive(Default)]
struct Life {
    state: State,
    /// A fleet call of this request that is not counted yet: counted once,
    /// when the host says it was made or when its answer comes (which may
    /// come first, inside the call).
    uncounted_call: bool,
}

#[derive(Default)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per stream, as its hosts held it before; boxing the wait would cost an allocation per fleet call"
)]
enum State {
    /// No headers yet.
    #[default]
    New,
    /// Going upstream: the rest passes, its trailers scrubbed.
    Upstream,
    /// A token POST to this DRM's endpoint whose body is being collected.
    /// Nothing of the request is kept meanwhile: the host holds it, and
    /// `:path` is read again.
    Body(Drm),
    /// A licence request at PlayReady's licence path whose challenge is
    /// being collected (its headers already scrubbed), for the gate to
    /// read its `CustomData`.
    Challenge,
    /// A sealed token waiting for its fleet call's answer.
    Waiting {
        pending: PendingBudget,
        sent_ms: u64,
    },
    /// Answered here: the rest of the request passes by.
    Answered,
}

impl<C: Deref<Target = Config>> Exchange<C> {
    /// A request under `config`.
    pub fn new(config: Option<C>) -> Self {
        Self {
            config,
            life: Life::default(),
        }
    }

    /// The request's headers (`end_of_stream`: nothing follows them).
    pub fn on_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Next {
        match self.config.as_deref() {
            Some(config) => self.life.on_headers(config, host, end_of_stream),
            None => {
                let path = host.header(":path").unwrap_or_default();
                self.life.answer(host, edge::unconfigured(query_of(&path)))
            }
        }
    }

    /// A piece of the body arrived (`end_of_stream`: the last).
    pub fn on_body(&mut self, host: &dyn Host, end_of_stream: bool) -> Next {
        match self.config.as_deref() {
            Some(config) => self.life.on_body(config, host, end_of_stream),
            None => self.life.passing(),
        }
    }

    /// The trailers, which end the request.
    pub fn on_trailers(&mut self, host: &dyn Host) -> Next {
        match self.config.as_deref() {
            Some(config) => self.life.on_trailers(config, host),
            None => self.life.passing(),
        }
    }

    /// The host made the call [`Next::AskFleet`] asked for.
    pub fn on_call_made(&mut self, report: &dyn Report) {
        self.life.count_call(report);
    }

    /// The host could not make the call: the budget is unavailable, and the
    /// failure mode answers.
    pub fn on_call_refused(&mut self, host: &dyn Host) -> Next {
        self.life.uncounted_call = false;
        let (Some(config), Some((pending, _))) = (self.config.as_deref(), self.life.stop_waiting())
        else {
            return Next::Wait; // answered already
        };
        fleet_failed(host, Failure::Unavailable, pending.customer(), None);
        let unavailable = Ok(Budget::FleetUnavailable(Failure::Unavailable));
        let step = pending.continue_with(unavailable, &CoreHost { host, config });
        self.life.drive(config, host, step)
    }

    /// The answer to the fleet call.
    pub fn on_fleet_reply(&mut self, host: &dyn Host, reply: FleetReply<'_>) -> Next {
        self.life.count_call(host); // a call that is answered was made
        let (Some(config), Some((pending, sent_ms))) =
            (self.config.as_deref(), self.life.stop_waiting())
        else {
            return Next::Wait; // answered already
        };
        let verdict = reply.verdict(sent_ms, host.now_ms(), timeout_ms(config));
        if let Err(failure) = verdict {
            fleet_failed(host, failure, pending.customer(), Some(sent_ms));
        }
        let core = CoreHost { host, config };
        let step = pending.continue_with(Ok(Budget::of_fleet(verdict)), &core);
        self.life.drive(config, host, step)
    }

    /// The request goes away (the client left, or the host is done with
    /// it): a local token taken for a token still waiting for its fleet
    /// budget is given back. (The service may have counted the fleet's
    /// token: it is lost, as with any call whose answer does not come.)
    pub fn abandon(&mut self, stores: &dyn Stores) {
        let state = std::mem::replace(&mut self.life.state, State::Answered);
        if let (Some(config), State::Waiting { pending, .. }) = (self.config.as_deref(), state) {
            if let Some(customer) = pending.abandoned() {
                stores.give_back_to_budget(&fleet::budget_key(config.environment, &customer));
            }
        }
    }

    /// Whether the request waits for a fleet call.
    pub fn is_waiting(&self) -> bool {
        matches!(self.life.state, State::Waiting { .. })
    }
}

impl Life {
    fn on_headers(&mut self, config: &Config, host: &dyn Host, end: bool) -> Next {
        let path = host.header(":path");
        let path_text = path.as_deref().unwrap_or_default();
        match edge::route(Some(config), path.as_deref()) {
            Route::Unconfigured => self.answer(host, edge::unconfigured(query_of(path_text))),
            Route::Token(drm) => self.token_request(config, drm, host, path_text, end),
            Route::Upstream { gate } => {
                let remove = scrub(config, host, Part::Headers);
                match gate {
                    // a PlayReady challenge may carry the token: read first
                    Some((_, Drm::PlayReady)) if !end => {
                        self.state = State::Challenge;
                        Next::CollectBody(Edits {
                            remove,
                            ..Edits::default()
                        })
                    }
                    Some((gate, drm)) => {
                        self.gate(config, gate, (drm, None), host, path_text, remove)
                    }
                    None => {
                        self.state = State::Upstream;
                        Next::Continue(Edits {
                            remove,
                            ..Edits::default()
                        })
                    }
                }
            }
        }
    }

    fn on_body(&mut self, config: &Config, host: &dyn Host, end: bool) -> Next {
        match self.state {
            State::Waiting { .. } => Next::Wait,
            State::Body(drm) if end => self.body_complete(config, drm, host),
            State::Body(drm) => {
                let path = host.header(":path").unwrap_or_default();
                match edge::body_so_far(config, drm, query_of(&path), host.body_size()) {
                    Some(refused) => self.answer(host, refused),
                    None => Next::CollectBody(Edits::default()),
                }
            }
            State::Challenge => self.challenge(config, host, end, Vec::new()),
            State::New | State::Upstream | State::Answered => self.passing(),
        }
    }

    /// Trailers end the request: a collected body is complete; a request
    /// that goes upstream has them scrubbed as its headers were (one
    /// answered here sends nothing upstream).
    fn on_trailers(&mut self, config: &Config, host: &dyn Host) -> Next {
        match self.state {
            State::Waiting { .. } => Next::Wait,
            State::Body(drm) => self.body_complete(config, drm, host),
            State::Challenge => {
                let remove = scrub(config, host, Part::Trailers);
                self.challenge(config, host, true, remove)
            }
            State::Upstream | State::New => Next::Continue(Edits {
                remove: scrub(config, host, Part::Trailers),
                ..Edits::default()
            }),
            State::Answered => self.passing(),
        }
    }

    /// The token waiting for its fleet call, and when the call was sent;
    /// `None` (the state kept as it is) when none waits.
    fn stop_waiting(&mut self) -> Option<(PendingBudget, u64)> {
        if !matches!(self.state, State::Waiting { .. }) {
            return None;
        }
        match std::mem::replace(&mut self.state, State::Answered) {
            State::Waiting { pending, sent_ms } => Some((pending, sent_ms)),
            _ => None,
        }
    }

    /// The rest of the request goes on as it is.
    fn passing(&self) -> Next {
        Next::Continue(Edits::default())
    }

    fn count_call(&mut self, report: &dyn Report) {
        if std::mem::take(&mut self.uncounted_call) {
            report.count(Counter::FleetTokenCalls, None);
        }
    }

    fn token_request(
        &mut self,
        config: &Config,
        drm: Drm,
        host: &dyn Host,
        path: &str,
        end: bool,
    ) -> Next {
        let query = query_of(path);
        let method = host.header(":method").unwrap_or_default();
        let core = CoreHost { host, config };
        let header = |name: &str| host.header(name);
        match edge::token_request(config, drm, query, &method, header, end, &core) {
            TokenStart::Step(step) => self.drive(config, host, step),
            TokenStart::AwaitBody => {
                self.state = State::Body(drm);
                Next::CollectBody(Edits::default())
            }
        }
    }

    /// The collected body is complete: refused when the host holds more
    /// than the cap, else read (up to one byte past the cap) and answered.
    fn body_complete(&mut self, config: &Config, drm: Drm, host: &dyn Host) -> Next {
        let path = host.header(":path").unwrap_or_default();
        let query = query_of(&path);
        if let Some(refused) = edge::body_so_far(config, drm, query, host.body_size()) {
            return self.answer(host, refused);
        }
        let body = host.body(edge::body_read_limit(config));
        let step = edge::token_body(config, drm, query, &body, &CoreHost { host, config });
        self.drive(config, host, step)
    }

    /// A piece of a PlayReady challenge arrived (`end`: the last; `remove`:
    /// the trailers to scrub, when trailers ended it): refused as soon as
    /// it is past the gate's cap, else, once whole, read by the gate.
    fn challenge(
        &mut self,
        config: &Config,
        host: &dyn Host,
        end: bool,
        remove: Vec<String>,
    ) -> Next {
        let Some(gate) = config.redemption.as_ref() else {
            // (no gate, no Challenge state: passed on, scrubbed)
            self.state = State::Upstream;
            return Next::Continue(Edits {
                remove,
                ..Edits::default()
            });
        };
        let cap = gate.max_challenge_bytes;
        if host.body_size() > cap {
            return self.gate_refused(host, gate, redeem::Refusal::ChallengeTooLarge);
        }
        if !end {
            return Next::CollectBody(Edits::default());
        }
        let path = host.header(":path").unwrap_or_default();
        let body = host.body(cap.saturating_add(1));
        if body.len() > cap {
            return self.gate_refused(host, gate, redeem::Refusal::ChallengeTooLarge);
        }
        let presented = (Drm::PlayReady, Some(body.as_slice()));
        self.gate(config, gate, presented, host, &path, remove)
    }

    /// The gate refused the challenge before reading a token, counted and
    /// logged as every refusal of the gate is.
    fn gate_refused(
        &mut self,
        host: &dyn Host,
        gate: &Redemption,
        refusal: redeem::Refusal,
    ) -> Next {
        host.count(Counter::RedemptionsRejected(refusal), None);
        let outcome = service::Outcome::refused(refusal.code()).of_drm(Drm::PlayReady);
        host.set_log_state(&outcome.log_fields());
        host.log(
            Level::Debug,
            &format!("fpgen: redemption refused: {refusal}"),
        );
        self.state = State::Answered;
        Next::Reply(refusal.response(gate.error_format))
    }

    /// The gate's decision, counted and logged: upstream with the licence
    /// data (after `remove`), or answered here. `presented` is the gate's
    /// DRM and, at PlayReady's, the challenge.
    fn gate(
        &mut self,
        config: &Config,
        gate: &Redemption,
        (drm, challenge): (Drm, Option<&[u8]>),
        host: &dyn Host,
        path: &str,
        remove: Vec<String>,
    ) -> Next {
        let now = i64::try_from(host.now_ms() / 1000).unwrap_or(i64::MAX);
        let decision = edge::gate(config, gate, (drm, challenge), path, now);
        let outcome = decision.outcome();
        host.count(decision.counter(), outcome.customer_id.as_ref());
        if matches!(decision, Gate::Pass(_)) {
            host.count(Counter::Redeemed(drm), None);
        }
        host.set_log_state(&outcome.log_fields());
        match decision {
            Gate::Pass(redeemed) => {
                self.state = State::Upstream;
                Next::Continue(Edits {
                    remove,
                    add: redeemed.headers,
                    path: redeemed.new_path,
                })
            }
            Gate::Refuse { refusal, answer } => {
                host.log(
                    Level::Debug,
                    &format!("fpgen: redemption refused: {refusal}"),
                );
                self.state = State::Answered;
                Next::Reply(answer.response)
            }
        }
    }

    /// A token request's budgets: the local budget from the host's store,
    /// the fleet budget from the host's lease of it, else a call (then the
    /// request waits for it).
    fn drive(&mut self, config: &Config, host: &dyn Host, mut step: Step) -> Next {
        let core = CoreHost { host, config };
        loop {
            let (pending, budget) = match step.settle_locally(&core) {
                Settled::Answer(answer) => return self.answer(host, answer),
                Settled::Fleet(pending, budget) => (pending, budget),
            };
            if budget.lease > 1 {
                match from_lease(config, host, pending.customer(), budget) {
                    Ok(false) => {}
                    Ok(true) => {
                        step = pending.continue_with(Ok(Budget::Taken), &core);
                        continue;
                    }
                    Err(failure) => {
                        step = pending.continue_with(Err(failure), &core);
                        continue;
                    }
                }
            }
            let Some(call) = FleetCall::of(config, pending.customer(), budget, 1) else {
                let failure = Failure::Unavailable;
                fleet_failed(host, failure, pending.customer(), None);
                step = pending.continue_with(Ok(Budget::FleetUnavailable(failure)), &core);
                continue;
            };
            let sent_ms = host.now_ms();
            self.state = State::Waiting { pending, sent_ms };
            self.uncounted_call = true;
            return Next::AskFleet(call);
        }
    }

    /// A token-endpoint answer: counted, logged, and sent.
    fn answer(&mut self, host: &dyn Host, answer: Answer) -> Next {
        let outcome = &answer.outcome;
        host.count(outcome.counter(), outcome.customer_id.as_ref());
        if let (None, Some(drm)) = (outcome.error, outcome.drm) {
            host.count(Counter::Minted(drm), None);
        }
        if let Some(code) = outcome.error {
            host.log(
                Level::Debug,
                &format!("fpgen: rejected with {}", code.code()),
            );
        }
        host.set_log_state(&outcome.log_fields());
        self.state = State::Answered;
        Next::Reply(answer.response)
    }
}

/// The reserved headers (or trailers) of the request: none when the gate
/// is off (nothing is reserved: the names are not even read).
fn scrub(config: &Config, host: &dyn Host, part: Part) -> Vec<String> {
    if config.redemption.is_none() {
        return Vec::new();
    }
    let mut names = host.header_names(part);
    names.retain(|name| edge::is_reserved(Some(config), name));
    names
}

/// One token of `customer`'s lease of `budget` for a request: whether it
/// was taken (else the request asks for its own). A refill it wants is
/// handed to the host; the lease gauge follows what is held.
fn from_lease(
    config: &Config,
    host: &dyn Host,
    customer: &CustomerId,
    budget: FleetBudget,
) -> Result<bool, HostFailure> {
    let now = host.now_ms();
    let claim = timeout_ms(config).saturating_add(fleet::CLAIM_SLACK_MS);
    let key = fleet::lease_key(config, customer, budget);
    let (before, after) = host
        .stores()
        .update_lease(&key, &|l| l.step(budget.lease, now, claim).1)?;
    let (step, _) = before.step(budget.lease, now, claim);
    if after.held != before.held {
        host.set_lease_gauge(customer, after.usable(now));
    }
    let (taken, refill) = match step {
        LeaseStep::Take { refill } => (true, refill),
        LeaseStep::Ask { refill } => (false, refill),
    };
    if let Some(hits) = refill {
        host.want_refill(customer, hits);
    }
    Ok(taken)
}

/// The rate-limit service's timeout (0 without one).
fn timeout_ms(config: &Config) -> u64 {
    config
        .rate_limit_service
        .as_ref()
        .map_or(0, |s| s.timeout_ms)
}

/// Counts and logs a fleet-budget question that got no answer.
fn fleet_failed(report: &dyn Report, failure: Failure, customer: &CustomerId, sent: Option<u64>) {
    report.count(Counter::FleetBudgetFailed(failure), None);
    let after = sent.map_or(String::new(), |sent| {
        format!(" (after {} ms)", report.now_ms().saturating_sub(sent))
    });
    report.log(
        Level::Warn,
        &format!(
            "fpgen: fleet budget of customer {customer}: {}{after}",
            failure.message()
        ),
    );
}

/// How much of a body a host reads at most: one byte past the
/// configuration's cap, so that a body past it is seen to be.
pub fn body_read_limit(config: &Config) -> usize {
    edge::body_read_limit(config)
}

/// The answer when a host could not handle a request at all (a native
/// hook panicked): 500 with fpgen's internal error (-9500), as HTML
/// (nothing of the request is trusted any more).
pub fn internal_error() -> Response {
    edge::unconfigured("").response
}

/// A lease refill asked in the background: whose, how many, when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refill {
    pub customer: CustomerId,
    pub hits: u32,
    pub sent_ms: u64,
}

/// The call for a refill of `hits` tokens of `customer`'s lease, sent now
/// (the host counts it once it is made); `None` when the customer has no fleet budget any more
/// or there is no service (then the claim ends: [`refill_not_made`]).
pub fn refill_call(
    config: &Config,
    report: &dyn Report,
    customer: &CustomerId,
    hits: u32,
) -> Option<(Refill, FleetCall)> {
    let budget = config.fleet_budget(customer)?;
    let call = FleetCall::of(config, customer, budget, hits)?;
    let refill = Refill {
        customer: customer.clone(),
        hits,
        sent_ms: report.now_ms(),
    };
    Some((refill, call))
}

/// A refill whose call could not be made: counted and logged when `made`
/// was tried (`tried`), and the lease's claim ends (the next mint may ask).
pub fn refill_not_made(config: &Config, host: &dyn Background, customer: &CustomerId, tried: bool) {
    if tried {
        fleet_failed(host, Failure::Unavailable, customer, None);
    }
    if let Some(budget) = config.fleet_budget(customer) {
        let key = fleet::lease_key(config, customer, budget);
        let _ = host.stores().update_lease(&key, &Lease::refill_failed);
    }
}

/// The answer to a refill: logged when it failed or said no period, the
/// lease grown (or, refused, no refill asked again in this period; or,
/// failed, the next mint may ask), and its gauge set.
pub fn refill_answered(
    config: &Config,
    host: &dyn Background,
    refill: &Refill,
    reply: FleetReply<'_>,
) {
    let now = host.now_ms();
    let answer = reply.verdict(refill.sent_ms, now, timeout_ms(config));
    match answer {
        Ok(Verdict::Ok { reset_ms: None }) => host.log(Level::Warn, fleet::NO_RESET),
        Err(failure) => fleet_failed(host, failure, &refill.customer, Some(refill.sent_ms)),
        Ok(_) => {}
    }
    let Some(budget) = config.fleet_budget(&refill.customer) else {
        return;
    };
    let key = fleet::lease_key(config, &refill.customer, budget);
    let asked = (refill.hits, refill.sent_ms);
    let answered = |l: Lease| l.answered(answer, asked, budget.lease, now);
    match host.stores().update_lease(&key, &answered) {
        Ok((_, after)) => host.set_lease_gauge(&refill.customer, after.usable(now)),
        Err(_) => host.log(Level::Warn, "fpgen: a lease refill could not be kept"),
    }
}

/// The host as the token endpoint ([`service`]) sees it: the clock, the
/// randomness, the client address under the configuration's policy, and the
/// local budgets by their names.
struct CoreHost<'a> {
    host: &'a dyn Host,
    config: &'a Config,
}

impl service::Host for CoreHost<'_> {
    fn now(&self) -> i64 {
        i64::try_from(self.host.now_ms() / 1000).unwrap_or(i64::MAX)
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), HostFailure> {
        self.host.fill_random(buf)
    }

    fn client_address(&self) -> Option<IpAddr> {
        let policy = &self.config.client_address;
        let source = self.host.source_address();
        let xff = if policy.use_x_forwarded_for {
            self.host.header("x-forwarded-for")
        } else {
            None
        };
        service::client_address(policy, source.as_deref(), xff.as_deref())
    }

    fn take_from_budget(&self, customer: &CustomerId, budget: u64) -> Result<Budget, HostFailure> {
        let key = fleet::budget_key(self.config.environment, customer);
        self.host.stores().take_from_budget(&key, budget)
    }

    fn give_back_to_budget(&self, customer: &CustomerId) {
        let key = fleet::budget_key(self.config.environment, customer);
        self.host.stores().give_back_to_budget(&key);
    }
}
