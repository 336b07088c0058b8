//! The stat names, in one place, and what each outcome counts. A host
//! defines each counter by these names (the proxy-wasm filter as they are:
//! Envoy then adds its prefix and the bootstrap's tag rules make labels of
//! the customer, the code and the reason, `wasm_stats`; the dynamic module
//! as labelled counters).

use crate::error::ErrorCode;
use crate::fleet::Failure;
use crate::ids::CustomerId;
use crate::licence::Drm;
use crate::redeem::Refusal;

/// What a counter counts. With the request's customer, when there is one,
/// it names the counter ([`Counter::name`]); the filter looks its counters
/// up by these two and builds a name only the first time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// A token minted ([`tokens_minted`]).
    TokensMinted,
    /// A token request refused ([`rejected`]).
    Rejected(ErrorCode),
    /// A licence request the gate let through ([`redemptions_accepted`]).
    RedemptionsAccepted,
    /// A licence request the gate refused ([`redemptions_rejected`]).
    RedemptionsRejected(Refusal),
    /// A fleet budget that could not be asked ([`fleet_budget_failed`]).
    FleetBudgetFailed(Failure),
    /// A call to the rate-limit service for one request's token
    /// ([`FLEET_TOKEN_CALLS`]).
    FleetTokenCalls,
    /// A call to the rate-limit service for a lease ([`FLEET_LEASE_CALLS`]).
    FleetLeaseCalls,
    /// A token of this DRM minted ([`minted`]), beside [`Self::TokensMinted`].
    Minted(Drm),
    /// A token of this DRM the gate let through ([`redeemed`]), beside
    /// [`Self::RedemptionsAccepted`].
    Redeemed(Drm),
}

impl Counter {
    /// The counter's name for `customer`; `None` for a per-customer counter
    /// without one (a minted or redeemed token always has its customer).
    pub fn name(self, customer: Option<&CustomerId>) -> Option<String> {
        match (self, customer) {
            (Self::TokensMinted, Some(id)) => Some(tokens_minted(id)),
            (Self::RedemptionsAccepted, Some(id)) => Some(redemptions_accepted(id)),
            (Self::TokensMinted | Self::RedemptionsAccepted, None) => None,
            (Self::Rejected(code), id) => Some(rejected(code, id)),
            (Self::RedemptionsRejected(reason), _) => Some(redemptions_rejected(reason)),
            (Self::FleetBudgetFailed(failure), _) => Some(fleet_budget_failed(failure)),
            (Self::FleetTokenCalls, _) => Some(FLEET_TOKEN_CALLS.to_owned()),
            (Self::FleetLeaseCalls, _) => Some(FLEET_LEASE_CALLS.to_owned()),
            (Self::Minted(drm), _) => Some(minted(drm)),
            (Self::Redeemed(drm), _) => Some(redeemed(drm)),
        }
    }
}

/// `fpgen.drm.<drm>.minted`: tokens of the DRM minted (of every customer).
pub fn minted(drm: Drm) -> String {
    format!("fpgen.drm.{}.minted", drm.as_str())
}

/// `fpgen.drm.<drm>.redeemed`: tokens of the DRM the gate let through.
pub fn redeemed(drm: Drm) -> String {
    format!("fpgen.drm.{}.redeemed", drm.as_str())
}

/// `fpgen.customer.<id>.tokens_minted`: tokens minted for the customer.
pub fn tokens_minted(customer: &CustomerId) -> String {
    format!("fpgen.customer.{customer}.tokens_minted")
}

/// `fpgen.customer.<id>.rejected.<code>` once the customer is known, else
/// `fpgen.rejected.<code>`; `<code>` is the code without its minus sign.
pub fn rejected(code: ErrorCode, customer: Option<&CustomerId>) -> String {
    let code = code.code().unsigned_abs();
    match customer {
        Some(id) => format!("fpgen.customer.{id}.rejected.{code}"),
        None => format!("fpgen.rejected.{code}"),
    }
}

/// `fpgen.customer.<id>.redemptions_accepted`: the customer's tokens the
/// gate accepted.
pub fn redemptions_accepted(customer: &CustomerId) -> String {
    format!("fpgen.customer.{customer}.redemptions_accepted")
}

/// `fpgen.redemptions_rejected.<reason>`: licence requests the gate refused.
pub fn redemptions_rejected(reason: Refusal) -> String {
    format!("fpgen.redemptions_rejected.{}", reason.stat_name())
}

/// `fpgen.fleet_budget_failed.<reason>`: fleet-budget questions that got
/// no answer (`timeout`, `unavailable`, `undecodable`), whether a token
/// request waited for them or a lease refill asked them. With failure mode
/// `open`, the token requests among them were minted uncounted.
pub fn fleet_budget_failed(failure: Failure) -> String {
    format!("fpgen.fleet_budget_failed.{}", failure.stat_name())
}

/// `fpgen.fleet_budget_token_calls`: calls to the rate-limit service for
/// one token request's token (every mint with `lease: 1`; with a lease, the
/// fallbacks: a mint that found the lease empty).
pub const FLEET_TOKEN_CALLS: &str = "fpgen.fleet_budget_token_calls";

/// `fpgen.fleet_budget_lease_calls`: calls to the rate-limit service for a
/// lease (refills, made in the background).
pub const FLEET_LEASE_CALLS: &str = "fpgen.fleet_budget_lease_calls";

/// `fpgen.customer.<id>.fleet_lease_tokens`: a gauge of the tokens of the
/// customer's fleet budget this Envoy holds in its lease (counted by the
/// rate-limit service, not minted yet; lost if the Envoy stops), as of the
/// last refill, refill claim or empty lease (not updated on every mint).
pub fn fleet_lease_tokens(customer: &CustomerId) -> String {
    format!("fpgen.customer.{customer}.fleet_lease_tokens")
}

impl crate::outcome::Outcome {
    /// The counter this outcome of a token request adds one to, with
    /// [`crate::outcome::Outcome::customer_id`].
    pub fn counter(&self) -> Counter {
        self.error.map_or(Counter::TokensMinted, Counter::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::TokenError;

    /// Each counter's name, as operators see it in `/stats` (before
    /// Envoy's `wasmcustom.` prefix).
    #[test]
    fn counters_are_named_as_documented() {
        let id = CustomerId::parse("100001").unwrap();
        let cases = [
            (
                Counter::TokensMinted,
                Some(&id),
                Some("fpgen.customer.100001.tokens_minted"),
            ),
            (Counter::TokensMinted, None, None),
            (
                Counter::Rejected(ErrorCode::InvalidIv),
                Some(&id),
                Some("fpgen.customer.100001.rejected.6003"),
            ),
            (
                Counter::Rejected(ErrorCode::InvalidIv),
                None,
                Some("fpgen.rejected.6003"),
            ),
            (
                Counter::RedemptionsAccepted,
                Some(&id),
                Some("fpgen.customer.100001.redemptions_accepted"),
            ),
            (Counter::RedemptionsAccepted, None, None),
            (
                Counter::RedemptionsRejected(Refusal::Token(TokenError::Expired)),
                Some(&id),
                Some("fpgen.redemptions_rejected.expired"),
            ),
        ];
        for (counter, customer, name) in cases {
            assert_eq!(counter.name(customer).as_deref(), name, "{counter:?}");
        }
    }
}
