// Shared by the fuzz targets: a fixed configuration and a deterministic host.
use fpgen::config::Config;
use fpgen::service::Host;
use std::net::IpAddr;

pub const SEALING_KEY: &str = "a88deb5c6fc4b09434f9dab3a25f79cd7ddf67a025c179c9a9b6153dbf56f132";
pub const NOW: i64 = 1_800_000_000;

pub fn config() -> Config {
    let json = format!(
        r#"{{"environment": "test",
          "sealing_keys": [{{"id": "fz", "key": "{SEALING_KEY}"}}],
          "keks": {{"k": "000102030405060708090a0b0c0d0e0f"}},
          "customers": [{{"id": "100001", "environment": "test", "kek": "k",
            "authenticator_sha256": "3eb1bd439947eb762998e566ccc2e099c791118b2f40579cc4f7da2b5061b7f9",
            "key_store": {{"11112222333344445555666677778888": "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5"}},
            "allowed_networks": ["0.0.0.0/0"], "token_budget": 1000000000}}],
          "redemption": {{}}}}"#
    );
    match Config::from_json(json.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("fuzz configuration: {e}"),
    }
}

pub struct FuzzHost;

impl Host for FuzzHost {
    fn now(&self) -> i64 {
        NOW
    }
    fn fill_random(&self, buf: &mut [u8]) -> bool {
        buf.fill(0x5a);
        true
    }
    fn client_address(&self) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, 1]))
    }
    fn take_from_budget(&self, _: &str, _: u64) -> bool {
        true
    }
}
