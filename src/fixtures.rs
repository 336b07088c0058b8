//! Test fixtures, shared by the unit tests, the integration and end-to-end
//! tests, the property tests, the benchmarks and the fuzz targets: the demo
//! configuration, its keys and authenticator, a request, and a configurable
//! fake [`Host`]. Compiled for tests and with the `fixtures` feature only
//! (never into the module).
// Test code: a fixture that cannot be built fails the test that asked for it.
#![allow(clippy::panic)]

use crate::config::Config;
use crate::ids::CustomerId;
use crate::service::{Budget, Host, HostFailure};
use std::cell::Cell;
use std::net::IpAddr;

/// The demo's sealing key id and key (also in `envoy/envoy.yaml`).
pub const SEALING_KEY_ID: &str = "demo-2026-11";
pub const SEALING_KEY_HEX: &str =
    "a88deb5c6fc4b09434f9dab3a25f79cd7ddf67a025c179c9a9b6153dbf56f132";
/// The demo customer and its authenticator; the digest is SHA-256 of the
/// part after the comma.
pub const CUSTOMER: &str = "100001";
pub const AUTHENTICATOR: &str = "100001,0123456789abcdef0123456789abcdef";
pub const AUTHENTICATOR_SHA256: &str =
    "3eb1bd439947eb762998e566ccc2e099c791118b2f40579cc4f7da2b5061b7f9";
/// The demo KEK (RFC 3394's 128-bit KEK) and its name in `keks`.
pub const KEK_NAME: &str = "demo-kek";
pub const KEK_HEX: &str = "000102030405060708090a0b0c0d0e0f";
/// RFC 3394 section 4.1: [`EK_CONTENT_KEY`] wrapped under [`KEK_HEX`]; the
/// demo key store holds it under [`STORED_KID`].
pub const EK: &str = "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5";
pub const EK_CONTENT_KEY: &str = "00112233445566778899aabbccddeeff";
pub const STORED_KID: &str = "11112222333344445555666677778888";
/// A content key and IV for requests.
pub const CONTENT_KEY: &str = "000102030405060708090a0b0c0d0e0f";
pub const IV: &str = "0f0e0d0c0b0a09080706050403020100";
/// A fixed clock: 2027-01-15T08:00:00Z.
pub const NOW: i64 = 1_800_000_000;

/// The filter configuration of the demo, `envoy/envoy.yaml` (a test checks
/// that the two agree). Test environment; customer [`CUSTOMER`] with
/// [`AUTHENTICATOR`], a KEK and a key store; the redemption gate on.
pub const DEMO_CONFIG: &str = r#"{
  "environment": "test",
  "redeem_url": {"scheme": "http", "host": "127.0.0.1", "port": 10000, "path": "/hms/fp/rights/"},
  "sealing_keys": [{"id": "demo-2026-11", "key": "a88deb5c6fc4b09434f9dab3a25f79cd7ddf67a025c179c9a9b6153dbf56f132"}],
  "active_sealing_key": "demo-2026-11",
  "keks": {"demo-kek": "000102030405060708090a0b0c0d0e0f"},
  "customers": [{
    "id": "100001",
    "environment": "test",
    "authenticator_sha256": "3eb1bd439947eb762998e566ccc2e099c791118b2f40579cc4f7da2b5061b7f9",
    "kek": "demo-kek",
    "key_store": {"11112222333344445555666677778888": "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5"}
  }],
  "max_body_bytes": 8192,
  "redemption": {"path_prefix": "/hms/fp/rights/", "header_prefix": "x-fpgen-"}
}"#;

/// [`DEMO_CONFIG`] as a JSON value, to edit.
pub fn demo_json() -> serde_json::Value {
    match serde_json::from_str(DEMO_CONFIG) {
        Ok(v) => v,
        Err(e) => panic!("DEMO_CONFIG: {e}"),
    }
}

/// [`DEMO_CONFIG`] after `edit`, as JSON text.
pub fn json_with(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v = demo_json();
    edit(&mut v);
    v.to_string()
}

/// A customer entry with the demo authenticator, for `customers`.
pub fn customer(id: &str, environment: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "environment": environment,
        "authenticator_sha256": AUTHENTICATOR_SHA256})
}

/// The demo configuration, validated.
pub fn config() -> Config {
    config_with(|_| {})
}

/// The demo configuration after `edit`, validated.
pub fn config_with(edit: impl FnOnce(&mut serde_json::Value)) -> Config {
    match Config::from_json(json_with(edit).as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("fixture configuration: {e}"),
    }
}

/// A valid minimal query: the demo authenticator, [`CONTENT_KEY`], [`IV`],
/// then `extra` (`&name=value…`, or empty).
pub fn query(extra: &str) -> String {
    format!("customerAuthenticator={AUTHENTICATOR}&contentKey={CONTENT_KEY}&iv={IV}{extra}")
}

/// What [`FakeHost::fill_random`] gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Random {
    /// Every byte this value: the same nonce every time.
    Fixed(u8),
    /// Each call fills with the next value of a counter (1, 2, …).
    Counter,
    /// The host has no randomness.
    Fails,
}

/// How [`FakeHost`] keeps token budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budgets {
    /// Every take succeeds (no budget is counted).
    Unlimited,
    /// Takes are counted, like Envoy's shared counter (one for all customers).
    Counted,
    /// The host fails on every take.
    Fails,
}

/// A deterministic host with a fixed clock.
#[derive(Debug)]
pub struct FakeHost {
    pub now: i64,
    pub client: Option<IpAddr>,
    pub random: Random,
    pub budgets: Budgets,
    /// Tokens taken from budgets so far.
    pub taken: Cell<u64>,
    /// Calls of `fill_random` so far (the counter of [`Random::Counter`]).
    pub fills: Cell<u8>,
}

impl Default for FakeHost {
    fn default() -> Self {
        Self {
            now: NOW,
            client: None,
            random: Random::Fixed(0x42),
            budgets: Budgets::Unlimited,
            taken: Cell::new(0),
            fills: Cell::new(0),
        }
    }
}

impl FakeHost {
    /// A host whose client address is `ip` (e.g. `"192.0.2.10"`).
    pub fn with_client(ip: &str) -> Self {
        Self {
            client: ip.parse().ok(),
            ..Self::default()
        }
    }

    /// How many tokens were taken from budgets.
    pub fn taken(&self) -> u64 {
        self.taken.get()
    }
}

impl Host for FakeHost {
    fn now(&self) -> i64 {
        self.now
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), HostFailure> {
        match self.random {
            Random::Fixed(b) => buf.fill(b),
            Random::Counter => {
                self.fills.set(self.fills.get().wrapping_add(1));
                buf.fill(self.fills.get());
            }
            Random::Fails => return Err(HostFailure("no randomness (fake host)")),
        }
        Ok(())
    }

    fn client_address(&self) -> Option<IpAddr> {
        self.client
    }

    fn take_from_budget(&self, _: &CustomerId, budget: u64) -> Result<Budget, HostFailure> {
        match self.budgets {
            Budgets::Unlimited => Ok(Budget::Taken),
            Budgets::Fails => Err(HostFailure("shared data unavailable (fake host)")),
            Budgets::Counted if self.taken.get() >= budget => Ok(Budget::Spent),
            Budgets::Counted => {
                self.taken.set(self.taken.get() + 1);
                Ok(Budget::Taken)
            }
        }
    }
}

/// Licence data for customer [`CUSTOMER`] with [`CONTENT_KEY`] and [`IV`]
/// and nothing else, valid from `issued_at` to `expires_at`.
pub fn licence(
    environment: crate::licence::Environment,
    issued_at: i64,
    expires_at: i64,
) -> crate::licence::LicenceData {
    let hex16 = |text: &str| {
        let mut out = [0u8; 16];
        if let Err(e) = hex::decode_to_slice(text, &mut out) {
            panic!("fixture hex {text}: {e}");
        }
        out
    };
    crate::licence::LicenceData {
        environment,
        customer_id: id(CUSTOMER),
        issued_at,
        expires_at,
        content_key: crate::secret::ContentKey::new(hex16(CONTENT_KEY)),
        iv: hex16(IV),
        kid: None,
        rental_duration: 0,
        general_flags: 0,
        extensions: Vec::new(),
        cookie: None,
    }
}

/// A customer id that is known to be valid.
pub fn id(text: &str) -> CustomerId {
    match CustomerId::parse(text) {
        Ok(id) => id,
        Err(e) => panic!("fixture customer id {text:?}: {e}"),
    }
}

/// A token sealed with the library (not minted through the API), for
/// times, environments and keys that a mint never produces: [`licence`]
/// sealed under `key_hex` named `key_id`, with a fixed nonce.
pub fn sealed_token(
    key_id: &str,
    key_hex: &str,
    environment: crate::licence::Environment,
    issued_at: i64,
    expires_at: i64,
) -> String {
    use crate::ids::KeyId;
    use crate::secret::SealingKeyBytes;
    use crate::token::SealingKey;
    let (Ok(id), Some(key)) = (KeyId::parse(key_id), SealingKeyBytes::from_hex(key_hex)) else {
        panic!("fixture sealing key {key_id:?}");
    };
    let data = licence(environment, issued_at, expires_at);
    match crate::token::seal(&data, &SealingKey { id, key }, &[9; 24]) {
        Ok(token) => token,
        Err(e) => panic!("sealing a fixture token: {e}"),
    }
}
