//! The API's rules, checked natively against the pure core (no Envoy): every
//! parameter rule and its code, through `service::handle` with a fake host.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use fpgen::config::Config;
use fpgen::error::ErrorCode;
use fpgen::ids::{CustomerId, Kid};
use fpgen::licence::Environment;
use fpgen::service::{self, Answer, Host as _, Outcome};
use fpgen::token;
use fpgen_fixtures::{
    self as fixtures, Budgets, FakeHost, Random, CONTENT_KEY as CK, EK, IV, KEK_HEX as DEMO_KEK,
    NOW, STORED_KID,
};

const AUTH: &str = "customerAuthenticator=100001,0123456789abcdef0123456789abcdef";

/// The demo configuration with the hosted service's default licence URL, a
/// second KEK, a named kid in the key store, a second test customer without
/// a KEK and a production customer.
fn config_json() -> serde_json::Value {
    let mut v = fixtures::demo_json();
    let o = v.as_object_mut().unwrap();
    o.remove("redeem_url");
    o.remove("redemption");
    v["keks"]["other-kek"] = "ffffffffffffffffffffffffffffffff".into();
    v["customers"][0]["key_store"]["^movie-7"] = EK.into();
    let mut second = fixtures::customer("100002", "test");
    second["key_store"] = serde_json::json!({ STORED_KID: EK });
    let customers = v["customers"].as_array_mut().unwrap();
    customers.push(second);
    customers.push(fixtures::customer("200001", "production"));
    v
}

fn config() -> Config {
    Config::from_json(config_json().to_string().as_bytes()).unwrap()
}

/// The host of most tests: a client address, a fixed nonce.
fn host() -> FakeHost {
    FakeHost::with_client("192.0.2.10")
}

fn call(query: &str) -> (fpgen::render::Response, Outcome) {
    let Answer { response, outcome } = service::handle(&config(), query, b"", &host());
    (response, outcome)
}

/// Asserts that `query` fails with `code` and `status`, in both formats.
#[track_caller]
fn fails(query: &str, code: i32, status: u16) {
    let (r, outcome) = call(query);
    assert_eq!(
        (r.status, outcome_code(&outcome)),
        (status, Some(code)),
        "{query}: {}",
        r.body
    );
    assert_eq!(r.content_type, "text/html; charset=utf-8");
    assert!(r.body.contains(&format!("Error {code}")), "{}", r.body);
    let (r, _) = call(&format!("{query}&errorFormat=json"));
    assert_eq!(r.status, status, "{query}");
    assert_eq!(r.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["code"], code, "{query}: {}", r.body);
    assert!(v["message"].as_str().unwrap().len() > 5);
}

fn outcome_code(o: &Outcome) -> Option<i32> {
    o.error.map(|c| c.code())
}

/// Mints and opens the token with the configured key ring.
#[track_caller]
fn mints(query: &str) -> (String, fpgen::licence::LicenceData) {
    let (r, outcome) = call(query);
    assert_eq!(r.status, 200, "{query}: {}", r.body);
    assert!(outcome.minted());
    assert_eq!(r.content_type, "text/uri-list");
    let url = r
        .body
        .strip_suffix("\r\n")
        .expect("CRLF-terminated")
        .to_owned();
    let token = fixtures::token_of_url(&url);
    let data = token::open(&token, &config().sealing_keys, Environment::Test, NOW).unwrap();
    (url, data.into_data())
}

fn base() -> String {
    format!("{AUTH}&contentKey={CK}&iv={IV}")
}

#[test]
fn minimal_request_mints_a_30_day_token() {
    let (url, d) = mints(&base());
    assert!(
        url.starts_with("http://fp.test.expressplay.com:80/hms/fp/rights/?ExpressPlayToken="),
        "{url}"
    );
    assert_eq!(hex::encode(d.content_key.expose()), CK);
    assert_eq!(hex::encode(d.iv), IV);
    assert_eq!(d.customer_id.as_str(), "100001");
    assert_eq!(d.environment, Environment::Test);
    assert_eq!(d.issued_at, NOW);
    assert_eq!(d.expires_at, NOW + 30 * 86400);
    assert_eq!(
        (d.kid, d.cookie, d.rental_duration, d.general_flags),
        (None, None, 0, 0)
    );
    assert!(d.extensions.is_empty());
}

#[test]
fn every_field_is_carried() {
    let q = format!(
        "{}&kid=^movie-7&rentalDuration=3600&generalFlags=00000001&cookie=abc%20123&expirationTime=%2B600\
         &fpExtension=wudo,AAAAAA==&fpExtension=abcd,AQID&useHttps=true",
        base()
    );
    let (url, d) = mints(&q);
    assert!(url.starts_with("https://"));
    assert_eq!(d.kid, Some(Kid::Name("movie-7".into())));
    assert_eq!((d.rental_duration, d.general_flags), (3600, 1));
    assert_eq!(d.cookie.as_deref(), Some("abc 123"));
    assert_eq!(d.expires_at, NOW + 600);
    assert_eq!(d.extensions.len(), 2);
    assert_eq!(
        (&d.extensions[0].kind, &d.extensions[0].payload[..]),
        (b"wudo", &[0u8, 0, 0, 0][..])
    );
    assert_eq!(
        (&d.extensions[1].kind, &d.extensions[1].payload[..]),
        (b"abcd", &[1u8, 2, 3][..])
    );
}

#[test]
fn two_identical_requests_give_different_tokens() {
    let host = FakeHost {
        random: Random::Counter,
        ..FakeHost::default()
    };
    let a = service::handle(&config(), &base(), b"", &host)
        .response
        .body;
    let b = service::handle(&config(), &base(), b"", &host)
        .response
        .body;
    assert_ne!(a, b);
}

#[test]
fn real_client_shapes() {
    // contentKey + iv with errorFormat=json
    mints(&format!("{}&errorFormat=json", base()));
    // kid + contentKey + iv
    let (_, d) = mints(&format!("{}&kid={STORED_KID}", base()));
    assert_eq!(
        hex::encode(d.content_key.expose()),
        CK,
        "an explicit contentKey wins over the store"
    );
    // kid + kek + iv, no content key, useHttps=true: key-store lookup with the request's KEK
    let (url, d) = mints(&format!(
        "{AUTH}&kid={STORED_KID}&kek={DEMO_KEK}&iv={IV}&useHttps=true"
    ));
    assert!(url.starts_with("https://"));
    assert_eq!(
        hex::encode(d.content_key.expose()),
        "00112233445566778899aabbccddeeff"
    );
    // contentKey + iv + rentalDuration + expirationTime=%2B<seconds>
    let (_, d) = mints(&format!(
        "{}&rentalDuration=86400&expirationTime=%2B3600",
        base()
    ));
    assert_eq!((d.rental_duration, d.expires_at), (86400, NOW + 3600));
    // expirationTime=+2592000 with the + not encoded (a space after decoding)
    let (_, d) = mints(&format!("{}&expirationTime=+2592000", base()));
    assert_eq!(d.expires_at, NOW + 2_592_000);
    // PlayReady parameters sent to the FairPlay endpoint
    mints(&format!(
        "{}&rightsType=BuyToOwn&analogVideoOPL=0&compressedDigitalAudioOPL=100&compressedDigitalVideoOPL=999\
         &uncompressedDigitalAudioOPL=250&uncompressedDigitalVideoOPL=300&outputControlFlags=0000ABCD\
         &unknownOutputBehavior=Allow&prFlag=1",
        base()
    ));
    mints(&format!(
        "{}&rightsType=Rental&rental.periodEndTime=2027-02-01T00:00:00Z&rental.playDuration=7200",
        base()
    ));
    mints(&format!(
        "{}&rightsType=Rental&rental.periodEndTime=%2B3600",
        base()
    ));
    // generalFlags forms
    for (flags, value) in [("00000000", 0), ("00000001", 1), ("0000", 0)] {
        assert_eq!(
            mints(&format!("{}&generalFlags={flags}", base()))
                .1
                .general_flags,
            value
        );
    }
}

#[test]
fn key_material_sources() {
    // kek + ek: unwrapped per RFC 3394
    let (_, d) = mints(&format!("{AUTH}&kek={DEMO_KEK}&ek={EK}&iv={IV}"));
    assert_eq!(
        hex::encode(d.content_key.expose()),
        "00112233445566778899aabbccddeeff"
    );
    assert_eq!(d.kid, None);
    // kid alone: the customer's configured KEK opens the store
    let (_, d) = mints(&format!("{AUTH}&kid={}&iv={IV}", STORED_KID.to_uppercase()));
    assert_eq!(
        hex::encode(d.content_key.expose()),
        "00112233445566778899aabbccddeeff"
    );
    assert_eq!(
        d.kid,
        Some(Kid::Bytes(
            hex::decode(STORED_KID).unwrap().try_into().unwrap()
        ))
    );
    let (_, d) = mints(&format!("{AUTH}&kid=%5Emovie-7&iv={IV}"));
    assert_eq!(d.kid, Some(Kid::Name("movie-7".into())));
}

#[test]
fn authentication() {
    let rest = format!("contentKey={CK}&iv={IV}");
    fails(&rest, -2017, 401);
    fails(&format!("customerAuthenticator=&{rest}"), -2017, 401);
    fails(
        &format!("customerAuthenticator=100001,wrong&{rest}"),
        -2018,
        401,
    );
    fails(&format!("customerAuthenticator=100001&{rest}"), -2018, 401);
    fails(
        &format!("customerAuthenticator=999999,0123456789abcdef0123456789abcdef&{rest}"),
        -2018,
        401,
    );
    // a production authenticator on the test service
    fails(
        &format!("customerAuthenticator=200001,0123456789abcdef0123456789abcdef&{rest}"),
        -2018,
        401,
    );
    // authentication comes before parameter validation
    fails(
        "customerAuthenticator=100001,wrong&contentKey=zz",
        -2018,
        401,
    );
}

#[test]
fn content_key_rules() {
    fails(&format!("{AUTH}&iv={IV}"), -2005, 400);
    fails(&format!("{AUTH}&contentKey=0001&iv={IV}"), -2027, 400);
    // the right length but not hex is -2005, not the length code -2027
    fails(
        &format!("{AUTH}&contentKey={}&iv={IV}", "g".repeat(32)),
        -2005,
        400,
    );
    fails(&format!("{AUTH}&contentKey={CK}00&iv={IV}"), -2027, 400);
}

#[test]
fn kid_rules() {
    fails(&format!("{}&kid=0011", base()), -4020, 400);
    fails(&format!("{}&kid=^{}", base(), "a".repeat(65)), -4021, 400);
    mints(&format!("{}&kid=^{}", base(), "a".repeat(64)));
    fails(&format!("{}&kid=^", base()), -4022, 400);
    fails(&format!("{}&kid=^a%0Ab", base()), -4022, 400);
}

#[test]
fn kek_rules() {
    // kek alone: which key?
    fails(&format!("{AUTH}&kek={DEMO_KEK}&iv={IV}"), -4018, 400);
    // kek with both kid and ek
    fails(
        &format!("{AUTH}&kek={DEMO_KEK}&kid={STORED_KID}&ek={EK}&iv={IV}"),
        -6005,
        400,
    );
    // ek without kek; contentKey with kek
    fails(&format!("{AUTH}&ek={EK}&iv={IV}"), -6005, 400);
    fails(&format!("{}&kek={DEMO_KEK}&ek={EK}", base()), -6005, 400);
    // wrong KEK, corrupted ek, malformed kek/ek
    fails(
        &format!("{AUTH}&kek=ffffffffffffffffffffffffffffffff&ek={EK}&iv={IV}"),
        -4024,
        400,
    );
    let corrupted = format!("{}0{}", &EK[..10], &EK[11..]);
    fails(
        &format!("{AUTH}&kek={DEMO_KEK}&ek={corrupted}&iv={IV}"),
        -4024,
        400,
    );
    fails(
        &format!("{AUTH}&kek={DEMO_KEK}&ek={}&iv={IV}", &EK[..32]),
        -4024,
        400,
    );
    fails(&format!("{AUTH}&kek=00&ek={EK}&iv={IV}"), -4024, 400);
    fails(&format!("{AUTH}&kek={DEMO_KEK}&ek=xyz&iv={IV}"), -4024, 400);
    // key store with a KEK that does not open it
    fails(
        &format!("{AUTH}&kek=ffffffffffffffffffffffffffffffff&kid={STORED_KID}&iv={IV}"),
        -4024,
        400,
    );
}

#[test]
fn key_store_rules() {
    fails(
        &format!("{AUTH}&kid=00000000000000000000000000000000&iv={IV}"),
        -4019,
        400,
    );
    fails(
        &format!("{AUTH}&kid=^unknown&kek={DEMO_KEK}&iv={IV}"),
        -4019,
        400,
    );
    // customer 100002 has a store but no configured KEK
    let other = "customerAuthenticator=100002,0123456789abcdef0123456789abcdef";
    fails(&format!("{other}&kid={STORED_KID}&iv={IV}"), -4019, 400);
    // ... and the request's KEK opens it
    mints(&format!("{other}&kid={STORED_KID}&kek={DEMO_KEK}&iv={IV}"));
    // one customer cannot reach another's store
    fails(
        &format!("{other}&kid=^movie-7&kek={DEMO_KEK}&iv={IV}"),
        -4019,
        400,
    );
}

#[test]
fn iv_rules() {
    fails(&format!("{AUTH}&contentKey={CK}"), -6003, 400);
    fails(&format!("{AUTH}&contentKey={CK}&iv=00"), -6003, 400);
    fails(
        &format!("{AUTH}&contentKey={CK}&iv={}", "x".repeat(32)),
        -6003,
        400,
    );
}

#[test]
fn general_flags_rules() {
    for bad in ["00000002", "1", "000000001", "zzzzzzzz", ""] {
        fails(&format!("{}&generalFlags={bad}", base()), -5003, 400);
    }
}

#[test]
fn rental_duration_rules() {
    mints(&format!("{}&rentalDuration=0", base()));
    assert_eq!(
        mints(&format!("{}&rentalDuration=4294967295", base()))
            .1
            .rental_duration,
        u32::MAX
    );
    for bad in [
        "-1",
        "4294967296",
        "1.5",
        "abc",
        "",
        "%2B5",
        "99999999999999999999999",
    ] {
        fails(&format!("{}&rentalDuration={bad}", base()), -6007, 400);
    }
}

#[test]
fn fp_extension_rules() {
    fails(&format!("{}&fpExtension=wudo", base()), -6001, 400);
    fails(&format!("{}&fpExtension=wud,AAAA", base()), -2036, 400);
    fails(&format!("{}&fpExtension=wudoo,AAAA", base()), -2036, 400);
    fails(
        &format!("{}&fpExtension=wudo,not*base64", base()),
        -2037,
        400,
    );
    fails(&format!("{}&fpExtension=wudo,", base()), -2037, 400);
    let many: String = (0..17).map(|_| "&fpExtension=wudo,AA==").collect();
    fails(&format!("{}{many}", base()), -6001, 400);
    // an unencoded + in the payload arrives as a space and is read back as +
    let (_, d) = mints(&format!("{}&fpExtension=wudo,+/8=", base()));
    assert_eq!(d.extensions[0].payload, vec![0xfb, 0xff]);
    // payload without padding
    let (_, d) = mints(&format!("{}&fpExtension=wudo,AQID", base()));
    assert_eq!(d.extensions[0].payload, vec![1, 2, 3]);
}

#[test]
fn expiration_time_rules() {
    let (_, d) = mints(&format!("{}&expirationTime=2027-01-16T08:00:00Z", base()));
    assert_eq!(d.expires_at, NOW + 86400);
    // exactly 30 days is allowed, one second more is not
    mints(&format!("{}&expirationTime=%2B2592000", base()));
    fails(&format!("{}&expirationTime=%2B2592001", base()), -2002, 400);
    fails(
        &format!("{}&expirationTime=2027-02-15T08:00:01Z", base()),
        -2002,
        400,
    );
    // past, now, malformed, other zones
    fails(
        &format!("{}&expirationTime=2020-01-01T00:00:00Z", base()),
        -2002,
        400,
    );
    fails(&format!("{}&expirationTime=%2B0", base()), -2002, 400);
    for bad in [
        "tomorrow",
        "2027-01-16T08:00:00",
        "2027-01-16T08:00:00%2B01:00",
        "2027-01-16",
        "%2B-5",
        "%2B",
        "-60",
        "",
    ] {
        fails(&format!("{}&expirationTime={bad}", base()), -2002, 400);
    }
}

#[test]
fn cookie_rules() {
    let (_, d) = mints(&format!("{}&cookie={}", base(), "é".repeat(32)));
    assert_eq!(d.cookie.unwrap().chars().count(), 32);
    fails(&format!("{}&cookie={}", base(), "a".repeat(33)), -2033, 400);
    fails(&format!("{}&cookie=a%0Ab", base()), -2033, 400);
    fails(&format!("{}&cookie=%FF", base()), -2033, 400);
}

#[test]
fn playready_parameters_are_validated_when_present() {
    fails(&format!("{}&rightsType=Subscription", base()), -2021, 400);
    fails(&format!("{}&rental.periodEndTime=soon", base()), -2021, 400);
    fails(&format!("{}&rental.playDuration=-5", base()), -2025, 400);
    for opl in [
        "analogVideoOPL",
        "compressedDigitalAudioOPL",
        "compressedDigitalVideoOPL",
        "uncompressedDigitalAudioOPL",
        "uncompressedDigitalVideoOPL",
    ] {
        fails(&format!("{}&{opl}=1000", base()), -2034, 400);
        fails(&format!("{}&{opl}=x", base()), -2034, 400);
    }
    fails(&format!("{}&outputControlFlags=zz", base()), -2008, 400);
    fails(&format!("{}&outputControlFlags=0001", base()), -2040, 400);
    fails(&format!("{}&unknownOutputBehavior=", base()), -2035, 400);
    fails(&format!("{}&rightsType=", base()), -2035, 400);
}

#[test]
fn error_format_rules() {
    let (r, _) = call(&format!("{}&errorFormat=xml%3Cb%3E", base()));
    assert_eq!(
        (r.status, r.content_type),
        (400, "text/html; charset=utf-8")
    );
    assert!(r.body.contains("Error -3004"));
    assert!(
        r.body.contains("xml&lt;b&gt;") && !r.body.contains("<b>"),
        "{}",
        r.body
    );
    let (r, _) = call(&format!("{}&errorFormat=JSON&iv=zz", AUTH));
    assert_eq!(r.content_type, "application/json");
}

/// The JSON message of a refused request.
#[track_caller]
fn message(query: &str) -> String {
    let (r, _) = call(&format!("{query}&errorFormat=json"));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(r.status >= 400, "{query}: {}", r.body);
    v["message"].as_str().unwrap().to_owned()
}

#[test]
fn every_key_message_is_true_of_the_input() {
    let bad_hex = format!("{}x{}", &CK[..6], &CK[7..]); // 32 characters, the 7th is x
    for (query, want) in [
        (format!("{AUTH}&contentKey=0011&iv={IV}"),
         "Content encryption key must be 32 hex digits long: got 4 characters"),
        (format!("{AUTH}&contentKey={bad_hex}&iv={IV}"),
         "Invalid content encryption key: contentKey: character 7 is not a hex digit"),
        (format!("{AUTH}&contentKey={CK}&iv=0f0e"),
         "Invalid iv parameter specified: expected 32 hex digits, got 4 characters"),
        (format!("{AUTH}&contentKey={CK}&iv={bad_hex}"),
         "Invalid iv parameter specified: expected 32 hex digits, character 7 is not a hex digit"),
        (format!("{AUTH}&kid=0011&contentKey={CK}&iv={IV}"),
         "kid must be 32 hex characters: got 4 characters"),
        (format!("{AUTH}&kid={bad_hex}&contentKey={CK}&iv={IV}"),
         "kid must be 32 hex characters: character 7 is not a hex digit"),
        (format!("{AUTH}&kid={STORED_KID}&kek=0011&iv={IV}"),
         "Invalid encrypted key or kek: kek must be 32, 48 or 64 hex digits, got 4 characters"),
        (format!("{AUTH}&kid={STORED_KID}&kek={bad_hex}&iv={IV}"),
         "Invalid encrypted key or kek: kek must be 32, 48 or 64 hex digits, character 7 is not a hex digit"),
        (format!("{AUTH}&kek={DEMO_KEK}&ek={}&iv={IV}", &EK[..46]),
         "Invalid encrypted key or kek: ek must be 48 hex digits (a wrapped 16-byte key), got 46 characters"),
        (format!("{AUTH}&kek={DEMO_KEK}&ek={}zz&iv={IV}", &EK[..46]),
         "Invalid encrypted key or kek: ek must be 48 hex digits (a wrapped 16-byte key), character 47 is not a hex digit"),
        (format!("{AUTH}&kek=ffffffffffffffffffffffffffffffff&ek={EK}&iv={IV}"),
         "Invalid encrypted key or kek: ek does not unwrap with kek"),
        (format!("{AUTH}&contentKey={CK}&iv={IV}&generalFlags=1"),
         "Invalid general flags: expected 00000000, 00000001 or 0000"),
    ] {
        assert_eq!(message(&query), want, "{query}");
    }
}

#[test]
fn malformed_percent_escapes_are_the_parameters_error() {
    fails(&format!("{}&cookie=%zz%", base()), -2033, 400);
    fails(&format!("{}&kid=%5E%", base()), -4022, 400);
    fails(
        &format!("{AUTH}&contentKey=%zz{}&iv={IV}", &CK[3..]),
        -2005,
        400,
    );
    fails(
        &format!("customerAuthenticator=100001%2C0123456789abcdef0123456789abcde%f&contentKey={CK}&iv={IV}"),
        -2018,
        401,
    );
    fails(&format!("{}&fpExtension=wudo,AAAA%3", base()), -6001, 400);
    // unknown parameters stay ignored, and a well-formed %25 is a percent sign
    let (r, outcome) = call(&format!("{}&foo=%zz%&cookie=a%25zz", base()));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(outcome.cookie.as_deref(), Some("a%zz"));
    assert!(message(&format!("{}&cookie=%zz", base()))
        .ends_with("cookie holds a malformed percent escape"));
}

#[test]
fn repeated_parameters() {
    fails(&format!("{}&iv={IV}", base()), -6003, 400);
    fails(&format!("{}&contentKey={CK}", base()), -2005, 400);
    fails(&format!("{}&cookie=a&cookie=b", base()), -2033, 400);
    fails(
        &format!("{}&useHttps=true&useHttps=true", base()),
        -9400,
        400,
    );
    fails(&format!("{}&useHttps=maybe", base()), -9400, 400);
    // fpExtension repeats freely; unknown parameters repeat freely
    mints(&format!(
        "{}&fpExtension=wudo,AA==&fpExtension=wudo,AA==&foo=1&foo=2",
        base()
    ));
}

#[test]
fn post_body_and_query_combine() {
    let r = service::handle(
        &config(),
        AUTH,
        format!("contentKey={CK}&iv={IV}").as_bytes(),
        &host(),
    )
    .response;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = service::handle(&config(), &base(), format!("iv={IV}").as_bytes(), &host()).response;
    assert_eq!(r.status, 400, "iv in both query and body is a repeat");
}

#[test]
fn no_randomness_no_token() {
    let no_random = FakeHost {
        random: Random::Fails,
        ..host()
    };
    let Answer {
        response: r,
        outcome,
    } = service::handle(&config(), &base(), b"", &no_random);
    assert_eq!(r.status, 500);
    assert_eq!(outcome.error, Some(fpgen::error::ErrorCode::Internal));
    assert!(!r.body.contains("ExpressPlayToken"));
}

#[test]
fn errors_never_contain_key_material() {
    let queries = [
        format!("{AUTH}&contentKey={CK}ff&iv={IV}"),
        format!("{AUTH}&kek=ffffffffffffffffffffffffffffffff&ek={EK}&iv={IV}"),
        format!("{AUTH}&kek={DEMO_KEK}&kid={STORED_KID}&ek={EK}&iv={IV}"),
        format!(
            "customerAuthenticator=100001,0123456789abcdef0123456789abcdeX&contentKey={CK}&iv={IV}"
        ),
    ];
    for q in queries {
        for fmt in ["html", "json"] {
            let (r, _) = call(&format!("{q}&errorFormat={fmt}"));
            assert_ne!(r.status, 200);
            for secret in [
                CK,
                EK,
                DEMO_KEK,
                "0123456789abcdef0123456789abcde",
                "ffffffffffffffff",
            ] {
                assert!(!r.body.contains(secret), "{q} leaked into {}", r.body);
            }
        }
    }
}

#[test]
fn routing_and_content_types() {
    assert!(service::is_token_path("/hms/fp/token"));
    assert!(service::is_token_path("/hms/fp/token/"));
    assert!(service::is_token_path("/hms/fp/token?a=b"));
    assert!(service::is_token_path("/hms/fp/token/?a=b"));
    assert!(!service::is_token_path("/hms/fp/tokens"));
    assert!(!service::is_token_path("/hms/fp/token/x"));
    assert!(!service::is_token_path("/HMS/fp/token"));
    assert!(!service::is_token_path("/hms/fp/rights/"));
    assert!(service::is_form_content_type(None));
    assert!(service::is_form_content_type(Some(
        "application/x-www-form-urlencoded; charset=UTF-8"
    )));
    assert!(!service::is_form_content_type(Some("application/json")));
    let r = service::refuse(ErrorCode::BodyTooLarge, "errorFormat=json").response;
    assert_eq!((r.status, r.content_type), (413, "application/json"));
}

/// The admission rule that the filter and `fpgen serve` share (the
/// end-to-end test `post_admission_is_the_same_in_envoy_and_serve` sends
/// the same requests to both).
#[test]
fn admission() {
    use service::Admission::{Body, Query, Refuse};
    let form = Some("application/x-www-form-urlencoded");
    for (method, content_type, length, want) in [
        ("GET", None, None, Query),
        ("GET", Some("application/json"), Some("99999"), Query),
        ("POST", None, None, Body),
        ("POST", form, Some("8192"), Body),
        ("POST", form, Some("8193"), Refuse(ErrorCode::BodyTooLarge)),
        (
            "POST",
            Some("application/json"),
            Some("0"),
            Refuse(ErrorCode::UnsupportedMediaType),
        ),
        (
            "POST",
            Some("application/json"),
            None,
            Refuse(ErrorCode::UnsupportedMediaType),
        ),
        ("PUT", form, None, Refuse(ErrorCode::MethodNotAllowed)),
        ("HEAD", None, None, Refuse(ErrorCode::MethodNotAllowed)),
        ("get", None, None, Refuse(ErrorCode::MethodNotAllowed)),
    ] {
        assert_eq!(
            service::admit(
                method,
                |name| match name {
                    "content-type" => content_type,
                    "content-length" => length,
                    _ => None,
                },
                8192
            ),
            want,
            "{method} {content_type:?} {length:?}"
        );
    }
}

fn account_config(edit: impl FnOnce(&mut serde_json::Value)) -> Config {
    let mut v = config_json();
    edit(&mut v["customers"][0]);
    Config::from_json(v.to_string().as_bytes()).unwrap()
}

fn account_call(config: &Config, client: Option<&str>) -> (u16, Outcome) {
    let host = FakeHost {
        client: client.map(|c| c.parse().unwrap()),
        budgets: Budgets::Counted,
        ..FakeHost::default()
    };
    let Answer { response, outcome } = service::handle(config, &base(), b"", &host);
    (response.status, outcome)
}

#[test]
fn account_controls() {
    let cases: [(&str, serde_json::Value, i32, u16); 3] = [
        ("enabled", false.into(), -2031, 403),
        ("fairplay_authorized", false.into(), -6006, 403),
        ("fairplay_enabled", false.into(), -6009, 403),
    ];
    for (field, value, code, status) in cases {
        let config = account_config(|c| c[field] = value);
        let (got_status, outcome) = account_call(&config, Some("192.0.2.1"));
        assert_eq!((got_status, outcome.code()), (status, code), "{field}");
        assert_eq!(
            outcome.customer_id.as_ref().map(CustomerId::as_str),
            Some("100001")
        );
    }
    // authentication still comes first: a disabled account with a wrong secret is -2018
    let config = account_config(|c| c["enabled"] = false.into());
    let Answer {
        response: r,
        outcome: o,
    } = service::handle(
        &config,
        "customerAuthenticator=100001,x&contentKey=00",
        b"",
        &host(),
    );
    assert_eq!((r.status, o.code(), o.customer_id), (401, -2018, None));
}

#[test]
fn allowed_networks() {
    let config = account_config(|c| {
        c["allowed_networks"] = serde_json::json!(["192.0.2.0/24", "2001:db8::/32"])
    });
    assert_eq!(account_call(&config, Some("192.0.2.77")).0, 200);
    assert_eq!(account_call(&config, Some("2001:db8::5")).0, 200);
    assert_eq!(account_call(&config, Some("198.51.100.1")).1.code(), -2003);
    assert_eq!(account_call(&config, Some("::1")).1.code(), -2003);
    assert_eq!(
        account_call(&config, None).1.code(),
        -2003,
        "unknown address is refused"
    );
    let open = account_config(|_| {});
    assert_eq!(account_call(&open, None).0, 200, "no list, no check");
}

#[test]
fn token_budget() {
    let config = account_config(|c| c["token_budget"] = 2.into());
    let counted = || FakeHost {
        budgets: Budgets::Counted,
        ..FakeHost::default()
    };
    let host = counted();
    let codes: Vec<i32> = (0..4)
        .map(|_| service::handle(&config, &base(), b"", &host).outcome.code())
        .collect();
    assert_eq!(codes, [0, 0, -2019, -2019]);
    // a host that fails while taking from the budget is an internal error
    let failing = FakeHost {
        budgets: Budgets::Fails,
        ..FakeHost::default()
    };
    let answer = service::handle(&config, &base(), b"", &failing);
    assert_eq!(
        (answer.response.status, answer.outcome.code()),
        (500, -9500)
    );
    assert!(!answer.response.body.contains("ExpressPlayToken"));
    // an invalid request does not spend the budget
    let host = counted();
    service::handle(
        &config,
        &format!("{AUTH}&contentKey=00&iv={IV}"),
        b"",
        &host,
    );
    assert_eq!(host.taken(), 0);
    // nor does one whose kid cannot be sealed (64 characters, 256 bytes)
    let kid: String = "%F0%9F%98%80".repeat(64);
    let answer = service::handle(&config, &format!("{}&kid=%5E{kid}", base()), b"", &host);
    assert_eq!(
        (answer.response.status, answer.outcome.code()),
        (400, -9421)
    );
    assert!(answer.response.body.contains("at most 255 bytes of UTF-8"));
    assert_eq!(host.taken(), 0);
    // nor one that fails for want of randomness: nothing minted, nothing spent
    let no_randomness = FakeHost {
        budgets: Budgets::Counted,
        random: Random::Fails,
        ..FakeHost::default()
    };
    let answer = service::handle(&config, &base(), b"", &no_randomness);
    assert_eq!(answer.outcome.code(), -9500);
    assert_eq!(no_randomness.taken(), 0);
    // the budget is still whole: two tokens, then -2019
    let codes: Vec<i32> = (0..3)
        .map(|_| service::handle(&config, &base(), b"", &host).outcome.code())
        .collect();
    assert_eq!(codes, [0, 0, -2019]);
}

#[test]
fn outcome_for_the_access_log() {
    let (_, o) = call(&format!(
        "{}&kid=^film&cookie=corr-1&expirationTime=%2B60",
        base()
    ));
    assert_eq!(
        o,
        Outcome {
            error: None,
            customer_id: Some(CustomerId::parse("100001").unwrap()),
            kid: Some(Kid::parse("^film").unwrap()),
            cookie: Some("corr-1".into()),
            expires_at: Some(NOW + 60),
        }
    );
    let (_, o) = call(&format!("{AUTH}&contentKey=00&iv={IV}&cookie=corr-2"));
    assert_eq!(
        (
            o.code(),
            o.cookie.as_deref(),
            o.customer_id.as_ref().map(CustomerId::as_str)
        ),
        (-2027, Some("corr-2"), Some("100001"))
    );
    let (_, o) = call(&format!("{AUTH}&contentKey=00&iv={IV}&cookie=bad%0Acookie"));
    assert_eq!(o.cookie, None, "an invalid cookie never reaches the log");
}

#[test]
fn client_address_policy() {
    use fpgen::config::ClientAddressPolicy;
    let direct = ClientAddressPolicy::default();
    let xff = |hops| ClientAddressPolicy {
        use_x_forwarded_for: true,
        trusted_hops: hops,
    };
    let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
    // by default x-forwarded-for is ignored
    assert_eq!(
        service::client_address(&direct, Some("192.0.2.1:5555"), Some("10.0.0.1")),
        ip("192.0.2.1")
    );
    assert_eq!(
        service::client_address(&direct, Some("[2001:db8::1]:80"), None),
        ip("2001:db8::1")
    );
    assert_eq!(service::client_address(&direct, None, None), None);
    // client -> trusted proxy 198.51.100.7 -> Envoy, which appended the proxy
    let arrived = "203.0.113.5, 198.51.100.7";
    assert_eq!(
        service::client_address(&xff(1), Some("198.51.100.7:1"), Some(arrived)),
        ip("203.0.113.5")
    );
    // a client that forges entries only adds them on the left
    let forged = "10.0.0.1, 203.0.113.5, 198.51.100.7";
    assert_eq!(
        service::client_address(&xff(1), Some("198.51.100.7:1"), Some(forged)),
        ip("203.0.113.5")
    );
    assert_eq!(
        service::client_address(&xff(2), Some("198.51.100.7:1"), Some(forged)),
        ip("10.0.0.1")
    );
    // fewer entries than hops, none, or garbage: unknown
    assert_eq!(
        service::client_address(&xff(2), Some("198.51.100.7:1"), Some(arrived)),
        None
    );
    assert_eq!(
        service::client_address(&xff(1), Some("127.0.0.1:1"), None),
        None
    );
    assert_eq!(
        service::client_address(&xff(1), None, Some("garbage, 127.0.0.1")),
        None
    );
}

#[test]
fn access_log_fields() {
    let (_, o) = call(&format!(
        "{}&kid=%5Efilm%20%C3%A9%3D1&cookie=a%20b%22c%25&expirationTime=%2B60",
        base()
    ));
    assert_eq!(
        o.log_fields(),
        "code=0 customer=100001 kid=^film%20%C3%A9%3D1 cookie=a%20b%22c%25 expires=2027-01-15T08:01:00Z"
    );
    let (_, o) = call("contentKey=00");
    assert_eq!(o.log_fields(), "code=-2017");
}

/// Every redemption refusal reason and the stat name operators' dashboards
/// count it under, written out. The match has no wildcard: a new reason
/// does not compile here until it is added, with its name.
fn refusal_stat_name(reason: fpgen::redeem::Refusal) -> &'static str {
    use fpgen::redeem::Refusal as R;
    use fpgen::token::TokenError as T;
    match reason {
        R::Token(T::Malformed) => "malformed",
        R::Token(T::UnknownVersion) => "unknown_version",
        R::Token(T::UnknownKey) => "unknown_key",
        R::Token(T::Forged) => "forged",
        R::Token(T::BadPayload) => "bad_payload",
        R::Token(T::WrongEnvironment) => "wrong_environment",
        R::Token(T::Expired) => "expired",
        R::Token(T::IssuedInFuture) => "issued_in_future",
        R::Token(T::LifetimeTooLong) => "lifetime_too_long",
        R::UnsafePath => "unsafe_path",
        R::UnknownCustomer => "unknown_customer",
        R::CustomerDisabled => "customer_disabled",
        R::Revoked => "revoked",
    }
}

/// `Refusal::ALL` holds every reason once (13, by the match above), each
/// counted under its documented name, and docs/stats.md lists them all.
#[test]
fn the_stats_page_lists_every_redemption_refusal_reason() {
    use fpgen::redeem::Refusal;
    let names: Vec<&str> = Refusal::ALL.iter().map(|&r| refusal_stat_name(r)).collect();
    let distinct: std::collections::BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        13,
        "a reason missing from Refusal::ALL, or twice: {names:?}"
    );
    for reason in Refusal::ALL {
        assert_eq!(reason.stat_name(), refusal_stat_name(reason), "{reason:?}");
    }
    let readme = include_str!("../docs/stats.md");
    let row = readme
        .lines()
        .find(|l| l.contains("`wasmcustom.fpgen.redemptions_rejected.<reason>`"))
        .unwrap();
    for name in names {
        assert!(
            row.contains(&format!("`{name}`")),
            "{name} missing from the stats table of docs/stats.md"
        );
    }
}

/// The stat names the filter counts, Envoy's tag rules for them (which
/// `envoy/envoy.yaml` carries, checked end to end in `e2e_accounts`), and
/// the stats table of docs/stats.md agree.
#[test]
fn stat_names_tag_rules_and_the_stats_page_agree() {
    use fpgen::redeem::Refusal;
    use fpgen::stats::{self, ENVOY_PREFIX, TAG_RULES};
    let customer = fixtures::id("100001");
    let tags = |name: &str| -> (String, Vec<(String, String)>) {
        let mut name = format!("{ENVOY_PREFIX}{name}");
        let mut found = Vec::new();
        for (tag, rule) in TAG_RULES {
            let re = regex::Regex::new(rule).unwrap();
            if let Some(c) = re.captures(&name.clone()) {
                found.push((tag.to_owned(), c[2].to_owned()));
                name = name.replacen(&c[1], "", 1);
            }
        }
        (name, found)
    };
    let tag = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(
        tags(&stats::tokens_minted(&customer)),
        (
            "wasmcustom.fpgen.tokens_minted".into(),
            vec![tag("fpgen_customer", "100001")]
        )
    );
    assert_eq!(
        tags(&stats::rejected(
            ErrorCode::ContentKeyFormat,
            Some(&customer)
        )),
        (
            "wasmcustom.fpgen.rejected".into(),
            vec![tag("fpgen_customer", "100001"), tag("fpgen_code", "2027")]
        )
    );
    assert_eq!(
        tags(&stats::rejected(ErrorCode::AuthenticatorMissing, None)),
        (
            "wasmcustom.fpgen.rejected".into(),
            vec![tag("fpgen_code", "2017")]
        )
    );
    assert_eq!(
        tags(&stats::redemptions_accepted(&customer)),
        (
            "wasmcustom.fpgen.redemptions_accepted".into(),
            vec![tag("fpgen_customer", "100001")]
        )
    );
    for reason in Refusal::ALL {
        assert_eq!(
            tags(&stats::redemptions_rejected(reason)),
            (
                "wasmcustom.fpgen.redemptions_rejected".into(),
                vec![tag("fpgen_reason", refusal_stat_name(reason))]
            )
        );
    }
    for failure in fpgen::fleet::Failure::ALL {
        assert_eq!(
            tags(&stats::fleet_budget_failed(failure)),
            (
                "wasmcustom.fpgen.fleet_budget_failed".into(),
                vec![tag("fpgen_reason", failure.stat_name())]
            )
        );
    }
    assert_eq!(
        tags(&stats::fleet_lease_tokens(&customer)),
        (
            "wasmcustom.fpgen.fleet_lease_tokens".into(),
            vec![tag("fpgen_customer", "100001")]
        )
    );
    assert_eq!(
        tags(&stats::build()),
        (
            "wasmcustom.fpgen.build".into(),
            vec![
                tag("fpgen_version", stats::VERSION),
                tag("fpgen_build", stats::BUILD)
            ]
        )
    );
    assert_eq!(
        tags("fpgen.build.1.2.0-rc.1.0123456789ab-canary"),
        (
            "wasmcustom.fpgen.build".into(),
            vec![
                tag("fpgen_version", "1.2.0-rc.1"),
                tag("fpgen_build", "0123456789ab-canary")
            ]
        )
    );
    // the stats table names each counter in the same shape
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/stats.md"))
        .unwrap()
        .replace("<id>", "100001")
        .replace("<code>", "2027");
    for name in [
        stats::tokens_minted(&customer),
        stats::rejected(ErrorCode::ContentKeyFormat, Some(&customer)),
        stats::rejected(ErrorCode::ContentKeyFormat, None),
        stats::redemptions_accepted(&customer),
        stats::fleet_lease_tokens(&customer),
        stats::FLEET_TOKEN_CALLS.to_owned(),
        stats::FLEET_LEASE_CALLS.to_owned(),
    ] {
        assert!(
            readme.contains(&format!("`{ENVOY_PREFIX}{name}`")),
            "{name} is not in docs/stats.md"
        );
    }
}

/// Key material where a name or another shape belongs is refused, and no
/// message says any of it (issue 20: serde's words quoted the string, and
/// "no KEK named" quoted the name).
#[test]
fn configuration_mistakes_never_echo_key_material() {
    for (what, json) in fixtures::key_mistakes() {
        let errors = match Config::from_json_with(json.as_bytes(), &|_: &str| None) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => e,
        };
        let text = errors.to_string();
        assert!(
            fixtures::leaked_hex(&json, &text).is_none(),
            "{what}: {text}"
        );
        assert!(
            text.starts_with("invalid fpgen configuration: "),
            "{what}: {text}"
        );
    }
    // the names an operator chose are still shown
    let json = fixtures::json_with(|v| v["customers"][0]["kek"] = "other-kek".into());
    let text = Config::from_json(json.as_bytes())
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        text.as_deref(),
        Some("invalid fpgen configuration: customers[0].kek: no KEK named \"other-kek\" in keks")
    );
}

/// Headers reach `service::admit` from `fpgen serve` as the filter gets
/// them from Envoy: repeated values joined with `,`, bytes that are not
/// UTF-8 replaced, so both hosts admit and refuse the same requests.
#[test]
fn serve_joins_headers_as_envoy_does() {
    use fpgen::service::{admit, joined_header, Admission};
    let form: &[u8] = b"application/x-www-form-urlencoded";
    assert_eq!(joined_header(std::iter::empty()), None);
    assert_eq!(
        joined_header([form]).as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let two = joined_header([form, b"application/json".as_slice()]);
    assert_eq!(
        two.as_deref(),
        Some("application/x-www-form-urlencoded,application/json")
    );
    let not_utf8 = joined_header([b"\xff".as_slice()]);
    assert_eq!(not_utf8.as_deref(), Some("\u{FFFD}"));
    for (value, expected) in [
        (Some(form.to_vec()), Admission::Body),
        (None, Admission::Body),
        (
            two.map(String::into_bytes),
            Admission::Refuse(ErrorCode::UnsupportedMediaType),
        ),
        (
            not_utf8.map(String::into_bytes),
            Admission::Refuse(ErrorCode::UnsupportedMediaType),
        ),
    ] {
        let header = |name: &str| match (&value, name) {
            (Some(v), "content-type") => joined_header([v.as_slice()]),
            _ => None,
        };
        assert_eq!(admit("POST", header, 8192), expected, "{value:?}");
    }
}

/// The token endpoint in steps (issue 21): everything fpgen decides on
/// its own, then the budget. A customer without a budget is answered in
/// the first step; one with a budget gets a sealed token that waits for the
/// host's answer, and each answer gives its own response. Nothing is asked
/// for a refused request.
#[test]
fn the_budget_is_a_step_of_its_own() {
    use fpgen::service::{begin, Budget, HostFailure, Question, Step};
    let host = FakeHost::default();
    let plain = fixtures::config();
    assert!(matches!(begin(&plain, &base(), b"", &host), Step::Answer(a) if a.outcome.minted()));
    let budgeted = account_config(|c| c["token_budget"] = 7.into());
    let refused = begin(
        &budgeted,
        &format!("{AUTH}&contentKey=00&iv={IV}"),
        b"",
        &host,
    );
    assert!(matches!(refused, Step::Answer(a) if a.outcome.code() == -2027));
    let pending = || match begin(&budgeted, &base(), b"", &host) {
        Step::Budget(p) => p,
        Step::Answer(a) => panic!("answered before the budget: {a:?}"),
    };
    let p = pending();
    assert_eq!(
        (p.customer().as_str(), p.question()),
        (fixtures::CUSTOMER, Question::Local(7))
    );
    let taken = answered(p.continue_with(Ok(Budget::Taken), &host));
    assert_eq!(taken.response.status, 200);
    assert!(taken.response.body.contains("ExpressPlayToken="));
    let spent = answered(pending().continue_with(Ok(Budget::Spent), &host));
    assert_eq!((spent.response.status, spent.outcome.code()), (429, -2019));
    assert!(spent
        .response
        .body
        .contains("the budget of 7 tokens is spent"));
    assert_eq!(
        spent.outcome.customer_id.as_ref().map(|c| c.as_str()),
        Some(fixtures::CUSTOMER)
    );
    assert!(!spent.response.body.contains("ExpressPlayToken"));
    let failed = answered(pending().continue_with(Err(HostFailure("budget store down")), &host));
    assert_eq!(
        (failed.response.status, failed.outcome.code()),
        (500, -9500)
    );
    assert!(failed.response.body.contains("budget store down"));
    // handle is the steps with the host's own budget between them
    let counted = FakeHost {
        budgets: Budgets::Counted,
        ..FakeHost::default()
    };
    let minted = service::handle(&budgeted, &base(), b"", &counted);
    assert!(minted.outcome.minted());
    assert_eq!(counted.taken(), 1);
}

/// The answer of a step that must be the last.
fn answered(step: fpgen::service::Step) -> Answer {
    match step {
        fpgen::service::Step::Answer(answer) => answer,
        fpgen::service::Step::Budget(p) => panic!("still waiting for {:?}", p.question()),
    }
}

/// A configuration whose first customer has a fleet budget (and, with
/// `local`, a token budget too), asked of a service in `mode`.
fn fleet_config(mode: &str, local: Option<u64>) -> Config {
    let mut v = config_json();
    v["rate_limit_service"] = serde_json::json!({"cluster": "ratelimit", "failure_mode": mode});
    v["customers"][0]["fleet_budget"] =
        serde_json::json!({"tokens": 100, "per": "day", "lease": 10});
    if let Some(budget) = local {
        v["customers"][0]["token_budget"] = budget.into();
    }
    Config::from_json(v.to_string().as_bytes()).unwrap()
}

/// With both budgets the local one is asked first, then the fleet's; a
/// local token taken for a request the fleet refuses is given back, so
/// neither budget is spent by a refused request. The failure mode decides
/// what a fleet budget that cannot be asked gives: -9503 (closed) or the
/// token (open).
#[test]
fn a_fleet_budget_is_asked_after_the_local_one() {
    use fpgen::fleet::Failure;
    use fpgen::service::{begin, Budget, Question, Step};
    let fleet = fpgen::config::FleetBudget {
        tokens: 100,
        per: fpgen::config::Period::Day,
        lease: 10,
    };
    let host = FakeHost {
        budgets: Budgets::Counted,
        ..FakeHost::default()
    };
    let closed = fleet_config("closed", Some(5));
    let ask = |config: &Config| match begin(config, &base(), b"", &host) {
        Step::Budget(p) => p,
        Step::Answer(a) => panic!("answered before the budget: {a:?}"),
    };
    let local_then = |config: &Config, fleet_answer| {
        let p = ask(config);
        assert_eq!(p.question(), Question::Local(5));
        let taken = host.take_from_budget(p.customer(), 5);
        let Step::Budget(p) = p.continue_with(taken, &host) else {
            panic!("the fleet budget was not asked");
        };
        assert_eq!(p.question(), Question::Fleet(fleet));
        answered(p.continue_with(Ok(fleet_answer), &host))
    };
    let minted = local_then(&closed, Budget::Taken);
    assert!(minted.outcome.minted());
    assert_eq!(host.taken(), 1);
    let spent = local_then(&closed, Budget::FleetSpent);
    assert_eq!((spent.response.status, spent.outcome.code()), (429, -2019));
    assert!(spent
        .response
        .body
        .contains("the fleet budget of 100 tokens per day is spent"));
    assert_eq!(host.taken(), 1, "the local token was not given back");
    for failure in Failure::ALL {
        let closed_answer = local_then(&closed, Budget::FleetUnavailable(failure));
        assert_eq!(
            (closed_answer.response.status, closed_answer.outcome.code()),
            (503, -9503)
        );
        assert!(closed_answer.response.body.contains(failure.message()));
        assert_eq!(host.taken(), 1, "{failure:?}: the local token was kept");
        let open = fleet_config("open", Some(5));
        let open_answer = local_then(&open, Budget::FleetUnavailable(failure));
        assert!(open_answer.outcome.minted(), "{failure:?}");
        assert_eq!(
            host.taken(),
            2,
            "{failure:?}: open mode counts the local token"
        );
        host.give_back_to_budget(&fixtures::id(fixtures::CUSTOMER));
    }
    // A request whose client left while the fleet was asked gives its
    // local token back.
    let p = ask(&closed);
    let taken = host.take_from_budget(p.customer(), 5);
    let Step::Budget(p) = p.continue_with(taken, &host) else {
        panic!("the fleet budget was not asked");
    };
    assert_eq!(host.taken(), 2);
    p.abandon(&host);
    assert_eq!(
        host.taken(),
        1,
        "the abandoned request kept its local token"
    );
    // A fleet budget alone is the only question.
    let only_fleet = fleet_config("closed", None);
    let p = ask(&only_fleet);
    assert_eq!(p.question(), Question::Fleet(fleet));
    assert!(answered(p.continue_with(Ok(Budget::Taken), &host))
        .outcome
        .minted());
    // A host that cannot ask fleet budgets fails such a request, never
    // mints it uncounted.
    let failed = service::handle(&only_fleet, &base(), b"", &host);
    assert_eq!(failed.outcome.code(), -9500);
    let asked = service::handle_with_fleet(&only_fleet, &base(), b"", &host, &|id, budget| {
        assert_eq!((id.as_str(), budget), (fixtures::CUSTOMER, fleet));
        Ok(Budget::FleetSpent)
    });
    assert_eq!(asked.outcome.code(), -2019);
}
