//! fpgen: the ExpressPlay FairPlay licence-token API, answered at the edge.
//!
//! One pure core and the hosts around it, as two crates. The core is the
//! crate `fpgen-core` (`core/`): what a request means and what to answer,
//! with no host call, no I/O and no dependency on any host; its
//! documentation holds its map, one line per module with what each may
//! import. Its modules are re-exported here under the same names
//! ([`config`], [`service`], [`token`], …), so `fpgen::config` is
//! `fpgen_core::config`; [`stats`] adds the build's stamp to the core's
//! stat names. This crate (`src/`) is the hosts: each carries requests to
//! the core and its answers back, behind a cargo feature with its own
//! dependencies. `make lint` checks the map and that no host names another
//! (`tests/support/module_graph.py`), and builds the core alone, natively
//! and for wasm32.
//!
//! The hosts (each may import the core, never another host):
//! - `hosts::proxy_wasm`: the proxy-wasm filter, `fpgen.wasm` (feature
//!   `proxy-wasm`, wasm32 only), and [`wasm_stats`] (every target): how
//!   Envoy names its stats, the prefix and the tag rules a bootstrap needs.
//! - `hosts::dynamic_module` (feature `dynamic-module`): fpgen as an Envoy
//!   1.40 dynamic module, `libfpgen.so`; its `abi` submodule is the only
//!   code with `unsafe`.
//! - `serve` (feature `serve`, native): `fpgen serve`, the token endpoint
//!   as a plain HTTP service (hyper, tokio).
//! - `ratelimit` (feature `ratelimit`, native): `fpgen ratelimit`, Envoy's
//!   rate-limit protocol on Redis (tonic, redis).
//!
//! The `fpgen` command (`src/bin/fpgen.rs`, feature `cli` with `serve` and
//! `ratelimit`) uses the core and those two hosts.
// No function in src/ over 60 lines (clippy.toml sets the threshold).
#![deny(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::disallowed_methods))]

/// One unit-test suite for every Envoy adapter (test builds only; it lives
/// with the tests).
#[cfg(test)]
#[path = "../tests/adapters/conformance.rs"]
mod conformance;
mod hosts;
pub mod stats;

pub use fpgen_core::{
    challenge, config, error, fleet, ids, licence, lifecycle, params, redeem, render, request,
    secret, service, token,
};

#[cfg(all(feature = "logging", not(target_arch = "wasm32")))]
pub mod logging;
pub use hosts::proxy_wasm::wasm_stats;
#[cfg(all(feature = "ratelimit", not(target_arch = "wasm32")))]
pub use hosts::ratelimit;
#[cfg(all(feature = "serve", not(target_arch = "wasm32")))]
pub use hosts::serve;
