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

use super::{Envoy, Level, Metric, Report};
use crate::config::{Config, FleetBudget};
use crate::fleet::{self, Failure, Lease, LeaseStep, Verdict};
use crate::ids::CustomerId;
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
}

/// Envoy on the main thread, for a configuration's refills.
pub(crate) trait Main: Report {
    /// Makes `call` now: its id, or `None` when Envoy could not make it.
    /// (Its answer may come before this returns.)
    fn callout(&self, call: &Callout) -> Option<u64>;
    /// Sets the customer's lease gauge to `held` tokens.
    fn set_lease_gauge(&self, customer: &str, held: u32);
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

/// Applies `change` to the lease `key`: what it returns, and the lease
/// before and after.
fn update<T>(key: &str, change: impl FnOnce(Lease) -> (T, Lease)) -> (T, Lease, Lease) {
    let mut leases = leases();
    let leases = leases.get_or_insert_with(HashMap::new);
    let lease = match leases.get_mut(key) {
        Some(lease) => lease,
        None => leases.entry(key.to_owned()).or_default(),
    };
    let before = *lease;
    let (out, after) = change(before);
    *lease = after;
    (out, before, after)
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

/// The rate-limit service's timeout (0 without one).
pub(crate) fn timeout_ms(config: &Config) -> u64 {
    config
        .rate_limit_service
        .as_ref()
        .map_or(0, |s| s.timeout_ms)
}

/// The call for `hits` tokens of `customer`'s fleet budget (`None`
/// without a rate-limit service).
pub(crate) fn call(
    config: &Config,
    customer: &CustomerId,
    budget: FleetBudget,
    hits: u32,
) -> Option<Callout> {
    let service = config.rate_limit_service.as_ref()?;
    let message = fleet::request(service, customer, budget, hits);
    Some(Callout {
        cluster: service.cluster.clone(),
        headers: vec![
            (":method", "POST".to_owned()),
            (":path", fleet::PATH.to_owned()),
            ("host", service.cluster.clone()),
            ("content-type", "application/grpc".to_owned()),
            ("te", "trailers".to_owned()),
        ],
        body: fleet::grpc_frame(&message),
        timeout_ms: service.timeout_ms,
    })
}

/// What the answer to a call sent at `sent_ms` says.
pub(crate) fn verdict(
    answer: Option<&CalloutAnswer>,
    sent_ms: u64,
    timeout_ms: u64,
) -> Result<Verdict, Failure> {
    let http = answer.map(|a| fleet::HttpAnswer {
        status: a.header(":status"),
        grpc_status: a.header("grpc-status"),
        body: &a.body,
    });
    fleet::verdict_of_http(http, now_ms().saturating_sub(sent_ms), timeout_ms)
}

/// Counts and logs a fleet-budget question that got no answer.
pub(crate) fn failed(
    report: &dyn Report,
    failure: Failure,
    customer: &CustomerId,
    sent_ms: Option<u64>,
) {
    report.count(Metric::FleetBudgetFailed, &[failure.stat_name()]);
    let after = sent_ms.map_or(String::new(), |sent| {
        format!(" (after {} ms)", now_ms().saturating_sub(sent))
    });
    report.log(
        Level::Warn,
        &format!(
            "fpgen: fleet budget of customer {customer}: {}{after}",
            failure.message()
        ),
    );
}

/// One token of `customer`'s lease for a stream's request: whether it was
/// taken (else the request asks for its own). A refill it wants is added
/// to `refills` and the main thread woken, as it is when the lease runs
/// empty (its gauge then changes).
pub(crate) fn from_lease(
    envoy: &dyn Envoy,
    refills: &Refills,
    config: &Config,
    customer: &CustomerId,
    budget: FleetBudget,
) -> bool {
    let (now, claim) = (
        now_ms(),
        timeout_ms(config).saturating_add(fleet::CLAIM_SLACK_MS),
    );
    let key = fleet::lease_key(config, customer, budget);
    let (step, before, after) = update(&key, |l| l.step(budget.lease, now, claim));
    let (taken, refill) = match step {
        LeaseStep::Take { refill } => (true, refill),
        LeaseStep::Ask { refill } => (false, refill),
    };
    // the gauge shows what is held, token by token
    if after.held != before.held {
        envoy.set_lease_gauge(customer.as_str(), after.usable(now));
    }
    if let Some(hits) = refill {
        refills.want(customer, hits);
        envoy.wake_main();
    }
    taken
}

/// A configuration's lease refills: those its streams want, and those in
/// flight (the main thread's). Both hold at most one entry per customer.
#[derive(Default)]
pub(crate) struct Refills {
    /// By customer: the hits of the refill wanted (0: none, only its gauge
    /// changed).
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

/// A lease refill asked of the rate-limit service.
struct Refill {
    customer: CustomerId,
    hits: u32,
    sent_ms: u64,
}

impl Refills {
    fn calls(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A worker wants a refill of `hits` for `customer` (0: only its gauge
    /// to be set).
    fn want(&self, customer: &CustomerId, hits: u32) {
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
                self.refill(main, config, customer.clone(), hits);
            }
            if let Some(budget) = config.fleet_budget(&customer) {
                let key = fleet::lease_key(config, &customer, budget);
                main.set_lease_gauge(customer.as_str(), held(&key));
            }
        }
    }

    fn refill(&self, main: &dyn Main, config: &Config, customer: CustomerId, hits: u32) {
        let Some(budget) = config.fleet_budget(&customer) else {
            return;
        };
        let key = fleet::lease_key(config, &customer, budget);
        let Some(call) = call(config, &customer, budget, hits) else {
            let _ = update(&key, |l| ((), l.refill_failed()));
            return;
        };
        let sent_ms = now_ms();
        let refill = Refill {
            customer: customer.clone(),
            hits,
            sent_ms,
        };
        self.calls().making = Some(refill);
        // no lock is held while Envoy makes the call: it may answer inside
        let made = main.callout(&call);
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
                failed(main, Failure::Unavailable, &customer, None);
                let _ = update(&key, |l| ((), l.refill_failed()));
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
        let Some(refill) = refill else {
            return;
        };
        let answer = verdict(answer, refill.sent_ms, timeout_ms(config));
        match answer {
            Ok(Verdict::Ok { reset_ms: None }) => main.log(Level::Warn, fleet::NO_RESET),
            Err(failure) => failed(main, failure, &refill.customer, Some(refill.sent_ms)),
            Ok(_) => {}
        }
        let Some(budget) = config.fleet_budget(&refill.customer) else {
            return;
        };
        let key = fleet::lease_key(config, &refill.customer, budget);
        let (asked, now) = ((refill.hits, refill.sent_ms), now_ms());
        let _ = update(&key, |l| ((), l.answered(answer, asked, budget.lease, now)));
        main.set_lease_gauge(refill.customer.as_str(), held(&key));
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

    impl Report for CountingMain {
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
