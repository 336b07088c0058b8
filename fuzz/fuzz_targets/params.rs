//! Arbitrary query strings and POST bodies through parse, validate, mint and
//! render. The first byte chooses where the input splits into query and body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    static CONFIG: OnceLock<fpgen::config::Config> = OnceLock::new();
    let config = CONFIG.get_or_init(common::config);
    let Some((&first, rest)) = data.split_first() else { return };
    let cut = usize::from(first) * rest.len() / 256;
    let (query, body) = rest.split_at(cut);
    let query = String::from_utf8_lossy(query);
    let answer = fpgen::service::handle(config, &query, body, &common::host());
    let (response, outcome) = (answer.response, answer.outcome);
    assert!(
        [200, 400, 401, 403, 413, 415, 429, 500].contains(&response.status),
        "undocumented status {}",
        response.status
    );
    assert!(!response.body.contains(common::SEALING_KEY), "sealing key in a response");
    if response.status == 200 {
        assert!(outcome.minted());
        let url = response.body.strip_suffix("\r\n").expect("CRLF");
        let token = url.split_once("ExpressPlayToken=").expect("token").1;
        let data = fpgen::token::open(token, config.sealing_keys(), fpgen::licence::Environment::Test, common::NOW)
            .expect("a minted token opens")
            .into_fairplay()
            .expect("a FairPlay token");
        assert!(data.expires_at > common::NOW && data.expires_at <= common::NOW + 30 * 86400);
    } else {
        assert_eq!(outcome.code(), outcome.error.map_or(0, |c| c.code()));
        assert!(!outcome.minted());
    }
    let _ = outcome.log_fields();
});
