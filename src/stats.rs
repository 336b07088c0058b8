//! Stat names: the core's ([`fpgen_core::stats`], re-exported here) and
//! the build's, which only the hosts know: the version and the git commit
//! they were built from (`build.rs` stamps this crate, not the core, so a
//! commit rebuilds the hosts alone).

pub use fpgen_core::stats::*;

/// The crate's version, `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The build: the git commit (12 hex digits, or `unknown`) and the build's
/// label when it has one (`build.rs`).
pub const BUILD: &str = env!("FPGEN_REVISION");

/// `0.1.0 (50371aa5fc84)`: how the module's log lines and `fpgen --version`
/// name the build.
pub const VERSION_BUILD: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("FPGEN_REVISION"), ")");

/// `fpgen.build.<version>.<build>`: a gauge each VM sets to 1, so that
/// `/stats` shows which module a proxy runs (a fleet's versions, an
/// upgrade taking effect).
pub fn build() -> String {
    format!("fpgen.build.{VERSION}.{BUILD}")
}
