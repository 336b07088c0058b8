//! The filter configuration: JSON in the filter's `configuration` field,
//! parsed and validated once into typed values. Every error names its field;
//! every section reports every problem it finds (only a shape error, which
//! stops the JSON parser, is reported alone).

use crate::error::ErrorFormat;
use crate::ids::{CustomerId, IdError, KeyId, Kid, KidError};
use crate::licence::Environment;
use crate::secret::{Kek, SealingKeyBytes};
use crate::token::{KeyRing, SealingKey};
use secrets::RawSecret;
pub use secrets::{HostEnv, ProcessEnv, Vars};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use shown::Quoted;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

mod fleet;
mod secrets;
mod shown;
pub use fleet::{FailureMode, FleetBudget, Period, RateLimitService};

/// Default cap on a POST body, in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024;
/// The largest cap an operator may configure.
pub const MAX_MAX_BODY_BYTES: usize = 1024 * 1024;

/// What is wrong with one field. The messages never hold the field's value
/// (it may be key material); names of references and ids are shown only
/// when they cannot be key material (see `config/shown.rs`), and described
/// otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The JSON's shape: unknown field, wrong type, missing field (the
    /// parser's words).
    Shape(String),
    /// An identifier that breaks its rule.
    Identifier(IdError),
    /// A kid (a key store's key) that is not valid.
    Kid(KidError),
    /// Not the expected hex: what was expected.
    Hex(&'static str),
    /// A value outside its form or range: what was expected.
    Expected(&'static str),
    /// A number outside `min..=max`.
    OutOfRange { min: u64, max: u64 },
    /// An id given a second time.
    Duplicate { what: &'static str, id: String },
    /// A name that refers to nothing: `what` named `name` is not in `section`.
    Unresolved {
        what: &'static str,
        name: String,
        section: &'static str,
    },
    /// A value that must be given: when.
    Required(&'static str),
    /// `{"env": …}` names a variable that is not set.
    EnvUnset {
        variable: String,
        /// Where the host takes its variables from ([`Vars::unset_hint`]).
        hint: &'static str,
    },
    /// `{"env": …}` names a variable whose value is not what the field
    /// takes (`expected`); the value is never shown.
    EnvMalformed {
        variable: String,
        expected: &'static str,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shape(text) => f.write_str(text),
            Self::Identifier(e) => e.fmt(f),
            Self::Kid(e) => write!(f, "invalid kid: {e}"),
            Self::Hex(what) | Self::Expected(what) => write!(f, "expected {what}"),
            Self::OutOfRange { min, max } => write!(f, "expected {min} to {max}"),
            Self::Duplicate { what, id } => write!(f, "duplicate {what} {}", Quoted(id)),
            Self::Unresolved {
                what,
                name,
                section,
            } => write!(f, "no {what} named {} in {section}", Quoted(name)),
            Self::Required(when) => f.write_str(when),
            Self::EnvUnset { variable, hint } => {
                write!(
                    f,
                    "environment variable {} is not set{hint}",
                    Quoted(variable)
                )
            }
            Self::EnvMalformed { variable, expected } => {
                write!(
                    f,
                    "environment variable {}: expected {expected}",
                    Quoted(variable)
                )
            }
        }
    }
}

/// A configuration problem: the field (JSON path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: Problem,
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

/// Collects the problems of one validation pass.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, problem: Problem) {
        self.0.push(ConfigError {
            field: field.into(),
            problem,
        });
    }

    fn count(&self) -> usize {
        self.0.len()
    }
}

// ---- the JSON shape -------------------------------------------------------

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the fpgen configuration: an object with environment, sealing_keys and customers"
)]
struct RawConfig {
    environment: Environment,
    #[serde(default)]
    redeem_url: RawRedeemUrl,
    sealing_keys: Vec<RawSealingKey>,
    active_sealing_key: Option<String>,
    #[serde(default)]
    keks: BTreeMap<String, RawSecret>,
    customers: Vec<RawCustomer>,
    max_body_bytes: Option<usize>,
    redemption: Option<RawRedemption>,
    #[serde(default)]
    client_address: ClientAddressPolicy,
    rate_limit_service: Option<RawRateLimitService>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object (the rate-limit service: cluster, domain, timeout_ms, failure_mode)"
)]
struct RawRateLimitService {
    cluster: String,
    domain: Option<String>,
    timeout_ms: Option<u64>,
    failure_mode: Option<FailureMode>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object (a fleet budget: tokens, per and lease)"
)]
struct RawFleetBudget {
    tokens: u64,
    per: Period,
    lease: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object (the redemption gate)")]
struct RawRedemption {
    enabled: Option<bool>,
    path_prefix: Option<String>,
    header_prefix: Option<String>,
    strip_token: Option<bool>,
    error_format: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "an object (the licence URL)")]
struct RawRedeemUrl {
    scheme: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a sealing key: an object with id and key"
)]
struct RawSealingKey {
    id: String,
    key: RawSecret,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a customer: an object with id, environment and authenticator_sha256"
)]
struct RawCustomer {
    id: String,
    environment: Environment,
    authenticator_sha256: String,
    kek: Option<String>,
    #[serde(default)]
    key_store: RawKeyStore,
    enabled: Option<bool>,
    fairplay_authorized: Option<bool>,
    fairplay_enabled: Option<bool>,
    allowed_networks: Option<Vec<String>>,
    token_budget: Option<u64>,
    fleet_budget: Option<RawFleetBudget>,
    tokens_not_before: Option<String>,
}

/// A key store as it is read: each entry is parsed into its final form
/// (kid, 24 wrapped bytes) as the JSON parser reaches it, with no map of
/// strings in between, so that a store of 100,000 keys costs its final size
/// in the VM's memory, not several times that. Entries that do not parse
/// are kept as their label ([`entry_label`], never the value) and what is
/// wrong.
/// Entries given as `{"env": …}` hold a placeholder in `entries` (so that
/// a duplicate kid is found the same way) until the variables are read.
#[derive(Default)]
struct RawKeyStore {
    entries: HashMap<Kid, [u8; 24]>,
    problems: Vec<(String, Problem)>,
    /// kid as shown in messages ([`entry_label`]), kid, variable
    from_env: Vec<(String, Kid, String)>,
}

impl<'de> Deserialize<'de> for RawKeyStore {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(KeyStoreVisitor)
    }
}

struct KeyStoreVisitor;

impl<'de> Visitor<'de> for KeyStoreVisitor {
    type Value = RawKeyStore;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of kid to wrapped key (hex)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKeyStore, A::Error> {
        let mut store = RawKeyStore::default();
        let mut index = 0usize;
        while let Some(text) = map.next_key::<String>()? {
            index += 1;
            let value: Wrapped = map.next_value()?;
            let kid = match Kid::parse(&text) {
                Ok(kid) => kid,
                Err(e) => {
                    store
                        .problems
                        .push((entry_label(&text, index), Problem::Kid(e)));
                    continue;
                }
            };
            let wrapped = match value {
                Wrapped::Hex(Some(wrapped)) => wrapped,
                Wrapped::Hex(None) => {
                    store
                        .problems
                        .push((entry_label(&text, index), Problem::Hex(WRAPPED_KEY)));
                    continue;
                }
                Wrapped::Env(variable) => {
                    let label = entry_label(&text, index);
                    store.from_env.push((label, kid.clone(), variable));
                    [0; 24]
                }
            };
            if store.entries.insert(kid, wrapped).is_some() {
                let id = text.clone();
                let duplicate = Problem::Duplicate { what: "kid", id };
                store.problems.push((entry_label(&text, index), duplicate));
            }
        }
        Ok(store)
    }
}

/// A key store entry in a field name: its kid, or, when the kid is not
/// shown (a 32-digit hex kid looks like an AES-128 key), its description
/// and its place in the store (1-based).
fn entry_label(kid_text: &str, index: usize) -> String {
    if shown::is_shown(kid_text) {
        kid_text.to_owned()
    } else {
        format!("{} (entry {index})", shown::name(kid_text))
    }
}

/// What a key store's value must be.
const WRAPPED_KEY: &str = "48 hex digits (a 16-byte key wrapped with AES-KW)";

/// A wrapped key as written: decoded from hex as it is read (`None` when
/// it is not 48 hex digits), or the variable that holds it.
enum Wrapped {
    Hex(Option<[u8; 24]>),
    Env(String),
}

impl<'de> Deserialize<'de> for Wrapped {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WrappedVisitor;
        impl<'de> Visitor<'de> for WrappedVisitor {
            type Value = Wrapped;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(secrets::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Wrapped, E> {
                Ok(Wrapped::Hex(decode_wrapped(text)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Wrapped, A::Error> {
                secrets::env_reference(map).map(Wrapped::Env)
            }
        }
        deserializer.deserialize_any(WrappedVisitor)
    }
}

fn decode_wrapped(text: &str) -> Option<[u8; 24]> {
    let mut wrapped = [0u8; 24];
    hex::decode_to_slice(text, &mut wrapped)
        .ok()
        .map(|()| wrapped)
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
    pub customers: HashMap<CustomerId, Customer>,
    pub max_body_bytes: usize,
    /// The redemption gate; `None` when it is off.
    pub redemption: Option<Redemption>,
    pub client_address: ClientAddressPolicy,
    /// Where fleet budgets are asked (`None`: not configured).
    pub rate_limit_service: Option<RateLimitService>,
    /// How many secret values were read from the environment
    /// (`{"env": …}`), for the summary.
    pub secrets_from_env: usize,
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
    /// The port is always written, `:80` included: the hosted service's
    /// licence URLs carry it (`https://fp.service.expressplay.com:80/…`) and
    /// clients compare or parse them as they are.
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

/// A customer account. Its `Debug` shows neither the authenticator's
/// digest nor the wrapped keys of its key store (their kids and number
/// only).
pub struct Customer {
    pub id: CustomerId,
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
    /// When set, at most this many tokens per period across every Envoy
    /// that asks the same rate-limit service (-2019).
    pub fleet_budget: Option<FleetBudget>,
    /// When set (Unix seconds), the redemption gate refuses the customer's
    /// tokens issued before it: revocation without a key rotation.
    pub tokens_not_before: Option<i64>,
}

impl std::fmt::Debug for Customer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&Kid> = self.key_store.keys().collect();
        f.debug_struct("Customer")
            .field("id", &self.id)
            .field("environment", &self.environment)
            .field("authenticator_sha256", &"<redacted>")
            .field("kek", &self.kek)
            .field("key_store_kids", &kids)
            .field("enabled", &self.enabled)
            .field("fairplay_authorized", &self.fairplay_authorized)
            .field("fairplay_enabled", &self.fairplay_enabled)
            .field("allowed_networks", &self.allowed_networks)
            .field("token_budget", &self.token_budget)
            .field("fleet_budget", &self.fleet_budget)
            .field("tokens_not_before", &self.tokens_not_before)
            .finish()
    }
}

impl Config {
    /// The fleet budget of customer `id`, when it has one.
    pub fn fleet_budget(&self, id: &CustomerId) -> Option<FleetBudget> {
        self.customers.get(id)?.fleet_budget
    }

    /// What a valid configuration does that an operator may not mean, one
    /// line each, for the host's log (at warning level) and `fpgen
    /// check-config`. Today: the redemption gate is off.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        if self.redemption.is_none() {
            warnings.push(
                "the redemption gate is off (no \"redemption\", or \"enabled\": false): \
                 licence requests reach the licence server with no token checked and \
                 their x-fpgen-* headers as the client sent them",
            );
        }
        warnings
    }

    /// One line for logs and `fpgen check-config`: `environment test, 2
    /// customer(s), active sealing key "demo-2026-11", redemption gate on`,
    /// and `, 3 secret(s) from the environment` when there are any.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "environment {}, {} customer(s), active sealing key {}, redemption gate {}",
            self.environment.as_str(),
            self.customers.len(),
            Quoted(self.sealing_keys.active().map_or("", |k| k.id.as_str())),
            if self.redemption.is_some() {
                "on"
            } else {
                "off"
            },
        );
        if let Some(service) = &self.rate_limit_service {
            let fleet = self
                .customers
                .values()
                .filter(|c| c.fleet_budget.is_some())
                .count();
            line.push_str(&format!(
                ", {fleet} fleet budget(s) on cluster {} (failure mode {})",
                Quoted(&service.cluster),
                match service.failure_mode {
                    FailureMode::Closed => "closed",
                    FailureMode::Open => "open",
                }
            ));
        }
        if self.secrets_from_env > 0 {
            line.push_str(&format!(
                ", {} secret(s) from the environment",
                self.secrets_from_env
            ));
        }
        line
    }

    /// Parses and validates the filter configuration. Shape errors (unknown
    /// field, wrong type) stop parsing at the first; every value problem
    /// after that is reported. `{"env": …}` secrets are read from the
    /// process environment ([`ProcessEnv`]).
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigErrors> {
        Self::from_json_with(json, &ProcessEnv)
    }

    /// [`Config::from_json`], with `{"env": …}` secrets read from `vars`.
    pub fn from_json_with(json: &[u8], vars: &dyn Vars) -> Result<Self, ConfigErrors> {
        Self::parse(serde_json::Deserializer::from_slice(json), vars)
    }

    /// [`Config::from_json`] from a reader, read as the parser goes: the
    /// filter reads its configuration from Envoy in chunks this way, so
    /// the whole JSON text is never held in the VM's memory beside what is
    /// parsed from it (a VM's memory never shrinks).
    pub fn from_reader(reader: impl std::io::Read) -> Result<Self, ConfigErrors> {
        Self::from_reader_with(reader, &ProcessEnv)
    }

    /// [`Config::from_reader`], with `{"env": …}` secrets read from `vars`.
    pub fn from_reader_with(
        reader: impl std::io::Read,
        vars: &dyn Vars,
    ) -> Result<Self, ConfigErrors> {
        Self::parse(serde_json::Deserializer::from_reader(reader), vars)
    }

    fn parse<'de, R: serde_json::de::Read<'de>>(
        mut de: serde_json::Deserializer<R>,
        vars: &dyn Vars,
    ) -> Result<Self, ConfigErrors> {
        let raw: RawConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = field_of(e.path());
            let message = e.into_inner().to_string();
            ConfigErrors(vec![ConfigError {
                field,
                problem: Problem::Shape(shown::scrub(&message)),
            }])
        })?;
        let mut problems = Problems::default();
        let config = Self::validate(raw, vars, &mut problems);
        match config {
            Some(config) if problems.0.is_empty() => Ok(config),
            _ => Err(ConfigErrors(problems.0)),
        }
    }

    fn validate(raw: RawConfig, vars: &dyn Vars, problems: &mut Problems) -> Option<Self> {
        let secrets_from_env = raw.sealing_keys.iter().filter(|k| k.key.is_env()).count()
            + raw.keks.values().filter(|k| k.is_env()).count()
            + raw
                .customers
                .iter()
                .map(|c| c.key_store.from_env.len())
                .sum::<usize>();
        let redeem_url = validate_redeem_url(raw.redeem_url, raw.environment, problems);
        let sealing_keys =
            validate_sealing_keys(raw.sealing_keys, raw.active_sealing_key, vars, problems);
        let redemption = validate_redemption(raw.redemption, problems);
        let keks = validate_keks(raw.keks, vars, problems);
        let rate_limit_service = fleet::validate_service(raw.rate_limit_service, problems);
        let has_service = !matches!(rate_limit_service, Some(None));
        let customers = validate_customers(raw.customers, &keks, has_service, vars, problems);
        if raw.client_address.use_x_forwarded_for && raw.client_address.trusted_hops == 0 {
            problems.push(
                "client_address.trusted_hops",
                Problem::Required("at least 1 when use_x_forwarded_for is true"),
            );
        }
        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 || max_body_bytes > MAX_MAX_BODY_BYTES {
            problems.push(
                "max_body_bytes",
                Problem::OutOfRange {
                    min: 1,
                    max: MAX_MAX_BODY_BYTES as u64,
                },
            );
        }
        Some(Self {
            environment: raw.environment,
            redeem_url: redeem_url?,
            sealing_keys: sealing_keys?,
            customers,
            max_body_bytes,
            redemption: redemption?,
            client_address: raw.client_address,
            rate_limit_service: rate_limit_service?,
            secrets_from_env,
        })
    }
}

/// A parser's path as a field name (`customers[0].key_store.<kid>`), each
/// map key shown only when it cannot be key material.
fn field_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut field = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => field.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(&shown::name(key));
            }
            Segment::Unknown => field.push_str(if field.is_empty() { "?" } else { ".?" }),
        }
    }
    if field.is_empty() {
        "(root)".to_owned()
    } else {
        field
    }
}

/// The KEKs by name; `None` for one that has a problem of its own (so that
/// customers naming it are not also told it does not exist).
fn validate_keks(
    raw: BTreeMap<String, RawSecret>,
    vars: &dyn Vars,
    problems: &mut Problems,
) -> HashMap<String, Option<Kek>> {
    raw.into_iter()
        .map(|(name, secret)| {
            let expected = "32, 48 or 64 hex digits (AES-128/192/256)";
            let kek = secret
                .resolve(vars, expected, Kek::from_hex)
                .map_err(|problem| problems.push(format!("keks.{}", shown::name(&name)), problem))
                .ok();
            (name, kek)
        })
        .collect()
}

fn validate_customers(
    raw: Vec<RawCustomer>,
    keks: &HashMap<String, Option<Kek>>,
    has_service: bool,
    vars: &dyn Vars,
    problems: &mut Problems,
) -> HashMap<CustomerId, Customer> {
    let mut customers = HashMap::new();
    for (i, c) in raw.into_iter().enumerate() {
        let Some(customer) = validate_customer(i, c, keks, has_service, vars, problems) else {
            continue;
        };
        let id = customer.id.clone();
        if customers.insert(id.clone(), customer).is_some() {
            problems.push(
                format!("customers[{i}].id"),
                Problem::Duplicate {
                    what: "customer",
                    id: id.to_string(),
                },
            );
        }
    }
    customers
}

/// One customer; `None` when any of its fields has a problem.
fn validate_customer(
    i: usize,
    c: RawCustomer,
    keks: &HashMap<String, Option<Kek>>,
    has_service: bool,
    vars: &dyn Vars,
    problems: &mut Problems,
) -> Option<Customer> {
    let before = problems.count();
    let at = |f: &str| format!("customers[{i}].{f}");
    let id = CustomerId::parse(&c.id)
        .map_err(|e| problems.push(at("id"), Problem::Identifier(e)))
        .ok();
    let mut digest = [0u8; 32];
    if hex::decode_to_slice(&c.authenticator_sha256, &mut digest).is_err() {
        problems.push(
            at("authenticator_sha256"),
            Problem::Hex("64 hex digits (SHA-256 of the secret)"),
        );
    }
    let kek = c
        .kek
        .as_deref()
        .and_then(|name| resolve_kek(&at("kek"), name, keks, problems));
    let key_store = validate_key_store(&at("key_store"), c.key_store, vars, problems);
    let allowed_networks = c
        .allowed_networks
        .map(|nets| validate_networks(&at("allowed_networks"), &nets, problems));
    if c.token_budget == Some(0) {
        problems.push(
            at("token_budget"),
            Problem::Expected("at least 1 (omit it for no budget)"),
        );
    }
    let fleet_budget = c
        .fleet_budget
        .and_then(|raw| fleet::validate_budget(&at("fleet_budget"), raw, has_service, problems));
    let tokens_not_before = c.tokens_not_before.as_deref().and_then(|text| {
        let time = parse_rfc3339(text);
        if time.is_none() {
            let expected = Problem::Expected("an RFC 3339 time (2026-11-23T12:00:00Z)");
            problems.push(at("tokens_not_before"), expected);
        }
        time
    });
    (problems.count() == before).then_some(Customer {
        id: id?,
        environment: c.environment,
        authenticator_sha256: digest,
        kek,
        key_store,
        enabled: c.enabled.unwrap_or(true),
        fairplay_authorized: c.fairplay_authorized.unwrap_or(true),
        fairplay_enabled: c.fairplay_enabled.unwrap_or(true),
        allowed_networks,
        token_budget: c.token_budget,
        fleet_budget,
        tokens_not_before,
    })
}

/// The KEK a customer names, from `keks`.
fn resolve_kek(
    field: &str,
    name: &str,
    keks: &HashMap<String, Option<Kek>>,
    problems: &mut Problems,
) -> Option<Kek> {
    let Some(kek) = keks.get(name) else {
        let problem = Problem::Unresolved {
            what: "KEK",
            name: name.to_owned(),
            section: "keks",
        };
        problems.push(field, problem);
        return None;
    };
    kek.clone()
}

/// RFC 3339 time to Unix seconds.
fn parse_rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

/// The key store read by [`RawKeyStore`], its `{"env": …}` entries read
/// from `vars`, with its problems reported under `field.<kid>`.
fn validate_key_store(
    field: &str,
    raw: RawKeyStore,
    vars: &dyn Vars,
    problems: &mut Problems,
) -> HashMap<Kid, [u8; 24]> {
    for (label, problem) in raw.problems {
        problems.push(format!("{field}.{label}"), problem);
    }
    let mut entries = raw.entries;
    for (label, kid, variable) in raw.from_env {
        match secrets::from_env(&variable, vars, WRAPPED_KEY, decode_wrapped) {
            Ok(wrapped) => {
                entries.insert(kid, wrapped);
            }
            Err(problem) => {
                entries.remove(&kid);
                problems.push(format!("{field}.{label}"), problem);
            }
        }
    }
    entries
}

fn validate_networks(field: &str, raw: &[String], problems: &mut Problems) -> Vec<ipnet::IpNet> {
    raw.iter()
        .enumerate()
        .filter_map(|(j, text)| {
            let net = parse_network(text);
            if net.is_none() {
                problems.push(
                    format!("{field}[{j}]"),
                    Problem::Expected(
                        "an IPv4 or IPv6 address or CIDR network (10.0.0.0/8, 2001:db8::/32)",
                    ),
                );
            }
            net
        })
        .collect()
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

fn validate_redemption(
    raw: Option<RawRedemption>,
    problems: &mut Problems,
) -> Option<Option<Redemption>> {
    let Some(raw) = raw.filter(|r| r.enabled != Some(false)) else {
        return Some(None);
    };
    let before = problems.count();
    let path_prefix = raw
        .path_prefix
        .unwrap_or_else(|| "/hms/fp/rights/".to_owned());
    if !path_prefix.starts_with('/')
        || !path_prefix.bytes().all(|b| b.is_ascii_graphic())
        || path_prefix.contains('?')
    {
        problems.push(
            "redemption.path_prefix",
            Problem::Expected("an absolute path of visible ASCII, no query"),
        );
    }
    let header_prefix = raw.header_prefix.unwrap_or_else(|| "x-fpgen-".to_owned());
    let header_ok = !header_prefix.is_empty()
        && header_prefix.len() <= 64
        && header_prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !header_ok {
        problems.push(
            "redemption.header_prefix",
            Problem::Expected("1 to 64 characters of [a-z0-9-]"),
        );
    }
    let error_format = raw
        .error_format
        .as_deref()
        .map_or(Some(ErrorFormat::Html), |text| {
            let format = ErrorFormat::parse(text);
            if format.is_none() {
                problems.push(
                    "redemption.error_format",
                    Problem::Expected("\"html\" or \"json\""),
                );
            }
            format
        });
    (problems.count() == before).then_some(Some(Redemption {
        path_prefix,
        header_prefix,
        strip_token: raw.strip_token.unwrap_or(true),
        error_format: error_format?,
    }))
}

fn validate_redeem_url(
    raw: RawRedeemUrl,
    env: Environment,
    problems: &mut Problems,
) -> Option<RedeemUrl> {
    let before = problems.count();
    let scheme = raw.scheme.unwrap_or_else(|| "http".to_owned());
    if scheme != "http" && scheme != "https" {
        problems.push(
            "redeem_url.scheme",
            Problem::Expected("\"http\" or \"https\""),
        );
    }
    let host = raw
        .host
        .unwrap_or_else(|| default_redeem_host(env).to_owned());
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b));
    if !host_ok {
        problems.push(
            "redeem_url.host",
            Problem::Expected("a host name or an IP address"),
        );
    }
    let port = raw.port.unwrap_or(80);
    if port == 0 {
        problems.push(
            "redeem_url.port",
            Problem::OutOfRange { min: 1, max: 65535 },
        );
    }
    let path = raw.path.unwrap_or_else(|| "/hms/fp/rights/".to_owned());
    let path_ok =
        path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()) && !path.contains('#');
    if !path_ok {
        problems.push(
            "redeem_url.path",
            Problem::Expected("an absolute path of visible ASCII"),
        );
    }
    (problems.count() == before).then(|| RedeemUrl::new(&scheme, &host, port, &path))
}

/// The hosted service's licence host for each environment.
const fn default_redeem_host(env: Environment) -> &'static str {
    match env {
        Environment::Test => "fp.test.expressplay.com",
        Environment::Production => "fp.service.expressplay.com",
    }
}

fn validate_sealing_keys(
    raw: Vec<RawSealingKey>,
    active: Option<String>,
    vars: &dyn Vars,
    problems: &mut Problems,
) -> Option<KeyRing> {
    if raw.is_empty() {
        problems.push(
            "sealing_keys",
            Problem::Required("at least one sealing key is required"),
        );
        return None;
    }
    let before = problems.count();
    let raw_ids: Vec<String> = raw.iter().map(|k| k.id.clone()).collect();
    let mut keys: Vec<SealingKey> = Vec::with_capacity(raw.len());
    for (i, k) in raw.into_iter().enumerate() {
        let id = KeyId::parse(&k.id)
            .map_err(|e| problems.push(format!("sealing_keys[{i}].id"), Problem::Identifier(e)))
            .ok();
        if keys.iter().any(|other| other.id.as_str() == k.id) {
            problems.push(
                format!("sealing_keys[{i}].id"),
                Problem::Duplicate {
                    what: "id",
                    id: k.id.clone(),
                },
            );
        }
        let key = k
            .key
            .resolve(vars, "64 hex digits (32 bytes)", SealingKeyBytes::from_hex)
            .map_err(|problem| problems.push(format!("sealing_keys[{i}].key"), problem))
            .ok();
        if let (Some(id), Some(key)) = (id, key) {
            keys.push(SealingKey { id, key });
        }
    }
    let active = active_key(&keys, active, problems)?;
    let ring = KeyRing::new(keys, &active);
    // A key that is named but invalid has its own problem already.
    if ring.is_none() && !raw_ids.iter().any(|id| id == active.as_str()) {
        problems.push(
            "active_sealing_key",
            Problem::Unresolved {
                what: "sealing key",
                name: active.to_string(),
                section: "sealing_keys",
            },
        );
    }
    ring.filter(|_| problems.count() == before)
}

/// The active key's id: as configured, or the only key's.
fn active_key(
    keys: &[SealingKey],
    active: Option<String>,
    problems: &mut Problems,
) -> Option<KeyId> {
    match (active, keys) {
        (Some(id), _) => KeyId::parse(&id)
            .map_err(|e| problems.push("active_sealing_key", Problem::Identifier(e)))
            .ok(),
        (None, [only]) => Some(only.id.clone()),
        (None, []) => None,
        (None, _) => {
            problems.push(
                "active_sealing_key",
                Problem::Required("required when there is more than one sealing key"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo configuration of the shared test fixtures (the
    /// `fpgen-fixtures` crate cannot be used here: it links the library
    /// built without `cfg(test)`).
    const DEMO_CONFIG: &str = include_str!("../../../tests/fixtures/demo-config.json");
    const SEALING_KEY_HEX: &str =
        "a88deb5c6fc4b09434f9dab3a25f79cd7ddf67a025c179c9a9b6153dbf56f132";

    /// The demo configuration with a second, production customer and the
    /// gate off (the shape most of these tests edit).
    fn demo_with(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_str(DEMO_CONFIG).unwrap();
        assert_eq!(v["sealing_keys"][0]["key"], SEALING_KEY_HEX);
        let authenticator = v["customers"][0]["authenticator_sha256"].clone();
        let second = serde_json::json!({"id": "200002", "environment": "production",
            "authenticator_sha256": authenticator});
        v["customers"].as_array_mut().unwrap().push(second);
        v.as_object_mut().unwrap().remove("redemption");
        edit(&mut v);
        v.to_string()
    }

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
    fn every_problem_of_every_section_is_reported() {
        let json = demo_with(|v| {
            v["sealing_keys"] = serde_json::json!([
                {"id": "a b", "key": "00"},
                {"id": "ok", "key": "zz"}
            ]);
            v["active_sealing_key"] = "ok".into();
            v["redeem_url"] = serde_json::json!({"scheme": "ftp", "port": 0, "path": "x"});
            v["redemption"] = serde_json::json!({"path_prefix": "x", "header_prefix": "X", "error_format": "xml"});
        });
        let errors = Config::from_json(json.as_bytes()).unwrap_err();
        let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "redeem_url.scheme",
                "redeem_url.port",
                "redeem_url.path",
                "sealing_keys[0].id",
                "sealing_keys[0].key",
                "sealing_keys[1].key",
                "redemption.path_prefix",
                "redemption.header_prefix",
                "redemption.error_format",
            ]
        );
    }

    /// A reader that hands over at most 7 bytes a call, like Envoy handing
    /// the configuration over in chunks that split tokens.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_configuration_read_in_pieces_is_the_same_configuration() {
        let json = demo_with(|v| {
            let store = &mut v["customers"][0]["key_store"];
            store["^named-key"] = "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5".into();
        });
        let whole = Config::from_json(json.as_bytes()).unwrap();
        let pieces = Config::from_reader(Trickle(json.as_bytes())).unwrap();
        assert_eq!(whole.summary(), pieces.summary());
        assert_eq!(whole.customers.len(), pieces.customers.len());
        for (id, c) in &whole.customers {
            let p = &pieces.customers[id];
            assert_eq!(c.key_store, p.key_store);
            assert_eq!(c.authenticator_sha256, p.authenticator_sha256);
        }
        assert_eq!(pieces.customers["100001"].key_store.len(), 2);
        // and the errors, with their fields
        let bad = demo_with(|v| v["customers"][0]["key_store"]["zz"] = "00".into());
        assert_eq!(
            Config::from_json(bad.as_bytes()).unwrap_err(),
            Config::from_reader(Trickle(bad.as_bytes())).unwrap_err()
        );
        let shape = demo_with(|v| v["customers"][0]["key_store"]["aa"] = 5.into());
        let e = Config::from_reader(Trickle(shape.as_bytes())).unwrap_err();
        assert_eq!(e.0[0].field, "customers[0].key_store.aa", "{e}");
    }

    #[test]
    fn key_store_entries_report_their_kid_never_their_value() {
        let wrapped = "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5";
        let cases = [
            ("^", wrapped, "invalid kid: "),
            ("abcd", wrapped, "invalid kid: "),
            (
                "aaaabbbbccccddddeeeeffff00001111",
                "1fa6",
                "expected 48 hex digits",
            ),
        ];
        // A 32-digit hex kid could be an AES-128 key: it is described, and
        // the entry is told by its place in the store (the demo's own kid is
        // entry 1).
        let labels = ["^", "abcd", "<32 hex digits, not shown> (entry 2)"];
        for ((kid, value, problem), label) in cases.into_iter().zip(labels) {
            let json = demo_with(|v| v["customers"][0]["key_store"][kid] = value.into());
            let e = err(&json);
            assert_eq!(e.field, format!("customers[0].key_store.{label}"));
            assert!(e.problem.to_string().starts_with(problem), "{e}");
            assert!(!e.to_string().contains(value), "{e}");
        }
    }

    /// A kid written twice in one store, in the same spelling, is refused
    /// like two spellings of one kid (the JSON parser used to keep the last).
    #[test]
    fn a_kid_written_twice_is_refused() {
        let json = fpgen_json_with_store(
            r#"{"11112222333344445555666677778888": "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5",
                "11112222333344445555666677778888": "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5"}"#,
        );
        let e = err(&json);
        assert_eq!(
            e.field,
            "customers[0].key_store.<32 hex digits, not shown> (entry 2)"
        );
        assert_eq!(
            e.problem.to_string(),
            "duplicate kid <32 hex digits, not shown>"
        );
    }

    /// The demo configuration with its first customer's key store written
    /// as `store` (raw JSON text, so that a key can appear twice).
    fn fpgen_json_with_store(store: &str) -> String {
        let marker = "\"key_store-marker\"";
        let json = demo_with(|v| v["customers"][0]["key_store"] = "key_store-marker".into());
        json.replace(marker, store)
    }

    #[test]
    fn dotted_customer_ids_are_refused_with_the_rule() {
        let e = err(&demo_with(|v| v["customers"][1]["id"] = "acme.eu".into()));
        assert_eq!(e.field, "customers[1].id");
        assert_eq!(
            e.problem.to_string(),
            "expected 1 to 64 characters of [A-Za-z0-9_-]"
        );
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
        assert!(Config::from_json(demo_with(|_| {}).as_bytes())
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

    #[test]
    fn demo_parses() {
        let c = Config::from_json(demo_with(|_| {}).as_bytes()).unwrap();
        assert_eq!(c.environment, Environment::Test);
        assert_eq!(c.sealing_keys.active().unwrap().id.as_str(), "demo-2026-11");
        assert_eq!(c.customers.len(), 2);
        assert_eq!(c.customers["100001"].key_store.len(), 1);
        assert_eq!(c.max_body_bytes, 8192);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = err(&demo_with(|v| v["customers"][0]["secret"] = "x".into()));
        assert_eq!(e.field, "customers[0].secret");
        assert!(
            e.problem.to_string().contains("unknown field `secret`"),
            "{e}"
        );
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
        assert!(
            e.problem
                .to_string()
                .contains("missing field `sealing_keys`"),
            "{e}"
        );
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

    const KEK_HEX: &str = "000102030405060708090a0b0c0d0e0f";
    const KID: &str = "11112222333344445555666677778888";
    const WRAPPED_HEX: &str = "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5";

    /// The demo with its sealing key, its KEK and its stored key given as
    /// `{"env": …}` references to FPGEN_SEALING_KEY, FPGEN_KEK and
    /// FPGEN_WRAPPED.
    fn demo_from_env() -> String {
        let mut v: serde_json::Value = serde_json::from_str(DEMO_CONFIG).unwrap();
        v["sealing_keys"][0]["key"] = serde_json::json!({"env": "FPGEN_SEALING_KEY"});
        v["keks"]["demo-kek"] = serde_json::json!({"env": "FPGEN_KEK"});
        v["customers"][0]["key_store"][KID] = serde_json::json!({"env": "FPGEN_WRAPPED"});
        v.to_string()
    }

    /// The environment of [`demo_from_env`]'s variables, with `edit` applied.
    fn vars_with(
        edit: impl Fn(&str, &'static str) -> Option<&'static str>,
    ) -> impl Fn(&str) -> Option<String> {
        move |name| {
            let value = match name {
                "FPGEN_SEALING_KEY" => SEALING_KEY_HEX,
                "FPGEN_KEK" => KEK_HEX,
                "FPGEN_WRAPPED" => WRAPPED_HEX,
                _ => return None,
            };
            edit(name, value).map(str::to_owned)
        }
    }

    #[test]
    fn secrets_from_the_environment_are_the_secrets_written_as_hex() {
        let literal = Config::from_json(DEMO_CONFIG.as_bytes()).unwrap();
        // a Kubernetes Secret made from a file ends in a newline
        let vars = vars_with(|name, value| {
            Some(if name == "FPGEN_KEK" {
                "000102030405060708090a0b0c0d0e0f\n"
            } else {
                value
            })
        });
        let json = demo_from_env();
        let env = Config::from_json_with(json.as_bytes(), &vars).unwrap();
        let pieces = Config::from_reader_with(Trickle(json.as_bytes()), &vars).unwrap();
        for config in [&env, &pieces] {
            assert_eq!(
                config.sealing_keys.active().unwrap().key,
                literal.sealing_keys.active().unwrap().key
            );
            let (c, l) = (&config.customers["100001"], &literal.customers["100001"]);
            assert_eq!(c.kek, l.kek);
            assert_eq!(c.key_store, l.key_store);
            assert!(c.kek.is_some() && c.key_store.len() == 1);
        }
        assert!(
            env.summary()
                .ends_with("redemption gate on, 3 secret(s) from the environment"),
            "{}",
            env.summary()
        );
        assert!(literal.summary().ends_with("redemption gate on"));
    }

    #[test]
    fn a_missing_or_malformed_variable_is_named_with_its_field_never_its_value() {
        let json = demo_from_env();
        let unset = Config::from_json_with(json.as_bytes(), &vars_with(|_, _| None)).unwrap_err();
        let fields: Vec<(&str, String)> = unset
            .0
            .iter()
            .map(|e| (e.field.as_str(), e.problem.to_string()))
            .collect();
        // (a host adds where it takes its variables from: Vars::unset_hint)
        let not_set = |v: &str| format!("environment variable {v:?} is not set");
        assert_eq!(
            fields,
            [
                ("sealing_keys[0].key", not_set("FPGEN_SEALING_KEY")),
                ("keks.demo-kek", not_set("FPGEN_KEK")),
                (
                    "customers[0].key_store.<32 hex digits, not shown> (entry 1)",
                    not_set("FPGEN_WRAPPED")
                ),
            ]
        );
        // each value one digit short: named, never shown
        let short = vars_with(|_, value| Some(&value[1..]));
        let errors = Config::from_json_with(json.as_bytes(), &short).unwrap_err();
        assert_eq!(errors.0.len(), 3, "{errors}");
        assert_eq!(
            errors.0[0].to_string(),
            "invalid fpgen configuration: sealing_keys[0].key: environment variable \
             \"FPGEN_SEALING_KEY\": expected 64 hex digits (32 bytes)"
        );
        let text = errors.to_string();
        for value in [SEALING_KEY_HEX, KEK_HEX, WRAPPED_HEX] {
            assert!(!text.contains(&value[1..9]), "{text}");
        }
        assert!(text.contains("\"FPGEN_KEK\": expected 32, 48 or 64 hex digits"));
        assert!(text.contains("\"FPGEN_WRAPPED\": expected 48 hex digits"));
    }

    #[test]
    fn an_env_reference_has_one_field_env_naming_a_variable() {
        for (reference, expected) in [
            (
                r#"{"env": "A", "default": "00"}"#,
                "unknown field `default`, expected `env`",
            ),
            ("{}", "missing field `env`"),
            (
                r#"{"env": 5}"#,
                "invalid type: integer `5`, expected a string",
            ),
            (
                "5",
                "expected a string of hex digits or {\"env\": \"VARIABLE\"}",
            ),
        ] {
            let json = demo_with(|v| v["sealing_keys"][0]["key"] = "marker".into())
                .replace("\"marker\"", reference);
            let e = err(&json);
            assert!(e.field.starts_with("sealing_keys[0].key"), "{e}");
            assert!(e.problem.to_string().contains(expected), "{e}");
        }
        let json = demo_with(|v| v["sealing_keys"][0]["key"] = serde_json::json!({"env": "A=B"}));
        let e = Config::from_json_with(json.as_bytes(), &|_: &str| None).unwrap_err();
        assert_eq!(e.0[0].field, "sealing_keys[0].key");
        assert!(e.0[0]
            .problem
            .to_string()
            .starts_with("expected an environment variable's name"));
        // a key pasted as the variable's name is refused without being shown
        let key = serde_json::json!({"env": SEALING_KEY_HEX});
        let json = demo_with(|v| v["sealing_keys"][0]["key"] = key);
        let e = Config::from_json_with(json.as_bytes(), &|_: &str| None).unwrap_err();
        assert!(!e.to_string().contains(&SEALING_KEY_HEX[..16]), "{e}");
        assert!(e.to_string().contains("not hex digits"), "{e}");
    }

    #[test]
    fn errors_never_echo_key_material() {
        let e = err(&demo_with(|v| {
            v["sealing_keys"][0]["key"] = SEALING_KEY_HEX[..32].into()
        }));
        assert!(!e.to_string().contains("a88deb5c"), "{e}");
        let c = Config::from_json(demo_with(|_| {}).as_bytes()).unwrap();
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

    /// `rate_limit_service` and `fleet_budget`: defaults, the values read,
    /// and each mistake with its field (a fleet budget needs a service).
    #[test]
    fn fleet_budgets_are_read_and_checked() {
        let json = demo_with(|v| {
            v["rate_limit_service"] = serde_json::json!({"cluster": "ratelimit"});
            v["customers"][0]["fleet_budget"] =
                serde_json::json!({"tokens": 1000, "per": "month", "lease": 50});
            v["customers"][1]["fleet_budget"] = serde_json::json!({"tokens": 5, "per": "second"});
        });
        let c = Config::from_json(json.as_bytes()).unwrap();
        assert_eq!(
            c.rate_limit_service,
            Some(RateLimitService {
                cluster: "ratelimit".into(),
                domain: "fpgen".into(),
                timeout_ms: 100,
                failure_mode: FailureMode::Closed,
            })
        );
        let budget = |id: &str| c.customers[id].fleet_budget;
        let month = FleetBudget {
            tokens: 1000,
            per: Period::Month,
            lease: 50,
        };
        assert_eq!(budget("100001"), Some(month));
        assert_eq!(budget("200002").map(|b| (b.tokens, b.lease)), Some((5, 1)));
        assert!(c
            .summary()
            .contains("2 fleet budget(s) on cluster \"ratelimit\" (failure mode closed)"));
        let open = demo_with(|v| {
            v["rate_limit_service"] = serde_json::json!({"cluster": "rls", "domain": "edge-eu",
                "timeout_ms": 250, "failure_mode": "open"});
        });
        let service = Config::from_json(open.as_bytes())
            .unwrap()
            .rate_limit_service;
        let service = service.unwrap();
        assert_eq!(
            (service.domain.as_str(), service.timeout_ms),
            ("edge-eu", 250)
        );
        assert_eq!(service.failure_mode, FailureMode::Open);
        // Cluster names as operators write them are names, not messages.
        for name in [
            "ratelimit",
            "rls",
            "ratelimit_cluster",
            "envoy-ratelimit",
            "outbound|8081||ratelimit.default.svc.cluster.local",
        ] {
            let json =
                demo_with(|v| v["rate_limit_service"] = serde_json::json!({"cluster": name}));
            assert!(Config::from_json(json.as_bytes()).is_ok(), "{name}");
        }
    }

    type Edit = fn(&mut serde_json::Value);

    /// Mistakes in fleet budgets: the edit, the field named, the message.
    #[allow(clippy::too_many_lines)] // a table, one row per mistake
    fn fleet_mistakes() -> [(Edit, &'static str, &'static str); 10] {
        [
            (
                |v| v["rate_limit_service"]["cluster"] = "envoy".into(),
                "rate_limit_service.cluster",
                "does not read as a serialized GrpcService",
            ),
            (
                |v| {
                    v.as_object_mut().unwrap().remove("rate_limit_service");
                    v["customers"][0]["fleet_budget"] =
                        serde_json::json!({"tokens": 5, "per": "day"});
                },
                "customers[0].fleet_budget",
                "a rate_limit_service (top level) to keep it",
            ),
            (
                |v| {
                    v["customers"][0]["fleet_budget"] =
                        serde_json::json!({"tokens": 0, "per": "day"})
                },
                "customers[0].fleet_budget.tokens",
                "expected 1 to 4294967295",
            ),
            (
                |v| {
                    v["customers"][0]["fleet_budget"] =
                        serde_json::json!({"tokens": 4_294_967_296_u64, "per": "day"});
                },
                "customers[0].fleet_budget.tokens",
                "expected 1 to 4294967295",
            ),
            (
                |v| {
                    v["customers"][0]["fleet_budget"] =
                        serde_json::json!({"tokens": 10, "per": "day", "lease": 11});
                },
                "customers[0].fleet_budget.lease",
                "expected 1 to 10",
            ),
            (
                |v| {
                    v["customers"][0]["fleet_budget"] =
                        serde_json::json!({"tokens": 10, "per": "week"})
                },
                "customers[0].fleet_budget.per",
                "unknown variant",
            ),
            (
                |v| v["customers"][0]["fleet_budget"] = serde_json::json!({"tokens": 10}),
                "customers[0].fleet_budget",
                "missing field `per`",
            ),
            (
                |v| v["rate_limit_service"]["timeout_ms"] = 0.into(),
                "rate_limit_service.timeout_ms",
                "expected 1 to 10000",
            ),
            (
                |v| v["rate_limit_service"]["cluster"] = "two words".into(),
                "rate_limit_service.cluster",
                "expected 1 to 255 visible ASCII characters",
            ),
            (
                |v| v["rate_limit_service"]["failure_mode"] = "maybe".into(),
                "rate_limit_service.failure_mode",
                "unknown variant",
            ),
        ]
    }

    /// Each mistake in `rate_limit_service` or a `fleet_budget` is named
    /// by its field.
    #[test]
    fn fleet_budget_mistakes_name_their_field() {
        let with_service = |edit: Edit| {
            demo_with(|v| {
                v["rate_limit_service"] = serde_json::json!({"cluster": "ratelimit"});
                edit(v);
            })
        };
        let cases = fleet_mistakes();
        for (edit, field, message) in cases {
            let e = err(&with_service(edit));
            assert_eq!(e.field, field, "{e}");
            assert!(e.to_string().contains(message), "{e}");
        }
    }
}
