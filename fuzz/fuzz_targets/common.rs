#![allow(dead_code, unused_imports)]
// Shared by the fuzz targets: the fixtures' configuration with account
// controls switched on (so the fuzzer reaches them) and a deterministic host.
use fpgen::config::Config;
use fpgen_fixtures::{self as fixtures, FakeHost};

pub use fpgen_fixtures::{NOW, SEALING_KEY_HEX as SEALING_KEY};

pub fn config() -> Config {
    fixtures::config_with(|v| {
        v["customers"][0]["allowed_networks"] = serde_json::json!(["0.0.0.0/0"]);
        v["customers"][0]["token_budget"] = 1_000_000_000u64.into();
    })
}

pub fn host() -> FakeHost {
    FakeHost::with_client("192.0.2.1")
}
