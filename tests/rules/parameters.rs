//! Every parameter rule of the API and its code, and what a minted token
//! carries (docs/api.md).

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;

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
