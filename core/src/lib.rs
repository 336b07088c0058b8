//! fpgen's core: what a licence-token request (FairPlay, Widevine,
//! PlayReady) means
//! and what to answer. It makes no host call and no I/O, and it names no host: it is a
//! crate of its own (`core/`), which the hosts (the crate `fpgen`, `src/`)
//! carry requests to, so the build proves what a comment could only say.
//! A host supplies what is its own through the core's traits and values:
//! the clock and randomness ([`service::Host`]), the budgets' counts, the
//! configuration's "is not set" hint ([`config::HostEnv`]). What the core
//! does not know at all is the hosts' own: the prefix Envoy gives a
//! module's stats, and the build stamp (the crate `fpgen`'s `stats`).
//!
//! The core, one line per module (and what it may import):
//! - [`error`]: the error table (nothing).
//! - [`ids`]: customer, key and content ids (nothing).
//! - [`secret`]: key types that zeroize and compare in constant time (nothing).
//! - [`licence`]: the licence data a token carries (`ids`, `secret`).
//! - [`token`]: the token format, sealing and opening (`ids`, `licence`, `secret`).
//! - [`params`]: the parameter table, the query and form decoder (`error`, `licence`, `token`).
//! - [`config`]: the configuration, parsed and checked (`error`, `ids`, `licence`, `secret`, `token`).
//! - `outcome` (private; its record is [`service::Outcome`]): what happened to one request, for stats and the log (`error`, `ids`, `licence`).
//! - [`render`]: answers as HTTP responses (`error`).
//! - [`challenge`]: a PlayReady licence challenge's `CustomData` (nothing).
//! - [`request`]: a token request's validation (`config`, `error`, `ids`, `licence`, `params`, `secret`, `token`).
//! - [`fleet`]: fleet budgets: the rate-limit messages, leases and the names of budgets and leases (`config`, `ids`, `licence`).
//! - [`service`]: the token endpoint, as steps a host answers (the modules above).
//! - [`redeem`]: the redemption gate (the modules above but `service`).
//! - [`stats`]: stat names and what each outcome counts (`error`, `fleet`, `ids`, `licence`, `outcome`, `redeem`, `token`).
//! - `edge` (private; [`lifecycle`] is its one user): what every host does with a request, in order (the whole core).
//! - [`lifecycle`]: one request's life as events in and instructions out, for every host (the whole core).
//!
//! `make lint` checks each line against the source
//! (`tests/support/module_graph.py`: no cycle, and each module imports only
//! what its line allows) and builds this crate alone, natively and for
//! wasm32.
// No function over 60 lines (clippy.toml sets the threshold).
#![deny(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod challenge;
pub mod config;
mod edge;
pub mod error;
pub mod fleet;
pub mod ids;
pub mod licence;
pub mod lifecycle;
mod outcome;
pub mod params;
pub mod redeem;
pub mod render;
pub mod request;
pub mod secret;
pub mod service;
pub mod stats;
pub mod token;
