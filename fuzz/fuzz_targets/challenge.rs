//! Arbitrary bodies through the PlayReady gate's challenge reader, alone
//! and at the gate: it never panics, and what it reads as the token is
//! trimmed and never empty. At the gate, any body
//! with the query's real token either redeems (to that token's licence) or
//! is refused; it never redeems another token's.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[path = "common.rs"]
mod common;

use fpgen::challenge::custom_data;
use fpgen::licence::Drm;

fuzz_target!(|data: &[u8]| {
    static STATE: OnceLock<(fpgen::config::Config, String)> = OnceLock::new();
    let (config, token) = STATE.get_or_init(|| {
        let config = fpgen_fixtures::config();
        let query = "customerAuthenticator=100001,0123456789abcdef0123456789abcdef\
                     &kid=0123456789abcdef0123456789abcdef&contentKey=000102030405060708090a0b0c0d0e0f\
                     &rightsType=BuyToOwn&analogVideoOPL=1&compressedDigitalAudioOPL=1\
                     &compressedDigitalVideoOPL=1&uncompressedDigitalAudioOPL=1&uncompressedDigitalVideoOPL=1";
        let minting = fpgen::service::mint_url_for(&config, Drm::PlayReady, query, b"", &common::host());
        let token = minting.url_and_token().expect("the fixture mints").1.to_owned();
        (config, token)
    });
    let read = custom_data(data);
    if let Ok(Some(found)) = &read {
        assert!(!found.is_empty());
        let xml_white_space = ['\t', '\n', '\r', ' '];
        assert_eq!(found.as_str(), found.trim_matches(xml_white_space), "untrimmed");
    }
    let Some(gate) = config.redemption() else { return };
    let path = format!("{}?ExpressPlayToken={token}", Drm::PlayReady.rights_path());
    let redeemed =
        fpgen::redeem::redeem_challenge(config, gate, Drm::PlayReady, &path, Some(data), common::NOW);
    match (&read, redeemed) {
        (Err(_), Ok(_)) if !data.is_empty() => panic!("an unreadable challenge passed"),
        (Ok(Some(found)), Ok(_)) => assert_eq!(found, token, "another token passed"),
        _ => {}
    }
});
