//! The end-to-end suites both modules share, through a real Envoy running
//! the built module, driven over HTTP: one test binary, a module per topic.
//! `make test` runs it twice: with the Wasm module, then with the native
//! one (`FPGEN_MODULE=native`); a test that applies to one module only says
//! why in one line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../common/mod.rs"]
mod common;

/// Customer accounts and token budgets.
mod accounts;
/// What the endpoint admits, and `fpgen serve` beside Envoy.
mod admission;
/// The dashboard and the alert rules against Envoy's metrics.
mod dashboard;
/// The edge as an attacker tries it, a module per concern.
mod edge;
/// Fleet budgets against `fpgen ratelimit` on Redis.
mod fleet;
/// The harness itself and the demo bootstrap.
mod harness_smoke;
/// Hostile clients: slow, malformed, oversized.
mod hostile;
/// Operating it: secrets from the environment, stats, the access log.
mod operations;
/// The redemption gate: what reaches the licence server.
mod redemption;
/// Configuration reloads through LDS.
mod reload;
/// The API through Envoy, as its clients use it.
mod token_api;
