//! fpgen: the ExpressPlay FairPlay licence-token API, answered at the edge.
//!
//! One pure core and the hosts around it. The core (`src/pure/`) makes no
//! host call and no I/O: it is what a request means and what to answer. A
//! host (`src/hosts/`) carries requests to it and its answers back, each
//! behind a cargo feature with its own dependencies. The core imports no
//! host; a host imports the core. `make lint` checks it: the module graph
//! has no cycle, no core module names a host, and each core module imports
//! only what its line below allows (`tests/support/module_graph.py`); and
//! the core builds alone (`--no-default-features`), natively and for
//! wasm32.
//!
//! The core, one line per module (and what it may import):
//! - [`error`]: the error table (nothing).
//! - [`ids`]: customer, key and content ids (nothing).
//! - [`secret`]: key types that zeroize and compare in constant time (nothing).
//! - [`params`]: the parameter table, the query and form decoder (`error`).
//! - [`licence`]: the licence data a token carries (`ids`, `secret`).
//! - [`token`]: the token format, sealing and opening (`ids`, `licence`, `secret`).
//! - [`config`]: the configuration, parsed and checked (`error`, `ids`, `licence`, `secret`, `token`).
//! - [`outcome`]: what happened to one request, for stats and the log (`error`, `ids`, `licence`).
//! - [`render`]: answers as HTTP responses (`error`).
//! - [`request`]: a token request's validation (`config`, `error`, `ids`, `licence`, `params`, `secret`, `token`).
//! - [`fleet`]: fleet budgets: the rate-limit messages and leases (`config`, `ids`).
//! - [`service`]: the token endpoint, as steps a host answers (the modules above).
//! - [`redeem`]: the redemption gate (the modules above but `service`).
//! - [`stats`]: stat names and what each outcome counts (`error`, `fleet`, `ids`, `outcome`, `redeem`, `token`).
//! - [`edge`]: what every host does with a request, in order (the whole core).
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

mod hosts;
mod pure;

pub use pure::{
    config, edge, error, fleet, ids, licence, outcome, params, redeem, render, request, secret,
    service, stats, token,
};

pub use hosts::proxy_wasm::wasm_stats;
#[cfg(all(feature = "ratelimit", not(target_arch = "wasm32")))]
pub use hosts::ratelimit;
#[cfg(all(feature = "serve", not(target_arch = "wasm32")))]
pub use hosts::serve;
