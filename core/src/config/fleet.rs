//! The configuration of fleet budgets: where they are asked
//! (`rate_limit_service`) and each customer's (`fleet_budget`).

use super::{Problem, Problems, RawFleetBudget, RawRateLimitService};
use serde::Deserialize;

/// The default `rate_limit_service.domain`.
pub const DEFAULT_DOMAIN: &str = "fpgen";
/// The default `rate_limit_service.timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 100;
/// The longest `rate_limit_service.timeout_ms` (a token request waits this
/// long at most, and Envoy's `request_timeout` must leave room for it).
pub const MAX_TIMEOUT_MS: u64 = 10_000;

/// The rate-limit service that keeps fleet budgets
/// (`envoy.service.ratelimit.v3.RateLimitService`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitService {
    /// The Envoy cluster (HTTP/2) that reaches it.
    pub cluster: String,
    /// The rate-limit domain of fpgen's descriptors.
    pub domain: String,
    /// How long a token request waits for its answer.
    pub timeout_ms: u64,
    /// What a token request gets when the budget cannot be asked.
    pub failure_mode: FailureMode,
}

/// What happens to a token request whose fleet budget cannot be asked (the
/// service is unreachable, errs, is too slow or answers nonsense).
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Refused with -9503 (503): no token the fleet did not count.
    #[default]
    Closed,
    /// Minted without counting (the fleet may then mint more than the
    /// budget; each is counted in `fpgen.fleet_budget_failed.<reason>`).
    Open,
}

/// The period a fleet budget is counted in, as the service's windows
/// (fixed, aligned to the Unix epoch; a month is 30 days, a year 365).
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Year,
}

impl Period {
    /// The `envoy.type.v3.RateLimitUnit` value.
    pub const fn unit(self) -> i32 {
        match self {
            Self::Second => 1,
            Self::Minute => 2,
            Self::Hour => 3,
            Self::Day => 4,
            Self::Month => 5,
            Self::Year => 6,
        }
    }

    /// As written in the configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Second => "second",
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
            Self::Year => "year",
        }
    }
}

/// A customer's budget across the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetBudget {
    /// Tokens per period.
    pub tokens: u32,
    pub per: Period,
    /// Tokens an Envoy asks for at a time and mints from locally (1: every
    /// mint asks the service).
    pub lease: u32,
}

/// A name the service or Envoy is given: 1 to 255 visible ASCII
/// characters.
fn is_name(text: &str) -> bool {
    (1..=255).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic())
}

const NAME: &str = "1 to 255 visible ASCII characters";

const NOT_A_MESSAGE: &str = "a cluster name Envoy does not read as a serialized GrpcService \
                             (it parses such names as one; rename the cluster)";

/// Whether Envoy would take `name` for a serialized `GrpcService` rather
/// than a cluster's name: its gRPC call parses the name as that message
/// first (`envoy`, say, is a valid one), and then the call cannot be made
/// (and the proxy-wasm SDK panics on the status Envoy returns for it).
fn reads_as_a_message(name: &str) -> bool {
    <() as prost::Message>::decode(name.as_bytes()).is_ok()
}

/// `rate_limit_service`, with its defaults; the outer `None` when it has a
/// problem.
pub(super) fn validate_service(
    raw: Option<RawRateLimitService>,
    problems: &mut Problems,
) -> Option<Option<RateLimitService>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    let before = problems.count();
    if !is_name(&raw.cluster) {
        problems.push("rate_limit_service.cluster", Problem::Expected(NAME));
    } else if reads_as_a_message(&raw.cluster) {
        problems.push(
            "rate_limit_service.cluster",
            Problem::Expected(NOT_A_MESSAGE),
        );
    }
    let domain = raw.domain.unwrap_or_else(|| DEFAULT_DOMAIN.to_owned());
    if !is_name(&domain) {
        problems.push("rate_limit_service.domain", Problem::Expected(NAME));
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        let range = Problem::OutOfRange {
            min: 1,
            max: MAX_TIMEOUT_MS,
        };
        problems.push("rate_limit_service.timeout_ms", range);
    }
    (problems.count() == before).then_some(Some(RateLimitService {
        cluster: raw.cluster,
        domain,
        timeout_ms,
        failure_mode: raw.failure_mode.unwrap_or_default(),
    }))
}

/// A customer's `fleet_budget` (at `field`); `None` when it has a problem.
pub(super) fn validate_budget(
    field: &str,
    raw: RawFleetBudget,
    has_service: bool,
    problems: &mut Problems,
) -> Option<FleetBudget> {
    let before = problems.count();
    if !has_service {
        let needs = "a rate_limit_service (top level) to keep it";
        problems.push(field, Problem::Required(needs));
    }
    let tokens = u32::try_from(raw.tokens).ok().filter(|&t| t > 0);
    if tokens.is_none() {
        let range = Problem::OutOfRange {
            min: 1,
            max: u64::from(u32::MAX),
        };
        problems.push(format!("{field}.tokens"), range);
    }
    let lease = raw.lease.unwrap_or(1);
    let max_lease = tokens.map_or(u64::from(u32::MAX), u64::from);
    if !(1..=max_lease).contains(&lease) {
        let range = Problem::OutOfRange {
            min: 1,
            max: max_lease,
        };
        problems.push(format!("{field}.lease"), range);
    }
    (problems.count() == before).then_some(FleetBudget {
        tokens: tokens?,
        per: raw.per,
        lease: u32::try_from(lease).ok()?,
    })
}
