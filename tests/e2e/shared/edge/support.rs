//! What the edge tests share: an Envoy with a recording licence server behind
//! the gate, requests as an attacker sends them, a WSGI licence server.

pub(crate) use crate::common;
pub use crate::common::{
    get, h2c, licence_request, now, post_form, request, Envoy, Options, Recorded,
    RecordingUpstream, CK, DEMO_AUTHENTICATOR, IV, LICENCE_HEADERS,
};
pub use fpgen::licence::Environment;
pub use serde_json::{json, Value};
pub use std::io::{BufRead, BufReader};
pub use std::process::{Child, Command, Stdio};
pub use std::time::Duration;

pub const EVIL_KEY: &str = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
/// A FairPlay SPC stand-in: every byte value, so that any re-encoding shows.
pub fn spc() -> Vec<u8> {
    (0..=255u8)
        .chain(b"\r\n\r\n0\r\n\r\n".iter().copied())
        .collect()
}

/// The demo configuration with JSON errors at the gate (its redemption
/// section replaced), then `edit`.
pub fn config_with(edit: impl FnOnce(&mut Value)) -> String {
    fpgen_fixtures::json_with(|c| {
        c["redemption"] = json!({"error_format": "json"});
        edit(c);
    })
}

pub fn start(upstream_port: u16, options: Options, config: &str) -> Envoy {
    Envoy::start_with(
        config,
        &Options {
            upstream_port: Some(upstream_port),
            ..options
        },
    )
}

pub fn mint(envoy: &Envoy) -> String {
    common::mint(envoy, "")
}

pub fn redeem_with(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> common::HttpResponse {
    licence_request(envoy, path, headers, &spc())
}

/// -4010 in JSON with 403.
#[track_caller]
pub fn assert_4010(r: &common::HttpResponse, why: &str) {
    assert_eq!(r.status, 403, "{why}: {r:?}");
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["code"], -4010, "{why}: {v}");
}

/// The licence-data header names a request carried, folded the CGI way.
pub fn fpgen_names(req: &Recorded) -> Vec<String> {
    req.names_like("x-fpgen-")
}

/// The injected spellings of point 1.
pub fn underscore_spellings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("x_fpgen_customer", "999999"),
        ("x_fpgen_content_key", EVIL_KEY),
        ("X_FPGEN_CONTENT_KEY", EVIL_KEY),
        ("x-fpgen_content_key", EVIL_KEY),
        ("x_fpgen-content-key", EVIL_KEY),
        ("X-Fpgen-Content-Key", EVIL_KEY),
    ]
}

/// A recording upstream behind an Envoy without the HCM hardening (the
/// filter is the only wall) and the gate answering in JSON.
pub fn unhardened_gate() -> (RecordingUpstream, Envoy) {
    let upstream = RecordingUpstream::start();
    let envoy = start(
        upstream.port,
        Options::of(this_module!()).unhardened(),
        &config_with(|_| {}),
    );
    (upstream, envoy)
}

/// Mints on a fresh Envoy in front of 127.0.0.1:`upstream_port` and
/// redeems the token (then `extra`) with the injected spellings.
pub fn redeem_spoofed(
    upstream_port: u16,
    options: Options,
    extra: &str,
) -> (Envoy, common::HttpResponse) {
    let envoy = start(upstream_port, options, &config_with(|_| {}));
    let token = mint(&envoy);
    let r = redeem_with(
        &envoy,
        &format!("/hms/fp/rights/?ExpressPlayToken={token}{extra}"),
        &underscore_spellings(),
    );
    (envoy, r)
}

// ---- 1. underscore and letter-case spellings -----------------------------

/// A WSGI licence server (Python's wsgiref), killed when dropped.
pub struct WsgiServer {
    child: Child,
    pub port: u16,
}

impl WsgiServer {
    pub fn start() -> WsgiServer {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/wsgi_licence_server.py"
        );
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = common::spawn_tied_to_process(cmd).unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no port: {line:?}"));
        WsgiServer { child, port }
    }
}

impl Drop for WsgiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const TRAVERSALS: [&str; 8] = [
    "/hms/fp/rights/../../admin/keys",
    "/hms/fp/rights/..%2F..%2Fadmin",
    "/hms/fp/rights/%2e%2e/%2e%2e/admin",
    "/hms/fp/rights/..;/..;/admin",
    "/hms/fp/rights/.%2E/admin",
    "/hms/fp/rights/..%5C..%5Cadmin",
    "/hms/fp/rights/%252e%252e/%252e%252e/admin",
    "/hms/fp/rights/..%20/..%20/admin",
];

/// A token of the demo key, for times no mint of fpgen's produces.
pub fn seal_demo(issued_at: i64, expires_at: i64) -> String {
    common::seal_token(
        fpgen_fixtures::SEALING_KEY_ID,
        fpgen_fixtures::SEALING_KEY_HEX,
        Environment::Test,
        issued_at,
        expires_at,
    )
}

/// A content key and a secret used only by the debug-log test (also in
/// the log audit's list).
pub const DEBUG_CK: &str = "d1d2d3d4d5d6d7d8d9dadbdcdddedfd0";

/// The configurations in `envoy/` that hold an HTTP connection manager.
pub const SHIPPED: [&str; 7] = [
    "envoy/envoy.yaml",
    "envoy/native.yaml",
    "envoy/fleet.yaml",
    "envoy/gate.yaml",
    "envoy/two-environments.yaml",
    "envoy/dynamic/lds.yaml",
    "envoy/ecds/bootstrap.yaml",
];
