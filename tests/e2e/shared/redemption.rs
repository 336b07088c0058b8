//! The redemption gate through a real Envoy: tokens minted at `/hms/fp/token`
//! are verified at `/hms/fp/rights/` before a recording upstream (the
//! licence server stand-in) sees anything; key rotation.

use crate::common;

use crate::common::{
    licence_request, mint, now, request, Envoy, Options, RecordingUpstream, CK, IV, LICENCE_HEADERS,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use fpgen::licence::Environment;
use serde_json::{json, Value};

const OLD_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const NEW_KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const SPC: &[u8] = b"\x00\x01binary SPC\xff\xfe";

/// The demo configuration with the gate on and the given sealing keys.
fn config(keys: &[(&str, &str)], active: &str, gate: Value) -> String {
    let mut c = fpgen_fixtures::demo_json();
    c["sealing_keys"] = keys
        .iter()
        .map(|(id, key)| json!({"id": id, "key": key}))
        .collect();
    c["active_sealing_key"] = active.into();
    c["redemption"] = gate;
    c.to_string()
}

fn start(upstream: &RecordingUpstream, config: &str) -> Envoy {
    Envoy::start_with(config, &Options::upstream(this_module!(), upstream.port))
}

/// A recording upstream behind an Envoy with one sealing key, "old", and
/// the gate answering in JSON.
fn json_gate() -> (RecordingUpstream, Envoy) {
    let upstream = RecordingUpstream::start();
    let gate = json!({"error_format": "json"});
    let envoy = start(&upstream, &config(&[("old", OLD_KEY)], "old", gate));
    (upstream, envoy)
}

/// The player's licence request: POST of the binary SPC to the licence URL.
fn redeem(envoy: &Envoy, token: &str, extra_headers: &[(&str, &str)]) -> common::HttpResponse {
    licence_request(
        envoy,
        &format!("/hms/fp/rights/?ExpressPlayToken={token}"),
        extra_headers,
        SPC,
    )
}

#[track_caller]
fn assert_refused(envoy: &Envoy, upstream: &RecordingUpstream, token: &str, why: &str) {
    let before = upstream.requests().len();
    let r = redeem(envoy, token, &[]);
    assert_eq!(r.status, 403, "{why}: {r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{why}");
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["code"], -4010, "{why}: {v}");
    assert_eq!(
        upstream.requests().len(),
        before,
        "{why}: the upstream saw the request"
    );
}

#[test]
fn upstream_gets_exactly_the_minted_licence_data_and_no_injected_header() {
    let upstream = RecordingUpstream::start();
    let envoy = start(&upstream, &config(&[("old", OLD_KEY)], "old", json!({})));
    let token = mint(
        &envoy,
        "&kid=^film-1&rentalDuration=3600&generalFlags=00000001&cookie=corr%C3%A9%201\
         &expirationTime=%2B600&fpExtension=wudo,AAAAAA%3D%3D&fpExtension=abcd,AQID",
    );
    let r = redeem(
        &envoy,
        &token,
        &[
            ("x-fpgen-content-key", "ffffffffffffffffffffffffffffffff"),
            ("X-FPGEN-Customer", "999999"),
            ("x-fpgen-fp-extension", "evil,AAAA"),
            ("x-fpgen-admin", "true"),
        ],
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "licence ok\n"),
        "{r:?}"
    );
    let got = upstream.requests();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.body, SPC,
        "the SPC reaches the licence server unchanged"
    );
    assert_eq!(
        req.path, "/hms/fp/rights/",
        "the token is removed by default (strip_token)"
    );
    let one = |name: &str| -> &str {
        let values = req.header_all(name);
        assert_eq!(values.len(), 1, "{name}: {values:?}");
        values[0]
    };
    assert_eq!(one("x-fpgen-content-key"), CK);
    assert_eq!(one("x-fpgen-iv"), IV);
    assert_eq!(one("x-fpgen-kid"), "^film-1");
    assert_eq!(one("x-fpgen-rental-duration"), "3600");
    assert_eq!(one("x-fpgen-general-flags"), "00000001");
    assert_eq!(one("x-fpgen-cookie"), "corr%C3%A9 1");
    assert_eq!(one("x-fpgen-customer"), "100001");
    assert_eq!(one("x-fpgen-environment"), "test");
    assert_eq!(one("x-fpgen-key-id"), "old");
    let expires = time::OffsetDateTime::parse(
        one("x-fpgen-expires"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert!((expires - (now() + 600)).abs() <= 5, "{expires}");
    assert_eq!(
        req.header_all("x-fpgen-fp-extension"),
        ["wudo,AAAAAA==", "abcd,AQID"]
    );
    let fpgen_headers: Vec<&str> = req
        .headers
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("x-fpgen-"))
        .collect();
    assert_eq!(
        fpgen_headers,
        [
            &LICENCE_HEADERS[..],
            &[
                "x-fpgen-kid",
                "x-fpgen-cookie",
                "x-fpgen-fp-extension",
                "x-fpgen-fp-extension",
            ],
        ]
        .concat(),
        "exactly the licence data; x-fpgen-admin from the client is gone"
    );
}

#[test]
fn injected_headers_are_stripped_even_when_the_token_is_refused_or_kept() {
    // a custom prefix, token removal, and a plain-HTML error format
    let upstream = RecordingUpstream::start();
    let gate = json!({"header_prefix": "x-licence-", "strip_token": true});
    let envoy = start(&upstream, &config(&[("old", OLD_KEY)], "old", gate));
    let token = mint(&envoy, "");
    let r = request(
        envoy.port,
        "POST",
        &format!("/hms/fp/rights/?a=1&ExpressPlayToken={token}&b=2"),
        &[
            ("Content-Type", "application/octet-stream"),
            ("X-Licence-Iv", "00"),
        ],
        Some(SPC),
    );
    assert_eq!(r.status, 200);
    let req = &upstream.requests()[0];
    assert_eq!(req.path, "/hms/fp/rights/?a=1&b=2");
    assert_eq!(req.header_all("x-licence-iv"), [IV]);
    let r = redeem(&envoy, "garbage", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.text().contains("Error -4010"));
}

#[test]
fn bad_tokens_get_4010_and_never_reach_the_upstream() {
    let (upstream, envoy) = json_gate();
    let token = mint(&envoy, "");
    assert_eq!(
        redeem(&envoy, &token, &[]).status,
        200,
        "the genuine token is accepted"
    );

    // missing and malformed
    let before = upstream.requests().len();
    let r = request(envoy.port, "POST", "/hms/fp/rights/", &[], Some(SPC));
    assert_eq!(r.status, 403);
    assert_eq!(upstream.requests().len(), before);
    assert_refused(&envoy, &upstream, "", "empty token");
    assert_refused(&envoy, &upstream, "not*a*token", "not base64url");
    assert_refused(&envoy, &upstream, &token[..token.len() - 10], "truncated");

    // tampered: one flipped bit at several positions (header, nonce, ciphertext, tag)
    let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
    for pos in [
        0,
        1,
        3,
        8,
        20,
        40,
        raw.len() / 2,
        raw.len() - 17,
        raw.len() - 1,
    ] {
        let mut bad = raw.clone();
        bad[pos] ^= 0x01;
        assert_refused(
            &envoy,
            &upstream,
            &URL_SAFE_NO_PAD.encode(&bad),
            &format!("bit flipped in byte {pos}"),
        );
    }

    // expired, wrong environment, unknown key: sealed with the library
    let t = now();
    assert_refused(
        &envoy,
        &upstream,
        &common::seal_token("old", OLD_KEY, Environment::Test, t - 120, t - 60),
        "expired",
    );
    assert_refused(
        &envoy,
        &upstream,
        &common::seal_token("old", OLD_KEY, Environment::Production, t, t + 600),
        "production token",
    );
    assert_refused(
        &envoy,
        &upstream,
        &common::seal_token("other", NEW_KEY, Environment::Test, t, t + 600),
        "unknown key id",
    );
    assert_refused(
        &envoy,
        &upstream,
        &common::seal_token("old", NEW_KEY, Environment::Test, t, t + 600),
        "right id, wrong key",
    );
    assert_eq!(
        redeem(
            &envoy,
            &common::seal_token("old", OLD_KEY, Environment::Test, t, t + 600),
            &[]
        )
        .status,
        200
    );
}

#[test]
fn token_minted_by_a_production_edge_is_refused_by_a_test_edge() {
    let upstream = RecordingUpstream::start();
    let mut prod: Value = serde_json::from_str(&config(
        &[("old", OLD_KEY)],
        "old",
        json!({"error_format": "json"}),
    ))
    .unwrap();
    prod["environment"] = "production".into();
    prod["customers"][0]["environment"] = "production".into();
    let prod = start(&upstream, &prod.to_string());
    let token = mint(&prod, "");
    assert_eq!(redeem(&prod, &token, &[]).status, 200);
    let test = start(
        &upstream,
        &config(&[("old", OLD_KEY)], "old", json!({"error_format": "json"})),
    );
    assert_refused(
        &test,
        &upstream,
        &token,
        "production token at the test edge",
    );
}

#[test]
fn an_expired_envoy_minted_token_is_refused() {
    let (upstream, envoy) = json_gate();
    let token = mint(&envoy, "&expirationTime=%2B1");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_refused(&envoy, &upstream, &token, "expired after one second");
}

#[test]
fn key_rotation_old_tokens_verify_until_their_key_is_removed() {
    let upstream = RecordingUpstream::start();
    let gate = json!({"error_format": "json"});
    // before: only the old key
    let before = start(&upstream, &config(&[("old", OLD_KEY)], "old", gate.clone()));
    let old_token = mint(&before, "");
    drop(before);
    // during: the new key mints, the old one still verifies
    let during = start(
        &upstream,
        &config(&[("old", OLD_KEY), ("new", NEW_KEY)], "new", gate.clone()),
    );
    let new_token = mint(&during, "");
    assert_eq!(common::key_id(&new_token).as_deref(), Some("new"));
    for (token, key) in [(&old_token, "old"), (&new_token, "new")] {
        assert_eq!(redeem(&during, token, &[]).status, 200);
        let forwarded = upstream.requests().pop().unwrap();
        assert_eq!(forwarded.header_all("x-fpgen-key-id"), [key]);
    }
    drop(during);
    // after: the old key removed
    let after = start(&upstream, &config(&[("new", NEW_KEY)], "new", gate));
    assert_refused(&after, &upstream, &old_token, "token of a removed key");
    assert_eq!(redeem(&after, &new_token, &[]).status, 200);
}

#[test]
fn gate_off_passes_licence_requests_through() {
    let upstream = RecordingUpstream::start();
    let envoy = start(
        &upstream,
        &config(&[("old", OLD_KEY)], "old", json!({"enabled": false})),
    );
    let r = redeem(
        &envoy,
        "anything",
        &[("x-fpgen-content-key", "client-value")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        upstream.requests()[0].header_all("x-fpgen-content-key"),
        ["client-value"]
    );
}

#[test]
fn demo_licence_url_redeems_at_the_demo_stand_in() {
    // the shared Envoy runs the demo configuration: gate on, stand-in upstream
    let envoy = common::shared(this_module!());
    let token = mint(envoy, "&cookie=demo");
    let r = redeem(envoy, &token, &[]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, common::RIGHTS_BODY),
        "{r:?}"
    );
}

/// The largest request the documented limits allow (a 64-character
/// customer id, a 32-character sealing key id, a 64-character kid of 255
/// bytes, a cookie of 32 four-byte characters, 16 fpExtensions of 1,024
/// bytes) mints a 22,751-character token, and the gate redeems it: every
/// token fpgen mints is one its gate reads (issue 20: 6 such extensions
/// gave a token of 8,402 characters, minted 200 and refused 403).
#[test]
fn the_largest_token_the_limits_allow_is_minted_and_redeemed() {
    let upstream = RecordingUpstream::start();
    let customer = "c".repeat(64);
    let mut c = fpgen_fixtures::demo_json();
    c["customers"][0]["id"] = customer.clone().into();
    c["sealing_keys"] = json!([{"id": "k".repeat(32), "key": OLD_KEY}]);
    c["active_sealing_key"] = "k".repeat(32).into();
    let envoy = start(&upstream, &c.to_string());
    let secret = fpgen_fixtures::AUTHENTICATOR.split_once(',').unwrap().1;
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let payload: Vec<u8> = (0..1024u32).map(|i| (i * 7 + 251) as u8).collect();
    let extension = encode(&format!(
        "abcd,{}",
        base64::engine::general_purpose::STANDARD.encode(&payload)
    ));
    let mut query = format!(
        "customerAuthenticator={customer},{secret}&contentKey={CK}&iv={IV}&kid={}&cookie={}",
        encode(&format!("^\u{20AC}{}", "\u{1F600}".repeat(63))),
        encode(&"\u{1F600}".repeat(32)),
    );
    for _ in 0..16 {
        query.push_str("&fpExtension=");
        query.push_str(&extension);
    }
    let r = common::get(envoy.port, &format!("/hms/fp/token?{query}"));
    assert_eq!(r.status, 200, "{r:?}");
    let token = fpgen_fixtures::token_of_url(&r.text());
    assert_eq!(token.len(), fpgen::token::MAX_FAIRPLAY_TOKEN_CHARS);
    assert_eq!(token.len(), 22_751);
    let r = redeem(&envoy, &token, &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let seen = upstream.requests();
    let last = seen.last().unwrap();
    let extensions: Vec<&String> = last
        .headers
        .iter()
        .filter(|(n, _)| n == "x-fpgen-fp-extension")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(extensions.len(), 16, "{:?}", last.headers);
    assert!(last
        .headers
        .iter()
        .any(|(n, v)| n == "x-fpgen-customer" && *v == customer));
    assert_eq!(last.body, SPC);
}

/// Spellings of the token's name that a licence server might read as the
/// token (white space or a NUL around it, issue 20; PHP's array brackets,
/// letters that Unicode case mapping turns into the name's, issue 30) are
/// the token at the gate too: alone, it is checked and stripped, so it
/// never reaches the licence server; beside the real token, the token is
/// repeated and the request refused.
#[test]
fn spellings_of_the_token_name_never_reach_the_licence_server() {
    let (upstream, envoy) = json_gate();
    let token = mint(&envoy, "");
    for name in [
        "ExpressPlayToken%20",
        "%00ExpressPlayToken",
        "ExpressPlayToken%09",
        "ExpressPlayToken[]",
        "ExpressPlayToken%5B%5D",
        "ExpressPlayTo%E2%84%AAen",
        "Expre%C5%BF%C5%BFPlayToken",
    ] {
        let r = licence_request(
            &envoy,
            &format!("/hms/fp/rights/?{name}={token}&id=7"),
            &[],
            SPC,
        );
        assert_eq!(r.status, 200, "{name}: {r:?}");
        let seen = upstream.requests();
        let path = &seen.last().unwrap().path;
        assert_eq!(path, "/hms/fp/rights/?id=7", "{name}");
        assert_refused(
            &envoy,
            &upstream,
            &format!("{token}&{name}=x"),
            "the real token beside another spelling",
        );
    }
}

/// A configuration that turns the gate off is loaded (licence requests
/// then pass unchecked, as documented) and says so once, at warning level,
/// in Envoy's log (issue 30); one with the gate on says nothing of it.
#[test]
fn a_configuration_without_the_gate_says_so() {
    let upstream = RecordingUpstream::start();
    let mut off = fpgen_fixtures::demo_json();
    off["redemption"] = json!({"enabled": false});
    let envoy = start(&upstream, &off.to_string());
    let log = envoy.envoy_log_with("the redemption gate is off");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("the redemption gate is off"))
        .collect();
    assert!(!warnings.is_empty(), "{log}");
    assert!(
        warnings.iter().all(|l| l.contains("[warning]")),
        "{warnings:?}"
    );
    // the gate is off indeed: a request with no token reaches the upstream
    let r = licence_request(&envoy, "/hms/fp/rights/?ExpressPlayToken=x", &[], SPC);
    assert_eq!(r.status, 200, "{r:?}");
    let on = start(&upstream, &fpgen_fixtures::demo_json().to_string());
    let log = on.envoy_log_with("configured:");
    assert!(log.contains("configured:"), "{log}");
    assert!(!log.contains("the redemption gate is off"), "{log}");
}
