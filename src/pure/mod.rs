//! The pure core: no host calls, no I/O (the map is in the crate's
//! documentation). Nothing here may name `crate::hosts`.

pub mod config;
pub mod edge;
pub mod error;
pub mod fleet;
pub mod ids;
pub mod licence;
pub mod outcome;
pub mod params;
pub mod redeem;
pub mod render;
pub mod request;
pub mod secret;
pub mod service;
pub mod stats;
pub mod token;
