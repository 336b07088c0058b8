//! The proxy-wasm host: the adapter (`adapter`: what the filter does with
//! Envoy's callbacks, over the host calls as a trait; built natively for
//! its unit tests too), the shell (`filter`, wasm32 with the feature
//! `proxy-wasm`: the host calls themselves), and how Envoy names its stats
//! (`wasm_stats`, every target).

#[cfg(any(all(feature = "proxy-wasm", target_arch = "wasm32"), test))]
mod adapter;
#[cfg(all(feature = "proxy-wasm", target_arch = "wasm32"))]
mod filter;
pub mod wasm_stats;
