//! The end-to-end tests, through a real Envoy running the built module,
//! driven over HTTP: one test binary, a module per topic.
//!
//! The suites both modules share (`shared/`) are compiled once per module
//! and run in the same run, as rustls runs its API tests once per crypto
//! provider: `with_wasm::…` against the Wasm module, `with_native::…`
//! against the native one's test build. Each copy binds its module in the
//! source: `this_module!()` names it, and every harness Envoy a shared test
//! starts is given it (`Options::of(this_module!())`,
//! `shared(this_module!())`); `cargo test --test e2e with_native::` runs
//! one module's. A shared test that applies to one module only says why in
//! one line.
//!
//! The other suites run once: each picks its module itself, or tests what
//! has no module.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// The shared suites are compiled once per module, on purpose.
#![allow(clippy::duplicate_mod)]

#[path = "../common/mod.rs"]
mod common;

/// The suites both modules share, a module per topic: the contents of
/// [`with_wasm`] and of [`with_native`]. (The paths are from this directory:
/// each of the two is `#[path = "."]`.)
macro_rules! shared_suites {
    () => {
        /// Customer accounts and token budgets.
        #[path = "shared/accounts.rs"]
        mod accounts;
        /// What the endpoint admits, and `fpgen serve` beside Envoy.
        #[path = "shared/admission.rs"]
        mod admission;
        /// The dashboard and the alert rules against Envoy's metrics.
        #[path = "shared/dashboard.rs"]
        mod dashboard;
        /// The edge as an attacker tries it, a module per concern.
        #[path = "shared/edge/mod.rs"]
        mod edge;
        /// Fleet budgets against `fpgen ratelimit` on Redis.
        #[path = "shared/fleet.rs"]
        mod fleet;
        /// The harness itself and the demo bootstrap.
        #[path = "shared/harness_smoke.rs"]
        mod harness_smoke;
        /// Hostile clients: slow, malformed, oversized.
        #[path = "shared/hostile.rs"]
        mod hostile;
        /// Operating it: secrets from the environment, stats, the access log.
        #[path = "shared/operations.rs"]
        mod operations;
        /// PlayReady's endpoint and gate.
        #[path = "shared/playready.rs"]
        mod playready;
        /// The redemption gate: what reaches the licence server.
        #[path = "shared/redemption.rs"]
        mod redemption;
        /// Configuration reloads through LDS.
        #[path = "shared/reload.rs"]
        mod reload;
        /// The API through Envoy, as its clients use it.
        #[path = "shared/token_api.rs"]
        mod token_api;
        /// Widevine's endpoint and gate.
        #[path = "shared/widevine.rs"]
        mod widevine;
    };
}

/// The shared suites against the Wasm module.
#[path = "."]
mod with_wasm {
    /// This copy's module: every Envoy its suites start runs it (bound here,
    /// in the source, as rustls binds each copy of its API tests to a
    /// crypto provider: `provider_ring!()`).
    macro_rules! this_module {
        () => {
            $crate::common::Module::Wasm
        };
    }
    shared_suites!();
}

/// The shared suites against the native dynamic module (`make native-test`).
#[path = "."]
mod with_native {
    /// This copy's module (as for [`with_wasm`]).
    macro_rules! this_module {
        () => {
            $crate::common::Module::Native
        };
    }
    shared_suites!();
}

/// The shipped files of `envoy/`, as shipped.
mod deploy;
/// Updates of the Wasm module and its configuration through ECDS.
mod ecds;
/// What only the native module does.
mod native;
/// `fpgen ratelimit` alone, on Redis.
mod ratelimit;
