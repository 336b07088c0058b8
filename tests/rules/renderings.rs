//! No secret in any rendering (issue 30): the `Debug` of every value that
//! holds one (the configuration, a customer, a minted answer, a redeemed
//! token, the gate's decision) shows neither the content key, the KEK,
//! the authenticator's digest, the wrapped keys, the sealing key nor the
//! licence URL (a bearer token), in hex, as a byte array or in Base64.

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;

use fpgen_fixtures as fixtures;

/// The secrets of the demo configuration and of one request, as hex.
fn secrets() -> Vec<(&'static str, String)> {
    vec![
        ("content key", fixtures::CONTENT_KEY.to_owned()),
        ("KEK", fixtures::KEK_HEX.to_owned()),
        ("unwrapped stored key", fixtures::EK_CONTENT_KEY.to_owned()),
        ("wrapped key", fixtures::EK.to_owned()),
        ("sealing key", fixtures::SEALING_KEY_HEX.to_owned()),
        (
            "authenticator digest",
            fixtures::AUTHENTICATOR_SHA256.to_owned(),
        ),
    ]
}

#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    for (name, hex) in secrets() {
        assert!(
            fixtures::leaked_secret(&hex, text).is_none(),
            "{what} shows the {name}: {text}"
        );
    }
}

#[test]
fn debug_shows_no_secret() {
    let config = fixtures::config();
    assert_no_secret("Config", &format!("{config:?}"));
    for customer in config.customers() {
        assert_no_secret("Customer", &format!("{customer:?}"));
    }
    let host = host();
    let minting = service::mint_url(&config, &fixtures::query(""), b"", &host);
    let url = minting.result.clone().unwrap();
    let token = fixtures::token_of_url(&url);
    let shown = format!("{minting:?}");
    assert_no_secret("Minting", &shown);
    assert!(
        !shown.contains(&token[..40]),
        "Minting shows the token: {shown}"
    );
    let answer = minting.into_answer();
    let shown = format!("{answer:?}");
    assert_no_secret("Answer", &shown);
    assert!(
        !shown.contains(&token[..40]),
        "Answer shows the token: {shown}"
    );
    // a redeemed token: its headers carry the content key
    let gate = config.redemption().unwrap();
    let path = format!("{}?ExpressPlayToken={token}", gate.path_prefix);
    let redeemed = fpgen::redeem::redeem(
        &config,
        gate,
        fpgen::licence::Drm::FairPlay,
        &path,
        fixtures::NOW,
    )
    .unwrap();
    assert!(redeemed
        .headers
        .iter()
        .any(|(_, v)| v == fixtures::CONTENT_KEY));
    assert_no_secret("Redeemed", &format!("{redeemed:?}"));
    // and the key store's content key, minted by kid
    let by_kid = service::mint_url(
        &config,
        &format!(
            "customerAuthenticator={}&kid={}&iv={}",
            fixtures::AUTHENTICATOR,
            fixtures::STORED_KID,
            fixtures::IV
        ),
        b"",
        &host,
    );
    assert!(by_kid.result.is_ok(), "{by_kid:?}");
    assert_no_secret("Minting by kid", &format!("{by_kid:?}"));
}

/// The guard itself finds each rendering: hex in any case, a byte array,
/// Base64 (so the test above cannot pass for looking in the wrong form).
#[test]
fn the_guard_finds_every_rendering() {
    use base64::Engine as _;
    let hex = fixtures::CONTENT_KEY;
    let bytes = hex::decode(hex).unwrap();
    for shown in [
        hex.to_ascii_uppercase(),
        format!("{bytes:?}"),
        base64::engine::general_purpose::STANDARD.encode(&bytes),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes),
    ] {
        assert!(
            fixtures::leaked_secret(hex, &format!("x {shown} y")).is_some(),
            "{shown}"
        );
    }
    assert!(fixtures::leaked_secret(hex, "nothing here").is_none());
}
