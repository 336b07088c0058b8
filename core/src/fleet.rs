//! Fleet budgets, as the pure core sees them: the messages fpgen exchanges
//! with a rate-limit service (`envoy.service.ratelimit.v3`, the protocol of
//! `envoyproxy/ratelimit`, Limitador and `fpgen ratelimit`), encoded and
//! decoded with `prost`, and the arithmetic of leases. No host calls: the
//! filter carries the bytes (`dispatch_grpc_call`), `fpgen serve` carries
//! them with tonic.
//!
//! The messages are declared here, field for field and tag for tag, as the
//! subset of Envoy's protos fpgen sends and reads: `envoy-types` (which has
//! them all) does not build for wasm32. A native test encodes each with
//! these types and decodes it with `envoy-types`' (and back), so they cannot
//! drift from the real protos unnoticed.

use crate::config::{Config, FleetBudget, RateLimitService};
use crate::ids::CustomerId;
use crate::licence::Environment;
use prost::Message;

/// The gRPC service and method fpgen calls.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
/// The method of [`SERVICE`].
pub const METHOD: &str = "ShouldRateLimit";

/// The HTTP/2 path of [`METHOD`], for a host that carries the call as a
/// plain HTTP request (the dynamic module's callouts).
pub const PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// How long past the call's timeout a worker's claim on a lease refill
/// holds (a claim whose worker went away, in a reload, then expires).
pub const CLAIM_SLACK_MS: u64 = 1_000;

/// Logged when a service grants a lease without saying when its period
/// ends: the tokens cannot be kept (they might outlive their period).
pub const NO_RESET: &str = "fpgen: the rate-limit service gave no duration_until_reset: \
                            leased tokens cannot be kept (use lease 1 with this service)";

/// The name of a customer's count of its local `token_budget` in the table
/// every worker of one Envoy shares (proxy-wasm shared data, the native
/// module's process-wide table): one per environment and customer, so that
/// two configurations in one Envoy (a test and a production listener) never
/// spend each other's tokens. The budget's size is not part of it: an
/// update that raises a budget keeps the tokens used.
pub fn budget_key(environment: Environment, customer: &CustomerId) -> String {
    format!("fpgen.budget.{}.{customer}", environment.as_str())
}

/// The name of a customer's lease of its fleet budget in that table: one
/// per environment, customer, the budget's terms (tokens per period) and
/// rate-limit domain, which are what the leased tokens were granted under.
/// No configuration spends tokens another leased, and an update that
/// changes the domain or the terms starts from an empty lease (the old
/// one's tokens are left to expire with their period). The lease size is
/// not part of it: tokens held stay good when it changes. Customer ids hold
/// no `.` and the domain comes last, so no two leases share a name.
pub fn lease_key(config: &Config, customer: &CustomerId, budget: FleetBudget) -> String {
    let domain = config.rate_limit_service.as_ref();
    format!(
        "fpgen.lease.{}.{customer}.{}.{}.{}",
        config.environment.as_str(),
        budget.tokens,
        budget.per.as_str(),
        domain.map_or("", |s| s.domain.as_str())
    )
}

/// The descriptor entry that names the customer: `("customer", id)`.
pub const DESCRIPTOR_KEY: &str = "customer";

/// `envoy.service.ratelimit.v3.RateLimitRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor` (without the
/// per-descriptor `hits_addend` and `is_negative_hits`, which fpgen does not
/// send).
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitDescriptor {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    #[prost(message, optional, tag = "2")]
    pub limit: Option<RateLimitOverride>,
}

/// `RateLimitDescriptor.Entry`.
#[derive(Clone, PartialEq, Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `RateLimitDescriptor.RateLimitOverride`: the budget, carried by the
/// request so that the service needs no configuration of its own.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct RateLimitOverride {
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    /// `envoy.type.v3.RateLimitUnit`: SECOND = 1 … YEAR = 6.
    #[prost(int32, tag = "2")]
    pub unit: i32,
}

/// `envoy.service.ratelimit.v3.RateLimitResponse`: the fields fpgen reads
/// (prost skips the others).
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitResponse {
    /// `Code`: UNKNOWN = 0, OK = 1, OVER_LIMIT = 2.
    #[prost(int32, tag = "1")]
    pub overall_code: i32,
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
}

/// `RateLimitResponse.DescriptorStatus`: the fields fpgen reads.
#[derive(Clone, PartialEq, Message)]
pub struct DescriptorStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<Duration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// The request for `hits` tokens of `customer`'s fleet budget: one
/// descriptor, `[("customer", id)]`, with the budget as its limit.
pub fn request(
    service: &RateLimitService,
    customer: &CustomerId,
    budget: FleetBudget,
    hits: u32,
) -> Vec<u8> {
    RateLimitRequest {
        domain: service.domain.clone(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: DESCRIPTOR_KEY.to_owned(),
                value: customer.as_str().to_owned(),
            }],
            limit: Some(RateLimitOverride {
                requests_per_unit: budget.tokens,
                unit: budget.per.unit(),
            }),
        }],
        hits_addend: hits,
    }
    .encode_to_vec()
}

/// What the service answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The hits were counted. `reset_ms`: how long the counted hits stay in
    /// their period, from the service's `duration_until_reset`, when it
    /// says (a lease must not outlive the period it was counted in).
    Ok { reset_ms: Option<u64> },
    /// The budget has fewer than the hits left (nothing counted, with
    /// `fpgen ratelimit`); `reset_ms` as for `Ok`.
    OverLimit { reset_ms: Option<u64> },
}

/// Why a fleet budget could not be asked. Each is a stat reason of its own
/// (`fpgen.fleet_budget_failed.<reason>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The call was not answered within `timeout_ms` (gRPC DEADLINE_EXCEEDED).
    Timeout,
    /// The service could not be reached or answered with a gRPC error, or
    /// the call could not be made.
    Unavailable,
    /// The answer is not a `RateLimitResponse` with a known code.
    Undecodable,
}

impl Failure {
    /// Every failure, for stats and tests.
    pub const ALL: [Failure; 3] = [Self::Timeout, Self::Unavailable, Self::Undecodable];

    /// The stat reason: `timeout`, `unavailable`, `undecodable`.
    pub const fn stat_name(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::Undecodable => "undecodable",
        }
    }

    /// What went wrong, for the error's detail and the log.
    pub const fn message(self) -> &'static str {
        match self {
            Self::Timeout => "the rate-limit service did not answer in time",
            Self::Unavailable => "the rate-limit service is unavailable",
            Self::Undecodable => "the answer of the rate-limit service cannot be read",
        }
    }

    /// The failure a finished call's gRPC status (other than OK, 0) stands
    /// for, `elapsed_ms` after it was sent with `timeout_ms`. Envoy ends a
    /// call past its timeout as its HTTP router ends any request (504, which
    /// becomes UNAVAILABLE), so a failure that came at the timeout is the
    /// timeout. "At": within a tenth of it (at least 10 ms) before, since
    /// Envoy's timers run on its event loop's cached clock and, on a busy
    /// loop, fire a little early by the host's clock.
    pub const fn of_call(status: u32, elapsed_ms: u64, timeout_ms: u64) -> Self {
        let slack = if timeout_ms / 10 > 10 {
            timeout_ms / 10
        } else {
            10
        };
        match status {
            4 => Self::Timeout, // DEADLINE_EXCEEDED
            _ if elapsed_ms.saturating_add(slack) >= timeout_ms => Self::Timeout,
            _ => Self::Unavailable,
        }
    }
}

/// Reads a `RateLimitResponse`.
pub fn verdict(response: &[u8]) -> Result<Verdict, Failure> {
    let response = RateLimitResponse::decode(response).map_err(|_| Failure::Undecodable)?;
    let reset_ms = response
        .statuses
        .first()
        .and_then(|s| s.duration_until_reset)
        .and_then(duration_ms);
    match response.overall_code {
        1 => Ok(Verdict::Ok { reset_ms }),
        2 => Ok(Verdict::OverLimit { reset_ms }),
        _ => Err(Failure::Undecodable),
    }
}

/// A gRPC message as the body of its HTTP/2 request: the message framed
/// as gRPC frames it (a byte saying "not compressed", its length in four
/// bytes, big-endian, then the message).
pub fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut framed = Vec::with_capacity(message.len().saturating_add(5));
    framed.push(0);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// What a call carried as plain HTTP says, `elapsed_ms` after it was sent
/// with `timeout_ms`: from the answer's `:status` and `grpc-status`
/// headers and its body (such a host sees no trailers: a gRPC error comes
/// as a trailers-only answer, its `grpc-status` among the headers; a
/// call that got no answer is `None`).
pub fn verdict_of_http(
    answer: Option<HttpAnswer<'_>>,
    elapsed_ms: u64,
    timeout_ms: u64,
) -> Result<Verdict, Failure> {
    // UNAVAILABLE: what Envoy's gRPC client makes of a reset or an HTTP
    // error (its router answers 504 at the timeout, 503 without a host)
    const UNAVAILABLE: u32 = 14;
    let Some(answer) = answer else {
        return Err(Failure::of_call(UNAVAILABLE, elapsed_ms, timeout_ms));
    };
    if answer.status != Some("200") {
        return Err(Failure::of_call(UNAVAILABLE, elapsed_ms, timeout_ms));
    }
    match answer.grpc_status.map(str::parse::<u32>) {
        None | Some(Ok(0)) => {}
        Some(Ok(status)) => return Err(Failure::of_call(status, elapsed_ms, timeout_ms)),
        Some(Err(_)) => return Err(Failure::Undecodable),
    }
    let (flag, rest) = answer.body.split_first().ok_or(Failure::Unavailable)?;
    let (length, message) = rest.split_at_checked(4).ok_or(Failure::Undecodable)?;
    let length = <[u8; 4]>::try_from(length).map_err(|_| Failure::Undecodable)?;
    let length = usize::try_from(u32::from_be_bytes(length)).map_err(|_| Failure::Undecodable)?;
    match (flag, message.get(..length)) {
        (0, Some(message)) => verdict(message),
        _ => Err(Failure::Undecodable), // compressed, or cut short
    }
}

/// An HTTP answer to a call, as [`verdict_of_http`] reads it.
#[derive(Clone, Copy, Debug)]
pub struct HttpAnswer<'a> {
    /// `:status`.
    pub status: Option<&'a str>,
    /// `grpc-status`, when the headers carry it.
    pub grpc_status: Option<&'a str>,
    /// The body: one gRPC frame.
    pub body: &'a [u8],
}

/// A non-negative duration in whole milliseconds, never later than the
/// period's end: rounded down, and a whole number of seconds is taken a
/// second less (a service that counts in seconds, as `envoyproxy/ratelimit`
/// does, rounds the time left up to the next second).
fn duration_ms(d: Duration) -> Option<u64> {
    let seconds = u64::try_from(d.seconds).ok()?;
    let nanos = u64::try_from(d.nanos).ok()?;
    let ms = seconds.checked_mul(1_000)?.checked_add(nanos / 1_000_000)?;
    Some(if nanos == 0 {
        ms.saturating_sub(1_000)
    } else {
        ms
    })
}

/// An Envoy's lease of one customer's fleet budget: tokens counted by the
/// service and not minted yet, shared by the Envoy's workers, and whether
/// one of them is asking for more, and how early to ask. Kept in 25 bytes of
/// shared data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// Tokens held.
    pub held: u32,
    /// When they stop being valid (the end of the period they were counted
    /// in), in milliseconds of the host's clock.
    pub valid_until_ms: u64,
    /// While a worker asks for more: until when its claim holds (it ends
    /// early when the answer comes; a claim whose worker went away expires).
    /// After the service refused a refill: the end of that period (no
    /// lease fits in it any more; mints ask for one token each).
    pub refill_until_ms: u64,
    /// How many tokens are left when a refill is asked: learnt from the
    /// refills (doubled when a mint found the lease empty while one was in
    /// flight, a quarter less when one landed with more than half of it
    /// unspent), kept between a twentieth and half of the lease.
    pub reserve: u32,
    /// Whether a mint found the lease empty while a refill was in flight.
    pub starved: bool,
}

/// What a mint does with the lease it found. Either way, when `refill`
/// holds hits, this Envoy asks for that many in the background (the lease
/// is written with the claim).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseStep {
    /// Mint from the lease.
    Take { refill: Option<u32> },
    /// Nothing to take: ask the service for this one token and wait.
    Ask { refill: Option<u32> },
}

impl Lease {
    /// The bytes kept in shared data.
    pub fn to_bytes(self) -> [u8; 25] {
        let mut out = [0u8; 25];
        let (held, rest) = out.split_at_mut(4);
        let (valid, rest) = rest.split_at_mut(8);
        let (refill, rest) = rest.split_at_mut(8);
        let (reserve, starved) = rest.split_at_mut(4);
        held.copy_from_slice(&self.held.to_be_bytes());
        valid.copy_from_slice(&self.valid_until_ms.to_be_bytes());
        refill.copy_from_slice(&self.refill_until_ms.to_be_bytes());
        reserve.copy_from_slice(&self.reserve.to_be_bytes());
        starved.copy_from_slice(&[u8::from(self.starved)]);
        out
    }

    /// The lease in `bytes` (an empty lease when they are not one).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let field = |range: std::ops::Range<usize>| bytes.get(range);
        let word = |range| field(range).and_then(|b| <[u8; 4]>::try_from(b).ok());
        let long = |range| field(range).and_then(|b| <[u8; 8]>::try_from(b).ok());
        let parts = (word(0..4), long(4..12), long(12..20), word(20..24));
        match (parts, bytes.get(24), bytes.len()) {
            ((Some(h), Some(v), Some(r), Some(reserve)), Some(&starved), 25) => Self {
                held: u32::from_be_bytes(h),
                valid_until_ms: u64::from_be_bytes(v),
                refill_until_ms: u64::from_be_bytes(r),
                reserve: u32::from_be_bytes(reserve),
                starved: starved != 0,
            },
            _ => Self::default(),
        }
    }

    /// The reserve for a lease of `size`, within its bounds.
    fn reserve_of(self, size: u32) -> u32 {
        self.reserve.clamp(size / 20, size / 2)
    }

    /// Tokens that can be minted at `now_ms`.
    pub fn usable(self, now_ms: u64) -> u32 {
        if now_ms < self.valid_until_ms {
            self.held
        } else {
            0
        }
    }

    fn refilling(self, now_ms: u64) -> bool {
        now_ms < self.refill_until_ms
    }

    /// What a mint does at `now_ms` with a lease of `size` tokens, and the
    /// lease it leaves (to write back with compare-and-swap). A refill is
    /// wanted when this mint leaves no more than the reserve (see
    /// [`Lease::reserve`]; at first a twentieth of `size`, rounded down, so
    /// for a small lease the mint that takes the last token), or finds the
    /// lease empty, and no worker is asking; it asks for what brings the
    /// lease back to `size`, so an Envoy holds at most `size` and makes
    /// about one call per `size − reserve` mints. Mints that find the lease
    /// empty while the refill is in flight ask for their own token (the
    /// fallback); the reserve grows until refills land in time. `claim_ms`:
    /// how long a claim holds before another worker may ask (the call's
    /// timeout and some slack).
    pub fn step(self, size: u32, now_ms: u64, claim_ms: u64) -> (LeaseStep, Self) {
        let usable = self.usable(now_ms);
        let left = usable.saturating_sub(1);
        let refill = (size > 1 && !self.refilling(now_ms) && left <= self.reserve_of(size))
            .then_some(size.saturating_sub(left));
        let refill_until_ms = match refill {
            Some(_) => now_ms.saturating_add(claim_ms),
            None => self.refill_until_ms,
        };
        if usable == 0 {
            let lease = Self {
                held: 0,
                refill_until_ms,
                starved: self.starved || self.refilling(now_ms),
                ..self
            };
            return (LeaseStep::Ask { refill }, lease);
        }
        let lease = Self {
            held: left,
            refill_until_ms,
            ..self
        };
        (LeaseStep::Take { refill }, lease)
    }

    /// The lease after a refill of `granted` tokens counted in a period
    /// that ends at `valid_until_ms` (the claim ends). Tokens still usable
    /// are of the same period (a refill counted in a later period comes
    /// after the earlier one ended, on this clock too): they are kept, and
    /// all end at the earlier of the two ends (both are at or before the
    /// period's true end; they differ by the calls' latencies).
    pub fn refilled(self, granted: u32, valid_until_ms: u64, now_ms: u64, size: u32) -> Self {
        let kept = self.usable(now_ms);
        let valid_until_ms = if kept > 0 {
            valid_until_ms.min(self.valid_until_ms)
        } else {
            valid_until_ms
        };
        let reserve = self.reserve_of(size);
        let reserve = if self.starved {
            reserve.saturating_mul(2).max(1)
        } else if kept > reserve / 2 {
            reserve.saturating_sub((reserve / 4).max(1))
        } else {
            reserve
        };
        Self {
            held: kept.saturating_add(granted),
            valid_until_ms,
            refill_until_ms: 0,
            reserve: reserve.clamp(size / 20, size / 2),
            starved: false,
        }
    }

    /// The lease after the answer to a refill of `hits` sent at `sent_ms`
    /// (for a lease of `size`): refilled until the end of the period the
    /// service counted them in; or no refill until that period ends, when
    /// it refused; or, when the call failed or the service did not say when
    /// its period ends, as it was (the claim ends; the next mint may ask).
    pub fn answered(
        self,
        answer: Result<Verdict, Failure>,
        refill: (u32, u64),
        size: u32,
        now_ms: u64,
    ) -> Self {
        let (hits, sent_ms) = refill;
        let at = |reset: u64| sent_ms.saturating_add(reset);
        match answer {
            Ok(Verdict::Ok {
                reset_ms: Some(reset),
            }) => self.refilled(hits, at(reset), now_ms, size),
            Ok(Verdict::OverLimit {
                reset_ms: Some(reset),
            }) => self.refill_refused(at(reset)),
            Ok(Verdict::Ok { reset_ms: None } | Verdict::OverLimit { reset_ms: None }) | Err(_) => {
                self.refill_failed()
            }
        }
    }

    /// The lease after a refill that brought nothing (the claim ends).
    pub fn refill_failed(self) -> Self {
        Self {
            refill_until_ms: 0,
            starved: false,
            ..self
        }
    }

    /// The lease after the service refused a refill: no refill is asked
    /// until `until_ms`, the end of the period it was refused in (fewer
    /// than a lease remain there; each mint then asks for its own token).
    pub fn refill_refused(self, until_ms: u64) -> Self {
        Self {
            refill_until_ms: until_ms,
            starved: false,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    /// What tells budgets and leases apart is in their names: the
    /// environment, the customer, and for a lease the terms and the domain;
    /// the budget's size and the lease's are not.
    #[test]
    fn budgets_and_leases_are_named_by_what_makes_them_distinct() {
        use crate::config::Period;
        use crate::licence::Environment::{Production, Test};
        let id = CustomerId::parse("100001").unwrap();
        assert_ne!(budget_key(Test, &id), budget_key(Production, &id));
        let other = CustomerId::parse("100002").unwrap();
        assert_ne!(budget_key(Test, &id), budget_key(Test, &other));
        let budget = |tokens, per, lease| FleetBudget { tokens, per, lease };
        let day = budget(5, Period::Day, 10);
        // the demo configuration in an environment, with a domain
        let config = |environment: &str, domain: &str| {
            let mut v: serde_json::Value =
                serde_json::from_str(include_str!("../../tests/fixtures/demo-config.json"))
                    .unwrap();
            v["environment"] = environment.into();
            v["customers"] = serde_json::json!([]);
            v["rate_limit_service"] = serde_json::json!({"cluster": "rl", "domain": domain});
            Config::from_json(v.to_string().as_bytes()).unwrap()
        };
        let (test, production) = (config("test", "fpgen"), config("production", "fpgen"));
        let base = lease_key(&test, &id, day);
        for different in [
            lease_key(&production, &id, day),
            lease_key(&config("test", "fpgen-prod"), &id, day),
            lease_key(&test, &id, budget(6, Period::Day, 10)),
            lease_key(&test, &id, budget(5, Period::Hour, 10)),
            lease_key(&test, &other, day),
        ] {
            assert_ne!(base, different);
        }
        assert_eq!(base, lease_key(&test, &id, budget(5, Period::Day, 20)));
    }

    #[test]
    fn a_lease_round_trips_through_its_bytes() {
        let lease = Lease {
            held: 7,
            valid_until_ms: 1_700_000_000_123,
            refill_until_ms: 5,
            reserve: 12,
            starved: true,
        };
        assert_eq!(Lease::from_bytes(&lease.to_bytes()), lease);
        assert_eq!(Lease::from_bytes(b""), Lease::default());
        assert_eq!(Lease::from_bytes(&[1; 21]), Lease::default());
        assert_eq!(Lease::from_bytes(&[1; 26]), Lease::default());
    }

    #[test]
    fn an_empty_lease_asks_for_one_token_and_a_refill_once() {
        let (step, claimed) = Lease::default().step(10, 1_000, 200);
        assert_eq!(step, LeaseStep::Ask { refill: Some(10) });
        assert_eq!(claimed.refill_until_ms, 1_200);
        // Another worker meanwhile asks for its own token only.
        let (step, same) = claimed.step(10, 1_100, 200);
        assert_eq!(step, LeaseStep::Ask { refill: None });
        assert_eq!(
            same,
            Lease {
                starved: true,
                ..claimed
            }
        );
        // A claim whose worker went away expires.
        let (step, _) = claimed.step(10, 1_200, 200);
        assert_eq!(step, LeaseStep::Ask { refill: Some(10) });
        // A lease of one is no lease.
        let (step, _) = Lease::default().step(1, 0, 200);
        assert_eq!(step, LeaseStep::Ask { refill: None });
        // A refused refill: no more until the period ends.
        let refused = claimed.refill_refused(60_000);
        let (step, _) = refused.step(10, 59_999, 200);
        assert_eq!(step, LeaseStep::Ask { refill: None });
        let (step, _) = refused.step(10, 60_000, 200);
        assert_eq!(step, LeaseStep::Ask { refill: Some(10) });
    }

    #[test]
    fn a_lease_is_minted_from_and_refilled_as_its_last_token_goes() {
        let mut lease = Lease::default().refilled(10, 60_000, 0, 10);
        // 10 held: 9 takes leave 9..1 without a refill…
        for left in (1..=9).rev() {
            let (step, next) = lease.step(10, 10, 200);
            assert_eq!(step, LeaseStep::Take { refill: None }, "{left} left");
            assert_eq!(next.held, left);
            lease = next;
        }
        // …the last one wants a whole lease, once.
        let (step, next) = lease.step(10, 10, 200);
        assert_eq!(step, LeaseStep::Take { refill: Some(10) });
        assert_eq!(next.held, 0);
        let (step, next2) = next.step(10, 11, 200);
        assert_eq!(step, LeaseStep::Ask { refill: None });
        let topped = next2.refilled(10, 60_000, 12, 10);
        assert_eq!((topped.held, topped.refill_until_ms), (10, 0));
        // A lease of 100 keeps a reserve, at first 5: the refill tops it up.
        let mut big = Lease::default().refilled(100, 60_000, 0, 100);
        for _ in 0..94 {
            let (step, next) = big.step(100, 1, 200);
            assert_eq!(step, LeaseStep::Take { refill: None });
            big = next;
        }
        let (step, big) = big.step(100, 2, 200);
        assert_eq!(step, LeaseStep::Take { refill: Some(95) });
        // A mint that finds it empty while the refill flies: the reserve
        // doubles when it lands.
        let (_, drained) = Lease { held: 0, ..big }.step(100, 3, 200);
        assert!(drained.starved);
        let landed = drained.refilled(95, 60_000, 4, 100);
        assert_eq!(
            (landed.held, landed.reserve, landed.starved),
            (95, 10, false)
        );
        // Refills that land with most of the reserve left shrink it again,
        // never below a twentieth.
        let calm = Lease { held: 9, ..landed }.refilled(91, 60_000, 5, 100);
        assert_eq!((calm.held, calm.reserve), (100, 8));
        let calm = Lease { held: 8, ..calm }.refilled(92, 60_000, 5, 100);
        assert_eq!(calm.reserve, 6);
        let calm = Lease { held: 6, ..calm }.refilled(94, 60_000, 5, 100);
        assert_eq!(calm.reserve, 5);
        // Whatever the order of takes and refills, at most 10 are held.
        let mut lease = Lease::default();
        let mut wanted = Vec::new();
        for t in 0..1_000 {
            let (step, next) = lease.step(10, t, 5);
            lease = next;
            if let LeaseStep::Take { refill: Some(h) } | LeaseStep::Ask { refill: Some(h) } = step {
                wanted.push(h);
            }
            if t % 3 == 0 {
                if let Some(h) = wanted.pop() {
                    lease = lease.refilled(h, 60_000, t, 10);
                }
            }
            assert!(lease.held <= 10, "{lease:?} at {t}");
        }
    }

    #[test]
    fn a_lease_ends_with_its_period() {
        let lease = Lease::default().refilled(5, 1_000, 0, 10);
        assert_eq!(lease.usable(999), 5);
        assert_eq!(lease.usable(1_000), 0);
        let (step, _) = lease.step(10, 1_000, 200);
        assert_eq!(step, LeaseStep::Ask { refill: Some(10) });
        // A refill counted in the next period comes after the old one ended.
        let next = lease.refilled(10, 61_000, 1_000, 10);
        assert_eq!((next.held, next.valid_until_ms), (10, 61_000));
        // One of the same period (its end seen a few ms apart) adds up,
        // ending at the earlier end.
        let same = lease.refilled(3, 1_004, 500, 10);
        assert_eq!((same.held, same.valid_until_ms), (8, 1_000));
        let same = lease.refilled(3, 996, 500, 10);
        assert_eq!((same.held, same.valid_until_ms), (8, 996));
    }

    #[test]
    fn a_verdict_reads_the_code_and_the_reset() {
        let answer = |code, reset: Option<Duration>| {
            RateLimitResponse {
                overall_code: code,
                statuses: vec![DescriptorStatus {
                    code,
                    limit_remaining: 3,
                    duration_until_reset: reset,
                }],
            }
            .encode_to_vec()
        };
        let reset = Duration {
            seconds: 59,
            nanos: 250_000_000,
        };
        assert_eq!(
            verdict(&answer(1, Some(reset))),
            Ok(Verdict::Ok {
                reset_ms: Some(59_250)
            })
        );
        assert_eq!(
            verdict(&answer(1, None)),
            Ok(Verdict::Ok { reset_ms: None })
        );
        assert_eq!(
            verdict(&answer(2, Some(reset))),
            Ok(Verdict::OverLimit {
                reset_ms: Some(59_250)
            })
        );
        // whole seconds may be rounded up by the service: one less
        let whole = Duration {
            seconds: 59,
            nanos: 0,
        };
        assert_eq!(
            verdict(&answer(1, Some(whole))),
            Ok(Verdict::Ok {
                reset_ms: Some(58_000)
            })
        );
        assert_eq!(verdict(&answer(0, None)), Err(Failure::Undecodable));
        assert_eq!(verdict(&answer(7, None)), Err(Failure::Undecodable));
        assert_eq!(verdict(b"\xff\xff\xff"), Err(Failure::Undecodable));
        assert_eq!(verdict(b""), Err(Failure::Undecodable)); // code 0
        let negative = Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(
            verdict(&answer(1, Some(negative))),
            Ok(Verdict::Ok { reset_ms: None })
        );
    }

    /// The messages declared here are Envoy's: a request encoded with them
    /// decodes with `envoy-types`' protos to the same fields, and a full
    /// response from those protos decodes to the verdict it means.
    #[test]
    fn the_messages_are_envoys() {
        use envoy_types::pb::envoy::service::ratelimit::v3 as rls;
        let service = RateLimitService {
            cluster: "ratelimit".into(),
            domain: "fpgen-test".into(),
            timeout_ms: 100,
            failure_mode: crate::config::FailureMode::Closed,
        };
        let budget = FleetBudget {
            tokens: 1_000,
            per: crate::config::Period::Month,
            lease: 50,
        };
        let id = CustomerId::parse("100001").unwrap();
        let bytes = request(&service, &id, budget, 50);
        let theirs = rls::RateLimitRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(theirs.domain, "fpgen-test");
        assert_eq!(theirs.hits_addend, 50);
        let [descriptor] = theirs.descriptors.as_slice() else {
            panic!("{theirs:?}")
        };
        let entries: Vec<_> = descriptor
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(entries, [("customer", "100001")]);
        let limit = descriptor.limit.unwrap();
        assert_eq!(limit.requests_per_unit, 1_000);
        assert_eq!(
            limit.unit(),
            envoy_types::pb::envoy::r#type::v3::RateLimitUnit::Month
        );
        assert_eq!(descriptor.hits_addend, None);
        assert!(!descriptor.is_negative_hits);
    }

    #[test]
    fn periods_are_envoys_units() {
        for (period, unit) in [
            (crate::config::Period::Second, 1),
            (crate::config::Period::Minute, 2),
            (crate::config::Period::Hour, 3),
            (crate::config::Period::Day, 4),
            (crate::config::Period::Month, 5),
            (crate::config::Period::Year, 6),
        ] {
            let name = envoy_types::pb::envoy::r#type::v3::RateLimitUnit::try_from(unit).unwrap();
            assert_eq!(name.as_str_name(), period.as_str().to_uppercase());
            assert_eq!(period.unit(), unit);
        }
    }

    #[test]
    fn envoys_answers_are_read() {
        use envoy_types::pb::envoy::service::ratelimit::v3 as rls;
        use rls::rate_limit_response::{Code, DescriptorStatus as Status};
        let response = |code: Code| rls::RateLimitResponse {
            overall_code: code.into(),
            statuses: vec![Status {
                code: code.into(),
                limit_remaining: 7,
                duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: 12,
                    nanos: 5_000_000,
                }),
                ..Status::default()
            }],
            raw_body: b"over".to_vec(),
            ..rls::RateLimitResponse::default()
        };
        assert_eq!(
            verdict(&response(Code::Ok).encode_to_vec()),
            Ok(Verdict::Ok {
                reset_ms: Some(12_005)
            })
        );
        assert_eq!(
            verdict(&response(Code::OverLimit).encode_to_vec()),
            Ok(Verdict::OverLimit {
                reset_ms: Some(12_005)
            })
        );
        assert_eq!(
            verdict(&response(Code::Unknown).encode_to_vec()),
            Err(Failure::Undecodable)
        );
    }

    #[test]
    fn grpc_statuses_name_their_failure() {
        assert_eq!(Failure::of_call(4, 3, 100), Failure::Timeout);
        assert_eq!(Failure::of_call(14, 3, 100), Failure::Unavailable);
        assert_eq!(Failure::of_call(2, 89, 100), Failure::Unavailable);
        assert_eq!(Failure::of_call(14, 1_799, 2_000), Failure::Unavailable);
        // a busy event loop fires its timer a little early
        assert_eq!(Failure::of_call(14, 1_800, 2_000), Failure::Timeout);
        assert_eq!(Failure::of_call(14, 90, 100), Failure::Timeout);
        // Envoy's own timeout: UNAVAILABLE (from its 504), at the timeout
        assert_eq!(Failure::of_call(14, 100, 100), Failure::Timeout);
        assert_eq!(Failure::of_call(14, 2_000, 100), Failure::Timeout);
    }

    fn ok_message() -> Vec<u8> {
        RateLimitResponse {
            overall_code: 1,
            statuses: Vec::new(),
        }
        .encode_to_vec()
    }

    #[test]
    fn a_call_carried_as_http_is_read_from_its_status_headers_and_frame() {
        let framed = grpc_frame(&ok_message());
        assert_eq!(framed.len(), ok_message().len() + 5);
        assert_eq!(framed[..5], [0, 0, 0, 0, 2]);
        let answer = |status, grpc_status, body| HttpAnswer {
            status: Some(status),
            grpc_status,
            body,
        };
        let read = |a: HttpAnswer<'_>, elapsed| verdict_of_http(Some(a), elapsed, 2_000);
        let ok = Ok(Verdict::Ok { reset_ms: None });
        assert_eq!(read(answer("200", None, &framed), 5), ok);
        assert_eq!(read(answer("200", Some("0"), &framed), 5), ok);
        // a frame with bytes after it (trailing data) reads its message
        let mut longer = framed.clone();
        longer.push(7);
        assert_eq!(read(answer("200", None, &longer), 5), ok);
        // trailers-only gRPC errors, an HTTP error, no answer at all
        let unavailable = Err(Failure::Unavailable);
        assert_eq!(read(answer("200", Some("14"), b""), 5), unavailable);
        assert_eq!(
            read(answer("200", Some("4"), b""), 5),
            Err(Failure::Timeout)
        );
        assert_eq!(read(answer("503", None, b""), 5), unavailable);
        assert_eq!(
            read(answer("504", None, b"upstream request timeout"), 2_000),
            Err(Failure::Timeout)
        );
        assert_eq!(verdict_of_http(None, 5, 2_000), unavailable);
        assert_eq!(verdict_of_http(None, 2_000, 2_000), Err(Failure::Timeout));
        // no message (its status was in trailers, which are not seen)
        assert_eq!(read(answer("200", None, b""), 5), unavailable);
        // what is not one uncompressed, whole frame of a response
        let undecodable = Err(Failure::Undecodable);
        let mut compressed = framed.clone();
        compressed[0] = 1;
        assert_eq!(read(answer("200", None, &compressed), 5), undecodable);
        assert_eq!(
            read(answer("200", None, &framed[..framed.len() - 1]), 5),
            undecodable
        );
        assert_eq!(read(answer("200", None, &framed[..3]), 5), undecodable);
        assert_eq!(read(answer("200", Some("x"), &framed), 5), undecodable);
        assert_eq!(
            read(answer("200", None, &grpc_frame(b"\xff")), 5),
            undecodable
        );
    }

    #[test]
    fn a_refills_answer_changes_the_lease_as_the_service_says() {
        let claimed = Lease {
            refill_until_ms: 5_000,
            ..Lease::default()
        };
        let asked = (10, 1_000); // 10 hits sent at 1 s
        let ok = |reset_ms| Ok(Verdict::Ok { reset_ms });
        let refilled = claimed.answered(ok(Some(60_000)), asked, 10, 1_010);
        assert_eq!((refilled.held, refilled.valid_until_ms), (10, 61_000));
        assert_eq!(refilled.refill_until_ms, 0, "the claim ends");
        let refused = claimed.answered(
            Ok(Verdict::OverLimit {
                reset_ms: Some(9_000),
            }),
            asked,
            10,
            1_010,
        );
        assert_eq!((refused.held, refused.refill_until_ms), (0, 10_000));
        for nothing in [
            ok(None),
            Err(Failure::Timeout),
            Ok(Verdict::OverLimit { reset_ms: None }),
        ] {
            let after = claimed.answered(nothing, asked, 10, 1_010);
            assert_eq!(after, claimed.refill_failed(), "{nothing:?}");
            assert_eq!(after.held, 0);
        }
    }
}
