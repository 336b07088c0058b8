//! Minting and redeeming through a harness Envoy, as a backend and a
//! player do.

use super::envoy::Envoy;
use super::http::{get, request, HttpResponse};
use fpgen_fixtures::{query, token_of_url};
use std::time::{SystemTime, UNIX_EPOCH};

/// The licence headers the gate sends for a token without kid, cookie or
/// extension, in the order it sends them.
pub const LICENCE_HEADERS: [&str; 9] = [
    "x-fpgen-content-key",
    "x-fpgen-iv",
    "x-fpgen-rental-duration",
    "x-fpgen-general-flags",
    "x-fpgen-customer",
    "x-fpgen-environment",
    "x-fpgen-issued",
    "x-fpgen-expires",
    "x-fpgen-key-id",
];

/// The wall clock, in seconds since the epoch.
pub fn now() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_secs()).unwrap()
}

/// Mints a token through `envoy` with the demo authenticator, content key
/// and IV, then `extra` (`&name=value…`, or empty); the answer must be 200.
pub fn mint(envoy: &Envoy, extra: &str) -> String {
    let r = get(envoy.port, &format!("/hms/fp/token?{}", query(extra)));
    assert_eq!(r.status, 200, "{r:?}");
    token_of_url(&r.text())
}

/// The player's licence request: a POST of `spc` (binary) to
/// `path_and_query` with `headers` added.
pub fn licence_request(
    envoy: &Envoy,
    path_and_query: &str,
    headers: &[(&str, &str)],
    spc: &[u8],
) -> HttpResponse {
    let mut all = vec![("Content-Type", "application/octet-stream")];
    all.extend_from_slice(headers);
    request(envoy.port, "POST", path_and_query, &all, Some(spc))
}
