//! The filter configuration: JSON in the filter's `configuration` field,
//! parsed and validated once into typed values. Every error names its field.

use crate::licence::{Environment, Kid};
use crate::render::ErrorFormat;
use crate::secret::{Kek, SealingKeyBytes};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Default cap on a POST body, in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024;
/// The largest cap an operator may configure.
pub const MAX_MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_KEY_ID_LEN: usize = 32;
const MAX_CUSTOMER_ID_LEN: usize = 64;

/// A configuration problem: the field (JSON path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid fpgen configuration: {}: {}",
            self.field, self.problem
        )
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The first problem (there is always one).
    pub fn first(&self) -> Option<&ConfigError> {
        self.0.first()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---- the JSON shape -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    environment: Environment,
    #[serde(default)]
    redeem_url: RawRedeemUrl,
    sealing_keys: Vec<RawSealingKey>,
    active_sealing_key: Option<String>,
    #[serde(default)]
    keks: BTreeMap<String, String>,
    customers: Vec<RawCustomer>,
    max_body_bytes: Option<usize>,
    redemption: Option<RawRedemption>,
    #[serde(default)]
    client_address: ClientAddressPolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedemption {
    enabled: Option<bool>,
    path_prefix: Option<String>,
    header_prefix: Option<String>,
    strip_token: Option<bool>,
    error_format: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRedeemUrl {
    scheme: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSealingKey {
    id: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomer {
    id: String,
    environment: Environment,
    authenticator_sha256: String,
    kek: Option<String>,
    #[serde(default)]
    key_store: BTreeMap<String, String>,
    enabled: Option<bool>,
    fairplay_authorized: Option<bool>,
    fairplay_enabled: Option<bool>,
    allowed_networks: Option<Vec<String>>,
    token_budget: Option<u64>,
    tokens_not_before: Option<String>,
}

/// Where the client address for `allowed_networks` comes from.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientAddressPolicy {
    /// Read the address from `x-forwarded-for` instead of the connection.
    #[serde(default)]
    pub use_x_forwarded_for: bool,
    /// How many trusted proxies stand in front of Envoy: the client is the
    /// `x-forwarded-for` entry this many places left of the last one (the
    /// peer that Envoy appended).
    #[serde(default)]
    pub trusted_hops: u32,
}

// ---- the validated form ---------------------------------------------------

/// The validated configuration, shared read-only by every request.
#[derive(Debug)]
pub struct Config {
    pub environment: Environment,
    pub redeem_url: RedeemUrl,
    pub sealing_keys: KeyRing,
    pub customers: HashMap<String, Customer>,
    pub max_body_bytes: usize,
    /// The redemption gate; `None` when it is off.
    pub redemption: Option<Redemption>,
    pub client_address: ClientAddressPolicy,
}

/// The redemption gate at the licence path: verify tokens, hand their
/// licence data upstream in headers.
#[derive(Debug, Clone)]
pub struct Redemption {
    /// Requests whose path starts with this are checked.
    pub path_prefix: String,
    /// Prefix of the licence-data headers; incoming headers with it are removed.
    pub header_prefix: String,
    /// Remove the `ExpressPlayToken` query parameter before going upstream
    /// (the default: a token is a bearer credential for up to 30 days and
    /// does not belong in licence-server logs).
    pub strip_token: bool,
    /// How -4010 is rendered.
    pub error_format: ErrorFormat,
}

/// Where tokens are redeemed: `scheme://host[:port]path?ExpressPlayToken=`.
#[derive(Debug, Clone)]
pub struct RedeemUrl {
    /// `scheme://host:port/path?ExpressPlayToken=`, built once.
    prefix: String,
    /// The same with `https` (for `useHttps=true`).
    https_prefix: String,
}

impl RedeemUrl {
    fn new(scheme: &str, host: &str, port: u16, path: &str) -> Self {
        let rest = format!(
            "://{host}:{port}{path}{}ExpressPlayToken=",
            if path.contains('?') { '&' } else { '?' }
        );
        Self {
            prefix: format!("{scheme}{rest}"),
            https_prefix: format!("https{rest}"),
        }
    }

    /// The licence URL up to and including `ExpressPlayToken=`.
    pub fn prefix(&self, force_https: bool) -> &str {
        if force_https {
            &self.https_prefix
        } else {
            &self.prefix
        }
    }
}

/// A sealing key and its id.
#[derive(Debug, Clone)]
pub struct SealingKey {
    pub id: String,
    pub key: SealingKeyBytes,
}

/// The sealing keys: one mints, all verify.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<SealingKey>,
    active: usize,
}

impl KeyRing {
    /// A ring whose active key is `active` (an id among `keys`).
    pub fn new(keys: Vec<SealingKey>, active: &str) -> Option<Self> {
        let active = keys.iter().position(|k| k.id == active)?;
        Some(Self { keys, active })
    }

    pub fn active(&self) -> Option<&SealingKey> {
        self.keys.get(self.active)
    }

    pub fn get(&self, id: &[u8]) -> Option<&SealingKey> {
        self.keys.iter().find(|k| k.id.as_bytes() == id)
    }
}

/// A customer account.
#[derive(Debug)]
pub struct Customer {
    pub id: String,
    pub environment: Environment,
    /// SHA-256 of the authenticator's secret part.
    pub authenticator_sha256: [u8; 32],
    /// The KEK that opens this customer's key store, when the request has none.
    pub kek: Option<Kek>,
    /// kid to AES-KW-wrapped content key (24 bytes).
    pub key_store: HashMap<Kid, [u8; 24]>,
    /// `false`: the account is disabled (-2031).
    pub enabled: bool,
    /// `false`: the account's service does not include FairPlay (-6006).
    pub fairplay_authorized: bool,
    /// `false`: FairPlay is included but switched off (-6009).
    pub fairplay_enabled: bool,
    /// When set, requests must come from one of these networks (-2003).
    pub allowed_networks: Option<Vec<ipnet::IpNet>>,
    /// When set, at most this many tokens per Envoy instance (-2019).
    pub token_budget: Option<u64>,
    /// When set (Unix seconds), the redemption gate refuses the customer's
    /// tokens issued before it: revocation without a key rotation.
    pub tokens_not_before: Option<i64>,
}

impl Config {
    /// Parses and validates the filter configuration. Shape errors (unknown
    /// field, wrong type) stop parsing at the first; every value problem
    /// after that is reported.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigErrors> {
        let de = &mut serde_json::Deserializer::from_slice(json);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "(root)".to_owned()
            } else {
                path
            };
            ConfigErrors(vec![ConfigError::new(field, e.into_inner().to_string())])
        })?;
        let mut errors = Vec::new();
        let config = Self::validate(raw, &mut errors);
        match config {
            Some(config) if errors.is_empty() => Ok(config),
            _ => Err(ConfigErrors(errors)),
        }
    }

    fn validate(raw: RawConfig, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let redeem_url = collect(validate_redeem_url(raw.redeem_url, raw.environment), errors);
        let sealing_keys = collect(
            validate_sealing_keys(raw.sealing_keys, raw.active_sealing_key),
            errors,
        );
        let redemption = collect(validate_redemption(raw.redemption), errors);

        let mut keks = HashMap::new();
        for (name, hex) in raw.keks {
            match Kek::from_hex(&hex) {
                Some(kek) => {
                    keks.insert(name, kek);
                }
                None => errors.push(ConfigError::new(
                    format!("keks.{name}"),
                    "expected 32, 48 or 64 hex digits (AES-128/192/256)",
                )),
            }
        }

        let mut customers = HashMap::new();
        for (i, c) in raw.customers.into_iter().enumerate() {
            let Some(customer) = validate_customer(i, c, &keks, errors) else {
                continue;
            };
            let id = customer.id.clone();
            if customers.insert(id.clone(), customer).is_some() {
                errors.push(ConfigError::new(
                    format!("customers[{i}].id"),
                    format!("duplicate customer {id:?}"),
                ));
            }
        }

        if raw.client_address.use_x_forwarded_for && raw.client_address.trusted_hops == 0 {
            errors.push(ConfigError::new(
                "client_address.trusted_hops",
                "at least 1 when use_x_forwarded_for is true",
            ));
        }

        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 || max_body_bytes > MAX_MAX_BODY_BYTES {
            errors.push(ConfigError::new(
                "max_body_bytes",
                format!("expected 1 to {MAX_MAX_BODY_BYTES}"),
            ));
        }

        Some(Self {
            environment: raw.environment,
            redeem_url: redeem_url?,
            sealing_keys: sealing_keys?,
            customers,
            max_body_bytes,
            redemption: redemption?,
            client_address: raw.client_address,
        })
    }
}

fn collect<T>(result: Result<T, ConfigError>, errors: &mut Vec<ConfigError>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}

fn validate_customer(
    i: usize,
    c: RawCustomer,
    keks: &HashMap<String, Kek>,
    errors: &mut Vec<ConfigError>,
) -> Option<Customer> {
    let before = errors.len();
    let at = |f: &str| format!("customers[{i}].{f}");
    if !is_identifier(&c.id, MAX_CUSTOMER_ID_LEN) {
        errors.push(ConfigError::new(
            at("id"),
            "expected 1 to 64 characters of [A-Za-z0-9._-]",
        ));
    }
    let mut digest = [0u8; 32];
    if hex::decode_to_slice(&c.authenticator_sha256, &mut digest).is_err() {
        errors.push(ConfigError::new(
            at("authenticator_sha256"),
            "expected 64 hex digits (SHA-256 of the secret)",
        ));
    }
    let kek = c.kek.as_ref().and_then(|name| {
        let kek = keks.get(name).cloned();
        if kek.is_none() {
            errors.push(ConfigError::new(
                at("kek"),
                format!("no KEK named {name:?} in keks"),
            ));
        }
        kek
    });
    let mut key_store = HashMap::new();
    for (kid_text, wrapped_hex) in &c.key_store {
        let field = format!("customers[{i}].key_store.{kid_text}");
        let kid = match Kid::parse(kid_text) {
            Ok(kid) => kid,
            Err(e) => {
                errors.push(ConfigError::new(
                    field,
                    format!("invalid kid: {}", e.message()),
                ));
                continue;
            }
        };
        let mut wrapped = [0u8; 24];
        if hex::decode_to_slice(wrapped_hex, &mut wrapped).is_err() {
            errors.push(ConfigError::new(
                field,
                "expected 48 hex digits (a 16-byte key wrapped with AES-KW)",
            ));
        } else if key_store.insert(kid, wrapped).is_some() {
            errors.push(ConfigError::new(field, "the same kid appears twice"));
        }
    }
    let allowed_networks = c.allowed_networks.map(|nets| {
        nets.iter()
            .enumerate()
            .filter_map(|(j, text)| match parse_network(text) {
                Some(net) => Some(net),
                None => {
                    errors.push(ConfigError::new(
                        format!("customers[{i}].allowed_networks[{j}]"),
                        "expected an IPv4 or IPv6 address or CIDR network (10.0.0.0/8, 2001:db8::/32)",
                    ));
                    None
                }
            })
            .collect()
    });
    if c.token_budget == Some(0) {
        errors.push(ConfigError::new(
            at("token_budget"),
            "expected at least 1 (omit it for no budget)",
        ));
    }
    let tokens_not_before = c.tokens_not_before.as_deref().and_then(|text| {
        let time =
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339);
        if time.is_err() {
            errors.push(ConfigError::new(
                at("tokens_not_before"),
                "expected an RFC 3339 time (2026-11-23T12:00:00Z)",
            ));
        }
        time.ok().map(time::OffsetDateTime::unix_timestamp)
    });
    (errors.len() == before).then_some(Customer {
        id: c.id,
        environment: c.environment,
        authenticator_sha256: digest,
        kek,
        key_store,
        enabled: c.enabled.unwrap_or(true),
        fairplay_authorized: c.fairplay_authorized.unwrap_or(true),
        fairplay_enabled: c.fairplay_enabled.unwrap_or(true),
        allowed_networks,
        token_budget: c.token_budget,
        tokens_not_before,
    })
}

/// A CIDR network, or a single address (a /32 or /128).
fn parse_network(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| {
            text.parse::<std::net::IpAddr>()
                .ok()
                .map(ipnet::IpNet::from)
        })
        .map(|net| net.trunc())
}

fn is_identifier(text: &str, max_len: usize) -> bool {
    !text.is_empty()
        && text.len() <= max_len
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn validate_redemption(raw: Option<RawRedemption>) -> Result<Option<Redemption>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let path_prefix = raw
        .path_prefix
        .unwrap_or_else(|| "/hms/fp/rights/".to_owned());
    if !path_prefix.starts_with('/')
        || !path_prefix.bytes().all(|b| b.is_ascii_graphic())
        || path_prefix.contains('?')
    {
        return Err(ConfigError::new(
            "redemption.path_prefix",
            "expected an absolute path of visible ASCII, no query",
        ));
    }
    let header_prefix = raw.header_prefix.unwrap_or_else(|| "x-fpgen-".to_owned());
    let header_ok = !header_prefix.is_empty()
        && header_prefix.len() <= 64
        && !header_prefix.starts_with(':')
        && header_prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !header_ok {
        return Err(ConfigError::new(
            "redemption.header_prefix",
            "expected 1 to 64 characters of [a-z0-9-]",
        ));
    }
    let error_format = match raw.error_format.as_deref() {
        None => ErrorFormat::Html,
        Some(text) => ErrorFormat::parse(text).ok_or_else(|| {
            ConfigError::new("redemption.error_format", "expected \"html\" or \"json\"")
        })?,
    };
    Ok(Some(Redemption {
        path_prefix,
        header_prefix,
        strip_token: raw.strip_token.unwrap_or(true),
        error_format,
    }))
}

fn validate_redeem_url(raw: RawRedeemUrl, env: Environment) -> Result<RedeemUrl, ConfigError> {
    let scheme = raw.scheme.unwrap_or_else(|| "http".to_owned());
    if scheme != "http" && scheme != "https" {
        return Err(ConfigError::new(
            "redeem_url.scheme",
            "expected \"http\" or \"https\"",
        ));
    }
    let host = raw.host.unwrap_or_else(|| {
        match env {
            Environment::Test => "fp.test.expressplay.com",
            Environment::Production => "fp.service.expressplay.com",
        }
        .to_owned()
    });
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b));
    if !host_ok {
        return Err(ConfigError::new(
            "redeem_url.host",
            "expected a host name or an IP address",
        ));
    }
    let port = match raw.port {
        Some(0) => return Err(ConfigError::new("redeem_url.port", "expected 1 to 65535")),
        Some(p) => p,
        None => 80,
    };
    let path = raw.path.unwrap_or_else(|| "/hms/fp/rights/".to_owned());
    let path_ok =
        path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()) && !path.contains('#');
    if !path_ok {
        return Err(ConfigError::new(
            "redeem_url.path",
            "expected an absolute path of visible ASCII",
        ));
    }
    Ok(RedeemUrl::new(&scheme, &host, port, &path))
}

fn validate_sealing_keys(
    raw: Vec<RawSealingKey>,
    active: Option<String>,
) -> Result<KeyRing, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::new(
            "sealing_keys",
            "at least one sealing key is required",
        ));
    }
    let mut keys: Vec<SealingKey> = Vec::with_capacity(raw.len());
    for (i, k) in raw.into_iter().enumerate() {
        let valid_id = !k.id.is_empty()
            && k.id.len() <= MAX_KEY_ID_LEN
            && k.id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid_id {
            return Err(ConfigError::new(
                format!("sealing_keys[{i}].id"),
                "expected 1 to 32 characters of [A-Za-z0-9._-]",
            ));
        }
        if keys.iter().any(|other| other.id == k.id) {
            return Err(ConfigError::new(
                format!("sealing_keys[{i}].id"),
                format!("duplicate id {:?}", k.id),
            ));
        }
        let key = SealingKeyBytes::from_hex(&k.key).ok_or_else(|| {
            ConfigError::new(
                format!("sealing_keys[{i}].key"),
                "expected 64 hex digits (32 bytes)",
            )
        })?;
        keys.push(SealingKey { id: k.id, key });
    }
    let active = match active {
        Some(id) => id,
        None if keys.len() == 1 => keys.first().map(|k| k.id.clone()).unwrap_or_default(),
        None => {
            return Err(ConfigError::new(
                "active_sealing_key",
                "required when there is more than one sealing key",
            ))
        }
    };
    KeyRing::new(keys, &active).ok_or_else(|| {
        ConfigError::new(
            "active_sealing_key",
            format!("no sealing key has the id {active:?}"),
        )
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const DEMO: &str = r#"{
      "environment": "test",
      "redeem_url": {"scheme": "http", "host": "fp.test.expressplay.com", "port": 80, "path": "/hms/fp/rights/"},
      "sealing_keys": [{"id": "demo-2026-11", "key": "a88deb5c6fc4b09434f9dab3a25f79cd7ddf67a025c179c9a9b6153dbf56f132"}],
      "active_sealing_key": "demo-2026-11",
      "keks": {"demo-kek": "000102030405060708090a0b0c0d0e0f"},
      "customers": [{
        "id": "100001",
        "environment": "test",
        "authenticator_sha256": "3eb1bd439947eb762998e566ccc2e099c791118b2f40579cc4f7da2b5061b7f9",
        "kek": "demo-kek",
        "key_store": {"11112222333344445555666677778888": "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5"}
      }, {
        "id": "200002",
        "environment": "production",
        "authenticator_sha256": "3eb1bd439947eb762998e566ccc2e099c791118b2f40579cc4f7da2b5061b7f9"
      }],
      "max_body_bytes": 8192
    }"#;

    fn err(json: &str) -> ConfigError {
        Config::from_json(json.as_bytes()).unwrap_err().0.remove(0)
    }

    #[test]
    fn every_value_problem_is_reported() {
        let json = demo_with(|v| {
            v["sealing_keys"][0]["key"] = "00".into();
            v["customers"][0]["kek"] = "nope".into();
            v["customers"][1]["authenticator_sha256"] = "zz".into();
            v["max_body_bytes"] = 0.into();
        });
        let errors = Config::from_json(json.as_bytes()).unwrap_err();
        let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "sealing_keys[0].key",
                "customers[0].kek",
                "customers[1].authenticator_sha256",
                "max_body_bytes"
            ]
        );
        assert!(errors.to_string().contains("; "), "{errors}");
    }

    #[test]
    fn account_controls() {
        let json = demo_with(|v| {
            v["customers"][0]["enabled"] = false.into();
            v["customers"][0]["allowed_networks"] =
                serde_json::json!(["10.1.2.3/8", "2001:db8::1", "::1/128"]);
            v["customers"][0]["token_budget"] = 5.into();
            v["client_address"] =
                serde_json::json!({"use_x_forwarded_for": true, "trusted_hops": 2});
        });
        let c = Config::from_json(json.as_bytes()).unwrap();
        let cust = &c.customers["100001"];
        assert!(!cust.enabled && cust.fairplay_authorized && cust.fairplay_enabled);
        let nets: Vec<String> = cust
            .allowed_networks
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "2001:db8::1/128", "::1/128"]);
        assert_eq!(cust.token_budget, Some(5));
        assert_eq!(c.client_address.trusted_hops, 2);
        assert!(c.customers["200002"].enabled && c.customers["200002"].allowed_networks.is_none());
        let e = err(&demo_with(|v| {
            v["customers"][1]["allowed_networks"] = serde_json::json!(["10.0.0.0/33"])
        }));
        assert_eq!(e.field, "customers[1].allowed_networks[0]");
        let e = err(&demo_with(|v| v["customers"][1]["token_budget"] = 0.into()));
        assert_eq!(e.field, "customers[1].token_budget");
        let c = Config::from_json(
            demo_with(|v| {
                v["customers"][0]["tokens_not_before"] = "2026-11-23T12:00:00+01:00".into()
            })
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(c.customers["100001"].tokens_not_before, Some(1_795_431_600));
        assert_eq!(c.customers["200002"].tokens_not_before, None);
        let e = err(&demo_with(|v| {
            v["customers"][1]["tokens_not_before"] = "yesterday".into()
        }));
        assert_eq!(e.field, "customers[1].tokens_not_before");
        let e = err(&demo_with(|v| {
            v["client_address"] = serde_json::json!({"use_x_forwarded_for": true})
        }));
        assert_eq!(e.field, "client_address.trusted_hops");
    }

    #[test]
    fn redemption_section() {
        let c =
            Config::from_json(demo_with(|v| v["redemption"] = serde_json::json!({})).as_bytes())
                .unwrap();
        let r = c.redemption.unwrap();
        assert_eq!(
            (
                r.path_prefix.as_str(),
                r.header_prefix.as_str(),
                r.strip_token
            ),
            ("/hms/fp/rights/", "x-fpgen-", true)
        );
        let c = Config::from_json(
            demo_with(|v| v["redemption"] = serde_json::json!({"enabled": false})).as_bytes(),
        );
        assert!(c.unwrap().redemption.is_none());
        assert!(Config::from_json(DEMO.as_bytes())
            .unwrap()
            .redemption
            .is_none());
        let e = err(&demo_with(|v| {
            v["redemption"] = serde_json::json!({"header_prefix": "X-Bad "})
        }));
        assert_eq!(e.field, "redemption.header_prefix");
        let e = err(&demo_with(|v| {
            v["redemption"] = serde_json::json!({"error_format": "xml"})
        }));
        assert_eq!(e.field, "redemption.error_format");
    }

    fn demo_with(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_str(DEMO).unwrap();
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn demo_parses() {
        let c = Config::from_json(DEMO.as_bytes()).unwrap();
        assert_eq!(c.environment, Environment::Test);
        assert_eq!(c.sealing_keys.active().unwrap().id, "demo-2026-11");
        assert_eq!(c.customers.len(), 2);
        assert_eq!(c.customers["100001"].key_store.len(), 1);
        assert_eq!(c.max_body_bytes, 8192);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = err(&demo_with(|v| v["customers"][0]["secret"] = "x".into()));
        assert_eq!(e.field, "customers[0].secret");
        assert!(e.problem.contains("unknown field `secret`"), "{e}");
    }

    #[test]
    fn bad_hex_is_named() {
        let e = err(&demo_with(|v| v["sealing_keys"][0]["key"] = "abc".into()));
        assert_eq!(e.field, "sealing_keys[0].key");
        let e = err(&demo_with(|v| {
            v["customers"][0]["authenticator_sha256"] = "zz".into()
        }));
        assert_eq!(e.field, "customers[0].authenticator_sha256");
        let e = err(&demo_with(|v| v["keks"]["demo-kek"] = "00".into()));
        assert_eq!(e.field, "keks.demo-kek");
    }

    #[test]
    fn missing_sealing_key() {
        assert_eq!(
            err(&demo_with(|v| v["sealing_keys"] = serde_json::json!([]))).field,
            "sealing_keys"
        );
        let e = err(&demo_with(|v| {
            v.as_object_mut().unwrap().remove("sealing_keys");
        }));
        assert!(e.problem.contains("missing field `sealing_keys`"), "{e}");
        assert_eq!(
            err(&demo_with(|v| v["active_sealing_key"] = "nope".into())).field,
            "active_sealing_key"
        );
    }

    #[test]
    fn duplicates_are_refused() {
        let e = err(&demo_with(|v| v["customers"][1]["id"] = "100001".into()));
        assert_eq!(e.field, "customers[1].id");
        let e = err(&demo_with(|v| {
            let k = v["sealing_keys"][0].clone();
            v["sealing_keys"].as_array_mut().unwrap().push(k);
        }));
        assert_eq!(e.field, "sealing_keys[1].id");
        let e = err(&demo_with(|v| {
            let store = &mut v["customers"][0]["key_store"];
            store["aaaabbbbccccddddeeeeffff00001111"] =
                "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5".into();
            store["AAAABBBBCCCCDDDDEEEEFFFF00001111"] =
                "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5".into();
        }));
        assert!(e.field.starts_with("customers[0].key_store."), "{e}");
    }

    #[test]
    fn references_must_resolve() {
        let e = err(&demo_with(|v| v["customers"][0]["kek"] = "other".into()));
        assert_eq!(e.field, "customers[0].kek");
        let e = err(&demo_with(|v| v["environment"] = "staging".into()));
        assert_eq!(e.field, "environment");
    }

    #[test]
    fn errors_never_echo_key_material() {
        let e = err(&demo_with(|v| {
            v["sealing_keys"][0]["key"] = "a88deb5c6fc4b09434f9dab3a25f79cd".into()
        }));
        assert!(!e.to_string().contains("a88deb5c"), "{e}");
        let c = Config::from_json(DEMO.as_bytes()).unwrap();
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("a88deb5c") && !debug.contains("0001020304"),
            "{debug}"
        );
    }

    #[test]
    fn redeem_url_defaults_follow_environment() {
        let c =
            Config::from_json(demo_with(|v| v["redeem_url"] = serde_json::json!({})).as_bytes())
                .unwrap();
        assert_eq!(
            c.redeem_url.prefix(false),
            "http://fp.test.expressplay.com:80/hms/fp/rights/?ExpressPlayToken="
        );
        assert_eq!(
            c.redeem_url.prefix(true),
            "https://fp.test.expressplay.com:80/hms/fp/rights/?ExpressPlayToken="
        );
    }
}
