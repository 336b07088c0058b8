//! End-to-end harness: runs a real Envoy 1.40 with the fpgen module on free
//! loopback ports and talks byte-exact HTTP/1.1 to it.
//!
//! Use it from an integration test with `mod common;`.
//!
//! * [`shared()`]: one Envoy per test binary with [`DEMO_CONFIG`] (the
//!   configuration of `envoy/envoy.yaml`), started on first use.
//! * [`Envoy::start`] / [`Envoy::start_with`]: a private Envoy with any filter
//!   configuration; it is killed when dropped. [`Envoy::try_start`] is for
//!   configurations that Envoy must reject: it returns the log instead of
//!   panicking.
//! * [`get`], [`post_form`], [`request`], [`raw`]: a raw HTTP/1.1 client over
//!   `TcpStream`, so a test controls every byte (an unencoded `+` in the
//!   query, odd headers, broken framing); [`h2c`] for HTTP/2 with trailers.
//! * [`RecordingUpstream`]: a licence server stand-in that records every
//!   byte it receives; [`Serve`]: `fpgen serve`, the endpoint without Envoy.
//!
//! One module per concern: `envoy` (the process and its readiness),
//! `bootstrap` (its configuration, built with `serde_json`), `process`
//! (paths, work and log directories, children tied to the test process),
//! `http` (the client and the message parsing the upstream shares),
//! `h2c`, `upstream`, `serve`, `tokens` (minting and redeeming). Fixtures come from the `fpgen-fixtures`
//! crate.
//!
//! The Envoy binary and the module come from `FPGEN_ENVOY` and `FPGEN_WASM`
//! (set by `make test`), else from `.venv/bin/envoy` and
//! `target/wasm32-wasip1/release/fpgen.wasm` in the project. When they are
//! missing, or Envoy does not come up, the tests fail: they never skip.
//!
//! Every Envoy is spawned from one thread that lives as long as the test
//! process, with `PR_SET_PDEATHSIG(SIGKILL)`: when the test process ends,
//! however it ends, the kernel kills its Envoys (the shared one is in a
//! static and is never dropped).
#![allow(dead_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod bootstrap;
mod ecds;
mod envoy;
mod h2c;
mod http;
mod pki;
mod process;
mod ratelimit;
mod serve;
mod tokens;
mod upstream;

// Each test binary uses part of the harness.
#[allow(unused_imports)]
pub use bootstrap::{
    bootstrap, hardened_hcm, native_typed_config, ACCESS_LOG_FORMAT, NATIVE_ACCESS_LOG_FORMAT,
    NOT_FOUND_BODY, PASSTHROUGH_BODY, RIGHTS_BODY,
};
#[allow(unused_imports)]
pub use ecds::{native_resource, resource, EcdsEnvoy};
#[allow(unused_imports)]
pub use envoy::{free_port, shared, Envoy, Options, READY_TIMEOUT, SHIPPED_ENV};
#[allow(unused_imports)]
pub use h2c::{h2_frame, h2c, hpack_block};
#[allow(unused_imports)]
pub use http::{
    chunked_body, exchange, get, parse_response, post_form, raw, request, request_bytes, try_raw,
    HttpResponse, KeepAlive, IO_TIMEOUT,
};
#[allow(unused_imports)]
pub use pki::Pki;
#[allow(unused_imports)]
pub use process::{
    envoy_release, new_workdir, spawn_tied_to_process, tail, tool_paths, upgrade_wasm, Module,
    E2E_LOG_DIR,
};
#[allow(unused_imports)]
pub use ratelimit::{wait_for_port, Process, Redis, Service, ServiceArgs};
#[allow(unused_imports)]
pub use serve::Serve;
#[allow(unused_imports)]
pub use tokens::{licence_request, mint, now, LICENCE_HEADERS};
#[allow(unused_imports)]
pub use upstream::{Recorded, RecordingUpstream};

/// The demo's filter configuration (`envoy/envoy.yaml`), the
/// authenticator it accepts, a content key and IV: the shared fixtures.
#[allow(unused_imports)]
pub use fpgen_fixtures::{
    sealed_token as seal_token, token_of_url, AUTHENTICATOR as DEMO_AUTHENTICATOR,
    CONTENT_KEY as CK, DEMO_CONFIG, IV,
};

/// The key id a token's header names (unverified: for asserting which key
/// sealed a token that is then opened).
pub fn key_id(token: &str) -> Option<String> {
    let token = fpgen::token::UntrustedToken::parse(token).ok()?;
    String::from_utf8(token.untrusted_key_id().to_vec()).ok()
}
