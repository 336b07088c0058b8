//! The redemption gate's whole decision on arbitrary request targets and
//! header names: which paths it applies to, the path rules, token parsing
//! (with a genuine token spliced in, so the fuzzer gets past it), the
//! stripped path it sends upstream, and reserved-header matching. The first
//! byte chooses where a genuine token goes; after the first newline come
//! header names, one per line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[path = "common.rs"]
mod common;

/// `name` as a CGI/WSGI server reads it: letter case and `_`/`-` alike.
fn fold(name: &[u8]) -> Vec<u8> {
    name.iter()
        .map(|b| if *b == b'_' { b'-' } else { b.to_ascii_lowercase() })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    static STATE: OnceLock<(fpgen::config::Config, String)> = OnceLock::new();
    let (config, token) = STATE.get_or_init(|| {
        let config = common::config();
        let answer = fpgen::service::handle(&config, &fpgen_fixtures::query(""), b"", &common::host());
        let token = fpgen_fixtures::token_of_url(&answer.response.body);
        (config, token)
    });
    let Some(gate) = &config.redemption() else { return };
    let Some((&first, rest)) = data.split_first() else { return };
    let (target, names) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let target = String::from_utf8_lossy(target);
    // a genuine token at a place the first byte chooses (on a char boundary)
    let mut cut = usize::from(first) * target.len() / 256;
    while !target.is_char_boundary(cut) {
        cut -= 1;
    }
    let path = if first & 1 == 0 {
        target.into_owned()
    } else {
        format!("{}{token}{}", &target[..cut], &target[cut..])
    };
    if let Some(drm) = fpgen::redeem::drm_of(gate, &path) {
        match fpgen::redeem::redeem(config, gate, drm, &path, common::NOW) {
            Ok(redeemed) => {
                // only a safe path with exactly one genuine token passes
                assert!(fpgen::redeem::is_safe_path(&path), "unsafe path passed: {path:?}");
                let query = path.split_once('?').map_or("", |(_, q)| q);
                assert!(fpgen::redeem::token_of(query).is_some());
                for (name, _) in redeemed.headers.iter() {
                    assert!(fold(name.as_bytes()).starts_with(&fold(gate.header_prefix.as_bytes())));
                }
                // what goes upstream holds no spelling of the token any more
                if let Some(new_path) = &redeemed.new_path {
                    let new_query = new_path.split_once('?').map_or("", |(_, q)| q);
                    assert!(fpgen::redeem::token_of(new_query).is_none(), "{new_path:?}");
                    assert!(!new_path.contains(token.as_str()), "token left in {new_path:?}");
                }
            }
            Err(refusal) => {
                let response = refusal.response(gate.error_format);
                assert_eq!(response.status, 403);
                assert!(!response.body.contains(token.as_str()));
            }
        }
    }
    for name in names.split(|&b| b == b'\n') {
        let name = String::from_utf8_lossy(name);
        let reserved = fpgen::redeem::is_reserved_header(&gate.header_prefix, &name);
        let expected = fold(name.as_bytes()).starts_with(&fold(gate.header_prefix.as_bytes()));
        assert_eq!(reserved, expected, "{name:?}");
    }
});
