//! Every input gets its true answer: key errors and malformed escapes their
//! codes, echoed values escaped, HTTP/2 POSTs ending in trailers answered.

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;

#[test]
fn an_http2_token_post_ending_in_trailers_is_answered_by_the_filter() {
    let upstream = RecordingUpstream::start();
    let envoy = start(upstream.port, Options::of(this_module!()), &config_with(|_| {}));
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
    let envoy = common::shared(this_module!());
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

#[test]
fn key_errors_and_malformed_escapes_get_their_own_codes() {
    let envoy = common::shared(this_module!());
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
