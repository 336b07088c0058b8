//! Properties of the core over generated requests: every valid request
//! round-trips through mint and open with identical values; any single
//! flipped bit invalidates a token; percent-encoding variants of a request
//! mint the same token.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use base64::Engine as _;
use fpgen::config::Config;
use fpgen::ids::Kid;
use fpgen::licence::{Environment, LicenceData};
use fpgen::service;
use fpgen_fixtures::{self as fixtures, FakeHost, AUTHENTICATOR, NOW};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Request {
    content_key: [u8; 16],
    iv: [u8; 16],
    kid: Option<String>,
    rental_duration: u32,
    persistent: bool,
    cookie: String,
    extensions: Vec<(String, Vec<u8>)>,
    lifetime: u32,
}

fn request() -> impl Strategy<Value = Request> {
    let kid = prop_oneof![
        Just(None),
        any::<[u8; 16]>().prop_map(|b| Some(hex::encode(b))),
        "[^\\p{Cc}]{1,64}".prop_map(|n| Some(format!("^{n}"))),
    ];
    // a type has no comma: the payload starts after the first one
    let ext = (
        "[!-+\\--~]{4}",
        proptest::collection::vec(any::<u8>(), 1..64),
    );
    (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        kid,
        any::<u32>(),
        any::<bool>(),
        "[^\\p{Cc}\u{FFFD}]{0,32}",
        proptest::collection::vec(ext, 0..=16),
        1u32..=2_592_000,
    )
        .prop_map(
            |(content_key, iv, kid, rental_duration, persistent, cookie, extensions, lifetime)| {
                Request {
                    content_key,
                    iv,
                    kid,
                    rental_duration,
                    persistent,
                    cookie,
                    extensions,
                    lifetime,
                }
            },
        )
}

fn query(r: &Request) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("customerAuthenticator", AUTHENTICATOR)
        .append_pair("contentKey", &hex::encode(r.content_key))
        .append_pair("iv", &hex::encode(r.iv))
        .append_pair("rentalDuration", &r.rental_duration.to_string())
        .append_pair(
            "generalFlags",
            if r.persistent { "00000001" } else { "00000000" },
        )
        .append_pair("cookie", &r.cookie)
        .append_pair("expirationTime", &format!("+{}", r.lifetime));
    if let Some(kid) = &r.kid {
        q.append_pair("kid", kid);
    }
    for (kind, payload) in &r.extensions {
        let b64 = base64::engine::general_purpose::STANDARD.encode(payload);
        q.append_pair("fpExtension", &format!("{kind},{b64}"));
    }
    q.finish()
}

fn mint(config: &Config, query: &str) -> String {
    // A deterministic host: the same nonce for every token.
    let response = service::handle(config, query, b"", &FakeHost::default()).response;
    assert_eq!(response.status, 200, "{query}: {}", response.body);
    fixtures::token_of_url(&response.body)
}

fn config() -> Config {
    fixtures::config()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_requests_round_trip(r in request()) {
        let config = config();
        let token = mint(&config, &query(&r));
        let d: LicenceData = fpgen::token::open(&token, config.sealing_keys(), Environment::Test, NOW).unwrap().into_fairplay().unwrap();
        prop_assert_eq!(d.content_key.expose(), &r.content_key);
        prop_assert_eq!(d.iv, r.iv);
        prop_assert_eq!(d.kid.clone(), r.kid.as_deref().map(|k| Kid::parse(k).unwrap()));
        prop_assert_eq!(d.rental_duration, r.rental_duration);
        prop_assert_eq!(d.general_flags, u32::from(r.persistent));
        prop_assert_eq!(d.cookie.clone(), Some(r.cookie.clone()).filter(|c| !c.is_empty()));
        prop_assert_eq!(d.expires_at, NOW + i64::from(r.lifetime));
        prop_assert_eq!((d.customer_id.as_str(), d.issued_at), ("100001", NOW));
        let got: Vec<(String, Vec<u8>)> = d.extensions.iter().map(|e| (e.kind_str().to_owned(), e.payload.clone())).collect();
        prop_assert_eq!(got, r.extensions.clone());
    }

    #[test]
    fn any_flipped_bit_is_rejected(r in request(), bit in any::<proptest::sample::Index>()) {
        let config = config();
        let token = mint(&config, &query(&r));
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&token).unwrap();
        let i = bit.index(raw.len() * 8);
        raw[i / 8] ^= 1 << (i % 8);
        let bad = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        prop_assert!(fpgen::token::open(&bad, config.sealing_keys(), Environment::Test, NOW).is_err());
    }

    #[test]
    fn percent_encoding_variants_mint_the_same_token(r in request(), mask in proptest::collection::vec(any::<bool>(), 4096)) {
        let config = config();
        let plain = query(&r);
        // percent-encode an arbitrary subset of the bytes of every value
        // (unreserved ones included), and write spaces as %20 or +
        let mut variant = String::new();
        for (n, pair) in plain.split('&').enumerate() {
            if n > 0 {
                variant.push('&');
            }
            let (name, _) = pair.split_once('=').unwrap();
            variant.push_str(name);
            variant.push('=');
            let decoded: Vec<u8> = form_urlencoded::parse(pair.as_bytes()).next().unwrap().1.into_owned().into_bytes();
            for (i, b) in decoded.iter().enumerate() {
                let flip = mask[(n * 61 + i) % mask.len()];
                match *b {
                    b' ' if flip => variant.push_str("%20"),
                    b' ' => variant.push('+'),
                    b if flip || !(b.is_ascii_alphanumeric() || b"-._*".contains(&b)) => variant.push_str(&format!("%{b:02X}")),
                    b => variant.push(b as char),
                }
            }
        }
        prop_assert_eq!(mint(&config, &plain), mint(&config, &variant));
    }
}
