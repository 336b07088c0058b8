//! Arbitrary query strings and POST bodies through Widevine's endpoint:
//! parse (indexed keys included), validate, seal, render. The first byte
//! chooses where the input splits into query and body. A minted token must
//! open as Widevine, within the format's limits, and redeem only at
//! Widevine's gate.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[path = "common.rs"]
mod common;

use fpgen::licence::{Drm, Licence};

fuzz_target!(|data: &[u8]| {
    static CONFIG: OnceLock<fpgen::config::Config> = OnceLock::new();
    let config = CONFIG.get_or_init(common::config);
    let Some((&first, rest)) = data.split_first() else { return };
    let cut = usize::from(first) * rest.len() / 256;
    let (query, body) = rest.split_at(cut);
    let query = String::from_utf8_lossy(query);
    let answer = fpgen::service::handle_for(config, Drm::Widevine, &query, body, &common::host());
    let (response, outcome) = (answer.response, answer.outcome);
    assert!(
        [200, 400, 401, 403, 413, 415, 429, 500].contains(&response.status),
        "undocumented status {}",
        response.status
    );
    assert!(!response.body.contains(common::SEALING_KEY), "sealing key in a response");
    if response.status != 200 {
        assert!(!outcome.minted());
        return;
    }
    assert!(outcome.minted());
    let url = response.body.strip_suffix("\r\n").expect("CRLF");
    assert!(url.contains("/hms/wv/rights/?ExpressPlayToken="), "{url}");
    let token = url.split_once("ExpressPlayToken=").expect("token").1;
    assert!(token.len() <= fpgen::token::MAX_TOKEN_CHARS);
    let opened = fpgen::token::open(token, config.sealing_keys(), fpgen::licence::Environment::Test, common::NOW)
        .expect("a minted token opens");
    let Licence::Widevine(licence) = opened.into_licence() else {
        panic!("a Widevine request minted a token of another DRM")
    };
    assert!((1..=fpgen::token::MAX_WIDEVINE_KEYS).contains(&licence.keys.len()));
    for key in &licence.keys {
        assert!((1..=5).contains(&key.security_level) && key.hdcp_output_control <= 5);
    }
    assert!(licence.expires_at > common::NOW && licence.expires_at <= common::NOW + 30 * 86400);
    if let Some(gate) = config.redemption() {
        for drm in [Drm::FairPlay, Drm::Widevine] {
            let path = format!("{}?ExpressPlayToken={token}", drm.rights_path());
            let redeemed = fpgen::redeem::redeem(config, gate, drm, &path, common::NOW);
            assert_eq!(redeemed.is_ok(), drm == Drm::Widevine, "{drm:?}");
        }
    }
});
