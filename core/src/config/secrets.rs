//! Secret values of the configuration (sealing keys, KEKs, a key store's
//! wrapped keys): written as hex in the JSON, or as `{"env": "VARIABLE"}`
//! and read from the environment when the configuration is parsed. In
//! Envoy the environment is what `vm_config.environment_variables` hands
//! the VM (`host_env_keys`: variables of Envoy's own process), so the
//! values appear in neither the filter configuration nor `/config_dump`.
//!
//! Nothing here puts a value into an error: problems name the field (the
//! caller's) and the variable.

use super::Problem;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::env::VarError;
use std::fmt;
use zeroize::Zeroizing;

/// Where `{"env": "VARIABLE"}` references are looked up.
pub trait Vars {
    /// The variable's value: `Err(NotPresent)` when it is not set,
    /// `Err(NotUnicode)` when it is not text.
    fn var(&self, name: &str) -> Result<Zeroizing<String>, VarError>;

    /// What to add to "is not set": where this host takes its variables
    /// from (the proxy-wasm host names Envoy's `host_env_keys`). The core
    /// knows no host: nothing by default.
    fn unset_hint(&self) -> &'static str {
        ""
    }
}

/// The process environment: in Envoy, the variables the VM was given; for
/// `fpgen check-config`, `mint` and `inspect`, their own.
pub struct ProcessEnv;

impl Vars for ProcessEnv {
    fn var(&self, name: &str) -> Result<Zeroizing<String>, VarError> {
        std::env::var(name).map(Zeroizing::new)
    }
}

/// The process environment as a host sees it: `0` says where the host
/// takes its variables from, after "is not set" (e.g. Envoy's
/// `host_env_keys` for the proxy-wasm filter).
pub struct HostEnv(pub &'static str);

impl Vars for HostEnv {
    fn var(&self, name: &str) -> Result<Zeroizing<String>, VarError> {
        ProcessEnv.var(name)
    }

    fn unset_hint(&self) -> &'static str {
        self.0
    }
}

/// A map of names to values (tests, embedders): `None` is "not set".
impl<F: Fn(&str) -> Option<String>> Vars for F {
    fn var(&self, name: &str) -> Result<Zeroizing<String>, VarError> {
        self(name).map(Zeroizing::new).ok_or(VarError::NotPresent)
    }
}

/// A secret as written: its hex digits, or the variable that holds them.
pub(super) enum RawSecret {
    Hex(Zeroizing<String>),
    Env(String),
}

impl RawSecret {
    /// The secret, parsed by `parse` from the hex as written or from the
    /// variable's value. A variable's value may be surrounded by white space
    /// (a Kubernetes Secret made from a file ends in a newline); hex as
    /// written may not. `expected` says what `parse` takes, for the problem.
    pub(super) fn resolve<T>(
        &self,
        vars: &dyn Vars,
        expected: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, Problem> {
        match self {
            Self::Hex(text) => parse(text).ok_or(Problem::Hex(expected)),
            Self::Env(name) => from_env(name, vars, expected, parse),
        }
    }

    /// Whether the value comes from the environment.
    pub(super) const fn is_env(&self) -> bool {
        matches!(self, Self::Env(_))
    }
}

/// The value of variable `name`, parsed by `parse`.
pub(super) fn from_env<T>(
    name: &str,
    vars: &dyn Vars,
    expected: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, Problem> {
    if !is_variable_name(name) {
        return Err(Problem::Expected(
            "an environment variable's name: 1 to 255 characters, none of them '=' or NUL",
        ));
    }
    // A key pasted where its variable's name belongs would be echoed by
    // "not set": refuse it without naming it.
    if name.len() >= 16 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Problem::Expected(
            "an environment variable's name, not hex digits (a key belongs in the variable)",
        ));
    }
    let variable = name.to_owned();
    match vars.var(name) {
        Ok(value) => parse(value.trim()).ok_or(Problem::EnvMalformed { variable, expected }),
        Err(VarError::NotPresent) => Err(Problem::EnvUnset {
            variable,
            hint: vars.unset_hint(),
        }),
        Err(VarError::NotUnicode(_)) => Err(Problem::EnvMalformed { variable, expected }),
    }
}

/// What `getenv` can look up: not empty, no `=`, no NUL.
fn is_variable_name(name: &str) -> bool {
    (1..=255).contains(&name.len()) && !name.contains(['=', '\0'])
}

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl<'de> Visitor<'de> for SecretVisitor {
            type Value = RawSecret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTING)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawSecret, E> {
                Ok(RawSecret::Hex(Zeroizing::new(text.to_owned())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<RawSecret, E> {
                Ok(RawSecret::Hex(Zeroizing::new(text)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawSecret, A::Error> {
                env_reference(map).map(RawSecret::Env)
            }
        }
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// What a secret may be written as, for shape errors.
pub(super) const EXPECTING: &str = "a string of hex digits or {\"env\": \"VARIABLE\"}";

/// The variable's name from `{"env": "VARIABLE"}`: one field, `env`.
pub(super) fn env_reference<'de, A: MapAccess<'de>>(mut map: A) -> Result<String, A::Error> {
    let mut name = None;
    while let Some(field) = map.next_key::<String>()? {
        if field != "env" {
            return Err(de::Error::unknown_field(&field, &["env"]));
        }
        if name.is_some() {
            return Err(de::Error::duplicate_field("env"));
        }
        name = Some(map.next_value::<String>()?);
    }
    name.ok_or_else(|| de::Error::missing_field("env"))
}
