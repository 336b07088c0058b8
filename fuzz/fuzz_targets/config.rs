//! Arbitrary bytes as the filter configuration.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(errors) = fpgen::config::Config::from_json(data) {
        assert!(!errors.0.is_empty(), "an error without a problem");
        let _ = errors.to_string();
    }
});
