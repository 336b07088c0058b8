//! Arbitrary query strings and POST bodies through PlayReady's endpoint:
//! parse (indexed keys included), validate, seal, render. The first byte
//! chooses where the input splits into query and body. A minted token must
//! come in the JSON answer, open as PlayReady within the format's limits,
//! and redeem only at PlayReady's gate (from the query and from a
//! challenge's CustomData alike).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[path = "common.rs"]
mod common;

use fpgen::licence::{Drm, Licence, Rights, CERT_SECURITY_LEVELS};

fuzz_target!(|data: &[u8]| {
    static CONFIG: OnceLock<fpgen::config::Config> = OnceLock::new();
    let config = CONFIG.get_or_init(common::config);
    let Some((&first, rest)) = data.split_first() else { return };
    let cut = usize::from(first) * rest.len() / 256;
    let (query, body) = rest.split_at(cut);
    let query = String::from_utf8_lossy(query);
    let answer = fpgen::service::handle_for(config, Drm::PlayReady, &query, body, &common::host());
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
    assert_eq!(response.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_str(&response.body).expect("JSON");
    assert_eq!(v.as_object().map(|o| o.len()), Some(2), "{v}");
    let url = v["licenseAcquisitionUrl"].as_str().expect("URL");
    assert!(url.ends_with("/playready/RightsManager.asmx"), "{url}");
    let token = v["token"].as_str().expect("token");
    assert!(token.len() <= fpgen::token::MAX_TOKEN_CHARS);
    let opened = fpgen::token::open(token, config.sealing_keys(), fpgen::licence::Environment::Test, common::NOW)
        .expect("a minted token opens");
    let Licence::PlayReady(licence) = opened.into_licence() else {
        panic!("a PlayReady request minted a token of another DRM")
    };
    assert!((1..=fpgen::token::MAX_WIDEVINE_KEYS).contains(&licence.keys.len()));
    for key in &licence.keys {
        assert!(key.min_cert_security_level.is_none_or(|l| CERT_SECURITY_LEVELS.contains(&l)));
    }
    if let Rights::Rental { period_end, .. } = licence.rights {
        assert!(period_end > common::NOW && licence.persistent());
    }
    for (_, level) in licence.output_levels.named() {
        assert!(level <= 999);
    }
    assert!(licence.expires_at > common::NOW && licence.expires_at <= common::NOW + 30 * 86400);
    if let Some(gate) = config.redemption() {
        for drm in Drm::ALL {
            let path = format!("{}?ExpressPlayToken={token}", drm.rights_path());
            let redeemed = fpgen::redeem::redeem(config, gate, drm, &path, common::NOW);
            assert_eq!(redeemed.is_ok(), drm == Drm::PlayReady, "{drm:?}");
        }
        let challenge = format!("<LA><CustomData>{token}</CustomData></LA>");
        let redeemed = fpgen::redeem::redeem_challenge(
            config,
            gate,
            Drm::PlayReady,
            Drm::PlayReady.rights_path(),
            Some(challenge.as_bytes()),
            common::NOW,
        );
        assert!(redeemed.is_ok(), "{redeemed:?}");
    }
});
