//! Each section's validation: raw shapes (`raw`) in, the validated model
//! (`mod.rs`) out, every problem named with its field (`problems`).

use super::*;

/// A parser's path as a field name (`customers[0].key_store.<kid>`), each
/// map key shown only when it cannot be key material.
pub(super) fn field_of(path: &serde_path_to_error::Path) -> String {
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
pub(super) fn validate_keks(
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

pub(super) fn validate_customers(
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
pub(super) fn validate_customer(
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
        widevine_enabled: c.widevine_enabled.unwrap_or(false),
        playready_enabled: c.playready_enabled.unwrap_or(false),
        allowed_networks,
        token_budget: c.token_budget,
        fleet_budget,
        tokens_not_before,
    })
}

/// The KEK a customer names, from `keks`.
pub(super) fn resolve_kek(
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
pub(super) fn parse_rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

/// The key store read by [`RawKeyStore`], its `{"env": …}` entries read
/// from `vars`, with its problems reported under `field.<kid>`.
pub(super) fn validate_key_store(
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

pub(super) fn validate_networks(
    field: &str,
    raw: &[String],
    problems: &mut Problems,
) -> Vec<ipnet::IpNet> {
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
pub(super) fn parse_network(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| {
            text.parse::<std::net::IpAddr>()
                .ok()
                .map(ipnet::IpNet::from)
        })
        .map(|net| net.trunc())
}

pub(super) fn validate_redemption(
    raw: Option<RawRedemption>,
    problems: &mut Problems,
) -> Option<Option<Redemption>> {
    let Some(raw) = raw.filter(|r| r.enabled != Some(false)) else {
        return Some(None);
    };
    let before = problems.count();
    let [path_prefix, widevine_path_prefix, playready_path_prefix] = validate_prefixes(
        [
            raw.path_prefix,
            raw.widevine_path_prefix,
            raw.playready_path_prefix,
        ],
        problems,
    );
    let max_challenge_bytes = raw
        .max_challenge_bytes
        .unwrap_or(DEFAULT_MAX_CHALLENGE_BYTES);
    if max_challenge_bytes == 0 || max_challenge_bytes > MAX_MAX_BODY_BYTES {
        problems.push(
            "redemption.max_challenge_bytes",
            Problem::OutOfRange {
                min: 1,
                max: MAX_MAX_BODY_BYTES as u64,
            },
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
        widevine_path_prefix,
        playready_path_prefix,
        max_challenge_bytes,
        header_prefix,
        strip_token: raw.strip_token.unwrap_or(true),
        error_format: error_format?,
    }))
}

/// The gate's licence path prefixes (FairPlay's, Widevine's, PlayReady's),
/// each checked, and each other than those before it.
fn validate_prefixes(raw: [Option<String>; 3], problems: &mut Problems) -> [String; 3] {
    let [fairplay, widevine, playready] = raw;
    let path_prefix = validate_prefix(fairplay, Drm::FairPlay, "path_prefix", problems);
    let widevine_path_prefix =
        validate_prefix(widevine, Drm::Widevine, "widevine_path_prefix", problems);
    let playready_path_prefix =
        validate_prefix(playready, Drm::PlayReady, "playready_path_prefix", problems);
    if widevine_path_prefix == path_prefix {
        problems.push(
            "redemption.widevine_path_prefix",
            Problem::Expected("a path other than path_prefix (each DRM has its licence path)"),
        );
    }
    if playready_path_prefix == path_prefix || playready_path_prefix == widevine_path_prefix {
        problems.push(
            "redemption.playready_path_prefix",
            Problem::Expected(
                "a path other than path_prefix and widevine_path_prefix (each DRM has its licence path)",
            ),
        );
    }
    [path_prefix, widevine_path_prefix, playready_path_prefix]
}

/// A licence path prefix of the gate (`redemption.<field>`), by default
/// `drm`'s hosted licence path.
fn validate_prefix(raw: Option<String>, drm: Drm, field: &str, problems: &mut Problems) -> String {
    let prefix = raw.unwrap_or_else(|| drm.rights_path().to_owned());
    if !prefix.starts_with('/')
        || !prefix.bytes().all(|b| b.is_ascii_graphic())
        || prefix.contains('?')
    {
        problems.push(
            format!("redemption.{field}"),
            Problem::Expected("an absolute path of visible ASCII, no query"),
        );
    }
    prefix
}

/// The licence URL of `drm`'s tokens (`redeem_url`, `widevine_redeem_url`,
/// `playready_redeem_url`).
pub(super) fn validate_redeem_url(
    raw: RawRedeemUrl,
    drm: Drm,
    env: Environment,
    problems: &mut Problems,
) -> Option<RedeemUrl> {
    let before = problems.count();
    let section = match drm {
        Drm::FairPlay => "redeem_url",
        Drm::Widevine => "widevine_redeem_url",
        Drm::PlayReady => "playready_redeem_url",
    };
    let field = |name: &str| format!("{section}.{name}");
    let scheme = raw.scheme.unwrap_or_else(|| "http".to_owned());
    if scheme != "http" && scheme != "https" {
        problems.push(field("scheme"), Problem::Expected("\"http\" or \"https\""));
    }
    let host = raw
        .host
        .unwrap_or_else(|| default_redeem_host(drm, env).to_owned());
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b));
    if !host_ok {
        problems.push(
            field("host"),
            Problem::Expected("a host name or an IP address"),
        );
    }
    let port = raw.port.unwrap_or(80);
    if port == 0 {
        problems.push(field("port"), Problem::OutOfRange { min: 1, max: 65535 });
    }
    let path = raw.path.unwrap_or_else(|| drm.rights_path().to_owned());
    let path_ok =
        path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()) && !path.contains('#');
    if !path_ok {
        problems.push(
            field("path"),
            Problem::Expected("an absolute path of visible ASCII"),
        );
    }
    (problems.count() == before).then(|| RedeemUrl::new(&scheme, &host, port, &path))
}

/// The hosted service's licence host for each DRM and environment.
pub(super) const fn default_redeem_host(drm: Drm, env: Environment) -> &'static str {
    match (drm, env) {
        (Drm::FairPlay, Environment::Test) => "fp.test.expressplay.com",
        (Drm::FairPlay, Environment::Production) => "fp.service.expressplay.com",
        (Drm::Widevine, Environment::Test) => "wv.test.expressplay.com",
        (Drm::Widevine, Environment::Production) => "wv.service.expressplay.com",
        (Drm::PlayReady, Environment::Test) => "pr.test.expressplay.com",
        (Drm::PlayReady, Environment::Production) => "pr.service.expressplay.com",
    }
}

pub(super) fn validate_sealing_keys(
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
pub(super) fn active_key(
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
