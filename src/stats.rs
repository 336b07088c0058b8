//! The filter's stat names, in one place. The filter defines each counter
//! by these names; Envoy shows them with a `wasmcustom.` prefix, and the tag
//! rules in [`TAG_RULES`] (copied into `envoy/envoy.yaml`'s
//! `stats_config`, which a test compares) turn the customer, the code and
//! the refusal reason into Prometheus labels.

use crate::error::ErrorCode;
use crate::ids::CustomerId;
use crate::redeem::Refusal;

/// Envoy's prefix for counters a Wasm module defines.
pub const ENVOY_PREFIX: &str = "wasmcustom.";

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

/// Envoy's `stats_tags` for these names: tag name and regex (RE2). The
/// first capture group is removed from the name, the second is the tag's
/// value; so `wasmcustom.fpgen.customer.100001.rejected.2027` becomes
/// `wasmcustom.fpgen.rejected` with `fpgen_customer=100001` and
/// `fpgen_code=2027`.
pub const TAG_RULES: [(&str, &str); 3] = [
    (
        "fpgen_customer",
        r"^wasmcustom\.fpgen\.(customer\.([^.]+)\.)",
    ),
    (
        "fpgen_code",
        r"^wasmcustom\.fpgen\.(?:customer\.[^.]+\.)?rejected(\.(\d+))$",
    ),
    (
        "fpgen_reason",
        r"^wasmcustom\.fpgen\.redemptions_rejected(\.([a-z_]+))$",
    ),
];
