//! fpgen: the ExpressPlay FairPlay licence-token API, answered at the edge.
pub mod config;
pub mod error;
pub mod licence;
pub mod params;
pub mod redeem;
pub mod render;
pub mod request;
pub mod secret;
#[cfg(not(target_arch = "wasm32"))]
pub mod server;
pub mod service;
pub mod token;

#[cfg(target_arch = "wasm32")]
mod filter;
