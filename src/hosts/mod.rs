//! The hosts: each carries requests to the pure core and its answers back,
//! behind a cargo feature with its own dependencies (the map is in the
//! crate's documentation). A host imports the core, never another host.

#[cfg(all(any(feature = "dynamic-module", test), not(target_arch = "wasm32")))]
mod dynamic_module;
pub mod proxy_wasm;
#[cfg(all(feature = "ratelimit", not(target_arch = "wasm32")))]
pub mod ratelimit;
#[cfg(all(feature = "serve", not(target_arch = "wasm32")))]
pub mod serve;
