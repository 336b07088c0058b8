//! Fleet budgets in the native module: the rate-limit service asked over
//! the ABI's HTTP callouts, with the messages, the rules of leases and the
//! failure modes of the pure core ([`crate::fleet`], [`crate::service`]),
//! as the proxy-wasm shell asks it over `dispatch_grpc_call`.
//!
//! - A request's own token (a lease of 1, or a lease that is empty) is a
//!   callout of its stream: the stream waits for it, and a stream that
//!   goes away meanwhile gives back its local token (Envoy cancels its
//!   callouts).
//! - A lease is one per [`fleet::lease_key`] (environment, customer, the
//!   budget's terms and domain) for the whole process (as local budgets
//!   are, [`super::budgets`]), kept across configuration updates that keep
//!   those; no configuration spends another's lease. Its
//!   refills are asked in the background, on the main thread (as the Wasm
//!   module's root context asks them): a worker that wants one adds it to
//!   its configuration's list and wakes the main thread through Envoy's
//!   configuration scheduler; the main thread makes the calls (callouts of
//!   the configuration, which outlive any stream) and sets the lease
//!   gauges.
//!
//! Calls carry gRPC as plain HTTP/2 (`POST` to [`fleet::PATH`], the message
//! in one gRPC frame): a callout's answer has headers and body but no
//! trailers, so a gRPC error is read from a trailers-only answer's
//! `grpc-status` header ([`fleet::verdict_of_http`]).

use super::{Level, Metric, ProcessStores, Sink};
use crate::config::Config;
use crate::fleet::{self, Lease};
use crate::ids::CustomerId;
use crate::lifecycle::{self, Background, FleetCall, FleetReply, Refill, Report, Stores};
use crate::stats::Counter;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// An HTTP call for Envoy to make to a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Callout {
    pub(crate) cluster: String,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) timeout_ms: u64,
}

/// A fleet call as plain HTTP/2: `POST` to [`fleet::PATH`], the message in
/// one gRPC frame.
pub(crate) fn callout(call: FleetCall) -> Callout {
    Callout {
        headers: vec![
            (":method", "POST".to_owned()),
            (":path", fleet::PATH.to_owned()),
            ("host", call.cluster.clone()),
            ("content-type", "application/grpc".to_owned()),
            ("te", "trailers".to_owned()),
        ],
        body: fleet::grpc_frame(&call.message),
        cluster: call.cluster,
        timeout_ms: call.timeout_ms,
    }
}

/// The answer to a callout: its headers (`:status` among them) and body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CalloutAnswer {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl CalloutAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }

    /// The answer as the core reads it.
    pub(crate) fn http(&self) -> fleet::HttpAnswer<'_> {
        fleet::HttpAnswer {
            status: self.header(":status"),
            grpc_status: self.header("grpc-status"),
            body: &self.body,
        }
    }
}

/// Envoy on the main thread, for a configuration's refills.
pub(crate) trait Main: Sink {
    /// Makes `call` now: its id, or `None` when Envoy could not make it.
    /// (Its answer may come before this returns.)
    fn callout(&self, call: &Callout) -> Option<u64>;
    /// Sets the customer's lease gauge to `held` tokens.
    fn set_lease_gauge(&self, customer: &str, held: u32);
}

/// The main thread as the core's refills see it: the process's stores,
/// Envoy's counters, gauges and log.
struct MainHost<'a>(&'a dyn Main);

impl Background for MainHost<'_> {
    fn stores(&self) -> &dyn Stores {
        &ProcessStores
    }
}

impl Report for MainHost<'_> {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn count(&self, counter: Counter, customer: Option<&CustomerId>) {
        super::count(self.0, counter, customer);
    }

    fn log(&self, level: Level, message: &str) {
        self.0.log(level, message);
    }

    fn set_lease_gauge(&self, customer: &CustomerId, held: u32) {
        self.0.set_lease_gauge(customer.as_str(), held);
    }
}

/// Leases of fleet budgets, by [`fleet::lease_key`], for the whole process.
static LEASES: Mutex<Option<HashMap<String, Lease>>> = Mutex::new(None);

/// The leases; a panic while they were held left them consistent (each
/// change is one insert), so a poisoned lock is taken as is.
fn leases() -> MutexGuard<'static, Option<HashMap<String, Lease>>> {
    LEASES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Creates the (empty) lease `key` if there is none yet.
pub(crate) fn init_lease(key: String) {
    let mut leases = leases();
    let leases = leases.get_or_insert_with(HashMap::new);
    leases.entry(key).or_default();
}

/// Applies `change` to the lease `key`: the lease before and after.
pub(crate) fn update(key: &str, change: &dyn Fn(Lease) -> Lease) -> (Lease, Lease) {
    let mut leases = leases();
    let leases = leases.get_or_insert_with(HashMap::new);
    let lease = match leases.get_mut(key) {
        Some(lease) => lease,
        None => leases.entry(key.to_owned()).or_default(),
    };
    let before = *lease;
    *lease = change(before);
    (before, *lease)
}

/// The tokens of the lease `key` held now.
fn held(key: &str) -> u32 {
    let leases = leases();
    let lease = leases.as_ref().and_then(|l| l.get(key)).copied();
    lease.map_or(0, |l| l.usable(now_ms()))
}

/// The clock, in milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A configuration's lease refills: those its streams want, and those in
/// flight (the main thread's). Both hold at most one entry per customer.
#[derive(Default)]
pub(crate) struct Refills {
    /// By customer: the hits of the refill wanted.
    wanted: Mutex<BTreeMap<CustomerId, u32>>,
    calls: Mutex<Calls>,
}

#[derive(Default)]
struct Calls {
    /// By callout id.
    in_flight: HashMap<u64, Refill>,
    /// The refill whose call is being made: its answer may come before
    /// Envoy gives the call's id.
    making: Option<Refill>,
}

impl Refills {
    fn calls(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A worker wants a refill of `hits` for `customer`.
    pub(crate) fn want(&self, customer: &CustomerId, hits: u32) {
        let mut wanted = self.wanted.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = wanted.entry(customer.clone()).or_insert(0);
        *entry = (*entry).max(hits);
    }

    /// On the main thread, woken by a worker: makes the calls for the
    /// refills wanted (one per customer at a time: a refill wanted again
    /// while one is in flight, its claim having expired, is not asked
    /// twice), and sets the gauges of the customers concerned.
    pub(crate) fn on_scheduled(&self, main: &dyn Main, config: &Config) {
        let wanted =
            std::mem::take(&mut *self.wanted.lock().unwrap_or_else(PoisonError::into_inner));
        for (customer, hits) in wanted {
            let in_flight = self
                .calls()
                .in_flight
                .values()
                .any(|r| r.customer == customer);
            if hits > 0 && !in_flight {
                self.refill(main, config, &customer, hits);
            }
            if let Some(budget) = config.fleet_budget(&customer) {
                let key = fleet::lease_key(config, &customer, budget);
                main.set_lease_gauge(customer.as_str(), held(&key));
            }
        }
    }

    fn refill(&self, main: &dyn Main, config: &Config, customer: &CustomerId, hits: u32) {
        let host = MainHost(main);
        let Some((refill, call)) = lifecycle::refill_call(config, &host, customer, hits) else {
            lifecycle::refill_not_made(config, &host, customer, false);
            return;
        };
        self.calls().making = Some(refill);
        // no lock is held while Envoy makes the call: it may answer inside
        let made = main.callout(&callout(call));
        let mut calls = self.calls();
        match (made, calls.making.take()) {
            (Some(id), Some(refill)) => {
                calls.in_flight.insert(id, refill);
                drop(calls);
                main.count(Metric::FleetLeaseCalls, &[]);
            }
            (Some(_), None) => {
                drop(calls);
                main.count(Metric::FleetLeaseCalls, &[]); // answered inside the call
            }
            (None, Some(_)) => {
                drop(calls);
                lifecycle::refill_not_made(config, &host, customer, true);
            }
            (None, None) => {} // answered inside the call, which then failed
        }
    }

    /// On the main thread: the answer to the refill call `id` (`None`: no
    /// answer: the call was reset, or its answer was over Envoy's limit).
    pub(crate) fn on_callout_done(
        &self,
        main: &dyn Main,
        config: &Config,
        id: u64,
        answer: Option<&CalloutAnswer>,
    ) {
        let refill = {
            let mut calls = self.calls();
            calls.in_flight.remove(&id).or_else(|| calls.making.take())
        };
        if let Some(refill) = refill {
            let reply = FleetReply::Http(answer.map(CalloutAnswer::http));
            lifecycle::refill_answered(config, &MainHost(main), &refill, reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Envoy's main thread: counts the calls made, answers none.
    #[derive(Default)]
    struct CountingMain {
        calls: RefCell<Vec<u32>>,
    }

    impl Sink for CountingMain {
        fn count(&self, _: Metric, _: &[&str]) {}
        fn log(&self, _: Level, _: &str) {}
    }

    impl Main for CountingMain {
        fn callout(&self, call: &Callout) -> Option<u64> {
            use prost::Message;
            let asked = call.body.get(5..).unwrap();
            let hits = fleet::RateLimitRequest::decode(asked).unwrap().hits_addend;
            self.calls.borrow_mut().push(hits);
            Some(u64::try_from(self.calls.borrow().len()).unwrap())
        }
        fn set_lease_gauge(&self, _: &str, _: u32) {}
    }

    #[test]
    fn a_refill_is_asked_once_per_customer_at_a_time() {
        let demo = include_str!("../../../tests/fixtures/demo-config.json");
        let mut json: serde_json::Value = serde_json::from_str(demo).unwrap();
        let mut other = json["customers"][0].clone();
        other["id"] = "100009".into();
        other["fleet_budget"] = serde_json::json!({"tokens": 100, "per": "day", "lease": 10});
        json["customers"].as_array_mut().unwrap().push(other);
        json["rate_limit_service"] = serde_json::json!({"cluster": "ratelimit"});
        let config = Config::from_json(json.to_string().as_bytes()).unwrap();
        let customer = CustomerId::parse("100009").unwrap();
        let (refills, main) = (Refills::default(), CountingMain::default());
        // two workers want a refill before the main thread runs: one call,
        // for the larger
        refills.want(&customer, 9);
        refills.want(&customer, 10);
        refills.on_scheduled(&main, &config);
        assert_eq!(*main.calls.borrow(), [10]);
        // wanted again while that call is in flight: not asked
        refills.want(&customer, 10);
        refills.on_scheduled(&main, &config);
        assert_eq!(*main.calls.borrow(), [10]);
        // once it is answered, a refill may be asked again
        refills.on_callout_done(&main, &config, 1, None);
        refills.want(&customer, 10);
        refills.on_scheduled(&main, &config);
        assert_eq!(*main.calls.borrow(), [10, 10]);
    }
}
