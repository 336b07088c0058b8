//! How Envoy names the proxy-wasm filter's stats: the prefix it puts before
//! every metric a Wasm module defines, and the tag rules a bootstrap needs
//! (`stats_config.stats_tags`: every shipped one carries them, and a test
//! compares) so that Prometheus gets the customer, the code, the reason,
//! the DRM, the version and the build as labels. Host details, compiled on every
//! target: the tests, the docs and the bootstraps use them natively.

/// Envoy's prefix for counters a Wasm module defines.
pub const ENVOY_PREFIX: &str = "wasmcustom.";

/// Envoy's `stats_tags` for these names: tag name and regex (RE2). The
/// first capture group is removed from the name, the second is the tag's
/// value; so `wasmcustom.fpgen.customer.100001.rejected.2027` becomes
/// `wasmcustom.fpgen.rejected` with `fpgen_customer=100001` and
/// `fpgen_code=2027`; `wasmcustom.fpgen.build.0.1.0.50371aa1b2c3` becomes
/// `wasmcustom.fpgen.build` with `fpgen_version=0.1.0` and
/// `fpgen_build=50371aa1b2c3`; `wasmcustom.fpgen.drm.widevine.minted`
/// becomes `wasmcustom.fpgen.minted` with `fpgen_drm=widevine`.
pub const TAG_RULES: [(&str, &str); 6] = [
    (
        "fpgen_customer",
        r"^wasmcustom\.fpgen\.(customer\.([^.]+)\.)",
    ),
    (
        "fpgen_code",
        r"^wasmcustom\.fpgen\.(?:customer\.[^.]+\.)?rejected(\.(\d+))$",
    ),
    (
        "fpgen_reason",
        r"^wasmcustom\.fpgen\.(?:redemptions_rejected|fleet_budget_failed)(\.([a-z_]+))$",
    ),
    ("fpgen_drm", r"^wasmcustom\.fpgen\.(drm\.([a-z]+)\.)"),
    (
        "fpgen_version",
        r"^wasmcustom\.fpgen\.build(\.(.+))\.[a-z0-9-]+$",
    ),
    (
        "fpgen_build",
        r"^wasmcustom\.fpgen\.build(?:\..+)?(\.([a-z0-9-]+))$",
    ),
];
