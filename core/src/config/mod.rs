//! The filter configuration: JSON in the filter's `configuration` field,
//! parsed and validated once into typed values. Every error names its field;
//! every section reports every problem it finds (only a shape error, which
//! stops the JSON parser, is reported alone).

use crate::error::ErrorFormat;
use crate::ids::{CustomerId, IdError, KeyId, Kid, KidError};
use crate::licence::{Drm, Environment};
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
mod problems;
mod raw;
mod secrets;
mod shown;
mod validate;
pub use fleet::{FailureMode, FleetBudget, Period, RateLimitService};
use problems::Problems;
pub use problems::{ConfigError, ConfigErrors, Problem};
use raw::*;
use validate::*;

/// Default cap on a POST body, in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024;
/// The largest cap an operator may configure.
pub const MAX_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default cap on a PlayReady licence challenge the gate reads, in bytes
/// (a challenge is some 3 to 10 KB; the shipped listeners buffer at most
/// 32 KiB of a request, `per_connection_buffer_limit_bytes`).
pub const DEFAULT_MAX_CHALLENGE_BYTES: usize = 32 * 1024;

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

/// The validated configuration, shared read-only by every request. Its
/// fields are the core's: outside it, a `Config` is made only by
/// validation ([`Config::from_json`] and its kin) and read through its
/// methods, so no unvalidated one can be built or changed.
#[derive(Debug)]
pub struct Config {
    pub(crate) environment: Environment,
    pub(crate) redeem_url: RedeemUrl,
    /// Widevine's licence URL (`widevine_redeem_url`).
    pub(crate) widevine_redeem_url: RedeemUrl,
    /// PlayReady's licence acquisition URL (`playready_redeem_url`).
    pub(crate) playready_redeem_url: RedeemUrl,
    pub(crate) sealing_keys: KeyRing,
    pub(crate) customers: HashMap<CustomerId, Customer>,
    pub(crate) max_body_bytes: usize,
    /// The redemption gate; `None` when it is off.
    pub(crate) redemption: Option<Redemption>,
    pub(crate) client_address: ClientAddressPolicy,
    /// Where fleet budgets are asked (`None`: not configured).
    pub(crate) rate_limit_service: Option<RateLimitService>,
    /// How many secret values were read from the environment
    /// (`{"env": …}`), for the summary.
    pub(crate) secrets_from_env: usize,
}

/// The redemption gate at the licence path: verify tokens, hand their
/// licence data upstream in headers.
#[derive(Debug, Clone)]
pub struct Redemption {
    /// Requests whose path starts with this are checked (FairPlay's
    /// licence path).
    pub path_prefix: String,
    /// Widevine's licence path: requests whose path starts with this are
    /// checked for a Widevine token.
    pub widevine_path_prefix: String,
    /// PlayReady's licence path: requests whose path starts with this are
    /// checked for a PlayReady token, in the query or in the challenge's
    /// `CustomData`.
    pub playready_path_prefix: String,
    /// The largest PlayReady challenge the gate reads, in bytes; a larger
    /// one is refused (413).
    pub max_challenge_bytes: usize,
    /// Prefix of the licence-data headers; incoming headers with it are removed.
    pub header_prefix: String,
    /// Remove the `ExpressPlayToken` query parameter before going upstream
    /// (the default: a token is a bearer credential for up to 30 days and
    /// does not belong in licence-server logs).
    pub strip_token: bool,
    /// How -4010 is rendered.
    pub error_format: ErrorFormat,
}

impl Redemption {
    /// Each DRM's licence path prefix.
    pub fn path_prefixes(&self) -> impl Iterator<Item = (Drm, &str)> {
        [
            (Drm::FairPlay, self.path_prefix.as_str()),
            (Drm::Widevine, self.widevine_path_prefix.as_str()),
            (Drm::PlayReady, self.playready_path_prefix.as_str()),
        ]
        .into_iter()
    }
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

/// A customer account, as validated (its fields are the core's). Its `Debug` shows neither the authenticator's
/// digest nor the wrapped keys of its key store (their kids and number
/// only).
pub struct Customer {
    pub(crate) id: CustomerId,
    pub(crate) environment: Environment,
    /// SHA-256 of the authenticator's secret part.
    pub(crate) authenticator_sha256: [u8; 32],
    /// The KEK that opens this customer's key store, when the request has none.
    pub(crate) kek: Option<Kek>,
    /// kid to AES-KW-wrapped content key (24 bytes).
    pub(crate) key_store: HashMap<Kid, [u8; 24]>,
    /// `false`: the account is disabled (-2031).
    pub(crate) enabled: bool,
    /// `false`: the account's service does not include FairPlay (-6006).
    pub(crate) fairplay_authorized: bool,
    /// `false`: FairPlay is included but switched off (-6009).
    pub(crate) fairplay_enabled: bool,
    /// `true`: the customer may mint Widevine tokens (else -7011).
    pub(crate) widevine_enabled: bool,
    /// `true`: the customer may mint PlayReady tokens (else -5002).
    pub(crate) playready_enabled: bool,
    /// When set, requests must come from one of these networks (-2003).
    pub(crate) allowed_networks: Option<Vec<ipnet::IpNet>>,
    /// When set, at most this many tokens per Envoy instance (-2019).
    pub(crate) token_budget: Option<u64>,
    /// When set, at most this many tokens per period across every Envoy
    /// that asks the same rate-limit service (-2019).
    pub(crate) fleet_budget: Option<FleetBudget>,
    /// When set (Unix seconds), the redemption gate refuses the customer's
    /// tokens issued before it: revocation without a key rotation.
    pub(crate) tokens_not_before: Option<i64>,
}

impl Customer {
    /// The customer's id.
    pub fn id(&self) -> &CustomerId {
        &self.id
    }

    /// The environment its authenticator belongs to.
    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// Its `token_budget`: at most this many tokens per Envoy.
    pub fn token_budget(&self) -> Option<u64> {
        self.token_budget
    }

    /// Its `fleet_budget`: at most this many tokens per period, fleet-wide.
    pub fn fleet_budget(&self) -> Option<FleetBudget> {
        self.fleet_budget
    }
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
            .field("widevine_enabled", &self.widevine_enabled)
            .field("playready_enabled", &self.playready_enabled)
            .field("allowed_networks", &self.allowed_networks)
            .field("token_budget", &self.token_budget)
            .field("fleet_budget", &self.fleet_budget)
            .field("tokens_not_before", &self.tokens_not_before)
            .finish()
    }
}

impl Config {
    /// The environment this configuration serves.
    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// The sealing keys: the active one, and those that still open tokens.
    pub fn sealing_keys(&self) -> &KeyRing {
        &self.sealing_keys
    }

    /// Every customer, in no order.
    pub fn customers(&self) -> impl Iterator<Item = &Customer> {
        self.customers.values()
    }

    /// Customer `id`, when there is one.
    pub fn customer(&self, id: &CustomerId) -> Option<&Customer> {
        self.customers.get(id)
    }

    /// The cap on a POST body, in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The licence URL of `drm`'s tokens.
    pub fn redeem_url(&self, drm: Drm) -> &RedeemUrl {
        match drm {
            Drm::FairPlay => &self.redeem_url,
            Drm::Widevine => &self.widevine_redeem_url,
            Drm::PlayReady => &self.playready_redeem_url,
        }
    }

    /// The redemption gate; `None` when it is off.
    pub fn redemption(&self) -> Option<&Redemption> {
        self.redemption.as_ref()
    }

    /// Where fleet budgets are asked; `None` when it is not configured.
    pub fn rate_limit_service(&self) -> Option<&RateLimitService> {
        self.rate_limit_service.as_ref()
    }

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
        let redeem_url =
            validate_redeem_url(raw.redeem_url, Drm::FairPlay, raw.environment, problems);
        let widevine_redeem_url = validate_redeem_url(
            raw.widevine_redeem_url,
            Drm::Widevine,
            raw.environment,
            problems,
        );
        let playready_redeem_url = validate_redeem_url(
            raw.playready_redeem_url,
            Drm::PlayReady,
            raw.environment,
            problems,
        );
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
            widevine_redeem_url: widevine_redeem_url?,
            playready_redeem_url: playready_redeem_url?,
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

#[cfg(test)]
mod tests;
