//! The proxy-wasm adapter: what the filter does with Envoy's callbacks,
//! over [`Abi`], the proxy-wasm host calls fpgen makes, written as a plain
//! trait. The calls themselves are `filter`'s (wasm32), the one file that
//! names `proxy_wasm::hostcalls`; this file builds on every target, so its
//! unit tests run natively against a fake VM.
//!
//! A stream feeds each event to its [`Exchange`] and carries out what it
//! says; the root context keeps the configuration and asks the lease
//! refills its streams want. What is the host's own stays here: the stores
//! in Envoy's shared data (compare-and-swap across every worker's VM), the
//! stat ids, the access-log property, the gRPC calls.

// Natively (the unit tests), the adapter is driven by a fake VM; only
// `filter` (wasm32) drives all of it.
#![cfg_attr(
    not(target_arch = "wasm32"),
    allow(dead_code, reason = "driven by filter, which is wasm32's")
)]

use crate::config::Config;
use crate::fleet::{self, Lease};
use crate::ids::CustomerId;
use crate::lifecycle::{
    self, Background, Editor, Exchange, FleetReply, Host, Level, Part, Refill, Report, Stores,
};
use crate::render::Response;
use crate::service::{Budget, HostFailure};
use crate::stats::Counter;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, BufReader};
use std::rc::Rc;

/// Writing shared data failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteFailed {
    /// Another worker wrote it since it was read.
    CasMismatch,
    /// Anything else.
    Other,
}

/// A metric's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetricKind {
    Counter,
    Gauge,
}

/// The proxy-wasm host calls fpgen makes, for the context that is current
/// (the stream whose callback runs, or the root).
pub(crate) trait Abi: Editor {
    /// A header (or trailer) of the request, as bytes.
    fn header(&self, part: Part, name: &str) -> Option<Vec<u8>>;
    /// The names of the request's headers (or trailers).
    fn header_names(&self, part: Part) -> Vec<String>;
    /// The buffered request body, at most `limit` bytes of it.
    fn body(&self, limit: usize) -> Vec<u8>;
    /// Answers the request here.
    fn send_response(&self, status: u32, headers: Vec<(&str, &str)>, body: &[u8]);
    /// Sets the stream's property `fpgen` (the access log's filter state).
    fn set_log_property(&self, value: &[u8]);
    /// The property `source.address`.
    fn source_address(&self) -> Option<Vec<u8>>;
    /// The host's clock, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Random bytes.
    fn fill_random(&self, buf: &mut [u8]) -> Result<(), HostFailure>;
    /// A log line.
    fn log(&self, level: Level, message: &str);
    /// Shared data `key`, and its CAS token; `Err` when it cannot be read.
    fn get_shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), ()>;
    /// Writes shared data `key` if its CAS token is still `cas`.
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>)
        -> Result<(), WriteFailed>;
    /// Defines a metric: its id.
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32>;
    /// Adds to a counter.
    fn increment_metric(&self, id: u32, by: i64);
    /// Sets a gauge.
    fn record_metric(&self, id: u32, value: u64);
    /// Calls `ShouldRateLimit` on `cluster`: the call's token. Its answer
    /// goes to the context that is current.
    fn dispatch_call(&self, cluster: &str, message: &[u8], timeout_ms: u64) -> Result<u32, ()>;
    /// The message of the gRPC answer being delivered (`size` bytes).
    fn call_response(&self, size: usize) -> Vec<u8>;
    /// Sets the root's tick period (0: no ticks).
    fn set_tick_period_ms(&self, ms: u64);
    /// A piece of the plugin configuration; `Err` when Envoy gives none.
    fn plugin_configuration(&self, offset: usize, len: usize) -> Result<Vec<u8>, ()>;
}

/// What a stream's callback tells Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Pause,
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

/// The VM's root context: the configuration, and the lease refills it
/// asks for its streams (the SDK hands a call's answer to the context that
/// made it, and drops it when that stream is gone: a refill must outlive
/// the mint that wanted it, so it is the root's).
pub(crate) struct Root {
    /// Its context id: the refills its streams want carry it.
    id: u32,
    config: Option<Rc<Config>>,
    /// Refills in flight, by call token.
    refills: HashMap<u32, Refill>,
}

/// The VM's environment variables, for `{"env": …}` secrets: those Envoy
/// hands the VM (`vm_config.environment_variables`).
const VM_ENVIRONMENT: crate::config::HostEnv =
    crate::config::HostEnv(" (in Envoy, list it in vm_config.environment_variables.host_env_keys)");

/// How much of the configuration is read from Envoy at a time.
const CONFIG_CHUNK: usize = 64 * 1024;

impl Root {
    pub(crate) fn new(id: u32) -> Self {
        Self {
            id,
            config: None,
            refills: HashMap::new(),
        }
    }

    /// Reads the plugin configuration (`size` bytes): whether Envoy may use
    /// it. The stores of its budgets and leases are made, and the build
    /// gauge set.
    pub(crate) fn configure(&mut self, abi: &dyn Abi, size: usize) -> bool {
        let reader = PluginConfiguration {
            abi,
            offset: 0,
            size,
        };
        let json = BufReader::with_capacity(CONFIG_CHUNK, reader);
        let config = match Config::from_reader_with(json, &VM_ENVIRONMENT) {
            Ok(config) => config,
            Err(e) => {
                let line = format!("fpgen {}: {e}", crate::stats::VERSION_BUILD);
                abi.log(Level::Error, &line);
                return false;
            }
        };
        let stores = SharedData(abi);
        for customer in config.customers() {
            if customer.token_budget().is_some() {
                stores.init(
                    &fleet::budget_key(config.environment(), customer.id()),
                    0u64.to_be_bytes(),
                );
            }
            if let Some(budget) = customer.fleet_budget().filter(|b| b.lease > 1) {
                let key = fleet::lease_key(&config, customer.id(), budget);
                stores.init(&key, Lease::default().to_bytes());
            }
        }
        stats::build(abi);
        let summary = config.summary();
        let line = format!(
            "fpgen {}: configured: {summary}",
            crate::stats::VERSION_BUILD
        );
        abi.log(Level::Info, &line);
        for warning in config.warnings() {
            abi.log(Level::Warn, &format!("fpgen: {warning}"));
        }
        self.config = Some(Rc::new(config));
        true
    }

    /// A new stream of this root.
    pub(crate) fn stream(&self) -> Stream {
        Stream {
            root: self.id,
            exchange: Exchange::new(self.config.clone()),
        }
    }

    /// Asks for the lease refills this VM's streams wanted for this root
    /// (the tick is armed only while some are wanted).
    pub(crate) fn on_tick(&mut self, abi: &dyn Abi) {
        abi.set_tick_period_ms(0);
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
        let report = Vm::of(abi);
        for (_, customer, hits) in wanted {
            let Some((refill, call)) = lifecycle::refill_call(&config, &report, &customer, hits)
            else {
                lifecycle::refill_not_made(&config, &report, &customer, false);
                continue;
            };
            match abi.dispatch_call(&call.cluster, &call.message, call.timeout_ms) {
                Ok(token) => {
                    report.count(Counter::FleetLeaseCalls, None);
                    self.refills.insert(token, refill);
                }
                Err(()) => lifecycle::refill_not_made(&config, &report, &customer, true),
            }
        }
    }

    /// A lease refill's answer.
    pub(crate) fn on_call_response(&mut self, abi: &dyn Abi, token: u32, status: u32, size: usize) {
        let (Some(refill), Some(config)) = (self.refills.remove(&token), self.config.as_deref())
        else {
            return;
        };
        let message = answer_message(abi, status, size);
        let reply = FleetReply::Grpc {
            status,
            message: &message,
        };
        lifecycle::refill_answered(config, &Vm::of(abi), &refill, reply);
    }
}

/// The plugin configuration, read from Envoy a chunk at a time as the JSON
/// parser asks for it: a VM's memory never shrinks, so a large
/// configuration (a thousand customers' key stores) held whole beside what
/// is parsed from it would cost every worker its size again.
struct PluginConfiguration<'a> {
    abi: &'a dyn Abi,
    offset: usize,
    size: usize,
}

impl io::Read for PluginConfiguration<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(self.size.saturating_sub(self.offset));
        if want == 0 {
            return Ok(0);
        }
        let chunk = self
            .abi
            .plugin_configuration(self.offset, want)
            .map_err(|()| io::Error::other("Envoy did not hand over the configuration"))?;
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

/// One HTTP stream: its [`Exchange`], and the root that made it (its
/// refills are that root's to ask). Nothing of the request is copied into
/// the VM while it waits: Envoy holds the headers and the body. (A VM's
/// memory never shrinks, so a copy per paused request would keep the
/// high-water mark of every burst of slow POSTs for the life of the VM.)
pub(crate) struct Stream {
    root: u32,
    exchange: Exchange<Rc<Config>>,
}

/// Each callback feeds its event to the exchange and carries out what it
/// says.
impl Stream {
    pub(crate) fn on_headers(&mut self, abi: &dyn Abi, end_of_stream: bool) -> Flow {
        let next = self
            .exchange
            .on_headers(&self.request(abi, 0), end_of_stream);
        self.carry(abi, Part::Headers, next)
    }

    /// A piece of the body: `body_size` bytes are buffered so far.
    pub(crate) fn on_body(&mut self, abi: &dyn Abi, body_size: usize, end: bool) -> Flow {
        let next = self.exchange.on_body(&self.request(abi, body_size), end);
        self.carry(abi, Part::Headers, next)
    }

    pub(crate) fn on_trailers(&mut self, abi: &dyn Abi) -> Flow {
        let next = self.exchange.on_trailers(&self.request(abi, 0));
        self.carry(abi, Part::Trailers, next)
    }

    /// The rate-limit service answered this stream's call (or it failed).
    pub(crate) fn on_call_response(&mut self, abi: &dyn Abi, status: u32, size: usize) {
        let waiting = self.exchange.is_waiting();
        let message = waiting.then(|| answer_message(abi, status, size));
        let reply = FleetReply::Grpc {
            status,
            message: message.as_deref().unwrap_or_default(),
        };
        let next = self.exchange.on_fleet_reply(&self.request(abi, 0), reply);
        let _ = self.carry(abi, Part::Headers, next);
    }

    /// The stream is gone (the client left, or it ended).
    pub(crate) fn abandon(&mut self, abi: &dyn Abi) {
        self.exchange.abandon(&SharedData(abi));
    }

    fn request<'a>(&self, abi: &'a dyn Abi, body_size: usize) -> Request<'a> {
        Request {
            abi,
            stores: SharedData(abi),
            root: self.root,
            body_size,
        }
    }

    /// Carries out an instruction of the exchange (about `part`, the part
    /// of the request the event was).
    fn carry(&mut self, abi: &dyn Abi, part: Part, mut next: lifecycle::Next) -> Flow {
        loop {
            next = match next {
                lifecycle::Next::Continue(edits) => {
                    edits.apply(part, abi);
                    return Flow::Continue;
                }
                lifecycle::Next::Reply(response) => return reply(abi, &response),
                lifecycle::Next::CollectBody(edits) => {
                    edits.apply(part, abi);
                    return Flow::Pause;
                }
                lifecycle::Next::Wait => return Flow::Pause,
                lifecycle::Next::AskFleet(call) => {
                    let request = self.request(abi, 0);
                    match abi.dispatch_call(&call.cluster, &call.message, call.timeout_ms) {
                        Ok(_) => {
                            self.exchange.on_call_made(&request);
                            return Flow::Pause;
                        }
                        // (the failure mode answers: a reply, never a call)
                        Err(()) => self.exchange.on_call_refused(&request),
                    }
                }
            };
        }
    }
}

/// The message of a call's answer: read only when its status is OK.
fn answer_message(abi: &dyn Abi, status: u32, size: usize) -> Vec<u8> {
    if status == 0 {
        abi.call_response(size)
    } else {
        Vec::new()
    }
}

fn reply(abi: &dyn Abi, response: &Response) -> Flow {
    let headers = response.headers_to_send().collect();
    abi.send_response(
        u32::from(response.status),
        headers,
        response.body.as_bytes(),
    );
    Flow::Pause
}

/// One request's host, as the exchange sees it: the VM's host calls for
/// the current stream, the shared-data stores, and its root's refills.
struct Request<'a> {
    abi: &'a dyn Abi,
    stores: SharedData<'a>,
    root: u32,
    /// The body Envoy has buffered, as the callback said (0 outside the
    /// body callback).
    body_size: usize,
}

impl Background for Request<'_> {
    fn stores(&self) -> &dyn Stores {
        &self.stores
    }
}

impl Report for Request<'_> {
    fn now_ms(&self) -> u64 {
        self.abi.now_ms()
    }

    fn count(&self, counter: Counter, customer: Option<&CustomerId>) {
        stats::count(self.abi, counter, customer);
    }

    fn log(&self, level: Level, message: &str) {
        self.abi.log(level, message);
    }

    fn set_lease_gauge(&self, customer: &CustomerId, held: u32) {
        stats::lease_gauge(self.abi, customer, held);
    }
}

impl Host for Request<'_> {
    /// A request header, as text (bytes that are not UTF-8 replaced: the
    /// SDK's own reader would panic, killing the VM, on a client's
    /// obs-text byte, `Content-Type: \xff`).
    fn header(&self, name: &str) -> Option<String> {
        let bytes = self.abi.header(Part::Headers, name)?;
        Some(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    fn header_names(&self, part: Part) -> Vec<String> {
        self.abi.header_names(part)
    }

    fn body_size(&self) -> usize {
        self.body_size
    }

    fn body(&self, limit: usize) -> Vec<u8> {
        self.abi.body(limit)
    }

    fn source_address(&self) -> Option<String> {
        String::from_utf8(self.abi.source_address()?).ok()
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), HostFailure> {
        self.abi.fill_random(buf)
    }

    /// One host call: each property costs a trip into Envoy.
    fn set_log_state(&self, fields: &str) {
        self.abi.set_log_property(fields.as_bytes());
    }

    /// Wanted for the root's next tick, which this arms.
    fn want_refill(&self, customer: &CustomerId, hits: u32) {
        WANTED.with(|w| {
            let mut wanted = w.take();
            if wanted.len() < MAX_WANTED {
                wanted.push((self.root, customer.clone(), hits));
            }
            w.set(wanted);
        });
        self.abi.set_tick_period_ms(1);
    }
}

/// The VM outside any stream (the root), as the core's refills see it: its
/// host calls, and the stores over them.
struct Vm<'a>(&'a dyn Abi, SharedData<'a>);

impl<'a> Vm<'a> {
    fn of(abi: &'a dyn Abi) -> Self {
        Self(abi, SharedData(abi))
    }
}

impl Background for Vm<'_> {
    fn stores(&self) -> &dyn Stores {
        &self.1
    }
}

impl Report for Vm<'_> {
    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }

    fn count(&self, counter: Counter, customer: Option<&CustomerId>) {
        stats::count(self.0, counter, customer);
    }

    fn log(&self, level: Level, message: &str) {
        self.0.log(level, message);
    }

    fn set_lease_gauge(&self, customer: &CustomerId, held: u32) {
        stats::lease_gauge(self.0, customer, held);
    }
}

/// Token budgets and leases in proxy-wasm shared data, shared by every
/// worker's VM of this Envoy, updated with compare-and-swap: a budget is
/// the count of tokens used (8 bytes, big-endian), a lease a
/// [`fleet::Lease`] (by [`fleet::lease_key`]: no configuration spends
/// another's, whatever their `vm_id`).
struct SharedData<'a>(&'a dyn Abi);

/// How many lost compare-and-swap races one update tolerates. A race is
/// lost only when another worker wrote between our read and our write, so
/// each retry means a token was minted elsewhere; with a handful of
/// workers, a thousand losses in a row cannot happen unless the host
/// misbehaves, and then the request fails (-9500) rather than spin.
const MAX_RACES: usize = 1000;

impl SharedData<'_> {
    /// Creates `key` with `value` if it does not exist yet, so that every
    /// later write is a compare-and-swap (shared data has no CAS for a key
    /// that does not exist). It survives configuration reloads that keep
    /// its name, so a reload does not refill a budget.
    fn init<const N: usize>(&self, key: &str, value: [u8; N]) {
        if matches!(self.0.get_shared_data(key), Ok((None, _))) {
            let _ = self.0.set_shared_data(key, &value, None);
        }
    }

    /// The tokens used of the budget `key` (`None` when there is no count
    /// yet) and the CAS token for the next write.
    fn used(&self, key: &str) -> Result<(Option<u64>, Option<u32>), HostFailure> {
        let (data, cas) = self
            .0
            .get_shared_data(key)
            .map_err(|()| HostFailure("token budget: shared data cannot be read"))?;
        let used = data
            .and_then(|d| <[u8; 8]>::try_from(d.as_slice()).ok())
            .map(u64::from_be_bytes);
        Ok((used, cas))
    }
}

impl Stores for SharedData<'_> {
    fn take_from_budget(&self, key: &str, budget: u64) -> Result<Budget, HostFailure> {
        for _ in 0..MAX_RACES {
            let (used, cas) = self.used(key)?;
            let used = used.unwrap_or(0);
            if used >= budget {
                return Ok(Budget::Spent);
            }
            match self.0.set_shared_data(key, &(used + 1).to_be_bytes(), cas) {
                Ok(()) => return Ok(Budget::Taken),
                Err(WriteFailed::CasMismatch) => continue,
                Err(WriteFailed::Other) => {
                    return Err(HostFailure("token budget: shared data cannot be written"))
                }
            }
        }
        Err(HostFailure("token budget: too many concurrent updates"))
    }

    /// Never below 0.
    fn give_back_to_budget(&self, key: &str) {
        for _ in 0..MAX_RACES {
            let Ok((Some(used), cas)) = self.used(key) else {
                return;
            };
            let back = used.saturating_sub(1).to_be_bytes();
            match self.0.set_shared_data(key, &back, cas) {
                Err(WriteFailed::CasMismatch) => continue,
                _ => return,
            }
        }
    }

    fn update_lease(
        &self,
        key: &str,
        change: &dyn Fn(Lease) -> Lease,
    ) -> Result<(Lease, Lease), HostFailure> {
        for _ in 0..MAX_RACES {
            let (data, cas) = self
                .0
                .get_shared_data(key)
                .map_err(|()| HostFailure("fleet lease: shared data cannot be read"))?;
            let lease = data.as_deref().map(Lease::from_bytes).unwrap_or_default();
            let next = change(lease);
            if next == lease {
                return Ok((lease, next));
            }
            match self.0.set_shared_data(key, &next.to_bytes(), cas) {
                Ok(()) => return Ok((lease, next)),
                Err(WriteFailed::CasMismatch) => continue,
                Err(WriteFailed::Other) => {
                    return Err(HostFailure("fleet lease: shared data cannot be written"))
                }
            }
        }
        Err(HostFailure("fleet lease: too many concurrent updates"))
    }
}

/// Envoy counters defined by the filter (`define_metric` once per VM and
/// counter, then by id).
mod stats {
    use super::{Abi, Counter, CustomerId, MetricKind, RefCell};
    use std::collections::HashMap;

    thread_local! {
        /// Counter ids by what they count and customer ("" for none), so a
        /// request finds its counter without building its name.
        static IDS: RefCell<HashMap<Counter, HashMap<String, u32>>> = RefCell::new(HashMap::new());
        /// Lease gauge ids by customer.
        static GAUGES: RefCell<HashMap<CustomerId, u32>> = RefCell::new(HashMap::new());
    }

    /// Sets the build gauge (`fpgen.build.<version>.<build>`) to 1.
    pub fn build(abi: &dyn Abi) {
        let name = crate::stats::build();
        if let Some(id) = abi.define_metric(MetricKind::Gauge, &name) {
            abi.record_metric(id, 1);
        }
    }

    /// Sets the customer's lease gauge to `held` tokens.
    pub fn lease_gauge(abi: &dyn Abi, customer: &CustomerId, held: u32) {
        // (try_borrow: a cache that cannot be read is asked again, never a
        // panic; nothing holds it across a host call)
        let cached = GAUGES.with(|g| g.try_borrow().ok()?.get(customer).copied());
        let id = cached.or_else(|| {
            let name = crate::stats::fleet_lease_tokens(customer);
            let id = abi.define_metric(MetricKind::Gauge, &name)?;
            GAUGES.with(|g| {
                if let Ok(mut g) = g.try_borrow_mut() {
                    g.insert(customer.clone(), id);
                }
            });
            Some(id)
        });
        if let Some(id) = id {
            abi.record_metric(id, u64::from(held));
        }
    }

    /// Adds one to `counter` of `customer`.
    pub fn count(abi: &dyn Abi, counter: Counter, customer: Option<&CustomerId>) {
        let key = customer.map_or("", CustomerId::as_str);
        let cached = IDS.with(|ids| ids.try_borrow().ok()?.get(&counter)?.get(key).copied());
        let id = cached.or_else(|| {
            let id = abi.define_metric(MetricKind::Counter, &counter.name(customer)?)?;
            IDS.with(|ids| {
                if let Ok(mut ids) = ids.try_borrow_mut() {
                    ids.entry(counter).or_default().insert(key.to_owned(), id);
                }
            });
            Some(id)
        });
        if let Some(id) = id {
            abi.increment_metric(id, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The adapter against a fake VM: the shared suite
    //! ([`crate::conformance`]), as every Envoy adapter runs it.
    use super::*;
    use crate::conformance::{self, conformance_tests, Rig, Sent};

    type Pairs = Vec<(String, String)>;

    /// One stream's request as the fake Envoy holds it.
    #[derive(Default)]
    struct Held {
        headers: Pairs,
        trailers: Pairs,
        body: Vec<u8>,
        sent: Option<Sent>,
        property: Option<String>,
    }

    /// A fake VM: the current stream's request, shared data, metrics,
    /// calls, the clock.
    #[derive(Default)]
    struct FakeVm {
        config: Vec<u8>,
        held: RefCell<Held>,
        shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        /// Metric values by id.
        metrics: RefCell<HashMap<u32, u64>>,
        /// Calls made: token, hits, and whether a root made it.
        calls: RefCell<Vec<(u32, u32)>>,
        refuse_calls: Cell<bool>,
        /// The message of the answer being delivered.
        answer: RefCell<Vec<u8>>,
        tick_ms: Cell<u64>,
        /// Every host call made, by name, in order.
        host_calls: RefCell<Vec<&'static str>>,
    }

    fn pairs(list: &[(&str, &str)]) -> Pairs {
        let owned = list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        owned.collect()
    }

    /// Metric ids by name, for every fake VM.
    fn metric_id(name: &str) -> u32 {
        static NAMES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let mut names = NAMES.lock().unwrap();
        let index = names.iter().position(|n| n == name).unwrap_or_else(|| {
            names.push(name.to_owned());
            names.len() - 1
        });
        u32::try_from(index + 1).unwrap()
    }

    impl FakeVm {
        fn metric(&self, name: &str) -> Option<u64> {
            self.metrics.borrow().get(&metric_id(name)).copied()
        }

        fn note(&self, call: &'static str) {
            self.host_calls.borrow_mut().push(call);
        }

        fn part(&self, part: Part) -> std::cell::RefMut<'_, Pairs> {
            std::cell::RefMut::map(self.held.borrow_mut(), |h| match part {
                Part::Headers => &mut h.headers,
                Part::Trailers => &mut h.trailers,
            })
        }
    }

    impl Editor for FakeVm {
        fn remove_header(&self, part: Part, name: &str) {
            self.note("remove_header");
            self.part(part)
                .retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        }
        fn add_header(&self, name: &str, value: &str) {
            self.note("add_header");
            let pair = (name.to_owned(), value.to_owned());
            self.part(Part::Headers).push(pair);
        }
        fn set_header(&self, name: &str, value: &str) {
            self.note("set_header");
            self.remove_header(Part::Headers, name);
            self.add_header(name, value);
        }
    }

    impl Abi for FakeVm {
        fn header(&self, part: Part, name: &str) -> Option<Vec<u8>> {
            self.note("header");
            let map = self.part(part);
            let mut values = map.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
            values.next().map(|(_, v)| v.clone().into_bytes())
        }
        fn header_names(&self, part: Part) -> Vec<String> {
            self.note("header_names");
            self.part(part).iter().map(|(k, _)| k.clone()).collect()
        }
        fn body(&self, limit: usize) -> Vec<u8> {
            self.note("body");
            self.held
                .borrow()
                .body
                .iter()
                .copied()
                .take(limit)
                .collect()
        }
        fn send_response(&self, status: u32, headers: Vec<(&str, &str)>, body: &[u8]) {
            self.note("send_response");
            let status = u16::try_from(status).unwrap();
            let body = String::from_utf8_lossy(body).into_owned();
            self.held.borrow_mut().sent = Some((status, pairs(&headers), body));
        }
        fn set_log_property(&self, value: &[u8]) {
            self.note("set_log_property");
            let value = String::from_utf8(value.to_vec()).unwrap();
            self.held.borrow_mut().property = Some(value);
        }
        fn source_address(&self) -> Option<Vec<u8>> {
            self.note("source_address");
            Some(b"192.0.2.10:5555".to_vec())
        }
        fn now_ms(&self) -> u64 {
            self.note("now_ms");
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            u64::try_from(now.unwrap().as_millis()).unwrap()
        }
        fn fill_random(&self, buf: &mut [u8]) -> Result<(), HostFailure> {
            self.note("fill_random");
            getrandom::fill(buf).map_err(|_| HostFailure("no randomness"))
        }
        fn log(&self, _: Level, _: &str) {
            self.note("log");
        }
        fn get_shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), ()> {
            self.note("get_shared_data");
            let shared = self.shared.borrow();
            Ok(match shared.get(key) {
                Some((value, cas)) => (Some(value.clone()), Some(*cas)),
                None => (None, None),
            })
        }
        fn set_shared_data(
            &self,
            key: &str,
            value: &[u8],
            cas: Option<u32>,
        ) -> Result<(), WriteFailed> {
            self.note("set_shared_data");
            let mut shared = self.shared.borrow_mut();
            let now = shared.get(key).map(|(_, cas)| *cas);
            if cas.is_some() && cas != now {
                return Err(WriteFailed::CasMismatch);
            }
            let next = now.unwrap_or(0) + 1;
            shared.insert(key.to_owned(), (value.to_vec(), next));
            Ok(())
        }
        /// As Envoy, the same id for the same name; and the same across
        /// the fake VMs of a thread (the adapter caches ids per thread).
        fn define_metric(&self, _: MetricKind, name: &str) -> Option<u32> {
            self.note("define_metric");
            Some(metric_id(name))
        }
        fn increment_metric(&self, id: u32, by: i64) {
            self.note("increment_metric");
            let by = u64::try_from(by).unwrap();
            *self.metrics.borrow_mut().entry(id).or_default() += by;
        }
        fn record_metric(&self, id: u32, value: u64) {
            self.note("record_metric");
            self.metrics.borrow_mut().insert(id, value);
        }
        fn dispatch_call(&self, cluster: &str, message: &[u8], timeout: u64) -> Result<u32, ()> {
            self.note("dispatch_call");
            assert_eq!((cluster, timeout), ("ratelimit", 2000));
            if self.refuse_calls.get() {
                return Err(());
            }
            let mut calls = self.calls.borrow_mut();
            let token = u32::try_from(calls.len()).unwrap() + 1;
            calls.push((token, conformance::hits_of(message)));
            Ok(token)
        }
        fn call_response(&self, size: usize) -> Vec<u8> {
            self.note("call_response");
            let answer = self.answer.borrow();
            assert_eq!(size, answer.len());
            answer.clone()
        }
        fn set_tick_period_ms(&self, ms: u64) {
            self.note("set_tick_period_ms");
            self.tick_ms.set(ms);
        }
        fn plugin_configuration(&self, offset: usize, len: usize) -> Result<Vec<u8>, ()> {
            self.note("plugin_configuration");
            Ok(self.config.iter().skip(offset).take(len).copied().collect())
        }
    }

    /// The adapter in a fake VM: a root, its streams (each with what the
    /// fake Envoy holds of its request) and the call tokens of each.
    struct WasmRig {
        vm: FakeVm,
        root: Root,
        streams: Vec<(Option<Stream>, Held, Vec<u32>)>,
        /// Refill calls in flight (tokens).
        refills: Vec<u32>,
    }

    impl WasmRig {
        /// Runs `f` with the current stream's request in the VM.
        fn current<T>(&mut self, f: impl FnOnce(&mut Stream, &FakeVm) -> T) -> T {
            let (stream, held, tokens) = self.streams.last_mut().unwrap();
            std::mem::swap(held, &mut *self.vm.held.borrow_mut());
            let calls = self.vm.calls.borrow().len();
            let out = f(stream.as_mut().unwrap(), &self.vm);
            let made = self
                .vm
                .calls
                .borrow()
                .iter()
                .skip(calls)
                .map(|c| c.0)
                .collect::<Vec<_>>();
            tokens.extend(made);
            std::mem::swap(held, &mut *self.vm.held.borrow_mut());
            out
        }

        fn held<T>(&self, f: impl FnOnce(&Held) -> T) -> T {
            f(&self.streams.last().unwrap().1)
        }
    }

    fn flow(flow: Flow) -> conformance::Flow {
        match flow {
            Flow::Continue => conformance::Flow::Continue,
            Flow::Pause => conformance::Flow::Pause,
        }
    }

    impl Rig for WasmRig {
        fn configured(json: &str) -> Option<Self> {
            let vm = FakeVm {
                config: json.as_bytes().to_vec(),
                ..FakeVm::default()
            };
            let mut root = Root::new(1);
            // a refused configuration leaves the root without one
            let _ = root.configure(&vm, json.len());
            Some(Self {
                vm,
                root,
                streams: Vec::new(),
                refills: Vec::new(),
            })
        }
        fn start(&mut self, headers: &[(&str, &str)]) {
            let held = Held {
                headers: pairs(headers),
                ..Held::default()
            };
            self.streams
                .push((Some(self.root.stream()), held, Vec::new()));
        }
        fn headers(&mut self, end: bool) -> conformance::Flow {
            flow(self.current(|s, vm| s.on_headers(vm, end)))
        }
        fn body(&mut self, piece: &[u8], end: bool) -> conformance::Flow {
            let (_, held, _) = self.streams.last_mut().unwrap();
            held.body.extend_from_slice(piece);
            let size = held.body.len();
            flow(self.current(|s, vm| s.on_body(vm, size, end)))
        }
        fn trailers(&mut self, trailers: &[(&str, &str)]) -> conformance::Flow {
            self.streams.last_mut().unwrap().1.trailers = pairs(trailers);
            flow(self.current(|s, vm| s.on_trailers(vm)))
        }
        fn sent(&self) -> Option<Sent> {
            self.held(|h| h.sent.clone())
        }
        fn request(&self, trailers: bool) -> Vec<(String, String)> {
            self.held(|h| {
                if trailers {
                    h.trailers.clone()
                } else {
                    h.headers.clone()
                }
            })
        }
        fn log_state(&self) -> Option<String> {
            self.held(|h| h.property.clone())
        }
        fn count(&self, counter: Counter, customer: Option<&str>) -> u64 {
            let customer = customer.map(|c| CustomerId::parse(c).unwrap());
            let name = counter.name(customer.as_ref()).unwrap();
            self.vm.metric(&name).unwrap_or(0)
        }
        fn gauge(&self, customer: &str) -> Option<u64> {
            let name = crate::stats::fleet_lease_tokens(&CustomerId::parse(customer).unwrap());
            self.vm.metric(&name)
        }
        fn stream_calls(&self) -> Vec<u32> {
            let tokens: Vec<u32> = self.streams.iter().flat_map(|s| s.2.clone()).collect();
            let calls = self.vm.calls.borrow();
            let of_streams = calls.iter().filter(|(token, _)| tokens.contains(token));
            of_streams.map(|(_, hits)| *hits).collect()
        }
        fn refuse_calls(&mut self) {
            self.vm.refuse_calls.set(true);
        }
        fn answer_call(&mut self, code: Option<i32>) {
            let (status, message) = match code {
                Some(code) => (0, conformance::service_answer(code)),
                None => (14, Vec::new()),
            };
            let size = message.len();
            *self.vm.answer.borrow_mut() = message;
            self.current(|s, vm| s.on_call_response(vm, status, size));
        }
        fn end(&mut self, index: usize) {
            if let Some(mut stream) = self.streams[index].0.take() {
                stream.abandon(&self.vm);
            }
        }
        fn background(&mut self) -> Vec<u32> {
            assert_eq!(self.vm.tick_ms.get(), 1, "a refill arms the root's tick");
            let before = self.vm.calls.borrow().len();
            self.root.on_tick(&self.vm);
            assert_eq!(self.vm.tick_ms.get(), 0);
            let calls = self.vm.calls.borrow();
            let made: Vec<(u32, u32)> = calls.iter().skip(before).copied().collect();
            self.refills.extend(made.iter().map(|c| c.0));
            made.iter().map(|c| c.1).collect()
        }
        fn answer_refills(&mut self, code: i32) {
            let message = conformance::service_answer(code);
            let size = message.len();
            *self.vm.answer.borrow_mut() = message;
            for token in std::mem::take(&mut self.refills) {
                self.root.on_call_response(&self.vm, token, 0, size);
            }
        }
    }

    conformance_tests!(WasmRig);

    /// A GET mint's host calls, each a trip out of the VM into Envoy (0.4
    /// to 2 µs each in V8, docs/performance.md): these and no more, once
    /// the VM has defined its counters. (The nonce pool's refill, one
    /// `fill_random` per 32 mints of a thread, is left out: the pool is
    /// the thread's, shared by the tests.)
    #[test]
    fn a_get_mint_makes_these_host_calls_and_no_more() {
        let customer = conformance::fresh_customer();
        let mut rig = WasmRig::configured(&conformance::config_for(&customer, |_| {})).unwrap();
        let path = format!(
            "/hms/fp/token?customerAuthenticator={customer},0123456789abcdef0123456789abcdef\
             &contentKey=000102030405060708090a0b0c0d0e0f&iv=0f0e0d0c0b0a09080706050403020100"
        );
        let mut calls = Vec::new();
        for _ in 0..2 {
            rig.vm.host_calls.borrow_mut().clear();
            rig.start(&[(":path", &path), (":method", "GET")]);
            assert_eq!(rig.headers(true), conformance::Flow::Pause);
            assert_eq!(rig.sent().map(|s| s.0), Some(200));
            calls = rig.vm.host_calls.take();
        }
        calls.retain(|call| *call != "fill_random");
        assert_eq!(
            calls,
            [
                "header",
                "header",
                "now_ms",
                "increment_metric",
                "increment_metric",
                "set_log_property",
                "send_response"
            ]
        );
    }
}
