//! fpgen: the ExpressPlay FairPlay licence-token API, answered at the edge.
//!
//! The pure core (no proxy-wasm): [`error`] (the error table), [`params`]
//! (the parameter table and the form decoder), [`ids`], [`licence`],
//! [`secret`], [`token`] (the token format and its keys), [`config`],
//! [`request`] (validation), [`render`], [`fleet`] (fleet budgets: the
//! rate-limit messages and leases), [`service`] (the token endpoint),
//! [`redeem`] (the redemption gate), [`edge`] (what every host does with
//! a request, in order) and [`stats`]. The host shell, `filter`, is the
//! one module that makes host calls; it carries `edge`'s decisions.
//! `dynamic_module` (feature `dynamic-module`) is the native host shell,
//! fpgen as an Envoy 1.40 dynamic module: it carries the same decisions,
//! and its `abi` submodule is the only code with `unsafe`. Native only:
//! `server` (`fpgen serve`) and `ratelimit` (`fpgen ratelimit`, Envoy's
//! rate-limit protocol on Redis).
// No function in src/ over 60 lines (clippy.toml sets the threshold).
#![deny(clippy::too_many_lines)]
pub mod config;
pub mod edge;
pub mod error;
pub mod fleet;
pub mod ids;
pub mod licence;
pub mod outcome;
pub mod params;
#[cfg(not(target_arch = "wasm32"))]
pub mod ratelimit;
pub mod redeem;
pub mod render;
pub mod request;
pub mod secret;
#[cfg(not(target_arch = "wasm32"))]
pub mod server;
pub mod service;
pub mod stats;
pub mod token;

#[cfg(target_arch = "wasm32")]
mod filter;

#[cfg(all(any(feature = "dynamic-module", test), not(target_arch = "wasm32")))]
mod dynamic_module;
