//! The core's rules, natively (no Envoy): one test binary, one module per
//! topic, every one through the pure core with a fake host.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

/// What the topics share.
mod support;

/// The access-log record.
mod access_log;
/// Account controls, `allowed_networks`, the client address.
mod accounts;
/// Methods, media types and body sizes, before any parameter.
mod admission;
/// Local and fleet token budgets.
mod budgets;
/// Configuration mistakes.
mod configuration;
/// The reference pages of `docs/` against the code.
mod docs;
/// Every parameter rule and its code; what a token carries.
mod parameters;
/// PlayReady's endpoint and gate.
mod playready;
/// Properties over generated requests (proptest).
mod properties;
/// No secret in any `Debug` rendering.
mod renderings;
/// Stat names and tag rules.
mod stats;
/// The token format's test vectors.
mod token_vectors;
/// Widevine's endpoint.
mod widevine;
