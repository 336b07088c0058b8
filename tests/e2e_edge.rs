//! The edge holds: tried as an attacker would, through a real Envoy with a
//! licence server behind the gate that records every byte it receives (and
//! a stdlib WSGI one that reads headers the CGI way), nothing reaches the
//! licence server that fpgen did not seal, and every input gets its true
//! answer. Each test names the point of the threat model it proves; most
//! run twice: with the filter as the only wall (`Options::unhardened`) and
//! with the HTTP connection manager settings of every shipped configuration.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{
    get, h2c, licence_request, now, post_form, request, Envoy, Options, Recorded,
    RecordingUpstream, CK, DEMO_AUTHENTICATOR, IV, LICENCE_HEADERS,
};
use fpgen::licence::Environment;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const EVIL_KEY: &str = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
/// A FairPlay SPC stand-in: every byte value, so that any re-encoding shows.
fn spc() -> Vec<u8> {
    (0..=255u8)
        .chain(b"\r\n\r\n0\r\n\r\n".iter().copied())
        .collect()
}

/// The demo configuration with JSON errors at the gate (its redemption
/// section replaced), then `edit`.
fn config_with(edit: impl FnOnce(&mut Value)) -> String {
    fpgen_fixtures::json_with(|c| {
        c["redemption"] = json!({"error_format": "json"});
        edit(c);
    })
}

fn start(upstream_port: u16, options: Options, config: &str) -> Envoy {
    Envoy::start_with(
        config,
        &Options {
            upstream_port: Some(upstream_port),
            ..options
        },
    )
}

fn mint(envoy: &Envoy) -> String {
    common::mint(envoy, "")
}

fn redeem_with(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> common::HttpResponse {
    licence_request(envoy, path, headers, &spc())
}

/// -4010 in JSON with 403.
#[track_caller]
fn assert_4010(r: &common::HttpResponse, why: &str) {
    assert_eq!(r.status, 403, "{why}: {r:?}");
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["code"], -4010, "{why}: {v}");
}

/// The licence-data header names a request carried, folded the CGI way.
fn fpgen_names(req: &Recorded) -> Vec<String> {
    req.names_like("x-fpgen-")
}

/// The injected spellings of point 1.
fn underscore_spellings() -> Vec<(&'static str, &'static str)> {
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
fn unhardened_gate() -> (RecordingUpstream, Envoy) {
    let upstream = RecordingUpstream::start();
    let envoy = start(
        upstream.port,
        Options::default().unhardened(),
        &config_with(|_| {}),
    );
    (upstream, envoy)
}

/// Mints on a fresh Envoy in front of 127.0.0.1:`upstream_port` and
/// redeems the token (then `extra`) with the injected spellings.
fn redeem_spoofed(
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

#[test]
fn underscore_spellings_never_reach_the_licence_server() {
    for options in [Options::default().unhardened(), Options::default()] {
        let hardened = options.hardened;
        let upstream = RecordingUpstream::start();
        let (envoy, r) = redeem_spoofed(upstream.port, options, "");
        assert_eq!(r.status, 200, "hardened {hardened}: {r:?}");
        let req = upstream.requests().pop().unwrap();
        assert_eq!(fpgen_names(&req), LICENCE_HEADERS, "hardened {hardened}");
        assert_eq!(req.header_all("x-fpgen-content-key"), [CK]);
        assert_eq!(req.header_all("x-fpgen-customer"), ["100001"]);
        let raw = String::from_utf8_lossy(&req.raw);
        assert!(!raw.contains(EVIL_KEY) && !raw.contains("999999"), "{raw}");
        // the second wall: the HCM itself dropped them before the filter ran
        let dropped = envoy.stat("http1.dropped_headers_with_underscores");
        if hardened {
            assert_eq!(dropped, Some(5), "5 underscore names dropped");
        } else {
            assert_eq!(dropped.unwrap_or(0), 0);
        }
    }
}

/// A WSGI licence server (Python's wsgiref), killed when dropped.
struct WsgiServer {
    child: Child,
    port: u16,
}

impl WsgiServer {
    fn start() -> WsgiServer {
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

#[test]
fn a_wsgi_licence_server_reads_only_the_gates_licence_data() {
    for options in [Options::default().unhardened(), Options::default()] {
        let wsgi = WsgiServer::start();
        let (_envoy, r) = redeem_spoofed(wsgi.port, options, "&id=42");
        assert_eq!(r.status, 200, "{r:?}");
        let seen: Value = serde_json::from_slice(&r.body).unwrap();
        let http = seen["http"].as_object().unwrap();
        assert_eq!(http["HTTP_X_FPGEN_CONTENT_KEY"], CK, "{seen}");
        assert_eq!(http["HTTP_X_FPGEN_CUSTOMER"], "100001", "{seen}");
        let fpgen: Vec<&String> = http
            .keys()
            .filter(|k| k.starts_with("HTTP_X_FPGEN"))
            .collect();
        assert_eq!(fpgen.len(), LICENCE_HEADERS.len(), "{fpgen:?}");
        assert_eq!(seen["query"], "id=42", "the token is stripped, id is kept");
        assert_eq!(seen["body_hex"], hex::encode(spc()));
    }
}

// ---- 2. reserved headers on every route, and in trailers -----------------

#[test]
fn reserved_headers_are_removed_on_every_route_and_in_trailers() {
    let (upstream, envoy) = unhardened_gate();
    // routes wider than the gate's prefix reach the upstream without a token
    for path in [
        "/hms/fp/rights",
        "//hms/fp/rights/",
        "/HMS/fp/rights/",
        "/hms/fp/rights%2F",
        "/hms/fp/./rights/",
        "/segments/1.ts",
    ] {
        let r = request(
            envoy.port,
            "GET",
            path,
            &[("x-fpgen-content-key", EVIL_KEY), ("X_FPGEN_CUSTOMER", "9")],
            None,
        );
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let req = upstream.requests().pop().unwrap();
        assert_eq!(req.path, path);
        assert!(fpgen_names(&req).is_empty(), "{path}: {:?}", req.headers);
    }
    // trailers: an HTTP/2 licence request whose SPC ends with trailers
    let token = mint(&envoy);
    let (status, body) = h2c(
        envoy.port,
        "POST",
        &format!("/hms/fp/rights/?ExpressPlayToken={token}"),
        &[("content-type", "application/octet-stream")],
        Some(&spc()),
        &[
            ("x-fpgen-content-key", EVIL_KEY),
            ("x_fpgen_customer", "9"),
            ("x-checksum", "abc"),
        ],
    );
    assert_eq!((status, body.as_slice()), (0x88, &b"licence ok\n"[..]));
    let req = upstream.requests().pop().unwrap();
    assert_eq!(req.trailers, [("x-checksum".to_owned(), "abc".to_owned())]);
    assert_eq!(fpgen_names(&req), LICENCE_HEADERS);
    assert_eq!(req.body, spc());
    // and on a path the gate does not cover
    let (status, _) = h2c(
        envoy.port,
        "POST",
        "/segments/upload",
        &[],
        Some(b"x"),
        &[("x-fpgen-iv", "00"), ("x-other", "1")],
    );
    assert_eq!(status, 0x88);
    let req = upstream.requests().pop().unwrap();
    assert_eq!(req.path, "/segments/upload");
    assert_eq!(req.trailers, [("x-other".to_owned(), "1".to_owned())]);
}

// ---- 3. dot segments and path parameters ---------------------------------

const TRAVERSALS: [&str; 8] = [
    "/hms/fp/rights/../../admin/keys",
    "/hms/fp/rights/..%2F..%2Fadmin",
    "/hms/fp/rights/%2e%2e/%2e%2e/admin",
    "/hms/fp/rights/..;/..;/admin",
    "/hms/fp/rights/.%2E/admin",
    "/hms/fp/rights/..%5C..%5Cadmin",
    "/hms/fp/rights/%252e%252e/%252e%252e/admin",
    "/hms/fp/rights/..%20/..%20/admin",
];

#[test]
fn dot_segments_are_refused_by_the_gate_alone() {
    let (upstream, envoy) = unhardened_gate();
    let token = mint(&envoy);
    for path in TRAVERSALS {
        let r = redeem_with(&envoy, &format!("{path}?ExpressPlayToken={token}"), &[]);
        assert_4010(&r, path);
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    assert_eq!(
        envoy.stat("wasmcustom.fpgen.redemptions_rejected.unsafe_path"),
        Some(TRAVERSALS.len() as u64)
    );
}

/// With the shipped HCM settings, Envoy answers each traversal before the
/// gate sees it: escaped slashes are refused (400), dot segments (also
/// `%2e`, and `..;`, which Envoy reads as `..`) are resolved before
/// routing, so the request is no longer a
/// licence request and goes where its resolved path is routed (here, the
/// harness's catch-all to the same upstream, as a wide route would, with
/// no licence data); what normalisation leaves alone reaches the gate (403).
#[test]
fn with_the_shipped_settings_no_dot_segment_reaches_any_upstream() {
    let upstream = RecordingUpstream::start();
    let envoy = start(upstream.port, Options::default(), &config_with(|_| {}));
    let token = mint(&envoy);
    // (path, status, the path the upstream saw)
    let expected: [(&str, u16, Option<&str>); 9] = [
        (TRAVERSALS[0], 200, Some("/hms/admin/keys")),
        (TRAVERSALS[1], 400, None),
        (TRAVERSALS[2], 200, Some("/hms/admin")),
        (TRAVERSALS[3], 200, Some("/hms/admin")),
        (TRAVERSALS[4], 200, Some("/hms/fp/admin")),
        (TRAVERSALS[5], 400, None),
        (TRAVERSALS[6], 403, None),
        (TRAVERSALS[7], 403, None),
        // merged slashes: a licence request, gated
        ("//hms/fp/rights/", 200, Some("/hms/fp/rights/")),
    ];
    for (path, status, seen) in expected {
        let before = upstream.requests().len();
        let r = redeem_with(&envoy, &format!("{path}?ExpressPlayToken={token}"), &[]);
        assert_eq!(r.status, status, "{path}: {r:?}");
        let requests = upstream.requests();
        match seen {
            None => assert_eq!(requests.len(), before, "{path} reached the upstream"),
            Some(seen) => {
                let req = requests.last().unwrap();
                assert_eq!(req.path.split('?').next(), Some(seen), "{path}");
                let licence = seen.starts_with("/hms/fp/rights/");
                assert_eq!(
                    fpgen_names(req).is_empty(),
                    !licence,
                    "{path}: {:?}",
                    req.headers
                );
            }
        }
    }
}

// ---- 4. HTTP/2 POST with trailers at the token endpoint ------------------

#[test]
fn an_http2_token_post_ending_in_trailers_is_answered_by_the_filter() {
    let upstream = RecordingUpstream::start();
    let envoy = start(upstream.port, Options::default(), &config_with(|_| {}));
    let post = |form: &str| {
        h2c(
            envoy.port,
            "POST",
            "/hms/fp/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(form.as_bytes()),
            &[("x-request-checksum", "1")],
        )
    };
    let (status, body) = post(&format!(
        "customerAuthenticator={DEMO_AUTHENTICATOR}&contentKey={CK}&iv={IV}"
    ));
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 0x88, "{text}");
    assert!(
        text.starts_with("http://127.0.0.1:10000/hms/fp/rights/?ExpressPlayToken="),
        "{text}"
    );
    // and the same with a bad key: the filter's error, not the upstream
    let (_, body) = post(&format!(
        "customerAuthenticator={DEMO_AUTHENTICATOR}&contentKey=00&iv={IV}&errorFormat=json"
    ));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], -2027);
    assert!(
        upstream.requests().is_empty(),
        "the authenticator went upstream: {:?}",
        upstream.requests()
    );
}

// ---- 5. control characters in echoed values ------------------------------

#[test]
fn echoed_values_never_carry_characters_xml_cannot_hold() {
    let envoy = common::shared();
    let query = format!(
        "/hms/fp/token?customerAuthenticator={DEMO_AUTHENTICATOR}&errorFormat=%01%08%1B%7F%0D%0Ax%EF%BF%BE%E2%80%AE%C2%85"
    );
    let r = get(envoy.port, &query);
    assert_eq!(r.status, 400, "{r:?}");
    let text = r.text();
    assert!(
        !r.body.iter().any(|&b| b < 0x20 && b != b'\n') && !text.contains('\u{7f}'),
        "{text:?}"
    );
    for c in ['\u{fffe}', '\u{202e}', '\u{85}'] {
        assert!(!text.contains(c), "{c:?} in {text:?}");
    }
    let doc = roxmltree::Document::parse_with_options(
        &text,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("not well-formed XML ({e}): {text:?}"));
    let message = doc
        .descendants()
        .find(|n| n.attribute("id") == Some("message"))
        .unwrap()
        .text()
        .unwrap()
        .to_owned();
    assert_eq!(
        message,
        "Invalid error format specified: \\u{0001}\\u{0008}\\u{001B}\\u{007F}\\u{000D}\\u{000A}x\\u{FFFE}\\u{202E}\\u{0085}"
    );
}

// ---- 6. revocation and token times ---------------------------------------

/// A token of the demo key, for times no mint of fpgen's produces.
fn seal_demo(issued_at: i64, expires_at: i64) -> String {
    common::seal_token(
        fpgen_fixtures::SEALING_KEY_ID,
        fpgen_fixtures::SEALING_KEY_HEX,
        Environment::Test,
        issued_at,
        expires_at,
    )
}

#[test]
fn tokens_of_disabled_removed_or_revoked_customers_are_refused() {
    let upstream = RecordingUpstream::start();
    let minting = start(upstream.port, Options::default(), &config_with(|_| {}));
    let token = mint(&minting);
    let issued = now();
    let path = format!("/hms/fp/rights/?ExpressPlayToken={token}");
    assert_eq!(redeem_with(&minting, &path, &[]).status, 200);
    drop(minting);

    // (reason, the customer's field, its new value)
    let cases = [
        ("customer_disabled", "enabled", json!(false)),
        ("unknown_customer", "id", json!("100002")),
        (
            "revoked",
            "tokens_not_before",
            json!(fpgen::licence::rfc3339(issued + 1)),
        ),
    ];
    for (reason, field, value) in cases {
        let config = config_with(|c| c["customers"][0][field] = value);
        let envoy = start(upstream.port, Options::default(), &config);
        let before = upstream.requests().len();
        assert_4010(&redeem_with(&envoy, &path, &[]), reason);
        assert_eq!(upstream.requests().len(), before, "{reason}");
        assert_eq!(
            envoy.stat(&format!("wasmcustom.fpgen.redemptions_rejected.{reason}")),
            Some(1),
            "{reason}"
        );
        if reason == "revoked" {
            // tokens minted from that moment on redeem
            while now() < issued + 1 {
                std::thread::sleep(Duration::from_millis(100));
            }
            let fresh = mint(&envoy);
            let r = redeem_with(
                &envoy,
                &format!("/hms/fp/rights/?ExpressPlayToken={fresh}"),
                &[],
            );
            assert_eq!(r.status, 200, "{r:?}");
        }
    }

    // times no mint of fpgen's produces, sealed with the right key
    let envoy = start(upstream.port, Options::default(), &config_with(|_| {}));
    let t = now();
    let before = upstream.requests().len();
    for (token, reason) in [
        (seal_demo(t + 600, t + 1200), "issued_in_future"),
        (
            seal_demo(t - 60, t - 60 + 31 * 24 * 3600),
            "lifetime_too_long",
        ),
    ] {
        assert_4010(
            &redeem_with(
                &envoy,
                &format!("/hms/fp/rights/?ExpressPlayToken={token}"),
                &[],
            ),
            reason,
        );
        assert_eq!(
            envoy.stat(&format!("wasmcustom.fpgen.redemptions_rejected.{reason}")),
            Some(1),
            "{reason}"
        );
    }
    assert_eq!(upstream.requests().len(), before);
    // a clock a few seconds ahead at the minting Envoy is tolerated
    let r = redeem_with(
        &envoy,
        &format!(
            "/hms/fp/rights/?ExpressPlayToken={}",
            seal_demo(t + 5, t + 600)
        ),
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
}

// ---- 7. the token upstream -----------------------------------------------

#[test]
fn the_token_is_stripped_by_default_and_no_other_spelling_survives() {
    let upstream = RecordingUpstream::start();
    let envoy = start(upstream.port, Options::default(), &config_with(|_| {}));
    let token = mint(&envoy);
    let id = "0123456789abcdef0123456789abcdef01234567";
    for (query, forwarded) in [
        (
            format!("ExpressPlayToken={token}&id={id}"),
            format!("?id={id}"),
        ),
        (
            format!("expressplaytoken={token}&id={id}"),
            format!("?id={id}"),
        ),
        (
            format!("a=1;ExpressPlayToken={token}&b=%2F"),
            "?a=1&b=%2F".to_owned(),
        ),
        (format!("ExpressPlayToken={token}"), String::new()),
    ] {
        let r = redeem_with(&envoy, &format!("/hms/fp/rights/?{query}"), &[]);
        assert_eq!(r.status, 200, "{query}: {r:?}");
        let req = upstream.requests().pop().unwrap();
        assert_eq!(req.path, format!("/hms/fp/rights/{forwarded}"), "{query}");
        assert!(!String::from_utf8_lossy(&req.raw).contains(&token));
    }
    // two spellings: the gate cannot know which one a licence server reads
    let before = upstream.requests().len();
    for query in [
        format!("ExpressPlayToken={token}&expressPlayToken=x"),
        format!("ExpressPlayToken={token};ExpressPlayToken={token}"),
        format!("EXPRESSPLAYTOKEN={token}&ExpressPlayToken={token}"),
    ] {
        assert_4010(
            &redeem_with(&envoy, &format!("/hms/fp/rights/?{query}"), &[]),
            &query,
        );
    }
    assert_eq!(upstream.requests().len(), before);
}

// ---- 8 and 9. true answers for key errors and malformed escapes ----------

#[test]
fn key_errors_and_malformed_escapes_get_their_own_codes() {
    let envoy = common::shared();
    let auth = format!("customerAuthenticator={DEMO_AUTHENTICATOR}");
    let check = |query: String, status: u16, code: i64, message: &str| {
        for r in [
            get(
                envoy.port,
                &format!("/hms/fp/token?{query}&errorFormat=json"),
            ),
            post_form(
                envoy.port,
                "/hms/fp/token?errorFormat=json",
                query.as_bytes(),
            ),
        ] {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(
                (r.status, v["code"].as_i64()),
                (status, Some(code)),
                "{query}: {v}"
            );
            assert_eq!(v["message"], message, "{query}");
        }
    };
    check(
        format!("{auth}&contentKey={}&iv={IV}", "g".repeat(32)),
        400,
        -2005,
        "Invalid content encryption key: contentKey: character 1 is not a hex digit",
    );
    check(
        format!("{auth}&contentKey={}&iv={IV}", &CK[2..]),
        400,
        -2027,
        "Content encryption key must be 32 hex digits long: got 30 characters",
    );
    check(
        format!("{auth}&contentKey={CK}&iv={}zz", &IV[2..]),
        400,
        -6003,
        "Invalid iv parameter specified: expected 32 hex digits, character 31 is not a hex digit",
    );
    check(
        format!("{auth}&contentKey={CK}&iv={IV}&cookie=%zz%"),
        400,
        -2033,
        "Invalid cookie: cookie holds a malformed percent escape",
    );
    check(
        format!("customerAuthenticator=100001%2C0123456789abcdef0123456789abcdef%&contentKey={CK}&iv={IV}"),
        401,
        -2018,
        "Invalid authentication token: customerAuthenticator holds a malformed percent escape",
    );
    // unknown parameters stay ignored, malformed or not
    let r = get(
        envoy.port,
        &format!("/hms/fp/token?{auth}&contentKey={CK}&iv={IV}&x=%zz%"),
    );
    assert_eq!(r.status, 200, "{r:?}");
}

// ---- 10. Envoy's own debug log ---------------------------------------------

/// A content key and a secret used only by the debug-log test (also in
/// the log audit's list).
const DEBUG_CK: &str = "d1d2d3d4d5d6d7d8d9dadbdcdddedfd0";

#[test]
fn at_debug_level_post_token_requests_leave_no_secret_in_envoys_logs() {
    let envoy = Envoy::start(&config_with(|_| {}));
    // As an operator chasing a problem would: debug switched on at run
    // time. (Started at debug, or given a new listener at debug, Envoy also
    // logs every filter's configuration, keys included: docs/security.md.)
    let r = request(
        envoy.admin_port,
        "POST",
        "/logging?level=debug",
        &[],
        Some(b""),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let marker_path = "fpgen-debug-path-marker-7f3a";
    let marker_body = "fpgen-debug-body-marker-91c4";
    for extra in ["", "&kid=^film&cookie=c1&expirationTime=%2B600"] {
        let body = format!(
            "customerAuthenticator={DEMO_AUTHENTICATOR}&contentKey={DEBUG_CK}&iv={IV}&marker={marker_body}{extra}"
        );
        let r = post_form(envoy.port, "/hms/fp/token", body.as_bytes());
        assert_eq!(r.status, 200, "{r:?}");
    }
    // a refused one too: errors must not echo the secret either
    let r = post_form(
        envoy.port,
        "/hms/fp/token",
        format!("customerAuthenticator={DEMO_AUTHENTICATOR}&contentKey={DEBUG_CK}&iv=00")
            .as_bytes(),
    );
    assert_eq!(r.status, 400);
    // the positive control: at debug, Envoy does log request paths
    assert_eq!(
        envoy.get(&format!("/passthrough?{marker_path}")).status,
        200
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = envoy.envoy_log() + &envoy.access_log();
    assert!(
        log.contains(marker_path),
        "the debug log shows no paths at all"
    );
    assert!(log.contains("[debug]"), "not a debug log");
    for secret in [DEBUG_CK, "0123456789abcdef0123456789abcdef", marker_body] {
        assert!(!log.contains(secret), "{secret} is in Envoy's debug log");
    }
}

// ---- players' licence requests -------------------------------------------

#[test]
fn players_licence_requests_reach_the_licence_server_byte_for_byte() {
    let upstream = RecordingUpstream::start();
    let envoy = start(upstream.port, Options::default(), &config_with(|_| {}));
    let token = mint(&envoy);
    let id = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3";
    for content_type in [
        Some("application/octet-stream"),
        None,
        Some("application/x-www-form-urlencoded"),
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .iter()
            .map(|ct| ("Content-Type", *ct))
            .collect();
        let r = request(
            envoy.port,
            "POST",
            &format!("/hms/fp/rights/?ExpressPlayToken={token}&id={id}"),
            &headers,
            Some(&spc()),
        );
        assert_eq!(r.status, 200, "{content_type:?}: {r:?}");
        let req = upstream.requests().pop().unwrap();
        assert_eq!(req.body, spc(), "{content_type:?}");
        assert!(req.raw.ends_with(&spc()), "{content_type:?}");
        assert_eq!(req.path, format!("/hms/fp/rights/?id={id}"));
        let got: Vec<&str> = req.header_all("content-type");
        assert_eq!(got, content_type.into_iter().collect::<Vec<_>>());
        assert_eq!(fpgen_names(&req), LICENCE_HEADERS);
    }
}

// ---- the shipped configurations ------------------------------------------

/// Every HTTP connection manager in `envoy/` carries the settings of
/// [`common::hardened_hcm`] (the harness's, proven above), and the gate as
/// shipped holds against the attacks above with its own routes.
#[test]
fn every_shipped_connection_manager_is_hardened() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = 0;
    for file in SHIPPED {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let managers = text.matches("HttpConnectionManager").count();
        assert!(managers >= 1, "{file}");
        for (key, yaml_value, json_value) in [
            ("normalize_path", "true", "true"),
            ("merge_slashes", "true", "true"),
            (
                "path_with_escaped_slashes_action",
                "REJECT_REQUEST",
                "\"REJECT_REQUEST\"",
            ),
            (
                "headers_with_underscores_action",
                "DROP_HEADER",
                "\"DROP_HEADER\"",
            ),
        ] {
            let setting = format!("{key}: {yaml_value}");
            assert_eq!(
                text.matches(&setting).count(),
                managers,
                "{file}: {setting}"
            );
            let hcm = common::hardened_hcm();
            let harness = hcm
                .get(key)
                .or_else(|| hcm["common_http_protocol_options"].get(key));
            assert_eq!(
                harness.map(ToString::to_string).as_deref(),
                Some(json_value),
                "the harness lacks {setting}"
            );
        }
        files += 1;
    }
    assert_eq!(files, SHIPPED.len());
}

/// The configurations in `envoy/` that hold an HTTP connection manager.
const SHIPPED: [&str; 7] = [
    "envoy/envoy.yaml",
    "envoy/native.yaml",
    "envoy/fleet.yaml",
    "envoy/gate.yaml",
    "envoy/two-environments.yaml",
    "envoy/dynamic/lds.yaml",
    "envoy/ecds/bootstrap.yaml",
];

/// Every configuration in `envoy/` scopes the filter to its routes: each
/// Wasm filter is `disabled: true`, every connection manager has a token
/// route that enables it, and so does every licence route and every other
/// route that reaches an upstream.
#[test]
fn every_shipped_configuration_scopes_the_filter_to_its_routes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in SHIPPED {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let followed_by = |at: usize, what: &str, within: usize| {
            lines[at + 1..(at + 1 + within).min(lines.len())]
                .iter()
                .any(|l| l.starts_with(what))
        };
        let managers = text.matches("HttpConnectionManager").count();
        let filters: Vec<usize> = (0..lines.len())
            // (the ECDS bootstrap names its filter "fpgen")
            .filter(|&i| {
                lines[i] == "- name: envoy.filters.http.wasm"
                    || lines[i] == "- name: envoy.filters.http.dynamic_modules"
                    || (lines[i] == "- name: fpgen" && text.contains("config_discovery:"))
            })
            .collect();
        assert_eq!(filters.len(), managers, "{file}");
        for &at in &filters {
            assert_eq!(lines[at + 1], "disabled: true", "{file}:{}", at + 2);
        }
        let enabling = "typed_per_filter_config:";
        let routes: Vec<usize> = (0..lines.len())
            .filter(|&i| {
                lines[i] == "- match: { path_separated_prefix: /hms/fp/token }"
                    || lines[i] == "- match: { prefix: /hms/fp/rights/ }"
            })
            .collect();
        let token_routes = routes
            .iter()
            .filter(|&&i| lines[i].contains("/hms/fp/token"))
            .count();
        assert_eq!(token_routes, managers, "{file}: a token route per HCM");
        for at in routes {
            assert!(followed_by(at, enabling, 3), "{file}:{}", at + 1);
        }
        // every route to an upstream runs the filter: scoped, it removes
        // licence headers only where it runs
        for at in (0..lines.len()).filter(|&i| lines[i].starts_with("- match:")) {
            let end = (at + 1..lines.len())
                .find(|&i| lines[i].starts_with("- match:") || lines[i] == "http_filters:")
                .unwrap_or(lines.len());
            let block = &lines[at..end];
            if block.iter().any(|l| l.starts_with("route:")) {
                assert!(
                    block.contains(&enabling),
                    "{file}:{}: a route to an upstream without the filter",
                    at + 1
                );
            }
        }
        assert_eq!(
            text.matches("envoy.config.route.v3.FilterConfig").count(),
            text.matches(enabling).count(),
            "{file}"
        );
    }
}

/// Scoped, the filter answers the token route and gates the licence
/// route, and a request to any other route reaches its upstream exactly
/// as sent: the filter, which removes client-sent licence headers from
/// every request it sees, never saw it (the VM was not entered).
#[test]
fn scoped_the_filter_runs_on_its_routes_only() {
    let upstream = RecordingUpstream::start();
    let envoy = start(
        upstream.port,
        Options::default().scoped(),
        &config_with(|_| {}),
    );
    let token = mint(&envoy);
    let slash = get(
        envoy.port,
        &format!("/hms/fp/token/?{}", fpgen_fixtures::query("")),
    );
    assert_eq!(slash.status, 200, "{slash:?}");
    assert_eq!(
        get(envoy.port, "/hms/fp/token/deeper").status,
        404,
        "only the token path is the endpoint"
    );
    let spoof = [("x-fpgen-customer", "999999")];
    let r = redeem_with(
        &envoy,
        &format!("/hms/fp/rights/?ExpressPlayToken={token}"),
        &spoof,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let licence = upstream.requests().pop().unwrap();
    assert_eq!(licence.header_all("x-fpgen-customer"), ["100001"]);
    assert_4010(
        &redeem_with(&envoy, "/hms/fp/rights/?ExpressPlayToken=forged", &[]),
        "a forged token on the gated route",
    );
    let before = upstream.requests().len();
    let r = redeem_with(&envoy, "/segments/1.ts", &spoof);
    assert_eq!(r.status, 200, "{r:?}");
    let requests = upstream.requests();
    assert_eq!(requests.len(), before + 1);
    let other = requests.last().unwrap();
    assert_eq!(other.path, "/segments/1.ts");
    assert_eq!(
        other.header_all("x-fpgen-customer"),
        ["999999"],
        "the filter ran on an unrelated route"
    );
}

/// The demo as shipped (`make run`): tokens, the gate in front of the
/// licence stand-in, and a 404 elsewhere.
#[test]
fn the_shipped_demo_mints_and_gates_on_its_routes() {
    let port = common::free_port();
    let envoy = Envoy::start_shipped("envoy/envoy.yaml", &[(10000, port), (9901, 0)]);
    let token = mint(&envoy);
    let r = redeem_with(
        &envoy,
        &format!("/hms/fp/rights/?ExpressPlayToken={token}"),
        &[("x-fpgen-customer", "999999")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-demo-customer"), Some("100001"), "{r:?}");
    let r = redeem_with(&envoy, "/hms/fp/rights/?ExpressPlayToken=forged", &[]);
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(get(port, "/other").status, 404);
}

#[test]
fn the_shipped_gate_holds() {
    let upstream = RecordingUpstream::start();
    let envoy = Envoy::start_shipped(
        "envoy/gate.yaml",
        &[
            (10012, common::free_port()),
            (9912, 0),
            (10020, upstream.port),
        ],
    );
    let token = mint(&envoy);
    // the genuine request, with every injected spelling
    let mut injected = underscore_spellings();
    injected.push(("x-fpgen-customer", "999999"));
    let r = redeem_with(
        &envoy,
        &format!("/hms/fp/rights/?ExpressPlayToken={token}&id=1"),
        &injected,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let req = upstream.requests().pop().unwrap();
    assert_eq!(fpgen_names(&req), LICENCE_HEADERS);
    assert_eq!(req.header_all("x-fpgen-customer"), ["100001"]);
    assert_eq!(
        req.path, "/hms/fp/rights/?id=1",
        "gate.yaml strips the token"
    );
    let before = upstream.requests().len();
    // traversals: refused (400, 403) or resolved away from the licence route (404)
    for path in TRAVERSALS {
        let r = redeem_with(&envoy, &format!("{path}?ExpressPlayToken={token}"), &[]);
        assert!([400, 403, 404].contains(&r.status), "{path}: {r:?}");
    }
    assert_eq!(
        upstream.requests().len(),
        before,
        "{:?}",
        upstream.requests()
    );
}

// ---- bytes that are not UTF-8 ----------------------------------------------

/// A header value with obs-text bytes (legal in HTTP/1.1, passed on by
/// Envoy) used to panic the proxy-wasm SDK's `String` getters: a 503 and a
/// new VM for every such request. Now the filter reads bytes.
#[test]
fn header_values_that_are_not_utf8_get_their_true_answer() {
    let upstream = RecordingUpstream::start();
    let envoy = start(upstream.port, Options::default(), &config_with(|_| {}));
    // a panic costs the Wasm module a new VM, the native one a counted 500
    let vms = || match envoy.module {
        common::Module::Wasm => envoy.stat("wasm.envoy.wasm.runtime.v8.created"),
        common::Module::Native => envoy.stat("dynamicmodulescustom.fpgen.panics"),
    };
    let created = vms();
    assert!(created.is_some(), "the VM (or panic) stat exists");
    let token = mint(&envoy);
    let raw = |bytes: &[u8]| common::raw(envoy.port, bytes);
    let mut licence =
        format!("POST /hms/fp/rights/?ExpressPlayToken={token} HTTP/1.1\r\nHost: a\r\nX-Player: ")
            .into_bytes();
    licence.extend_from_slice(b"\xff\xfe\r\nContent-Length: 3\r\nConnection: close\r\n\r\nspc");
    assert_eq!(
        raw(&licence).status,
        200,
        "a licence request with an obs-text header"
    );
    let post = b"POST /hms/fp/token?errorFormat=json HTTP/1.1\r\nHost: a\r\nContent-Type: \xff\r\nContent-Length: 3\r\nConnection: close\r\n\r\na=b";
    let r = raw(post);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((r.status, v["code"].as_i64()), (415, Some(-9415)), "{r:?}");
    assert_eq!(vms(), created, "no VM was replaced");
    assert_eq!(upstream.requests().len(), 1);
}
