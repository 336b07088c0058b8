//! The proxy-wasm host: the filter (`filter`, wasm32 with the feature
//! `proxy-wasm`), and how Envoy names its stats (`wasm_stats`, every
//! target).

#[cfg(all(feature = "proxy-wasm", target_arch = "wasm32"))]
mod filter;
pub mod wasm_stats;
