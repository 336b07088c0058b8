//! The host shell: the only module that talks to proxy-wasm. It reads the
//! configuration once, routes `/hms/fp/token` and the redemption gate,
//! collects POST bodies, and hands everything to the pure
//! [`service`] and [`redeem`] modules. It also
//! keeps the stats, the access-log filter state and the shared token budgets.

use crate::config::Redemption;
use crate::config::{ClientAddressPolicy, Config, FleetBudget};
use crate::edge::{self, Gate, Route, TokenStart};
use crate::fleet::{self, Failure, LeaseStep, Verdict};
use crate::ids::CustomerId;
use crate::licence::Environment;
use crate::render::Response;
use crate::service::{
    self, Answer, Budget, Host, HostFailure, Outcome, PendingBudget, Settled, Step,
};
use crate::stats::Counter;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, BufReader};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("fpgen: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(Root {
            id,
            config: None,
            refills: HashMap::new(),
        })
    });
}}

/// The VM's root context: the configuration, and the lease refills it
/// asks for its streams (the SDK hands a call's answer to the context that
/// made it, and drops it when that stream is gone: a refill must outlive
/// the mint that wanted it, so it is the root's).
struct Root {
    /// Its context id: the refills its streams want carry it.
    id: u32,
    config: Option<Rc<Config>>,
    /// Refills in flight, by call token.
    refills: HashMap<u32, Refill>,
}

/// A lease refill asked of the rate-limit service.
struct Refill {
    customer: CustomerId,
    hits: u32,
    sent_ms: u64,
}

/// A lease refill a stream wants: for its root (several plugin
/// configurations can share one VM, each its own root: each refill is asked
/// under the configuration, domain and lease of the stream that wanted it),
/// the customer, the hits.
type Wanted = (u32, CustomerId, u32);

/// The most refills waiting for their roots' ticks (one per customer and
/// configuration at a time, and a root ticks within a millisecond); past
/// it, a refill is not wanted, and its claim expires and is made again.
const MAX_WANTED: usize = 4096;

thread_local! {
    /// Refills wanted by this VM's streams, for their roots' next ticks (a
    /// stream arms its root's tick; the root makes the calls).
    static WANTED: Cell<Vec<Wanted>> = const { Cell::new(Vec::new()) };
}

impl Context for Root {
    /// A lease refill's answer: the lease grows, or (refused) no refill is
    /// asked again in this period, or (failed) the next mint may ask again.
    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        let (Some(refill), Some(config)) = (self.refills.remove(&token), self.config.clone())
        else {
            return;
        };
        let answer = call_verdict(&config, refill.sent_ms, status, size);
        match answer {
            Ok(Verdict::Ok { reset_ms: None }) => log(LogLevel::Warn, fleet::NO_RESET),
            Err(failure) => fleet_failed(failure, &refill.customer, Some(refill.sent_ms)),
            Ok(_) => {}
        }
        let Some(budget) = config.fleet_budget(&refill.customer) else {
            return;
        };
        let (now, asked) = (now_ms(), (refill.hits, refill.sent_ms));
        let key = fleet::lease_key(&config, &refill.customer, budget);
        let change = lease::update(&key, &refill.customer, |l| {
            ((), l.answered(answer, asked, budget.lease, now))
        });
        if change.is_err() {
            log(LogLevel::Warn, "fpgen: a lease refill could not be kept");
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let json = BufReader::with_capacity(CONFIG_CHUNK, PluginConfiguration { offset: 0, size });
        match Config::from_reader_with(json, &VM_ENVIRONMENT) {
            Ok(config) => {
                for customer in config
                    .customers
                    .values()
                    .filter(|c| c.token_budget.is_some())
                {
                    budget::init(&fleet::budget_key(config.environment, &customer.id));
                }
                for customer in config.customers.values() {
                    if let Some(budget) = customer.fleet_budget.filter(|b| b.lease > 1) {
                        lease::init(&fleet::lease_key(&config, &customer.id, budget));
                    }
                }
                stats::build();
                log(
                    LogLevel::Info,
                    &format!(
                        "fpgen {}: configured: {}",
                        crate::stats::VERSION_BUILD,
                        config.summary()
                    ),
                );
                for warning in config.warnings() {
                    log(LogLevel::Warn, &format!("fpgen: {warning}"));
                }
                self.config = Some(Rc::new(config));
                true
            }
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("fpgen {}: {e}", crate::stats::VERSION_BUILD),
                );
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            root: self.id,
            config: self.config.clone(),
            awaiting_body: false,
            waiting: None,
        }))
    }

    /// Asks for the lease refills this VM's streams wanted (see
    /// [`Stream::lease`]); the tick is armed only while some are wanted.
    fn on_tick(&mut self) {
        let _ = hostcalls::set_tick_period(Duration::ZERO);
        // this root's refills; the others' wait for their roots' ticks
        let (wanted, others): (Vec<Wanted>, Vec<Wanted>) = WANTED
            .with(Cell::take)
            .into_iter()
            .partition(|(root, _, _)| *root == self.id);
        WANTED.with(|w| {
            let mut all = w.take();
            all.extend(others);
            w.set(all);
        });
        let Some(config) = self.config.clone() else {
            return;
        };
        for (_, customer, hits) in wanted {
            let Some(budget) = config.fleet_budget(&customer) else {
                continue;
            };
            let sent_ms = now_ms();
            let call = fleet_call(&config, &customer, budget, hits).ok();
            match call {
                Some(token) => {
                    stats::count(Counter::FleetLeaseCalls, None);
                    let refill = Refill {
                        customer,
                        hits,
                        sent_ms,
                    };
                    self.refills.insert(token, refill);
                }
                None => {
                    fleet_failed(Failure::Unavailable, &customer, None);
                    let key = fleet::lease_key(&config, &customer, budget);
                    let _ = lease::update(&key, &customer, |l| ((), l.refill_failed()));
                }
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The VM's environment variables, for `{"env": …}` secrets: those Envoy
/// hands the VM (`vm_config.environment_variables`).
const VM_ENVIRONMENT: crate::config::HostEnv =
    crate::config::HostEnv(" (in Envoy, list it in vm_config.environment_variables.host_env_keys)");

/// How much of the configuration is read from Envoy at a time.
const CONFIG_CHUNK: usize = 64 * 1024;

/// The plugin configuration, read from Envoy a chunk at a time as the JSON
/// parser asks for it: a VM's memory never shrinks, so a large
/// configuration (a thousand customers' key stores) held whole beside what
/// is parsed from it would cost every worker its size again.
struct PluginConfiguration {
    offset: usize,
    size: usize,
}

impl io::Read for PluginConfiguration {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(self.size.saturating_sub(self.offset));
        if want == 0 {
            return Ok(0);
        }
        // (The SDK's `get_buffer` panics on a status other than Ok or
        // NotFound, as `get_plugin_configuration` did before; Envoy answers
        // Ok for a range within the configuration.)
        let chunk = hostcalls::get_buffer(BufferType::PluginConfiguration, self.offset, want)
            .map_err(|_| io::Error::other("Envoy did not hand over the configuration"))?
            .unwrap_or_default();
        if chunk.is_empty() {
            let (offset, size) = (self.offset, self.size);
            return Err(io::Error::other(format!(
                "Envoy handed over {offset} of the configuration's {size} bytes"
            )));
        }
        let n = chunk.len().min(want);
        if let (Some(to), Some(from)) = (buf.get_mut(..n), chunk.get(..n)) {
            to.copy_from_slice(from);
        }
        self.offset += n;
        Ok(n)
    }
}

/// One HTTP stream. `awaiting_body` is set while a POST body is being
/// collected. Nothing of the request is copied into the VM while it waits:
/// Envoy holds the headers and the body, and the query is read from `:path`
/// again when the body is complete. (A VM's memory never shrinks, so a copy
/// per paused request would keep the high-water mark of every burst of
/// slow POSTs for the life of the VM.)
struct Stream {
    /// The root context that made it (its refills are that root's to ask).
    root: u32,
    config: Option<Rc<Config>>,
    awaiting_body: bool,
    /// A sealed token waiting for the rate-limit service's answer.
    waiting: Option<Waiting>,
}

/// A token request paused on its fleet-budget call (for one token).
struct Waiting {
    pending: PendingBudget,
    sent_ms: u64,
}

impl Context for Stream {
    /// The rate-limit service answered this stream's call (or it failed).
    fn on_grpc_call_response(&mut self, _token: u32, status: u32, size: usize) {
        let (Some(waiting), Some(config)) = (self.waiting.take(), self.config.clone()) else {
            return;
        };
        let Waiting { pending, sent_ms } = waiting;
        let verdict = call_verdict(&config, sent_ms, status, size);
        if let Err(failure) = verdict {
            fleet_failed(failure, pending.customer(), Some(sent_ms));
        }
        let answer = Budget::of_fleet(verdict);
        let host = WasmHost::of(&config);
        let _ = self.drive(&config, pending.continue_with(Ok(answer), &host));
    }
}

/// A stream that goes away while its token waits for the fleet budget
/// (the client left): the local token taken for it is given back. (The
/// service may have counted the fleet's token: it is lost, as with any
/// call whose answer does not come.)
impl Drop for Stream {
    fn drop(&mut self) {
        if let (Some(waiting), Some(config)) = (self.waiting.take(), self.config.as_ref()) {
            let host = WasmHost::of(config);
            waiting.pending.abandon(&host);
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let config = self.config.clone();
        let path = header(":path");
        let path_text = path.as_deref().unwrap_or_default();
        match edge::route(config.as_deref(), path.as_deref()) {
            Route::Unconfigured => self.send(edge::unconfigured(service::query_of(path_text))),
            Route::Token => self.token_request(config.as_deref(), path_text, end_of_stream),
            Route::Upstream { gate } => {
                self.scrub(MapType::HttpRequestHeaders);
                match (config.as_deref(), gate) {
                    (Some(config), Some(gate)) => self.gate(config, gate, path_text),
                    _ => Action::Continue,
                }
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.waiting.is_some() {
            return Action::Pause; // answered locally once the budget says
        }
        let Some(config) = self.config.clone().filter(|_| self.awaiting_body) else {
            return Action::Continue;
        };
        if !end_of_stream {
            let path = header(":path").unwrap_or_default();
            return match edge::body_so_far(&config, service::query_of(&path), body_size) {
                Some(refused) => {
                    self.awaiting_body = false;
                    self.send(refused)
                }
                None => Action::Pause, // Envoy buffers until the body is complete
            };
        }
        self.body_complete(&config)
    }

    /// Trailers end the request: scrub them like the headers, and finish a
    /// POST whose body is being collected (an HTTP/2 or chunked body that
    /// ends with trailers never reaches end of stream in the body callback).
    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        self.scrub(MapType::HttpRequestTrailers);
        if self.waiting.is_some() {
            return Action::Pause;
        }
        let Some(config) = self.config.clone().filter(|_| self.awaiting_body) else {
            return Action::Continue;
        };
        self.body_complete(&config)
    }
}

impl Stream {
    /// A token request, once its headers are read: answered, or paused for
    /// its body or its budgets.
    fn token_request(&mut self, config: Option<&Config>, path: &str, end: bool) -> Action {
        let query = service::query_of(path);
        let Some(config) = config else {
            return self.send(edge::unconfigured(query));
        };
        let method = header(":method").unwrap_or_default();
        let host = WasmHost::of(config);
        match edge::token_request(config, query, &method, header, end, &host) {
            TokenStart::Step(step) => self.drive(config, step),
            TokenStart::AwaitBody => {
                self.awaiting_body = true;
                Action::Pause
            }
        }
    }

    /// The collected POST is complete: the wait ends, its `:path` is read
    /// again from Envoy (nothing of it was kept meanwhile), and its body up
    /// to one byte past the cap (the host returns at most what it holds).
    fn body_complete(&mut self, config: &Config) -> Action {
        self.awaiting_body = false;
        let path = header(":path").unwrap_or_default();
        let limit = edge::body_read_limit(config);
        let body = self.get_http_request_body(0, limit).unwrap_or_default();
        let host = WasmHost::of(config);
        let step = edge::token_body(config, service::query_of(&path), &body, &host);
        self.drive(config, step)
    }

    /// Answers a token request's budget questions: the local budget from
    /// shared data, the fleet budget from this Envoy's lease or the
    /// rate-limit service (then the request pauses until it answers).
    fn drive(&mut self, config: &Config, mut step: Step) -> Action {
        let host = WasmHost::of(config);
        loop {
            let (pending, budget) = match step.settle_locally(&host) {
                Settled::Answer(answer) => return self.send(answer),
                Settled::Fleet(pending, budget) => (pending, budget),
            };
            let next = if budget.lease > 1 {
                self.lease(config, pending, budget)
            } else {
                self.ask(config, pending, budget)
            };
            match next {
                Some(next) => step = next,
                None => return Action::Pause,
            }
        }
    }

    /// One token from this Envoy's lease of the fleet budget when it holds
    /// one, else a call for this token alone; either way, a refill of the
    /// lease is wanted when it is (nearly) spent (the root asks for it,
    /// in the background, on its next tick). `None`: the request is paused
    /// on its call.
    fn lease(
        &mut self,
        config: &Config,
        pending: PendingBudget,
        budget: FleetBudget,
    ) -> Option<Step> {
        let host = WasmHost::of(config);
        let timeout = config
            .rate_limit_service
            .as_ref()
            .map_or(0, |s| s.timeout_ms);
        let (now, claim) = (now_ms(), timeout.saturating_add(fleet::CLAIM_SLACK_MS));
        let key = fleet::lease_key(config, pending.customer(), budget);
        let step = lease::update(&key, pending.customer(), |l| {
            l.step(budget.lease, now, claim)
        });
        let (take, refill) = match step {
            Ok(LeaseStep::Take { refill }) => (true, refill),
            Ok(LeaseStep::Ask { refill }) => (false, refill),
            Err(failure) => return Some(pending.continue_with(Err(failure), &host)),
        };
        if let Some(hits) = refill {
            let customer = pending.customer().clone();
            let root = self.root;
            WANTED.with(|w| {
                let mut wanted = w.take();
                if wanted.len() < MAX_WANTED {
                    wanted.push((root, customer, hits));
                }
                w.set(wanted);
            });
            let _ = hostcalls::set_tick_period(Duration::from_millis(1));
        }
        if take {
            return Some(pending.continue_with(Ok(Budget::Taken), &host));
        }
        self.ask(config, pending, budget)
    }

    /// Calls the rate-limit service for this request's token and pauses
    /// it (`None`); the step the failure mode gives when the call cannot be
    /// made.
    fn ask(
        &mut self,
        config: &Config,
        pending: PendingBudget,
        budget: FleetBudget,
    ) -> Option<Step> {
        let sent_ms = now_ms();
        if fleet_call(config, pending.customer(), budget, 1).is_ok() {
            stats::count(Counter::FleetTokenCalls, None);
            self.waiting = Some(Waiting { pending, sent_ms });
            return None;
        }
        fleet_failed(Failure::Unavailable, pending.customer(), None);
        let unavailable = Ok(Budget::FleetUnavailable(Failure::Unavailable));
        Some(pending.continue_with(unavailable, &WasmHost::of(config)))
    }

    /// Counts, logs and sends a token-endpoint answer.
    fn send(&mut self, answer: Answer) -> Action {
        stats::count(
            answer.outcome.counter(),
            answer.outcome.customer_id.as_ref(),
        );
        if let Some(code) = answer.outcome.error {
            log(
                LogLevel::Debug,
                &format!("fpgen: rejected with {}", code.code()),
            );
        }
        self.log_state(&answer.outcome);
        self.reply(answer.response)
    }

    /// Removes every header (or trailer) of `map` that the gate reserves
    /// (see [`redeem::is_reserved_header`]); nothing when the gate is off.
    fn scrub(&self, map: MapType) {
        let config = self.config.as_deref();
        if config.is_none_or(|c| c.redemption.is_none()) {
            return; // nothing is reserved: no need to read the names
        }
        // Names only: `get_map` would panic on a value that is not UTF-8.
        let Ok(pairs) = hostcalls::get_map_bytes(map) else {
            return;
        };
        for (name, _) in pairs {
            if edge::is_reserved(config, &name) {
                let _ = hostcalls::set_map_value(map, &name, None);
            }
        }
    }

    /// The redemption gate, for requests at its path when it is enabled:
    /// counted, logged, and passed upstream with the licence data (the new
    /// headers, the path without the token) or answered here.
    fn gate(&mut self, config: &Config, gate: &Redemption, path: &str) -> Action {
        let decision = edge::gate(config, gate, path, WasmHost::now_unix());
        let outcome = decision.outcome();
        stats::count(decision.counter(), outcome.customer_id.as_ref());
        self.log_state(outcome);
        match decision {
            Gate::Pass(redeemed) => {
                for (name, value) in &redeemed.headers {
                    self.add_http_request_header(name, value);
                }
                if let Some(new_path) = &redeemed.new_path {
                    self.set_http_request_header(":path", Some(new_path));
                }
                Action::Continue
            }
            Gate::Refuse { refusal, answer } => {
                log(
                    LogLevel::Debug,
                    &format!("fpgen: redemption refused: {refusal}"),
                );
                self.reply(answer.response)
            }
        }
    }

    /// The access-log filter state of a request the filter handled:
    /// `%FILTER_STATE(wasm.fpgen:PLAIN)%` (see [`Outcome::log_fields`]).
    fn log_state(&self, outcome: &Outcome) {
        // One host call: each property costs a trip into Envoy.
        self.set_property(vec!["fpgen"], Some(outcome.log_fields().as_bytes()));
    }

    fn reply(&mut self, response: Response) -> Action {
        let headers = response.headers_to_send().collect();
        self.send_http_response(
            u32::from(response.status),
            headers,
            Some(response.body.as_bytes()),
        );
        Action::Pause
    }
}

/// The host, as the pure core sees it, for one request.
struct WasmHost {
    policy: ClientAddressPolicy,
    /// Budgets are named by environment and customer
    /// ([`fleet::budget_key`]).
    environment: Environment,
}

impl WasmHost {
    /// The host of a request under `config`.
    fn of(config: &Config) -> Self {
        Self {
            policy: config.client_address,
            environment: config.environment,
        }
    }

    fn now_unix() -> i64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

impl Host for WasmHost {
    fn now(&self) -> i64 {
        Self::now_unix()
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), HostFailure> {
        getrandom::fill(buf).map_err(|_| HostFailure("no randomness from the host"))
    }

    fn client_address(&self) -> Option<IpAddr> {
        let source = hostcalls::get_property(vec!["source", "address"])
            .ok()
            .flatten();
        let source = source.as_deref().and_then(|b| std::str::from_utf8(b).ok());
        let xff = if self.policy.use_x_forwarded_for {
            header("x-forwarded-for")
        } else {
            None
        };
        service::client_address(&self.policy, source, xff.as_deref())
    }

    fn take_from_budget(&self, customer: &CustomerId, budget: u64) -> Result<Budget, HostFailure> {
        budget::take(&fleet::budget_key(self.environment, customer), budget)
    }

    fn give_back_to_budget(&self, customer: &CustomerId) {
        budget::give_back(&fleet::budget_key(self.environment, customer));
    }
}

/// The host's clock in milliseconds.
fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Sends `customer`'s request for `hits` tokens to the rate-limit service;
/// the call's token. The answer goes to the context that is current (a
/// stream, or the root in its tick).
fn fleet_call(
    config: &Config,
    customer: &CustomerId,
    budget: FleetBudget,
    hits: u32,
) -> Result<u32, Status> {
    let service = config.rate_limit_service.as_ref().ok_or(Status::NotFound)?;
    let message = fleet::request(service, customer, budget, hits);
    hostcalls::dispatch_grpc_call(
        &service.cluster,
        fleet::SERVICE,
        fleet::METHOD,
        Vec::new(),
        Some(&message),
        Duration::from_millis(service.timeout_ms),
    )
}

/// What a call sent at `sent_ms` says: its gRPC status, then its message.
fn call_verdict(
    config: &Config,
    sent_ms: u64,
    status: u32,
    size: usize,
) -> Result<Verdict, Failure> {
    if status != 0 {
        let timeout = config
            .rate_limit_service
            .as_ref()
            .map_or(0, |s| s.timeout_ms);
        let elapsed = now_ms().saturating_sub(sent_ms);
        return Err(Failure::of_call(status, elapsed, timeout));
    }
    // (Envoy answers Ok for the buffer of a call it is answering.)
    let body = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
        .map_err(|_| Failure::Undecodable)?
        .unwrap_or_default();
    fleet::verdict(&body)
}

/// Counts and logs a fleet-budget question that got no answer.
fn fleet_failed(failure: Failure, customer: &CustomerId, sent_ms: Option<u64>) {
    stats::count(Counter::FleetBudgetFailed(failure), None);
    let after = sent_ms.map_or(String::new(), |sent| {
        format!(" (after {} ms)", now_ms().saturating_sub(sent))
    });
    log(
        LogLevel::Warn,
        &format!(
            "fpgen: fleet budget of customer {customer}: {}{after}",
            failure.message()
        ),
    );
}

/// Leases of fleet budgets in proxy-wasm shared data: one [`fleet::Lease`]
/// per [`fleet::lease_key`] (environment, customer, the budget's terms and
/// domain: no configuration spends another's, whatever their `vm_id`),
/// shared by every worker's VM of this Envoy, updated with
/// compare-and-swap; the customer's lease gauge is set whenever what the
/// lease holds changes.
mod lease {
    use super::{hostcalls, CustomerId, HostFailure, Status};
    use crate::fleet::Lease;

    /// Lost compare-and-swap races one update tolerates (as for budgets).
    const MAX_RACES: usize = 1000;

    /// Creates the (empty) lease `key` if it does not exist yet, so that
    /// every later write is a compare-and-swap (shared data has no CAS for
    /// a key that does not exist). A lease survives configuration reloads
    /// that keep its key, as budgets do.
    pub fn init(key: &str) {
        if matches!(hostcalls::get_shared_data(key), Ok((None, _))) {
            let _ = hostcalls::set_shared_data(key, Some(&Lease::default().to_bytes()), None);
        }
    }

    /// Applies `change` to the lease `key` of `customer`; what it returns.
    pub fn update<T>(
        key: &str,
        customer: &CustomerId,
        change: impl Fn(Lease) -> (T, Lease),
    ) -> Result<T, HostFailure> {
        for _ in 0..MAX_RACES {
            let (data, cas) = hostcalls::get_shared_data(key)
                .map_err(|_| HostFailure("fleet lease: shared data cannot be read"))?;
            let lease = data.as_deref().map(Lease::from_bytes).unwrap_or_default();
            let (out, next) = change(lease);
            if next == lease {
                return Ok(out);
            }
            match hostcalls::set_shared_data(key, Some(&next.to_bytes()), cas) {
                Ok(()) => {
                    // The gauge shows what is held, token by token.
                    if next.held != lease.held {
                        super::stats::lease_gauge(customer, next.held);
                    }
                    return Ok(out);
                }
                Err(Status::CasMismatch) => continue,
                Err(_) => return Err(HostFailure("fleet lease: shared data cannot be written")),
            }
        }
        Err(HostFailure("fleet lease: too many concurrent updates"))
    }
}

/// Token budgets in proxy-wasm shared data: one counter per customer, shared
/// by every worker's VM of this Envoy, incremented with compare-and-swap.
mod budget {
    use super::{hostcalls, Budget, HostFailure, Status};

    /// How many lost compare-and-swap races one request tolerates. A race
    /// is lost only when another worker took a token between our read and
    /// our write, so each retry means a token was minted elsewhere; with a
    /// handful of workers, a thousand losses in a row cannot happen unless
    /// the host misbehaves, and then the request fails (-9500) rather than
    /// spin.
    const MAX_RACES: usize = 1000;

    /// The tokens used so far (`None` when there is no counter yet) and the
    /// CAS token for the next write.
    fn read(key: &str) -> Result<(Option<u64>, Option<u32>), HostFailure> {
        let (data, cas) = hostcalls::get_shared_data(key)
            .map_err(|_| HostFailure("token budget: shared data cannot be read"))?;
        let used = data
            .and_then(|d| <[u8; 8]>::try_from(d.as_slice()).ok())
            .map(u64::from_be_bytes);
        Ok((used, cas))
    }

    /// Creates the counter at 0 if it does not exist yet (it survives
    /// configuration reloads, so a reload does not refill a budget).
    pub fn init(key: &str) {
        if matches!(read(key), Ok((None, _))) {
            let _ = hostcalls::set_shared_data(key, Some(&0u64.to_be_bytes()), None);
        }
    }

    /// Takes one token.
    pub fn take(key: &str, budget: u64) -> Result<Budget, HostFailure> {
        for _ in 0..MAX_RACES {
            let (used, cas) = read(key)?;
            let used = used.unwrap_or(0);
            if used >= budget {
                return Ok(Budget::Spent);
            }
            match hostcalls::set_shared_data(key, Some(&(used + 1).to_be_bytes()), cas) {
                Ok(()) => return Ok(Budget::Taken),
                Err(Status::CasMismatch) => continue,
                Err(_) => return Err(HostFailure("token budget: shared data cannot be written")),
            }
        }
        Err(HostFailure("token budget: too many concurrent updates"))
    }

    /// Gives one token back (the fleet refused the request it was taken
    /// for); never below 0.
    pub fn give_back(key: &str) {
        for _ in 0..MAX_RACES {
            let Ok((Some(used), cas)) = read(key) else {
                return;
            };
            let back = used.saturating_sub(1).to_be_bytes();
            match hostcalls::set_shared_data(key, Some(&back), cas) {
                Err(Status::CasMismatch) => continue,
                _ => return,
            }
        }
    }
}

/// Envoy counters defined by the filter (`define_metric` once per VM and
/// counter, then by id).
mod stats {
    use super::{hostcalls, Counter, CustomerId, MetricType, RefCell};
    use std::collections::HashMap;

    thread_local! {
        /// Counter ids by what they count and customer ("" for none), so a
        /// request finds its counter without building its name.
        static IDS: RefCell<HashMap<Counter, HashMap<String, u32>>> = RefCell::new(HashMap::new());
    }

    /// Sets the build gauge (`fpgen.build.<version>.<build>`) to 1.
    pub fn build() {
        let name = crate::stats::build();
        if let Ok(id) = hostcalls::define_metric(MetricType::Gauge, &name) {
            let _ = hostcalls::record_metric(id, 1);
        }
    }

    thread_local! {
        /// Lease gauge ids by customer.
        static GAUGES: RefCell<HashMap<CustomerId, u32>> = RefCell::new(HashMap::new());
    }

    /// Sets the customer's lease gauge to `held` tokens.
    pub fn lease_gauge(customer: &CustomerId, held: u32) {
        // (try_borrow: a cache that cannot be read is asked again, never a
        // panic; nothing holds it across a host call)
        let cached = GAUGES.with(|g| g.try_borrow().ok()?.get(customer).copied());
        let id = cached.or_else(|| {
            let name = crate::stats::fleet_lease_tokens(customer);
            let id = hostcalls::define_metric(MetricType::Gauge, &name).ok()?;
            GAUGES.with(|g| {
                if let Ok(mut g) = g.try_borrow_mut() {
                    g.insert(customer.clone(), id);
                }
            });
            Some(id)
        });
        if let Some(id) = id {
            let _ = hostcalls::record_metric(id, u64::from(held));
        }
    }

    /// Adds one to `counter` of `customer`.
    pub fn count(counter: Counter, customer: Option<&CustomerId>) {
        let key = customer.map_or("", CustomerId::as_str);
        let cached = IDS.with(|ids| ids.try_borrow().ok()?.get(&counter)?.get(key).copied());
        let id = cached.or_else(|| {
            let id =
                hostcalls::define_metric(MetricType::Counter, &counter.name(customer)?).ok()?;
            IDS.with(|ids| {
                if let Ok(mut ids) = ids.try_borrow_mut() {
                    ids.entry(counter).or_default().insert(key.to_owned(), id);
                }
            });
            Some(id)
        });
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}

/// A request header, as text (bytes that are not UTF-8 replaced). The SDK's
/// `get_http_request_header` unwraps the UTF-8 conversion and would panic,
/// killing the VM, on a client's obs-text byte (`Content-Type: \xff`).
fn header(name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
        .map(|bytes| match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}
