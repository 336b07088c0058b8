//! Arbitrary bytes as a token (text) and as a token's raw bytes (encoded),
//! opened against a real key ring; also through the redemption gate.
#![no_main]
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    static CONFIG: OnceLock<fpgen::config::Config> = OnceLock::new();
    let config = CONFIG.get_or_init(common::config);
    let text = String::from_utf8_lossy(data);
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data);
    for token in [text.as_ref(), encoded.as_str()] {
        if let Ok(t) = fpgen::token::open(token, config.sealing_keys(), fpgen::licence::Environment::Test, common::NOW) {
            // only a token sealed with the key can open, and then it is in time
            assert!(t.licence().expires_at() > common::NOW);
        }
        if let Ok(untrusted) = fpgen::token::UntrustedToken::parse(token) {
            let _ = untrusted.untrusted_key_id();
            if let Ok(verified) = untrusted.verify(config.sealing_keys()) {
                let _ = verified.check(fpgen::licence::Environment::Test, common::NOW);
            }
        }
        if let Some(gate) = &config.redemption() {
            let path = format!("/hms/fp/rights/?ExpressPlayToken={token}");
            if let Err(refusal) = fpgen::redeem::redeem(config, gate, fpgen::licence::Drm::FairPlay, &path, common::NOW) {
                assert_eq!(refusal.response(gate.error_format).status, 403);
            }
        }
    }
});
