//! The configuration's JSON shape, as serde reads it: every field as
//! written, before validation (`validate`); wrapped keys and the key store
//! read without a copy of their text.

use super::*;

// ---- the JSON shape -------------------------------------------------------

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the fpgen configuration: an object with environment, sealing_keys and customers"
)]
pub(super) struct RawConfig {
    pub(super) environment: Environment,
    #[serde(default)]
    pub(super) redeem_url: RawRedeemUrl,
    #[serde(default)]
    pub(super) widevine_redeem_url: RawRedeemUrl,
    #[serde(default)]
    pub(super) playready_redeem_url: RawRedeemUrl,
    pub(super) sealing_keys: Vec<RawSealingKey>,
    pub(super) active_sealing_key: Option<String>,
    #[serde(default)]
    pub(super) keks: BTreeMap<String, RawSecret>,
    pub(super) customers: Vec<RawCustomer>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) redemption: Option<RawRedemption>,
    #[serde(default)]
    pub(super) client_address: ClientAddressPolicy,
    pub(super) rate_limit_service: Option<RawRateLimitService>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object (the rate-limit service: cluster, domain, timeout_ms, failure_mode)"
)]
pub(super) struct RawRateLimitService {
    pub(super) cluster: String,
    pub(super) domain: Option<String>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) failure_mode: Option<FailureMode>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object (a fleet budget: tokens, per and lease)"
)]
pub(super) struct RawFleetBudget {
    pub(super) tokens: u64,
    pub(super) per: Period,
    pub(super) lease: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object (the redemption gate)")]
pub(super) struct RawRedemption {
    pub(super) enabled: Option<bool>,
    pub(super) path_prefix: Option<String>,
    pub(super) widevine_path_prefix: Option<String>,
    pub(super) playready_path_prefix: Option<String>,
    pub(super) max_challenge_bytes: Option<usize>,
    pub(super) header_prefix: Option<String>,
    pub(super) strip_token: Option<bool>,
    pub(super) error_format: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "an object (the licence URL)")]
pub(super) struct RawRedeemUrl {
    pub(super) scheme: Option<String>,
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) path: Option<String>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a sealing key: an object with id and key"
)]
pub(super) struct RawSealingKey {
    pub(super) id: String,
    pub(super) key: RawSecret,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a customer: an object with id, environment and authenticator_sha256"
)]
pub(super) struct RawCustomer {
    pub(super) id: String,
    pub(super) environment: Environment,
    pub(super) authenticator_sha256: String,
    pub(super) kek: Option<String>,
    #[serde(default)]
    pub(super) key_store: RawKeyStore,
    pub(super) enabled: Option<bool>,
    pub(super) fairplay_authorized: Option<bool>,
    pub(super) fairplay_enabled: Option<bool>,
    pub(super) widevine_enabled: Option<bool>,
    pub(super) playready_enabled: Option<bool>,
    pub(super) allowed_networks: Option<Vec<String>>,
    pub(super) token_budget: Option<u64>,
    pub(super) fleet_budget: Option<RawFleetBudget>,
    pub(super) tokens_not_before: Option<String>,
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
pub(super) struct RawKeyStore {
    pub(super) entries: HashMap<Kid, [u8; 24]>,
    pub(super) problems: Vec<(String, Problem)>,
    /// kid as shown in messages ([`entry_label`]), kid, variable
    pub(super) from_env: Vec<(String, Kid, String)>,
}

impl<'de> Deserialize<'de> for RawKeyStore {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(KeyStoreVisitor)
    }
}

pub(super) struct KeyStoreVisitor;

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
pub(super) fn entry_label(kid_text: &str, index: usize) -> String {
    if shown::is_shown(kid_text) {
        kid_text.to_owned()
    } else {
        format!("{} (entry {index})", shown::name(kid_text))
    }
}

/// What a key store's value must be.
pub(super) const WRAPPED_KEY: &str = "48 hex digits (a 16-byte key wrapped with AES-KW)";

/// A wrapped key as written: decoded from hex as it is read (`None` when
/// it is not 48 hex digits), or the variable that holds it.
pub(super) enum Wrapped {
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

pub(super) fn decode_wrapped(text: &str) -> Option<[u8; 24]> {
    let mut wrapped = [0u8; 24];
    hex::decode_to_slice(text, &mut wrapped)
        .ok()
        .map(|()| wrapped)
}
