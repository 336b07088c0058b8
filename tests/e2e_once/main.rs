//! The end-to-end suites that run once, whatever `FPGEN_MODULE` says: each
//! picks its module itself, or tests what has no module.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../common/mod.rs"]
mod common;

/// The shipped files of `envoy/`, as shipped.
mod deploy;
/// Updates of the Wasm module and its configuration through ECDS.
mod ecds;
/// What only the native module does.
mod native;
/// `fpgen ratelimit` alone, on Redis.
mod ratelimit;
