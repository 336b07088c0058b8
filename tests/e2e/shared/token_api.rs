//! The token API through a real Envoy running the built module, over HTTP.
//! Every test here goes through `envoy` + `fpgen.wasm`; see `tests/rules/`
//! for the same rules checked natively.

use crate::common;

use crate::common::{
    get, now, post_form, request, shared, Envoy, HttpResponse, DEMO_AUTHENTICATOR, DEMO_CONFIG,
};
use fpgen::ids::Kid;
use fpgen::licence::{Environment, LicenceData};

use fpgen_fixtures::{
    CONTENT_KEY as CK, EK, EK_CONTENT_KEY as STORED_KEY, IV, KEK_HEX as DEMO_KEK, STORED_KID,
};

const PATH: &str = "/hms/fp/token";

fn auth() -> String {
    format!("customerAuthenticator={DEMO_AUTHENTICATOR}")
}

fn base() -> String {
    fpgen_fixtures::query("")
}

/// Asserts a 200 licence URL and opens its token with the demo sealing key.
#[track_caller]
fn open_url(r: &HttpResponse) -> (String, LicenceData) {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/uri-list"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.text();
    let url = body
        .strip_suffix("\r\n")
        .expect("body ends in CRLF")
        .to_owned();
    assert!(!url.contains(['\r', '\n', ' ']), "{url:?}");
    assert!(url.contains("?ExpressPlayToken="), "{url}");
    let token = common::token_of_url(&url);
    let config = fpgen_fixtures::config();
    let data = fpgen::token::open(&token, config.sealing_keys(), Environment::Test, now())
        .expect("token opens");
    (url, data.into_fairplay().unwrap())
}

#[track_caller]
fn get_ok(query: &str) -> (String, LicenceData) {
    open_url(&get(shared(this_module!()).port, &format!("{PATH}?{query}")))
}

#[track_caller]
fn post_ok(query: &str, body: &str) -> (String, LicenceData) {
    let path = if query.is_empty() {
        PATH.to_owned()
    } else {
        format!("{PATH}?{query}")
    };
    open_url(&post_form(shared(this_module!()).port, &path, body.as_bytes()))
}

/// Asserts an error response: status, content type, code, in both formats
/// (`json_too`), and that the HTML and JSON are well-formed.
#[track_caller]
fn check_error(query: &str, code: i32, status: u16) {
    let port = shared(this_module!()).port;
    let r = get(port, &format!("{PATH}?{query}"));
    assert_eq!(r.status, status, "{query}: {r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("text/html; charset=utf-8"),
        "{query}"
    );
    let html = r.text();
    assert!(
        html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"),
        "{html}"
    );
    assert!(
        html.contains(&format!("<title>Error {code}</title>")),
        "{query}: {html}"
    );

    let r = get(port, &format!("{PATH}?{query}&errorFormat=json"));
    assert_eq!(r.status, status, "{query}: {r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON error body");
    assert_eq!(v["code"], code, "{query}: {v}");
    assert!(v["message"].is_string());

    // the same through POST
    let r = post_form(port, &format!("{PATH}?errorFormat=json"), query.as_bytes());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON error body");
    assert_eq!(
        (r.status, v["code"].as_i64()),
        (status, Some(code.into())),
        "POST {query}"
    );
}

// ---- successes: every request shape real clients send ----------------------

#[test]
fn readme_curl_mints_a_licence_url() {
    let (url, d) = get_ok(&base());
    assert!(
        url.starts_with("http://127.0.0.1:10000/hms/fp/rights/?ExpressPlayToken="),
        "{url}"
    );
    assert_eq!(hex::encode(d.content_key.expose()), CK);
    assert_eq!(hex::encode(d.iv), IV);
    assert_eq!(
        (d.customer_id.as_str(), d.environment),
        ("100001", Environment::Test)
    );
    assert!((d.issued_at - now()).abs() < 60);
    assert_eq!(d.expires_at - d.issued_at, 30 * 86400);
}

#[test]
fn token_carries_exactly_the_request_values() {
    let query = format!(
        "{}&kid=^film-42&rentalDuration=7200&generalFlags=00000001&cookie=corr%3Did%2042&expirationTime=%2B900\
         &fpExtension=wudo,AAAAAA%3D%3D&fpExtension=abcd,AQID",
        base()
    );
    for (url, d) in [get_ok(&query), post_ok("", &query)] {
        assert!(url.starts_with("http://"));
        assert_eq!(hex::encode(d.content_key.expose()), CK);
        assert_eq!(hex::encode(d.iv), IV);
        assert_eq!(d.kid, Some(Kid::Name("film-42".into())));
        assert_eq!((d.rental_duration, d.general_flags), (7200, 1));
        assert_eq!(d.cookie.as_deref(), Some("corr=id 42"));
        assert_eq!(d.expires_at - d.issued_at, 900);
        let exts: Vec<(&str, &[u8])> = d
            .extensions
            .iter()
            .map(|e| (e.kind_str(), &e.payload[..]))
            .collect();
        assert_eq!(
            exts,
            vec![("wudo", &[0u8, 0, 0, 0][..]), ("abcd", &[1u8, 2, 3][..])]
        );
    }
}

#[test]
fn two_identical_requests_give_different_tokens() {
    let (a, _) = get_ok(&base());
    let (b, _) = get_ok(&base());
    assert_ne!(a, b);
}

#[test]
fn shape_content_key_and_iv_with_json_errors() {
    get_ok(&format!("{}&errorFormat=json", base()));
    post_ok("errorFormat=json", &base());
}

#[test]
fn shape_kid_content_key_iv() {
    let q = format!("{}&kid={STORED_KID}", base());
    for (_, d) in [get_ok(&q), post_ok("", &q)] {
        assert_eq!(
            d.kid,
            Some(Kid::Bytes(
                hex::decode(STORED_KID).unwrap().try_into().unwrap()
            ))
        );
        assert_eq!(hex::encode(d.content_key.expose()), CK);
    }
}

#[test]
fn shape_kid_kek_iv_key_store_with_use_https() {
    let q = format!(
        "{}&kid={STORED_KID}&kek={DEMO_KEK}&iv={IV}&useHttps=true",
        auth()
    );
    for (url, d) in [get_ok(&q), post_ok("", &q)] {
        assert!(
            url.starts_with("https://127.0.0.1:10000/hms/fp/rights/?ExpressPlayToken="),
            "{url}"
        );
        assert_eq!(hex::encode(d.content_key.expose()), STORED_KEY);
    }
    // without kek: the customer's configured KEK opens the store
    let (_, d) = get_ok(&format!("{}&kid={STORED_KID}&iv={IV}", auth()));
    assert_eq!(hex::encode(d.content_key.expose()), STORED_KEY);
}

/// The filter reads its configuration from Envoy in 64 KiB pieces as it
/// parses (so a large one is never held whole in the VM). A configuration of
/// many pieces (about 600 KB: 500 customers with 12 stored keys each) is
/// read to its end: the last customer's last stored key mints.
#[test]
fn a_configuration_of_many_pieces_is_read_to_its_end() {
    let mut config = fpgen_fixtures::demo_json();
    let demo = config["customers"][0].clone();
    let customers = config["customers"].as_array_mut().unwrap();
    for i in 0..500 {
        let mut customer = demo.clone();
        customer["id"] = format!("{}", 400_000 + i).into();
        customer["key_store"] = (0..12)
            .map(|j| (format!("{j:08x}{i:024x}"), serde_json::Value::from(EK)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        customers.push(customer);
    }
    let json = config.to_string();
    assert!(json.len() > 8 * 64 * 1024, "{} bytes", json.len());
    let envoy = Envoy::start_with(&json, &common::Options::concurrency(this_module!(), 2));
    let last_kid = format!("{:08x}{:024x}", 11, 499);
    let query = format!(
        "customerAuthenticator=400499,{}&kid={last_kid}&iv={IV}",
        DEMO_AUTHENTICATOR.split_once(',').unwrap().1
    );
    for _ in 0..8 {
        let (_, data) = open_url(&get(envoy.port, &format!("{PATH}?{query}")));
        assert_eq!(data.customer_id.as_str(), "400499");
        assert_eq!(hex::encode(data.content_key.expose()), STORED_KEY);
    }
}

#[test]
fn shape_kek_and_ek() {
    let (_, d) = get_ok(&format!("{}&kek={DEMO_KEK}&ek={EK}&iv={IV}", auth()));
    assert_eq!(hex::encode(d.content_key.expose()), STORED_KEY);
}

#[test]
fn shape_rental_with_encoded_relative_expiry() {
    let q = format!("{}&rentalDuration=86400&expirationTime=%2B3600", base());
    for (_, d) in [get_ok(&q), post_ok("", &q)] {
        assert_eq!(
            (d.rental_duration, d.expires_at - d.issued_at),
            (86400, 3600)
        );
    }
}

#[test]
fn shape_unencoded_plus_in_expiration_time() {
    let q = format!("{}&expirationTime=+2592000", base());
    for (_, d) in [get_ok(&q), post_ok("", &q)] {
        assert_eq!(d.expires_at - d.issued_at, 2_592_000);
    }
}

#[test]
fn shape_absolute_expiry() {
    let expires = now() + 7200;
    let at = time::OffsetDateTime::from_unix_timestamp(expires).unwrap();
    let text = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert!(text.ends_with('Z'), "{text}");
    let (_, d) = get_ok(&format!("{}&expirationTime={text}", base()));
    assert_eq!(d.expires_at, expires);
}

#[test]
fn shape_playready_parameters() {
    let q = format!(
        "{}&rightsType=BuyToOwn&analogVideoOPL=0&compressedDigitalAudioOPL=0&compressedDigitalVideoOPL=0\
         &uncompressedDigitalAudioOPL=0&uncompressedDigitalVideoOPL=0&outputControlFlags=00000000\
         &unknownOutputBehavior=Allow&prFlag=0",
        base()
    );
    get_ok(&q);
    post_ok("", &q);
    get_ok(&format!(
        "{}&rightsType=Rental&rental.periodEndTime=%2B3600&rental.playDuration=600",
        base()
    ));
}

#[test]
fn shape_general_flags() {
    assert_eq!(
        get_ok(&format!("{}&generalFlags=00000000", base()))
            .1
            .general_flags,
        0
    );
    assert_eq!(
        get_ok(&format!("{}&generalFlags=00000001", base()))
            .1
            .general_flags,
        1
    );
}

#[test]
fn post_with_parameters_split_between_query_and_body() {
    let (_, d) = post_ok(&auth(), &format!("contentKey={CK}&iv={IV}&cookie=split"));
    assert_eq!(d.cookie.as_deref(), Some("split"));
}

#[test]
fn trailing_slash_and_unknown_parameters() {
    open_url(&get(
        shared(this_module!()).port,
        &format!("{PATH}/?{}&someOtherParam=1&useHttps=false", base()),
    ));
}

#[test]
fn keep_alive_client_is_answered() {
    let r = request(
        shared(this_module!()).port,
        "GET",
        &format!("{PATH}?{}", base()),
        &[("Connection", "keep-alive")],
        None,
    );
    open_url(&r);
}

// ---- routing, methods, body -------------------------------------------------

#[test]
fn other_paths_pass_through_untouched() {
    let port = shared(this_module!()).port;
    let r = get(port, &format!("/passthrough?{}", base()));
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, common::PASSTHROUGH_BODY)
    );
    for path in ["/hms/fp/tokens", "/hms/fp/token/extra", "/HMS/fp/token"] {
        let r = get(port, &format!("{path}?{}", base()));
        assert_eq!(
            (r.status, r.text().as_str()),
            (404, common::NOT_FOUND_BODY),
            "{path}"
        );
    }
    let r = request(port, "DELETE", "/passthrough", &[], None);
    assert_eq!(r.status, 200, "other methods on other paths pass too");
}

#[test]
fn other_methods_get_405_with_allow() {
    for method in ["PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = request(
            shared(this_module!()).port,
            method,
            &format!("{PATH}?errorFormat=json"),
            &[],
            None,
        );
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, POST"), "{method}");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["code"], -9405);
    }
    let r = request(shared(this_module!()).port, "HEAD", PATH, &[], None);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, POST")));
}

#[test]
fn body_over_the_cap_is_413() {
    // the demo caps bodies at 8192 bytes
    let big = format!("{}&cookie=x&pad={}", base(), "a".repeat(9000));
    let r = post_form(
        shared(this_module!()).port,
        &format!("{PATH}?errorFormat=json"),
        big.as_bytes(),
    );
    assert_eq!(r.status, 413, "{r:?}");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["code"], -9413);
    // the same without a Content-Length (chunked): measured as it arrives
    let mut chunked = Vec::new();
    for piece in big.as_bytes().chunks(1000) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = request(
        shared(this_module!()).port,
        "POST",
        PATH,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Transfer-Encoding", "chunked"),
        ],
        Some(&chunked),
    );
    assert_eq!(r.status, 413, "{r:?}");
    // just under the cap is fine
    let fits = format!("{}&pad={}", base(), "a".repeat(8192 - base().len() - 5));
    assert_eq!(fits.len(), 8192);
    open_url(&post_form(shared(this_module!()).port, PATH, fits.as_bytes()));
}

#[test]
fn chunked_post_within_the_cap_is_read_to_the_end() {
    let body = base();
    let (a, b) = body.split_at(body.len() / 2);
    let framed = format!("{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len());
    let r = request(
        shared(this_module!()).port,
        "POST",
        PATH,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Transfer-Encoding", "chunked"),
        ],
        Some(framed.as_bytes()),
    );
    open_url(&r);
}

#[test]
fn post_of_another_media_type_is_415() {
    let r = request(
        shared(this_module!()).port,
        "POST",
        &format!("{PATH}?errorFormat=json"),
        &[("Content-Type", "application/json")],
        Some(b"{\"contentKey\":\"00\"}"),
    );
    assert_eq!(r.status, 415, "{r:?}");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["code"], -9415);
}

// ---- one test per error code ------------------------------------------------

macro_rules! error_cases {
    ($($name:ident: $query:expr => $code:expr, $status:expr;)*) => {$(
        #[test]
        fn $name() {
            check_error(&$query, $code, $status);
        }
    )*};
}

error_cases! {
    code_2002_expiration_in_the_past: format!("{}&expirationTime=2020-01-01T00:00:00Z", base()) => -2002, 400;
    code_2002_expiration_beyond_30_days: format!("{}&expirationTime=%2B2592001", base()) => -2002, 400;
    code_2002_expiration_not_utc: format!("{}&expirationTime=2030-01-01T00:00:00%2B02:00", base()) => -2002, 400;
    code_2005_no_content_key: format!("{}&iv={IV}", auth()) => -2005, 400;
    code_2008_output_control_flags_not_hex: format!("{}&outputControlFlags=zz", base()) => -2008, 400;
    code_2017_no_authenticator: format!("contentKey={CK}&iv={IV}") => -2017, 401;
    code_2018_wrong_secret: format!("customerAuthenticator=100001,00000000000000000000000000000000&contentKey={CK}&iv={IV}") => -2018, 401;
    code_2018_unknown_customer: format!("customerAuthenticator=999,0123456789abcdef0123456789abcdef&contentKey={CK}&iv={IV}") => -2018, 401;
    code_2021_rights_type: format!("{}&rightsType=Lease", base()) => -2021, 400;
    code_2025_rental_play_duration: format!("{}&rental.playDuration=soon", base()) => -2025, 400;
    code_2027_content_key_length: format!("{}&contentKey=0011&iv={IV}", auth()) => -2027, 400;
    code_2033_cookie_too_long: format!("{}&cookie={}", base(), "c".repeat(33)) => -2033, 400;
    code_2034_opl_out_of_range: format!("{}&analogVideoOPL=1000", base()) => -2034, 400;
    code_2035_playready_parameter_without_value: format!("{}&prFlag=", base()) => -2035, 400;
    code_2036_extension_type_length: format!("{}&fpExtension=abc,AAAA", base()) => -2036, 400;
    code_2037_extension_payload_not_base64: format!("{}&fpExtension=wudo,%21%21", base()) => -2037, 400;
    code_2040_output_control_flags_length: format!("{}&outputControlFlags=0000", base()) => -2040, 400;
    code_4018_kek_without_kid_or_ek: format!("{}&kek={DEMO_KEK}&iv={IV}", auth()) => -4018, 400;
    code_4019_unknown_kid: format!("{}&kid=ffffffffffffffffffffffffffffffff&iv={IV}", auth()) => -4019, 400;
    code_4020_kid_not_32_hex: format!("{}&kid=1234", base()) => -4020, 400;
    code_4021_kid_name_too_long: format!("{}&kid=%5E{}", base(), "k".repeat(65)) => -4021, 400;
    code_4022_kid_name_empty: format!("{}&kid=%5E", base()) => -4022, 400;
    code_4024_wrong_kek: format!("{}&kek=ffffffffffffffffffffffffffffffff&ek={EK}&iv={IV}", auth()) => -4024, 400;
    code_4024_corrupted_ek: format!("{}&kek={DEMO_KEK}&ek=1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe6&iv={IV}", auth()) => -4024, 400;
    code_5003_general_flags: format!("{}&generalFlags=00000002", base()) => -5003, 400;
    code_6001_extension_without_comma: format!("{}&fpExtension=wudo", base()) => -6001, 400;
    code_6003_iv_missing: format!("{}&contentKey={CK}", auth()) => -6003, 400;
    code_6003_iv_malformed: format!("{}&contentKey={CK}&iv=xyz", auth()) => -6003, 400;
    code_6005_kek_with_kid_and_ek: format!("{}&kek={DEMO_KEK}&kid={STORED_KID}&ek={EK}&iv={IV}", auth()) => -6005, 400;
    code_6007_rental_duration: format!("{}&rentalDuration=-1", base()) => -6007, 400;
    code_9400_use_https: format!("{}&useHttps=yes", base()) => -9400, 400;
    repeated_parameter_gets_its_code: format!("{}&contentKey={CK}", base()) => -2005, 400;
}

#[test]
fn code_2018_production_authenticator_on_test_service() {
    let mut config = fpgen_fixtures::demo_json();
    config["customers"][0]["environment"] = "production".into();
    let envoy = Envoy::start(this_module!(), &config.to_string());
    let r = get(envoy.port, &format!("{PATH}?{}&errorFormat=json", base()));
    assert_eq!(r.status, 401);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["code"], -2018);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("production authenticator"),
        "{v}"
    );
}

#[test]
fn code_3004_error_format_is_html_and_escaped() {
    let r = get(
        shared(this_module!()).port,
        &format!(
            "{PATH}?{}&errorFormat=%3Cscript%3Ealert(1)%3C/script%3E",
            base()
        ),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let html = r.text();
    assert!(html.contains("Error -3004"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.contains("<script>"),
        "{html}"
    );
}

#[test]
fn error_bodies_never_echo_key_material() {
    let port = shared(this_module!()).port;
    for query in [
        format!("{}&contentKey={CK}aa&iv={IV}", auth()),
        format!(
            "{}&kek=ffffffffffffffffffffffffffffffff&ek={EK}&iv={IV}",
            auth()
        ),
        format!("{}&kek={DEMO_KEK}&kid={STORED_KID}&ek={EK}&iv={IV}", auth()),
        format!(
            "customerAuthenticator=100001,0123456789abcdef0123456789abcdee&contentKey={CK}&iv={IV}"
        ),
    ] {
        for format in ["html", "json"] {
            let body = get(port, &format!("{PATH}?{query}&errorFormat={format}")).text();
            for secret in [
                CK,
                EK,
                DEMO_KEK,
                "ffffffffffffffffffffffffffffffff",
                "0123456789abcdef0123456789abcde",
            ] {
                assert!(
                    !body.contains(secret),
                    "{query} echoed key material: {body}"
                );
            }
        }
    }
}

// ---- configuration ----------------------------------------------------------

/// Starts Envoy with `json`, which it must refuse; returns its log.
fn rejected(json: &str, what: &str) -> String {
    match Envoy::try_start(this_module!(), json) {
        Ok(_) => panic!("Envoy accepted a configuration with {what}"),
        Err(log) => log,
    }
}

#[test]
fn envoy_rejects_an_invalid_configuration_and_names_the_field() {
    let mut config = fpgen_fixtures::demo_json();
    config["customers"][0]["authenticator_sha256"] = "not-hex".into();
    let log = rejected(&config.to_string(), "a bad digest");
    assert!(
        log.contains("customers[0].authenticator_sha256"),
        "{}",
        common::tail(&log, 20)
    );

    let mut config = fpgen_fixtures::demo_json();
    config["sealing_keys"] = serde_json::json!([]);
    let log = rejected(&config.to_string(), "no sealing key must be rejected");
    assert!(
        log.contains("sealing_keys: at least one sealing key is required"),
        "{}",
        common::tail(&log, 20)
    );

    let log = rejected(
        "{\"environment\": \"test\", \"colour\": 1}",
        "unknown field",
    );
    assert!(
        log.contains("unknown field `colour`"),
        "{}",
        common::tail(&log, 20)
    );
}

#[test]
fn the_sealing_key_never_appears_in_envoy_logs() {
    let envoy = shared(this_module!());
    get_ok(&base());
    check_error(&format!("{}&contentKey=00", auth()), -2027, 400);
    let configured = format!(
        "fpgen {} ({}): configured",
        fpgen::stats::VERSION,
        fpgen::stats::BUILD
    );
    let log = envoy.envoy_log_with(&configured);
    assert!(log.contains(&configured), "{}", common::tail(&log, 20));
    for secret in [
        "a88deb5c6fc4b09434f9dab3a25f79cd",
        CK,
        "0123456789abcdef0123456789abcdef",
    ] {
        assert!(!log.contains(secret), "secret in Envoy's log");
    }
}

/// Every token's nonce is fresh: 100,000 mints from two workers (two VMs,
/// each drawing from the host's randomness) over 32 keep-alive
/// connections, and no nonce repeats. The nonce is read by the documented
/// layout (`docs/token-format.md`): version, key-id length, key id, then
/// 24 bytes.
#[test]
fn a_hundred_thousand_tokens_from_two_workers_never_repeat_a_nonce() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    // 32 connections: the kernel spreads them over both workers' sockets
    // (SO_REUSEPORT); all on one would be a chance of 2^-31.
    const CONNECTIONS: usize = 32;
    const PER_CONNECTION: usize = 3_125;
    let envoy = Envoy::start_with(DEMO_CONFIG, &common::Options::concurrency(this_module!(), 2));
    let path = format!("{PATH}?{}", base());
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (port, path) = (envoy.port, path.clone());
            std::thread::spawn(move || {
                let mut conn = common::KeepAlive::open(port);
                (0..PER_CONNECTION)
                    .map(|_| {
                        let r = conn.get(&path);
                        assert_eq!(r.status, 200, "{r:?}");
                        let token = URL_SAFE_NO_PAD
                            .decode(common::token_of_url(&r.text()))
                            .unwrap();
                        let start = 2 + usize::from(token[1]);
                        <[u8; 24]>::try_from(&token[start..start + 24]).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut nonces = std::collections::HashSet::new();
    for thread in threads {
        nonces.extend(thread.join().unwrap());
    }
    assert_eq!(
        nonces.len(),
        CONNECTIONS * PER_CONNECTION,
        "a nonce repeated"
    );
    // both workers minted (Envoy counts connections per worker)
    let stats = envoy
        .admin_get("/stats?filter=worker_.\\.downstream_cx_total")
        .text();
    let per_worker: Vec<u64> = stats
        .lines()
        .filter(|l| l.starts_with("listener.127.0.0.1_"))
        .filter_map(|l| l.rsplit_once(": ")?.1.trim().parse().ok())
        .collect();
    assert_eq!(per_worker.len(), 2, "{stats}");
    assert!(per_worker.iter().all(|&n| n > 0), "{stats}");
}
